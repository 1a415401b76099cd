/**
 * A {@linkcode Storage} on Deno KV: a local SQLite file, `":memory:"`,
 * Deno's default KV, or any open `Deno.Kv` (a KV on Deno Deploy or a
 * self-hosted `denokv` opened with `Deno.openKv(url)`). Several handles, in
 * one process or several, may share one store: every `write()` is one KV
 * atomic operation whose checks serialise concurrent writers.
 *
 * ## Key layout
 *
 * Every key starts with the store's `prefix` (default
 * `["offline-first-sync"]`), so one KV can hold several stores as long as no
 * prefix is a prefix of another. Under it, `K(s)` is a string as a
 * `Uint8Array` key part (see below) and `P` is the prefix:
 *
 * | key                                      | value                                              |
 * | ---------------------------------------- | -------------------------------------------------- |
 * | `[...P, "r", R192(kind), R256(id)]`      | a record's header                                  |
 * | `[...P, "o", K(opId)]`                   | an op's header                                     |
 * | `[...P, "s", state, K(opId)]`            | quarantined and parked ops: a copy of the header   |
 * | `[...P, "i", hash(id), slot]`            | ops by record: `[opId, kind, id, state]`           |
 * | `[...P, "m", K(key)]`                    | a meta entry's header                              |
 * | `[...P, "b", blobId, n]`                 | chunk `n` of a large value                         |
 * | `[...P, "t", ticketId]`                  | a ticket listing blobs being written or discarded  |
 * | `[...P, "x"]`                            | how many records and meta entries are large values |
 * | `[...P, "f"]`                            | the layout's version (2)                           |
 *
 * Every value is UTF-8 JSON in a `Uint8Array`, never V8 serialisation, so
 * the file stays readable by `@deno/kv` on Node.js. A header is
 * `{"v": value}` (ops add `"s": slot`), or for a large value a reference
 * `{"b": blobId, "n": chunks, "z": bytes}` (records add `"d": deleted`; ops
 * add `"s"`, `"k": kind`, `"i": id`, `"t": state`) whose chunks concatenate
 * to the value's JSON. A record whose base's `data` is its own `data` object
 * (a pulled record without local edits) is stored without that second copy
 * and its header says `"a": 1`; it reads back as two equal, independent
 * objects. An item's revision is the versionstamp of its header; the index
 * entries of an op are written in the same atomic operations as its header,
 * so they always carry the same versionstamp.
 *
 * Pending ops, the bulk of the outbox, have no by-state entry: listing them
 * reads the op headers in order and skips the others, so that queuing an op
 * costs one set fewer and its JSON is stored once. Quarantined and parked
 * ops, which are few and listed on their own, keep theirs. Opening a store
 * that an earlier version wrote deletes its by-state entries of pending ops.
 *
 * `K(s)` encodes each UTF-16 code unit of `s` in one to three bytes that
 * compare like code units, so that KV's byte order of the keys is
 * JavaScript's `<` on the strings, which the contract requires (KV's own
 * string parts would sort by UTF-8, that is by code points). `Rn(s)` is
 * `K(s)` while it takes at most `n` bytes, else a prefix of it, a marker and
 * a SHA-256 hash of `s`: at most `n + 21` bytes whatever `s` holds, so that
 * every kind and id fits (see `_kv_keys.ts`). Ids cut at one prefix sort
 * together, after every other id starting with it; listing sorts that group
 * by id. Only ids beyond 256 bytes of `K` are cut: every id of up to 256
 * ASCII characters is kept whole, or of 128 from most scripts (2 bytes
 * each), while the widest code units (from U+7F00, surrogates included)
 * take 3 bytes. `hash(id)` is 64-bit FNV-1a over the id's code units (low
 * byte first), cut to its top 53 bits so that it is an exact number part;
 * `slot` is a random 53-bit number fixed when the op is created. Listing a
 * record's ops reads that record's index entries and sorts them by op id.
 *
 * A store written before version 2 of the layout kept every kind and id
 * whole; opening it moves the records whose key would now differ (a kind of
 * more than 192 bytes or an id of more than 256) to their new key, once,
 * and then writes the version. Upgrade every process that shares a store:
 * one of an earlier version writes records that this one may not find.
 *
 * ## Limits
 *
 * KV caps a key at 2 KiB, the keys of one atomic operation at 80 KiB in
 * total, an atomic at 100 checks, 1000 mutations and 800 KiB, and a value at
 * 64 KiB. One contract write becomes one atomic operation, whose keys must
 * fit 80 KiB in the worst case the capabilities allow:
 *
 * - A record written with an `expect` takes two keys (the check and the
 *   set) of at most `prefix + 497` bytes (the longest kind and id parts),
 *   whatever its kind and id: 50 such records take 51 KiB of keys with the
 *   default prefix.
 * - An op changing state and record takes six keys: the check of its
 *   header, its header, the old and the new state index (all four with its
 *   op id), and the old and the new record index (fixed size). So
 *   `maxKeyLength`, which bounds op ids and meta keys only, follows from
 *   `maxMutationsPerWrite` and the prefix: the longest op id, at 3 bytes per
 *   code unit, for which the worst write still fits (118 with the
 *   defaults). It must leave at least 80, enough for the engine's meta
 *   keys (`cursor/` and a kind of up to 64 characters).
 *
 * ## Large values
 *
 * A value that does not fit one KV value, or that would push the atomic
 * operation past 800 KiB, is stored as a blob of 64 KiB chunks. The chunks
 * are written first, under fresh random ids that nothing references yet,
 * together with a `pending` ticket listing them; then the one atomic
 * operation of the write swaps the headers to reference them and checks that
 * the ticket is still pending. That atomic operation also turns the ticket
 * into a `garbage` ticket listing the blobs the write replaced (or deletes
 * it), and the write deletes those chunks and the ticket once it committed.
 * A crash at any instant leaves every header referencing complete chunks:
 * readers see the old value or the new one. What a crash leaves behind is
 * listed by a ticket: {@linkcode KvStorage.vacuum}, which also runs when the
 * storage opens, deletes the blobs of `garbage` tickets and of `pending`
 * tickets older than a grace period. It first marks a pending ticket as
 * garbage, which fails the check of a writer still in flight, so a slow
 * writer retries rather than commit a header whose chunks are gone.
 *
 * ## Concurrency
 *
 * Every `expect` is a check of the item's header in the write's atomic
 * operation, so of two writers expecting the same revision exactly one
 * commits. A write also checks what it read without an `expect` (an op's
 * old state, for its index entries); when only such a check fails, it reads
 * again and retries. A revision that is not a versionstamp KV could have
 * issued (20 lowercase hex digits) never matches: such a write resolves
 * `{ ok: false }` without reaching KV. Two handles on one SQLite file make
 * KV fail a commit with "database is locked" rather than wait; such a
 * commit wrote nothing and is retried.
 *
 * Values go through JSON, so `-0` reads back as `0`.
 *
 * ## Replacing large values
 *
 * To replace a large value, a write must know its blob. Ops are always read
 * before they are replaced (their index entries depend on the old state), so
 * the write knows. Records and meta entries are replaced without a read
 * while the store holds no large record or meta value: the count under
 * `[...P, "x"]` says so, and the write checks that it did not change.
 *
 * @example Writing a record and reading it back
 * ```ts
 * import { openKvStorage } from "@offline-first/sync/storage/kv";
 * import assert from "node:assert/strict";
 *
 * await using storage = await openKvStorage(":memory:");
 * const record = {
 *   kind: "todo",
 *   id: "1",
 *   data: { id: "1", title: "Buy milk", done: false },
 *   deleted: false,
 *   base: null,
 *   lastOpId: null,
 *   localUpdatedAt: null,
 * };
 * const created = await storage.write([
 *   { type: "putRecord", record, expect: null },
 * ]);
 * assert.equal(created.ok, true);
 * const [stored] = await storage.getRecords("todo", ["1"]);
 * assert.deepEqual(stored?.value, record);
 * ```
 *
 * @module
 */

