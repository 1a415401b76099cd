// Seeds the chaos suite once failed on, kept as regression tests (the
// closing note of issue 10 and docs/reliability.md list cause and fix).
import assert from "node:assert/strict";
import {
  type ChaosBackend,
  type ChaosStorageName,
  runChaos,
} from "../testing/mod.ts";
import { withTimeout } from "./_timeout.ts";

const SEEDS: readonly {
  seed: number;
  storage: ChaosStorageName;
  backend?: ChaosBackend;
  what: string;
}[] = [
  {
    seed: 1115,
    storage: "sqlite",
    what: "no endless 410 after a tombstone purge (server/_pull.ts)",
  },
  {
    seed: 2096,
    storage: "kv",
    what: "no endless 410 after a tombstone purge (server/_pull.ts)",
  },
  {
    seed: 10496,
    storage: "memory",
    what:
      "a first pull sweeps a record deleted elsewhere whose tombstone was purged (src/pull.ts)",
  },
  ...[87593, 11758, 36765, 37371, 89571].map((seed) => ({
    seed,
    storage: "memory" as const,
    backend: "embedded-sqlite",
    what:
      "no op id reused after a reopen with the clock set back (src/ulid.ts)",
  })),
];

for (const { seed, storage, backend, what } of SEEDS) {
  Deno.test(
    `chaos regression seed ${seed} (${storage}): ${what}`,
    withTimeout(30_000, async () => {
      const result = await runChaos({
        seed,
        storage,
        backend: backend ?? "embedded",
      });
      for (const [name, verdict] of Object.entries(result.verdicts)) {
        assert.notEqual(verdict.status, "fail", `${name}: ${verdict.detail}`);
      }
    }),
  );
}
