/**
 * Push on write (issue 12, item 3): with auto sync on, a local write is
 * pushed `afterWriteMs` after it, a burst of writes gives one run, and a
 * write during a run gives exactly one follow-up run, not the next interval
 * and not one run per write. Timers and clock are fake; nothing here waits
 * on real time except for runs to settle.
 *
 * @module
 */

import assert from "node:assert/strict";
import { SyncEngine } from "../mod.ts";
import type { PushOp, PushResult, Transport } from "../src/transport.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { until } from "./_faults.ts";
import { fakeTime } from "./_fake_timers.ts";

/** A backend that accepts every write, and can hold a push until released. */
function gatedTransport() {
  const pushes: string[][] = [];
  let gate: PromiseWithResolvers<void> | null = null;
  const transport: Transport = {
    pull: () => Promise.resolve({ items: [], nextPageToken: null }),
    async push(ops: readonly PushOp[]): Promise<PushResult[]> {
      pushes.push(ops.map((op) => op.id));
      if (gate !== null) await gate.promise;
      return ops.map((op) => ({
        type: "ok",
        status: 200,
        record: {
          ...op.payload,
          id: op.id,
          updated_at: "2025-03-01T10:00:00.000Z",
        },
      }));
    },
    close: () => Promise.resolve(),
    [Symbol.asyncDispose]: () => Promise.resolve(),
  };
  return {
    transport,
    pushes,
    hold(): void {
      gate = Promise.withResolvers();
    },
    release(): void {
      gate?.resolve();
      gate = null;
    },
  };
}

function setup() {
  const time = fakeTime();
  const backend = gatedTransport();
  const storage = createMemoryStorage();
  const engine = new SyncEngine({
    storage,
    transport: backend.transport,
    timers: time,
    clock: time,
    random: () => 0.5,
  });
  let runs = 0;
  let completed = 0;
  engine.on("syncStarted", () => runs++);
  engine.on("syncCompleted", () => completed++);
  return {
    time,
    backend,
    engine,
    items: engine.table("items"),
    runs: () => runs,
    completed: () => completed,
    async [Symbol.asyncDispose]() {
      await engine.close();
      await storage.close();
    },
  };
}

Deno.test("push on write: a burst of writes within afterWriteMs gives one run", async () => {
  await using t = setup();
  t.engine.startAuto({ intervalMs: 60_000, afterWriteMs: 500 });
  t.time.advance(0); // the first run, at once
  await until(() => t.completed() === 1, "the first run ended");
  for (let i = 0; i < 5; i++) {
    await t.items.put({ id: `r${i}` });
    t.time.advance(50);
  }
  // The run comes 500 ms after the first write of the burst, not later.
  assert.deepEqual(t.time.sorted().map((timer) => timer.at - t.time.now()), [
    250,
  ]);
  t.time.advance(249);
  assert.equal(t.runs(), 1, "not before afterWriteMs");
  t.time.advance(1);
  await until(() => t.completed() === 2, "the write run ended");
  assert.equal(t.runs(), 2, "one run for five writes");
  assert.deepEqual(t.backend.pushes, [["r0", "r1", "r2", "r3", "r4"]]);
  assert.deepEqual(
    t.time.sorted().map((timer) => timer.at - t.time.now()),
    [60_000],
    "then only the interval",
  );
  t.engine.stopAuto();
});

Deno.test("push on write: writes during a run give exactly one follow-up run, soon", async () => {
  await using t = setup();
  t.engine.startAuto({ intervalMs: 60_000, afterWriteMs: 500 });
  t.time.advance(0);
  await until(() => t.completed() === 1, "the first run ended");
  t.backend.hold();
  await t.items.put({ id: "a" });
  t.time.advance(500);
  await until(() => t.backend.pushes.length === 1, "the push of 'a' started");
  // Three writes while that push is held.
  for (const id of ["b", "c", "d"]) await t.items.put({ id });
  t.backend.release();
  await until(() => t.completed() === 2, "the run of 'a' ended");
  const due = t.time.sorted().map((timer) => timer.at - t.time.now());
  assert.equal(due.length, 1, `one timer: ${due}`);
  assert.ok(due[0]! <= 500, `a follow-up within afterWriteMs, not ${due}`);
  t.time.advance(due[0]!);
  await until(() => t.completed() === 3, "the follow-up run ended");
  assert.equal(t.runs(), 3, "one follow-up run");
  assert.deepEqual(t.backend.pushes, [["a"], ["b", "c", "d"]]);
  assert.deepEqual(
    t.time.sorted().map((timer) => timer.at - t.time.now()),
    [60_000],
    "no second follow-up",
  );
  t.engine.stopAuto();
});

Deno.test("push on write: afterWriteMs null leaves writes to the interval", async () => {
  await using t = setup();
  t.engine.startAuto({ intervalMs: 60_000, afterWriteMs: null });
  t.time.advance(0);
  await until(() => t.completed() === 1, "the first run ended");
  await t.items.put({ id: "a" });
  assert.deepEqual(
    t.time.sorted().map((timer) => timer.at - t.time.now()),
    [60_000],
  );
  t.engine.stopAuto();
});
