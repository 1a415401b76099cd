/**
 * The Storage contract: what a local store must do for the engine. Types and
 * MUST clauses only, no runtime code. The published suite in
 * `@offline-first/sync/storage/conformance` states every clause as a test;
 * an adapter is conformant when `testStorage()` passes on it.
 *
 * The contract is batch-shaped: all changes go through one
 * {@linkcode Storage.write} call that commits a list of mutations atomically.
 * There are no interactive transactions (Deno KV has none), so concurrent
 * writers are serialised optimistically: every stored item carries an opaque
 * revision, and a mutation may require the revision it read.
 *
 * @module
 */

import type { JsonObject, JsonValue } from "./json.ts";

/** The last server version of a record that the client knows. */
export interface RecordBase {
  /** The record as the server stored it. */
  readonly data: JsonObject;
  /** The server's `updated_at` of that version (ISO-8601 UTC). */
  readonly updatedAt: string;
  /** Whether that version is a tombstone. */
  readonly deleted: boolean;
}

/** A record as the local store keeps it. */
export interface StoredRecord {
  /** The table the record belongs to. */
  readonly kind: string;
  /** The record's id. */
  readonly id: string;
  /** The app's current view of the record (what reads return). */
  readonly data: JsonObject;
  /** Whether the record is deleted, locally or by a server tombstone. */
  readonly deleted: boolean;
  /** The last server version the client knows; `null` for a local create. */
  readonly base: RecordBase | null;
  /** The id of the newest op queued for this record; `null` when none is. */
  readonly lastOpId: string | null;
  /** The client's clock (ms since epoch) at the last local edit, if any. */
  readonly localUpdatedAt: number | null;
}

/** Where an op is in its life. */
export type OpState =
  /** In the live queue, waiting to be pushed. */
  | "pending"
  /** Rejected by the server (4xx): out of the live queue with its error. */
  | "quarantined"
  /** An unresolved conflict: in the conflict inbox. */
  | "parked";

/** An error recorded on an op. */
export interface OpError {
  /** The error's category (see `SyncError`). */
  readonly category: string;
  /** The human-readable message. */
  readonly message: string;
  /** The HTTP status, if any. */
  readonly status: number | null;
  /** The machine-readable code, if any. */
  readonly code: string | null;
  /** The response body, if any. */
  readonly body: JsonValue | null;
  /** When it happened (ms since epoch). */
  readonly at: number;
}

/** A conflict the client could not resolve on its own (the inbox entry). */
export interface OpConflict {
  /** The server's record at detection time; `null` if the server had none. */
  readonly server: JsonObject | null;
  /** The server's `updated_at` at detection time. */
  readonly serverUpdatedAt: string | null;
  /** The local data at detection time; `null` for a local delete. */
  readonly local: JsonObject | null;
  /** The base the client edited, when known. */
  readonly base: JsonObject | null;
  /** When it was detected (ms since epoch). */
  readonly detectedAt: number;
}

/** One entry of the outbox. */
export interface StoredOp {
  /** The op's id: a ULID, so the outbox order is time order. */
  readonly opId: string;
  /** The table. */
  readonly kind: string;
  /** The record's id. */
  readonly id: string;
  /** Whether the op writes or deletes the record. */
  readonly type: "upsert" | "delete";
  /** The record to store for an upsert; `null` for a delete. */
  readonly payload: JsonObject | null;
  /** The server version the write was based on, when known. */
  readonly baseUpdatedAt: string | null;
  /**
   * That server version's data: the base of a three-way merge when the op
   * meets a conflict. Kept on the op because a pull may move the record's
   * base while the op waits.
   */
  readonly base: JsonObject | null;
  /** The top-level fields the op changes; `null` when unknown. */
  readonly changedFields: readonly string[] | null;
  /** When the op was created (ms since epoch, client clock). */
  readonly createdAt: number;
  /**
   * When the newest write folded into the op was made (ms since epoch,
   * client clock): the op's edit time for `lastWriteWins`.
   */
  readonly editedAt: number;
  /**
   * How many times the op was handed to the transport. An op with
   * `attempts > 0` may have reached the server and is frozen: later writes
   * never fold into it.
   */
  readonly attempts: number;
  /**
   * Which form of the op this is: 0 for the first, n for the n-th new body
   * (a conflict resolution, or a quarantined op sent again). Each form has
   * its own idempotency key.
   */
  readonly revision: number;
  /**
   * How many conflicts the op met and was re-sent after; bounded by the
   * engine so that a conflict that keeps coming back parks the op.
   */
  readonly conflicts: number;
  /** Whether the write skips the server's version check. */
  readonly force: boolean;
  /** Where the op is in its life. */
  readonly state: OpState;
  /** The last error, if any. */
  readonly error: OpError | null;
  /** The unresolved conflict, for a parked op. */
  readonly conflict: OpConflict | null;
}

