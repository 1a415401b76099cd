// Seeded chaos runs on the Deno KV client storage, against the reference
// server over both of its stores (testing/, docs/reliability.md).
import { chaosSeeds } from "./_chaos.ts";

chaosSeeds({
  storage: "kv",
  backend: "embedded",
  firstSeed: 400_001,
  runs: 100,
  timeoutMs: 120_000,
});
chaosSeeds({
  storage: "kv",
  backend: "embedded-sqlite",
  firstSeed: 500_001,
  runs: 100,
  timeoutMs: 120_000,
});
