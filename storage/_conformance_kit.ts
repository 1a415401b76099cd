/**
 * The storage conformance suite's shared kit: the case shape, builders of
 * records, ops and mutations, and the reads and assertions that cases
 * share. Part of the published suite (`storage/conformance.ts`), not
 * exported from the package on its own. Like the suite, it talks to a
 * storage only through the `Storage` contract, so that a third party's
 * adapter runs it unchanged; its builders are the suite's own, not the
 * package's test fixtures.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { ClosedError, StorageError } from "../src/errors.ts";
import type { JsonObject, JsonValue } from "../src/json.ts";
import type {
  Mutation,
  Storage,
  StorageCapabilities,
  StoredOp,
  StoredRecord,
  Versioned,
  WritePrecondition,
} from "../src/storage.ts";

/** What the suite knows about an adapter when it registers the cases. */
export interface Profile {
  /** The capabilities its first storage declared. */
  readonly capabilities: StorageCapabilities;
  /** Whether `setup()` gives a `reopen()`. */
  readonly reopen: boolean;
  /** Whether the storage has the optional `watchMeta()`. */
  readonly watchMeta: boolean;
}

/** The handles one case works with. */
export interface Harness {
  /** The current handle; {@linkcode Harness.reopen} replaces it. */
  readonly storage: Storage;
  /** Closes the current handle and opens the store again. */
  reopen(): Promise<Storage>;
  /** Opens a second handle while the current one stays open. */
  another(): Promise<Storage>;
  /** Whether the suite was fully registered. */
  readonly registered: boolean;
}

/** One case of the suite: a clause of the contract, tested. */
export interface Case {
  /** The clause, the case's name after the adapter's. */
  readonly clause: string;
  /** Whether the adapter's profile lets the case run; always when absent. */
  readonly needs?: (profile: Profile) => boolean;
  /** Runs the case on a fresh store. */
  readonly run: (harness: Harness) => Promise<void>;
}

/** The kind most cases write. */
export const KIND = "todo";

/** A ULID-shaped op id whose order is the order of `n`. */
export function opId(n: number): string {
  return `01J${String(n).padStart(23, "0")}`;
}

/** A stored record, empty but for `fields`. */
export function record(
  kind: string,
  id: string,
  fields: Partial<StoredRecord> = {},
): StoredRecord {
  return {
    kind,
    id,
    data: {},
    deleted: false,
    base: null,
    lastOpId: null,
    localUpdatedAt: null,
    ...fields,
  };
}

/** A pending op of record "1" of {@linkcode KIND}, but for `fields`. */
export function op(id: string, fields: Partial<StoredOp> = {}): StoredOp {
  return {
    opId: id,
    kind: KIND,
    id: "1",
    type: "upsert",
    payload: { title: "x" },
    baseUpdatedAt: null,
    base: null,
    changedFields: null,
    createdAt: 0,
    editedAt: 0,
    attempts: 0,
    revision: 0,
    conflicts: 0,
    force: false,
    state: "pending",
    error: null,
    conflict: null,
    ...fields,
  };
}

/** A `putRecord` mutation. */
export function putRecord(
  value: StoredRecord,
  expect?: WritePrecondition,
): Mutation {
  return { type: "putRecord", record: value, expect };
}

/** A `deleteRecord` mutation. */
export function deleteRecord(
  kind: string,
  id: string,
  expect?: WritePrecondition,
): Mutation {
  return { type: "deleteRecord", kind, id, expect };
}

/** A `putOp` mutation. */
export function putOp(value: StoredOp, expect?: WritePrecondition): Mutation {
  return { type: "putOp", op: value, expect };
}

/** A `deleteOp` mutation. */
export function deleteOp(id: string, expect?: WritePrecondition): Mutation {
  return { type: "deleteOp", opId: id, expect };
}

/** A `putMeta` mutation. */
export function putMeta(
  key: string,
  value: JsonValue,
  expect?: WritePrecondition,
): Mutation {
  return { type: "putMeta", key, value, expect };
}

/** A `deleteMeta` mutation. */
export function deleteMeta(key: string, expect?: WritePrecondition): Mutation {
  return { type: "deleteMeta", key, expect };
}

/** The size of a write as the contract measures it. */
export function writeBytes(mutations: readonly Mutation[]): number {
  return new TextEncoder().encode(JSON.stringify(mutations)).byteLength;
}

