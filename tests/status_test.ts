/**
 * The status snapshot and `status` event (ENGINE.md clause 23): connection
 * after each run's outcome, the app's pause, phases, op counts kept current
 * from the engine's own commits, `lastSyncedAt` from the injected clock,
 * `lastError`, pull progress with and without the page's `total`, and one
 * event per change.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  AuthError,
  NetworkError,
  Resolutions,
  ServerError,
  SyncEngine,
  type SyncEngineOptions,
  type SyncStatus,
  type Timers,
} from "../mod.ts";
import { observeWrites, OpCounts } from "../src/_op_counts.ts";
import { StatusKeeper } from "../src/_status.ts";
import type { Storage } from "../src/storage.ts";
import type {
  PullPage,
  PullRequest,
  PushOp,
  PushResult,
  Transport,
} from "../src/transport.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { createRestTransport } from "../transport/rest.ts";
import { createClient, startServer } from "./_harness.ts";
import { pendingOp } from "./_fixtures.ts";
import { json, startScriptedServer } from "./_scripted_server.ts";

const T0 = Date.parse("2025-03-01T10:00:00.000Z");

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** A transport whose answers a test scripts; it accepts every op by default. */
function scripted(script: {
  pull?: (request: PullRequest) => PullPage | Promise<PullPage>;
  push?: (op: PushOp) => PushResult;
} = {}): Transport & { pulls: number; pushes: number } {
  const transport = {
    pulls: 0,
    pushes: 0,
    pull(request: PullRequest): Promise<PullPage> {
      transport.pulls++;
      return Promise.resolve().then(() =>
        script.pull?.(request) ?? { items: [], nextPageToken: null }
      );
    },
    push(ops: readonly PushOp[]): Promise<PushResult[]> {
      transport.pushes++;
      return Promise.resolve(ops.map((op) =>
        script.push?.(op) ?? {
          type: "ok",
          status: 200,
          record: { ...op.payload, id: op.id, updated_at: iso(T0) },
        }
      ));
    },
    close: () => Promise.resolve(),
    [Symbol.asyncDispose]: () => Promise.resolve(),
  };
  return transport;
}

/** An engine over a fresh memory storage, with a settable clock. */
function engineOn(
  transport: Transport,
  extra: Partial<SyncEngineOptions> = {},
) {
  const storage = extra.storage ?? createMemoryStorage();
  const clock = { at: T0, now: () => clock.at };
  const engine = new SyncEngine({ storage, transport, clock, ...extra });
  const seen: SyncStatus[] = [];
  engine.on("status", (event) => seen.push(event.status));
  return {
    engine,
    storage,
    clock,
    seen,
    async [Symbol.asyncDispose]() {
      await engine.close();
      await storage.close();
    },
  };
}

/**
 * Waits (bounded) until the status meets `condition`: the op counts are
 * counted in the background, and a `status` event tells when they are.
 */
function statusUntil(
  engine: SyncEngine,
  condition: (status: SyncStatus) => boolean,
  what: string,
): Promise<SyncStatus> {
  if (condition(engine.status)) return Promise.resolve(engine.status);
  return new Promise((resolve, reject) => {
    const controller = new AbortController();
    const timer = setTimeout(() => {
      controller.abort();
      reject(
        new Error(
          `Timed out waiting until ${what}: current value is ${
            JSON.stringify(engine.status)
          }`,
        ),
      );
    }, 5_000);
    engine.on("status", ({ status }) => {
      if (!condition(status)) return;
      clearTimeout(timer);
      controller.abort();
      resolve(status);
    }, { signal: controller.signal });
  });
}

/** The phases a log of snapshots went through, repeats folded. */
function phases(seen: readonly SyncStatus[]): string[] {
  const out: string[] = [];
  for (const { phase } of seen) if (out.at(-1) !== phase) out.push(phase);
  return out;
}

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

