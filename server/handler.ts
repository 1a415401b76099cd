/**
 * The reference sync server: a `fetch`-style handler that implements the
 * whole wire contract (docs/contract.md) on top of a small, batch-shaped
 * {@linkcode ServerStore}. It uses web standards plus `node:crypto`'s
 * `createHash` (in Deno, Deno Deploy, Bun and Node), so the same handler runs
 * under `Deno.serve`, `Bun.serve` and Deno Deploy; the SQLite store lives in
 * `@offline-first/sync/server/sqlite` so that this module never
 * imports `node:sqlite`.
 *
 * Routes, under an optional base path: `GET /health`, `POST /batch`,
 * `GET /{kind}` (pull), `PUT /{kind}/{id}` (upsert) and
 * `DELETE /{kind}/{id}` (soft delete). Kind and id are percent-decoded path
 * segments.
 *
 * @example Serving over HTTP
 * ```ts
 * import { createSyncServer } from "@offline-first/sync/server";
 * import assert from "node:assert/strict";
 *
 * await using server = createSyncServer();
 * await using http = Deno.serve(
 *   { port: 0, hostname: "127.0.0.1", onListen() {} },
 *   server.fetch,
 * );
 * const response = await fetch(`http://127.0.0.1:${http.addr.port}/health`);
 * const health = await response.json();
 * assert.equal(health.status, "ok");
 * assert.equal(health.batch, true);
 * assert.equal(health.limits.maxBatchOps, 1000);
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";
import { ClosedError, ValidationError } from "../src/errors.ts";
import { isJsonObject, type JsonObject, type JsonValue } from "../src/json.ts";
import { cursorIdAfter, RESERVED_KINDS, WIRE_LIMITS } from "../src/limits.ts";
import { parseTimestamp } from "../src/timestamp.ts";
import { type StandardSchemaV1, validateWith } from "../src/schema.ts";
import {
  idRefusal,
  isTooDeep,
  keyRefusal,
  kindRefusal,
  preview,
  type Refusal,
  type ServerLimits,
  tooDeepRefusal,
  utf8Length,
} from "./_limits.ts";
import {
  encodePageToken,
  isGone,
  readPageToken,
  requestBound,
} from "./_page_token.ts";
import { pullMark, type Tenant, Tenants } from "./_tenants.ts";

export type { ServerLimits } from "./_limits.ts";

// ---------------------------------------------------------------------------
// The store contract
// ---------------------------------------------------------------------------

/** A record as the server stores it, in one namespace. */
export interface ServerRecord {
  /** The table (the REST path segment). */
  readonly kind: string;
  /** The record's id. */
  readonly id: string;
  /** The server-assigned `updated_at`, in ms since epoch. */
  readonly updatedAt: number;
  /** When it was deleted (ms since epoch) for a tombstone; else `null`. */
  readonly deletedAt: number | null;
  /**
   * The record exactly as the server sends it: with `id`, `updated_at` and,
   * for a tombstone, `deleted_at`.
   */
  readonly data: JsonObject;
}

/** A stored response to a write, found again by its idempotency key. */
export interface IdempotencyEntry {
  /** The idempotency key, as the client sent it. */
  readonly key: string;
  /** A digest of the request, to detect a key reused for another request. */
  readonly fingerprint: string;
  /** The HTTP status of the stored response. */
  readonly status: number;
  /** The JSON body of the stored response. */
  readonly body: JsonValue;
  /** When the entry stops counting (ms since epoch). */
  readonly expiresAt: number;
}

/** One change in a {@linkcode ServerStore.commit} call. */
export type ServerWrite =
  /** Inserts or replaces a record (a tombstone is a record too). */
  | {
    readonly type: "record";
    /** The principal the record belongs to. */
    readonly namespace: string;
    /** The record. */
    readonly record: ServerRecord;
  }
  /** Inserts or replaces an idempotency entry. */
  | {
    readonly type: "idempotency";
    /** The principal the key belongs to. */
    readonly namespace: string;
    /** The entry. */
    readonly entry: IdempotencyEntry;
  };

/** The keyset of a {@linkcode ServerStore.listRecords} call. */
export interface ListRecordsOptions {
  /**
   * The cursor's `updated_at` (ms). Without `afterId`, records with
   * `updatedAt >= since`; absent, every record.
   */
  readonly since?: number;
  /**
   * The cursor's id: with it, records with `(updatedAt, id) > (since,
   * afterId)`. Ignored without `since`.
   */
  readonly afterId?: string;
  /** The most records to return; a positive integer. */
  readonly limit: number;
  /**
   * Whether tombstones are returned.
   *
   * @default true
   */
  readonly includeDeleted?: boolean;
  /**
   * The most bytes of records to return: the page stops before the record
   * that would take the sum of the records' sizes (the UTF-8 length of
   * `JSON.stringify(data)`) past it, but holds at least one record. A store
   * reads no more than it returns (plus sizes), so a page of huge records
   * never costs more memory than the page itself.
   *
   * @default {no limit}
   */
  readonly maxBytes?: number;
}

/** The answer of {@linkcode ServerStore.listRecords}. */
export interface ListRecordsResult {
  /** The page, ordered by `(updatedAt, id)`, ids by UTF-16 code units. */
  readonly records: ServerRecord[];
  /**
   * The namespace and kind's tombstone horizon (ms): a cursor older than
   * this may have missed a purged tombstone. `null` when none was purged.
   */
  readonly horizon: number | null;
  /**
   * Whether the page stopped at `maxBytes` while more records were
   * selected; `false` when it stopped at `limit` or at the end.
   */
  readonly truncated: boolean;
}

/** The newest write of a namespace: {@linkcode ServerStore.lastWrite}. */
export interface LastWrite {
  /** The greatest `updatedAt` ever committed in the namespace (ms). */
  readonly updatedAt: number;
  /**
   * The greatest id committed at `updatedAt`; `null` when unknown (a later
   * write at that instant then moves to the next millisecond).
   */
  readonly id: string | null;
}

/** What {@linkcode ServerStore.trimIdempotency} removes. */
export interface TrimIdempotencyOptions {
  /**
   * Removes entries, oldest (smallest `expiresAt`) first, until at most
   * this many remain; `Infinity` only counts.
   */
  readonly keep: number;
  /** Removes only entries with `expiresAt <= expiresAtOrBefore`. */
  readonly expiresAtOrBefore: number;
}

/** The answer of {@linkcode ServerStore.trimIdempotency}. */
export interface TrimIdempotencyResult {
  /** The entries left in the namespace. */
  readonly count: number;
  /** The smallest `expiresAt` left, or `null` when none is left. */
  readonly oldestExpiresAt: number | null;
}

/** What {@linkcode ServerStore.purge} removes. */
export interface ServerStorePurgeOptions {
  /** Removes idempotency entries with `expiresAt <= idempotencyExpiredAt`. */
  readonly idempotencyExpiredAt?: number;
  /** Removes tombstones with `updatedAt < tombstonesUpdatedBefore`. */
  readonly tombstonesUpdatedBefore?: number;
  /**
   * Removes at most about this many idempotency entries and this many
   * tombstones, the oldest first (tombstones sharing the last one's
   * millisecond go with it, so the horizon stays exact): a purge holds the
   * store for a bounded time, and the caller calls again while a result
   * reaches the limit. Below 1, nothing is removed.
   *
   * @default {Infinity}
   */
  readonly limit?: number;
}

/** How much {@linkcode ServerStore.purge} removed. */
export interface ServerStorePurgeResult {
  /** The number of idempotency entries removed. */
  readonly idempotency: number;
  /** The number of tombstones removed. */
  readonly tombstones: number;
}

/**
 * Where the reference server keeps records and idempotency entries.
 *
 * The server serialises every write itself and computes every timestamp, so
 * a store is plain storage. Every store MUST:
 *
 * 1. Keep each namespace apart: no call reads or changes another
 *    namespace's records or entries.
 * 2. Apply a {@linkcode ServerStore.commit} atomically: all of its writes or,
 *    when it rejects, none.
 * 3. Order {@linkcode ServerStore.listRecords} by `(updatedAt, id)`, ids
 *    compared by UTF-16 code units (JavaScript's `<`), and select by keyset
 *    exactly as {@linkcode ListRecordsOptions} says, however many records
 *    share one `updatedAt`.
 * 4. Return ids, kinds, keys and data exactly as written: with `/`, NUL,
 *    unicode and lone surrogates; returned objects are copies.
 * 5. Raise a kind's tombstone horizon on purge to one millisecond past the
 *    newest purged tombstone, never lowering it, and return it with the page
 *    it applies to (read together, so a purge cannot slip between them).
 * 6. Keep {@linkcode ServerStore.lastWrite} per namespace, the greatest
 *    `(updatedAt, id)` ever committed there, never lowered, not even by a
 *    purge: the clock is per namespace (CONTRACT.md).
 * 7. Make `close()` idempotent and reject every later call with
 *    `ClosedError`.
 * 8. Keep `maxBytes` in {@linkcode ServerStore.listRecords} without reading
 *    the records it leaves out.
 *
 * `tests/_server_store_cases.ts` states these clauses as tests.
 *
 * @example Wrapping a store to count commits
 * ```ts
 * import {
 *   createMemoryServerStore,
 *   createSyncServer,
 *   type ServerStore,
 * } from "@offline-first/sync/server";
 * import assert from "node:assert/strict";
 *
 * const inner = createMemoryServerStore();
 * let commits = 0;
 * const store: ServerStore = {
 *   getRecord: (ns, kind, id) => inner.getRecord(ns, kind, id),
 *   listRecords: (ns, kind, options) => inner.listRecords(ns, kind, options),
 *   getIdempotency: (ns, key) => inner.getIdempotency(ns, key),
 *   commit(writes) {
 *     commits++;
 *     return inner.commit(writes);
 *   },
 *   purge: (options) => inner.purge(options),
 *   trimIdempotency: (ns, options) => inner.trimIdempotency(ns, options),
 *   lastWrite: (ns) => inner.lastWrite(ns),
 *   close: () => inner.close(),
 *   [Symbol.asyncDispose]: () => inner.close(),
 * };
 * await using server = createSyncServer({ store });
 * await server.fetch(
 *   new Request("http://localhost/todo/1", { method: "PUT", body: "{}" }),
 * );
 * assert.equal(commits, 1);
 * ```
 */
export interface ServerStore extends AsyncDisposable {
  /**
   * Reads one record, tombstone or not.
   *
   * @param namespace The principal.
   * @param kind The table.
   * @param id The record's id.
   * @returns The record, or `null` when absent.
   * @throws {ClosedError} After close.
   */
  getRecord(
    namespace: string,
    kind: string,
    id: string,
  ): Promise<ServerRecord | null>;

