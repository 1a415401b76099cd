/**
 * One syncer per store (ENGINE.md clause 26), in one process: engines on
 * one memory storage with a virtual clock and timers, so lease expiry and
 * polls happen exactly when a test moves time. Real processes on SQLite and
 * KV files: `shared_processes_test.ts`.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  type SyncEngineOptions,
  SyncError,
  type SyncEvent,
  SyncRequestTimeoutError,
  type Timers,
} from "../mod.ts";
import { SyncEngine } from "../src/engine.ts";
import {
  appendEntry,
  FEED_RING,
  HEAD_KEY,
  headSeq,
  readEntries,
} from "../src/_feed.ts";
import { LEASE_KEY } from "../src/_lease.ts";
import type { Storage } from "../src/storage.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { createRestTransport } from "../transport/rest.ts";
import { createSyncServer, type SyncServer } from "../server/mod.ts";

const START = Date.parse("2025-03-01T10:00:00.000Z");
const LEASE_MS = 300;
const POLL_MS = 50;

/** Lets pending promise chains (storage, the in-process server) run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) {
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
}

/**
 * A virtual clock with timer sets: `advance()` fires due timers in time
 * order; a frozen set fires nothing (a process that stopped dead).
 */
class VirtualTime {
  now = START;
  #timers = new Map<
    number,
    { at: number; callback: () => void; set: { frozen: boolean } }
  >();
  #next = 1;

  clock = { now: () => this.now };

  /** A timer set for one engine. */
  timers(): Timers & { freeze(): void; thaw(): void } {
    const set = { frozen: false };
    return {
      setTimeout: (callback, ms) => {
        const id = this.#next++;
        this.#timers.set(id, { at: this.now + ms, callback, set });
        return id;
      },
      clearTimeout: (handle) => {
        this.#timers.delete(handle as number);
      },
      freeze: () => set.frozen = true,
      thaw: () => set.frozen = false,
    };
  }

  /** Moves time forward by `ms`, firing every due timer of live sets. */
  async advance(ms: number): Promise<void> {
    const target = this.now + ms;
    await settle();
    for (;;) {
      let due: [number, { at: number; callback: () => void }] | undefined;
      for (const entry of this.#timers) {
        if (entry[1].set.frozen || entry[1].at > target) continue;
        if (due === undefined || entry[1].at < due[1].at) due = entry;
      }
      if (due === undefined) break;
      this.#timers.delete(due[0]);
      this.now = Math.max(this.now, due[1].at);
      due[1].callback();
      await settle();
    }
    this.now = target;
    await settle();
  }

  /** Advances in steps until `done()` holds; fails past `maxMs`. */
  async until(done: () => boolean, maxMs: number): Promise<number> {
    const from = this.now;
    while (!done()) {
      if (this.now - from > maxMs) {
        throw new Error(`Condition not met within ${maxMs} virtual ms`);
      }
      await this.advance(10);
    }
    return this.now - from;
  }
}

interface Node {
  readonly engine: SyncEngine;
  readonly timers: ReturnType<VirtualTime["timers"]>;
  readonly events: SyncEvent[];
}

/** A group of engines on one memory storage, one in-process server. */
function group(time: VirtualTime) {
  const storage = createMemoryStorage();
  const server = createSyncServer();
  const nodes: Node[] = [];
  let running = 0;
  let maxRunning = 0;
  /** While set, requests wait for it (or their signal). */
  let gate: Promise<void> | null = null;
  const transport = createRestTransport({
    baseUrl: "http://sync.test",
    fetch: async (input, init) => {
      if (gate !== null) {
        const signal = init?.signal;
        await Promise.race([
          gate,
          new Promise((_, reject) =>
            signal?.addEventListener("abort", () => reject(signal.reason))
          ),
        ]);
      }
      return await server.fetch(new Request(input, init));
    },
  });
  return {
    storage,
    server,
    maxRunning: () => maxRunning,
    /** Holds every request until the returned function is called. */
    hold(): () => void {
      let open!: () => void;
      gate = new Promise((resolve) => open = resolve);
      return () => {
        gate = null;
        open();
      };
    },
    add(holder: string, extra: Partial<SyncEngineOptions> = {}): Node {
      const timers = time.timers();
      const engine = new SyncEngine({
        storage,
        transport,
        clock: time.clock,
        timers,
        random: () => 0.5,
        shared: { leaseMs: LEASE_MS, pollMs: POLL_MS, holder },
        ...extra,
      });
      const events: SyncEvent[] = [];
      for (
        const type of [
          "syncStarted",
          "syncCompleted",
          "change",
          "role",
          "changesMissed",
          "error",
        ] as const
      ) {
        engine.on(type, (event) => {
          events.push(event);
          if (event.type === "syncStarted") {
            maxRunning = Math.max(maxRunning, ++running);
          }
          if (event.type === "syncCompleted") running--;
        });
      }
      engine.table("todos");
      const node = { engine, timers, events };
      nodes.push(node);
      return node;
    },
    async [Symbol.asyncDispose]() {
      for (const node of nodes) {
        node.timers.thaw();
        await node.engine.close();
      }
      await transport.close();
      await server.close();
      await storage.close();
    },
  };
}

