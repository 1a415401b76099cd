import { testServerStore } from "../server/conformance.ts";
import { openKvServerStore } from "../server/kv.ts";

testServerStore("kv (file)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sync-server-kv-" });
  const file = `${dir}/store.kv`;
  return {
    store: await openKvServerStore(file),
    reopen: () => openKvServerStore(file),
    teardown: () => Deno.remove(dir, { recursive: true }),
  };
}, { persistent: true, shared: true });

import assert from "node:assert/strict";
import { createKvServerStore } from "../server/kv.ts";
import {
  createSyncServer,
  type ServerRecord,
  type ServerStore,
  StaleClockError,
} from "../server/mod.ts";
import { serverRecord } from "../server/_conformance_kit.ts";
import { withTimeout } from "./_timeout.ts";

const PREFIX = ["sync-server"];

async function withKv(
  fn: (kv: Deno.Kv, store: ServerStore) => Promise<void>,
): Promise<void> {
  await using kv = await Deno.openKv(":memory:");
  await using store = createKvServerStore(kv);
  await fn(kv, store);
}

async function countKeys(kv: Deno.Kv, tag: string): Promise<number> {
  let count = 0;
  for await (const _ of kv.list({ prefix: [...PREFIX, tag] })) count++;
  return count;
}

function big(id: string, updatedAt: number, units: number): ServerRecord {
  return serverRecord("todo", id, updatedAt, {
    fields: { text: "é😀x".repeat(Math.ceil(units / 4)) },
  });
}

Deno.test(
  "kv: a record near 1 MiB is chunked, read back whole, and its superseded chunks are purged",
  withTimeout(20_000, async () => {
    await withKv(async (kv, store) => {
      // ~1 MiB of UTF-8: 4 code units take 7 bytes.
      const first = big("a", 1, 600_000);
      await store.commit([{ type: "record", namespace: "ns", record: first }]);
      assert.deepEqual(await store.getRecord("ns", "todo", "a"), first);
      const chunks = await countKeys(kv, "b");
      assert.ok(chunks >= 16, `chunks: ${chunks}`);
      assert.equal(await countKeys(kv, "p"), 0);
      const page = await store.listRecords("ns", "todo", { limit: 5 });
      assert.deepEqual(page.records, [first]);

      const second = big("a", 2, 200_000);
      await store.commit([{ type: "record", namespace: "ns", record: second }]);
      assert.deepEqual(await store.getRecord("ns", "todo", "a"), second);
      // The old chunks stay for readers holding the old pointer, marked.
      assert.equal(await countKeys(kv, "p"), 1);
      await store.purge({ idempotencyExpiredAt: 0 });
      assert.equal(await countKeys(kv, "p"), 1);
      // Once the grace period is over, a purge removes them.
      for await (const marker of kv.list({ prefix: [...PREFIX, "p"] })) {
        await kv.set(marker.key, { at: 0, intent: null });
      }
      await store.purge({ idempotencyExpiredAt: 0 });
      assert.equal(await countKeys(kv, "p"), 0);
      const left = await countKeys(kv, "b");
      assert.ok(left < chunks, `${left} of ${chunks}`);
      assert.deepEqual(await store.getRecord("ns", "todo", "a"), second);
    });
  }),
);

Deno.test("kv: ids and keys of any contract-valid length fit KV's keys and keep their order", async () => {
  await withKv(async (_kv, store) => {
    const ids = [
      "\uffff".repeat(256),
      "\uffff".repeat(255) + "\ufffe",
      "😀".repeat(128),
      "a".repeat(256),
      "\u007f".repeat(256),
      "\ud800",
      "a/b\u0000c",
    ];
    const records = ids.map((id) => serverRecord("todo", id, 7));
    await store.commit(records.map((record) => ({
      type: "record" as const,
      namespace: "n".repeat(10_000),
      record,
    })));
    const page = await store.listRecords("n".repeat(10_000), "todo", {
      limit: 100,
    });
    assert.deepEqual(
      page.records.map((record) => record.id),
      [...ids].sort((a, b) => a < b ? -1 : a > b ? 1 : 0),
    );
    const key = "~".repeat(255);
    await store.commit([{
      type: "idempotency",
      namespace: "ns",
      entry: { key, fingerprint: "f", status: 201, body: {}, expiresAt: 9 },
    }]);
    assert.equal((await store.getIdempotency("ns", key))?.status, 201);
    // Past what any key can hold: refused whole, before anything is written.
    await assert.rejects(
      store.commit([
        {
          type: "record",
          namespace: "ns",
          record: serverRecord("todo", "x", 1),
        },
        {
          type: "record",
          namespace: "ns",
          record: serverRecord("todo", "\uffff".repeat(400), 2),
        },
      ]),
      RangeError,
    );
    assert.equal(await store.getRecord("ns", "todo", "x"), null);
  });
});