  /**
   * Reads one page of a table's records in keyset order, with the table's
   * tombstone horizon.
   *
   * @param namespace The principal.
   * @param kind The table.
   * @param options The keyset and the page size.
   * @returns The page and the horizon.
   * @throws {ClosedError} After close.
   */
  listRecords(
    namespace: string,
    kind: string,
    options: ListRecordsOptions,
  ): Promise<ListRecordsResult>;

  /**
   * Reads an idempotency entry. It MAY return an expired entry: the server
   * checks `expiresAt` itself.
   *
   * @param namespace The principal.
   * @param key The idempotency key.
   * @returns The entry, or `null` when absent.
   * @throws {ClosedError} After close.
   */
  getIdempotency(
    namespace: string,
    key: string,
  ): Promise<IdempotencyEntry | null>;

  /**
   * Applies writes atomically, in order (a later write of the same record or
   * key wins).
   *
   * @param writes The writes; may be empty.
   * @returns When every write is durable.
   * @throws {TypeError} For a write of unknown type; nothing is applied.
   * @throws {ClosedError} After close.
   */
  commit(writes: readonly ServerWrite[]): Promise<void>;

  /**
   * Removes expired idempotency entries and old tombstones, raising the
   * tombstone horizon of every namespace and kind that lost one.
   *
   * @param options What to remove; an absent bound removes nothing.
   * @returns How much was removed.
   * @throws {ClosedError} After close.
   */
  purge(options: ServerStorePurgeOptions): Promise<ServerStorePurgeResult>;

  /**
   * Counts a namespace's idempotency entries and removes the oldest of them,
   * so the server can bound the keys each principal stores.
   *
   * @param namespace The principal.
   * @param options How many to keep, and which may go.
   * @returns What is left.
   * @throws {ClosedError} After close.
   */
  trimIdempotency(
    namespace: string,
    options: TrimIdempotencyOptions,
  ): Promise<TrimIdempotencyResult>;

  /**
   * Reads the newest write ever committed in a namespace, so a restarted
   * server never assigns an older `updated_at` there.
   *
   * @param namespace The principal.
   * @returns The greatest `(updatedAt, id)`, or `null` before the first
   * record.
   * @throws {ClosedError} After close.
   */
  lastWrite(namespace: string): Promise<LastWrite | null>;

  /**
   * Releases the store. Idempotent.
   *
   * @returns When the store is closed.
   */
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------
// The memory store
// ---------------------------------------------------------------------------

/**
 * Creates a {@linkcode ServerStore} that keeps everything in memory: for
 * tests, demos and the default of {@linkcode createSyncServer}.
 *
 * @returns An empty store.
 *
 * @example Committing and reading a record
 * ```ts
 * import { createMemoryServerStore } from "@offline-first/sync/server";
 * import assert from "node:assert/strict";
 *
 * await using store = createMemoryServerStore();
 * const record = {
 *   kind: "todo",
 *   id: "a/b",
 *   updatedAt: 0,
 *   deletedAt: null,
 *   data: { id: "a/b", updated_at: "1970-01-01T00:00:00.000Z" },
 * };
 * await store.commit([{ type: "record", namespace: "alice", record }]);
 * assert.deepEqual(await store.getRecord("alice", "todo", "a/b"), record);
 * assert.equal(await store.getRecord("bob", "todo", "a/b"), null);
 * ```
 */
export function createMemoryServerStore(): ServerStore {
  return new MemoryServerStore();
}

/**
 * A record as the memory store keeps it: its data as JSON text, which is the
 * copy clause 4 asks for (the SQLite store keeps the same text) and costs a
 * third of a `structuredClone` of the object.
 */
interface MemoryRecord {
  readonly kind: string;
  readonly id: string;
  readonly updatedAt: number;
  readonly deletedAt: number | null;
  readonly data: string;
  /** The UTF-8 length of `data`, for `maxBytes`. */
  readonly size: number;
}

/** An idempotency entry as the memory store keeps it: its body as JSON text. */
interface MemoryEntry {
  readonly key: string;
  readonly fingerprint: string;
  readonly status: number;
  readonly body: string;
  readonly expiresAt: number;
}

/** One namespace's table, with its sort order cached between writes. */
interface MemoryTable {
  readonly records: Map<string, MemoryRecord>;
  /** The records in keyset order; `null` after a write invalidated it. */
  sorted: MemoryRecord[] | null;
  horizon: number | null;
}

class MemoryServerStore implements ServerStore {
  /** Tables by namespace, then kind. */
  readonly #tables = new Map<string, Map<string, MemoryTable>>();
  /** Entries by namespace, then key. */
  readonly #entries = new Map<string, Map<string, MemoryEntry>>();
  /** The newest write of each namespace. */
  readonly #lastWrites = new Map<string, LastWrite>();
  #closed = false;

  getRecord(
    namespace: string,
    kind: string,
    id: string,
  ): Promise<ServerRecord | null> {
    return settle(() => {
      this.#assertOpen("read record");
      const record = this.#tables.get(namespace)?.get(kind)?.records.get(id);
      return record === undefined ? null : toServerRecord(record);
    });
  }

  listRecords(
    namespace: string,
    kind: string,
    options: ListRecordsOptions,
  ): Promise<ListRecordsResult> {
    return settle(() => {
      this.#assertOpen("list records");
      const table = this.#tables.get(namespace)?.get(kind);
      if (table === undefined) {
        return { records: [], horizon: null, truncated: false };
      }
      table.sorted ??= [...table.records.values()].sort(compareRecords);
      const sorted = table.sorted;
      const includeDeleted = options.includeDeleted ?? true;
      const maxBytes = options.maxBytes ?? Infinity;
      const records: ServerRecord[] = [];
      let bytes = 0;
      for (
        let index = firstAfter(sorted, options);
        index < sorted.length && records.length < options.limit;
        index++
      ) {
        const record = sorted[index]!;
        if (!includeDeleted && record.deletedAt !== null) continue;
        bytes += record.size;
        if (records.length > 0 && bytes > maxBytes) {
          return { records, horizon: table.horizon, truncated: true };
        }
        records.push(toServerRecord(record));
      }
      return { records, horizon: table.horizon, truncated: false };
    });
  }

  getIdempotency(
    namespace: string,
    key: string,
  ): Promise<IdempotencyEntry | null> {
    return settle(() => {
      this.#assertOpen("read idempotency entry");
      const entry = this.#entries.get(namespace)?.get(key);
      return entry === undefined ? null : {
        key: entry.key,
        fingerprint: entry.fingerprint,
        status: entry.status,
        body: JSON.parse(entry.body) as JsonValue,
        expiresAt: entry.expiresAt,
      };
    });
  }