Deno.test("status: a run that reaches the server is online, with lastSyncedAt from the engine's clock and the run's phases", async () => {
  await using client = engineOn(scripted());
  const { engine, clock, seen } = client;
  assert.deepEqual(engine.status, {
    connection: "offline",
    phase: "idle",
    pending: 0,
    quarantined: 0,
    deferred: 0,
    lastSyncedAt: null,
    lastError: null,
    progress: null,
    live: "off",
    role: "syncer",
  });
  await engine.table("todos").put({ id: "1", title: "x" });
  clock.at = T0 + 5_000;
  await engine.sync();
  assert.equal(engine.status.connection, "online");
  assert.equal(engine.status.lastSyncedAt, T0 + 5_000);
  assert.equal(engine.status.phase, "idle");
  assert.equal(engine.status.progress, null);
  assert.deepEqual(phases(seen), ["idle", "push", "pull", "idle"]);

  seen.length = 0;
  clock.at = T0 + 9_000;
  await engine.fullResync();
  assert.deepEqual(phases(seen), ["push", "resync", "idle"]);
  assert.equal(engine.status.lastSyncedAt, T0 + 9_000);
});

Deno.test("status: a network failure is offline with its lastError; a server error is online; a success clears lastError", async () => {
  let failure: Error | null = null;
  await using client = engineOn(scripted({
    pull() {
      if (failure !== null) throw failure;
      return { items: [], nextPageToken: null };
    },
  }));
  const { engine, clock } = client;
  engine.table("todos");
  await engine.sync();
  assert.equal(engine.status.connection, "online");

  failure = new NetworkError("Cannot pull as the network is down");
  clock.at = T0 + 1_000;
  await assert.rejects(engine.sync(), NetworkError);
  assert.equal(engine.status.connection, "offline");
  assert.equal(engine.status.lastError, failure);
  assert.equal(engine.status.lastSyncedAt, T0, "the last success stays");

  failure = new ServerError("Cannot pull as the server failed", {
    status: 503,
  });
  await assert.rejects(engine.sync(), ServerError);
  assert.equal(engine.status.connection, "online", "the server answered");
  assert.equal(engine.status.lastError, failure);

  failure = null;
  clock.at = T0 + 2_000;
  await engine.sync();
  assert.equal(engine.status.connection, "online");
  assert.equal(engine.status.lastError, null);
  assert.equal(engine.status.lastSyncedAt, T0 + 2_000);
});

Deno.test("status: refused credentials show auth, and auto sync pauses until a manual sync succeeds", async () => {
  let refuse = true;
  const transport = scripted({
    pull() {
      if (refuse) throw new AuthError("Cannot pull as credentials are refused");
      return { items: [], nextPageToken: null };
    },
  });
  const timers = manualTimers();
  await using client = engineOn(transport, {
    timers,
    random: () => 0.5,
  });
  const { engine } = client;
  engine.table("todos");
  engine.startAuto({ afterWriteMs: null });
  await timers.next();
  assert.equal(engine.status.connection, "auth");
  assert.ok(engine.status.lastError instanceof AuthError);
  assert.equal(transport.pulls, 1);

  await timers.next();
  assert.equal(transport.pulls, 1, "no background run while auth");
  assert.equal(engine.status.connection, "auth");

  refuse = false;
  await engine.sync();
  assert.equal(engine.status.connection, "online");
  assert.equal(transport.pulls, 2);
  await timers.next();
  assert.equal(transport.pulls, 3, "background runs resumed");
});

Deno.test("status: stopAuto() shows paused until startAuto(), and close() shows the closed phase", async () => {
  const timers = manualTimers();
  await using client = engineOn(scripted(), { timers });
  const { engine, seen } = client;
  engine.table("todos");
  await engine.sync();
  engine.startAuto({ afterWriteMs: null });
  assert.equal(engine.status.connection, "online");
  engine.stopAuto();
  assert.equal(engine.status.connection, "paused");
  assert.equal(seen.at(-1)?.connection, "paused");
  engine.stopAuto();
  assert.equal(
    seen.filter((status) => status.connection === "paused").length,
    1,
    "a second stopAuto() changes nothing",
  );
  engine.startAuto({ afterWriteMs: null });
  assert.equal(engine.status.connection, "online");

  await engine.close();
  assert.equal(engine.status.phase, "closed");
  assert.equal(engine.status.connection, "online", "close() is not a pause");
});