function runs(node: Node): number {
  return node.events.filter((event) => event.type === "syncStarted").length;
}

/** Writes a record on the server as another device would. */
async function serverPut(server: SyncServer, id: string, title: string) {
  const response = await server.fetch(
    new Request(`http://sync.test/todos/${id}`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ id, title }),
    }),
  );
  assert.ok(response.ok, `server put answered ${response.status}`);
  await response.body?.cancel();
}

async function lease(storage: Storage): Promise<unknown> {
  const [entry] = await storage.getMeta([LEASE_KEY]);
  return (entry?.value as { holder?: string } | undefined)?.holder;
}

Deno.test("shared: options out of range throw", async () => {
  await using storage = createMemoryStorage();
  const transport = createRestTransport({ baseUrl: "http://sync.test" });
  const cases: [Record<string, unknown>, ErrorConstructor][] = [
    [{ leaseMs: 29 }, RangeError],
    [{ leaseMs: 1.5e3 + 0.5 }, RangeError],
    [{ leaseMs: 2 ** 31 }, RangeError],
    [{ leaseMs: 1000, pollMs: 1001 }, RangeError],
    [{ pollMs: 0 }, RangeError],
    [{ requestTimeoutMs: 0 }, RangeError],
    [{ holder: "" }, RangeError],
    [{ holder: "x".repeat(129) }, RangeError],
    [{ holder: 5 }, TypeError],
  ];
  for (const [shared, type] of cases) {
    assert.throws(
      () => new SyncEngine({ storage, transport, shared }),
      (error: unknown) => {
        assert.ok(error instanceof type, JSON.stringify(shared));
        assert.match((error as Error).message, /^Cannot share storage as /);
        return true;
      },
    );
  }
  await transport.close();
});

Deno.test("shared: one engine holds the lease and only it runs auto sync", async () => {
  const time = new VirtualTime();
  await using g = group(time);
  const a = g.add("a");
  const b = g.add("b");
  const c = g.add("c");
  for (const node of [a, b, c]) node.engine.startAuto({ intervalMs: 100 });
  await time.advance(1000);
  const roles = [a, b, c].map((node) => node.engine.role);
  assert.deepEqual(roles.filter((role) => role === "syncer").length, 1);
  assert.equal(await lease(g.storage), "a");
  assert.equal(a.engine.role, "syncer");
  assert.ok(runs(a) >= 5, `the syncer ran ${runs(a)} times`);
  assert.equal(runs(b) + runs(c), 0);
  assert.equal(g.maxRunning(), 1);
  // The followers' auto sync did not ask the syncer either.
  const [head] = await g.storage.getMeta([HEAD_KEY]);
  const feed = await readEntries(g.storage, { after: 0, head: headSeq(head) });
  assert.deepEqual(feed.entries.filter((entry) => "request" in entry), []);
  assert.deepEqual(
    a.events.filter((event) => event.type === "role"),
    [{ type: "role", role: "syncer" }],
  );
});

Deno.test("shared: a follower's sync() is run by the syncer and resolves with its result", async () => {
  const time = new VirtualTime();
  await using g = group(time);
  const a = g.add("a");
  const b = g.add("b");
  await time.advance(POLL_MS);
  assert.equal(b.engine.role, "follower");
  await serverPut(g.server, "s1", "from the server");
  const done = b.engine.sync();
  let result: Awaited<typeof done> | undefined;
  done.then((value) => result = value, () => {});
  await time.until(() => result !== undefined, 1000);
  assert.equal(result!.stats.pulled, 1);
  assert.equal(runs(a), 1);
  assert.equal(runs(b), 0);
  // The pulled record is in the shared store.
  assert.equal(
    (await b.engine.table("todos").get("s1"))?.title,
    "from the server",
  );
});