Deno.test("kv: a guarded commit against a moved clock throws StaleClockError and writes nothing", async () => {
  await withKv(async (kv, store) => {
    const record = serverRecord("todo", "1", 1);
    await store.commit([{ type: "record", namespace: "ns", record }]);
    const clock = await store.readClock!("ns");
    assert.deepEqual(clock.last, { updatedAt: 1, id: "1" });
    // Another instance commits: the clock moves.
    await store.commit([{
      type: "record",
      namespace: "ns",
      record: serverRecord("todo", "2", 2),
    }]);
    const moved = await store.readClock!("ns");
    assert.notEqual(moved.version, clock.version);
    await assert.rejects(
      store.commit([
        { type: "record", namespace: "ns", record: big("3", 3, 200_000) },
        {
          type: "idempotency",
          namespace: "ns",
          entry: {
            key: "k",
            fingerprint: "f",
            status: 201,
            body: {},
            expiresAt: 9,
          },
        },
      ], { namespace: "ns", expect: clock }),
      StaleClockError,
    );
    assert.equal(await store.getRecord("ns", "todo", "3"), null);
    assert.equal(await store.getIdempotency("ns", "k"), null);
    assert.deepEqual(await store.readClock!("ns"), moved);
    // The staged chunks went with the refused commit.
    assert.equal(await countKeys(kv, "b"), 0);
    assert.equal(await countKeys(kv, "p"), 0);
    // An idempotency-only commit moves the clock's version too.
    await store.commit([{
      type: "idempotency",
      namespace: "ns",
      entry: {
        key: "k",
        fingerprint: "f",
        status: 404,
        body: {},
        expiresAt: 9,
      },
    }], { namespace: "ns", expect: moved });
    const after = await store.readClock!("ns");
    assert.deepEqual(after.last, moved.last);
    assert.notEqual(after.version, moved.version);
  });
});

Deno.test("kv: a commit larger than one atomic operation is rolled forward from its intent by a reader", async () => {
  await withKv(async (kv, store) => {
    const records = Array.from(
      { length: 600 },
      (_, index) =>
        serverRecord("todo", `r${String(index).padStart(3, "0")}`, 10 + index),
    );
    // Fail the atomic operations after the one that takes the clock, as a
    // crash would: the commit is decided, only its parts are left.
    const realAtomic = kv.atomic.bind(kv);
    let armed = false;
    let taken = false;
    kv.atomic = () => {
      const op = realAtomic();
      const commit = op.commit.bind(op);
      let takes = false;
      op.commit = async () => {
        if (taken && armed) throw new Error("crash");
        const result = await commit();
        if (takes && result.ok) taken = true;
        return result;
      };
      const set = op.set.bind(op);
      op.set = (key, value, options) => {
        if (
          key[1] === "c" && typeof value === "object" && value !== null &&
          (value as { intent: unknown }).intent !== null
        ) {
          takes = true;
        }
        return options === undefined
          ? set(key, value)
          : set(key, value, options);
      };
      return op;
    };
    armed = true;
    await assert.rejects(
      store.commit(records.map((record) => ({
        type: "record" as const,
        namespace: "ns",
        record,
      }))),
      /crash/,
    );
    kv.atomic = realAtomic;
    // Another store on the same database reads: it finishes the commit.
    await using other = createKvServerStore(kv);
    const page = await other.listRecords("ns", "todo", { limit: 1000 });
    assert.equal(page.records.length, 600);
    assert.deepEqual(await other.lastWrite("ns"), {
      updatedAt: 609,
      id: "r599",
    });
    assert.equal(await countKeys(kv, "i"), 0);
    assert.equal(await countKeys(kv, "p"), 0);
  });
});