/** A stored item together with its revision. */
export interface Versioned<T> {
  /** The item. */
  readonly value: T;
  /**
   * The storage's opaque revision of the item. It MUST change with every
   * write of the item and MUST never repeat for one key, even after the item
   * was deleted and written again.
   */
  readonly rev: string;
}

/**
 * A precondition on the item a mutation writes: `undefined` for none, `null`
 * for "the item must not exist", a revision for "the item must still have
 * this revision".
 */
export type WritePrecondition = string | null | undefined;

/** One change inside a {@linkcode Storage.write}. */
export type Mutation =
  | {
    readonly type: "putRecord";
    readonly record: StoredRecord;
    readonly expect?: WritePrecondition;
  }
  | {
    readonly type: "deleteRecord";
    readonly kind: string;
    readonly id: string;
    readonly expect?: WritePrecondition;
  }
  | {
    readonly type: "putOp";
    readonly op: StoredOp;
    readonly expect?: WritePrecondition;
  }
  | {
    readonly type: "deleteOp";
    readonly opId: string;
    readonly expect?: WritePrecondition;
  }
  | {
    readonly type: "putMeta";
    readonly key: string;
    readonly value: JsonValue;
    readonly expect?: WritePrecondition;
  }
  | {
    readonly type: "deleteMeta";
    readonly key: string;
    readonly expect?: WritePrecondition;
  };

/** The outcome of a {@linkcode Storage.write}. */
export type WriteResult =
  /** Every mutation was committed. */
  | {
    readonly ok: true;
    /**
     * One entry per mutation, in order: the revision its item has after the
     * write, or `null` when the item does not exist after it. Two mutations
     * of one item get the same entry. Lets a writer chain the next `expect`
     * without reading again.
     */
    readonly revs: readonly (string | null)[];
  }
  /** A precondition failed; nothing was committed. */
  | { readonly ok: false };

/** What a storage can do, as data: the engine adapts to it. */
export interface StorageCapabilities {
  /** Whether data survives a restart of the process. */
  readonly persistent: boolean;
  /**
   * Whether several processes may open the same store at once without
   * losing or duplicating writes.
   */
  readonly multiProcess: boolean;
  /**
   * The most mutations one {@linkcode Storage.write} accepts. The engine
   * splits larger work into several writes; the adapter never splits
   * silently.
   */
  readonly maxMutationsPerWrite: number;
  /**
   * The most bytes one write accepts, measured as the UTF-8 length of
   * `JSON.stringify(mutations)` (the whole array); `Infinity` for no limit.
   */
  readonly maxWriteBytes: number;
  /**
   * The longest op id or meta key, in UTF-16 code units (a string's
   * `length`); `Infinity` for no limit. Deno KV, for one, caps a whole key
   * at 2 KiB and the keys of one write at 80 KiB. The engine's own keys
   * need 71: its op ids are 26-character ULIDs, its meta keys `cursor/` or
   * `resync/` and a kind.
   *
   * Kinds and record ids are not bound by it: every storage holds every
   * kind and id the wire contract allows, whatever this says (clause 8 of
   * {@linkcode Storage}).
   */
  readonly maxKeyLength: number;
}