Deno.test("shared: watch() in a follower sees what the syncer pulled", async () => {
  const time = new VirtualTime();
  await using g = group(time);
  const a = g.add("a");
  const b = g.add("b");
  await time.advance(POLL_MS);
  const watch = b.engine.table("todos").watch();
  await serverPut(g.server, "p1", "pulled");
  const synced = a.engine.sync();
  await time.advance(10);
  await synced;
  const next = watch.next();
  await time.advance(POLL_MS);
  const item = await next;
  assert.equal(item.done, false);
  assert.equal(item.value.type, "change");
  if (item.value.type !== "change") return;
  assert.equal(item.value.id, "p1");
  assert.equal(item.value.origin, "pulled");
  assert.equal((item.value.data as { title: string }).title, "pulled");
  await watch.return!();
});

Deno.test("shared: a replayed change is not announced back to the feed", async () => {
  const time = new VirtualTime();
  await using g = group(time);
  const a = g.add("a");
  const b = g.add("b");
  await time.advance(POLL_MS);
  const seen = b.events.length;
  // A pulled change keeps its origin when replayed (a local one becomes
  // "remote", which is never announced anyway).
  await serverPut(g.server, "r1", "pulled by a");
  const synced = a.engine.sync();
  await time.advance(10);
  await synced;
  // b replays a's entry, then publishes whatever it announces.
  await time.advance(3 * POLL_MS);
  assert.ok(
    b.events.slice(seen).some((event) =>
      event.type === "change" && event.id === "r1"
    ),
    "b replayed a's change",
  );
  const [head] = await g.storage.getMeta([HEAD_KEY]);
  const { entries } = await readEntries(g.storage, {
    after: 0,
    head: headSeq(head),
  });
  const announced = entries.filter((entry) =>
    "changes" in entry && JSON.stringify(entry.changes).includes("r1")
  );
  assert.deepEqual(announced.map((entry) => entry.from), ["a"]);
});

Deno.test("shared: a follower's write is pushed by the syncer soon (push on write)", async () => {
  const time = new VirtualTime();
  await using g = group(time);
  const a = g.add("a");
  const b = g.add("b");
  for (const node of [a, b]) {
    node.engine.startAuto({ intervalMs: 60_000, afterWriteMs: 100 });
  }
  await time.advance(POLL_MS * 2);
  assert.equal(a.engine.role, "syncer");
  const before = runs(a);
  await b.engine.table("todos").put({ id: "w1", title: "written by b" });
  const took = await time.until(
    () =>
      a.events.some((event) =>
        event.type === "syncCompleted" && event.stats.pushed === 1
      ),
    1000,
  );
  assert.ok(took <= POLL_MS + 100 + 30, `pushed after ${took} ms`);
  assert.equal(runs(a), before + 1);
  assert.equal(runs(b), 0);
  // The syncer's watchers saw the follower's write as a remote change.
  assert.ok(
    a.events.some((event) =>
      event.type === "change" && event.id === "w1" && event.origin === "remote"
    ),
  );
  const response = await g.server.fetch(new Request("http://sync.test/todos"));
  const page = await response.json() as { items: { title: string }[] };
  assert.deepEqual(page.items.map((item) => item.title), ["written by b"]);
});

Deno.test("shared: a syncer that stops renewing is replaced within leaseMs + pollMs", async () => {
  const time = new VirtualTime();
  await using g = group(time);
  const a = g.add("a");
  const b = g.add("b");
  const c = g.add("c");
  await time.advance(POLL_MS);
  assert.equal(a.engine.role, "syncer");
  a.timers.freeze(); // a stops dead: no renewals, no polls
  const took = await time.until(
    () => b.engine.role === "syncer" || c.engine.role === "syncer",
    LEASE_MS * 3,
  );
  assert.ok(took <= LEASE_MS + POLL_MS + 10, `took over after ${took} ms`);
  assert.ok(took >= LEASE_MS - LEASE_MS / 3, `took over after ${took} ms`);
  assert.equal(
    [b, c].filter((node) => node.engine.role === "syncer").length,
    1,
  );
  // a wakes up: it learns it lost the lease and steps down.
  a.timers.thaw();
  await time.advance(POLL_MS * 2);
  assert.equal(a.engine.role, "follower");
  assert.deepEqual(
    a.events.filter((event) => event.type === "role").map((event) =>
      event.type === "role" && event.role
    ),
    ["syncer", "follower"],
  );
});