import { runCall } from "./_call.ts";
import { ClosedError, StorageError } from "../src/errors.ts";
import type { JsonValue } from "../src/json.ts";
import type {
  ListOpsOptions,
  ListRecordsOptions,
  Mutation,
  Storage,
  StorageCallOptions,
  StorageCapabilities,
  StoredOp,
  StoredRecord,
  Versioned,
  WriteResult,
} from "../src/storage.ts";
import { collectGarbage } from "./_kv_blobs.ts";
import { ALL_STATES, kvFailure, KvKeyspace, recordOf } from "./_kv_keyspace.ts";
import { keyBytes } from "./_kv_limits.ts";
import {
  type KvStorageOptions,
  type ResolvedKvOptions,
  resolveKvOptions,
} from "./_kv_options.ts";

export type { KvStorageOptions } from "./_kv_options.ts";
import { planWrite } from "./_kv_plan.ts";
import {
  getItems,
  getOpItems,
  listOpsInOrder,
  listRecordOps,
  listRecords,
} from "./_kv_read.ts";
import { dropPendingIndex, upgradeLayout } from "./_kv_upgrade.ts";
import { commitWrite } from "./_kv_write.ts";
import { recordItem } from "./_stored.ts";
import { describe } from "../src/describe.ts";
import {
  checkString,
  checkStrings,
  resolveListOpsOptions,
  resolveListRecordsOptions,
} from "./_validate.ts";

