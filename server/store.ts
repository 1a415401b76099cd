/**
 * The contract between the reference server's handler and the store it runs
 * over: {@linkcode ServerStore}, its records, writes and pages, and the MUST
 * clauses every store keeps. Types only: the stores live beside it
 * (`./memory.ts`, `./sqlite.ts`, `./kv.ts`), and `./conformance.ts` states the clauses
 * as tests that any store runs with one call.
 *
 * @example Reading a store through the contract
 * ```ts
 * import type { ServerStore } from "@offline-first/sync/server";
 * import { createMemoryServerStore } from "@offline-first/sync/server/memory";
 * import assert from "node:assert/strict";
 *
 * const store: ServerStore = createMemoryServerStore();
 * const page = await store.listRecords("alice", "todo", { limit: 10 });
 * assert.deepEqual(page, { records: [], horizon: null, truncated: false });
 * await store.close();
 * ```
 *
 * @module
 */

import { SyncError } from "../src/errors.ts";
import type { JsonObject, JsonValue } from "../src/json.ts";

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
  /**
   * `JSON.stringify(data)`, when a store's `listRecords` holds the record
   * as JSON text: a pull sends it as it is, without parsing and serialising
   * it again. It MUST be exactly that text, as the page is built from it.
   */
  readonly text?: string;
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
    /**
     * `JSON.stringify(record.data)`, when the server already made it (it
     * also answers with it): a store may write it instead of serialising
     * the data again. A store that keeps data as JSON text MUST then
     * return data equal to `record.data`, as without it.
     */
    readonly text?: string;
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
export interface ListServerRecordsOptions {
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
export interface ListServerRecordsResult {
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
  /**
   * How many records the selection holds in all, this page's and every
   * later page's, when the store can count them cheaply; absent otherwise.
   * The handler sends it as the page's advisory `total`.
   */
  readonly total?: number;
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

/**
 * A shared store's clock of one namespace, with its version:
 * {@linkcode ServerStore.readClock}.
 */
export interface NamespaceClock {
  /** The newest write, as {@linkcode ServerStore.lastWrite} returns it. */
  readonly last: LastWrite | null;
  /**
   * An opaque version that changes with every commit to the namespace
   * (records or idempotency entries); `null` before the first commit.
   */
  readonly version: string | null;
}

/**
 * A commit to a shared store, as its change feed tells it:
 * {@linkcode ServerStore.changes}.
 */
export interface StoreChange {
  /** The namespace written. */
  readonly namespace: string;
  /** The kinds of the records written, without repeats. */
  readonly kinds: readonly string[];
  /**
   * `true` when every commit told here went through this store object
   * itself (its handler already told its own live streams).
   */
  readonly local?: boolean;
}

/** The precondition of a shared store's {@linkcode ServerStore.commit}. */
export interface CommitGuard {
  /** The namespace every write of the commit belongs to. */
  readonly namespace: string;
  /**
   * The clock the writes were computed from: the commit applies only while
   * the namespace's clock still has this version.
   */
  readonly expect: NamespaceClock;
}

/**
 * A guarded commit found that another writer moved the namespace's clock
 * since the guard's clock was read; nothing of the commit was written. The
 * server re-runs the request's work from fresh reads.
 *
 * @example Telling a lost race apart
 * ```ts
 * import { StaleClockError } from "@offline-first/sync/server";
 * import assert from "node:assert/strict";
 *
 * const error = new StaleClockError("alice", "v1");
 * assert.equal(error.retryable, true);
 * assert.equal(error.namespace, "alice");
 * ```
 */
export class StaleClockError extends SyncError {
  /** The namespace whose clock moved. */
  readonly namespace: string;