Deno.test("shared: close() gives the lease back, so a follower takes over at its next poll", async () => {
  const time = new VirtualTime();
  await using g = group(time);
  const a = g.add("a");
  const b = g.add("b");
  await time.advance(POLL_MS);
  await a.engine.close();
  assert.equal(await lease(g.storage), undefined);
  const took = await time.until(() => b.engine.role === "syncer", LEASE_MS);
  assert.ok(took <= POLL_MS, `took over after ${took} ms`);
});

Deno.test("shared: a follower's sync() rejects with SyncRequestTimeoutError when nobody answers", async () => {
  const time = new VirtualTime();
  await using g = group(time);
  const a = g.add("a", {
    shared: { leaseMs: 5000, pollMs: POLL_MS, holder: "a" },
  });
  const b = g.add("b", {
    shared: {
      leaseMs: 5000,
      pollMs: POLL_MS,
      holder: "b",
      requestTimeoutMs: 500,
    },
  });
  await time.advance(POLL_MS);
  a.timers.freeze();
  const done = b.engine.sync();
  let error: unknown;
  done.catch((reason) => error = reason);
  await time.until(() => error !== undefined, 1000);
  assert.ok(error instanceof SyncRequestTimeoutError);
  assert.equal(error.retryable, true);
  assert.match(
    error.message,
    /did not answer within 500 ms: current value is "a"$/,
  );
});

Deno.test("shared: a follower's waiting sync() is run by itself once it takes over", async () => {
  const time = new VirtualTime();
  await using g = group(time);
  const a = g.add("a");
  const b = g.add("b");
  await time.advance(POLL_MS);
  a.timers.freeze();
  let result: { runId: number } | undefined;
  b.engine.sync().then((value) => result = value, () => {});
  await time.until(() => result !== undefined, LEASE_MS * 3);
  assert.equal(b.engine.role, "syncer");
  assert.equal(runs(b), 1);
  assert.equal(runs(a), 0);
});

Deno.test("shared: a follower that fell behind the feed, or a change too large to name, ends in overflow", async () => {
  const time = new VirtualTime();
  await using g = group(time);
  const a = g.add("a");
  const b = g.add("b");
  await time.advance(POLL_MS);
  const watch = b.engine.table("todos").watch();
  // More records than an entry names: the follower is told to re-read.
  await a.engine.table("todos").putMany(
    Array.from({ length: 150 }, (_, i) => ({ id: `m${i}`, title: "many" })),
  );
  let next = watch.next();
  await time.advance(POLL_MS);
  assert.deepEqual((await next).value, { type: "overflow" });
  // The feed moved on by more than its ring while b did not look.
  b.timers.freeze();
  for (let i = 0; i <= FEED_RING; i++) {
    await appendEntry(g.storage, {
      from: "x",
      body: { changes: { origin: "pulled", kinds: {} } },
    }, 3);
  }
  b.timers.thaw();
  next = watch.next();
  await time.advance(POLL_MS);
  assert.deepEqual((await next).value, { type: "overflow" });
  assert.ok(
    b.events.some((event) =>
      event.type === "changesMissed" && event.kinds === null
    ),
  );
  await watch.return!();
});

Deno.test("shared: a syncer whose lease was taken steps down and its run stops", async () => {
  const time = new VirtualTime();
  await using g = group(time);
  const a = g.add("a");
  const b = g.add("b");
  // Just past a renewal (at leaseMs / 3), so only the poll sees the loss.
  await time.advance(LEASE_MS / 3 + 10);
  assert.equal(a.engine.role, "syncer");
  const release = g.hold();
  const run = a.engine.sync();
  let error: unknown;
  run.catch((reason) => error = reason);
  await time.advance(1);
  const [entry] = await g.storage.getMeta([LEASE_KEY]);
  await g.storage.write([{
    type: "putMeta",
    key: LEASE_KEY,
    value: { holder: "intruder", expiresAt: time.now + 60_000 },
    expect: entry!.rev,
  }]);
  await time.advance(POLL_MS);
  assert.equal(a.engine.role, "follower");
  assert.equal(b.engine.role, "follower");
  await time.until(() => error !== undefined, 1000);
  assert.ok(error instanceof SyncError);
  assert.match(
    error.message,
    /^Cannot continue sync as this engine lost the store's lease: current value is "a"$/,
  );
  release();
});

