/**
 * An in-memory {@linkcode Storage}: fast, dependency-free and gone when the
 * process ends. Use it in tests, in short-lived scripts, or as a reference
 * when writing an adapter of your own.
 *
 * It keeps every clause of the contract: writes are all-or-nothing, every
 * `expect` is checked against the state before the write, values are
 * deep-copied on the way in and on the way out, records and ops are ordered
 * by UTF-16 code units, and limits, when set, are enforced rather than
 * split.
 *
 * @example Writing a record and reading it back
 * ```ts
 * import { createMemoryStorage } from "@offline-first/sync/storage/memory";
 * import assert from "node:assert/strict";
 *
 * await using storage = createMemoryStorage();
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
 *
 * const [stored] = await storage.getRecords("todo", ["1"]);
 * assert.deepEqual(stored?.value, record);
 *
 * // A second create of the same record fails its precondition.
 * const again = await storage.write([
 *   { type: "putRecord", record, expect: null },
 * ]);
 * assert.equal(again.ok, false);
 * ```
 *
 * @module
 */

import { ClosedError } from "../src/errors.ts";
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
  WritePrecondition,
  WriteResult,
} from "../src/storage.ts";
import {
  type CheckedMutation,
  checkMutations,
  checkString,
  checkStrings,
  OP_STATES,
  resolveListOpsOptions,
  resolveListRecordsOptions,
} from "./_validate.ts";
import { copyStoredJson } from "./_json.ts";

/** Options for {@linkcode createMemoryStorage}. */
export interface MemoryStorageOptions {
  /**
   * The most mutations one `write()` accepts; a larger write rejects with a
   * `StorageError`. Set it to mimic a stricter adapter in tests (Deno KV
   * caps an atomic operation at 1000 mutations).
   *
   * @default {Infinity}
   */
  maxMutationsPerWrite?: number;
  /**
   * The most bytes (UTF-8 length of `JSON.stringify(mutations)`) one
   * `write()` accepts; a larger write rejects with a `StorageError`.
   *
   * @default {Infinity}
   */
  maxWriteBytes?: number;
  /**
   * The longest op id or meta key (UTF-16 code units) a write accepts; a
   * longer one rejects with a `StorageError`. Set it to mimic Deno KV's key
   * limits in tests. Kinds and record ids of any length are held.
   *
   * @default {Infinity}
   */
  maxKeyLength?: number;
}

/**
 * Creates an empty in-memory storage.
 *
 * Revisions come from one counter per storage, so a revision never repeats
 * for a key, even after the item was deleted and written again. Nothing
 * survives the process: `capabilities.persistent` is `false`.
 *
 * @param options Optional write limits.
 * @returns A new, open storage.
 * @throws {RangeError} When a limit is not a positive integer or `Infinity`.
 *
 * @example Enforcing a write limit
 * ```ts
 * import { createMemoryStorage } from "@offline-first/sync/storage/memory";
 * import { StorageError } from "@offline-first/sync";
 * import assert from "node:assert/strict";
 *
 * await using storage = createMemoryStorage({ maxMutationsPerWrite: 2 });
 * assert.equal(storage.capabilities.maxMutationsPerWrite, 2);
 * await assert.rejects(
 *   storage.write([
 *     { type: "putMeta", key: "a", value: 1 },
 *     { type: "putMeta", key: "b", value: 2 },
 *     { type: "putMeta", key: "c", value: 3 },
 *   ]),
 *   StorageError,
 * );
 * const entries = await storage.getMeta(["a", "b", "c"]);
 * assert.deepEqual(entries, [undefined, undefined, undefined]);
 * ```
 */
export function createMemoryStorage(
  options: MemoryStorageOptions = {},
): Storage {
  const maxMutationsPerWrite = resolveLimit(
    "maxMutationsPerWrite",
    options.maxMutationsPerWrite,
  );
  const maxWriteBytes = resolveLimit("maxWriteBytes", options.maxWriteBytes);
  const maxKeyLength = resolveLimit("maxKeyLength", options.maxKeyLength);
  return new MemoryStorage(Object.freeze({
    persistent: false,
    multiProcess: false,
    maxMutationsPerWrite,
    maxWriteBytes,
    maxKeyLength,
  }));
}