  commit(writes: readonly ServerWrite[]): Promise<void> {
    return settle(() => {
      this.#assertOpen("commit writes");
      // Validate and serialise everything first: a commit is all-or-nothing.
      for (const write of writes) assertServerWrite(write);
      const texts = serialize(writes);
      for (const [index, write] of writes.entries()) {
        if (write.type === "record") {
          const { kind, id, updatedAt, deletedAt } = write.record;
          const data = texts[index]!;
          const record: MemoryRecord = {
            kind,
            id,
            updatedAt,
            deletedAt,
            data,
            size: utf8Length(data),
          };
          const tables = inner(this.#tables, write.namespace);
          let table = tables.get(kind);
          if (table === undefined) {
            table = { records: new Map(), sorted: null, horizon: null };
            tables.set(kind, table);
          }
          table.records.set(record.id, record);
          table.sorted = null;
          const last = this.#lastWrites.get(write.namespace);
          if (
            last === undefined || updatedAt > last.updatedAt ||
            (updatedAt === last.updatedAt && last.id !== null && id > last.id)
          ) {
            this.#lastWrites.set(write.namespace, { updatedAt, id });
          }
        } else {
          const { key, fingerprint, status, expiresAt } = write.entry;
          const entries = inner(this.#entries, write.namespace);
          // Re-inserted, so iteration order stays write order.
          entries.delete(key);
          entries.set(key, {
            key,
            fingerprint,
            status,
            body: texts[index]!,
            expiresAt,
          });
        }
      }
    });
  }

  purge(options: ServerStorePurgeOptions): Promise<ServerStorePurgeResult> {
    return settle(() => {
      this.#assertOpen("purge");
      let idempotency = 0;
      let tombstones = 0;
      const limit = Math.floor(options.limit ?? Infinity);
      if (!(limit >= 1)) return { idempotency, tombstones };
      const expiredAt = options.idempotencyExpiredAt;
      if (expiredAt !== undefined) {
        const expired: [Map<string, MemoryEntry>, MemoryEntry][] = [];
        for (const entries of this.#entries.values()) {
          for (const entry of entries.values()) {
            if (entry.expiresAt <= expiredAt) expired.push([entries, entry]);
          }
        }
        if (expired.length > limit) {
          expired.sort((a, b) => a[1].expiresAt - b[1].expiresAt);
          expired.length = limit;
        }
        for (const [entries, entry] of expired) entries.delete(entry.key);
        idempotency = expired.length;
      }
      let before = options.tombstonesUpdatedBefore;
      if (before !== undefined) {
        const old: number[] = [];
        for (const tables of this.#tables.values()) {
          for (const table of tables.values()) {
            for (const record of table.records.values()) {
              if (record.deletedAt !== null && record.updatedAt < before) {
                old.push(record.updatedAt);
              }
            }
          }
        }
        if (old.length > limit) {
          old.sort((a, b) => a - b);
          before = old[limit - 1]! + 1;
        }
        for (const tables of this.#tables.values()) {
          for (const table of tables.values()) {
            let newest = -Infinity;
            for (const [id, record] of table.records) {
              if (record.deletedAt !== null && record.updatedAt < before) {
                table.records.delete(id);
                newest = Math.max(newest, record.updatedAt);
                tombstones++;
              }
            }
            if (newest !== -Infinity) {
              table.horizon = Math.max(table.horizon ?? -Infinity, newest + 1);
              table.sorted = null;
            }
          }
        }
      }
      return { idempotency, tombstones };
    });
  }

  trimIdempotency(
    namespace: string,
    options: TrimIdempotencyOptions,
  ): Promise<TrimIdempotencyResult> {
    return settle(() => {
      this.#assertOpen("trim idempotency entries");
      const entries = this.#entries.get(namespace);
      if (entries === undefined) return { count: 0, oldestExpiresAt: null };
      const excess = entries.size - options.keep;
      if (excess > 0) {
        const candidates = [...entries.values()]
          .filter((entry) => entry.expiresAt <= options.expiresAtOrBefore)
          .sort((a, b) =>
            a.expiresAt - b.expiresAt ||
            (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)
          );
        for (const entry of candidates.slice(0, excess)) {
          entries.delete(entry.key);
        }
      }
      let oldest: number | null = null;
      for (const entry of entries.values()) {
        if (oldest === null || entry.expiresAt < oldest) {
          oldest = entry.expiresAt;
        }
      }
      return { count: entries.size, oldestExpiresAt: oldest };
    });
  }

  lastWrite(namespace: string): Promise<LastWrite | null> {
    return settle(() => {
      this.#assertOpen("read last write");
      return this.#lastWrites.get(namespace) ?? null;
    });
  }

  close(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #assertOpen(action: string): void {
    if (this.#closed) {
      throw new ClosedError(`Cannot ${action} as the store is closed`);
    }
  }
}

/** The inner map of `outer` at `key`, created when absent. */
function inner<K, L, V>(outer: Map<K, Map<L, V>>, key: K): Map<L, V> {
  let map = outer.get(key);
  if (map === undefined) {
    map = new Map();
    outer.set(key, map);
  }
  return map;
}

function toServerRecord(record: MemoryRecord): ServerRecord {
  return {
    kind: record.kind,
    id: record.id,
    updatedAt: record.updatedAt,
    deletedAt: record.deletedAt,
    data: JSON.parse(record.data) as JsonObject,
  };
}

/**
 * The JSON text of each write's data or body. A write's record and the
 * response stored under its key are usually one object (the stored record
 * is the `2xx` body), so each object is stringified once per commit.
 *
 * @throws {TypeError} When a body is not JSON (`undefined`, a function, a
 * BigInt, a cycle).
 */
function serialize(writes: readonly ServerWrite[]): string[] {
  const seen = new Map<JsonValue, string>();
  return writes.map((write) => {
    const value = write.type === "record"
      ? write.record.data
      : write.entry.body;
    let text = seen.get(value);
    if (text === undefined) {
      text = JSON.stringify(value) as string | undefined;
      if (text === undefined) {
        throw new TypeError(
          `Cannot commit ${write.type} write as its data is not JSON: current value is ${
            describe(value)
          }`,
        );
      }
      if (typeof value === "object" && value !== null) seen.set(value, text);
    }
    return text;
  });
}

function compareRecords(a: MemoryRecord, b: MemoryRecord): number {
  if (a.updatedAt !== b.updatedAt) return a.updatedAt < b.updatedAt ? -1 : 1;
  // `<` on strings compares UTF-16 code units: the order the contract fixes.
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** The index of the first record the keyset selects (binary search). */
function firstAfter(
  sorted: readonly MemoryRecord[],
  { since, afterId }: ListRecordsOptions,
): number {
  if (since === undefined) return 0;
  let low = 0;
  let high = sorted.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    const record = sorted[middle]!;
    const selected = afterId === undefined
      ? record.updatedAt >= since
      : record.updatedAt > since ||
        (record.updatedAt === since && record.id > afterId);
    if (selected) high = middle;
    else low = middle + 1;
  }
  return low;
}

/**
 * Checks the shape of one write, so that a store can refuse a whole commit
 * before applying any of it.
 *
 * @param write The write to check.
 * @throws {TypeError} When the write is malformed.
 */
function assertServerWrite(write: ServerWrite): void {
  if (write.type === "record") {
    const { record } = write;
    if (
      typeof record.kind !== "string" || typeof record.id !== "string" ||
      !Number.isSafeInteger(record.updatedAt) ||
      (record.deletedAt !== null && !Number.isSafeInteger(record.deletedAt)) ||
      !isJsonObject(record.data)
    ) {
      throw new TypeError(
        `Cannot commit record as it is malformed: current value is ${
          JSON.stringify(record)
        }`,
      );
    }
  } else if (write.type === "idempotency") {
    const { entry } = write;
    if (
      typeof entry.key !== "string" || typeof entry.fingerprint !== "string" ||
      !Number.isInteger(entry.status) || typeof entry.expiresAt !== "number"
    ) {
      throw new TypeError(
        `Cannot commit idempotency entry as it is malformed: current value is ${
          JSON.stringify(entry)
        }`,
      );
    }
  } else {
    throw new TypeError(
      `Cannot commit write as its type is unknown: current value is ${
        JSON.stringify((write as { type: unknown }).type)
      }`,
    );
  }
}

/** Runs synchronous work as a Promise, so a store method never throws. */
function settle<T>(work: () => T): Promise<T> {
  try {
    return Promise.resolve(work());
  } catch (error) {
    return Promise.reject(error);
  }
}

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

/** Options for {@linkcode createSyncServer}. */
export interface SyncServerOptions {
  /**
   * Where records and idempotency entries live. The server owns it:
   * {@linkcode SyncServer.close} closes it. One store serves one server
   * process, since the server serialises writes in memory.
   *
   * @default {createMemoryServerStore()}
   */
  readonly store?: ServerStore;
  /**
   * Derives the principal (the namespace of every record and idempotency
   * key) from a request; `null` answers `401` before any data is touched.
   * `GET /health` is not authenticated.
   *
   * @default {every request is the principal "public"}
   */
  readonly auth?: (request: Request) => string | null | Promise<string | null>;
  /**
   * Standard Schemas by kind. A PUT's record, with `id` but without the
   * server's `updated_at` and `deleted_at`, must pass its kind's schema or
   * is answered `422`. The body is stored as sent, not the schema's output.
   *
   * @default {{}}
   */
  readonly schemas?: Readonly<Record<string, StandardSchemaV1>>;
  /**
   * The largest record body, in bytes: a `PUT` body, or one batch op's
   * payload (that op alone is answered `413`); larger ones are answered
   * `413`.
   *
   * @default {1048576}
   */
  readonly maxBodyBytes?: number;
  /**
   * The largest `POST /batch` body, in bytes; a larger batch is answered
   * `413 batch_too_large` and nothing of it is applied.
   *
   * @default {8388608}
   */
  readonly maxBatchBytes?: number;
  /**
   * The most ops in one `POST /batch`, at most the contract's 1,000; more
   * are answered `413 batch_too_large` and nothing is applied. It bounds
   * how long one batch holds its principal's write queue.
   *
   * @default {1000}
   */
  readonly maxBatchOps?: number;
  /**
   * The most items a pull page holds, at most the contract's 1,000; a
   * larger `limit` is clamped.
   *
   * @default {1000}
   */
  readonly maxPageSize?: number;
  /**
   * The largest pull page body, in bytes (at least 4096): a page stops
   * before the item that would pass it and still carries `nextPageToken`;
   * a single record larger than this goes out alone. The store reads no
   * more than the page.
   *
   * @default {4194304}
   */
  readonly maxPageBytes?: number;
  /**
   * The page size of a pull without `limit`; at most `maxPageSize`.
   *
   * @default {100}
   */
  readonly defaultPageSize?: number;
  /**
   * How long a write's response is kept for replays by idempotency key, in
   * ms (a positive integer).
   *
   * @default {604800000}
   */
  readonly idempotencyRetentionMs?: number;
  /**
   * The most idempotency keys stored per principal (at least
   * `maxBatchOps`). Over it, the oldest keys expire first, but never one
   * stored less than 24 hours ago: when none can, the write is answered
   * `429 too_many_keys` with `Retry-After` and nothing is applied.
   *
   * @default {100000}
   */
  readonly maxIdempotencyKeys?: number;
  /**
   * How long tombstones are kept before the server purges them (checked at
   * most once a minute of `now()`); a pull whose cursor, brought from an
   * earlier pull, predates a purged tombstone is answered `410`. The later
   * pages of a pull that began with no cursor are not (their page tokens
   * carry the pull's mark), so a full resync always finishes.
   *
   * @default {Infinity}
   */
  readonly tombstoneRetentionMs?: number;
  /**
   * Whether `POST /batch` is served.
   *
   * @default {true}
   */
  readonly batch?: boolean;
  /**
   * The clock, in ms since epoch: assigns `updated_at`, expires idempotency
   * entries and dates every response.
   *
   * @default {Date.now}
   */
  readonly now?: () => number;
  /**
   * The path the routes live under, such as `"/sync"`; `""` for the root.
   *
   * @default {""}
   */
  readonly basePath?: string;
  /**
   * Receives every unexpected error, answered `500` to the client.
   *
   * @default {console.error}
   */
  readonly onError?: (error: unknown) => void;
}

/** Options for {@linkcode SyncServer.purgeTombstones}. */
export interface PurgeTombstonesOptions {
  /**
   * Removes tombstones whose `updated_at` is before this instant (ms since
   * epoch).
   *
   * @default {now() - tombstoneRetentionMs, or every tombstone when the retention is unlimited}
   */
  readonly olderThan?: number;
}

/** A running reference server. */
export interface SyncServer extends AsyncDisposable {
  /**
   * Answers one request; never rejects. Bound, so `Deno.serve(server.fetch)`
   * and `Bun.serve({ fetch: server.fetch })` work.
   */
  readonly fetch: (request: Request) => Promise<Response>;

  /**
   * Removes old tombstones now. Pulls whose cursor, brought from an earlier
   * pull, predates a removed tombstone are then answered `410` (the client
   * runs a full resync).
   *
   * @param options Which tombstones.
   * @returns How many tombstones were removed.
   * @throws {TypeError} When `olderThan` is not a number.
   * @throws {ClosedError} After close.
   */
  purgeTombstones(options?: PurgeTombstonesOptions): Promise<number>;

  /**
   * Stops serving: later requests are answered `503`. Waits for the writes
   * in progress, then closes the store. Idempotent.
   *
   * @returns When the store is closed.
   */
  close(): Promise<void>;
}

/**
 * Creates the reference server.
 *
 * @param options The store, auth hook, schemas, limits and clock.
 * @returns The server; serve its `fetch`.
 * @throws {TypeError} When an option has the wrong type.
 * @throws {RangeError} When a limit is out of range.
 *
 * @example Writing and pulling through the handler
 * ```ts
 * import { createSyncServer } from "@offline-first/sync/server";
 * import assert from "node:assert/strict";
 *
 * await using server = createSyncServer({ now: () => Date.UTC(2025, 2, 1) });
 * const put = await server.fetch(
 *   new Request("http://localhost/todo/1", {
 *     method: "PUT",
 *     headers: { "idempotency-key": "op-1" },
 *     body: JSON.stringify({ title: "Buy milk" }),
 *   }),
 * );
 * assert.equal(put.status, 201);
 * assert.deepEqual(await put.json(), {
 *   id: "1",
 *   title: "Buy milk",
 *   updated_at: "2025-03-01T00:00:00.000Z",
 * });
 *
 * const pull = await server.fetch(new Request("http://localhost/todo"));
 * const page = await pull.json();
 * assert.equal(page.items.length, 1);
 * assert.equal(page.nextPageToken, null);
 * ```
 */
export function createSyncServer(options: SyncServerOptions = {}): SyncServer {
  return new ReferenceServer(resolveOptions(options));
}

interface ResolvedOptions {
  readonly store: ServerStore;
  readonly auth: (request: Request) => string | null | Promise<string | null>;
  readonly schemas: Readonly<Record<string, StandardSchemaV1>>;
  readonly maxBodyBytes: number;
  readonly maxBatchBytes: number;
  readonly maxBatchOps: number;
  readonly maxPageSize: number;
  readonly maxPageBytes: number;
  readonly defaultPageSize: number;
  readonly idempotencyRetentionMs: number;
  readonly maxIdempotencyKeys: number;
  readonly tombstoneRetentionMs: number;
  readonly batch: boolean;
  readonly now: () => number;
  readonly basePath: string;
  readonly onError: (error: unknown) => void;
}

function publicPrincipal(): string {
  return "public";
}

function logError(error: unknown): void {
  console.error(error);
}

function resolveOptions(options: SyncServerOptions): ResolvedOptions {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(
      `Cannot create sync server as options is not an object: current value is ${
        describe(options)
      }`,
    );
  }
  const store = options.store ?? createMemoryServerStore();
  for (
    const method of [
      "getRecord",
      "listRecords",
      "getIdempotency",
      "commit",
      "purge",
      "trimIdempotency",
      "lastWrite",
      "close",
    ] as const
  ) {
    const member: unknown = store[method];
    if (typeof member !== "function") {
      throw new TypeError(
        `Cannot create sync server as 'store' lacks ${method}(): current value is ${
          describe(member)
        }`,
      );
    }
  }
  const schemas = options.schemas ?? {};
  if (typeof schemas !== "object" || schemas === null) {
    throw new TypeError(
      `Cannot create sync server as 'schemas' is not an object: current value is ${
        describe(schemas)
      }`,
    );
  }
  for (const [kind, schema] of Object.entries(schemas)) {
    const props: unknown = isObject(schema) ? schema["~standard"] : undefined;
    if (!isObject(props) || typeof props.validate !== "function") {
      throw new TypeError(
        `Cannot create sync server as the schema of kind "${kind}" is not a Standard Schema: current value is ${
          describe(schema)
        }`,
      );
    }
  }
  const maxPageSize = positiveOption(
    options.maxPageSize,
    WIRE_LIMITS.maxPageItems,
    "maxPageSize",
    "integer",
  );
  const defaultPageSize = positiveOption(
    options.defaultPageSize,
    Math.min(100, maxPageSize),
    "defaultPageSize",
    "integer",
  );
  if (defaultPageSize > maxPageSize) {
    throw new RangeError(
      `Cannot create sync server as 'defaultPageSize' exceeds 'maxPageSize' (${maxPageSize}): current value is ${defaultPageSize}`,
    );
  }
  atMostContract(maxPageSize, WIRE_LIMITS.maxPageItems, "maxPageSize");
  const basePath = options.basePath ?? "";
  if (
    typeof basePath !== "string" ||
    (basePath !== "" && (!basePath.startsWith("/") || basePath.endsWith("/")))
  ) {
    throw new TypeError(
      `Cannot create sync server as 'basePath' must be "" or start with "/" and not end with "/": current value is ${
        describe(basePath)
      }`,
    );
  }
  const maxBatchOps = positiveOption(
    options.maxBatchOps,
    WIRE_LIMITS.maxBatchOps,
    "maxBatchOps",
    "integer",
  );
  atMostContract(maxBatchOps, WIRE_LIMITS.maxBatchOps, "maxBatchOps");
  const maxIdempotencyKeys = positiveOption(
    options.maxIdempotencyKeys,
    100_000,
    "maxIdempotencyKeys",
    "integer",
  );
  // A batch stores a key per op: a bound below one batch could never be met.
  if (maxIdempotencyKeys < maxBatchOps) {
    throw new RangeError(
      `Cannot create sync server as 'maxIdempotencyKeys' is below 'maxBatchOps' (${maxBatchOps}): current value is ${maxIdempotencyKeys}`,
    );
  }
  const maxPageBytes = positiveOption(
    options.maxPageBytes,
    WIRE_LIMITS.maxPageBytes,
    "maxPageBytes",
    "integer",
  );
  if (maxPageBytes < MIN_PAGE_BYTES) {
    throw new RangeError(
      `Cannot create sync server as 'maxPageBytes' is below ${MIN_PAGE_BYTES}: current value is ${maxPageBytes}`,
    );
  }
  return {
    store,
    auth: functionOption(options.auth, publicPrincipal, "auth"),
    schemas,
    maxBodyBytes: positiveOption(
      options.maxBodyBytes,
      WIRE_LIMITS.maxRecordBytes,
      "maxBodyBytes",
      "integer",
    ),
    maxBatchBytes: positiveOption(
      options.maxBatchBytes,
      WIRE_LIMITS.maxBatchBytes,
      "maxBatchBytes",
      "integer",
    ),
    maxBatchOps,
    maxPageSize,
    maxPageBytes,
    defaultPageSize,
    // An integer: entries' ages are derived from it (`expiresAt - retention`).
    idempotencyRetentionMs: positiveOption(
      options.idempotencyRetentionMs,
      7 * 24 * 60 * 60 * 1000,
      "idempotencyRetentionMs",
      "integer",
    ),
    maxIdempotencyKeys,
    tombstoneRetentionMs: positiveOption(
      options.tombstoneRetentionMs,
      Infinity,
      "tombstoneRetentionMs",
      "duration",
    ),
    batch: booleanOption(options.batch, true, "batch"),
    now: functionOption(options.now, Date.now, "now"),
    basePath,
    onError: functionOption(options.onError, logError, "onError"),
  };
}

/**
 * Checks a numeric option: a positive safe integer (`"integer"`), or any
 * positive number, `Infinity` included (`"duration"`).
 */
function positiveOption(
  value: number | undefined,
  fallback: number,
  name: string,
  kind: "integer" | "duration",
): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number") {
    throw new TypeError(
      `Cannot create sync server as '${name}' is not a number: current value is ${
        describe(value)
      }`,
    );
  }
  const valid = kind === "integer"
    ? Number.isSafeInteger(value) && value >= 1
    : value > 0;
  if (!valid) {
    throw new RangeError(
      `Cannot create sync server as '${name}' is not a positive ${
        kind === "integer" ? "integer" : "duration"
      }: current value is ${value}`,
    );
  }
  return value;
}