Deno.test("shared: a request the dead syncer never answered is sent again to the next one", async () => {
  const time = new VirtualTime();
  await using g = group(time);
  const a = g.add("a");
  // b waits longer before it takes a lease over, so c does.
  const b = g.add("b", {
    shared: { leaseMs: LEASE_MS * 10, pollMs: POLL_MS, holder: "b" },
  });
  const c = g.add("c");
  await time.advance(POLL_MS);
  a.timers.freeze();
  let result: { runId: number } | undefined;
  b.engine.sync().then((value) => result = value, () => {});
  await time.until(() => result !== undefined, LEASE_MS * 3);
  assert.equal(c.engine.role, "syncer");
  assert.deepEqual([runs(a), runs(b), runs(c)], [0, 0, 1]);
});

Deno.test("shared: a process restarted under its holder name takes its lease back at once", async () => {
  const time = new VirtualTime();
  await using g = group(time);
  const a = g.add("a");
  const b = g.add("b");
  await time.advance(POLL_MS);
  a.timers.freeze(); // a crashed, its lease still stored
  const again = g.add("a");
  await time.advance(POLL_MS);
  assert.equal(again.engine.role, "syncer");
  assert.equal(b.engine.role, "follower");
});

Deno.test("shared: a request during a run gets a fresh run, which pushes the follower's write", async () => {
  const time = new VirtualTime();
  await using g = group(time);
  const a = g.add("a");
  const b = g.add("b");
  await time.advance(POLL_MS);
  const release = g.hold();
  const first = a.engine.sync(); // waits in its pull
  await time.advance(1);
  await b.engine.table("todos").put({ id: "w1", title: "during a run" });
  let result: { stats: { pushed: number } } | undefined;
  b.engine.sync().then((value) => result = value, () => {});
  await time.advance(POLL_MS);
  release();
  assert.equal((await first).stats.pushed, 0);
  await time.until(() => result !== undefined, 1000);
  assert.equal(result!.stats.pushed, 1);
  assert.equal(runs(a), 2);
});

Deno.test("shared: a follower's sync() rejects with the syncer's error, rebuilt", async () => {
  const time = new VirtualTime();
  await using g = group(time);
  g.add("a");
  const b = g.add("b");
  await time.advance(POLL_MS);
  let error: unknown;
  b.engine.sync({ pullKinds: ["nope"] }).catch((reason) => error = reason);
  await time.until(() => error !== undefined, 1000);
  assert.ok(error instanceof SyncError);
  assert.equal(error.category, "validation");
  assert.equal(error.retryable, false);
  assert.equal(
    error.message,
    'Cannot pull as the kind is not registered: current value is "nope"',
  );
});

Deno.test("shared: a follower's write learns its outcome from the syncer, and its status counts follow", async () => {
  const time = new VirtualTime();
  await using g = group(time);
  const a = g.add("a");
  const b = g.add("b");
  for (const node of [a, b]) {
    node.engine.startAuto({ intervalMs: 60_000, afterWriteMs: 100 });
  }
  await time.advance(POLL_MS * 2);
  assert.equal(a.engine.status.role, "syncer");
  assert.equal(b.engine.status.role, "follower");
  const todos = b.engine.table("todos");
  const write = todos.put({ id: "o1", title: "settled elsewhere" });
  await write;
  const opId = await write.opId;
  assert.equal(typeof opId, "string");
  let outcome: unknown = null;
  write.synced.then((value) => outcome = value);
  await time.until(() => b.engine.status.pending === 1, 1000);
  await time.until(() => outcome !== null, 1000);
  const accepted = outcome as {
    status: string;
    opId: string;
    record: { title: string; updated_at?: string };
  };
  assert.equal(accepted.status, "accepted");
  assert.equal(accepted.opId, opId);
  assert.equal(accepted.record.title, "settled elsewhere");
  assert.equal(typeof accepted.record.updated_at, "string");
  await time.until(() => b.engine.status.pending === 0, 1000);
  assert.equal(runs(b), 0, "the follower never ran a sync");
});