/** Rejects op "bad", and answers op "clash" with a conflict unless forced. */
function picky(): Transport & { pulls: number; pushes: number } {
  return scripted({
    push(op) {
      if (op.id === "bad") {
        return {
          type: "rejected",
          error: new ServerError("Cannot save as it is refused", {
            status: 422,
            retryable: false,
          }),
          body: null,
        };
      }
      if (op.id === "clash" && !op.force) {
        return {
          type: "conflict",
          current: { id: "clash", title: "theirs", updated_at: iso(T0 + 1) },
          serverTimestamp: iso(T0 + 1),
        };
      }
      return {
        type: "ok",
        status: 200,
        record: { ...op.payload, id: op.id, updated_at: iso(T0 + 2) },
      };
    },
  });
}

Deno.test("status: counts the ops in the store when first read, in the background", async () => {
  const storage = createMemoryStorage();
  const before = new SyncEngine({ storage, transport: picky() });
  const todos = before.table("todos", { strategy: "manual" });
  for (const id of ["bad", "clash"]) await todos.put({ id });
  await before.sync();
  for (const id of ["a", "b", "c"]) await todos.put({ id });
  await before.close(); // the storage stays open

  await using after = engineOn(scripted(), { storage });
  assert.equal(after.engine.status.pending, 0, "not counted yet");
  const status = await statusUntil(
    after.engine,
    (s) => s.pending === 3,
    "the 3 pending ops are counted",
  );
  assert.equal(status.quarantined, 1);
  assert.equal(status.deferred, 1);
});

Deno.test("status: counts follow local writes, quarantine, deferral, inbox resolution and outbox drops", async () => {
  await using client = engineOn(picky());
  const { engine } = client;
  const todos = engine.table("todos", { strategy: "manual" });
  await todos.put({ id: "ok", title: "x" });
  await statusUntil(engine, (s) => s.pending === 1, "the first op is counted");

  await todos.put({ id: "bad", title: "x" });
  await todos.put({ id: "clash", title: "mine" });
  await todos.put({ id: "ok", title: "y" }); // folds into the unsent op
  assert.equal(engine.status.pending, 3);
  await todos.delete("ok"); // an unsent create: the op goes
  assert.equal(engine.status.pending, 2);

  await engine.sync();
  assert.deepEqual(
    [engine.status.pending, engine.status.quarantined, engine.status.deferred],
    [0, 1, 1],
  );

  const [parked] = await engine.conflicts.list();
  await engine.conflicts.resolve(parked!.opId, Resolutions.acceptClient());
  assert.deepEqual(
    [engine.status.pending, engine.status.deferred],
    [1, 0],
    "a forced write waits",
  );
  const [rejected] = await engine.outbox.quarantined();
  await engine.outbox.retry(rejected!.opId);
  assert.deepEqual([engine.status.pending, engine.status.quarantined], [2, 0]);

  await engine.sync();
  assert.deepEqual(
    [engine.status.pending, engine.status.quarantined, engine.status.deferred],
    [0, 1, 0],
  );
  const [again] = await engine.outbox.quarantined();
  await engine.outbox.drop(again!.opId);
  assert.equal(engine.status.quarantined, 0);
  assert.equal(await engine.outbox.count(), 0, "the counts match the outbox");
});

