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

import { ClosedError, StorageError, SyncError } from "../src/errors.ts";
import type { JsonValue } from "../src/json.ts";
import type {
  Expect,
  ListOpsOptions,
  ListRecordsOptions,
  Mutation,
  OpState,
  Storage,
  StorageCallOptions,
  StorageCapabilities,
  StoredOp,
  StoredRecord,
  Versioned,
  WriteResult,
} from "../src/storage.ts";
import {
  decodeText,
  encodeText,
  hashedGroup,
  keyPart,
  keyPartBytes,
  partMatches,
  sameBytes,
  startsWith,
} from "./_kv_keys.ts";
import {
  type ItemName,
  misplaced,
  parseStored,
  recordItem,
  storedOp,
  storedRecord,
  withBaseData,
} from "./_stored.ts";
import {
  type CheckedMutation,
  checkMutations,
  checkString,
  checkStrings,
  checkWriteBytes,
  resolveListOpsOptions,
  resolveListRecordsOptions,
} from "./_validate.ts";
import { describe, shortText, utf8Length } from "./_text.ts";

/** Options for {@linkcode openKvStorage}. */
export interface KvStorageOptions {
  /**
   * The key prefix of every entry, so that one KV can hold several stores
   * (one per user, say). No store's prefix may be a prefix of another's. A
   * longer prefix leaves less room for keys: see `maxMutationsPerWrite`.
   *
   * @default {["offline-first-sync"]}
   */
  prefix?: Deno.KvKey;
  /**
   * Whether `close()` closes the `Deno.Kv`.
   *
   * @default {true} when the storage opened the KV, `false` for a `Deno.Kv`
   * passed in
   */
  closeKv?: boolean;
  /**
   * The most mutations one `write()` accepts. The keys of one atomic
   * operation share 80 KiB, and every write must fit with the longest kinds
   * and ids, so the more mutations a write may hold, the shorter
   * `capabilities.maxKeyLength` (op ids and meta keys) is: 50 leave 118 code
   * units with the default prefix. At most 69 with the default prefix (the
   * most that leave 80), fewer with a longer one; never more than 98 (KV
   * allows 100 checks per atomic operation, a write needs one per item plus
   * two).
   *
   * @default {50}
   */
  maxMutationsPerWrite?: number;
}

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

/** The default of {@linkcode KvStorageOptions.prefix}. */
const DEFAULT_PREFIX: Deno.KvKey = ["offline-first-sync"];
const DEFAULT_MAX_MUTATIONS = 50;
/**
 * The shortest `maxKeyLength` a store opens with: the engine's meta keys
 * are `cursor/` or `resync/` and a kind of up to 64 characters.
 */
const MIN_KEY_LENGTH = 80;
/** How many bytes of a kind's `K` its key part keeps whole: 64 wide units. */
const KIND_BUDGET = 192;
/** How many bytes of a record id's `K` its key part keeps whole. */
const ID_BUDGET = 256;
/** The version of the key layout, under `[...P, "f"]`. */
const LAYOUT_VERSION = 2;
const DEFAULT_GRACE_MS = 60_000;
/**
 * The most bytes one write accepts. Large values go through blobs, so any
 * size would fit; the cap bounds what one crashed write can leave behind.
 */
const MAX_WRITE_BYTES = 8 * 1024 * 1024;

// Deno KV's limits, measured on Deno 2.9.
/** KV caps one key at 2 KiB. */
const KV_MAX_KEY_BYTES = 2048;
/** KV caps the keys of one atomic operation (checks and mutations) at 80 KiB. */
const KV_MAX_TOTAL_KEY_BYTES = 80 * 1024;
/**
 * KV caps an atomic operation at 800 KiB, counting each check's key once
 * and each mutation's key twice plus its value.
 */
const KV_MAX_ATOMIC_BYTES = 800 * 1024;
/** KV caps an atomic operation at 100 checks. */
const KV_MAX_CHECKS = 100;
/** KV caps an atomic operation at 1000 mutations. */
const KV_MAX_MUTATIONS = 1000;
/** KV caps a value at 64 KiB. */
const KV_MAX_VALUE_BYTES = 64 * 1024;
/** KV's `getMany()` reads at most 10 keys. */
const KV_MAX_GET_MANY = 10;
/** KV's `list()` returns at most 1000 entries per batch. */
const KV_MAX_BATCH = 1000;

/** Room kept free in every atomic operation for what estimates miss. */
const ATOMIC_SLACK_BYTES = 8 * 1024;
/** How often a write retries when only internal checks failed. */
const MAX_ATTEMPTS = 20;
/** How often a read retries when a blob vanished under it. */
const MAX_READ_ATTEMPTS = 5;

/**
 * The encoded size of the tag parts: a one-letter string is 3 bytes, a
 * number 9, a UUID string 38, a state name at most 13 ("quarantined").
 */
const TAG = 3;
const NUMBER = 9;
const UUID = 38;
const STATE = 13;

const OP_STATES: readonly OpState[] = ["pending", "quarantined", "parked"];

function isOpState(value: unknown): value is OpState {
  return (OP_STATES as readonly unknown[]).includes(value);
}
/** The one state without a by-state index (see the module documentation). */
const UNINDEXED_STATE: OpState = "pending";
/** A versionstamp as KV issues it: 20 lowercase hex digits. */
const VERSIONSTAMP = /^[0-9a-f]{20}$/;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

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
  if (typeof options !== "object" || options === null) {
    throw new TypeError(
      `Cannot open KV storage as 'options' is not an object: current value is ${
        describe(options)
      }`,
    );
  }
  const prefix = resolvePrefix(options.prefix);
  const maxMutationsPerWrite = resolveMaxMutations(
    options.maxMutationsPerWrite,
  );
  const prefixBytes = keyBytes(prefix);
  const maxKeyLength = deriveMaxKeyLength(prefixBytes, maxMutationsPerWrite);
  if (maxKeyLength < MIN_KEY_LENGTH) {
    throw new RangeError(
      `Cannot open KV storage as 'prefix' and 'maxMutationsPerWrite' leave too little room for keys: current value is ${prefixBytes} bytes of prefix and ${maxMutationsPerWrite} mutations per write`,
    );
  }
  const owned = pathOrKv === undefined || typeof pathOrKv === "string";
  if (!owned && !isKv(pathOrKv)) {
    throw new TypeError(
      `Cannot open KV storage as 'pathOrKv' is not a path or a Deno.Kv: current value is ${
        describe(pathOrKv)
      }`,
    );
  }
  const closeKv = options.closeKv ?? owned;
  if (typeof closeKv !== "boolean") {
    throw new TypeError(
      `Cannot open KV storage as 'closeKv' is not a boolean: current value is ${
        describe(closeKv)
      }`,
    );
  }
  // Only a KV in memory is private to this handle and gone with it.
  const shared = pathOrKv !== ":memory:";
  let kv: Deno.Kv;
  if (owned) {
    try {
      kv = await Deno.openKv(pathOrKv);
    } catch (error) {
      throw new StorageError(
        `Cannot open KV storage as Deno KV failed: current value is ${
          describe(pathOrKv)
        }`,
        { cause: error },
      );
    }
  } else kv = pathOrKv as Deno.Kv;
  return await DenoKvStorage.open(kv, prefix, closeKv, {
    persistent: shared,
    multiProcess: shared,
    maxMutationsPerWrite,
    maxWriteBytes: MAX_WRITE_BYTES,
    maxKeyLength,
  });
}

function isKv(value: unknown): value is Deno.Kv {
  return typeof value === "object" && value !== null &&
    typeof (value as Deno.Kv).atomic === "function" &&
    typeof (value as Deno.Kv).getMany === "function" &&
    typeof (value as Deno.Kv).list === "function";
}

function resolvePrefix(prefix: unknown): Deno.KvKey {
  if (prefix === undefined) return DEFAULT_PREFIX;
  if (!Array.isArray(prefix)) {
    throw new TypeError(
      `Cannot open KV storage as 'prefix' is not an array: current value is ${
        describe(prefix)
      }`,
    );
  }
  prefix.forEach((part, index) => {
    if (
      !(typeof part === "string" || typeof part === "number" ||
        typeof part === "bigint" || typeof part === "boolean" ||
        part instanceof Uint8Array)
    ) {
      throw new TypeError(
        `Cannot open KV storage as 'prefix[${index}]' is not a KV key part: current value is ${
          describe(part)
        }`,
      );
    }
  });
  // A copy: the caller may change its array later.
  return Object.freeze(
    prefix.map((part) => part instanceof Uint8Array ? part.slice() : part),
  );
}