function resolveLimit(name: string, value: number | undefined): number {
  if (value === undefined) return Infinity;
  if (
    typeof value !== "number" ||
    !(value === Infinity || (Number.isInteger(value) && value > 0))
  ) {
    throw new RangeError(
      `Cannot create memory storage as '${name}' is not a positive integer or Infinity: current value is ${
        String(value)
      }`,
    );
  }
  return value;
}

interface Entry<T> {
  readonly value: T;
  readonly rev: string;
  /** The revision counter that made `rev`. */
  readonly seq: number;
}

interface Table {
  readonly entries: Map<string, Entry<StoredRecord>>;
  readonly ids: SortedKeys;
}

class MemoryStorage implements Storage {
  readonly capabilities: StorageCapabilities;
  #closed = false;
  #revision = 0;
  #tables = new Map<string, Table>();
  #ops = new Map<string, Entry<StoredOp>>();
  /**
   * Op ids by state: the engine drains the outbox by listing the first
   * pending ops again and again, which then never walks past quarantined or
   * parked ones.
   */
  #opIdsByState = newStateIndex();
  /** Op ids by record id, so per-record listing needs no scan of the outbox. */
  /**
   * Op ids by record id: the one op id of a record with one op (most
   * records), a set once it has more, so a record does not cost a set.
   */
  #opsByRecord = new Map<string, string | Set<string>>();
  #meta = new Map<string, Entry<JsonValue>>();
  /** The revision counter before the write being applied. */
  #writeStart = 0;
  /**
   * Whether the write being applied met an item it had written already, or
   * removed one: its earlier revisions may then be stale.
   */
  #metTwice = false;

  constructor(capabilities: StorageCapabilities) {
    this.capabilities = capabilities;
  }