/** Options for {@linkcode KvStorage.vacuum}. */
export interface KvVacuumOptions extends StorageCallOptions {
  /**
   * How old (ms) a pending ticket must be before its blobs count as
   * abandoned. A younger one may belong to a write still in flight;
   * collecting it anyway is safe (that write retries), only wasteful.
   *
   * @default {60000}
   */
  graceMs?: number;
}

/** A {@linkcode Storage} on Deno KV, with a way to collect garbage. */
export interface KvStorage extends Storage {
  /**
   * Deletes the blobs that crashed or failed writes left behind (see the
   * module documentation). Runs when the storage opens; call it on a
   * long-lived store to reclaim space sooner.
   *
   * @param options Grace period for pending writes, abort signal.
   * @returns How many blobs were deleted.
   * @throws {RangeError} When `graceMs` is negative or not finite.
   * @throws {StorageError} When KV fails.
   * @throws {ClosedError} After `close()`.
   *
   * @example Collecting garbage on a long-lived store
   * ```ts
   * import { openKvStorage } from "@offline-first/sync/storage/kv";
   * import assert from "node:assert/strict";
   *
   * await using storage = await openKvStorage(":memory:");
   * await storage.write([
   *   { type: "putMeta", key: "big", value: "x".repeat(100_000) },
   * ]);
   * // The write cleaned up after itself: there is nothing to collect.
   * assert.equal(await storage.vacuum(), 0);
   * ```
   */
  vacuum(options?: KvVacuumOptions): Promise<number>;
}

const DEFAULT_GRACE_MS = 60_000;

/**
 * Opens a storage on Deno KV.
 *
 * `pathOrKv` is a file path, `":memory:"`, `undefined` for Deno's default
 * KV, or an open `Deno.Kv`. Opening collects the garbage that crashed
 * writes left (see {@linkcode KvStorage.vacuum}).
 *
 * `capabilities`: `persistent` is `false` for `":memory:"` only;
 * `multiProcess` is `true` for a path and for a `Deno.Kv` passed in;
 * `maxWriteBytes` is 8 MiB (large values are chunked);
 * `maxMutationsPerWrite` is the option; `maxKeyLength`, the longest op id
 * or meta key, follows from it and from the prefix (see the module
 * documentation). Kinds and record ids of any length fit.
 *
 * @param pathOrKv Where the store lives.
 * @param options Prefix, ownership of the KV, mutations per write.
 * @returns The open storage.
 * @throws {TypeError} When `pathOrKv` or an option has the wrong type.
 * @throws {RangeError} When `maxMutationsPerWrite` is out of range, or too
 * many for the prefix: a write of that many records with the longest kinds
 * and ids would not fit KV's limits, or op ids and meta keys would be
 * limited to fewer than 80 code units.
 * @throws {StorageError} When KV cannot be opened or read, or the store was
 * written by a later version of this library.
 *
 * @example Two stores sharing one KV
 * ```ts
 * import { openKvStorage } from "@offline-first/sync/storage/kv";
 * import assert from "node:assert/strict";
 *
 * using kv = await Deno.openKv(":memory:");
 * await using alice = await openKvStorage(kv, { prefix: ["sync", "alice"] });
 * await using bob = await openKvStorage(kv, { prefix: ["sync", "bob"] });
 * await alice.write([{ type: "putMeta", key: "cursor", value: "a" }]);
 * assert.deepEqual(await bob.getMeta(["cursor"]), [undefined]);
 * // A Deno.Kv passed in stays open after close(): its owner closes it.
 * assert.equal(alice.capabilities.multiProcess, true);
 * ```
 *
 * @example Trading mutations per write for longer op ids and meta keys
 * ```ts
 * import { openKvStorage } from "@offline-first/sync/storage/kv";
 * import assert from "node:assert/strict";
 *
 * await using storage = await openKvStorage(":memory:");
 * assert.equal(storage.capabilities.maxMutationsPerWrite, 50);
 * assert.equal(storage.capabilities.maxKeyLength, 118);
 * await using fewer = await openKvStorage(":memory:", {
 *   maxMutationsPerWrite: 20,
 * });
 * assert.equal(fewer.capabilities.maxKeyLength, 323);
 * // Record ids are not bound by maxKeyLength: 256 emoji fit.
 * const id = "\u{1F600}".repeat(256);
 * const record = {
 *   kind: "todo",
 *   id,
 *   data: {},
 *   deleted: false,
 *   base: null,
 *   lastOpId: null,
 *   localUpdatedAt: null,
 * };
 * await storage.write([{ type: "putRecord", record }]);
 * const [stored] = await storage.getRecords("todo", [id]);
 * assert.equal(stored?.value.id, id);
 * ```
 */
