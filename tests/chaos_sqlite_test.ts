// Seeded chaos runs on the SQLite client storage, against the reference
// server over both of its stores (testing/, docs/reliability.md).
import { chaosSeeds } from "./_chaos.ts";

chaosSeeds({
  storage: "sqlite",
  backend: "embedded",
  firstSeed: 200_001,
  runs: 150,
  timeoutMs: 120_000,
});
chaosSeeds({
  storage: "sqlite",
  backend: "embedded-sqlite",
  firstSeed: 300_001,
  runs: 150,
  timeoutMs: 120_000,
});