function resolveMaxMutations(value: unknown): number {
  if (value === undefined) return DEFAULT_MAX_MUTATIONS;
  // Each item may need one check, plus the count's and the ticket's.
  const most = KV_MAX_CHECKS - 2;
  if (
    typeof value !== "number" || !Number.isInteger(value) || value < 1 ||
    value > most
  ) {
    throw new RangeError(
      `Cannot open KV storage as 'maxMutationsPerWrite' is not an integer from 1 to ${most}: current value is ${
        describe(value)
      }`,
    );
  }
  return value;
}

/**
 * The longest op id or meta key (code units) that keeps every key and every
 * write within KV's limits, given the prefix's encoded size and the
 * mutations a write may hold; 0 when the longest record key would not fit.
 * A string part takes at most `3 × length + 2` bytes.
 */
function deriveMaxKeyLength(prefixBytes: number, mutations: number): number {
  // The longest key with an op id: its by-state entry.
  const bySingleKey = Math.floor(
    (KV_MAX_KEY_BYTES - prefixBytes - TAG - STATE - 2) / 3,
  );
  // Per write: the count's check and set, the ticket's check and set.
  const fixed = 2 * (prefixBytes + TAG) + 2 * (prefixBytes + TAG + UUID);
  const perMutation = Math.floor((KV_MAX_TOTAL_KEY_BYTES - fixed) / mutations);
  // An op changing state and record: header check and set (prefix + TAG +
  // S), old and new state index (prefix + TAG + STATE + S), old and new
  // record index (prefix + TAG + 2 numbers), with S the op id's part. A
  // meta entry (check and set of prefix + TAG + S) weighs less, and so does
  // a record with an expect, its header's check and set with the longest
  // kind and id parts (2 × (prefix + 497) bytes), once S may take
  // MIN_KEY_LENGTH code units (6 × prefix + 1048).
  const constant = 6 * prefixBytes + 6 * TAG + 2 * STATE + 4 * NUMBER + 4 * 2;
  const byTotal = Math.floor((perMutation - constant) / 12);
  // The longest record key must fit one key, whatever the mutations.
  const recordKey = prefixBytes + TAG + keyPartBytes(KIND_BUDGET) + 2 +
    keyPartBytes(ID_BUDGET) + 2;
  if (recordKey > KV_MAX_KEY_BYTES) return 0;
  return Math.max(0, Math.min(bySingleKey, byTotal));
}

/** The encoded size of a KV key, as KV counts it against its limits. */
function keyBytes(key: Deno.KvKey): number {
  let bytes = 0;
  for (const part of key) bytes += partBytes(part);
  return bytes;
}

function partBytes(part: Deno.KvKeyPart): number {
  if (part instanceof Uint8Array) {
    // A type byte, the bytes with every zero escaped as two, a terminator.
    let bytes = part.length + 2;
    for (const byte of part) if (byte === 0) bytes++;
    return bytes;
  }
  switch (typeof part) {
    case "string": {
      let bytes = utf8Length(part) + 2;
      for (let index = 0; index < part.length; index++) {
        if (part.charCodeAt(index) === 0) bytes++;
      }
      return bytes;
    }
    case "number":
      return NUMBER;
    case "boolean":
      return 1;
    case "bigint": {
      // A type byte, a length byte beyond 8 bytes, the magnitude.
      const magnitude = part < 0n ? -part : part;
      return 2 + Math.ceil(magnitude.toString(16).length / 2);
    }
    default:
      return KV_MAX_KEY_BYTES;
  }
}

/**
 * 64-bit FNV-1a over a string's UTF-16 code units (low byte first), cut to
 * its top 53 bits: the record index's bucket. Computed on four 16-bit limbs
 * because JavaScript numbers hold 53 bits. Part of the file format: it must
 * never change.
 */
function hashText(text: string): number {
  let h0 = 0x2325;
  let h1 = 0x8422;
  let h2 = 0x9ce4;
  let h3 = 0xcbf2;
  for (let index = 0; index < text.length * 2; index++) {
    const unit = text.charCodeAt(index >>> 1);
    h0 ^= index & 1 ? unit >>> 8 : unit & 0xff;
    // Times the FNV prime 2^40 + 0x1b3.
    const t0 = h0 * 0x1b3;
    const t1 = h1 * 0x1b3;
    const t2 = h2 * 0x1b3 + (h0 << 8);
    const t3 = h3 * 0x1b3 + (h1 << 8);
    h0 = t0 & 0xffff;
    const c1 = t1 + (t0 >>> 16);
    h1 = c1 & 0xffff;
    const c2 = t2 + (c1 >>> 16);
    h2 = c2 & 0xffff;
    h3 = (t3 + (c2 >>> 16)) & 0xffff;
  }
  return ((h3 * 0x10000 + h2) * 0x10000 + h1) * 32 + (h0 >>> 11);
}

/** A random 53-bit integer: an op's slot in the record index. */
function randomSlot(): number {
  const words = crypto.getRandomValues(new Uint32Array(2));
  return (words[0]! & 0x1fffff) * 0x100000000 + words[1]!;
}

/** A header, decoded (see the module documentation). */
interface Envelope {
  /** The value, when stored inline. */
  readonly v?: JsonValue;
  /** The blob id, when stored as a blob. */
  readonly b?: string;
  /** The blob's chunk count. */
  readonly n?: number;
  /** The blob's size in bytes. */
  readonly z?: number;
  /** An op's slot. */
  readonly s?: number;
  /** A large record's `deleted`. */
  readonly d?: boolean;
  /** A large op's kind. */
  readonly k?: string;
  /** A large op's record id. */
  readonly i?: string;
  /** A large op's state. */
  readonly t?: OpState;
  /** 1 when a record's base was stored without its data (its `data`). */
  readonly a?: 1;
}

/** A blob as a ticket lists it. */
interface BlobRef {
  readonly id: string;
  readonly n: number;
}

/** A ticket's value. */
interface Ticket {
  readonly state: "pending" | "garbage";
  /** When it was written (ms since epoch). */
  readonly at: number;
  readonly blobs: readonly BlobRef[];
}

type SpaceName = "record" | "op" | "meta";

/** A checked mutation with its item's identity within the write. */
type Planned = CheckedMutation & {
  readonly identity: string;
  /** The value's UTF-8 JSON as stored; `undefined` for a delete. */
  readonly bytes: Uint8Array | undefined;
  /** Whether a record's base was left out of `bytes` (`"a": 1`). */
  readonly shared: boolean;
  /** The UTF-8 length of `JSON.stringify()` of the value, for the limit. */
  readonly jsonBytes: number | undefined;
};

/** One item a write touches: its last mutation, its combined expect. */
interface Item {
  readonly space: SpaceName;
  readonly headerKey: Deno.KvKey;
  /** The final value; `undefined` when the write deletes the item. */
  readonly value: StoredRecord | StoredOp | JsonValue | undefined;
  /** The final value's UTF-8 JSON, as stored. */
  readonly bytes: Uint8Array | undefined;
  /** Whether a record's base was left out of `bytes` (`"a": 1`). */
  readonly shared: boolean;
  readonly expect: Expect;
  /** Whether the final value goes to a blob. */
  large: boolean;
  /** A fresh slot, used if the op turns out not to exist. */
  readonly freshSlot: number;
  /** What a read found; `undefined` when the item was not read. */
  read:
    | { versionstamp: string | null; envelope: Envelope | undefined }
    | undefined;
}

/** A write's pre-written blobs. */
interface Prewrite {
  readonly ticketKey: Deno.KvKey;
  ticketVersionstamp: string | null;
  readonly blobs: Map<Item, BlobRef>;
}

/** The count of large records and meta entries, as last read. */
interface Count {
  readonly value: number;
  readonly versionstamp: string | null;
}

class DenoKvStorage implements KvStorage {
  readonly capabilities: StorageCapabilities;
  readonly #kv: Deno.Kv;
  readonly #prefix: Deno.KvKey;
  readonly #prefixBytes: number;
  readonly #closeKv: boolean;
  readonly #countKey: Deno.KvKey;
  readonly #layoutKey: Deno.KvKey;
  #count: Count = { value: 0, versionstamp: null };
  #closing: Promise<void> | undefined;
  readonly #inFlight = new Set<Promise<unknown>>();

  constructor(
    kv: Deno.Kv,
    prefix: Deno.KvKey,
    closeKv: boolean,
    capabilities: StorageCapabilities,
  ) {
    this.#kv = kv;
    this.#prefix = prefix;
    this.#prefixBytes = keyBytes(prefix);
    this.#closeKv = closeKv;
    this.#countKey = [...prefix, "x"];
    this.#layoutKey = [...prefix, "f"];
    this.capabilities = Object.freeze(capabilities);
  }

