// Seeded chaos runs on the memory client storage, against the reference
// server over both of its stores (testing/, docs/reliability.md).
import { chaosSeeds } from "./_chaos.ts";

chaosSeeds({
  storage: "memory",
  backend: "embedded",
  firstSeed: 1,
  runs: 250,
  timeoutMs: 120_000,
});
chaosSeeds({
  storage: "memory",
  backend: "embedded-sqlite",
  firstSeed: 100_001,
  runs: 250,
  timeoutMs: 120_000,
});