/**
 * Refuses a count above the contract's maximum: clients size their batches
 * and read caps by it, so a server may state less, never more.
 */
function atMostContract(value: number, max: number, name: string): void {
  if (value > max) {
    throw new RangeError(
      `Cannot create sync server as '${name}' exceeds the contract's ${max}: current value is ${value}`,
    );
  }
}

function booleanOption(
  value: boolean | undefined,
  fallback: boolean,
  name: string,
): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== "boolean") {
    throw new TypeError(
      `Cannot create sync server as '${name}' is not a boolean: current value is ${
        describe(value)
      }`,
    );
  }
  return value;
}

function functionOption<F>(value: F | undefined, fallback: F, name: string): F {
  if (value === undefined) return fallback;
  if (typeof value !== "function") {
    throw new TypeError(
      `Cannot create sync server as '${name}' is not a function: current value is ${
        describe(value)
      }`,
    );
  }
  return value;
}

/** A response before it becomes a `Response`. */
interface Reply {
  readonly status: number;
  readonly body: JsonValue;
  readonly headers?: Readonly<Record<string, string>>;
  /** The body already serialised (a pull page), sent instead of `body`. */
  readonly text?: string;
}

/** The outcome of one write, single or in a batch. */
interface Outcome extends Reply {
  /** Whether it was answered from the idempotency store. */
  readonly replayed: boolean;
}

/**
 * A PUT body as far as it could be read. A body that breaks a limit keeps
 * only that fact: nothing recursive (fingerprint, schema, store) sees it.
 */
type BodyInput =
  | {
    readonly type: "json";
    readonly value: JsonValue;
    /** Its JSON text's length, when known (a batch op's payload). */
    readonly size?: number;
  }
  | { readonly type: "text"; readonly text: string }
  | { readonly type: "too_large" }
  | { readonly type: "too_deep" };

/** One write, from a single request or a batch op. */
type WriteCall =
  | {
    readonly method: "PUT";
    readonly kind: string;
    readonly id: string;
    readonly key: string | null;
    readonly force: boolean;
    readonly body: BodyInput;
    readonly extra: readonly (readonly [string, string])[];
  }
  | {
    readonly method: "DELETE";
    readonly kind: string;
    readonly id: string;
    readonly key: string | null;
    readonly force: boolean;
    readonly base: string | null;
    readonly extra: readonly (readonly [string, string])[];
  };

/** How often (in ms of `now()`) expired entries and tombstones are purged. */
const MAINTENANCE_INTERVAL_MS = 60_000;
/** The most entries and tombstones one maintenance run removes. */
const MAINTENANCE_SLICE = 1_000;
/** The statuses the contract stores by idempotency key; never 401/403/409/429/5xx. */
const STORED_STATUSES: ReadonlySet<number> = new Set([400, 404, 413, 422]);
/** A stored idempotency key is kept at least this long, even over the bound. */
const MIN_KEY_AGE_MS = 24 * 60 * 60 * 1000;
/**
 * The share of `maxPageBytes` kept for a page's envelope,
 * `{"items":[…],"nextPageToken":"…"}`, whose token holds an id at the limit.
 */
const PAGE_ENVELOPE_BYTES = 2048;
/** The smallest `maxPageBytes`: twice the envelope. */
const MIN_PAGE_BYTES = 2 * PAGE_ENVELOPE_BYTES;

function ignore(): void {}

/** A whole request refused from deep inside, such as a `429` under the lock. */
class RefusedError extends Error {
  readonly reply: Reply;

  constructor(reply: Reply) {
    super("Cannot answer request as it was refused");
    this.name = "RefusedError";
    this.reply = reply;
  }
}

/**
 * The pending writes of one request or batch, in one namespace: later ops
 * read earlier ones through it, and the server commits it as one store
 * call, so nothing is half-applied.
 */
class WriteScope {
  readonly writes: ServerWrite[] = [];
  /** How many idempotency keys this scope adds that the store did not hold. */
  newKeys = 0;
  readonly #store: ServerStore;
  readonly #tenant: Tenant;
  /** Pending records by namespace, kind and id. */
  readonly #records = new Map<string, Map<string, Map<string, ServerRecord>>>();
  /** Pending entries by namespace and key. */
  readonly #entries = new Map<string, Map<string, IdempotencyEntry>>();
  clock: number;
  lastId: string | null;

  constructor(store: ServerStore, tenant: Tenant) {
    this.#store = store;
    this.#tenant = tenant;
    this.clock = tenant.clock ?? -Infinity;
    this.lastId = tenant.lastId;
  }

  getRecord(
    namespace: string,
    kind: string,
    id: string,
  ): Promise<ServerRecord | null> {
    const pending = this.#records.get(namespace)?.get(kind)?.get(id);
    if (pending !== undefined) return Promise.resolve(pending);
    return this.#store.getRecord(namespace, kind, id);
  }

