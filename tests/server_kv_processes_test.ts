import assert from "node:assert/strict";
import { runTwoServers } from "./_two_servers.ts";
import { withTimeout } from "./_timeout.ts";

// Two `deno run` server processes on one KV file, writers putting new
// records through both while readers pull through both with keyset
// cursors: no reader may miss a record (one committed behind its cursor).
// `server_sqlite_processes_test.ts` runs the same check on one SQLite file.
Deno.test(
  "kv: two server processes on one KV file never commit a record behind a reader's cursor",
  withTimeout(40_000, async () => {
    const result = await runTwoServers({
      store: "kv",
      ms: 4_000,
      writers: 6,
      readers: 4,
    });
    console.log(
      `two KV server processes: ${result.writes} writes, ${result.pages} pages pulled, ${result.retries} commits re-run after a lost race, misses per reader ${
        result.misses.join("/")
      }`,
    );
    assert.equal(result.failedWrites, 0);
    assert.ok(result.writes > 0);
    assert.equal(result.records, result.writes);
    assert.deepEqual(result.misses, [0, 0, 0, 0]);
  }),
);