/** A store that holds one instance's commits until the test lets them go. */
function gated(
  inner: ServerStore,
): {
  store: ServerStore;
  reached: Promise<void>;
  release: () => void;
  stale: { count: number };
} {
  let reach!: () => void;
  const reached = new Promise<void>((resolve) => reach = resolve);
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  const stale = { count: 0 };
  let first = true;
  const store: ServerStore = {
    getRecord: (ns, kind, id) => inner.getRecord(ns, kind, id),
    listRecords: (ns, kind, options) => inner.listRecords(ns, kind, options),
    getIdempotency: (ns, key) => inner.getIdempotency(ns, key),
    async commit(writes, guard) {
      if (first) {
        first = false;
        reach();
        await gate;
      }
      try {
        return await inner.commit(writes, guard);
      } catch (error) {
        if (error instanceof StaleClockError) stale.count++;
        throw error;
      }
    },
    purge: (options) => inner.purge(options),
    trimIdempotency: (ns, options) => inner.trimIdempotency(ns, options),
    lastWrite: (ns) => inner.lastWrite(ns),
    readClock: (ns) => inner.readClock!(ns),
    close: () => inner.close(),
    [Symbol.asyncDispose]: () => inner.close(),
  };
  return { store, reached, release, stale };
}

async function put(
  server: { fetch: (request: Request) => Promise<Response> },
  id: string,
  body: Record<string, unknown>,
  key: string,
): Promise<
  { status: number; body: Record<string, unknown>; replayed: boolean }
> {
  const response = await server.fetch(
    new Request(`http://sync.test/todo/${id}`, {
      method: "PUT",
      headers: { "idempotency-key": key },
      body: JSON.stringify(body),
    }),
  );
  return {
    status: response.status,
    body: await response.json(),
    replayed: response.headers.get("idempotent-replayed") === "true",
  };
}

Deno.test(
  "kv: two handler instances over one database keep 409 preconditions exact",
  withTimeout(10_000, async () => {
    await using kv = await Deno.openKv(":memory:");
    const a = gated(createKvServerStore(kv));
    await using serverA = createSyncServer({ store: a.store });
    await using serverB = createSyncServer({ store: createKvServerStore(kv) });
    const created = await put(serverB, "x", { v: 0 }, "k0");
    assert.equal(created.status, 201);
    const base = created.body.updated_at;
    // A reads x at `base` and stops before its commit; B writes x meanwhile.
    const pending = put(serverA, "x", { v: 1, _baseUpdatedAt: base }, "ka");
    await a.reached;
    const b = await put(serverB, "x", { v: 2, _baseUpdatedAt: base }, "kb");
    assert.equal(b.status, 200);
    a.release();
    const answer = await pending;
    // A's commit lost the race, ran again on B's record, and conflicts.
    assert.equal(a.stale.count, 1);
    assert.equal(answer.status, 409);
    assert.equal((answer.body.current as Record<string, unknown>).v, 2);
    const stored = await serverB.fetch(new Request("http://sync.test/todo"));
    const items = (await stored.json()).items;
    assert.deepEqual(items.map((item: { v: number }) => item.v), [2]);
  }),
);

Deno.test(
  "kv: two handler instances over one database apply one idempotency key once",
  withTimeout(10_000, async () => {
    await using kv = await Deno.openKv(":memory:");
    const a = gated(createKvServerStore(kv));
    await using serverA = createSyncServer({ store: a.store });
    await using serverB = createSyncServer({ store: createKvServerStore(kv) });
    // The same request, retried by a client, lands on both instances.
    const pending = put(serverA, "y", { v: 1 }, "op-1");
    await a.reached;
    const b = await put(serverB, "y", { v: 1 }, "op-1");
    assert.equal(b.status, 201);
    a.release();
    const answer = await pending;
    assert.equal(a.stale.count, 1);
    assert.equal(answer.status, 201);
    assert.equal(answer.replayed, true);
    assert.deepEqual(answer.body, b.body);
    // A different request under the same key is a mismatch on either.
    const other = await put(serverA, "y", { v: 9 }, "op-1");
    assert.equal(other.status, 422);
    const page =
      await (await serverA.fetch(new Request("http://sync.test/todo"))).json();
    assert.equal(page.items.length, 1);
    assert.equal(page.items[0].updated_at, b.body.updated_at);
  }),
);

