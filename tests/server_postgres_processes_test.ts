/**
 * Two `deno run` server processes on one Postgres schema: the cursor check
 * (writers hammering through both while readers pull through both; no
 * reader may miss a record) and live hints across the processes.
 *
 * @module
 */

import assert from "node:assert/strict";
import { runTwoServers, start, stop } from "./_two_servers.ts";
import {
  DATABASE_URL,
  dropSchema,
  freshSchema,
  ignorePostgres,
} from "./_postgres.ts";
import { withTimeout } from "./_timeout.ts";

const IGNORE_POSTGRES = await ignorePostgres();

// The Postgres store locks the namespace's clock row (FOR UPDATE) in each
// write transaction and re-checks its version there.
Deno.test({
  name:
    "postgres: two server processes on one database never commit a record behind a reader's cursor",
  ignore: IGNORE_POSTGRES,
  fn: withTimeout(60_000, async () => {
    const result = await runTwoServers({
      store: "postgres",
      ms: 4_000,
      writers: 6,
      readers: 4,
    });
    console.log(
      `two Postgres server processes: ${result.writes} writes, ${result.pages} pages pulled, ${result.retries} commits re-run after a lost race, misses per reader ${
        result.misses.join("/")
      } (${result.missedIds} ids missed by some reader)`,
    );
    assert.equal(result.failedWrites, 0);
    assert.ok(result.writes > 0);
    assert.equal(result.records, result.writes);
    assert.deepEqual(result.misses, [0, 0, 0, 0]);
  }),
});

/** The longest a hint may take to cross processes before the test fails. */
const DEADLINE_MS = 5_000;
const WRITES = 20;

Deno.test({
  name:
    "postgres: a write through one server process is hinted on another process's live stream",
  ignore: IGNORE_POSTGRES,
  fn: withTimeout(60_000, async () => {
    const schema = freshSchema();
    const path = `${DATABASE_URL}#${schema}`;
    const [a, b] = await Promise.all([
      start("postgres", path),
      start("postgres", path),
    ]);
    const stream = await fetch(`${b.base}/live`);
    assert.equal(stream.status, 200);
    const reader = stream.body!.pipeThrough(new TextDecoderStream())
      .getReader();
    let buffer = "";
    /** A read that outlived its deadline: the next wait takes it over. */
    let pending: Promise<ReadableStreamReadResult<string>> | null = null;
    /** The next SSE block, or `null` past the deadline. */
    const block = async (until: number): Promise<string | null> => {
      while (!buffer.includes("\n\n")) {
        const left = until - performance.now();
        if (left <= 0) return null;
        let timer: ReturnType<typeof setTimeout> | undefined;
        pending ??= reader.read();
        const read = await Promise.race([
          pending,
          new Promise<null>((resolve) => {
            timer = setTimeout(() => resolve(null), left);
          }),
        ]).finally(() => clearTimeout(timer));
        if (read === null) return null;
        pending = null;
        if (read.done) throw new Error("live stream ended");
        buffer += read.value;
      }
      const end = buffer.indexOf("\n\n") + 2;
      const out = buffer.slice(0, end);
      buffer = buffer.slice(end);
      return out;
    };
    /** Writes one record of `kind` through A. */
    const put = async (kind: string, id: string): Promise<void> => {
      const response = await fetch(`${a.base}/${kind}/${id}`, {
        method: "PUT",
        body: "{}",
      });
      await response.body?.cancel();
      assert.equal(response.status, 201);
    };
    /** Waits for a hint naming `kind`; false past `until`. */
    const hinted = async (kind: string, until: number): Promise<boolean> => {
      for (;;) {
        const next = await block(until);
        if (next === null) return false;
        const match = next.match(/^event: change\ndata: (.*)\n\n$/);
        if (match === null) continue; // a ping
        const { kinds } = JSON.parse(match[1]!) as { kinds: string[] };
        if (kinds.includes(kind)) return true;
      }
    };
    try {
      assert.equal(await block(performance.now() + DEADLINE_MS), ": live\n\n");
      // B's LISTEN is registered shortly after the stream opens: write until
      // a first hint arrives (bounded), then every write must be hinted.
      let ready = false;
      for (let n = 0; n < 25 && !ready; n++) {
        await put("warmup", String(n));
        ready = await hinted("warmup", performance.now() + 200);
      }
      assert.ok(ready, "no hint of the warm-up writes within 5 s");
      const latencies: number[] = [];
      for (let index = 0; index < WRITES; index++) {
        const kind = `kind${index}`;
        const started = performance.now();
        await put(kind, "1");
        assert.ok(
          await hinted(kind, started + DEADLINE_MS),
          `no hint naming ${kind} within 5 s`,
        );
        latencies.push(performance.now() - started);
      }
      latencies.sort((x, y) => x - y);
      const at = (q: number) =>
        latencies[
          Math.min(latencies.length - 1, Math.floor(q * latencies.length))
        ]!;
      console.log(
        `live hint across two Postgres server processes (PUT on A -> event on B), ${WRITES} writes: p50 ${
          at(0.5).toFixed(0)
        } ms, p95 ${at(0.95).toFixed(0)} ms, max ${at(1).toFixed(0)} ms`,
      );
    } finally {
      await reader.cancel();
      await stop(a);
      await stop(b);
      await dropSchema(schema);
    }
  }),
});