  putRecord(namespace: string, record: ServerRecord): void {
    inner(inner(this.#records, namespace), record.kind).set(record.id, record);
    this.writes.push({ type: "record", namespace, record });
  }

  getIdempotency(
    namespace: string,
    key: string,
  ): Promise<IdempotencyEntry | null> {
    const pending = this.#entries.get(namespace)?.get(key);
    if (pending !== undefined) return Promise.resolve(pending);
    return this.#store.getIdempotency(namespace, key);
  }

  /** Stores an entry; `added` when the store held none under its key. */
  putIdempotency(
    namespace: string,
    entry: IdempotencyEntry,
    added: boolean,
  ): void {
    inner(this.#entries, namespace).set(entry.key, entry);
    this.writes.push({ type: "idempotency", namespace, entry });
    if (added) this.newKeys++;
  }

  /**
   * Assigns the next `updated_at` of the namespace. The clock never goes
   * back (nor below the floor that pull marks raised) and, within one
   * millisecond, a later write gets the same instant only if its id sorts
   * after every id already written at that instant: otherwise a client
   * holding the cursor `(t, lastId)` would never see it. That also makes
   * every record's `updated_at` strictly increase.
   */
  nextTimestamp(now: number, id: string, previous: number | null): number {
    let ts = Math.max(Math.trunc(now), this.clock, this.#tenant.floor);
    if (ts === this.clock && (this.lastId === null || id <= this.lastId)) {
      ts = this.clock + 1;
    }
    // Already implied by the rule above; kept so that the per-record clause
    // of the contract holds even with a store whose lastWrite() lags.
    if (previous !== null && ts <= previous) ts = previous + 1;
    if (!Number.isSafeInteger(ts) || Math.abs(ts) > 8.64e15) {
      throw new RangeError(
        `Cannot assign updated_at as the clock is out of range: current value is ${ts}`,
      );
    }
    this.clock = ts;
    this.lastId = id;
    // Invisible until committed: a pull mark taken meanwhile stays below it.
    this.#tenant.pending ??= ts;
    return ts;
  }
}

class ReferenceServer implements SyncServer {
  readonly #options: ResolvedOptions;
  readonly #store: ServerStore;
  readonly #limits: ServerLimits;
  /** Each namespace's write queue, clock and key count. */
  readonly #tenants = new Tenants();
  /** The maintenance in progress, shared by whoever finds it due. */
  #maintenance: Promise<void> | null = null;
  /** The purges started by purgeTombstones(), awaited by close(). */
  readonly #purges = new Set<Promise<unknown>>();
  #maintenanceDueAt = -Infinity;
  #dateSecond = NaN;
  #dateText = "";
  #closed = false;
  #closing: Promise<void> | null = null;

  constructor(options: ResolvedOptions) {
    this.#options = options;
    this.#store = options.store;
    this.#limits = Object.freeze({
      maxIdLength: WIRE_LIMITS.maxIdLength,
      maxKindLength: WIRE_LIMITS.maxKindLength,
      maxDepth: WIRE_LIMITS.maxDepth,
      maxRecordBytes: options.maxBodyBytes,
      maxBatchOps: options.maxBatchOps,
      maxBatchBytes: options.maxBatchBytes,
      maxPageItems: options.maxPageSize,
      maxPageBytes: options.maxPageBytes,
      maxIdempotencyKeyLength: WIRE_LIMITS.maxIdempotencyKeyLength,
      maxIdempotencyKeys: options.maxIdempotencyKeys,
    });
  }

  readonly fetch = (request: Request): Promise<Response> =>
    this.#answer(request);

  async purgeTombstones(options: PurgeTombstonesOptions = {}): Promise<number> {
    if (this.#closed) {
      throw new ClosedError("Cannot purge tombstones as the server is closed");
    }
    const { olderThan } = options;
    if (olderThan !== undefined && typeof olderThan !== "number") {
      throw new TypeError(
        `Cannot purge tombstones as 'olderThan' is not a number: current value is ${
          describe(olderThan)
        }`,
      );
    }
    if (Number.isNaN(olderThan)) {
      throw new RangeError(
        "Cannot purge tombstones as 'olderThan' is not a number: current value is NaN",
      );
    }
    const retention = this.#options.tombstoneRetentionMs;
    const bound = olderThan ??
      (Number.isFinite(retention) ? this.#now() - retention : Infinity);
    // Stores bind the bound as an integer: clamp instead of passing Infinity.
    const before = Math.max(
      Math.min(Math.ceil(bound), Number.MAX_SAFE_INTEGER),
      Number.MIN_SAFE_INTEGER,
    );
    // No write lock: a purge removes only tombstones older than `before`,
    // which no write in progress creates; close() waits for it. In slices,
    // so that requests are served between them.
    let removed = 0;
    for (;;) {
      const purge = this.#store.purge({
        tombstonesUpdatedBefore: before,
        limit: MAINTENANCE_SLICE,
      });
      this.#purges.add(purge);
      try {
        const { tombstones } = await purge;
        removed += tombstones;
        if (tombstones < MAINTENANCE_SLICE || this.#closed) return removed;
      } finally {
        this.#purges.delete(purge);
      }
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  }

  close(): Promise<void> {
    this.#closed = true;
    // After the writes in progress, which thus finish on an open store.
    this.#closing ??= (async () => {
      await this.#tenants.idle();
      await this.#maintenance?.catch(ignore);
      await Promise.allSettled([...this.#purges]);
      await this.#store.close();
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // -- plumbing -------------------------------------------------------------

  #now(): number {
    const now = this.#options.now();
    if (typeof now !== "number" || !Number.isFinite(now)) {
      throw new TypeError(
        `Cannot read the clock as now() returned no finite number: current value is ${
          describe(now)
        }`,
      );
    }
    return now;
  }

  async #answer(request: Request): Promise<Response> {
    let reply: Reply;
    try {
      reply = await this.#route(request);
    } catch (error) {
      reply = this.#failureReply(error);
    }
    try {
      return this.#respond(reply);
    } catch (error) {
      // A body too large to serialise must still answer, as JSON.
      return this.#respond(this.#internal(error));
    }
  }

  /** The reply to what a request's work threw. */
  #failureReply(error: unknown): Reply {
    if (error instanceof RefusedError) return error.reply;
    if (error instanceof ClosedError && this.#closed) return closedReply();
    return this.#internal(error);
  }

  #internal(error: unknown): Reply {
    try {
      this.#options.onError(error);
    } catch {
      // A failing error hook must not turn a 500 into a rejected fetch.
    }
    return failure(
      500,
      "internal",
      "Cannot answer request as the server failed",
    );
  }

  #respond(reply: Reply): Response {
    let now: number;
    try {
      now = this.#now();
    } catch {
      now = Date.now();
    }
    // A record, not a `Headers`: `Response` copies either, and a record
    // costs a third. Sync responses are never cacheable: a cached pull or
    // conflict is wrong.
    const headers: Record<string, string> = {
      ...reply.headers,
      "content-type": "application/json",
      "cache-control": "no-store",
      "date": this.#httpDate(now),
    };
    return new Response(reply.text ?? JSON.stringify(reply.body), {
      status: reply.status,
      headers,
    });
  }

  /** `Date` header text, formatted once per second of `now()`. */
  #httpDate(now: number): string {
    const second = Math.floor(now / 1000);
    if (second !== this.#dateSecond) {
      this.#dateSecond = second;
      this.#dateText = new Date(now).toUTCString();
    }
    return this.#dateText;
  }

  async #route(request: Request): Promise<Reply> {
    if (this.#closed) return closedReply();
    const url = new URL(request.url);
    const segments = this.#segments(url.pathname);
    if (segments === null) return notFound(request);
    if (!Array.isArray(segments)) {
      const [what, code] = segments.invalid === 0
        ? ["kind", "invalid_kind"]
        : segments.invalid === 1
        ? ["id", "invalid_id"]
        : ["path segment", "invalid_path"];
      return failure(
        400,
        code,
        `Cannot route request as its ${what} is not valid percent-encoded UTF-8 (a lone surrogate, say)`,
      );
    }
    const method = request.method;
    if (segments.length === 1 && segments[0] === "health") {
      if (method !== "GET") return methodNotAllowed(method, "GET");
      return {
        status: 200,
        body: {
          status: "ok",
          batch: this.#options.batch,
          live: false,
          contract: 1,
          limits: { ...this.#limits },
        },
      };
    }

    const principal = await this.#options.auth(request);
    if (principal === null) {
      return {
        ...failure(
          401,
          "unauthorized",
          "Cannot answer request as its credentials were refused",
        ),
        headers: { "www-authenticate": "Bearer" },
      };
    }
    if (typeof principal !== "string") {
      throw new TypeError(
        `Cannot authorize request as the auth hook returned neither a string nor null: current value is ${
          describe(principal)
        }`,
      );
    }

    const [kind, id, ...rest] = segments;
    if (kind === undefined || kind === "" || rest.length > 0 || id === "") {
      return notFound(request);
    }
    if (kind === "batch" && id === undefined && this.#options.batch) {
      if (method !== "POST") return methodNotAllowed(method, "POST");
      return await this.#batch(principal, request);
    }
    if (RESERVED_KINDS.has(kind)) {
      // `/health/x`, `/batch/x`: a record route on a name no kind may take.
      if (id === undefined) return notFound(request);
      const refused = kindRefusal(kind, "route request");
      if (refused !== null) return refusal(refused);
    }
    if (id === undefined) {
      if (method !== "GET") return methodNotAllowed(method, "GET");
      const refused = kindRefusal(kind, "pull");
      if (refused !== null) return refusal(refused);
      return await this.#pull(principal, kind, url.searchParams);
    }
    if (method === "PUT" || method === "DELETE") {
      const action = method === "PUT" ? "store record" : "delete record";
      const refused = kindRefusal(kind, action) ?? idRefusal(id, action);
      if (refused !== null) return refusal(refused);
      return await this.#write(principal, request, kind, id, url.searchParams);
    }
    return methodNotAllowed(method, "PUT, DELETE");
  }

  /**
   * The decoded path segments under the base path; `null` when outside;
   * the index of the first segment that is not percent-encoded UTF-8 (a
   * lone surrogate, say).
   */
  #segments(pathname: string): string[] | { invalid: number } | null {
    const { basePath } = this.#options;
    if (basePath !== "") {
      if (pathname === basePath) return [];
      if (!pathname.startsWith(`${basePath}/`)) return null;
      pathname = pathname.slice(basePath.length);
    }
    const raw = pathname.split("/").slice(1);
    if (raw.length === 1 && raw[0] === "") return [];
    const segments: string[] = [];
    for (const segment of raw) {
      try {
        segments.push(decodeURIComponent(segment));
      } catch {
        // Reported by position: a kind or an id that is not UTF-8.
        return { invalid: segments.length };
      }
    }
    return segments;
  }

  /** Runs the maintenance when due; every caller awaits the same run. */
  async #maintainIfDue(): Promise<void> {
    if (this.#now() < this.#maintenanceDueAt) return;
    this.#maintenance ??= this.#maintain().finally(() => {
      this.#maintenance = null;
    });
    await this.#maintenance;
  }

  /** Purges expired idempotency entries and tombstones past retention. */
  async #maintain(): Promise<void> {
    const now = this.#now();
    if (now < this.#maintenanceDueAt) return;
    const retention = this.#options.tombstoneRetentionMs;
    // Bounded: the requests that find maintenance due wait for one slice
    // of it, whichever principal they come from; the next slice runs with
    // the next request.
    const removed = await this.#store.purge(
      Number.isFinite(retention)
        ? {
          idempotencyExpiredAt: Math.floor(now),
          tombstonesUpdatedBefore: Math.ceil(now - retention),
          limit: MAINTENANCE_SLICE,
        }
        : { idempotencyExpiredAt: Math.floor(now), limit: MAINTENANCE_SLICE },
    );
    // Keys of any namespace may be gone: count them again when needed.
    this.#tenants.forgetKeyCounts();
    const more = removed.idempotency >= MAINTENANCE_SLICE ||
      removed.tombstones >= MAINTENANCE_SLICE;
    this.#maintenanceDueAt = more ? now : now + MAINTENANCE_INTERVAL_MS;
  }

  // -- pull -----------------------------------------------------------------

  async #pull(
    namespace: string,
    kind: string,
    params: URLSearchParams,
  ): Promise<Reply> {
    const query = this.#pullQuery(params);
    if ("status" in query) return query;
    const { since, afterId, limit, includeDeleted } = query;
    const pageToken = params.get("pageToken");
    // The keyset is authoritative: a token that does not agree is ignored.
    const token = pageToken === null
      ? null
      : readPageToken(pageToken, { since, afterId });

    await this.#maintainIfDue();
    // Taken before the read: see _page_token.ts.
    let mark: number | null = null;
    if (since === undefined) {
      const tenant = this.#tenants.get(namespace);
      const stored = tenant.clock === null
        ? (await this.#store.lastWrite(namespace))?.updatedAt ?? null
        : null;
      mark = pullMark(tenant, this.#now(), stored);
    }
    const budget = this.#options.maxPageBytes - PAGE_ENVELOPE_BYTES;
    const options: {
      since?: number;
      afterId?: string;
      limit: number;
      includeDeleted: boolean;
      maxBytes: number;
    } = {
      limit,
      includeDeleted,
      // Each item after the first costs a comma too.
      maxBytes: Math.max(1, budget - limit),
    };
    if (since !== undefined) options.since = since;
    if (afterId !== undefined) options.afterId = afterId;
    const page = await this.#store.listRecords(namespace, kind, options);
    const bound = requestBound(since, token);
    if (isGone(bound, page.horizon)) {
      return failure(
        410,
        "gone",
        `Cannot pull as the cursor is older than the tombstone retention, run a full resync: current value is ${
          preview(params.get("updatedSince"))
        }`,
      );
    }
    // Counted again here, so a store that ignores maxBytes cannot make the
    // page larger (only the first item may pass the budget alone).
    const texts: string[] = [];
    let bytes = 0;
    let truncated = page.truncated;
    for (const record of page.records) {
      if (texts.length === limit) break;
      const text = JSON.stringify(record.data);
      bytes += utf8Length(text) + 1;
      if (texts.length > 0 && bytes > budget) {
        truncated = true;
        break;
      }
      texts.push(text);
    }
    const last = page.records[texts.length - 1];
    const next = last !== undefined && (texts.length === limit || truncated)
      ? encodePageToken({
        since: last.updatedAt,
        afterId: last.id,
        mark: bound ?? mark!,
      })
      : null;
    return {
      status: 200,
      body: null,
      text: `{"items":[${texts.join(",")}],"nextPageToken":${
        JSON.stringify(next)
      }}`,
    };
  }

  /** Reads and checks a pull's query, or the `400` that refuses it. */
  #pullQuery(params: URLSearchParams): Reply | {
    since: number | undefined;
    afterId: string | undefined;
    limit: number;
    includeDeleted: boolean;
  } {
    for (
      const name of [
        "updatedSince",
        "afterId",
        "limit",
        "includeDeleted",
        "pageToken",
      ]
    ) {
      const values = params.getAll(name);
      if (values.length > 1) {
        return failure(
          400,
          "invalid_query",
          `Cannot pull as '${name}' is given more than once: current value is ${
            preview(values)
          }`,
        );
      }
    }
    const sinceText = params.get("updatedSince");
    const since = sinceText === null ? undefined : parseTimestamp(sinceText);
    if (since === null) {
      return failure(
        400,
        "invalid_timestamp",
        `Cannot pull as 'updatedSince' is not an ISO-8601 timestamp with a timezone: current value is ${
          preview(sinceText)
        }`,
      );
    }
    const afterId = params.get("afterId") ?? undefined;
    // A cursor is an id within the limits, or what cursorIdAfter() makes of
    // one past them; `.` and `..` travel fine in a query.
    if (afterId !== undefined && cursorIdAfter(afterId) !== afterId) {
      return failure(
        400,
        "invalid_cursor",
        `Cannot pull as 'afterId' is not a cursor (1 to ${WIRE_LIMITS.maxIdLength} well-formed characters): current value is ${
          preview(afterId)
        }`,
      );
    }
    if (afterId !== undefined && since === undefined) {
      return failure(
        400,
        "invalid_query",
        `Cannot pull as 'afterId' needs 'updatedSince': current value is ${
          preview(afterId)
        }`,
      );
    }
    const limitText = params.get("limit");
    let limit = this.#options.defaultPageSize;
    if (limitText !== null) {
      const parsed = /^[0-9]{1,15}$/.test(limitText) ? Number(limitText) : 0;
      if (parsed < 1) {
        return failure(
          400,
          "invalid_limit",
          `Cannot pull as 'limit' is not a positive integer: current value is ${
            preview(limitText)
          }`,
        );
      }
      limit = Math.min(parsed, this.#options.maxPageSize);
    }
    const includeText = params.get("includeDeleted");
    if (
      includeText !== null && includeText !== "true" && includeText !== "false"
    ) {
      return failure(
        400,
        "invalid_query",
        `Cannot pull as 'includeDeleted' is neither "true" nor "false": current value is ${
          preview(includeText)
        }`,
      );
    }
    return { since, afterId, limit, includeDeleted: includeText !== "false" };
  }

  // -- single writes --------------------------------------------------------

  async #write(
    namespace: string,
    request: Request,
    kind: string,
    id: string,
    params: URLSearchParams,
  ): Promise<Reply> {
    const key = idempotencyKey(request.headers);
    if (typeof key === "object" && key !== null) return key;
    let call: WriteCall;
    if (request.method === "PUT") {
      call = {
        method: "PUT",
        kind,
        id,
        key,
        force: isTrue(request.headers.get("x-force-update")),
        body: withinDepth(await readBody(request, this.#options.maxBodyBytes)),
        extra: sortedParams(params, null),
      };
    } else {
      const bases = params.getAll("_baseUpdatedAt");
      if (bases.length > 1) {
        return failure(
          400,
          "invalid_query",
          `Cannot delete record as '_baseUpdatedAt' is given more than once: current value is ${
            preview(bases)
          }`,
        );
      }
      call = {
        method: "DELETE",
        kind,
        id,
        key,
        force: isTrue(request.headers.get("x-force-delete")),
        base: bases[0] ?? null,
        extra: sortedParams(params, "_baseUpdatedAt"),
      };
    }
    // Hashed before the write lock: nothing under it waits for the digest.
    const fingerprint = call.key === null ? "" : fingerprintOf(call);
    const outcome = await this.#inScope(
      namespace,
      async (scope) => await this.#apply(namespace, scope, call, fingerprint),
    );
    return outcome.replayed
      ? { ...outcome, headers: { "idempotent-replayed": "true" } }
      : outcome;
  }

  /**
   * Runs writes under the namespace's write lock in one scope, then commits
   * the scope as one store call; the clock advances only when the commit
   * succeeded. Other namespaces never wait for it.
   */
  async #inScope<T>(
    namespace: string,
    work: (scope: WriteScope) => Promise<T>,
  ): Promise<T> {
    return await this.#tenants.exclusive(namespace, async () => {
      if (this.#closed) {
        throw new ClosedError("Cannot write as the server is closed");
      }
      await this.#maintainIfDue();
      const tenant = this.#tenants.get(namespace);
      if (tenant.clock === null) {
        const last = await this.#store.lastWrite(namespace);
        tenant.clock = last?.updatedAt ?? -Infinity;
        tenant.lastId = last?.id ?? null;
      }
      const scope = new WriteScope(this.#store, tenant);
      try {
        const result = await work(scope);
        if (scope.newKeys > 0) {
          await this.#admitKeys(namespace, tenant, scope.newKeys);
        }
        if (scope.writes.length > 0) await this.#store.commit(scope.writes);
        tenant.clock = scope.clock;
        tenant.lastId = scope.lastId;
        if (tenant.keys !== null) tenant.keys += scope.newKeys;
        return result;
      } finally {
        tenant.pending = null;
      }
    });
  }

  /**
   * Makes room for `added` new idempotency keys in a namespace, expiring
   * the oldest keys that are at least a day old.
   *
   * @throws {RefusedError} `429 too_many_keys` with `Retry-After` when no
   * key can expire yet; the caller then applies nothing.
   */
  async #admitKeys(
    namespace: string,
    tenant: Tenant,
    added: number,
  ): Promise<void> {
    const max = this.#options.maxIdempotencyKeys;
    if (tenant.keys === null) {
      const counted = await this.#store.trimIdempotency(namespace, {
        keep: Infinity,
        expiresAtOrBefore: -Infinity,
      });
      tenant.keys = counted.count;
      tenant.oldestExpiresAt = counted.oldestExpiresAt;
    }
    if (tenant.keys + added <= max) return;
    const now = Math.floor(this.#now());
    const retention = this.#options.idempotencyRetentionMs;
    // An entry was stored at `expiresAt - retention`; expired ones may go too.
    const bound = Math.max(now, now - MIN_KEY_AGE_MS + retention);
    if (tenant.oldestExpiresAt === null || tenant.oldestExpiresAt <= bound) {
      // A little more than needed, so a principal at the bound does not
      // trim on every write.
      const slack = Math.floor(max / 100);
      const trimmed = await this.#store.trimIdempotency(namespace, {
        keep: Math.max(0, max - added - slack),
        expiresAtOrBefore: bound,
      });
      tenant.keys = trimmed.count;
      tenant.oldestExpiresAt = trimmed.oldestExpiresAt;
      if (tenant.keys + added <= max) return;
    }
    const oldest = tenant.oldestExpiresAt ?? now;
    const seconds = Math.max(
      1,
      Math.ceil((oldest - retention + MIN_KEY_AGE_MS - now) / 1000),
    );
    throw new RefusedError({
      ...failure(
        429,
        "too_many_keys",
        `Cannot store idempotency key as the principal holds the most allowed (${max}), none old enough to expire, retry in ${seconds} s: current value is ${tenant.keys}`,
      ),
      headers: { "retry-after": String(seconds) },
    });
  }

  /**
   * Applies one write with its idempotency key, replaying a stored answer.
   * `fingerprint` is `fingerprintOf(call)`, or `""` for a call without a key.
   */
  async #apply(
    namespace: string,
    scope: WriteScope,
    call: WriteCall,
    fingerprint: string,
  ): Promise<Outcome> {
    const now = this.#now();
    let added = true;
    if (call.key !== null) {
      const entry = await scope.getIdempotency(namespace, call.key);
      added = entry === null;
      if (entry !== null && entry.expiresAt > now) {
        if (entry.fingerprint === fingerprint) {
          return { status: entry.status, body: entry.body, replayed: true };
        }
        return {
          ...failure(
            422,
            "idempotency_mismatch",
            `Cannot apply request as its idempotency key was used for another request: current value is ${
              preview(call.key)
            }`,
          ),
          replayed: false,
        };
      }
    }
    const reply = call.method === "PUT"
      ? await this.#put(namespace, scope, call)
      : await this.#delete(namespace, scope, call);
    if (
      call.key !== null &&
      ((reply.status >= 200 && reply.status < 300) ||
        STORED_STATUSES.has(reply.status))
    ) {
      scope.putIdempotency(namespace, {
        key: call.key,
        fingerprint,
        status: reply.status,
        body: reply.body,
        expiresAt: Math.floor(now) + this.#options.idempotencyRetentionMs,
      }, added);
    }
    return { ...reply, replayed: false };
  }

  async #put(
    namespace: string,
    scope: WriteScope,
    call: WriteCall & { method: "PUT" },
  ): Promise<Reply> {
    const { kind, id, body } = call;
    if (body.type === "too_large") return tooLarge(this.#options.maxBodyBytes);
    if (body.type === "too_deep") {
      return refusal(tooDeepRefusal("store record"));
    }
    if (body.type === "text") {
      return failure(
        400,
        "invalid_body",
        `Cannot store record as the body is not JSON: current value is ${
          preview(body.text)
        }`,
      );
    }
    const value = body.value;
    if (!isJsonObject(value)) {
      return failure(
        400,
        "invalid_body",
        `Cannot store record as the body is not a JSON object: current value is ${
          preview(value)
        }`,
      );
    }
    if (Object.hasOwn(value, "id") && value.id !== id) {
      return failure(
        400,
        "id_mismatch",
        `Cannot store record as the body's id differs from the path's ${
          preview(id)
        }: current value is ${preview(value.id)}`,
      );
    }
    const base = parseBase(value._baseUpdatedAt);
    if (base === "invalid") return invalidBase(value._baseUpdatedAt);
    // Server-owned fields from the body are dropped: the server's win.
    const fields: JsonObject = { id };
    for (const name of Object.keys(value)) {
      if (
        name === "id" || name === "_baseUpdatedAt" || name === "updated_at" ||
        name === "deleted_at"
      ) {
        continue;
      }
      if (name === "__proto__") {
        // Plain assignment would set the prototype, not the field.
        Object.defineProperty(fields, name, {
          value: value[name],
          writable: true,
          enumerable: true,
          configurable: true,
        });
      } else {
        fields[name] = value[name]!;
      }
    }
    const schema = Object.hasOwn(this.#options.schemas, kind)
      ? this.#options.schemas[kind]
      : undefined;
    if (schema !== undefined) {
      try {
        await validateWith(
          schema,
          structuredClone(fields),
          `record ${JSON.stringify(id)} of kind ${JSON.stringify(kind)}`,
        );
      } catch (error) {
        if (!(error instanceof ValidationError)) throw error;
        return {
          status: 422,
          body: {
            error: "validation",
            message: error.message,
            issues: error.issues.map((issue) => ({
              message: issue.message,
              path: issue.path.map((part) =>
                typeof part === "symbol" ? String(part) : part
              ),
            })),
          },
        };
      }
    }

    const current = await scope.getRecord(namespace, kind, id);
    if (
      current !== null && !call.force && base !== null &&
      (current.deletedAt !== null || base !== current.updatedAt)
    ) {
      return conflict(current, "update");
    }
    const ts = scope.nextTimestamp(
      this.#now(),
      id,
      current?.updatedAt ?? null,
    );
    // `fields` is this write's own copy (the schema saw a clone of it).
    fields.updated_at = new Date(ts).toISOString();
    const record: ServerRecord = {
      kind,
      id,
      updatedAt: ts,
      deletedAt: null,
      data: fields,
    };
    scope.putRecord(namespace, record);
    return { status: current === null ? 201 : 200, body: record.data };
  }

  async #delete(
    namespace: string,
    scope: WriteScope,
    call: WriteCall & { method: "DELETE" },
  ): Promise<Reply> {
    const { kind, id } = call;
    const base = parseBase(call.base);
    if (base === "invalid") return invalidBase(call.base);
    const current = await scope.getRecord(namespace, kind, id);
    if (current === null) {
      return failure(
        404,
        "not_found",
        `Cannot delete record as it does not exist: current value is ${
          preview(id)
        }`,
      );
    }
    if (!call.force && base !== null && base !== current.updatedAt) {
      return conflict(current, "delete");
    }
    // Deleting a tombstone changes nothing: its deletion stands as it was.
    if (current.deletedAt !== null) return { status: 200, body: current.data };
    const ts = scope.nextTimestamp(this.#now(), id, current.updatedAt);
    const stamp = new Date(ts).toISOString();
    const record: ServerRecord = {
      kind,
      id,
      updatedAt: ts,
      deletedAt: ts,
      data: { ...current.data, updated_at: stamp, deleted_at: stamp },
    };
    scope.putRecord(namespace, record);
    return { status: 200, body: record.data };
  }

  // -- batch ----------------------------------------------------------------

  async #batch(namespace: string, request: Request): Promise<Reply> {
    const { maxBatchBytes, maxBatchOps } = this.#options;
    const body = await readBody(request, maxBatchBytes);
    if (body.type === "too_large") {
      return failure(
        413,
        "batch_too_large",
        `Cannot apply batch as its body exceeds ${maxBatchBytes} bytes`,
      );
    }
    const ops = body.type === "json" && isJsonObject(body.value)
      ? body.value.ops
      : undefined;
    if (!Array.isArray(ops)) {
      return failure(
        400,
        "invalid_body",
        `Cannot apply batch as the body is not {"ops": [...]}: current value is ${
          preview(
            body.type === "json"
              ? body.value
              : body.type === "text"
              ? body.text
              : null,
          )
        }`,
      );
    }
    if (ops.length > maxBatchOps) {
      return failure(
        413,
        "batch_too_large",
        `Cannot apply batch as it holds more than ${maxBatchOps} ops: current value is ${ops.length}`,
      );
    }
    const calls: {
      opId: string;
      call: WriteCall | Reply;
      fingerprint: string;
    }[] = [];
    for (const [index, op] of ops.entries()) {
      // Checking and hashing are synchronous: let other requests run
      // between slices of them too.
      if (index > 0 && index % SLICE_OPS === 0) await nextTurn();
      const opId = isJsonObject(op) ? op.opId : undefined;
      if (!isJsonObject(op) || typeof opId !== "string") {
        return failure(
          400,
          "invalid_body",
          `Cannot apply batch as op ${index} has no string 'opId': current value is ${
            preview(op)
          }`,
        );
      }
      const badKey = keyRefusal(opId, `apply batch op ${index}`);
      if (badKey !== null) return refusal(badKey);
      const call = batchCall(op, opId, this.#options.maxBodyBytes);
      // Hashed before the write lock, as for a single write.
      const fingerprint = "method" in call ? fingerprintOf(call) : "";
      calls.push({ opId, call, fingerprint });
    }
    // The answer echoes records: 1,000 deletes of 1 MiB records would
    // answer a GiB. Past the budget, ops are answered 503 unapplied (never
    // stored), which the client re-sends with the same keys.
    const budget = 2 * maxBatchBytes;
    const results: JsonObject[] = [];
    let spent = 0;
    for (const slice of slices(calls)) {
      // Each slice is one store commit; between two, other principals'
      // requests run: a synchronous store (SQLite) would otherwise hold
      // the whole process for the whole batch.
      if (results.length > 0) await nextTurn();
      // The slice's results count once it committed: a failure before
      // leaves its ops unapplied.
      const done: JsonObject[] = [];
      try {
        await this.#inScope(namespace, async (scope) => {
          for (const { opId, call, fingerprint } of slice) {
            if (spent > budget) {
              done.push({ opId, status: 503, error: answerFull(budget) });
              continue;
            }
            const outcome = "method" in call
              ? await this.#apply(namespace, scope, call, fingerprint)
              : { ...call, replayed: false };
            const result: JsonObject = { opId, status: outcome.status };
            if (outcome.status >= 200 && outcome.status < 300) {
              result.record = outcome.body;
            } else {
              result.error = outcome.body;
            }
            if (outcome.replayed) result.replayed = true;
            spent += JSON.stringify(outcome.body)?.length ?? 0;
            done.push(result);
          }
        });
        results.push(...done);
      } catch (error) {
        // A failure of the first slice fails the batch (nothing applied);
        // later, the slices before it stand, so only the ops not applied
        // get it, each as its own result (a 429, a 5xx: retried by the
        // client under the same keys).
        if (results.length === 0) throw error;
        const { status, body } = this.#failureReply(error);
        for (const { opId } of calls.slice(results.length)) {
          results.push({ opId, status, error: body });
        }
        break;
      }
    }
    return { status: 200, body: { results } };
  }
}

