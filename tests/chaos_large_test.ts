// A handful of large chaos runs: 5 clients, 300 ops each, on every client
// storage (testing/, docs/reliability.md).
import { chaosSeeds } from "./_chaos.ts";

chaosSeeds({
  storage: "memory",
  backend: "embedded",
  firstSeed: 600_001,
  runs: 2,
  ops: 300,
  clients: 5,
  timeoutMs: 120_000,
});
chaosSeeds({
  storage: "sqlite",
  backend: "embedded-sqlite",
  firstSeed: 700_001,
  runs: 2,
  ops: 300,
  clients: 5,
  timeoutMs: 120_000,
});
chaosSeeds({
  storage: "kv",
  backend: "embedded",
  firstSeed: 800_001,
  runs: 1,
  ops: 300,
  clients: 5,
  timeoutMs: 120_000,
});