Deno.test("kv: the clock check is part of the commit's atomic operation, not only a read before it", async () => {
  await withKv(async (kv, store) => {
    await store.commit([{
      type: "record",
      namespace: "ns",
      record: serverRecord("todo", "1", 1),
    }]);
    const clock = await store.readClock!("ns");
    await using other = createKvServerStore(kv);
    // Another instance commits after this commit read the clock and before
    // its atomic operation lands.
    const realAtomic = kv.atomic.bind(kv);
    kv.atomic = () => {
      kv.atomic = realAtomic;
      const op = realAtomic();
      const commit = op.commit.bind(op);
      op.commit = async () => {
        await other.commit([{
          type: "record",
          namespace: "ns",
          record: serverRecord("todo", "2", 2),
        }]);
        return await commit();
      };
      return op;
    };
    await assert.rejects(
      store.commit([{
        type: "record",
        namespace: "ns",
        record: serverRecord("todo", "3", 2),
      }], { namespace: "ns", expect: clock }),
      StaleClockError,
    );
    kv.atomic = realAtomic;
    assert.equal(await store.getRecord("ns", "todo", "3"), null);
    assert.deepEqual(await store.lastWrite("ns"), { updatedAt: 2, id: "2" });
  });
});

Deno.test(
  "kv: a batch slice that lost the race runs again and answers each op once",
  withTimeout(10_000, async () => {
    await using kv = await Deno.openKv(":memory:");
    const a = gated(createKvServerStore(kv));
    await using serverA = createSyncServer({ store: a.store });
    await using serverB = createSyncServer({ store: createKvServerStore(kv) });
    const ops = [
      { opId: "o1", kind: "todo", id: "p", type: "upsert", payload: { v: 1 } },
      { opId: "o2", kind: "todo", id: "q", type: "upsert", payload: { v: 1 } },
    ];
    const pending = serverA.fetch(
      new Request("http://sync.test/batch", {
        method: "POST",
        body: JSON.stringify({ ops }),
      }),
    );
    await a.reached;
    assert.equal((await put(serverB, "q", { v: 2 }, "b1")).status, 201);
    a.release();
    const response = await pending;
    assert.equal(response.status, 200);
    const { results } = await response.json();
    assert.equal(a.stale.count, 1);
    // Run again on B's record: q existed by then, so it was replaced (200).
    assert.deepEqual(
      results.map((result: { opId: string; status: number }) => [
        result.opId,
        result.status,
      ]),
      [["o1", 201], ["o2", 200]],
    );
  }),
);

Deno.test("kv: a write that keeps losing the race is answered 503 with Retry-After, nothing applied", async () => {
  await withKv(async (_kv, inner) => {
    let attempts = 0;
    const store: ServerStore = {
      getRecord: (ns, kind, id) => inner.getRecord(ns, kind, id),
      listRecords: (ns, kind, options) => inner.listRecords(ns, kind, options),
      getIdempotency: (ns, key) => inner.getIdempotency(ns, key),
      commit(_writes, guard) {
        attempts++;
        return Promise.reject(new StaleClockError(guard!.namespace, null));
      },
      purge: (options) => inner.purge(options),
      trimIdempotency: (ns, options) => inner.trimIdempotency(ns, options),
      lastWrite: (ns) => inner.lastWrite(ns),
      readClock: (ns) => inner.readClock!(ns),
      close: () => Promise.resolve(),
      [Symbol.asyncDispose]: () => Promise.resolve(),
    };
    await using server = createSyncServer({ store });
    const answer = await server.fetch(
      new Request("http://sync.test/todo/1", { method: "PUT", body: "{}" }),
    );
    assert.equal(answer.status, 503);
    assert.equal(answer.headers.get("retry-after"), "1");
    assert.equal((await answer.json()).error, "busy");
    assert.equal(attempts, 9);
    assert.equal(await inner.getRecord("public", "todo", "1"), null);
  });
});