/** A storage that counts `listOps` calls. */
function spied(storage: Storage): Storage & { lists: number } {
  const spy = Object.assign(Object.create(null), { lists: 0 });
  return new Proxy(storage, {
    get(target, property) {
      if (property === "lists") return spy.lists;
      if (property === "listOps") {
        return (...args: Parameters<Storage["listOps"]>) => {
          spy.lists++;
          return target.listOps(...args);
        };
      }
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  }) as Storage & { lists: number };
}

Deno.test("status: once counted, local writes keep the counts without reading the outbox", async () => {
  const storage = spied(createMemoryStorage());
  await using client = engineOn(scripted(), { storage });
  const todos = client.engine.table("todos");
  await todos.put({ id: "first" });
  await statusUntil(client.engine, (s) => s.pending === 1, "counted");
  const before = storage.lists;
  // Upserts read no op lists themselves: every list here would be a count.
  for (let i = 0; i < 20; i++) await todos.put({ id: `r${i % 7}`, n: i });
  assert.equal(client.engine.status.pending, 8);
  assert.equal(storage.lists - before, 0);
});

Deno.test("status: a commit the counts cannot read (an op written without expect) is counted again", async () => {
  await using storage = createMemoryStorage();
  const seen: number[] = [];
  let waiting: ((pending: number) => void) | null = null;
  const counts = new OpCounts(storage, {
    changed: ({ pending }) => {
      seen.push(pending);
      waiting?.(pending);
    },
    failed: (error) => {
      throw error;
    },
  });
  const next = () =>
    new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no count")), 5_000);
      waiting = (pending) => {
        clearTimeout(timer);
        resolve(pending);
      };
    });
  const observed = observeWrites(storage, counts);
  await observed.write([{ type: "putOp", op: pendingOp("01A"), expect: null }]);
  const first = next();
  counts.start();
  assert.equal(await first, 1);
  const recounted = next();
  await observed.write([{ type: "putOp", op: pendingOp("01B") }]);
  assert.equal(await recounted, 2);
  await counts.settled();
});

/** Five records served by a keyset on ids, with a page `total` by `told`. */
function fivePages(
  told: (page: number, left: number) => unknown,
): (request: PullRequest) => PullPage {
  const items = ["a", "b", "c", "d", "e"].map((id, i) => ({
    id,
    updated_at: iso(T0 + i),
  }));
  let page = 0;
  return (request) => {
    const start = request.afterId === null
      ? 0
      : items.findIndex((item) => item.id === request.afterId) + 1;
    const left = items.length - start;
    const total = told(page++, left);
    return {
      items: items.slice(start, start + request.limit),
      nextPageToken: null,
      ...(total === undefined ? {} : { total: total as number }),
    };
  };
}

async function pullProgress(
  told: (page: number, left: number) => unknown,
): Promise<{ done: number; total: number | null }[]> {
  await using client = engineOn(scripted({ pull: fivePages(told) }), {
    pageSize: 2,
  });
  client.engine.table("todos");
  void client.engine.status; // starts watching the progress
  await client.engine.sync();
  return client.seen.filter((s) => s.progress?.phase === "pull").map((s) => ({
    done: s.progress!.done,
    total: s.progress!.total,
  }));
}

Deno.test("status: pull progress has the total the pages tell, counted down when only the first tells it", async () => {
  assert.deepEqual(await pullProgress((_, left) => left), [
    { done: 2, total: 5 },
    { done: 4, total: 5 },
    { done: 5, total: 5 },
  ]);
  assert.deepEqual(
    await pullProgress((page, left) => page === 0 ? left : undefined),
    [{ done: 2, total: 5 }, { done: 4, total: 5 }, { done: 5, total: 5 }],
  );
  // A count the server got wrong ends at what came once caught up.
  assert.deepEqual(
    await pullProgress((page, left) => page === 0 ? left + 2 : undefined),
    [{ done: 2, total: 7 }, { done: 4, total: 7 }, { done: 5, total: 5 }],
  );
});

Deno.test("status: pull progress total is null when unknown, and a total that is no count is ignored", async () => {
  const unknown = [
    { done: 2, total: null },
    { done: 4, total: null },
    { done: 5, total: null },
  ];
  assert.deepEqual(await pullProgress(() => undefined), unknown);
  for (const bad of [-1, 1.5, Number.NaN, 2 ** 53, 0, "5"]) {
    assert.deepEqual(await pullProgress(() => bad), unknown, String(bad));
  }
});

