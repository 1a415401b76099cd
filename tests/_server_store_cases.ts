/**
 * The conformance cases of the {@linkcode ServerStore} contract: every store
 * adapter's test file calls {@linkcode testServerStore} once, so memory and
 * SQLite are held to the same clauses.
 *
 * @module
 */

import assert from "node:assert/strict";
import { ClosedError } from "../src/errors.ts";
import type { JsonObject } from "../src/json.ts";
import type {
  IdempotencyEntry,
  ServerRecord,
  ServerStore,
  ServerWrite,
} from "../transport/server.ts";

/** What a case gets from the adapter under test. */
export interface ServerStoreSetup {
  /** A fresh, empty store. */
  readonly store: ServerStore;
  /** Opens the same data again after `store` was closed (persistent stores). */
  readonly reopen?: () => ServerStore | Promise<ServerStore>;
  /** Removes whatever the setup created. */
  readonly teardown?: () => Promise<void>;
}

/** What the adapter under test declares. */
export interface ServerStoreCaseOptions {
  /**
   * Whether data survives a reopen; the reopen case is ignored otherwise.
   *
   * @default {false}
   */
  readonly persistent?: boolean;
}

/** Builds a record as the server would store it. */
export function serverRecord(
  kind: string,
  id: string,
  updatedAt: number,
  options: { deleted?: boolean; fields?: JsonObject } = {},
): ServerRecord {
  const stamp = new Date(updatedAt).toISOString();
  const deleted = options.deleted ?? false;
  return {
    kind,
    id,
    updatedAt,
    deletedAt: deleted ? updatedAt : null,
    data: {
      id,
      ...options.fields,
      updated_at: stamp,
      ...(deleted ? { deleted_at: stamp } : {}),
    },
  };
}

function put(namespace: string, record: ServerRecord): ServerWrite {
  return { type: "record", namespace, record };
}

function entry(
  key: string,
  expiresAt: number,
  status = 201,
): IdempotencyEntry {
  return {
    key,
    fingerprint: `fp:${key}`,
    status,
    body: { id: key, nested: [1, "two", null, { three: false }] },
    expiresAt,
  };
}

function ids(records: readonly ServerRecord[]): string[] {
  return records.map((record) => record.id);
}

/** Sorts as the contract orders: updatedAt, then id by UTF-16 code units. */
function keysetSort(records: readonly ServerRecord[]): ServerRecord[] {
  return [...records].sort((a, b) =>
    a.updatedAt - b.updatedAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
  );
}

/** A deterministic shuffle (LCG), so a failure replays identically. */
export function shuffled<T>(items: readonly T[], seed = 42): T[] {
  const result = [...items];
  let state = seed;
  for (let index = result.length - 1; index > 0; index--) {
    state = (state * 1103515245 + 12345) % 2147483648;
    const other = state % (index + 1);
    [result[index], result[other]] = [result[other]!, result[index]!];
  }
  return result;
}

/** Ids the contract says must survive: `/`, NUL, unicode, lone surrogates. */
export const AWKWARD_IDS: readonly string[] = [
  "a/b",
  "q?x=1&y",
  "h#frag",
  "100%",
  "%2F",
  "with space",
  "ünï😀",
  "nul\0byte",
  "\0",
  "lone\uD800",
];

/**
 * Registers the conformance cases for one store adapter.
 *
 * @param name The adapter's name, prefixed to every test name.
 * @param setup Creates a fresh store for each case.
 * @param options What the adapter declares.
 */