export async function openKvStorage(
  pathOrKv?: string | Deno.Kv,
  options: KvStorageOptions = {},
): Promise<KvStorage> {
  const resolved = resolveKvOptions(pathOrKv, options);
  let kv = resolved.kv;
  if (kv === undefined) {
    try {
      kv = await Deno.openKv(pathOrKv as string | undefined);
    } catch (error) {
      throw new StorageError(
        `Cannot open KV storage as Deno KV failed: current value is ${
          describe(pathOrKv)
        }`,
        { cause: error },
      );
    }
  }
  return await DenoKvStorage.open(kv, resolved);
}

/** The storage: the contract's calls on one keyspace. */
class DenoKvStorage implements KvStorage {
  readonly capabilities: StorageCapabilities;
  readonly #space: KvKeyspace;
  readonly #closeKv: boolean;
  #closing: Promise<void> | undefined;
  readonly #inFlight = new Set<Promise<unknown>>();
  /** Ends the open `watchMeta` iterations on close. */
  readonly #watches = new AbortController();

  constructor(space: KvKeyspace, opened: ResolvedKvOptions) {
    this.#space = space;
    this.#closeKv = opened.closeKv;
    this.capabilities = Object.freeze(opened.capabilities);
  }

  /**
   * Opens a storage: reads the count of large values, brings a store of an
   * earlier layout to this one, and collects garbage. On failure the
   * storage is closed (and the KV with it when it owns it).
   */
  static async open(
    kv: Deno.Kv,
    opened: ResolvedKvOptions,
  ): Promise<DenoKvStorage> {
    const space = new KvKeyspace(kv, {
      prefix: opened.prefix,
      prefixBytes: keyBytes(opened.prefix),
      maxKeyLength: opened.capabilities.maxKeyLength,
    });
    const storage = new DenoKvStorage(space, opened);
    try {
      const [[count, layout]] = await Promise.all([
        kv.getMany<unknown[]>([space.countKey, space.layoutKey], {
          consistency: "strong",
        }),
        dropPendingIndex(space),
      ]);
      space.count = space.decodeCount(count!);
      await upgradeLayout(space, layout!);
      await collectGarbage(space, { graceMs: DEFAULT_GRACE_MS });
    } catch (error) {
      await storage.close();
      throw kvFailure("open storage", error);
    }
    return storage;
  }