  getRecords(
    kind: string,
    ids: readonly string[],
    options?: StorageCallOptions,
  ): Promise<(Versioned<StoredRecord> | undefined)[]> {
    return this.#run("read records", options, () => {
      checkString("read records", "kind", kind);
      checkStrings("read records", "ids", ids);
      const entries = this.#tables.get(kind)?.entries;
      return ids.map((id) => readEntry(entries?.get(id)));
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
      const table = this.#tables.get(kind);
      const result: Versioned<StoredRecord>[] = [];
      if (table === undefined || limit === 0) return result;
      for (const id of table.ids.after(after)) {
        const entry = table.entries.get(id)!;
        if (!includeDeleted && entry.value.deleted) continue;
        result.push(readEntry(entry));
        if (result.length >= limit) break;
      }
      return result;
    });
  }

  getOps(
    opIds: readonly string[],
    options?: StorageCallOptions,
  ): Promise<(Versioned<StoredOp> | undefined)[]> {
    return this.#run("read ops", options, () => {
      checkStrings("read ops", "opIds", opIds);
      return opIds.map((opId) => readEntry(this.#ops.get(opId)));
    });
  }

  listOps(options: ListOpsOptions = {}): Promise<Versioned<StoredOp>[]> {
    return this.#run("list ops", options, () => {
      const { limit, after, id, states, kinds } = resolveListOpsOptions(
        options,
      );
      const result: Versioned<StoredOp>[] = [];
      if (limit === 0) return result;
      // With an id, only that record's few ops qualify: sort those instead
      // of walking the whole outbox.
      const candidates = id === undefined
        ? mergeSorted(
          [...states ?? OP_STATES].flatMap((state) =>
            this.#opIdsByState.get(state)?.after(after) ?? []
          ),
        )
        : siblingsOf(this.#opsByRecord.get(id))
          .filter((opId) => after === undefined || opId > after)
          .sort(compareKeys);
      for (const opId of candidates) {
        const entry = this.#ops.get(opId)!;
        const op = entry.value;
        if (states !== undefined && !states.has(op.state)) continue;
        if (kinds !== undefined && !kinds.has(op.kind)) continue;
        result.push(readEntry(entry));
        if (result.length >= limit) break;
      }
      return result;
    });
  }

  getMeta(
    keys: readonly string[],
    options?: StorageCallOptions,
  ): Promise<(Versioned<JsonValue> | undefined)[]> {
    return this.#run("read meta", options, () => {
      checkStrings("read meta", "keys", keys);
      return keys.map((key) => readEntry(this.#meta.get(key)));
    });
  }

  write(
    mutations: readonly Mutation[],
    options?: StorageCallOptions,
  ): Promise<WriteResult> {
    return this.#run("write mutations", options, () => {
      // Validating and copying everything first keeps the write
      // all-or-nothing: nothing below can fail halfway through applying.
      const plan = checkMutations(mutations, this.capabilities, {
        copy: true,
      });
      // Every expect is checked against the state before the write, so two
      // mutations of one item in one write may both expect its current rev.
      for (const planned of plan) {
        if (!expectationHolds(planned.expect, this.#currentRev(planned))) {
          return { ok: false };
        }
      }
      // A mutation's revision is its item's after the whole write: another
      // mutation of the same item may have replaced or removed it. Applying
      // tells whether any item was met twice (or removed, which a later put
      // may undo); only then are the revisions looked up again.
      this.#writeStart = this.#revision;
      this.#metTwice = false;
      const revs: (string | null)[] = new Array(plan.length);
      for (let index = 0; index < plan.length; index++) {
        revs[index] = this.#apply(plan[index]!);
      }
      if (this.#metTwice && plan.length > 1) {
        for (let index = 0; index < plan.length; index++) {
          revs[index] = this.#currentRev(plan[index]!) ?? null;
        }
      }
      return { ok: true, revs };
    });
  }

  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#tables.clear();
      this.#ops.clear();
      this.#opIdsByState = newStateIndex();
      this.#opsByRecord.clear();
      this.#meta.clear();
    }
    return Promise.resolve();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * Runs a call's synchronous body and settles a promise with its outcome:
   * the contract's methods return promises and never throw synchronously.
   */
  #run<T>(
    action: string,
    options: StorageCallOptions | undefined,
    body: () => T,
  ): Promise<T> {
    try {
      if (this.#closed) {
        throw new ClosedError(`Cannot ${action} as the storage is closed`);
      }
      options?.signal?.throwIfAborted();
      return Promise.resolve(body());
    } catch (error) {
      return Promise.reject(error);
    }
  }

  #currentRev(planned: CheckedMutation): string | undefined {
    switch (planned.space) {
      case "record":
        return this.#tables.get(planned.kind)?.entries.get(planned.id)?.rev;
      case "op":
        return this.#ops.get(planned.opId)?.rev;
      case "meta":
        return this.#meta.get(planned.key)?.rev;
    }
  }

  /** Applies a mutation; the revision it left, `null` when it deleted. */
  #apply(planned: CheckedMutation): string | null {
    switch (planned.space) {
      case "record":
        return this.#applyRecord(planned.kind, planned.id, planned.value);
      case "op":
        return this.#applyOp(planned.opId, planned.value);
      case "meta": {
        if (planned.value === undefined) {
          this.#metTwice = true;
          this.#meta.delete(planned.key);
          return null;
        }
        this.#met(this.#meta.get(planned.key));
        const rev = this.#nextRev();
        this.#meta.set(planned.key, {
          value: planned.value,
          rev,
          seq: this.#revision,
        });
        return rev;
      }
    }
  }

  #applyRecord(
    kind: string,
    id: string,
    value: StoredRecord | undefined,
  ): string | null {
    let table = this.#tables.get(kind);
    if (value === undefined) {
      this.#metTwice = true;
      if (table?.entries.delete(id)) {
        table.ids.delete(id);
        if (table.entries.size === 0) this.#tables.delete(kind);
      }
      return null;
    }
    if (table === undefined) {
      table = { entries: new Map(), ids: new SortedKeys() };
      this.#tables.set(kind, table);
    }
    const entries = table.entries;
    const previous = entries.get(id);
    this.#met(previous);
    const rev = this.#nextRev();
    entries.set(id, { value, rev, seq: this.#revision });
    if (previous === undefined) table.ids.add(id);
    return rev;
  }

  #applyOp(opId: string, value: StoredOp | undefined): string | null {
    const entry = this.#ops.get(opId);
    if (value === undefined) this.#metTwice = true;
    else this.#met(entry);
    const previous = entry?.value;
    if (previous === undefined && value === undefined) return null;
    if (previous !== undefined) {
      if (value === undefined || previous.id !== value.id) {
        this.#removeSibling(previous.id, opId);
      }
      if (value === undefined || previous.state !== value.state) {
        this.#opIdsByState.get(previous.state)!.delete(opId);
      }
    }
    if (value === undefined) {
      this.#ops.delete(opId);
      return null;
    }
    if (previous === undefined || previous.id !== value.id) {
      this.#addSibling(value.id, opId);
    }
    if (previous === undefined || previous.state !== value.state) {
      this.#opIdsByState.get(value.state)!.add(opId);
    }
    const rev = this.#nextRev();
    this.#ops.set(opId, { value, rev, seq: this.#revision });
    return rev;
  }

  /** Notes an item the write being applied had written already. */
  #met(entry: Entry<unknown> | undefined): void {
    if (entry !== undefined && entry.seq > this.#writeStart) {
      this.#metTwice = true;
    }
  }

  #addSibling(id: string, opId: string): void {
    const siblings = this.#opsByRecord.get(id);
    if (siblings === undefined) this.#opsByRecord.set(id, opId);
    else if (typeof siblings === "string") {
      this.#opsByRecord.set(id, new Set([siblings, opId]));
    } else siblings.add(opId);
  }

  #removeSibling(id: string, opId: string): void {
    const siblings = this.#opsByRecord.get(id);
    if (siblings === opId) this.#opsByRecord.delete(id);
    else if (typeof siblings === "object") {
      siblings.delete(opId);
      if (siblings.size === 0) this.#opsByRecord.delete(id);
    }
  }

  /** One counter for every key: a revision can never repeat. */
  #nextRev(): string {
    this.#revision += 1;
    return this.#revision.toString(36);
  }
}

