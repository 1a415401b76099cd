/**
 * The conformance cases of the {@linkcode ServerStore} contract: every store
 * adapter's test file calls {@linkcode testServerStore} once, so memory and
 * SQLite are held to the same clauses.
 *
 * @module
 */

import assert from "node:assert/strict";
import { ClosedError } from "../src/errors.ts";
import type { JsonObject, JsonValue } from "../src/json.ts";
import {
  createSyncServer,
  type IdempotencyEntry,
  type ListRecordsOptions,
  type ServerRecord,
  type ServerStore,
  type ServerWrite,
  type SyncServer,
} from "../server/mod.ts";

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

/** The instant tests start at. */
export const T0 = Date.UTC(2025, 2, 1, 10, 0, 0);

/** A timestamp as the wire writes it. */
export function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** The principal named by `Authorization: Bearer <name>`. */
export function bearerPrincipal(request: Request): string | null {
  return request.headers.get("authorization")?.match(/^Bearer (\w+)$/)?.[1] ??
    null;
}

/** An unexpected server error fails the test instead of hiding in a 500. */
function rethrowLater(error: unknown): void {
  setTimeout(() => {
    throw error;
  });
}

/** What {@linkcode callOf} answers. */
export interface Called {
  readonly status: number;
  readonly body: JsonObject;
  readonly replayed: boolean;
}

/** Sends one request as a principal. */
export type Call = (
  principal: string,
  method: string,
  target: string,
  json?: JsonValue,
  key?: string,
) => Promise<Called>;

/** A request helper for one server: principal, method, target, body, key. */
export function callOf(server: SyncServer): Call {
  return async (principal, method, target, json, key) => {
    const headers: Record<string, string> = {
      authorization: `Bearer ${principal}`,
    };
    if (key !== undefined) headers["idempotency-key"] = key;
    const response = await server.fetch(
      new Request(`http://sync.test${target}`, {
        method,
        headers,
        ...(json === undefined ? {} : { body: JSON.stringify(json) }),
      }),
    );
    return {
      status: response.status,
      body: await response.json() as JsonObject,
      replayed: response.headers.get("idempotent-replayed") === "true",
    };
  };
}

/** Pulls a kind to its end, three at a time, following page tokens. */
export async function pullEverything(
  call: Call,
  principal: string,
  query: Record<string, string>,
): Promise<JsonObject[]> {
  const items: JsonObject[] = [];
  let params: Record<string, string> = { limit: "3", ...query };
  for (let pages = 0; pages < 1000; pages++) {
    const { status, body } = await call(
      principal,
      "GET",
      `/todo?${new URLSearchParams(params)}`,
    );
    assert.equal(status, 200, JSON.stringify(body));
    const page = body.items as JsonObject[];
    items.push(...page);
    const last = page.at(-1);
    if (body.nextPageToken === null || last === undefined) return items;
    params = {
      ...params,
      updatedSince: String(last.updated_at),
      afterId: String(last.id),
      pageToken: String(body.nextPageToken),
    };
  }
  throw new Error("Cannot pull to the end as it never ends");
}

/** Whether a pull query's keyset selects a pulled item. */
function selectsItem(item: JsonObject, query: Record<string, string>): boolean {
  if (query.updatedSince === undefined) return true;
  const at = Date.parse(String(item.updated_at));
  const since = Date.parse(query.updatedSince);
  if (query.afterId === undefined) return at >= since;
  return at > since || (at === since && String(item.id) > query.afterId);
}