/**
 * Establishes state: commits the mutations in as few writes as the declared
 * limits allow, asserting that every write succeeds.
 */
export async function commit(
  storage: Storage,
  mutations: readonly Mutation[],
): Promise<void> {
  const { maxMutationsPerWrite, maxWriteBytes } = storage.capabilities;
  let chunk: Mutation[] = [];
  let bytes = 2;
  for (const mutation of mutations) {
    const size = writeBytes([mutation]) - 2;
    if (size + 2 > maxWriteBytes) {
      assert.fail(
        `Cannot establish the case's state as one mutation needs ${
          size + 2
        } bytes and the storage accepts at most ${maxWriteBytes}`,
      );
    }
    if (
      chunk.length > 0 &&
      (chunk.length >= maxMutationsPerWrite || bytes + 1 + size > maxWriteBytes)
    ) {
      await succeeds(storage, chunk);
      chunk = [];
      bytes = 2;
    }
    bytes += chunk.length === 0 ? size : size + 1;
    chunk.push(mutation);
  }
  if (chunk.length > 0) await succeeds(storage, chunk);
}

/** Runs one write and asserts that it committed. */
export function succeeds(
  storage: Storage,
  mutations: readonly Mutation[],
  message = "write() resolved { ok: false } where it should commit",
): Promise<void> {
  return resolves(storage, { mutations, ok: true, message });
}

/** Runs one write and asserts that a precondition refused it. */
export function refused(
  storage: Storage,
  mutations: readonly Mutation[],
  message = "write() resolved { ok: true } where an expect should fail",
): Promise<void> {
  return resolves(storage, { mutations, ok: false, message });
}

/** Runs one write and asserts whether it committed. */
async function resolves(
  storage: Storage,
  write: {
    readonly mutations: readonly Mutation[];
    readonly ok: boolean;
    readonly message: string;
  },
): Promise<void> {
  const result = await storage.write(write.mutations);
  assert.equal(result.ok, write.ok, write.message);
}

/** Reads one record, asserting that `getRecords()` returned one entry. */
export function getRecord(
  storage: Storage,
  kind: string,
  id: string,
): Promise<Versioned<StoredRecord> | undefined> {
  return only(storage.getRecords(kind, [id]));
}

/** Reads one op, asserting that `getOps()` returned one entry. */
export function getOp(
  storage: Storage,
  id: string,
): Promise<Versioned<StoredOp> | undefined> {
  return only(storage.getOps([id]));
}

/** Reads one meta entry, asserting that `getMeta()` returned one entry. */
export function getMeta(
  storage: Storage,
  key: string,
): Promise<Versioned<JsonValue> | undefined> {
  return only(storage.getMeta([key]));
}

/** The one entry a read of one item returned. */
async function only<T>(read: Promise<T[]>): Promise<T> {
  const entries = await read;
  assert.equal(entries.length, 1);
  return entries[0]!;
}

/** The current revision of an item that must exist. */
export function revOf<T>(entry: Versioned<T> | undefined): string {
  assert.ok(entry !== undefined, "Expected the item to exist");
  assert.equal(typeof entry.rev, "string", "Expected a string revision");
  return entry.rev;
}

/** The three item spaces, so one case can check records, ops and meta. */
export interface Space {
  /** `record`, `op` or `meta`, for messages. */
  readonly name: string;
  /** A mutation that writes version `version` of the item. */
  put(key: string, version: number, expect?: WritePrecondition): Mutation;
  /** A mutation that deletes the item. */
  remove(key: string, expect?: WritePrecondition): Mutation;
  /** Reads the item. */
  read(storage: Storage, key: string): Promise<Versioned<unknown> | undefined>;
  /** The value `put(key, version)` writes. */
  value(key: string, version: number): unknown;
}

/** Records, ops and meta entries as {@linkcode Space}s. */
export const SPACES: readonly Space[] = [
  {
    name: "record",
    put: (key, version, expect) =>
      putRecord(record(KIND, key, { data: { version } }), expect),
    remove: (key, expect) => deleteRecord(KIND, key, expect),
    read: (storage, key) => getRecord(storage, KIND, key),
    value: (key, version) => record(KIND, key, { data: { version } }),
  },
  {
    name: "op",
    put: (key, version, expect) =>
      putOp(op(key, { payload: { version } }), expect),
    remove: (key, expect) => deleteOp(key, expect),
    read: (storage, key) => getOp(storage, key),
    value: (key, version) => op(key, { payload: { version } }),
  },
  {
    name: "meta",
    put: (key, version, expect) => putMeta(key, { version }, expect),
    remove: (key, expect) => deleteMeta(key, expect),
    read: (storage, key) => getMeta(storage, key),
    value: (_key, version) => ({ version }),
  },
];