export function testServerStore(
  name: string,
  setup: () => Promise<ServerStoreSetup>,
  options: ServerStoreCaseOptions = {},
): void {
  const persistent = options.persistent ?? false;

  function test(
    title: string,
    body: (store: ServerStore, context: ServerStoreSetup) => Promise<void>,
    ignore = false,
  ): void {
    Deno.test({
      name: `${name}: ${title}`,
      ignore,
      async fn() {
        const context = await setup();
        try {
          await body(context.store, context);
        } finally {
          await context.store.close();
          await context.teardown?.();
        }
      },
    });
  }

  test("getRecord() returns null when absent and the record once committed", async (store) => {
    assert.equal(await store.getRecord("ns", "todo", "1"), null);
    const record = serverRecord("todo", "1", 1_000, {
      fields: { empty: "", zero: 0, no: false, nil: null, list: [] },
    });
    await store.commit([put("ns", record)]);
    assert.deepEqual(await store.getRecord("ns", "todo", "1"), record);
    assert.equal(await store.getRecord("ns", "todo", "2"), null);
    assert.equal(await store.getRecord("ns", "note", "1"), null);
  });

  test("commit() replaces a record, the last write of one commit winning", async (store) => {
    await store.commit([put("ns", serverRecord("todo", "1", 1))]);
    const second = serverRecord("todo", "1", 2, { fields: { v: 2 } });
    const third = serverRecord("todo", "1", 3, { deleted: true });
    await store.commit([put("ns", second), put("ns", third)]);
    assert.deepEqual(await store.getRecord("ns", "todo", "1"), third);
    const page = await store.listRecords("ns", "todo", { limit: 10 });
    assert.deepEqual(page.records, [third]);
  });

  test("commit() is all-or-nothing", async (store) => {
    const record = serverRecord("todo", "1", 5);
    const bogus = { type: "bogus", namespace: "ns" } as unknown as ServerWrite;
    await assert.rejects(
      store.commit([
        put("ns", record),
        { type: "idempotency", namespace: "ns", entry: entry("k", 100) },
        bogus,
      ]),
      TypeError,
    );
    assert.equal(await store.getRecord("ns", "todo", "1"), null);
    assert.equal(await store.getIdempotency("ns", "k"), null);
    assert.equal(await store.lastWrite("ns"), null);
    // The store still works after the refused commit.
    await store.commit([put("ns", record)]);
    assert.deepEqual(await store.getRecord("ns", "todo", "1"), record);
  });

  test("listRecords() orders by updatedAt, then id by UTF-16 code units", async (store) => {
    const idList = [
      "b",
      "a",
      "a\0",
      "ab",
      "\uFFFF",
      "😀", // U+1F600 is \uD83D\uDE00: before \uFFFF in UTF-16, after in UTF-8
      "Z",
      "",
      "é",
    ];
    const records = idList.flatMap((id) => [
      serverRecord("todo", id, 20),
      serverRecord("todo", `${id}-early`, 10),
    ]);
    await store.commit(shuffled(records).map((record) => put("ns", record)));
    const page = await store.listRecords("ns", "todo", { limit: 100 });
    assert.deepEqual(ids(page.records), ids(keysetSort(records)));
    const late = ids(page.records).slice(idList.length);
    assert.ok(late.indexOf("😀") < late.indexOf("\uFFFF"));
    assert.deepEqual(late.slice(0, 4), ["", "Z", "a", "a\0"]);
  });

  test("listRecords() selects by keyset: >= since, or > (since, afterId)", async (store) => {
    const records = [
      serverRecord("todo", "a", 10),
      serverRecord("todo", "b", 10),
      serverRecord("todo", "c", 10),
      serverRecord("todo", "d", 20),
      serverRecord("todo", "e", 20),
    ];
    await store.commit(records.map((record) => put("ns", record)));
    const list = async (
      query: { since?: number; afterId?: string; limit?: number },
    ): Promise<string[]> =>
      ids(
        (await store.listRecords("ns", "todo", { limit: 100, ...query }))
          .records,
      );
    assert.deepEqual(await list({}), ["a", "b", "c", "d", "e"]);
    assert.deepEqual(await list({ since: 10 }), ["a", "b", "c", "d", "e"]);
    assert.deepEqual(await list({ since: 10, afterId: "b" }), ["c", "d", "e"]);
    assert.deepEqual(await list({ since: 10, afterId: "c" }), ["d", "e"]);
    assert.deepEqual(await list({ since: 20, afterId: "d" }), ["e"]);
    assert.deepEqual(await list({ since: 15 }), ["d", "e"]);
    assert.deepEqual(await list({ since: 21 }), []);
    assert.deepEqual(await list({ since: 20, afterId: "e" }), []);
    assert.deepEqual(await list({ limit: 2 }), ["a", "b"]);
    assert.deepEqual(await list({ since: 10, afterId: "a", limit: 1 }), ["b"]);
  });

  test("listRecords() pages exactly through 1,000 records sharing one updatedAt", async (store) => {
    const all = Array.from(
      { length: 1000 },
      (_, index) => serverRecord("todo", `r${(index * 7919) % 1000}`, 500),
    );
    await store.commit(shuffled(all).map((record) => put("ns", record)));
    const seen: string[] = [];
    let cursor: { since: number; afterId: string } | null = null;
    let pages = 0;
    for (;;) {
      const { records } = await store.listRecords("ns", "todo", {
        limit: 7,
        ...(cursor ?? {}),
      });
      pages++;
      seen.push(...ids(records));
      const last = records.at(-1);
      if (records.length < 7 || last === undefined) break;
      cursor = { since: last.updatedAt, afterId: last.id };
    }
    assert.equal(pages, 143);
    assert.equal(seen.length, 1000);
    assert.equal(new Set(seen).size, 1000);
    assert.deepEqual(seen, ids(keysetSort(all)));
  });

  test("listRecords() skips tombstones only when includeDeleted is false", async (store) => {
    await store.commit([
      put("ns", serverRecord("todo", "a", 1, { deleted: true })),
      put("ns", serverRecord("todo", "b", 2)),
      put("ns", serverRecord("todo", "c", 3, { deleted: true })),
      put("ns", serverRecord("todo", "d", 4)),
      put("ns", serverRecord("todo", "e", 5)),
    ]);
    const all = await store.listRecords("ns", "todo", { limit: 10 });
    assert.deepEqual(ids(all.records), ["a", "b", "c", "d", "e"]);
    const explicit = await store.listRecords("ns", "todo", {
      limit: 10,
      includeDeleted: true,
    });
    assert.deepEqual(ids(explicit.records), ["a", "b", "c", "d", "e"]);
    const live = await store.listRecords("ns", "todo", {
      limit: 2,
      includeDeleted: false,
    });
    assert.deepEqual(ids(live.records), ["b", "d"]);
    const rest = await store.listRecords("ns", "todo", {
      limit: 2,
      includeDeleted: false,
      since: 4,
      afterId: "d",
    });
    assert.deepEqual(ids(rest.records), ["e"]);
  });

  test("ids, kinds, namespaces and keys with /, NUL, unicode and lone surrogates round-trip", async (store) => {
    const writes: ServerWrite[] = [];
    for (const [index, id] of AWKWARD_IDS.entries()) {
      writes.push(
        put(
          id,
          serverRecord(id, id, index, { fields: { text: `v\0${id}` } }),
        ),
        { type: "idempotency", namespace: id, entry: entry(id, 1e12) },
      );
    }
    await store.commit(writes);
    for (const [index, id] of AWKWARD_IDS.entries()) {
      const record = await store.getRecord(id, id, id);
      assert.deepEqual(
        record,
        serverRecord(id, id, index, { fields: { text: `v\0${id}` } }),
      );
      const page = await store.listRecords(id, id, { limit: 10 });
      assert.deepEqual(ids(page.records), [id]);
      assert.deepEqual(await store.getIdempotency(id, id), entry(id, 1e12));
    }
    // A prefix is another key: "nul" must not find "nul\0byte".
    assert.equal(await store.getRecord("nul\0byte", "nul\0byte", "nul"), null);
  });

  test("namespaces are isolated", async (store) => {
    await store.commit([
      put("alice", serverRecord("todo", "1", 1, { fields: { owner: "a" } })),
      put("bob", serverRecord("todo", "1", 2, { fields: { owner: "b" } })),
      put("bob", serverRecord("todo", "2", 3, { deleted: true })),
      { type: "idempotency", namespace: "alice", entry: entry("k", 100) },
    ]);
    const alice = await store.getRecord("alice", "todo", "1");
    assert.equal(alice?.data.owner, "a");
    assert.deepEqual(
      ids((await store.listRecords("alice", "todo", { limit: 10 })).records),
      ["1"],
    );
    assert.equal(await store.getIdempotency("bob", "k"), null);
    assert.equal(await store.getRecord("alice", "todo", "2"), null);
    await store.purge({ tombstonesUpdatedBefore: 100 });
    const alicePage = await store.listRecords("alice", "todo", { limit: 10 });
    assert.equal(alicePage.horizon, null);
    const bobPage = await store.listRecords("bob", "todo", { limit: 10 });
    assert.equal(bobPage.horizon, 4);
    assert.equal(
      (await store.getRecord("bob", "todo", "1"))?.data.owner,
      "b",
    );
  });

  test("getIdempotency() returns the committed entry, replaced by a later one", async (store) => {
    assert.equal(await store.getIdempotency("ns", "k"), null);
    await store.commit([
      { type: "idempotency", namespace: "ns", entry: entry("k", 100, 422) },
    ]);
    assert.deepEqual(
      await store.getIdempotency("ns", "k"),
      entry("k", 100, 422),
    );
    const replacement = { ...entry("k", 200, 200), fingerprint: "other" };
    await store.commit([
      { type: "idempotency", namespace: "ns", entry: replacement },
    ]);
    assert.deepEqual(await store.getIdempotency("ns", "k"), replacement);
  });

  test("purge() removes idempotency entries expired at the given instant", async (store) => {
    await store.commit([
      { type: "idempotency", namespace: "ns", entry: entry("a", 100) },
      { type: "idempotency", namespace: "ns", entry: entry("b", 200) },
      { type: "idempotency", namespace: "other", entry: entry("c", 300) },
    ]);
    assert.deepEqual(await store.purge({ idempotencyExpiredAt: 150 }), {
      idempotency: 1,
      tombstones: 0,
    });
    assert.equal(await store.getIdempotency("ns", "a"), null);
    assert.notEqual(await store.getIdempotency("ns", "b"), null);
    assert.deepEqual(await store.purge({ idempotencyExpiredAt: 200 }), {
      idempotency: 1,
      tombstones: 0,
    });
    assert.equal(await store.getIdempotency("ns", "b"), null);
    assert.notEqual(await store.getIdempotency("other", "c"), null);
    assert.deepEqual(await store.purge({}), { idempotency: 0, tombstones: 0 });
  });

  test("purge() removes old tombstones and raises the horizon past the newest", async (store) => {
    await store.commit([
      put("ns", serverRecord("todo", "live", 5)),
      put("ns", serverRecord("todo", "t10", 10, { deleted: true })),
      put("ns", serverRecord("todo", "t20", 20, { deleted: true })),
      put("ns", serverRecord("todo", "t30", 30, { deleted: true })),
      put("ns", serverRecord("note", "t40", 40, { deleted: true })),
    ]);
    const horizon = async (kind: string): Promise<number | null> =>
      (await store.listRecords("ns", kind, { limit: 1 })).horizon;
    assert.equal(await horizon("todo"), null);
    assert.deepEqual(await store.purge({ tombstonesUpdatedBefore: 25 }), {
      idempotency: 0,
      tombstones: 2,
    });
    assert.equal(await horizon("todo"), 21);
    assert.equal(await horizon("note"), null);
    assert.deepEqual(
      ids((await store.listRecords("ns", "todo", { limit: 10 })).records),
      ["live", "t30"],
    );
    // Nothing older is left: the horizon is never lowered.
    assert.equal(
      (await store.purge({ tombstonesUpdatedBefore: 15 })).tombstones,
      0,
    );
    assert.equal(await horizon("todo"), 21);
    assert.equal(
      (await store.purge({ tombstonesUpdatedBefore: 100 })).tombstones,
      2,
    );
    assert.equal(await horizon("todo"), 31);
    assert.equal(await horizon("note"), 41);
    assert.notEqual(await store.getRecord("ns", "todo", "live"), null);
  });

  test("lastWrite() is the greatest (updatedAt, id) of its namespace and is not lowered by purge", async (store) => {
    assert.equal(await store.lastWrite("a"), null);
    await store.commit([
      put("a", serverRecord("todo", "1", 5)),
      put("a", serverRecord("note", "0", 5)),
      put("a", serverRecord("todo", "z", 4)),
      put("b", serverRecord("todo", "2", 3)),
    ]);
    assert.deepEqual(await store.lastWrite("a"), { updatedAt: 5, id: "1" });
    // The clock is per namespace: "a" never moves "b".
    assert.deepEqual(await store.lastWrite("b"), { updatedAt: 3, id: "2" });
    assert.equal(await store.lastWrite("c"), null);
    // A later commit of an older instant or smaller id lowers nothing.
    await store.commit([
      put("a", serverRecord("todo", "0", 5)),
      put("a", serverRecord("todo", "y", 1)),
    ]);
    assert.deepEqual(await store.lastWrite("a"), { updatedAt: 5, id: "1" });
    await store.commit([
      put("a", serverRecord("todo", "3", 9, { deleted: true })),
    ]);
    await store.purge({ tombstonesUpdatedBefore: 100 });
    assert.equal(await store.getRecord("a", "todo", "3"), null);
    assert.deepEqual(await store.lastWrite("a"), { updatedAt: 9, id: "3" });
    assert.deepEqual(await store.lastWrite("b"), { updatedAt: 3, id: "2" });
  });

  test("returned records and entries are copies", async (store) => {
    await store.commit([
      put("ns", serverRecord("todo", "1", 1, { fields: { list: [1] } })),
      { type: "idempotency", namespace: "ns", entry: entry("k", 100) },
    ]);
    const record = await store.getRecord("ns", "todo", "1");
    assert.ok(record !== null);
    (record.data.list as number[]).push(2);
    (record.data as JsonObject).extra = true;
    const page = await store.listRecords("ns", "todo", { limit: 1 });
    (page.records[0]!.data as JsonObject).extra = true;
    const stored = await store.getIdempotency("ns", "k");
    ((stored?.body as JsonObject).nested as unknown[]).push("mutated");
    assert.deepEqual(
      await store.getRecord("ns", "todo", "1"),
      serverRecord("todo", "1", 1, { fields: { list: [1] } }),
    );
    assert.deepEqual(await store.getIdempotency("ns", "k"), entry("k", 100));
  });

  test("two concurrent commits both apply", async (store) => {
    await Promise.all([
      store.commit([put("ns", serverRecord("todo", "1", 1))]),
      store.commit([put("ns", serverRecord("todo", "2", 2))]),
    ]);
    const page = await store.listRecords("ns", "todo", { limit: 10 });
    assert.deepEqual(ids(page.records), ["1", "2"]);
  });

  test("close() is idempotent and every later call rejects with ClosedError", async (store) => {
    await store.commit([put("ns", serverRecord("todo", "1", 1))]);
    await store.close();
    await store.close();
    await assert.rejects(store.getRecord("ns", "todo", "1"), ClosedError);
    await assert.rejects(
      store.listRecords("ns", "todo", { limit: 1 }),
      ClosedError,
    );
    await assert.rejects(store.getIdempotency("ns", "k"), ClosedError);
    await assert.rejects(
      store.commit([put("ns", serverRecord("todo", "2", 2))]),
      ClosedError,
    );
    await assert.rejects(store.purge({}), ClosedError);
    await assert.rejects(store.lastWrite("ns"), ClosedError);
    await assert.rejects(
      store.trimIdempotency("ns", { keep: 0, expiresAtOrBefore: 0 }),
      ClosedError,
    );
  });

  test(
    "records, entries, horizons and the clock survive a reopen",
    async (store, context) => {
      const record = serverRecord("todo", "nul\0😀", 7, { fields: { n: 1 } });
      await store.commit([
        put("ns", record),
        put("ns", serverRecord("todo", "gone", 8, { deleted: true })),
        { type: "idempotency", namespace: "ns", entry: entry("k", 100) },
      ]);
      await store.purge({ tombstonesUpdatedBefore: 100 });
      await store.close();
      assert.ok(context.reopen !== undefined);
      await using reopened = await context.reopen();
      assert.deepEqual(
        await reopened.getRecord("ns", "todo", "nul\0😀"),
        record,
      );
      assert.deepEqual(
        await reopened.getIdempotency("ns", "k"),
        entry("k", 100),
      );
      const page = await reopened.listRecords("ns", "todo", { limit: 10 });
      assert.deepEqual(page.records, [record]);
      assert.equal(page.horizon, 9);
      assert.deepEqual(await reopened.lastWrite("ns"), {
        updatedAt: 8,
        id: "gone",
      });
    },
    !persistent,
  );
}