/** A record's op ids, as `#opsByRecord` holds them, in a new array. */
function siblingsOf(siblings: string | Set<string> | undefined): string[] {
  if (siblings === undefined) return [];
  return typeof siblings === "string" ? [siblings] : [...siblings];
}

function newStateIndex(): Map<string, SortedKeys> {
  return new Map([...OP_STATES].map((state) => [state, new SortedKeys()]));
}

/** Merges ascending sequences of distinct keys into one ascending sequence. */
function* mergeSorted(
  sources: readonly Iterable<string>[],
): Generator<string, void, undefined> {
  if (sources.length === 1) {
    yield* sources[0]!;
    return;
  }
  const iterators = sources.map((source) => source[Symbol.iterator]());
  const heads = iterators.map((iterator) => iterator.next());
  for (;;) {
    let best = -1;
    for (let index = 0; index < heads.length; index++) {
      const head = heads[index]!;
      if (head.done) continue;
      if (best < 0 || head.value < (heads[best]!.value as string)) best = index;
    }
    if (best < 0) return;
    yield heads[best]!.value as string;
    heads[best] = iterators[best]!.next();
  }
}

function expectationHolds(
  expect: WritePrecondition,
  rev: string | undefined,
): boolean {
  if (expect === undefined) return true;
  if (expect === null) return rev === undefined;
  return rev === expect;
}