Deno.test("status: the REST transport keeps a page's total only when it is a whole number no smaller than the page", async () => {
  const items = [
    { id: "a", updated_at: iso(T0) },
    { id: "b", updated_at: iso(T0 + 1) },
  ];
  const cases: [unknown, number | undefined][] = [
    [7, 7],
    [2, 2],
    [1, undefined],
    [-1, undefined],
    [1.5, undefined],
    [1e300, undefined],
    ["7", undefined],
    [null, undefined],
    [{ n: 7 }, undefined],
  ];
  let index = 0;
  await using server = startScriptedServer(() =>
    json({ items, nextPageToken: null, total: cases[index]![0] })
  );
  await using transport = createRestTransport({ baseUrl: server.url });
  for (; index < cases.length; index++) {
    const page = await transport.pull({
      kind: "todos",
      updatedSince: null,
      afterId: null,
      limit: 10,
      pageToken: null,
    });
    assert.equal(page.total, cases[index]![1], JSON.stringify(cases[index]));
    assert.equal(page.items.length, 2, "the page itself is kept");
  }
});

Deno.test("status: the reference server's memory store tells the total over HTTP", async () => {
  await using server = startServer();
  await using writer = createClient(server.url);
  const todos = writer.engine.table("todos");
  for (const id of ["a", "b", "c", "d", "e"]) await todos.put({ id });
  await writer.engine.sync();

  await using reader = createClient(server.url, { engine: { pageSize: 2 } });
  reader.engine.table("todos");
  const seen: { done: number; total: number | null }[] = [];
  reader.engine.on("status", ({ status }) => {
    if (status.progress?.phase === "pull") {
      seen.push({ done: status.progress.done, total: status.progress.total });
    }
  });
  await reader.engine.sync();
  assert.deepEqual(seen, [
    { done: 2, total: 5 },
    { done: 4, total: 5 },
    { done: 5, total: 5 },
  ]);
});

Deno.test("status: an event fires only on change, with a new frozen snapshot each time", async () => {
  const emitted: SyncStatus[] = [];
  const keeper = new StatusKeeper((status) => emitted.push(status));
  const first = keeper.current;
  keeper.patch({ pending: 0, phase: "idle", progress: null });
  assert.equal(emitted.length, 0, "nothing changed");
  keeper.patch({ pending: 2 });
  assert.equal(emitted.length, 1);
  assert.notEqual(keeper.current, first);
  assert.ok(Object.isFrozen(keeper.current));
  keeper.patch({ progress: { phase: "pull", done: 1, total: null } });
  keeper.patch({ progress: { phase: "pull", done: 1, total: null } });
  assert.equal(emitted.length, 2, "an equal progress is no change");
  keeper.patch({ progress: { phase: "pull", done: 1, total: 3 } });
  assert.equal(emitted.length, 3);

  await using client = engineOn(scripted());
  const { engine, seen } = client;
  engine.table("todos");
  const before = engine.status;
  assert.equal(engine.status, before, "reading twice is the same snapshot");
  await engine.sync();
  await engine.sync();
  for (let i = 1; i < seen.length; i++) {
    assert.notDeepEqual(seen[i], seen[i - 1], `event ${i} changed nothing`);
  }
  assert.equal(seen.at(-1), engine.status);
});

Deno.test("status: a throwing status listener never breaks a run", async () => {
  const thrown: unknown[] = [];
  await using client = engineOn(scripted(), {
    onListenerError: (error) => thrown.push(error),
  });
  const { engine } = client;
  engine.on("status", () => {
    throw new Error("listener bug");
  });
  await engine.table("todos").put({ id: "1" });
  await engine.sync();
  assert.equal(engine.status.connection, "online");
  assert.equal(engine.status.pending, 0);
  assert.ok(thrown.length > 0);
});