/** The most ops, and about the most payload bytes, of one batch slice. */
const SLICE_OPS = 100;
const SLICE_BYTES = 1_048_576;

/** A batch's calls cut into slices of at most SLICE_OPS ops and ~SLICE_BYTES. */
function* slices<T extends { call: WriteCall | Reply }>(
  calls: readonly T[],
): Generator<T[]> {
  let slice: T[] = [];
  let bytes = 0;
  for (const entry of calls) {
    const { call } = entry;
    const size = "method" in call && call.method === "PUT" &&
        call.body.type === "json"
      ? call.body.size ?? 0
      : 0;
    if (
      slice.length === SLICE_OPS ||
      (slice.length > 0 && bytes + size > SLICE_BYTES)
    ) {
      yield slice;
      slice = [];
      bytes = 0;
    }
    slice.push(entry);
    bytes += size;
  }
  if (slice.length > 0) yield slice;
}

/** Resolves after the event loop served what else was waiting. */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** The error of a batch op left unapplied because the answer is full. */
function answerFull(budget: number): JsonObject {
  return {
    error: "batch_answer_full",
    message:
      `Cannot apply op as the batch's answer already holds about ${budget} bytes of records: send it again`,
  };
}

/**
 * Turns one batch op into the single request it stands for, or the `400`
 * that op gets on its own (not stored: it names no request).
 */
