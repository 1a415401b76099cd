/**
 * The clock skew measured from pushes: a server date counts once per push
 * call, however many results carry it (the results of one `POST /batch`
 * share their response's `Date`), and distinct dates each count.
 *
 * @module
 */

import assert from "node:assert/strict";
import { SyncEngine } from "../mod.ts";
import type { PushOp, PushResult, Transport } from "../src/transport.ts";
import { createMemoryStorage } from "../storage/memory.ts";

/** A backend that accepts every write and answers with the given dates. */
function datedTransport(dates: () => readonly number[]): Transport {
  return {
    pull: () => Promise.resolve({ items: [], nextPageToken: null }),
    push(ops: readonly PushOp[]): Promise<PushResult[]> {
      const list = dates();
      return Promise.resolve(ops.map((op, i) => ({
        type: "ok",
        status: 200,
        record: {
          ...op.payload,
          id: op.id,
          updated_at: "2025-03-01T10:00:00.000Z",
        },
        serverDate: list[i % list.length]!,
      })));
    },
    close: () => Promise.resolve(),
    [Symbol.asyncDispose]: () => Promise.resolve(),
  };
}

/** An engine on a frozen clock whose pushes are answered with `dates`. */
function setup(dates: () => readonly number[]) {
  const now = Date.parse("2025-03-01T10:00:00.000Z");
  return new SyncEngine({
    storage: createMemoryStorage(),
    transport: datedTransport(dates),
    clock: { now: () => now },
  });
}

Deno.test("push clock: a server date shared by a call's results counts once", async () => {
  const now = Date.parse("2025-03-01T10:00:00.000Z");
  // A sample is date + 500 - the request's midpoint (here `now`).
  let dates: readonly number[] = [now - 500 + 10_000];
  await using engine = setup(() => dates);
  const notes = engine.table("notes");
  await notes.put({ id: "first" });
  await engine.sync({ pullKinds: [] });
  assert.equal(engine.clockSkewMs, 10_000, "the first sample is the skew");

  dates = [now - 500 + 20_000];
  await notes.putMany([{ id: "a" }, { id: "b" }, { id: "c" }, { id: "d" }]);
  const { stats } = await engine.sync({ pullKinds: [] });
  assert.equal(stats.pushed, 4);
  // One sample, smoothed once: 0.8 × 10 s + 0.2 × 20 s. Counted once per
  // result, the same answer would have pulled the skew to ≈ 15.9 s.
  assert.equal(engine.clockSkewMs, 12_000);
});

Deno.test("push clock: distinct server dates in one call each count, in order", async () => {
  const now = Date.parse("2025-03-01T10:00:00.000Z");
  let dates: readonly number[] = [now - 500];
  await using engine = setup(() => dates);
  const notes = engine.table("notes");
  await notes.put({ id: "first" });
  await engine.sync({ pullKinds: [] });
  assert.equal(engine.clockSkewMs, 0);

  // Dates 10 s and 20 s ahead, alternating over four results: two samples.
  dates = [now - 500 + 10_000, now - 500 + 20_000];
  await notes.putMany([{ id: "a" }, { id: "b" }, { id: "c" }, { id: "d" }]);
  await engine.sync({ pullKinds: [] });
  // 0 → 0.8 × 0 + 0.2 × 10 s = 2 s → 0.8 × 2 s + 0.2 × 20 s = 5.6 s.
  assert.equal(engine.clockSkewMs, 5_600);
});