  getRecords(
    kind: string,
    ids: readonly string[],
    options?: StorageCallOptions,
  ): Promise<(Versioned<StoredRecord> | undefined)[]> {
    return this.#run("read records", options, () => {
      checkString("read records", "kind", kind);
      checkStrings("read records", "ids", ids);
      const space = this.#space;
      const keys = space.recordKeys(kind, ids);
      return () =>
        getItems(space, {
          keys,
          read: (value, envelope, index) => {
            const id = ids[index]!;
            const item = () => recordItem(kind, id);
            return recordOf(value, { envelope, item, kind, id });
          },
        });
    });
  }

  listRecords(
    kind: string,
    options: ListRecordsOptions = {},
  ): Promise<Versioned<StoredRecord>[]> {
    return this.#run("list records", options, () => {
      checkString("list records", "kind", kind);
      const { limit, after, includeDeleted } = resolveListRecordsOptions(
        options,
      );
      const query = { kind, after, includeDeleted, limit };
      return () => listRecords(this.#space, query);
    });
  }

  getOps(
    opIds: readonly string[],
    options?: StorageCallOptions,
  ): Promise<(Versioned<StoredOp> | undefined)[]> {
    return this.#run("read ops", options, () => {
      checkStrings("read ops", "opIds", opIds);
      return () => getOpItems(this.#space, opIds);
    });
  }

  listOps(options: ListOpsOptions = {}): Promise<Versioned<StoredOp>[]> {
    return this.#run("list ops", options, () => {
      const { limit, after, id, states, kinds } = resolveListOpsOptions(
        options,
      );
      const filter = { after, id, states, kinds, limit };
      if (limit === 0 || states?.size === 0 || kinds?.size === 0) {
        return () => Promise.resolve([]);
      }
      if (id !== undefined) {
        return () => listRecordOps(this.#space, { ...filter, id });
      }
      const wanted = states === undefined
        ? ALL_STATES
        : ALL_STATES.filter((state) => states.has(state));
      return () => listOpsInOrder(this.#space, { filter, states: wanted });
    });
  }

  getMeta(
    keys: readonly string[],
    options?: StorageCallOptions,
  ): Promise<(Versioned<JsonValue> | undefined)[]> {
    return this.#run("read meta", options, () => {
      checkStrings("read meta", "keys", keys);
      const space = this.#space;
      const kvKeys = keys.map((key) => space.readKey("m", key));
      // Any JSON is a meta value.
      return () =>
        getItems(space, { keys: kvKeys, read: (value) => value as JsonValue });
    });
  }

  write(
    mutations: readonly Mutation[],
    options?: StorageCallOptions,
  ): Promise<WriteResult> {
    return this.#run("write mutations", options, () => {
      const plan = planWrite(this.#space, {
        mutations,
        capabilities: this.capabilities,
      });
      if ("ok" in plan) return () => Promise.resolve(plan);
      return () => commitWrite(this.#space, { plan, signal: options?.signal });
    });
  }

  vacuum(options: KvVacuumOptions = {}): Promise<number> {
    return this.#run("vacuum storage", options, () => {
      const graceMs = options.graceMs ?? DEFAULT_GRACE_MS;
      if (
        typeof graceMs !== "number" || !(graceMs >= 0) ||
        graceMs === Infinity
      ) {
        throw new RangeError(
          `Cannot vacuum storage as 'graceMs' is not a non-negative finite number: current value is ${
            describe(graceMs)
          }`,
        );
      }
      const signal = options.signal;
      return () =>
        collectGarbage(
          this.#space,
          signal === undefined ? { graceMs } : { graceMs, signal },
        );
    });
  }

  /**
   * Tells when meta entries may have changed: Deno KV's `watch` on their
   * keys. It delivers other handles' writes in this process, and on Deno
   * Deploy other isolates' writes; a local KV file opened by another
   * process is not watched (poll it).
   *
   * @param keys The meta keys.
   * @param options The signal that ends the iteration.
   * @returns One item per change seen.
   * @throws {ClosedError} When the storage is closed.
   * @throws {TypeError} When a key is not a string.
   */
  async *watchMeta(
    keys: readonly string[],
    options: { readonly signal: AbortSignal },
  ): AsyncIterableIterator<void> {
    if (this.#closing !== undefined) {
      throw new ClosedError("Cannot watch meta as the storage is closed");
    }
    checkStrings("watch meta", "keys", keys);
    const kvKeys = keys.map((key) => this.#space.readKey("m", key))
      .filter((key): key is Deno.KvKey => key !== undefined);
    const signal = AbortSignal.any([options.signal, this.#watches.signal]);
    if (kvKeys.length === 0 || signal.aborted) return;
    const reader = this.#space.kv.watch(kvKeys).getReader();
    const stop = () => void reader.cancel().catch(() => {});
    signal.addEventListener("abort", stop, { once: true });
    try {
      // The first read is the entries as they are now: no change yet.
      let first = true;
      while (!signal.aborted) {
        const { done } = await reader.read();
        if (done || signal.aborted) return;
        if (first) first = false;
        else yield;
      }
    } catch (error) {
      if (signal.aborted) return;
      throw kvFailure("watch meta", error);
    } finally {
      signal.removeEventListener("abort", stop);
      stop();
    }
  }

  close(): Promise<void> {
    this.#watches.abort();
    this.#closing ??= (async () => {
      // Calls in flight finish first, so none fails on a closed KV.
      await Promise.allSettled([...this.#inFlight]);
      if (this.#closeKv) {
        try {
          this.#space.kv.close();
        } catch {
          // Already closed by its owner: nothing left to release.
        }
      }
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * Runs a call: rejects after close and on an aborted signal, runs
   * `prepare` (the validation, whose TypeError or StorageError rejects the
   * call as it is), then its work, whose failures other than our own
   * errors and the signal's reason are KV's and become StorageErrors.
   * Never throws synchronously.
   */
  #run<T>(
    action: string,
    options: StorageCallOptions | undefined,
    prepare: () => () => Promise<T>,
  ): Promise<T> {
    if (this.#closing !== undefined) {
      return Promise.reject(
        new ClosedError(`Cannot ${action} as the storage is closed`),
      );
    }
    return runCall({
      signal: options?.signal,
      prepare,
      failure: (error) => kvFailure(action, error),
      inFlight: this.#inFlight,
    });
  }
}