function readEntry<T extends JsonValue | StoredRecord | StoredOp>(
  entry: Entry<T>,
): Versioned<T>;
function readEntry<T extends JsonValue | StoredRecord | StoredOp>(
  entry: Entry<T> | undefined,
): Versioned<T> | undefined;
function readEntry<T extends JsonValue | StoredRecord | StoredOp>(
  entry: Entry<T> | undefined,
): Versioned<T> | undefined {
  if (entry === undefined) return undefined;
  return {
    value: copyStoredJson(entry.value as JsonValue) as T,
    rev: entry.rev,
  };
}

function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** How many keys a chunk of {@linkcode SortedKeys} holds before it splits. */
const CHUNK = 512;

/**
 * A set of strings kept in UTF-16 code unit order (JavaScript's `<`), as a
 * list of sorted chunks: insertion, deletion and seeking cost O(log n + CHUNK)
 * instead of the O(n) of one sorted array, and appending ascending keys
 * (ULID op ids) touches only the last chunk.
 */
class SortedKeys {
  #chunks: string[][] = [];

  /** Adds a key that is not in the set. */
  add(key: string): void {
    const chunks = this.#chunks;
    if (chunks.length === 0) {
      chunks.push([key]);
      return;
    }
    // Op ids are ULIDs and mostly arrive in order: append without a search.
    const last = chunks[chunks.length - 1]!;
    if (key > last[last.length - 1]!) {
      last.push(key);
      if (last.length > 2 * CHUNK) chunks.push(last.splice(CHUNK));
      return;
    }
    // The first chunk whose last key is greater, else the last chunk.
    let chunkIndex = this.#chunkAfter(key);
    if (chunkIndex === chunks.length) chunkIndex--;
    const chunk = chunks[chunkIndex]!;
    chunk.splice(upperBound(chunk, key), 0, key);
    if (chunk.length > 2 * CHUNK) {
      chunks.splice(chunkIndex + 1, 0, chunk.splice(CHUNK));
    }
  }

  /** Removes a key that is in the set. */
  delete(key: string): void {
    const chunks = this.#chunks;
    const chunkIndex = this.#chunkAtLeast(key);
    const chunk = chunks[chunkIndex];
    if (chunk === undefined) return;
    const index = upperBound(chunk, key) - 1;
    if (chunk[index] !== key) return;
    chunk.splice(index, 1);
    if (chunk.length === 0) chunks.splice(chunkIndex, 1);
  }

  /** Yields the keys greater than `after` (all keys without it), in order. */
  *after(after: string | undefined): Generator<string, void, undefined> {
    const chunks = this.#chunks;
    let chunkIndex = after === undefined ? 0 : this.#chunkAfter(after);
    let index = after === undefined || chunkIndex === chunks.length
      ? 0
      : upperBound(chunks[chunkIndex]!, after);
    for (; chunkIndex < chunks.length; chunkIndex++, index = 0) {
      const chunk = chunks[chunkIndex]!;
      for (; index < chunk.length; index++) yield chunk[index]!;
    }
  }

  /** The first chunk whose last key is greater than `key`. */
  #chunkAfter(key: string): number {
    let low = 0;
    let high = this.#chunks.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      const chunk = this.#chunks[middle]!;
      if (chunk[chunk.length - 1]! > key) high = middle;
      else low = middle + 1;
    }
    return low;
  }

  /** The first chunk whose last key is greater than or equal to `key`. */
  #chunkAtLeast(key: string): number {
    let low = 0;
    let high = this.#chunks.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      const chunk = this.#chunks[middle]!;
      if (chunk[chunk.length - 1]! >= key) high = middle;
      else low = middle + 1;
    }
    return low;
  }
}

/** The index of the first key in `keys` greater than `key`. */
function upperBound(keys: readonly string[], key: string): number {
  let low = 0;
  let high = keys.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (keys[middle]! > key) high = middle;
    else low = middle + 1;
  }
  return low;
}
