// Process-kill chaos runs: a client in a child process on an SQLite or KV
// file SIGKILLs itself mid-commit or mid-pull, is reopened on the same file,
// and every verdict still holds (testing/_kill.ts, docs/reliability.md).
import assert from "node:assert/strict";
import { runKillChaos } from "../testing/mod.ts";
import { withTimeout } from "./_timeout.ts";

// SQLite: 20 seeds, since seed 20 is the first to kill a client between
// the two commits of a write whose record and op were split on purpose
// (the commit-atomicity mutation of docs/reliability.md).
// Seeds, and seeds per test (a slow machine gets headroom per test).
const PLAN = [["sqlite", 20, 5], ["kv", 6, 6]] as const;

for (const [storage, seeds, chunk] of PLAN) {
  for (let first = 1; first <= seeds; first += chunk) {
    const last = Math.min(seeds, first + chunk - 1);
    Deno.test(
      `chaos kill (${storage}, seeds ${first}-${last}): a client killed mid-commit and mid-pull converges with no lost or doubled write`,
      withTimeout(150_000, async () => {
        let kills = 0;
        for (let seed = first; seed <= last; seed++) {
          const result = await runKillChaos({ seed, storage, kills: 3 });
          kills += result.faults.processKill ?? 0;
          for (const [name, verdict] of Object.entries(result.verdicts)) {
            assert.notEqual(
              verdict.status,
              "fail",
              `seed ${seed}, ${name}: ${verdict.detail}`,
            );
          }
        }
        // Kills happened: not every planned point is reached (a life may make
        // fewer calls than its seeded k, and how many depends on timing).
        assert.ok(kills >= 1, `${kills} kills`);
      }),
    );
  }
}
