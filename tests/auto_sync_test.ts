/**
 * Auto sync's delays (clause 9): the options are validated, and no server
 * value (a huge `Retry-After`, NaN) arms a timer that overflows or that
 * fires at once.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  ServerError,
  SyncEngine,
  type SyncEngineOptions,
  type Timers,
} from "../mod.ts";
import { MAX_RETRY_AFTER_MS, MAX_TIMER_MS } from "../src/backoff.ts";
import type { PullPage, PushResult, Transport } from "../src/transport.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { createRestTransport } from "../transport/rest.ts";
import { json, startScriptedServer } from "./_scripted_server.ts";

const NOW = Date.parse("2025-03-01T10:00:00.000Z");

/** Timers that only record: a test fires them by hand. */
function manualTimers(): Timers & {
  armed: { callback: () => void; ms: number }[];
  next(): Promise<void>;
} {
  const armed: { callback: () => void; ms: number }[] = [];
  let wake: (() => void) | null = null;
  return {
    armed,
    setTimeout(callback, ms) {
      armed.push({ callback, ms });
      wake?.();
      return armed.length;
    },
    clearTimeout() {},
    /** Fires the newest timer and waits until the run arms the next one. */
    async next() {
      const count = armed.length;
      const armedAgain = new Promise<void>((resolve) => wake = resolve);
      armed.at(-1)!.callback();
      while (armed.length === count) await armedAgain;
      wake = null;
    },
  };
}

function transportOf(
  pull: () => Promise<PullPage>,
  push: (count: number) => PushResult[] = () => [],
): Transport {
  return {
    pull,
    push: (ops) => Promise.resolve(push(ops.length)),
    close: () => Promise.resolve(),
    [Symbol.asyncDispose]: () => Promise.resolve(),
  };
}

const EMPTY = () => Promise.resolve({ items: [], nextPageToken: null });

function engineWith(
  transport: Transport,
  timers: Timers,
  extra: Partial<SyncEngineOptions> = {},
) {
  const storage = createMemoryStorage();
  const engine = new SyncEngine({
    storage,
    transport,
    timers,
    clock: { now: () => NOW },
    random: () => 0.5,
    ...extra,
  });
  return {
    engine,
    async [Symbol.asyncDispose]() {
      await engine.close();
      await storage.close();
    },
  };
}

Deno.test("auto sync: startAuto() refuses delays a timer cannot hold with a RangeError", async () => {
  const timers = manualTimers();
  await using client = engineWith(transportOf(EMPTY), timers);
  const { engine } = client;
  const bad: [string, Record<string, unknown>][] = [
    ["intervalMs", { intervalMs: 2 ** 31 }],
    ["intervalMs", { intervalMs: 1e15 }],
    ["intervalMs", { intervalMs: Infinity }],
    ["intervalMs", { intervalMs: NaN }],
    ["intervalMs", { intervalMs: 0 }],
    ["intervalMs", { intervalMs: -1 }],
    ["intervalMs", { intervalMs: "5" }],
    ["afterWriteMs", { afterWriteMs: 2 ** 31 }],
    ["afterWriteMs", { afterWriteMs: -1 }],
    ["maxBackoffMs", { maxBackoffMs: 2 ** 31 }],
  ];
  for (const [name, options] of bad) {
    assert.throws(
      () => engine.startAuto(options),
      (error: unknown) => {
        assert.ok(error instanceof RangeError, JSON.stringify(options));
        assert.match(
          error.message,
          new RegExp(
            `^Cannot start auto sync as ${name} is not a number of ms from [01] to 2147483647: current value is `,
          ),
        );
        return true;
      },
    );
  }
  assert.equal(timers.armed.length, 0, "nothing was started");
  engine.startAuto({
    intervalMs: MAX_TIMER_MS,
    afterWriteMs: null,
    maxBackoffMs: 0,
  });
  await timers.next();
  assert.equal(timers.armed.at(-1)!.ms, MAX_TIMER_MS);
  engine.stopAuto();
});

Deno.test("auto sync: a huge Retry-After from push waits the maximum, not a near-zero wait", async () => {
  const timers = manualTimers();
  const transport = transportOf(
    EMPTY,
    (count) =>
      Array.from({ length: count }, () => ({
        type: "retry",
        error: new ServerError("Cannot push as busy", { status: 503 }),
        retryAfterMs: 99_999_999_999_000,
      })),
  );
  await using client = engineWith(transport, timers);
  const { engine } = client;
  await engine.table("items").put({ id: "a" });
  const result = await engine.sync();
  assert.equal(result.retryAfterMs, MAX_RETRY_AFTER_MS);
  engine.startAuto({ intervalMs: 1000, afterWriteMs: null });
  await timers.next();
  assert.equal(timers.armed.at(-1)!.ms, MAX_RETRY_AFTER_MS);
  engine.stopAuto();
});

Deno.test("auto sync: a failed run's Retry-After is clamped to the maximum, and NaN never means at once", async () => {
  for (
    const [retryAfterMs, expected] of [
      [99_999_999_999_000, MAX_RETRY_AFTER_MS],
      [NaN, 500],
      [-5, 500],
    ] as const
  ) {
    const timers = manualTimers();
    const transport = transportOf(() =>
      Promise.reject(
        new ServerError("Cannot pull as busy", { status: 503, retryAfterMs }),
      )
    );
    await using client = engineWith(transport, timers);
    client.engine.table("items");
    client.engine.startAuto({ intervalMs: 30_000, afterWriteMs: null });
    await timers.next();
    // Backoff of the first failure with random 0.5: 500 ms.
    assert.equal(timers.armed.at(-1)!.ms, expected, String(retryAfterMs));
    client.engine.stopAuto();
  }
});

Deno.test("auto sync: over HTTP, Retry-After 99999999999 or a far HTTP date waits one hour", async (t) => {
  for (
    const header of ["99999999999", "Fri, 31 Dec 9999 23:59:59 GMT"]
  ) {
    await t.step(header, async () => {
      await using server = startScriptedServer(() =>
        json({ error: "busy" }, 503, { "retry-after": header })
      );
      const timers = manualTimers();
      await using transport = createRestTransport({
        baseUrl: server.url,
        retry: { attempts: 1 },
        sleep: () => Promise.resolve(),
      });
      await using client = engineWith(transport, timers);
      client.engine.table("items");
      client.engine.startAuto({ intervalMs: 30_000, afterWriteMs: null });
      await timers.next();
      const wait = timers.armed.at(-1)!.ms;
      assert.equal(wait, MAX_RETRY_AFTER_MS);
      assert.equal(server.requests.length, 1, "no hammering");
      client.engine.stopAuto();
    });
  }
});

Deno.test("auto sync: a clock that jumps back never arms a timer past the range", async () => {
  const timers = manualTimers();
  let now = NOW;
  let step = 0;
  await using client = engineWith(transportOf(EMPTY), timers, {
    // Once the run is over, every reading is a year before the last one.
    clock: { now: () => now -= step },
  });
  client.engine.table("items");
  client.engine.on("syncCompleted", () => {
    step = 3e10;
  });
  client.engine.startAuto({ intervalMs: 1000, afterWriteMs: null });
  await timers.next();
  assert.ok(timers.armed.every((timer) => timer.ms <= MAX_TIMER_MS));
  client.engine.stopAuto();
});