/** Asserts that the item holds `put(key, version)`'s value. */
export async function holds(
  storage: Storage,
  item: {
    readonly space: Space;
    readonly key: string;
    readonly version: number;
  },
): Promise<string> {
  const { space, key, version } = item;
  const entry = await space.read(storage, key);
  assert.deepEqual(
    entry?.value,
    space.value(key, version),
    `Expected ${space.name} ${JSON.stringify(key)} at version ${version}`,
  );
  return revOf(entry);
}

/** Asserts that the item is absent. */
export async function absent(
  storage: Storage,
  space: Space,
  key: string,
): Promise<void> {
  assert.equal(
    await space.read(storage, key),
    undefined,
    `Expected ${space.name} ${JSON.stringify(key)} to be absent`,
  );
}

/** Calls a method and asserts that it returned a promise, not a throw. */
export function call<T>(
  method: string,
  invoke: () => PromiseLike<T>,
): Promise<T> {
  let result: PromiseLike<T>;
  try {
    result = invoke();
  } catch (error) {
    assert.fail(
      `Expected ${method} to return a promise, but it threw ${error}`,
    );
  }
  assert.equal(
    typeof result?.then,
    "function",
    `Expected ${method} to return a promise`,
  );
  return Promise.resolve(result);
}

function nested(depth: number): JsonValue {
  let value: JsonValue = "bottom";
  for (let level = 0; level < depth; level++) {
    value = level % 2 === 0 ? [value, level] : { level, value };
  }
  return value;
}

/** Values that stress an adapter's encoding. */
export function trickyData(): JsonObject {
  return {
    nul: "\0",
    nuls: "a\0b\0",
    emoji: "\u{1F600}\u{1F469}\u200D\u{1F469}\u200D\u{1F467}",
    nonBmp: "\u{10000}\u{10FFFF}\u{1D11E}",
    bmpEdges: "\uFFFF\uFFFE\uFEFF\uE000\uD7FF",
    lone: ["\uD800", "\uDFFF", "a\uD800b", "\uDC00\uD800", "\uDBFF"],
    escapes: '"\\/\b\f\n\r\t\u2028\u2029\u007F\u0001',
    numbers: [
      0,
      1,
      -1,
      0.1,
      -2.5e-7,
      1e21,
      1.7976931348623157e308,
      5e-324,
      Number.MAX_SAFE_INTEGER,
      -Number.MAX_SAFE_INTEGER,
      2 ** 53 + 2,
    ],
    deep: nested(64),
    long: Array.from({ length: 200 }, (_, index) => index % 3 ? index : ""),
    "": "empty key",
    "\0": "nul key",
    "\u{1F600}": "emoji key",
  };
}

/** Whether a declared limit is finite. */
export function finite(limit: number): boolean {
  return limit !== Infinity;
}

/**
 * Asserts that a promise rejects with an error of a type, whose message
 * names `mentions` when given.
 */
export async function rejectsWith(
  promise: Promise<unknown>,
  type: typeof StorageError | typeof ClosedError,
  mentions?: number,
): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(
      error instanceof type,
      `Expected a ${type.name}, got ${String(error)}`,
    );
    if (mentions !== undefined) {
      assert.match(
        error.message,
        new RegExp(`\\b${mentions}\\b`),
        "Expected the error message to name the limit",
      );
    }
    return true;
  });
}

/** Every page of a listing, following `after` cursors. */
export async function pages<T>(
  list: (after: string | undefined) => Promise<T[]>,
  keyOf: (item: T) => string,
  limit: number,
): Promise<T[]> {
  const all: T[] = [];
  let after: string | undefined;
  for (let page = 0;; page++) {
    assert.ok(page < 10_000, "Expected paging to end");
    const items = await list(after);
    assert.ok(items.length <= limit, `Expected at most ${limit} items a page`);
    all.push(...items);
    if (items.length < limit) return all;
    after = keyOf(items[items.length - 1]!);
  }
}