function batchCall(
  op: JsonObject,
  opId: string,
  maxRecordBytes: number,
): WriteCall | Reply {
  const { kind, id, type, payload, baseUpdatedAt, force } = op;
  if (
    typeof kind !== "string" || typeof id !== "string" ||
    (type !== "upsert" && type !== "delete") ||
    (force !== undefined && typeof force !== "boolean")
  ) {
    return failure(
      400,
      "invalid_op",
      `Cannot apply op as it needs a string kind and id, a type of "upsert" or "delete" and a boolean force: current value is ${
        preview(op)
      }`,
    );
  }
  const action = type === "upsert" ? "store record" : "delete record";
  const refused = kindRefusal(kind, action) ?? idRefusal(id, action);
  if (refused !== null) return refusal(refused);
  const base = baseUpdatedAt ?? null;
  if (type === "delete") {
    // A single DELETE carries its base in the query: a string or nothing.
    if (base !== null && typeof base !== "string") return invalidBase(base);
    return {
      method: "DELETE",
      kind,
      id,
      key: opId,
      force: force === true,
      base,
      extra: [],
    };
  }
  // The body a single PUT would carry: the payload plus its base.
  const value = isJsonObject(payload) && base !== null
    ? { ...payload, _baseUpdatedAt: base }
    : payload ?? null;
  return {
    method: "PUT",
    kind,
    id,
    key: opId,
    force: force === true,
    body: withinLimits(value, maxRecordBytes),
    extra: [],
  };
}