/** Common options of every call. */
export interface StorageCallOptions {
  /** Aborts the call before it commits. */
  readonly signal?: AbortSignal;
}

/** Options for {@linkcode Storage.listRecords}. */
export interface ListRecordsOptions extends StorageCallOptions {
  /**
   * Whether to return deleted records too.
   *
   * @default false
   */
  readonly includeDeleted?: boolean;
  /** Return only records whose id sorts after this id (a paging cursor). */
  readonly after?: string;
  /**
   * The most records to return.
   *
   * @default Infinity
   */
  readonly limit?: number;
}

/** Options for {@linkcode Storage.listOps}. */
export interface ListOpsOptions extends StorageCallOptions {
  /** Only ops in these states; all states when absent, none when empty. */
  readonly states?: readonly OpState[];
  /** Only ops of these tables; all tables when absent, none when empty. */
  readonly kinds?: readonly string[];
  /**
   * Only ops of records with this id (with `kinds` naming the record's one
   * table; without `kinds`, records of that id in every table).
   */
  readonly id?: string;
  /** Only ops whose id sorts after this op id (a paging cursor). */
  readonly after?: string;
  /**
   * The most ops to return.
   *
   * @default Infinity
   */
  readonly limit?: number;
}

/**
 * The local store: records, the outbox, and small metadata (pull cursors and
 * the like).
 *
 * Every adapter MUST:
 *
 * 1. Commit each {@linkcode Storage.write} all-or-nothing, also across a
 *    crash at any instant: after a restart either every mutation of a write
 *    is visible or none is.
 * 2. Check every `expect` of a write against the state just before the write
 *    commits (not against earlier mutations of the same write); if one fails,
 *    commit nothing and resolve `{ ok: false }`.
 * 3. Return stored values that are equal as JSON to what was written: deeply
 *    equal to what `JSON.parse(JSON.stringify(value))` gives, so `-0` may
 *    read back as `0` while every other number reads back exactly. This
 *    includes `""`, `0`, `false`, `null`, NUL characters, lone surrogates
 *    and `__proto__` keys (as own data properties), and values nested 256
 *    levels deep (the value itself is level 1; the wire contract lets a
 *    record's data nest 64). A deeper value may be refused with a
 *    `StorageError`, committing nothing, but never overflows the stack.
 *    Returned values never share objects with the caller, nor with what the
 *    caller wrote.
 * 4. Order records by id and ops by op id, both compared by UTF-16 code
 *    units (JavaScript's `<` on strings).
 * 5. Reject a write beyond {@linkcode StorageCapabilities} (too many
 *    mutations, too many bytes, an op id or meta key too long) with a
 *    `StorageError` and commit nothing; reject a malformed mutation with a
 *    `TypeError`.
 * 6. Make `close()` idempotent and reject every later call with a
 *    `ClosedError`.
 * 7. Reject a write whose `signal` is aborted before it commits with the
 *    signal's reason, committing nothing.
 * 8. Hold every kind of up to 64 UTF-16 code units and every record id of
 *    up to 512 (the wire contract's 64 characters and 256 code points),
 *    whatever characters they hold (NUL, `/`, `%`, astral characters), in
 *    records and in ops, with the usual order and paging, also in a write
 *    of `maxMutationsPerWrite` such items. The engine relies on it: it
 *    never checks kinds or ids against `maxKeyLength`. Longer ones may be
 *    refused with a `StorageError`.
 * 9. Treat what it reads back as untrusted: an item whose stored form is
 *    corrupt, or is not a record or op of the key it was read under (a
 *    file edited by hand, another program sharing the database), rejects
 *    the read with a `StorageError` that names the item, never a crash
 *    and never a wrong value.
 *
 * A record marked `deleted` still exists for `expect`: only a
 * `deleteRecord` removes it. `capabilities.persistent` means data survives
 * closing and reopening the store; `capabilities.multiProcess` means several
 * handles (in one process or several) may use one store at once, each
 * seeing the others' commits.
 *
 * @example Reading and writing a memory storage
 * ```ts
 * import { createMemoryStorage } from "@offline-first/sync/storage/memory";
 * import assert from "node:assert/strict";
 *
 * await using storage = createMemoryStorage();
 * const result = await storage.write([{
 *   type: "putMeta",
 *   key: "greeting",
 *   value: "hello",
 *   expect: null,
 * }]);
 * assert.equal(result.ok, true);
 * const [entry] = await storage.getMeta(["greeting"]);
 * assert.equal(entry?.value, "hello");
 * ```
 */
