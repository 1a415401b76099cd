/**
 * Live hints across instances (CONTRACT.md §Live hint): two server
 * processes on one Deno KV file, a client holding `GET /live` on one while
 * writes go through the other. A local KV file delivers `watch()` only
 * within one process, so what carries these hints is the change feed's
 * poll of the change log's head (`server/_kv_changes.ts`).
 *
 * @module
 */

import assert from "node:assert/strict";
import { start, stop } from "./_two_servers.ts";
import { withTimeout } from "./_timeout.ts";

/** The longest a hint may take to cross processes before the test fails. */
const DEADLINE_MS = 5_000;
const WRITES = 20;

Deno.test(
  "live: a write through one KV server process is hinted on another process's stream",
  withTimeout(60_000, async () => {
    const dir = await Deno.makeTempDir({ prefix: "live-processes-" });
    const path = `${dir}/store.kv`;
    const a = await start("kv", path);
    const b = await start("kv", path);
    const stream = await fetch(`${b.base}/live`);
    assert.equal(stream.status, 200);
    const reader = stream.body!.pipeThrough(new TextDecoderStream())
      .getReader();
    try {
      let buffer = "";
      /** The next SSE block, or `null` past the deadline. */
      const block = async (until: number): Promise<string | null> => {
        while (!buffer.includes("\n\n")) {
          const left = until - performance.now();
          if (left <= 0) return null;
          let timer: ReturnType<typeof setTimeout> | undefined;
          const read = await Promise.race([
            reader.read(),
            new Promise<null>((resolve) => {
              timer = setTimeout(() => resolve(null), left);
            }),
          ]).finally(() => clearTimeout(timer));
          if (read === null) return null;
          if (read.done) throw new Error("live stream ended");
          buffer += read.value;
        }
        const end = buffer.indexOf("\n\n") + 2;
        const out = buffer.slice(0, end);
        buffer = buffer.slice(end);
        return out;
      };
      assert.equal(await block(performance.now() + DEADLINE_MS), ": live\n\n");
      const latencies: number[] = [];
      for (let index = 0; index < WRITES; index++) {
        const kind = `kind${index}`;
        // Writes at spread phases of the poll interval (not right after the
        // last hint, which follows a poll), so the latencies sample it.
        await new Promise((resolve) => setTimeout(resolve, (index * 37) % 250));
        const started = performance.now();
        const put = await fetch(`${a.base}/${kind}/1`, {
          method: "PUT",
          body: JSON.stringify({ index }),
        });
        await put.body?.cancel();
        assert.equal(put.status, 201);
        const until = started + DEADLINE_MS;
        for (;;) {
          const next = await block(until);
          assert.ok(next !== null, `no hint naming ${kind} within 5 s`);
          const match = next.match(/^event: change\ndata: (.*)\n\n$/);
          if (match === null) continue; // a ping
          const { kinds } = JSON.parse(match[1]!) as { kinds: string[] };
          if (kinds.includes(kind)) break;
        }
        latencies.push(performance.now() - started);
      }
      latencies.sort((x, y) => x - y);
      const at = (q: number) =>
        latencies[
          Math.min(latencies.length - 1, Math.floor(q * latencies.length))
        ]!;
      console.log(
        `live hint across two KV server processes (PUT on A -> event on B), ${WRITES} writes: p50 ${
          at(0.5).toFixed(0)
        } ms, p95 ${at(0.95).toFixed(0)} ms, max ${at(1).toFixed(0)} ms`,
      );
    } finally {
      await reader.cancel();
      await stop(a);
      await stop(b);
      await Deno.remove(dir, { recursive: true });
    }
  }),
);