/** Whether the keyset of `options` selects `record` (CONTRACT.md, Pull). */
function selects(
  record: ServerRecord,
  options: Partial<ListRecordsOptions>,
): boolean {
  const { since, afterId } = options;
  if (since === undefined) return true;
  if (afterId === undefined) return record.updatedAt >= since;
  return record.updatedAt > since ||
    (record.updatedAt === since && record.id > afterId);
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

  test("purge() with a limit removes the oldest first, in bounded slices, with an exact horizon", async (store) => {
    await store.commit([
      { type: "idempotency", namespace: "ns", entry: entry("c", 300) },
      { type: "idempotency", namespace: "other", entry: entry("a", 100) },
      { type: "idempotency", namespace: "ns", entry: entry("b", 200) },
      put("ns", serverRecord("todo", "t30", 30, { deleted: true })),
      put("ns", serverRecord("todo", "t10", 10, { deleted: true })),
      put("other", serverRecord("todo", "o20", 20, { deleted: true })),
      put("ns", serverRecord("note", "n20", 20, { deleted: true })),
      put("ns", serverRecord("todo", "t40", 40, { deleted: true })),
    ]);
    const horizon = async (ns: string, kind: string) =>
      (await store.listRecords(ns, kind, { limit: 1 })).horizon;
    const bounds = { idempotencyExpiredAt: 1000, tombstonesUpdatedBefore: 35 };
    // Two entries of three; tombstones up to the second one's millisecond
    // (20, which three share) of four.
    assert.deepEqual(await store.purge({ ...bounds, limit: 2 }), {
      idempotency: 2,
      tombstones: 3,
    });
    assert.equal(await store.getIdempotency("other", "a"), null);
    assert.equal(await store.getIdempotency("ns", "b"), null);
    assert.notEqual(await store.getIdempotency("ns", "c"), null);
    assert.equal(await horizon("ns", "todo"), 11);
    assert.equal(await horizon("ns", "note"), 21);
    assert.equal(await horizon("other", "todo"), 21);
    assert.notEqual(await store.getRecord("ns", "todo", "t30"), null);
    assert.deepEqual(await store.purge({ ...bounds, limit: 2 }), {
      idempotency: 1,
      tombstones: 1,
    });
    assert.equal(await horizon("ns", "todo"), 31);
    assert.notEqual(await store.getRecord("ns", "todo", "t40"), null);
    assert.deepEqual(await store.purge({ ...bounds, limit: 2 }), {
      idempotency: 0,
      tombstones: 0,
    });
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

  test("listRecords() stops at maxBytes with at least one record, and says so", async (store) => {
    const records = ["é😀", "a", "bb", "ccc", "dddd"].map((pad, index) =>
      serverRecord("todo", `r${index}`, 10 + index, {
        fields: { pad: pad.repeat(50) },
        deleted: index === 2,
      })
    );
    await store.commit(records.map((record) => put("ns", record)));
    const size = (record: ServerRecord): number =>
      new TextEncoder().encode(JSON.stringify(record.data)).length;
    const [r0, r1, r2, r3] = records.map(size) as [
      number,
      number,
      number,
      number,
    ];
    const list = async (
      options: Partial<ListRecordsOptions>,
    ): Promise<[string[], boolean]> => {
      const page = await store.listRecords("ns", "todo", {
        limit: 100,
        ...options,
      });
      return [ids(page.records), page.truncated];
    };
    assert.deepEqual(await list({ maxBytes: r0 + r1 }), [["r0", "r1"], true]);
    assert.deepEqual(await list({ maxBytes: r0 + r1 - 1 }), [["r0"], true]);
    // A record larger than the budget still goes out, alone.
    assert.deepEqual(await list({ maxBytes: 1 }), [["r0"], true]);
    assert.deepEqual(await list({ maxBytes: 1e9 }), [
      ["r0", "r1", "r2", "r3", "r4"],
      false,
    ]);
    assert.deepEqual(await list({}), [["r0", "r1", "r2", "r3", "r4"], false]);
    // Stopped by limit, not by bytes.
    assert.deepEqual(await list({ limit: 2, maxBytes: 1e9 }), [
      ["r0", "r1"],
      false,
    ]);
    // Skipped tombstones cost nothing; the keyset applies first.
    assert.deepEqual(
      await list({
        since: 11,
        afterId: "r1",
        includeDeleted: false,
        maxBytes: r3,
      }),
      [["r3"], true],
    );
    assert.deepEqual(
      await list({ since: 12, maxBytes: r2 + r3 }),
      [["r2", "r3"], true],
    );
    assert.deepEqual(await list({ since: 14, maxBytes: 1 }), [["r4"], false]);
  });

  test("trimIdempotency() removes the oldest entries that may go and counts the rest", async (store) => {
    await store.commit([
      ...[30, 10, 50, 20, 40].map((expiresAt): ServerWrite => ({
        type: "idempotency",
        namespace: "ns",
        entry: entry(`k${expiresAt}`, expiresAt),
      })),
      { type: "idempotency", namespace: "other", entry: entry("k10", 10) },
    ]);
    const count = { keep: Infinity, expiresAtOrBefore: -Infinity };
    assert.deepEqual(await store.trimIdempotency("ns", count), {
      count: 5,
      oldestExpiresAt: 10,
    });
    assert.deepEqual(
      await store.trimIdempotency("ns", { keep: 3, expiresAtOrBefore: 100 }),
      { count: 3, oldestExpiresAt: 30 },
    );
    assert.equal(await store.getIdempotency("ns", "k10"), null);
    assert.equal(await store.getIdempotency("ns", "k20"), null);
    assert.deepEqual(await store.getIdempotency("ns", "k30"), entry("k30", 30));
    // Only entries old enough may go: here one, though three are asked for.
    assert.deepEqual(
      await store.trimIdempotency("ns", { keep: 0, expiresAtOrBefore: 35 }),
      { count: 2, oldestExpiresAt: 40 },
    );
    assert.deepEqual(
      await store.trimIdempotency("ns", { keep: 5, expiresAtOrBefore: 100 }),
      { count: 2, oldestExpiresAt: 40 },
    );
    // Another namespace is untouched, an unknown one empty.
    assert.deepEqual(await store.trimIdempotency("other", count), {
      count: 1,
      oldestExpiresAt: 10,
    });
    assert.deepEqual(await store.trimIdempotency("nobody", count), {
      count: 0,
      oldestExpiresAt: null,
    });
  });

  test("tenancy: listRecords() returns only its namespace, in every keyset shape", async (store) => {
    // Bob's records share the kind, the ids and the instants of Alice's, and
    // interleave them in keyset order; Mallory's have other ids.
    const owned = new Map<string, ServerRecord[]>();
    const writes: ServerWrite[] = [];
    for (const owner of ["alice", "bob", "mallory"]) {
      const records: ServerRecord[] = [];
      for (let index = 0; index < 24; index++) {
        const id = owner === "mallory" ? `m${index}` : `r${index}`;
        records.push(
          serverRecord("todo", id, 100 + 10 * Math.floor(index / 8), {
            deleted: index % 5 === (owner === "bob" ? 1 : 0),
            fields: { owner },
          }),
        );
      }
      if (owner === "bob") {
        records.push(serverRecord("todo", "r3b", 100, { fields: { owner } }));
      }
      owned.set(owner, records);
      writes.push(...records.map((record) => put(owner, record)));
    }
    await store.commit(shuffled(writes));
    await store.purge({ tombstonesUpdatedBefore: 0 });
    for (const owner of ["alice", "bob"]) {
      const mine = keysetSort(owned.get(owner)!);
      for (
        const shape of [
          {},
          { since: 110 },
          { since: 100, afterId: "r3" },
          { since: 110, afterId: "r1" },
          { since: 110, afterId: "" },
          { since: 120, afterId: "r17" },
          { since: 100, afterId: "r3", includeDeleted: false },
          { includeDeleted: false },
          { since: 110, includeDeleted: false },
          { maxBytes: 1 },
          { since: 100, afterId: "r3", maxBytes: 300 },
        ] as Partial<ListRecordsOptions>[]
      ) {
        const page = await store.listRecords(owner, "todo", {
          limit: 100,
          ...shape,
        });
        const expected = mine.filter((record) =>
          selects(record, shape) &&
          (shape.includeDeleted !== false || record.deletedAt === null)
        );
        const got = shape.maxBytes === undefined
          ? expected
          : expected.slice(0, page.records.length);
        assert.ok(page.records.length > 0, JSON.stringify(shape));
        assert.deepEqual(
          page.records,
          got,
          `${owner} ${JSON.stringify(shape)}`,
        );
      }
      // Paged three at a time through the shared instants, cursor by cursor.
      const seen: ServerRecord[] = [];
      let cursor: { since: number; afterId: string } | null = null;
      for (;;) {
        const { records }: { records: ServerRecord[] } = await store
          .listRecords(owner, "todo", { limit: 3, ...(cursor ?? {}) });
        seen.push(...records);
        const last = records.at(-1);
        if (records.length < 3 || last === undefined) break;
        cursor = { since: last.updatedAt, afterId: last.id };
      }
      assert.deepEqual(seen, mine);
      assert.ok(seen.every((record) => record.data.owner === owner));
    }
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

  // -- the server over this store --------------------------------------------

  test("tenancy: through the server, a principal never reads, changes or learns of another's records", async (store) => {
    let now = T0;
    await using server = createSyncServer({
      store,
      auth: bearerPrincipal,
      now: () => now,
      onError: rethrowLater,
    });
    const call = callOf(server);
    // Alice and Bob write the same ids in the same milliseconds, Bob's
    // interleaving Alice's in keyset order; some become tombstones.
    for (const owner of ["alice", "bob"]) {
      for (let index = 0; index < 12; index++) {
        now = T0 + 10 * Math.floor(index / 4);
        const id = owner === "bob" && index % 3 === 0
          ? `r${index}b`
          : `r${index}`;
        assert.equal(
          (await call(owner, "PUT", `/todo/${id}`, { owner, index })).status,
          201,
        );
        if (index % 4 === 1) {
          assert.equal(
            (await call(owner, "DELETE", `/todo/${id}`)).status,
            200,
          );
        }
      }
    }
    now = T0 + 100;
    const alice = await pullEverything(call, "alice", {});
    const bob = await pullEverything(call, "bob", {});
    assert.equal(alice.length, 12);
    assert.equal(bob.length, 12);
    // Every query shape, paged three at a time with page tokens.
    for (
      const query of [
        {},
        { includeDeleted: "false" },
        { updatedSince: iso(T0 + 10) },
        { updatedSince: iso(T0), afterId: "r1" },
        { updatedSince: iso(T0 + 10), afterId: "r5", includeDeleted: "false" },
      ]
    ) {
      for (
        const [owner, everything] of [["alice", alice], ["bob", bob]] as const
      ) {
        const items = await pullEverything(call, owner, query);
        const expected = everything.filter((item) =>
          selectsItem(item, query) &&
          (query.includeDeleted !== "false" || item.deleted_at === undefined)
        );
        assert.ok(expected.length > 0, JSON.stringify(query));
        assert.deepEqual(items, expected, `${owner} ${JSON.stringify(query)}`);
        assert.ok(items.every((item) => item.owner === owner));
      }
    }
    // A base on Alice's version, her id: Bob creates his own (no 409 leak).
    const stale = await call("bob", "PUT", "/todo/r0", {
      mine: true,
      _baseUpdatedAt: String(alice[0]!.updated_at),
    });
    assert.equal(stale.status, 201);
    assert.equal(stale.body.owner, undefined);
    // An id only Alice has is unknown to Bob, single or batched.
    assert.equal((await call("bob", "DELETE", "/todo/r3")).status, 404);
    const batch = await call("bob", "POST", "/batch", {
      ops: [
        { opId: "b1", kind: "todo", id: "r6", type: "delete" },
        { opId: "b2", kind: "todo", id: "r9", type: "upsert", payload: {} },
        {
          opId: "b3",
          kind: "todo",
          id: "r3",
          type: "upsert",
          payload: {},
          baseUpdatedAt: iso(T0),
        },
      ],
    });
    assert.deepEqual(
      (batch.body.results as JsonObject[]).map((result) => result.status),
      [404, 201, 201],
    );
    // Idempotency keys are per principal: Alice's "k" is not Bob's.
    const first = await call("alice", "PUT", "/todo/k", { v: 1 }, "k");
    assert.equal(first.status, 201);
    const other = await call("bob", "PUT", "/todo/other", { v: 2 }, "k");
    assert.equal(other.status, 201);
    assert.equal(other.replayed, false);
    const same = await call("bob", "PUT", "/todo/k", { v: 1 }, "k");
    assert.equal(same.status, 422, "Bob's own key, used for another request");
    const replay = await call("alice", "PUT", "/todo/k", { v: 1 }, "k");
    assert.equal(replay.replayed, true);
    assert.deepEqual(replay.body, first.body);
    const batchKey = await call("bob", "POST", "/batch", {
      ops: [{ opId: "k2", kind: "todo", id: "k", type: "delete" }],
    });
    const aliceKey = await call("alice", "DELETE", "/todo/k", undefined, "k2");
    assert.equal(aliceKey.replayed, false);
    assert.equal(
      (batchKey.body.results as JsonObject[])[0]?.status,
      404,
      "Bob never had /todo/k",
    );
    // Alice's records are as she left them (but for her own /todo/k).
    const after = await pullEverything(call, "alice", {});
    assert.deepEqual(
      after.filter((item) => item.id !== "k"),
      alice,
    );
  });

  test("clock: one principal's burst of writes does not move another's updated_at", async (store) => {
    await using server = createSyncServer({
      store,
      auth: bearerPrincipal,
      now: () => T0,
      onError: rethrowLater,
    });
    const call = callOf(server);
    // Under a frozen clock each id below the last moves Alice 1 ms on.
    for (let index = 299; index >= 0; index--) {
      await call("alice", "PUT", `/todo/${String(index).padStart(3, "0")}`, {});
    }
    const last = await call("alice", "PUT", "/todo/000", {});
    assert.equal(last.body.updated_at, iso(T0 + 300));
    assert.equal(
      (await call("bob", "PUT", "/todo/zzz", {})).body.updated_at,
      iso(T0),
    );
    const batch = await call("bob", "POST", "/batch", {
      ops: [{ opId: "o", kind: "note", id: "a", type: "upsert", payload: {} }],
    });
    assert.equal(
      ((batch.body.results as JsonObject[])[0]?.record as JsonObject)
        .updated_at,
      iso(T0 + 1),
    );
    assert.deepEqual(await store.lastWrite("bob"), {
      updatedAt: T0 + 1,
      id: "a",
    });
    assert.deepEqual(await store.lastWrite("alice"), {
      updatedAt: T0 + 300,
      id: "000",
    });
  });

  test(
    "clock: each principal's clock and last id survive a reopen",
    async (store, context) => {
      {
        const server = createSyncServer({
          store,
          auth: bearerPrincipal,
          now: () => T0,
          onError: rethrowLater,
        });
        const call = callOf(server);
        for (const id of ["c", "b", "a"]) {
          await call("alice", "PUT", `/todo/${id}`, {});
        }
        await call("bob", "PUT", "/todo/m", {});
        await server.close();
      }
      assert.ok(context.reopen !== undefined);
      // The clock went back an hour while the server was down.
      await using server = createSyncServer({
        store: await context.reopen(),
        auth: bearerPrincipal,
        now: () => T0 - 3_600_000,
        onError: rethrowLater,
      });
      const call = callOf(server);
      // Alice's last write was (T0 + 2, "a"): "b" moves on, "z" may share it.
      assert.equal(
        (await call("alice", "PUT", "/todo/z", {})).body.updated_at,
        iso(T0 + 2),
      );
      assert.equal(
        (await call("alice", "PUT", "/todo/b", {})).body.updated_at,
        iso(T0 + 3),
      );
      // Bob's clock is his own: (T0, "m").
      assert.equal(
        (await call("bob", "PUT", "/todo/n", {})).body.updated_at,
        iso(T0),
      );
      assert.equal(
        (await call("bob", "PUT", "/todo/a", {})).body.updated_at,
        iso(T0 + 1),
      );
    },
    !persistent,
  );
}