  /**
   * Opens a storage: reads the count of large values, brings a store of an
   * earlier layout to this one, and collects garbage. On failure the
   * storage is closed (and the KV with it when it owns it).
   */
  static async open(
    kv: Deno.Kv,
    prefix: Deno.KvKey,
    closeKv: boolean,
    capabilities: StorageCapabilities,
  ): Promise<DenoKvStorage> {
    const storage = new DenoKvStorage(kv, prefix, closeKv, capabilities);
    try {
      const [[count, layout]] = await Promise.all([
        kv.getMany<unknown[]>([storage.#countKey, storage.#layoutKey], {
          consistency: "strong",
        }),
        storage.#dropPendingIndex(),
      ]);
      storage.#count = storage.#decodeCount(count!);
      await storage.#upgradeLayout(layout!);
      await storage.#collect(DEFAULT_GRACE_MS, undefined);
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
      const kindPart = keyPart(kind, KIND_BUDGET);
      const keys = ids.map((id) =>
        this.#key("r", kindPart, keyPart(id, ID_BUDGET))
      );
      return () =>
        this.#getItems(keys, (value, envelope, index) => {
          const id = ids[index]!;
          return recordOf(value, envelope, () => recordItem(kind, id), {
            kind,
            id,
          });
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
      return () => this.#listRecords(kind, after, includeDeleted, limit);
    });
  }

  getOps(
    opIds: readonly string[],
    options?: StorageCallOptions,
  ): Promise<(Versioned<StoredOp> | undefined)[]> {
    return this.#run("read ops", options, () => {
      checkStrings("read ops", "opIds", opIds);
      // A key longer than the limit was never written: nothing to read.
      const max = this.capabilities.maxKeyLength;
      const keys = opIds.map((opId) =>
        opId.length > max ? undefined : this.#key("o", encodeText(opId))
      );
      return () =>
        this.#getItems(keys, (value, _envelope, index) => {
          const opId = opIds[index]!;
          return storedOp(value, () => `op ${shortText(opId)}`, opId);
        });
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
      if (id !== undefined) return () => this.#listRecordOps(id, filter);
      const wanted = states === undefined
        ? OP_STATES
        : OP_STATES.filter((state) => states.has(state));
      return () => this.#listOpsInOrder(wanted, filter);
    });
  }

  getMeta(
    keys: readonly string[],
    options?: StorageCallOptions,
  ): Promise<(Versioned<JsonValue> | undefined)[]> {
    return this.#run("read meta", options, () => {
      checkStrings("read meta", "keys", keys);
      const max = this.capabilities.maxKeyLength;
      const kvKeys = keys.map((key) =>
        key.length > max ? undefined : this.#key("m", encodeText(key))
      );
      // Any JSON is a meta value.
      return () => this.#getItems(kvKeys, (value) => value as JsonValue);
    });
  }

  write(
    mutations: readonly Mutation[],
    options?: StorageCallOptions,
  ): Promise<WriteResult> {
    return this.#run(
      "write mutations",
      options,
      () => this.#prepareWrite(mutations, options?.signal),
    );
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
      return () => this.#collect(graceMs, options.signal);
    });
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      // Calls in flight finish first, so none fails on a closed KV.
      await Promise.allSettled([...this.#inFlight]);
      if (this.#closeKv) {
        try {
          this.#kv.close();
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

  // -------------------------------------------------------------------------
  // Calls

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
    const signal = options?.signal;
    let work: () => Promise<T>;
    try {
      signal?.throwIfAborted();
      work = prepare();
    } catch (error) {
      return Promise.reject(error);
    }
    const promise = (async (): Promise<T> => {
      try {
        return await work();
      } catch (error) {
        if (signal?.aborted && error === signal.reason) throw error;
        throw kvFailure(action, error);
      }
    })();
    this.#inFlight.add(promise);
    const forget = (): void => {
      this.#inFlight.delete(promise);
    };
    promise.then(forget, forget);
    return promise;
  }

  #key(tag: string, ...parts: Deno.KvKeyPart[]): Deno.KvKey {
    return [...this.#prefix, tag, ...parts];
  }

  /** {@linkcode keyBytes} of one of our keys, the prefix's size known. */
  #keyBytes(key: Deno.KvKey): number {
    let bytes = this.#prefixBytes;
    for (let index = this.#prefix.length; index < key.length; index++) {
      bytes += partBytes(key[index]!);
    }
    return bytes;
  }

  // -------------------------------------------------------------------------
  // Reads

  /**
   * Reads items by header key, `undefined` keys being absent. `read` checks
   * a stored value and makes it the item; `index` is its key's position.
   */
  async #getItems<T>(
    keys: readonly (Deno.KvKey | undefined)[],
    read: Reader<T>,
  ): Promise<(Versioned<T> | undefined)[]> {
    const positions: number[] = [];
    const present: Deno.KvKey[] = [];
    keys.forEach((key, index) => {
      if (key === undefined) return;
      positions.push(index);
      present.push(key);
    });
    const entries = await this.#getMany(present);
    // Inline values need no further read: only large ones are awaited.
    let large = false;
    const items = entries.map((entry, n) => {
      if (entry.versionstamp === null) return undefined;
      const index = positions[n]!;
      const envelope = this.#decodeEnvelope(entry);
      if (!Object.hasOwn(envelope, "v")) {
        large = true;
        return this.#materialize(
          entry,
          (value, fresh) => read(value, fresh, index),
        );
      }
      return {
        value: read(envelope.v, envelope, index),
        rev: entry.versionstamp,
      };
    });
    const settled = large ? await Promise.all(items) : items as (
      | Versioned<T>
      | undefined
    )[];
    let next = 0;
    return keys.map((key) => key === undefined ? undefined : settled[next++]);
  }

  /** `getMany()` in batches of KV's 10 keys, all in parallel. */
  async #getMany(
    keys: readonly Deno.KvKey[],
  ): Promise<Deno.KvEntryMaybe<unknown>[]> {
    if (keys.length <= KV_MAX_GET_MANY) {
      if (keys.length === 0) return [];
      return await this.#kv.getMany<unknown[]>(keys as Deno.KvKey[], {
        consistency: "strong",
      });
    }
    const batches: Promise<Deno.KvEntryMaybe<unknown>[]>[] = [];
    for (let start = 0; start < keys.length; start += KV_MAX_GET_MANY) {
      batches.push(
        this.#kv.getMany<unknown[]>(
          keys.slice(start, start + KV_MAX_GET_MANY) as Deno.KvKey[],
          { consistency: "strong" },
        ),
      );
    }
    return (await Promise.all(batches)).flat();
  }

  /**
   * Turns a header entry into the item, reading its blob if it has one. A
   * blob can vanish between reading the header and reading the chunks (a
   * concurrent write replaced the value): then the header is read again.
   * A header that did not change while its chunks stayed incomplete is
   * damaged: chunks are complete before a header refers to them, and are
   * deleted only after it no longer does.
   */
  async #materialize<T>(
    entry: Deno.KvEntryMaybe<unknown>,
    read: (value: unknown, envelope: Envelope) => T,
  ): Promise<Versioned<T> | undefined> {
    for (let attempt = 0; attempt < MAX_READ_ATTEMPTS; attempt++) {
      if (entry.versionstamp === null) return undefined;
      const envelope = this.#decodeEnvelope(entry);
      const value = Object.hasOwn(envelope, "v")
        ? envelope.v
        : await this.#readBlob(envelope, entry.key);
      if (value !== undefined) {
        return { value: read(value, envelope), rev: entry.versionstamp };
      }
      const before = entry.versionstamp;
      entry = await this.#kv.get<unknown>(entry.key, {
        consistency: "strong",
      });
      if (entry.versionstamp === before) {
        throw new StorageError(
          `Cannot read ${
            this.#name(entry.key)
          } as the chunks of its large value are incomplete: current value is blob ${
            describe(envelope.b)
          }`,
        );
      }
    }
    throw new StorageError(
      `Cannot read ${
        this.#name(entry.key)
      } as the chunks of its large value kept vanishing: current value is ${MAX_READ_ATTEMPTS} attempts`,
      { retryable: true },
    );
  }

  /** Reads the blob of a header; `undefined` when a chunk is missing. */
  async #readBlob(
    envelope: Envelope,
    key: Deno.KvKey,
  ): Promise<JsonValue | undefined> {
    const { b: id, n: count, z: size } = envelope;
    if (
      typeof id !== "string" || typeof count !== "number" ||
      typeof size !== "number" || !Number.isSafeInteger(size) || size < 0
    ) {
      throw this.#formatError(key, envelope);
    }
    const bytes = new Uint8Array(size);
    let offset = 0;
    let seen = 0;
    const chunks = this.#kv.list<unknown>({ prefix: this.#key("b", id) }, {
      consistency: "strong",
      batchSize: Math.min(count + 1, KV_MAX_BATCH),
    });
    for await (const chunk of chunks) {
      if (chunk.key.at(-1) !== seen || !(chunk.value instanceof Uint8Array)) {
        return undefined;
      }
      if (offset + chunk.value.length > size) {
        throw this.#formatError(key, envelope);
      }
      bytes.set(chunk.value, offset);
      offset += chunk.value.length;
      seen++;
    }
    if (seen !== count || offset !== size) return undefined;
    return parseStored(
      decoder.decode(bytes),
      () => this.#name(key),
    ) as JsonValue;
  }

  /**
   * Lists a table's records in id order, from their headers. Keys order
   * records by id, except that ids cut at one prefix (see `_kv_keys.ts`)
   * sit together in hash order: such a group is read whole and sorted.
   */
  async #listRecords(
    kind: string,
    after: string | undefined,
    includeDeleted: boolean,
    limit: number,
  ): Promise<Versioned<StoredRecord>[]> {
    const result: Versioned<StoredRecord>[] = [];
    if (limit === 0) return result;
    const prefix = this.#key("r", keyPart(kind, KIND_BUDGET));
    // A cursor in a group starts at the group, whose ids are filtered.
    const afterPart = after === undefined
      ? undefined
      : keyPart(after, ID_BUDGET);
    const start = afterPart === undefined
      ? undefined
      : hashedGroup(afterPart, ID_BUDGET) ?? afterPart;
    const source = this.#kv.list<unknown>(
      start === undefined ? { prefix } : { prefix, start: [...prefix, start] },
      { consistency: "strong", batchSize: batchSize(limit) },
    )[Symbol.asyncIterator]();
    // Adds a listed record unless it is the cursor (or a group member
    // before it); whether the page is full.
    const take = (item: Versioned<StoredRecord> | undefined): boolean => {
      if (item === undefined) return false;
      if (after !== undefined && !(item.value.id > after)) return false;
      result.push(item);
      return result.length >= limit;
    };
    try {
      // Read ahead only to find where a group ends: a page that ends on an
      // entry does not fetch the next batch.
      let ahead: IteratorResult<Deno.KvEntry<unknown>> | undefined;
      for (;;) {
        const next = ahead ?? await source.next();
        ahead = undefined;
        if (next.done) break;
        const entry = next.value;
        const part = entry.key.at(-1);
        const group = part instanceof Uint8Array
          ? hashedGroup(part, ID_BUDGET)
          : undefined;
        if (group === undefined) {
          if (take(await this.#listedRecord(entry, kind, includeDeleted))) {
            break;
          }
          continue;
        }
        const members = [entry];
        for (;;) {
          ahead = await source.next();
          if (ahead.done || !startsWith(ahead.value.key.at(-1), group)) break;
          members.push(ahead.value);
        }
        const items = await Promise.all(
          members.map((member) =>
            this.#listedRecord(member, kind, includeDeleted)
          ),
        );
        const sorted = items.filter((item) => item !== undefined)
          .sort((a, b) => compareKeys(a.value.id, b.value.id));
        if (sorted.some(take)) break;
      }
    } finally {
      await source.return?.();
    }
    return result;
  }

  /**
   * A listed record header as the item, checked against its key;
   * `undefined` when it is deleted and not wanted, or vanished.
   */
  async #listedRecord(
    entry: Deno.KvEntry<unknown>,
    kind: string,
    includeDeleted: boolean,
  ): Promise<Versioned<StoredRecord> | undefined> {
    const item = () => this.#name(entry.key);
    const part = entry.key.at(-1) as Uint8Array;
    const read = (value: unknown, envelope: Envelope): StoredRecord => {
      const record = recordOf(value, envelope, item, { kind });
      if (!partMatches(part, record.id, ID_BUDGET)) {
        throw misplaced(item, "id", record.id);
      }
      return record;
    };
    const envelope = this.#decodeEnvelope(entry);
    if (Object.hasOwn(envelope, "v")) {
      const value = read(envelope.v, envelope);
      if (!includeDeleted && value.deleted) return undefined;
      return { value, rev: entry.versionstamp };
    }
    // A large record says whether it is deleted without its chunks.
    if (!includeDeleted && envelope.d === true) return undefined;
    const large = await this.#materialize(entry, read);
    if (large === undefined || (!includeDeleted && large.value.deleted)) {
      return undefined;
    }
    return large;
  }

  /**
   * Lists ops in op-id order: from the headers, skipping other states, when
   * pending ops are asked (they have no by-state entries), else by merging
   * the state index's ranges.
   */
  async #listOpsInOrder(
    states: readonly OpState[],
    filter: OpFilter,
  ): Promise<Versioned<StoredOp>[]> {
    const max = this.capabilities.maxKeyLength;
    const cursor = filter.after === undefined
      ? undefined
      : encodeText(filter.after.slice(0, max));
    const prefixes = states.includes(UNINDEXED_STATE)
      ? [this.#key("o")]
      : states.map((state) => this.#key("s", state));
    const sources = prefixes.map((prefix) =>
      this.#kv.list<unknown>(
        cursor === undefined
          ? { prefix }
          : { prefix, start: [...prefix, cursor] },
        { consistency: "strong", batchSize: batchSize(filter.limit) },
      )[Symbol.asyncIterator]()
    );
    const result: Versioned<StoredOp>[] = [];
    const next = (index: number) => this.#nextOpEntry(sources[index]!, cursor);
    try {
      const heads = await Promise.all(sources.map((_, index) => next(index)));
      for (;;) {
        let best = -1;
        for (let index = 0; index < heads.length; index++) {
          const head = heads[index];
          if (head === undefined) continue;
          if (best < 0 || head.op.opId < heads[best]!.op.opId) best = index;
        }
        if (best < 0) break;
        const head = heads[best]!;
        heads[best] = await next(best);
        // Before a large op's chunks are read: its header has its ids and
        // state.
        if (!matches(filter, head.op)) continue;
        const item = head.large
          ? await this.#materializeOp(head.entry, head.op.opId)
          : { value: head.op, rev: head.entry.versionstamp };
        if (item === undefined || !matches(filter, item.value)) continue;
        result.push(item);
        if (result.length >= filter.limit) break;
      }
    } finally {
      await Promise.all(sources.map((source) => source.return?.()));
    }
    return result;
  }

  /**
   * The next entry of a listing of op headers (or by-state copies of them),
   * skipping the one at the cursor, checked against its key.
   */
  async #nextOpEntry(
    source: AsyncIterator<Deno.KvEntry<unknown>>,
    cursor: Uint8Array | undefined,
  ): Promise<OpEntry | undefined> {
    for (;;) {
      const next = await source.next();
      if (next.done) return undefined;
      const entry = next.value;
      const part = entry.key.at(-1);
      if (cursor !== undefined && sameBytes(part, cursor)) continue;
      if (!(part instanceof Uint8Array)) {
        throw this.#formatError(entry.key, part);
      }
      const item = () => this.#name(entry.key);
      const envelope = this.#decodeEnvelope(entry);
      if (Object.hasOwn(envelope, "v")) {
        const op = storedOp(envelope.v, item);
        if (!partMatches(part, op.opId, Infinity)) {
          throw misplaced(item, "opId", op.opId);
        }
        return { entry, op, large: false };
      }
      const { k: kind, i: id, t: state } = envelope;
      if (
        typeof kind !== "string" || typeof id !== "string" ||
        !isOpState(state)
      ) {
        throw this.#formatError(entry.key, envelope);
      }
      const op = { opId: decodeText(part), kind, id, state } as StoredOp;
      return { entry, op, large: true };
    }
  }

  /**
   * A large op listed from the headers or the state index. Its blob may
   * vanish under a concurrent write: then its header is read as it is now.
   */
  async #materializeOp(
    entry: Deno.KvEntry<unknown>,
    opId: string,
  ): Promise<Versioned<StoredOp> | undefined> {
    const read = (value: unknown): StoredOp =>
      storedOp(value, () => `op ${shortText(opId)}`, opId);
    const value = await this.#readBlob(
      this.#decodeEnvelope(entry),
      entry.key,
    );
    if (value !== undefined) {
      return { value: read(value), rev: entry.versionstamp };
    }
    const fresh = await this.#kv.get<unknown>(
      this.#key("o", entry.key.at(-1)!),
      { consistency: "strong" },
    );
    return await this.#materialize(fresh, read);
  }

  /** Lists one record's ops (every table's when `kinds` is absent). */
  async #listRecordOps(
    id: string,
    filter: OpFilter,
  ): Promise<Versioned<StoredOp>[]> {
    const candidates: string[] = [];
    const entries = this.#kv.list<unknown>(
      { prefix: this.#key("i", hashText(id)) },
      { consistency: "strong", batchSize: KV_MAX_BATCH },
    );
    for await (const entry of entries) {
      const indexed = this.#decodeJson(entry);
      if (
        !Array.isArray(indexed) || indexed.length !== 4 ||
        !indexed.every((part) => typeof part === "string") ||
        !isOpState(indexed[3])
      ) {
        throw this.#formatError(entry.key, indexed);
      }
      const [opId, kind, recordId, state] = indexed as [
        string,
        string,
        string,
        OpState,
      ];
      if (matches(filter, { opId, kind, id: recordId, state })) {
        candidates.push(opId);
      }
    }
    candidates.sort(compareKeys);
    const result: Versioned<StoredOp>[] = [];
    const max = this.capabilities.maxKeyLength;
    for (let start = 0; start < candidates.length;) {
      // Fetch about as many as still needed: the index may be a step behind
      // a concurrent write, so some may no longer match.
      const take = Math.min(
        candidates.length - start,
        Math.max(filter.limit - result.length, 1),
        KV_MAX_BATCH,
      );
      const batch = candidates.slice(start, start + take);
      start += take;
      const ops = await this.#getItems(
        batch.map((opId) =>
          opId.length > max ? undefined : this.#key("o", encodeText(opId))
        ),
        (value, _envelope, index) => {
          const opId = batch[index]!;
          return storedOp(value, () => `op ${shortText(opId)}`, opId);
        },
      );
      for (const op of ops) {
        if (op === undefined || !matches(filter, op.value)) continue;
        result.push(op);
        if (result.length >= filter.limit) return result;
      }
    }
    return result;
  }

  // -------------------------------------------------------------------------
  // Decoding

  /** A header's JSON, checked to be an object. */
  #decodeEnvelope(entry: Deno.KvEntry<unknown>): Envelope {
    const envelope = this.#decodeJson(entry);
    if (typeof envelope !== "object" || envelope === null) {
      throw this.#formatError(entry.key, envelope);
    }
    return envelope as Envelope;
  }

  /** An entry's JSON value. */
  #decodeJson(entry: Deno.KvEntry<unknown>): unknown {
    if (!(entry.value instanceof Uint8Array)) {
      throw this.#formatError(entry.key, entry.value);
    }
    return parseStored(
      decoder.decode(entry.value),
      () => this.#name(entry.key),
    );
  }

  #decodeCount(entry: Deno.KvEntryMaybe<unknown>): Count {
    if (entry.versionstamp === null) return { value: 0, versionstamp: null };
    const value = this.#decodeJson(entry);
    if (typeof value !== "number") throw this.#formatError(entry.key, value);
    return { value, versionstamp: entry.versionstamp };
  }

  #formatError(key: Deno.KvKey, value: unknown): StorageError {
    return new StorageError(
      `Cannot read ${
        this.#name(key)
      } as it is not in this storage's format: current value is ${
        describe(value)
      }`,
    );
  }

  /** Names the item under a key of ours, for a message. */
  #name(key: Deno.KvKey): string {
    const [tag, first, second] = key.slice(this.#prefix.length);
    switch (tag) {
      case "r":
        return `record ${partText(second, ID_BUDGET)} of kind ${
          partText(first, KIND_BUDGET)
        }`;
      case "o":
        return `op ${partText(first, Infinity)}`;
      case "s":
        return `the ${String(first)} entry of op ${partText(second, Infinity)}`;
      case "i":
        return `the ops-by-record entry ${String(first)}/${String(second)}`;
      case "m":
        return `meta entry ${partText(first, Infinity)}`;
      case "x":
        return "the count of large values";
      case "f":
        return "the layout version";
      default:
        return `KV entry ${Deno.inspect(key)}`;
    }
  }

  // -------------------------------------------------------------------------
  // Writes

  /**
   * Validates a write with the checks every adapter shares (contract
   * clause 5) and returns the work that commits it.
   */
  #prepareWrite(
    mutations: readonly Mutation[],
    signal: AbortSignal | undefined,
  ): () => Promise<WriteResult> {
    // Validating everything first keeps the write all-or-nothing: nothing
    // below can fail halfway through. The values are only checked, not
    // copied: #group() encodes their JSON before this returns.
    const plan = checkMutations(mutations, this.capabilities, {
      checkBytes: false,
    }).map(planOf);
    // Measured from the JSON just encoded rather than by serialising the
    // whole write again.
    checkWriteBytes(
      mutations,
      this.capabilities.maxWriteBytes,
      (index) => plan[index]!.jsonBytes,
    );
    if (plan.length === 0) return () => Promise.resolve({ ok: true, revs: [] });
    const grouped = this.#group(plan);
    // Expects that contradict each other, or a revision KV never issued,
    // cannot hold whatever the store holds.
    if (grouped === undefined) return () => Promise.resolve({ ok: false });
    return () => this.#commitWrite(plan, grouped, signal);
  }

  /**
   * Commits a validated write as one atomic operation, after reading what
   * it must and pre-writing its large values; tries again while only our
   * own checks fail (a concurrent writer changed an item we read for its
   * index entries or blob, never one whose expect the caller gave).
   */
  async #commitWrite(
    plan: readonly Planned[],
    grouped: { items: Item[]; itemOf: Map<string, Item> },
    signal: AbortSignal | undefined,
  ): Promise<WriteResult> {
    const { items, itemOf } = grouped;
    this.#chooseLarge(items);
    let prewrite: Prewrite | undefined;
    let committed = false;
    try {
      for (let attempt = 1;; attempt++) {
        signal?.throwIfAborted();
        // Reading refreshes the count of large values; when it turns out
        // non-zero, the records and meta entries skipped so far are read too.
        for (;;) {
          const toRead = items.filter((item) =>
            item.read === undefined && this.#needsRead(item)
          );
          if (toRead.length === 0) break;
          const entries = await this.#getMany([
            ...toRead.map((item) => item.headerKey),
            this.#countKey,
          ]);
          this.#count = this.#decodeCount(entries.at(-1)!);
          for (const [index, item] of toRead.entries()) {
            const entry = entries[index]!;
            if (
              typeof item.expect === "string" &&
              entry.versionstamp !== item.expect
            ) {
              return { ok: false };
            }
            item.read = {
              versionstamp: entry.versionstamp,
              envelope: entry.versionstamp === null
                ? undefined
                : this.#decodeEnvelope(entry),
            };
          }
        }
        if (prewrite === undefined && items.some((item) => item.large)) {
          prewrite = {
            ticketKey: this.#key("t", crypto.randomUUID()),
            ticketVersionstamp: null,
            blobs: new Map(),
          };
          await this.#prewrite(prewrite, items);
        }
        const atomic = this.#build(items, prewrite);
        signal?.throwIfAborted();
        let result: Deno.KvCommitResult | Deno.KvCommitError;
        try {
          result = await commitRetrying(atomic.operation);
        } catch (error) {
          // The outcome is unknown (a remote KV may have committed): the
          // pre-written blobs stay for vacuum(), which only takes them when
          // no header references them.
          prewrite = undefined;
          throw error;
        }
        if (result.ok) {
          committed = true;
          if (atomic.delta !== 0) {
            this.#count = {
              value: this.#count.value + atomic.delta,
              versionstamp: result.versionstamp,
            };
          }
          if (atomic.garbage !== undefined) {
            // The write committed whatever happens here: a failure leaves
            // the garbage ticket to vacuum().
            await this.#discardQuietly(
              atomic.garbage.key,
              atomic.garbage.blobs,
            );
          }
          return {
            ok: true,
            revs: plan.map((planned) =>
              itemOf.get(planned.identity)!.value === undefined
                ? null
                : result.versionstamp
            ),
          };
        }
        // A check failed: the caller's expect, or only one of ours.
        const verdict = await this.#verify(items, prewrite);
        if (!verdict.expectsHold) return { ok: false };
        if (!verdict.ticketHolds) {
          // vacuum() took the pre-written blobs: write them again.
          prewrite = undefined;
        }
        if (attempt >= MAX_ATTEMPTS) {
          throw new StorageError(
            `Cannot write mutations as the store kept changing concurrently: current value is ${attempt} attempts`,
            { retryable: true },
          );
        }
        for (const item of items) item.read = undefined;
        await delay(Math.random() * Math.min(2 ** attempt, 50));
      }
    } finally {
      if (!committed && prewrite !== undefined) {
        await this.#discardQuietly(prewrite.ticketKey, [
          ...prewrite.blobs.values(),
        ]);
      }
    }
  }

  /**
   * Groups mutations by item: the last mutation of an item wins, and its
   * expects must agree. `undefined` when they cannot all hold.
   */
  #group(
    plan: readonly Planned[],
  ):
    | { items: Item[]; itemOf: Map<string, Item> }
    | undefined {
    const last = new Map<string, Planned>();
    const expects = new Map<string, Expect>();
    for (const planned of plan) {
      last.set(planned.identity, planned);
      if (planned.expect === undefined) continue;
      if (
        typeof planned.expect === "string" &&
        !VERSIONSTAMP.test(planned.expect)
      ) {
        return undefined;
      }
      const seen = expects.get(planned.identity);
      if (expects.has(planned.identity) && seen !== planned.expect) {
        return undefined;
      }
      expects.set(planned.identity, planned.expect);
    }
    const items: Item[] = [];
    const itemOf = new Map<string, Item>();
    for (const [identity, planned] of last) {
      const item: Item = {
        space: planned.space,
        headerKey: planned.space === "record"
          ? this.#key(
            "r",
            keyPart(planned.kind, KIND_BUDGET),
            keyPart(planned.id, ID_BUDGET),
          )
          : planned.space === "op"
          ? this.#key("o", encodeText(planned.opId))
          : this.#key("m", encodeText(planned.key)),
        value: planned.value,
        bytes: planned.bytes,
        shared: planned.shared,
        expect: expects.get(identity),
        large: false,
        freshSlot: planned.space === "op" ? randomSlot() : 0,
        read: undefined,
      };
      items.push(item);
      itemOf.set(identity, item);
    }
    return { items, itemOf };
  }

  /**
   * Decides which values go to blobs: those too big for one KV value, then
   * the biggest until the atomic operation fits KV's 800 KiB. Estimated
   * once, at the worst case, so that retries reuse the pre-written blobs.
   */
  #chooseLarge(items: readonly Item[]): void {
    const prefix = this.#prefixBytes;
    // Keys count twice (check and mutation), the ticket's and count's too.
    let fixed = 2 * (4 * prefix + 4 * TAG + 2 * UUID) + ATOMIC_SLACK_BYTES;
    const inline: { item: Item; weight: number }[] = [];
    for (const item of items) {
      const keyBytes = this.#worstKeyBytes(item);
      fixed += 2 * keyBytes;
      if (item.bytes === undefined) continue;
      // A quarantined or parked op's header is stored twice (header and
      // state index), and an op's record index entry holds its ids; a
      // blob's header is small.
      const copies = item.space === "op" &&
          (item.value as StoredOp).state !== UNINDEXED_STATE
        ? 2
        : 1;
      if (item.space === "op") {
        // JSON takes at most 6 bytes per code unit (`\u0000`).
        const op = item.value as StoredOp;
        fixed += 6 * (op.opId.length + op.kind.length + op.id.length) + 32;
      }
      fixed += copies * 256;
      if (item.bytes.length + 64 > KV_MAX_VALUE_BYTES) {
        item.large = true;
      } else {
        inline.push({ item, weight: copies * (item.bytes.length + 64) });
      }
    }
    inline.sort((a, b) => b.weight - a.weight);
    let total = fixed + inline.reduce((sum, entry) => sum + entry.weight, 0);
    for (const { item, weight } of inline) {
      if (total <= KV_MAX_ATOMIC_BYTES) break;
      item.large = true;
      total -= weight;
    }
  }

  /** An item's keys in the final atomic operation, at worst. */
  #worstKeyBytes(item: Item): number {
    const header = this.#keyBytes(item.headerKey);
    if (item.space !== "op") return 2 * header;
    const stateKey = header + STATE;
    const recordIndexKey = this.#prefixBytes + TAG + 2 * NUMBER;
    return 2 * header + 2 * stateKey + 2 * recordIndexKey;
  }

  /**
   * Whether a write must read an item first: an op, to update its index
   * entries; a record or meta entry, to find the blob it replaces while the
   * store holds large values. An item that must be absent has nothing to
   * read.
   */
  #needsRead(item: Item): boolean {
    if (item.expect === null) return false;
    return item.space === "op" || this.#count.value > 0;
  }

  /** Writes the blobs' chunks and their pending ticket. */
  async #prewrite(prewrite: Prewrite, items: readonly Item[]): Promise<void> {
    const chunks: { key: Deno.KvKey; value: Uint8Array }[] = [];
    for (const item of items) {
      if (!item.large || item.bytes === undefined) continue;
      const id = crypto.randomUUID();
      const count = Math.ceil(item.bytes.length / KV_MAX_VALUE_BYTES);
      prewrite.blobs.set(item, { id, n: count });
      for (let index = 0; index < count; index++) {
        chunks.push({
          key: this.#key("b", id, index),
          value: item.bytes.subarray(
            index * KV_MAX_VALUE_BYTES,
            (index + 1) * KV_MAX_VALUE_BYTES,
          ),
        });
      }
    }
    const ticket: Ticket = {
      state: "pending",
      at: Date.now(),
      blobs: [...prewrite.blobs.values()],
    };
    // The ticket goes first, so that every chunk a crash leaves is listed.
    let operation = this.#kv.atomic()
      .check({ key: prewrite.ticketKey, versionstamp: null })
      .set(prewrite.ticketKey, encodeJson(ticket));
    let bytes = 2 * this.#keyBytes(prewrite.ticketKey) + ATOMIC_SLACK_BYTES;
    let keys = this.#keyBytes(prewrite.ticketKey);
    let count = 1;
    let first = true;
    const flush = async (): Promise<void> => {
      const result = await commitRetrying(operation);
      if (!result.ok) {
        throw new StorageError(
          "Cannot write a large value as its fresh ticket already exists",
        );
      }
      if (first) prewrite.ticketVersionstamp = result.versionstamp;
      first = false;
      operation = this.#kv.atomic();
      bytes = ATOMIC_SLACK_BYTES;
      keys = 0;
      count = 0;
    };
    for (const chunk of chunks) {
      const size = this.#keyBytes(chunk.key);
      if (
        count + 1 > KV_MAX_MUTATIONS ||
        keys + size > KV_MAX_TOTAL_KEY_BYTES ||
        bytes + 2 * size + chunk.value.length > KV_MAX_ATOMIC_BYTES
      ) {
        await flush();
      }
      operation.set(chunk.key, chunk.value);
      bytes += 2 * size + chunk.value.length;
      keys += size;
      count++;
    }
    await flush();
  }

  /** Builds the write's one atomic operation. */
  #build(items: readonly Item[], prewrite: Prewrite | undefined): {
    operation: Deno.AtomicOperation;
    delta: number;
    garbage: { key: Deno.KvKey; blobs: BlobRef[] } | undefined;
  } {
    const operation = this.#kv.atomic();
    const garbage: BlobRef[] = [];
    let delta = 0;
    let reliesOnCount = false;
    let checks = 0;
    let mutations = 0;
    let keys = 0;
    let bytes = 0;
    // Counted as KV counts them: a check's key once, a mutation's twice.
    const check = (key: Deno.KvKey, versionstamp: string | null): void => {
      operation.check({ key, versionstamp });
      const size = this.#keyBytes(key);
      checks++;
      keys += size;
      bytes += size;
    };
    const set = (key: Deno.KvKey, value: Uint8Array): void => {
      operation.set(key, value);
      const size = this.#keyBytes(key);
      mutations++;
      keys += size;
      bytes += 2 * size + value.length;
    };
    const remove = (key: Deno.KvKey): void => {
      operation.delete(key);
      const size = this.#keyBytes(key);
      mutations++;
      keys += size;
      bytes += 2 * size;
    };
    for (const item of items) {
      const old = item.read?.envelope;
      if (item.expect === null) check(item.headerKey, null);
      else if (typeof item.expect === "string") {
        check(item.headerKey, item.expect);
      } else if (item.read !== undefined) {
        check(item.headerKey, item.read.versionstamp);
      }
      if (old !== undefined && typeof old.b === "string") {
        garbage.push({ id: old.b, n: old.n ?? 0 });
      }
      const blob = item.large ? prewrite?.blobs.get(item) : undefined;
      if (item.space === "op") {
        this.#buildOp(item, old, blob, set, remove);
        continue;
      }
      if (item.read === undefined && item.expect !== null) reliesOnCount = true;
      delta += (blob === undefined ? 0 : 1) -
        (old !== undefined && typeof old.b === "string" ? 1 : 0);
      if (item.value === undefined) {
        remove(item.headerKey);
      } else if (blob === undefined) {
        set(item.headerKey, envelopeOf(item.bytes!, undefined, item.shared));
      } else {
        const record = item.space === "record"
          ? item.value as StoredRecord
          : undefined;
        set(
          item.headerKey,
          encodeJson({
            b: blob.id,
            n: blob.n,
            z: item.bytes!.length,
            ...(record === undefined ? {} : { d: record.deleted }),
            ...(item.shared ? { a: 1 } : {}),
          }),
        );
      }
    }
    if (reliesOnCount || delta !== 0) {
      check(this.#countKey, this.#count.versionstamp);
    }
    if (delta !== 0) set(this.#countKey, encodeJson(this.#count.value + delta));
    let garbageTicket: { key: Deno.KvKey; blobs: BlobRef[] } | undefined;
    if (prewrite !== undefined) {
      // The ticket must still be pending: vacuum() may have taken it.
      check(prewrite.ticketKey, prewrite.ticketVersionstamp);
      if (garbage.length > 0) {
        garbageTicket = { key: prewrite.ticketKey, blobs: garbage };
      } else remove(prewrite.ticketKey);
    } else if (garbage.length > 0) {
      garbageTicket = {
        key: this.#key("t", crypto.randomUUID()),
        blobs: garbage,
      };
    }
    if (garbageTicket !== undefined) {
      const ticket: Ticket = {
        state: "garbage",
        at: Date.now(),
        blobs: garbageTicket.blobs,
      };
      set(garbageTicket.key, encodeJson(ticket));
    }
    // The capabilities guarantee these; a failure here is a bug, reported
    // before KV would refuse the operation.
    if (
      checks > KV_MAX_CHECKS || mutations > KV_MAX_MUTATIONS ||
      keys > KV_MAX_TOTAL_KEY_BYTES || bytes > KV_MAX_ATOMIC_BYTES
    ) {
      throw new StorageError(
        `Cannot write mutations as they exceed one KV atomic operation: current value is ${checks} checks, ${mutations} mutations, ${keys} key bytes, ${bytes} bytes`,
      );
    }
    return { operation, delta, garbage: garbageTicket };
  }

  /** Adds an op's header and index entries to the atomic operation. */
  #buildOp(
    item: Item,
    old: Envelope | undefined,
    blob: BlobRef | undefined,
    set: (key: Deno.KvKey, value: Uint8Array) => void,
    remove: (key: Deno.KvKey) => void,
  ): void {
    const opPart = item.headerKey.at(-1)!;
    let oldState: OpState | undefined;
    let oldBucket: number | undefined;
    let slot = item.freshSlot;
    if (old !== undefined) {
      const oldOp = Object.hasOwn(old, "v")
        ? old.v as unknown as StoredOp
        : { kind: old.k, id: old.i, state: old.t } as StoredOp;
      // The old index entries are found from these: a header that lost them
      // cannot be replaced without leaving stale entries.
      if (
        typeof old.s !== "number" || typeof oldOp !== "object" ||
        oldOp === null || typeof oldOp.id !== "string" ||
        !isOpState(oldOp.state)
      ) {
        throw this.#formatError(item.headerKey, old);
      }
      slot = old.s;
      oldState = oldOp.state;
      oldBucket = hashText(oldOp.id);
    }
    if (item.value === undefined) {
      remove(item.headerKey);
      if (oldState !== undefined && oldState !== UNINDEXED_STATE) {
        remove(this.#key("s", oldState, opPart));
      }
      if (oldBucket !== undefined) remove(this.#key("i", oldBucket, slot));
      return;
    }
    const op = item.value as StoredOp;
    const header = blob === undefined
      ? envelopeOf(item.bytes!, slot, false)
      : encodeJson({
        s: slot,
        b: blob.id,
        n: blob.n,
        z: item.bytes!.length,
        k: op.kind,
        i: op.id,
        t: op.state,
      });
    set(item.headerKey, header);
    if (
      oldState !== undefined && oldState !== op.state &&
      oldState !== UNINDEXED_STATE
    ) {
      remove(this.#key("s", oldState, opPart));
    }
    if (op.state !== UNINDEXED_STATE) {
      set(this.#key("s", op.state, opPart), header);
    }
    const bucket = hashText(op.id);
    if (oldBucket !== undefined && oldBucket !== bucket) {
      remove(this.#key("i", oldBucket, slot));
    }
    set(
      this.#key("i", bucket, slot),
      encodeJson([op.opId, op.kind, op.id, op.state]),
    );
  }

  /**
   * After a failed commit: whether the caller's expects still hold (then
   * only an internal check failed and the write is tried again), and
   * whether the pre-written blobs' ticket is still pending.
   */
  async #verify(
    items: readonly Item[],
    prewrite: Prewrite | undefined,
  ): Promise<{ expectsHold: boolean; ticketHolds: boolean }> {
    const expected = items.filter((item) => item.expect !== undefined);
    const keys = [...expected.map((item) => item.headerKey), this.#countKey];
    if (prewrite !== undefined) keys.push(prewrite.ticketKey);
    const entries = await this.#getMany(keys);
    this.#count = this.#decodeCount(entries[expected.length]!);
    const expectsHold = expected.every((item, index) =>
      entries[index]!.versionstamp === item.expect
    );
    const ticketHolds = prewrite === undefined ||
      entries.at(-1)!.versionstamp === prewrite.ticketVersionstamp;
    return { expectsHold, ticketHolds };
  }

  // -------------------------------------------------------------------------
  // Garbage

  /** Deletes blobs and then the ticket that lists them. */
  async #discard(
    ticketKey: Deno.KvKey,
    blobs: readonly BlobRef[],
  ): Promise<void> {
    const keys: Deno.KvKey[] = [];
    for (const blob of blobs) {
      for (let index = 0; index < blob.n; index++) {
        keys.push(this.#key("b", blob.id, index));
      }
    }
    keys.push(ticketKey);
    await this.#deleteAll(keys);
  }

  /**
   * Deletes the by-state entries of pending ops that earlier versions wrote
   * (this one lists pending ops from their headers). Left alone, they
   * would only take space: nothing reads them.
   */
  async #dropPendingIndex(): Promise<void> {
    const prefix = this.#key("s", UNINDEXED_STATE);
    for (;;) {
      const keys: Deno.KvKey[] = [];
      const entries = this.#kv.list<unknown>({ prefix }, {
        consistency: "strong",
        limit: KV_MAX_BATCH,
        batchSize: KV_MAX_BATCH,
      });
      for await (const entry of entries) keys.push(entry.key);
      if (keys.length === 0) return;
      await this.#deleteAll(keys);
    }
  }

  /**
   * Brings a store that an earlier version wrote to this layout: moves
   * every record whose key would now differ (see the module documentation)
   * to its new key, then writes the layout's version, which later opens
   * find. Each move checks that the version is still absent, so that a
   * handle that opened meanwhile, and already writes in this layout, never
   * has a record moved under it.
   */
  async #upgradeLayout(layout: Deno.KvEntryMaybe<unknown>): Promise<void> {
    if (layout.versionstamp !== null) {
      const version = this.#decodeJson(layout);
      if (typeof version !== "number") {
        throw this.#formatError(layout.key, version);
      }
      if (version > LAYOUT_VERSION) {
        throw new StorageError(
          `Cannot open KV storage as a later version of this library wrote it: current value is layout ${version}`,
        );
      }
      return;
    }
    const unchanged = { key: this.#layoutKey, versionstamp: null };
    const records = this.#kv.list<unknown>({ prefix: this.#key("r") }, {
      consistency: "strong",
      batchSize: KV_MAX_BATCH,
    });
    for await (const record of records) {
      const [kindPart, idPart] = record.key.slice(this.#prefix.length + 1);
      if (!(kindPart instanceof Uint8Array && idPart instanceof Uint8Array)) {
        continue;
      }
      const key = this.#key(
        "r",
        keyPart(decodeText(kindPart), KIND_BUDGET),
        keyPart(decodeText(idPart), ID_BUDGET),
      );
      if (sameBytes(key.at(-2), kindPart) && sameBytes(key.at(-1), idPart)) {
        continue;
      }
      const moved = await commitRetrying(
        this.#kv.atomic()
          .check(unchanged, record, { key, versionstamp: null })
          .delete(record.key)
          .set(key, record.value),
      );
      if (moved.ok) continue;
      const now = await this.#kv.get(this.#layoutKey, {
        consistency: "strong",
      });
      // Another handle finished the upgrade; otherwise it moved this one.
      if (now.versionstamp !== null) return;
    }
    await commitRetrying(
      this.#kv.atomic().check(unchanged).set(
        this.#layoutKey,
        encodeJson(LAYOUT_VERSION),
      ),
    );
  }

  /** Deletes keys in as few atomic operations as KV's limits allow. */
  async #deleteAll(keys: readonly Deno.KvKey[]): Promise<void> {
    let operation = this.#kv.atomic();
    let count = 0;
    let size = 0;
    for (const key of keys) {
      const bytes = this.#keyBytes(key);
      if (
        count + 1 > KV_MAX_MUTATIONS || size + bytes > KV_MAX_TOTAL_KEY_BYTES
      ) {
        await commitRetrying(operation);
        operation = this.#kv.atomic();
        count = 0;
        size = 0;
      }
      operation.delete(key);
      count++;
      size += bytes;
    }
    await commitRetrying(operation);
  }

  /** {@linkcode DenoKvStorage.#discard}, leaving failures to vacuum(). */
  async #discardQuietly(
    ticketKey: Deno.KvKey,
    blobs: readonly BlobRef[],
  ): Promise<void> {
    try {
      await this.#discard(ticketKey, blobs);
    } catch {
      // The ticket still lists the blobs: vacuum() deletes them later.
    }
  }

  /** Collects garbage tickets and abandoned pending ones. */
  async #collect(
    graceMs: number,
    signal: AbortSignal | undefined,
  ): Promise<number> {
    let blobs = 0;
    const now = Date.now();
    const tickets = this.#kv.list<unknown>({ prefix: this.#key("t") }, {
      consistency: "strong",
    });
    for await (const entry of tickets) {
      signal?.throwIfAborted();
      const ticket = ticketOf(entry.value);
      // A ticket damaged outside this storage lists nothing it can trust:
      // it is left alone rather than keep the store from opening.
      if (ticket === undefined) continue;
      if (ticket.state === "pending") {
        if (now - ticket.at < graceMs) continue;
        // Marking it as garbage fails the writer's check of its ticket, so
        // no header can start referencing the blobs deleted below.
        const claimed = await commitRetrying(
          this.#kv.atomic()
            .check(entry)
            .set(entry.key, encodeJson({ ...ticket, state: "garbage" })),
        );
        if (!claimed.ok) continue;
      }
      await this.#discard(entry.key, ticket.blobs);
      blobs += ticket.blobs.length;
    }
    return blobs;
  }
}