export interface Storage extends AsyncDisposable {
  /** What the storage can do. */
  readonly capabilities: StorageCapabilities;

  /**
   * Reads records by id.
   *
   * @param kind The table.
   * @param ids The ids to read.
   * @param options Abort signal.
   * @returns One entry per id, in the same order; `undefined` where absent.
   */
  getRecords(
    kind: string,
    ids: readonly string[],
    options?: StorageCallOptions,
  ): Promise<(Versioned<StoredRecord> | undefined)[]>;

  /**
   * Lists a table's records in id order.
   *
   * @param kind The table.
   * @param options Deleted records, paging cursor, limit.
   * @returns The records, ordered by id.
   */
  listRecords(
    kind: string,
    options?: ListRecordsOptions,
  ): Promise<Versioned<StoredRecord>[]>;

  /**
   * Reads ops by op id.
   *
   * @param opIds The op ids to read.
   * @param options Abort signal.
   * @returns One entry per op id, in the same order; `undefined` where absent.
   */
  getOps(
    opIds: readonly string[],
    options?: StorageCallOptions,
  ): Promise<(Versioned<StoredOp> | undefined)[]>;

  /**
   * Lists outbox ops in op-id order.
   *
   * @param options Filters, paging cursor, limit.
   * @returns The matching ops, ordered by op id.
   */
  listOps(options?: ListOpsOptions): Promise<Versioned<StoredOp>[]>;

  /**
   * Reads metadata entries (pull cursors and engine state).
   *
   * @param keys The keys to read.
   * @param options Abort signal.
   * @returns One entry per key, in the same order; `undefined` where absent.
   */
  getMeta(
    keys: readonly string[],
    options?: StorageCallOptions,
  ): Promise<(Versioned<JsonValue> | undefined)[]>;

  /**
   * Commits mutations atomically.
   *
   * @param mutations The changes, applied in order (a later mutation of the
   * same item wins).
   * @param options Abort signal.
   * @returns `{ ok: true, revs }` when committed, `{ ok: false }` when an
   * `expect` failed and nothing was committed.
   * @throws {StorageError} When the write exceeds the capabilities or the
   * store fails; nothing is committed.
   */
  write(
    mutations: readonly Mutation[],
    options?: StorageCallOptions,
  ): Promise<WriteResult>;

  /**
   * Optional: tells when meta entries may have changed, written through any
   * handle on the store (in other processes too, where the store can tell),
   * until `signal` aborts or the store closes. A hint, not data: it may
   * come late, coalesce several changes, or never come at all (a local
   * Deno KV file delivers changes only inside one process; Deno Deploy
   * across isolates), so a caller keeps polling and reads the entries
   * itself. Engines sharing a store use it to hear each other sooner than
   * their poll (ENGINE.md clause 26).
   *
   * @param keys The meta keys to watch.
   * @param options The signal that ends the iteration.
   * @returns One item per hint.
   */
  watchMeta?(
    keys: readonly string[],
    options: { readonly signal: AbortSignal },
  ): AsyncIterable<void>;

  /** Releases the store. Idempotent. */
  close(): Promise<void>;
}