/** A batch op's body as a single PUT of it would read: limits first. */
function withinLimits(value: JsonValue, maxBytes: number): BodyInput {
  const body = withinDepth({ type: "json", value });
  if (body.type !== "json") return body;
  const text = JSON.stringify(value);
  // Every UTF-16 unit is at most 3 UTF-8 bytes: most bodies skip the count.
  return text.length * 3 > maxBytes && utf8Length(text) > maxBytes
    ? { type: "too_large" }
    : { type: "json", value, size: text.length };
}

/** A JSON body deeper than the contract allows becomes `too_deep`. */
function withinDepth(body: BodyInput): BodyInput {
  return body.type === "json" && isTooDeep(body.value)
    ? { type: "too_deep" }
    : body;
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

function failure(status: number, error: string, message: string): Reply {
  return { status, body: { error, message } };
}

function refusal({ status, error, message }: Refusal): Reply {
  return failure(status, error, message);
}

function closedReply(): Reply {
  return failure(
    503,
    "closed",
    "Cannot answer request as the server is closed",
  );
}

function notFound(request: Request): Reply {
  return failure(
    404,
    "not_found",
    `Cannot route request as no route matches its path: current value is ${
      preview(new URL(request.url).pathname)
    }`,
  );
}

function methodNotAllowed(method: string, allow: string): Reply {
  return {
    ...failure(
      405,
      "method_not_allowed",
      `Cannot route request as the path allows ${allow} only: current value is ${
        JSON.stringify(method)
      }`,
    ),
    headers: { allow },
  };
}

function tooLarge(max: number): Reply {
  return failure(
    413,
    "payload_too_large",
    `Cannot read request body as it exceeds ${max} bytes`,
  );
}

function invalidBase(value: JsonValue | undefined): Reply {
  return failure(
    400,
    "invalid_timestamp",
    `Cannot check version as '_baseUpdatedAt' is not an ISO-8601 timestamp with a timezone: current value is ${
      preview(value)
    }`,
  );
}

function conflict(current: ServerRecord, action: string): Reply {
  const stamp = current.data.updated_at ??
    new Date(current.updatedAt).toISOString();
  return {
    status: 409,
    body: {
      error: "conflict",
      message: current.deletedAt !== null
        ? `Cannot ${action} record as it was deleted: current value is ${
          JSON.stringify(stamp)
        }`
        : `Cannot ${action} record as its base is stale: current value is ${
          JSON.stringify(stamp)
        }`,
      current: current.data,
      serverTimestamp: stamp,
    },
  };
}

/** The idempotency key, `null` without one, or a `400` reply. */
function idempotencyKey(headers: Headers): string | null | Reply {
  const key = headers.get("idempotency-key");
  const alias = headers.get("x-idempotency-key");
  if (key !== null && alias !== null && key !== alias) {
    return failure(
      400,
      "invalid_idempotency_key",
      `Cannot apply request as 'Idempotency-Key' and 'X-Idempotency-Key' differ: current value is ${
        preview([key, alias])
      }`,
    );
  }
  const value = key ?? alias;
  if (value === null) return null;
  const refused = keyRefusal(value, "apply request");
  return refused === null ? value : refusal(refused);
}

function isTrue(header: string | null): boolean {
  return header !== null && header.trim().toLowerCase() === "true";
}

function sortedParams(
  params: URLSearchParams,
  omit: string | null,
): [string, string][] {
  return [...params].filter(([name]) => name !== omit).sort((a, b) =>
    a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0
  );
}

/** Decodes whole bodies (never `stream: true`), so one instance serves all. */
const UTF8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Reads a body up to `max` bytes, trusting neither `Content-Length` nor its
 * absence: the bytes actually read are counted too.
 */
async function readBody(request: Request, max: number): Promise<BodyInput> {
  const declared = request.headers.get("content-length");
  if (declared !== null && /^\s*\d+\s*$/.test(declared) && +declared > max) {
    await request.body?.cancel().catch(ignore);
    return { type: "too_large" };
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (request.body !== null) {
    const reader = request.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > max) {
        await reader.cancel().catch(ignore);
        return { type: "too_large" };
      }
      chunks.push(value);
    }
  }
  let bytes: Uint8Array;
  if (chunks.length === 1) {
    bytes = chunks[0]!;
  } else {
    bytes = new Uint8Array(size);
    let offset = 0;
    for (const chunk of chunks) {
      bytes.set(chunk, offset);
      offset += chunk.byteLength;
    }
  }
  let text: string;
  try {
    text = UTF8.decode(bytes);
  } catch {
    return { type: "text", text: "<invalid UTF-8>" };
  }
  try {
    return { type: "json", value: JSON.parse(text) as JsonValue };
  } catch {
    return { type: "text", text };
  }
}

/** A version-check base: `null` when absent, `"invalid"` when malformed. */
function parseBase(value: JsonValue | undefined): number | null | "invalid" {
  if (value === undefined || value === null) return null;
  if (typeof value !== "string") return "invalid";
  return parseTimestamp(value) ?? "invalid";
}

/**
 * The digest of what makes two writes the same request: SHA-256, in hex, of
 * the canonical JSON of `[...parts, kind, id, force, extra]`. Stores keep it,
 * so its input and output never change. A JSON body has passed the depth
 * limit first: the canonical JSON recurses.
 *
 * `node:crypto`'s synchronous `createHash` hashes a 400-byte request in
 * about 1 µs. `crypto.subtle.digest` took 40 µs awaited one after another
 * under the write lock (12 µs when a batch's are awaited together); a
 * hand-written SHA-256 takes 2 µs but is 150 lines to trust. The price is
 * the import: 15 to 25 ms once per process in Deno.
 */
function fingerprintOf(call: WriteCall): string {
  let canonical: string;
  if (call.method === "DELETE") {
    canonical = `["DELETE",${canonicalJson(call.base)}`;
  } else if (call.body.type === "json") {
    const value = call.body.value;
    canonical = isJsonObject(value)
      ? `["PUT","json",${canonicalJson(value._baseUpdatedAt ?? null)},${
        canonicalJson(value, "_baseUpdatedAt")
      }`
      : `["PUT","json",null,${canonicalJson(value)}`;
  } else if (call.body.type === "text") {
    canonical = `["PUT","text",null,${JSON.stringify(call.body.text)}`;
  } else {
    // A body past a limit is the same request whatever it held.
    canonical = `["PUT","${call.body.type}",null,null`;
  }
  canonical += `,${JSON.stringify(call.kind)},${JSON.stringify(call.id)},${
    call.force ? "true" : "false"
  },[`;
  for (let i = 0; i < call.extra.length; i++) {
    const [name, value] = call.extra[i]!;
    canonical += `${i === 0 ? "" : ","}[${JSON.stringify(name)},${
      JSON.stringify(value)
    }]`;
  }
  canonical += "]]";
  return createHash("sha256").update(canonical).digest("hex");
}

/**
 * JSON with object keys sorted, so that key order does not change a digest;
 * `omit` leaves out one key of a top-level object.
 *
 * The fast path copies objects with their keys inserted in sorted order and
 * lets `JSON.stringify` write the copy: insertion order is property order
 * except for array-index keys, which always come first, and a `__proto__`
 * key, which assignment would turn into a prototype. A key that starts with a
 * digit or is `__proto__` sends the whole value down the slow path, which
 * writes the same text piece by piece.
 */
function canonicalJson(value: JsonValue, omit: string | null = null): string {
  const copy = sortedCopy(value, omit);
  return copy === UNSORTABLE
    ? canonicalText(value, omit)
    : JSON.stringify(copy);
}

/** What {@linkcode sortedCopy} returns for a value it cannot copy faithfully. */
const UNSORTABLE: unique symbol = Symbol("unsortable");

function sortedCopy(
  value: JsonValue,
  omit: string | null,
): JsonValue | typeof UNSORTABLE {
  if (typeof value !== "object" || value === null) return value;
  if (Array.isArray(value)) {
    let copy: JsonValue[] | null = null;
    for (let i = 0; i < value.length; i++) {
      const item = value[i]!;
      if (typeof item !== "object" || item === null) continue;
      const sorted = sortedCopy(item, null);
      if (sorted === UNSORTABLE) return UNSORTABLE;
      copy ??= value.slice();
      copy[i] = sorted;
    }
    return copy ?? value;
  }
  const copy: JsonObject = {};
  for (const key of Object.keys(value).sort()) {
    if (key === omit) continue;
    const first = key.charCodeAt(0);
    if ((first >= 48 && first <= 57) || key === "__proto__") return UNSORTABLE;
    const item = value[key]!;
    if (typeof item !== "object" || item === null) {
      copy[key] = item;
    } else {
      const sorted = sortedCopy(item, null);
      if (sorted === UNSORTABLE) return UNSORTABLE;
      copy[key] = sorted;
    }
  }
  return copy;
}

/** {@linkcode canonicalJson}'s slow path: the same text, piece by piece. */
function canonicalText(value: JsonValue, omit: string | null): string {
  if (typeof value !== "object" || value === null) return JSON.stringify(value);
  if (Array.isArray(value)) {
    let out = "[";
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out += ",";
      out += canonicalText(value[i]!, null);
    }
    return `${out}]`;
  }
  let out = "{";
  for (const key of Object.keys(value).sort()) {
    if (key === omit) continue;
    if (out.length > 1) out += ",";
    out += `${JSON.stringify(key)}:${canonicalText(value[key]!, null)}`;
  }
  return `${out}}`;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null;
}

function describe(value: unknown): string {
  if (typeof value === "function") return "a function";
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "symbol") return String(value);
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