  /**
   * Constructs a new instance.
   *
   * @param namespace The namespace whose clock moved.
   * @param version The version the commit expected.
   */
  constructor(namespace: string, version: string | null) {
    super(
      `Cannot commit writes as another writer moved the clock of namespace ${
        JSON.stringify(namespace)
      }: current value is ${JSON.stringify(version)}`,
      { category: "storage", retryable: true },
    );
    this.name = "StaleClockError";
    this.namespace = namespace;
  }
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
 *    exactly as {@linkcode ListServerRecordsOptions} says, however many records
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
 * `testServerStore()` (`@offline-first/sync/server/conformance`) states
 * these clauses as tests.
 *
 * **Shared stores.** A store that several server processes or isolates use
 * at once (Deno KV on Deploy) cannot rely on one handler serialising the
 * writes: it declares the shared capability by implementing
 * {@linkcode ServerStore.readClock}, keeps each namespace's clock itself,
 * and applies a {@linkcode ServerStore.commit} with a
 * {@linkcode CommitGuard} only while the namespace's clock still has the
 * guard's version, moving the clock's version in the same atomic step;
 * otherwise it writes nothing and throws {@linkcode StaleClockError}. The
 * handler then reads the clock at the start of every write and, for a
 * shared store, gives a write a later millisecond than the clock it read,
 * so that every commit lands after everything visible before it.
 *
 * @example Wrapping a store to count commits
 * ```ts
 * import { createSyncServer, type ServerStore } from "@offline-first/sync/server";
 * import { createMemoryServerStore } from "@offline-first/sync/server/memory";
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
    options: ListServerRecordsOptions,
  ): Promise<ListServerRecordsResult>;

  /**
   * The batch-read capability: reads many records of one namespace at once,
   * each exactly as {@linkcode ServerStore.getRecord} would (tombstones
   * included, copies). The server reads a batch slice's records with it,
   * which on a networked store is one round trip instead of one per op;
   * without it, it calls `getRecord` per op.
   *
   * @param namespace The principal.
   * @param refs The records to read, by kind and id; may be empty and may
   * repeat.
   * @returns One entry per ref, in order: the record, or `null` when absent.
   * @throws {ClosedError} After close.
   */
  getRecords?(
    namespace: string,
    refs: readonly { readonly kind: string; readonly id: string }[],
  ): Promise<(ServerRecord | null)[]>;

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
   * The batch-read capability for keys: reads many idempotency entries of
   * one namespace at once, each exactly as
   * {@linkcode ServerStore.getIdempotency} would (expired ones MAY be
   * returned). Without it, the server calls `getIdempotency` per op.
   *
   * @param namespace The principal.
   * @param keys The idempotency keys; may be empty and may repeat.
   * @returns One entry per key, in order: the entry, or `null` when absent.
   * @throws {ClosedError} After close.
   */
  getIdempotencies?(
    namespace: string,
    keys: readonly string[],
  ): Promise<(IdempotencyEntry | null)[]>;

  /**
   * Applies writes atomically, in order (a later write of the same record or
   * key wins).
   *
   * @param writes The writes; may be empty.
   * @param guard For a shared store: the clock the writes were computed
   * from. Other stores ignore it.
   * @returns When every write is durable.
   * @throws {TypeError} For a write of unknown type; nothing is applied.
   * @throws {StaleClockError} When a shared store's clock moved since the
   * guard's clock was read; nothing is applied.
   * @throws {ClosedError} After close.
   */
  commit(writes: readonly ServerWrite[], guard?: CommitGuard): Promise<void>;

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
   * The shared capability: reads a namespace's clock with its version, for
   * the guard of the next {@linkcode ServerStore.commit}. Only stores that
   * several server processes may share implement it.
   *
   * @param namespace The principal.
   * @returns The clock and its version.
   * @throws {ClosedError} After close.
   */
  readClock?(namespace: string): Promise<NamespaceClock>;

  /**
   * The change capability of a shared store: a feed of the commits of
   * every instance sharing it (this one included), so that `GET /live` on
   * one instance hears of writes made through another. The feed starts at
   * the call (earlier commits are not told), may tell a commit late, twice
   * or, rarely, not at all (live hints are lossy by contract), and ends,
   * without an error, when `signal` aborts or the store closes. A feed that
   * throws is restarted by the server with backoff, its error reported to
   * `onError`. The server reads it only while a live stream is open.
   *
   * @param signal Ends the feed.
   * @returns The changes, in commit order per instance.
   */
  changes?(signal: AbortSignal): AsyncIterable<StoreChange>;

  /**
   * Releases the store. Idempotent.
   *
   * @returns When the store is closed.
   */
  close(): Promise<void>;
}
