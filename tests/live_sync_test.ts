/**
 * Live mode's engine side (`startAuto({ live })`, ENGINE.md clause 27)
 * against a scripted transport on fake timers: one run per burst of hints,
 * unregistered kinds ignored, a follow-up for hints during a run, capped
 * backoff with jitter, no retry once the backend has no hints, errors as
 * events, and a prompt stop.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  AuthError,
  NetworkError,
  ServerError,
  SyncEngine,
  type SyncEvent,
} from "../mod.ts";
import type {
  LiveCallOptions,
  LiveHint,
  PullPage,
  PullRequest,
  Transport,
} from "../src/transport.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { until } from "./_faults.ts";
import { fakeTime } from "./_fake_timers.ts";

/** One scripted stream: hints pushed by the test, then an end or a failure. */
class Stream {
  readonly hints: LiveHint[] = [];
  #wake: (() => void) | null = null;
  #end: { error: unknown } | null = null;
  signal: AbortSignal | null = null;

  push(...kinds: string[]): void {
    this.hints.push({ kinds });
    this.#wake?.();
  }

  fail(error: unknown): void {
    this.#end = { error };
    this.#wake?.();
  }

  end(): void {
    this.#end = { error: null };
    this.#wake?.();
  }

  async *read(options: LiveCallOptions): AsyncGenerator<LiveHint> {
    this.signal = options.signal;
    options.signal.addEventListener("abort", () => this.#wake?.());
    while (true) {
      const hint = this.hints.shift();
      if (hint !== undefined) {
        yield hint;
        continue;
      }
      if (options.signal.aborted) return;
      if (this.#end !== null) {
        if (this.#end.error !== null) throw this.#end.error;
        return;
      }
      await new Promise<void>((resolve) => this.#wake = resolve);
      this.#wake = null;
    }
  }
}

function setup(
  connect: (index: number) => Stream | Error,
  { liveOptions = {} as Record<string, number> } = {},
) {
  const time = fakeTime();
  const pulls: string[] = [];
  const streams: Stream[] = [];
  let held: Promise<void> | null = null;
  let connections = 0;
  const transport: Transport = {
    async pull(request: PullRequest): Promise<PullPage> {
      pulls.push(request.kind);
      if (held !== null) await held;
      return { items: [], nextPageToken: null };
    },
    push: () => Promise.resolve([]),
    live(options: LiveCallOptions): AsyncIterable<LiveHint> {
      const next = connect(connections++);
      if (next instanceof Error) {
        // deno-lint-ignore require-yield
        return (async function* () {
          throw next;
        })();
      }
      streams.push(next);
      return next.read(options);
    },
    close: () => Promise.resolve(),
    [Symbol.asyncDispose]: () => Promise.resolve(),
  };
  const storage = createMemoryStorage();
  const engine = new SyncEngine({
    storage,
    transport,
    timers: time,
    clock: time,
    random: () => 0.5,
  });
  engine.table("todos");
  engine.table("notes");
  const events: SyncEvent[] = [];
  let completed = 0;
  engine.on("syncCompleted", () => completed++);
  engine.on("live", (event) => events.push(event));
  engine.on("error", (event) => events.push(event));
  const start = (): void =>
    engine.startAuto({
      intervalMs: 3_600_000,
      afterWriteMs: null,
      live: {
        debounceMs: 100,
        retryBaseMs: 1000,
        maxBackoffMs: 8000,
        ...liveOptions,
      },
    });
  return {
    time,
    engine,
    pulls,
    streams,
    events,
    start,
    connections: () => connections,
    hold(gate: Promise<void> | null): void {
      held = gate;
    },
    completed: () => completed,
    async [Symbol.asyncDispose]() {
      await engine.close();
      await storage.close();
    },
  };
}

/** Starts auto sync with live mode and lets the first runs settle. */
async function started(t: ReturnType<typeof setup>): Promise<void> {
  t.start();
  t.time.advance(0); // the interval's first run
  await until(() => t.completed() === 1, "the first run ended");
  await until(() => t.engine.live === "open", "the stream opened");
  assert.equal(t.engine.status.live, "open", "the status tells it too");
  t.time.advance(100); // the catch-up run after the stream opened
  await until(() => t.completed() === 2, "the catch-up run ended");
  t.pulls.length = 0;
}

Deno.test("live sync: a burst of hints gives one run pulling the hinted kinds once", async () => {
  const stream = new Stream();
  stream.push(); // the open hint
  await using t = setup(() => stream);
  await started(t);
  stream.push("todos");
  stream.push("notes", "todos");
  stream.push("unknown-kind");
  await until(() => stream.hints.length === 0, "the hints were read");
  t.time.advance(99);
  assert.equal(t.completed(), 2, "not before debounceMs");
  t.time.advance(1);
  await until(() => t.completed() === 3, "the hinted run ended");
  assert.deepEqual(t.pulls.sort(), ["notes", "todos"]);
  assert.ok(
    !t.events.some((event) => event.type === "error"),
    "an unknown kind is no error",
  );
  assert.equal(t.time.pending.size, 1, "only the interval is armed");
});

Deno.test("live sync: a hint of only unregistered kinds runs nothing", async () => {
  const stream = new Stream();
  stream.push();
  await using t = setup(() => stream);
  await started(t);
  stream.push("unknown-kind");
  await until(() => stream.hints.length === 0, "the hint was read");
  t.time.advance(1000);
  assert.equal(t.completed(), 2);
  assert.deepEqual(t.pulls, []);
});

Deno.test("live sync: hints during a run give exactly one follow-up run", async () => {
  const stream = new Stream();
  stream.push();
  await using t = setup(() => stream);
  await started(t);
  const gate = Promise.withResolvers<void>();
  t.hold(gate.promise);
  stream.push("todos");
  await until(() => stream.hints.length === 0, "the hint was read");
  t.time.advance(100);
  await until(() => t.pulls.length === 1, "the hinted run is pulling");
  stream.push("notes");
  stream.push("todos");
  stream.push("notes");
  await until(() => stream.hints.length === 0, "the hints during it were read");
  t.time.advance(1000);
  assert.equal(t.completed(), 2, "nothing starts while the run is held");
  t.hold(null);
  gate.resolve();
  await until(() => t.completed() === 3, "the hinted run ended");
  t.pulls.length = 0;
  t.time.advance(100);
  await until(() => t.completed() === 4, "the follow-up ended");
  assert.deepEqual(t.pulls.sort(), ["notes", "todos"]);
  t.time.advance(10_000);
  assert.equal(t.completed(), 4, "one follow-up only");
});

Deno.test("live sync: a hint during a run it cannot trust waits for it, then runs afresh", async () => {
  const stream = new Stream();
  stream.push();
  await using t = setup(() => stream);
  await started(t);
  const gate = Promise.withResolvers<void>();
  t.hold(gate.promise);
  const manual = t.engine.sync(); // may have pulled todos before the hint
  await until(() => t.pulls.length === 1, "the manual run is pulling");
  stream.push("todos");
  await until(() => stream.hints.length === 0, "the hint was read");
  t.time.advance(100);
  t.hold(null);
  gate.resolve();
  await manual;
  await until(() => t.completed() === 4, "a fresh run after the manual one");
  assert.equal(t.pulls.filter((kind) => kind === "todos").length, 2);
});

Deno.test("live sync: no hinted run while the credentials are refused", async () => {
  const stream = new Stream();
  stream.push();
  await using t = setup(() => stream);
  await started(t);
  t.hold(Promise.reject(new AuthError("Cannot pull as refused")));
  await assert.rejects(t.engine.sync(), AuthError);
  assert.equal(t.engine.status.connection, "auth");
  stream.push("todos");
  await until(() => stream.hints.length === 0, "the hint was read");
  t.pulls.length = 0;
  t.time.advance(100);
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.deepEqual(t.pulls, [], "no run in the auth status");
});

Deno.test("live sync: reconnects with capped exponential backoff and jitter, reporting each failure", async () => {
  await using t = setup(() =>
    new NetworkError("Cannot read live hints as down")
  );
  t.start();
  t.time.advance(0);
  await until(() => t.completed() === 1, "the first run ended");
  for (let i = 1; i <= 6; i++) {
    await until(() => t.connections() === i, `connection ${i}`);
    await until(() => t.time.pending.size === 2, "the reconnect was armed");
    const reconnect = t.time.sorted()[0]!;
    t.time.advance(reconnect.at - t.time.now());
  }
  // random 0.5: three quarters of 1000 × 2^(n-1), capped at 8000.
  const waits = t.time.armed.filter((ms) => ms !== 0 && ms !== 3_600_000);
  assert.deepEqual(waits.slice(0, 6), [750, 1500, 3000, 6000, 6000, 6000]);
  const errors = t.events.filter((event) => event.type === "error");
  assert.ok(errors.length >= 6, `${errors.length} error events`);
  assert.equal(t.engine.live, "connecting");
});

Deno.test("live sync: a backend without live hints is not asked again; polling goes on", async () => {
  await using t = setup(() =>
    new ServerError("Cannot read live hints as the server has no live hints", {
      status: 404,
      code: "live_unsupported",
      retryable: false,
    })
  );
  t.start();
  t.time.advance(0);
  await until(() => t.engine.live === "unsupported", "unsupported");
  t.time.advance(3_600_000);
  await until(() => t.completed() === 2, "the interval run ended");
  assert.equal(t.connections(), 1);
  assert.ok(!t.events.some((event) => event.type === "error"));
  assert.deepEqual(
    t.events.map((event) => event.type === "live" ? event.state : null),
    ["connecting", "unsupported"],
  );
});

Deno.test("live sync: a transport without live() leaves auto sync polling", async () => {
  const time = fakeTime();
  await using storage = createMemoryStorage();
  await using engine = new SyncEngine({
    storage,
    timers: time,
    clock: time,
    transport: {
      pull: () => Promise.resolve({ items: [], nextPageToken: null }),
      push: () => Promise.resolve([]),
      close: () => Promise.resolve(),
      [Symbol.asyncDispose]: () => Promise.resolve(),
    },
  });
  engine.startAuto({ live: true });
  assert.equal(engine.live, "unsupported");
  assert.equal(engine.status.live, "unsupported");
  engine.stopAuto();
  assert.equal(engine.live, "off");
  assert.equal(engine.status.live, "off");
});

Deno.test("live sync: after an AuthError it waits for a successful run before reconnecting", async () => {
  const refused = new Stream();
  const stream = new Stream();
  stream.push();
  await using t = setup((index) => index === 0 ? refused : stream);
  t.start();
  t.time.advance(0);
  await until(() => t.completed() === 1, "the first run ended");
  refused.fail(new AuthError("Cannot read live hints as refused"));
  await until(
    () => t.events.some((event) => event.type === "error"),
    "the auth error was reported",
  );
  assert.equal(t.time.pending.size, 1, "no reconnect armed, only the interval");
  t.time.advance(60_000);
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(t.connections(), 1, "no reconnect while refused");
  await t.engine.sync(); // the app signed in again
  await until(() => t.time.pending.size === 2, "the reconnect was armed");
  t.time.advance(8000); // the cap: retrying alone cannot cure a refusal
  await until(() => t.engine.live === "open", "reconnected");
  assert.equal(t.connections(), 2);
});

Deno.test("live sync: stopAuto() and close() abort the stream at once", async () => {
  const stream = new Stream();
  stream.push();
  await using t = setup(() => stream);
  await started(t);
  t.engine.stopAuto();
  assert.equal(stream.signal?.aborted, true);
  assert.equal(t.engine.live, "off");
  stream.push();
  t.start();
  await until(() => t.engine.live === "open", "open again");
  const second = stream.signal!;
  await t.engine.close();
  assert.equal(second.aborted, true);
  assert.equal(t.engine.live, "off");
});

Deno.test("live sync: startAuto() checks the live options", async () => {
  await using t = setup(() => new Stream());
  for (
    const live of [
      { debounceMs: -1 },
      { retryBaseMs: 0 },
      { maxBackoffMs: 2 ** 31 },
      { debounceMs: NaN },
    ]
  ) {
    assert.throws(
      () => t.engine.startAuto({ live }),
      (error: unknown) =>
        error instanceof RangeError &&
        /^Cannot start auto sync as live\.\w+ is not a number of ms/.test(
          error.message,
        ),
    );
  }
  assert.equal(t.time.pending.size, 0, "nothing was started");
  assert.equal(t.engine.live, "off");
});