/** What {@linkcode DenoKvStorage.listOps} keeps. */
interface OpFilter {
  readonly after: string | undefined;
  readonly id: string | undefined;
  readonly states: ReadonlySet<string> | undefined;
  readonly kinds: ReadonlySet<string> | undefined;
  readonly limit: number;
}

function matches(
  filter: OpFilter,
  op: Pick<StoredOp, "opId" | "kind" | "id" | "state">,
): boolean {
  return (filter.id === undefined || op.id === filter.id) &&
    (filter.kinds === undefined || filter.kinds.has(op.kind)) &&
    (filter.states === undefined || filter.states.has(op.state)) &&
    (filter.after === undefined || op.opId > filter.after);
}

/** A listed op header with what merging and filtering need. */
interface OpEntry {
  readonly entry: Deno.KvEntry<unknown>;
  /** The op, or for a large op its id, kind, id and state only. */
  readonly op: StoredOp;
  readonly large: boolean;
}

function batchSize(limit: number): number {
  // One more than asked: the entry at the cursor itself is skipped.
  return limit === Infinity ? 500 : Math.min(limit + 1, KV_MAX_BATCH);
}

/** How often a commit is tried while SQLite reports the file locked. */
const MAX_LOCKED_ATTEMPTS = 50;

/**
 * Commits an atomic operation, trying again while SQLite reports the file
 * locked: two handles on one file (in one process or two) make KV's SQLite
 * fail a commit with "database is locked" instead of waiting, and such a
 * commit wrote nothing.
 */
async function commitRetrying(
  operation: Deno.AtomicOperation,
): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
  for (let attempt = 1;; attempt++) {
    try {
      return await operation.commit();
    } catch (error) {
      if (!isLocked(error) || attempt >= MAX_LOCKED_ATTEMPTS) throw error;
      await delay(Math.random() * Math.min(2 ** attempt, 20));
    }
  }
}

function isLocked(error: unknown): boolean {
  return error instanceof Error &&
    /database is (locked|busy)/.test(error.message);
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Our own errors as they are; anything else is KV's failure. */
function kvFailure(action: string, error: unknown): SyncError {
  if (error instanceof SyncError) return error;
  return new StorageError(
    `Cannot ${action} as Deno KV failed: current value is ${
      error instanceof Error
        ? `${error.name}: ${error.message}`
        : describe(error)
    }`,
    { cause: error, retryable: isLocked(error) },
  );
}

// ---------------------------------------------------------------------------
// Values

function encodeJson(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

/** A ticket's value, or `undefined` when it is not one. */
function ticketOf(value: unknown): Ticket | undefined {
  if (!(value instanceof Uint8Array)) return undefined;
  let ticket: Partial<Ticket>;
  try {
    ticket = JSON.parse(decoder.decode(value));
  } catch {
    return undefined;
  }
  const valid = typeof ticket === "object" && ticket !== null &&
    (ticket.state === "pending" || ticket.state === "garbage") &&
    typeof ticket.at === "number" && Array.isArray(ticket.blobs) &&
    ticket.blobs.every((blob: Partial<BlobRef>) =>
      typeof blob === "object" && blob !== null &&
      typeof blob.id === "string" && Number.isSafeInteger(blob.n)
    );
  return valid ? ticket as Ticket : undefined;
}

const RECORD_HEAD = encoder.encode('{"v":');
const SHARED_HEAD = encoder.encode('{"a":1,"v":');

/**
 * An inline header: `{"v": value}`, with an op's slot or a record's
 * shared-base flag first.
 */
function envelopeOf(
  json: Uint8Array,
  slot: number | undefined,
  shared: boolean,
): Uint8Array {
  const head = slot !== undefined
    ? encoder.encode(`{"s":${slot},"v":`)
    : shared
    ? SHARED_HEAD
    : RECORD_HEAD;
  const out = new Uint8Array(head.length + json.length + 1);
  out.set(head);
  out.set(json, head.length);
  out[out.length - 1] = 0x7d; // "}"
  return out;
}

/** Checks a stored value and makes it an item (see `#getItems`). */
type Reader<T> = (value: unknown, envelope: Envelope, index: number) => T;

/**
 * A stored record, checked, with its base's data back when it was stored
 * without it (`"a": 1`).
 */
function recordOf(
  value: unknown,
  envelope: Envelope,
  item: ItemName,
  expected: { readonly kind: string; readonly id?: string },
): StoredRecord {
  const shared = envelope.a === 1;
  const record = storedRecord(value, item, { ...expected, baseIsData: shared });
  return shared ? withBaseData(record, item) : record;
}

/**
 * A kind's or id's key part for a message: the text, or for a hashed part
 * the prefix it keeps, followed by an ellipsis.
 */
function partText(part: Deno.KvKeyPart | undefined, budget: number): string {
  if (!(part instanceof Uint8Array)) return Deno.inspect(part);
  const group = hashedGroup(part, budget);
  if (group === undefined) return shortText(decodeText(part));
  return shortText(`${decodeText(group.subarray(0, -1))}…`);
}

// ---------------------------------------------------------------------------
// Identities

function planOf(mutation: CheckedMutation): Planned {
  switch (mutation.space) {
    case "record": {
      const identityOf = identity("r", mutation.kind, mutation.id);
      const record = mutation.value;
      if (record === undefined) {
        return {
          ...mutation,
          identity: identityOf,
          bytes: undefined,
          shared: false,
          jsonBytes: undefined,
        };
      }
      const base = record.base as StoredRecord["base"] | undefined;
      if (
        typeof base !== "object" || base === null || base.data !== record.data
      ) {
        const bytes = encodeJson(record);
        return {
          ...mutation,
          identity: identityOf,
          bytes,
          shared: false,
          jsonBytes: bytes.length,
        };
      }
      // The engine passes one object for a pulled record's data and its
      // base's data: stored once, it halves the value.
      const { data: _, ...rest } = base;
      const bytes = encodeJson({ ...record, base: rest });
      // The whole JSON holds `"data":<data>` in the base, and a comma
      // unless the base has no other key.
      const jsonBytes = bytes.length + '"data":'.length +
        utf8Length(JSON.stringify(record.data)) +
        (Object.keys(rest).length > 0 ? 1 : 0);
      return {
        ...mutation,
        identity: identityOf,
        bytes,
        shared: true,
        jsonBytes,
      };
    }
    case "op":
    case "meta": {
      const bytes = mutation.value === undefined
        ? undefined
        : encodeJson(mutation.value);
      return {
        ...mutation,
        identity: mutation.space === "op"
          ? identity("o", mutation.opId)
          : identity("m", mutation.key),
        bytes,
        shared: false,
        jsonBytes: bytes?.length,
      };
    }
  }
}

/** An item's identity: the space, then length-prefixed parts. */
function identity(space: string, ...parts: string[]): string {
  return space + parts.map((part) => `${part.length}:${part}`).join("");
}

function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
