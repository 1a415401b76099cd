/**
 * The published conformance suite of the {@linkcode Storage} contract. An
 * adapter is conformant when `testStorage()` passes on it; every MUST clause
 * of the contract is stated here as a test, and the suite talks to the
 * adapter only through the `Storage` interface and its declared
 * `capabilities`, so it runs unchanged on adapters it has never seen.
 *
 * Call it once at the top level of a test module and `await` it: the suite
 * opens one storage first to read its capabilities, then registers one
 * `Deno.test` per clause, named `"<name>: <clause>"`. Each case opens a fresh
 * storage with `setup()`, establishes the state it then changes, and closes
 * every handle and calls `teardown()` in a `finally`. Cases that the
 * adapter's capabilities exclude are registered with `ignore: true`, so they
 * show up as ignored rather than as passes:
 *
 * - limit cases, when the limit is `Infinity`;
 * - survival across reopen, unless `reopen` is given and
 *   `capabilities.persistent` is `true`;
 * - cases with two open handles, unless `reopen` is given and
 *   `capabilities.multiProcess` is `true`;
 * - the 1 MiB record, when `maxWriteBytes` is smaller than its write;
 * - the writes of `maxMutationsPerWrite` items with the longest kinds and
 *   ids (64 and 512 UTF-16 code units, clause 8 of the contract), when
 *   those writes exceed `maxWriteBytes`. With no limit on mutations they
 *   hold 64 items.
 *
 * The suite measures a write as the UTF-8 length of
 * `JSON.stringify(mutations)`, and it splits the writes that only establish
 * state into chunks that fit the declared limits, as the engine does. Apart
 * from the limit cases, cases that test one write on purpose need at most 6
 * mutations and about 2.5 KiB per write.
 *
 * @example Running the suite on an adapter
 * ```ts ignore
 * // tests/memory_storage_test.ts
 * import { createMemoryStorage } from "@offline-first/sync/storage/memory";
 * import { testStorage } from "@offline-first/sync/storage/conformance";
 *
 * await testStorage("memory", () => ({ storage: createMemoryStorage() }));
 * ```
 *
 * @module
 */

import assert from "node:assert/strict";
import { ClosedError, StorageError } from "../src/errors.ts";
import type { JsonObject, JsonValue } from "../src/json.ts";
import type {
  Expect,
  ListOpsOptions,
  Mutation,
  Storage,
  StorageCapabilities,
  StoredOp,
  StoredRecord,
  Versioned,
} from "../src/storage.ts";

/** What `setup()` returns: a fresh store and how to reach it again. */
export interface StorageSetup {
  /** A new, open, empty storage, used by one case only. */
  readonly storage: Storage;
  /**
   * Opens the same underlying store again. The suite closes the previous
   * handle before calling it to test survival across a restart; cases with
   * two open handles (run only when `capabilities.multiProcess` is `true`)
   * call it while the first handle is still open.
   */
  readonly reopen?: () => Promise<Storage>;
  /**
   * Releases what `setup()` acquired (temporary files, servers). Runs after
   * every handle of the case was closed.
   */
  readonly teardown?: () => Promise<void>;
}

/** Options for {@linkcode testStorage}. */
export interface TestStorageOptions {
  /**
   * Whether Deno's op sanitizer checks each case for leaked async ops.
   *
   * @default {true}
   */
  readonly sanitizeOps?: boolean;
  /**
   * Whether Deno's resource sanitizer checks each case for leaked
   * resources.
   *
   * @default {true}
   */
  readonly sanitizeResources?: boolean;
}

/**
 * Registers the storage conformance suite as `Deno.test` cases named
 * `"<name>: <clause>"`.
 *
 * `setup()` is called once right away to read the adapter's capabilities
 * (that storage is closed and torn down before any case runs), then once per
 * case. Await the returned promise at the top level of the test module:
 * Deno only collects tests registered while the module loads.
 *
 * @param name The adapter's name, the prefix of every case name.
 * @param setup Opens a fresh, empty storage for one case.
 * @param options Sanitizer settings.
 * @returns A promise that resolves once every case is registered.
 * @throws {Error} When `setup()` or the first storage's `close()` fails.
 *
 * @example Testing an adapter that persists
 * ```ts ignore
 * import { testStorage } from "@offline-first/sync/storage/conformance";
 * import { openMyStorage } from "./my_storage.ts";
 *
 * await testStorage("mine", async () => {
 *   const path = await Deno.makeTempFile();
 *   return {
 *     storage: await openMyStorage(path),
 *     reopen: () => openMyStorage(path),
 *     teardown: () => Deno.remove(path),
 *   };
 * });
 * ```
 */
export async function testStorage(
  name: string,
  setup: () => Promise<StorageSetup> | StorageSetup,
  options: TestStorageOptions = {},
): Promise<void> {
  const suite: Suite = {
    setup,
    registered: false,
    sanitizeOps: options.sanitizeOps ?? true,
    sanitizeResources: options.sanitizeResources ?? true,
  };
  // Registered before the first await, so that a suite whose promise was
  // not awaited fails loudly instead of silently losing its cases.
  register(name, suite, FIRST_CASE, false);
  const profile = await probe(setup);
  for (const testCase of CASES) {
    register(name, suite, testCase, !(testCase.needs?.(profile) ?? true));
  }
  suite.registered = true;
}

interface Suite {
  readonly setup: () => Promise<StorageSetup> | StorageSetup;
  registered: boolean;
  readonly sanitizeOps: boolean;
  readonly sanitizeResources: boolean;
}

/** What the suite knows about an adapter when it registers the cases. */
interface Profile {
  readonly capabilities: StorageCapabilities;
  readonly reopen: boolean;
}

/** The handles one case works with. */
interface Harness {
  /** The current handle; {@linkcode Harness.reopen} replaces it. */
  readonly storage: Storage;
  /** Closes the current handle and opens the store again. */
  reopen(): Promise<Storage>;
  /** Opens a second handle while the current one stays open. */
  another(): Promise<Storage>;
  /** Whether the suite was fully registered. */
  readonly registered: boolean;
}

interface Case {
  readonly clause: string;
  /** Whether the adapter's profile lets the case run; always when absent. */
  readonly needs?: (profile: Profile) => boolean;
  readonly run: (harness: Harness) => Promise<void>;
}

async function probe(
  setup: () => Promise<StorageSetup> | StorageSetup,
): Promise<Profile> {
  const { storage, reopen, teardown } = await setup();
  try {
    return {
      capabilities: { ...storage.capabilities },
      reopen: reopen !== undefined,
    };
  } finally {
    try {
      await storage.close();
    } finally {
      await teardown?.();
    }
  }
}

function register(
  name: string,
  suite: Suite,
  testCase: Case,
  ignore: boolean,
): void {
  Deno.test({
    name: `${name}: ${testCase.clause}`,
    ignore,
    sanitizeOps: suite.sanitizeOps,
    sanitizeResources: suite.sanitizeResources,
    fn: () => runCase(suite, testCase),
  });
}

async function runCase(suite: Suite, testCase: Case): Promise<void> {
  const { storage, reopen, teardown } = await suite.setup();
  const handles: Storage[] = [storage];
  let current = storage;
  const open = async (): Promise<Storage> => {
    if (reopen === undefined) {
      assert.fail("Cannot reopen the storage as setup() gave no reopen()");
    }
    const handle = await reopen();
    handles.push(handle);
    return handle;
  };
  const harness: Harness = {
    get storage() {
      return current;
    },
    get registered() {
      return suite.registered;
    },
    async reopen(): Promise<Storage> {
      await current.close();
      current = await open();
      return current;
    },
    another: open,
  };
  try {
    await testCase.run(harness);
  } finally {
    try {
      for (const handle of handles) await handle.close();
    } finally {
      await teardown?.();
    }
  }
}

// ---------------------------------------------------------------------------
// Builders and helpers

const KIND = "todo";

/** A ULID-shaped op id whose order is the order of `n`. */
function opId(n: number): string {
  return `01J${String(n).padStart(23, "0")}`;
}

function record(
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

function op(id: string, fields: Partial<StoredOp> = {}): StoredOp {
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

function putRecord(value: StoredRecord, expect?: Expect): Mutation {
  return { type: "putRecord", record: value, expect };
}

function deleteRecord(kind: string, id: string, expect?: Expect): Mutation {
  return { type: "deleteRecord", kind, id, expect };
}

function putOp(value: StoredOp, expect?: Expect): Mutation {
  return { type: "putOp", op: value, expect };
}

function deleteOp(id: string, expect?: Expect): Mutation {
  return { type: "deleteOp", opId: id, expect };
}

function putMeta(key: string, value: JsonValue, expect?: Expect): Mutation {
  return { type: "putMeta", key, value, expect };
}

function deleteMeta(key: string, expect?: Expect): Mutation {
  return { type: "deleteMeta", key, expect };
}

/** The size of a write as the contract measures it. */
function writeBytes(mutations: readonly Mutation[]): number {
  return new TextEncoder().encode(JSON.stringify(mutations)).byteLength;
}

/**
 * Establishes state: commits the mutations in as few writes as the declared
 * limits allow, asserting that every write succeeds.
 */
async function commit(
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
async function succeeds(
  storage: Storage,
  mutations: readonly Mutation[],
  message = "write() resolved { ok: false } where it should commit",
): Promise<void> {
  const result = await storage.write(mutations);
  assert.equal(result.ok, true, message);
}

/** Runs one write and asserts that a precondition refused it. */
async function refused(
  storage: Storage,
  mutations: readonly Mutation[],
  message = "write() resolved { ok: true } where an expect should fail",
): Promise<void> {
  const result = await storage.write(mutations);
  assert.equal(result.ok, false, message);
}

async function getRecord(
  storage: Storage,
  kind: string,
  id: string,
): Promise<Versioned<StoredRecord> | undefined> {
  const entries = await storage.getRecords(kind, [id]);
  assert.equal(entries.length, 1);
  return entries[0];
}

async function getOp(
  storage: Storage,
  id: string,
): Promise<Versioned<StoredOp> | undefined> {
  const entries = await storage.getOps([id]);
  assert.equal(entries.length, 1);
  return entries[0];
}

async function getMeta(
  storage: Storage,
  key: string,
): Promise<Versioned<JsonValue> | undefined> {
  const entries = await storage.getMeta([key]);
  assert.equal(entries.length, 1);
  return entries[0];
}

/** The current revision of an item that must exist. */
function revOf<T>(entry: Versioned<T> | undefined): string {
  assert.ok(entry !== undefined, "Expected the item to exist");
  assert.equal(typeof entry.rev, "string", "Expected a string revision");
  return entry.rev;
}

/** The three item spaces, so one case can check records, ops and meta. */
interface Space {
  readonly name: string;
  put(key: string, version: number, expect?: Expect): Mutation;
  remove(key: string, expect?: Expect): Mutation;
  read(storage: Storage, key: string): Promise<Versioned<unknown> | undefined>;
  /** The value `put(key, version)` writes. */
  value(key: string, version: number): unknown;
}

const SPACES: readonly Space[] = [
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
async function holds(
  storage: Storage,
  space: Space,
  key: string,
  version: number,
): Promise<string> {
  const entry = await space.read(storage, key);
  assert.deepEqual(
    entry?.value,
    space.value(key, version),
    `Expected ${space.name} ${JSON.stringify(key)} at version ${version}`,
  );
  return revOf(entry);
}

async function absent(
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
function call<T>(
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

/** Ids whose UTF-16 order differs from their UTF-8 and code point order. */
const ORDER_KEYS: readonly string[] = [
  "\uFF5E",
  "\u{1F600}",
  "a",
  "B",
  "",
  "a\0",
  "aa",
  "\u00E4",
  "\uE000",
  "\u{10000}",
  "10",
  "9",
  "\uFFFF",
  "Z",
  "\u007F",
  "\u0080",
  "a/b",
  "\0",
];

/** Keys that break adapters which join, escape or truncate keys. */
const ALL_ODD_KEYS: readonly string[] = [
  "a/b",
  "/",
  "a\0b",
  "\0",
  "\u00FC",
  "\u{1F600}",
  "\u65E5\u672C\u8A9E",
  " ",
  ".",
  "..",
  "%2F",
  "__proto__",
  "constructor",
  "x".repeat(2048),
];

/** An op's record id for a key: short, so one op fits a 4 KiB write. */
function shortId(key: string): string {
  return key.slice(0, 64);
}

/** JSON text with keys that must stay data, never reach a prototype. */
const PROTO_JSON = '{"__proto__":{"polluted":true},"constructor":' +
  '{"prototype":{"polluted":true}},"prototype":1,"toString":"x",' +
  '"hasOwnProperty":0,"nested":[{"__proto__":null},{"__proto__":[1]}]}';

/** Arrays nested `depth` deep: the smallest value of that depth. */
function chain(depth: number): JsonValue {
  let value: JsonValue = "bottom";
  for (let level = 0; level < depth; level++) value = [value];
  return value;
}

function nested(depth: number): JsonValue {
  let value: JsonValue = "bottom";
  for (let level = 0; level < depth; level++) {
    value = level % 2 === 0 ? [value, level] : { level, value };
  }
  return value;
}

/**
 * How deep every storage must let a value nest (contract clause 3): the
 * value itself is level 1.
 */
const MAX_DEPTH = 256;

/** Values that stress an adapter's encoding. */
function trickyData(): JsonObject {
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

function oneMiBRecord(): StoredRecord {
  const pattern = "abcdefghijklmnopqrstuvwxyz0123456789\u00FC\u{1F600}\0";
  const text = pattern.repeat(Math.ceil(1024 * 1024 / pattern.length));
  return record(KIND, "big", {
    data: { text, list: Array.from({ length: 1000 }, (_, index) => index) },
  });
}

function finite(limit: number): boolean {
  return limit !== Infinity;
}

/**
 * How many digits {@linkcode wideKey} has: U+E000 to U+FFFF, each 3 bytes in
 * UTF-8 (the most per code unit), none a surrogate.
 */
const WIDE_DIGITS = 0x2000;

/**
 * A key of `length` code units, all among the widest, that ends with `n`'s
 * digits: keys for different `n` differ while `n < WIDE_DIGITS ** length`.
 */
function wideKey(length: number, n: number): string {
  const units = new Array<string>(length).fill("\uFFFF");
  for (let index = length - 1; n > 0 && index >= 0; index--) {
    units[index] = String.fromCharCode(0xFFFF - n % WIDE_DIGITS);
    n = Math.floor(n / WIDE_DIGITS);
  }
  return units.join("");
}

/**
 * The longest kind every storage holds, in UTF-16 code units (contract
 * clause 8): the wire contract's 64 characters.
 */
const LONGEST_KIND = 64;

/**
 * The longest record id every storage holds, in UTF-16 code units: the wire
 * contract's 256 code points, each up to two units.
 */
const LONGEST_ID = 512;

/** The longest kind the wire contract allows: 64 of `[A-Za-z0-9_-]`. */
const LONG_KIND = "K_-9".repeat(LONGEST_KIND / 4);

/**
 * Record ids of 256 code points, the wire contract's longest, most of them
 * astral (512 UTF-16 units), with NUL, `/` and `%`; several share all but
 * their last character, whose UTF-16 order differs from its code point
 * order. The last one is 512 BMP characters: within what every storage
 * holds, beyond what the wire carries.
 */
const LONG_IDS: readonly string[] = (() => {
  const emoji = "\u{1F600}";
  const stem = emoji.repeat(255);
  return [
    emoji.repeat(256),
    // A prefix of the next ones.
    stem,
    ...["\0", "%", "/", "a", "\u{10FFFF}", "\uFFFF", "\u{10000}"].map((
      last,
    ) => stem + last),
    "\0" + stem,
    "/" + stem,
    "%2F" + emoji.repeat(253),
    emoji.repeat(128) + "\0/%" + emoji.repeat(125),
    "x".repeat(256),
    "\uFFFF".repeat(LONGEST_ID),
  ];
})();

/**
 * A record id of 256 code points (511 UTF-16 units), all but two among the
 * widest, with NUL, `/` or `%`: ids for different `n` differ while
 * `n < 0x100000`.
 */
function longestId(n: number): string {
  return "\u{10FFFF}".repeat(254) + ["\0", "/", "%"][n % 3]! +
    String.fromCodePoint(0x10000 + n);
}

/** The values of a widest case: as first written, then as changed. */
interface Widest<T> {
  readonly created: T[];
  readonly changed: T[];
}

/**
 * How many items a widest case writes at once: `maxMutationsPerWrite`, or
 * 64 when it has no limit.
 */
function widestCount(capabilities: StorageCapabilities): number {
  const { maxMutationsPerWrite } = capabilities;
  return finite(maxMutationsPerWrite) ? maxMutationsPerWrite : 64;
}

/**
 * Ops whose op id is `maxKeyLength` wide characters (26 when it has no
 * limit) and whose kind and id are the longest, wide too; changed, each
 * moves to another state and record.
 */
function widestOps(capabilities: StorageCapabilities): Widest<StoredOp> {
  const { maxKeyLength } = capabilities;
  const length = finite(maxKeyLength) ? maxKeyLength : 26;
  const created = Array.from(
    { length: widestCount(capabilities) },
    (_, n) =>
      op(wideKey(length, n), {
        kind: wideKey(LONGEST_KIND, 0),
        id: longestId(0),
      }),
  );
  const changed = created.map((value): StoredOp => ({
    ...value,
    // The longest state name, for adapters that put it in a key.
    state: "quarantined",
    id: longestId(1),
  }));
  return { created, changed };
}

/** Records whose kind and id are the longest, in wide characters. */
function widestRecords(
  capabilities: StorageCapabilities,
): Widest<StoredRecord> {
  const created = Array.from(
    { length: widestCount(capabilities) },
    (_, n) => record(wideKey(LONGEST_KIND, 0), longestId(n), { data: { n } }),
  );
  const changed = created.map((value, n): StoredRecord => ({
    ...value,
    data: { n, changed: true },
    deleted: true,
  }));
  return { created, changed };
}

/** Whether the writes of a widest case can run within the limits. */
function widestFits<T>(
  capabilities: StorageCapabilities,
  build: (capabilities: StorageCapabilities) => Widest<T>,
  put: (value: T) => Mutation,
): boolean {
  const { maxKeyLength, maxWriteBytes } = capabilities;
  // Too short an op id to tell every op apart.
  if (WIDE_DIGITS ** maxKeyLength < widestCount(capabilities)) return false;
  const { created, changed } = build(capabilities);
  return [created, changed].every((values) =>
    writeBytes(values.map(put)) <= maxWriteBytes
  );
}

function byOpId(a: StoredOp, b: StoredOp): number {
  return a.opId < b.opId ? -1 : a.opId > b.opId ? 1 : 0;
}

function byId(a: StoredRecord, b: StoredRecord): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** Ops by kind, record id and state: the n-th is `opId(n)`, from 1. */
type OpLayout = readonly (readonly [string, string, StoredOp["state"]])[];

/**
 * Commits the ops of a layout and returns a listing that gives each listed
 * op's number in the layout.
 */
async function layOut(
  storage: Storage,
  layout: OpLayout,
): Promise<(options: ListOpsOptions) => Promise<number[]>> {
  await commit(
    storage,
    layout.map(([kind, id, state], index) =>
      putOp(op(opId(index + 1), { kind, id, state }))
    ),
  );
  return async (options) =>
    (await storage.listOps(options)).map((entry) =>
      Number(entry.value.opId.slice(3))
    );
}

/** Asserts that a number read back is zero, of either sign. */
function assertZero(value: unknown): void {
  assert.ok(
    Object.is(value, 0) || Object.is(value, -0),
    `Expected 0 or -0: current value is ${Deno.inspect(value)}`,
  );
}

/** Pads a putMeta so that the whole write is exactly `bytes` long. */
function padded(
  prefix: readonly Mutation[],
  key: string,
  bytes: number,
): Mutation[] {
  const base = writeBytes([...prefix, putMeta(key, "")]);
  if (base > bytes) {
    assert.fail(
      `Cannot build a write of ${bytes} bytes as its smallest form has ${base}`,
    );
  }
  const mutations = [...prefix, putMeta(key, "x".repeat(bytes - base))];
  assert.equal(writeBytes(mutations), bytes);
  return mutations;
}

async function rejectsWith(
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

/** Reads everything a case wrote, to compare before and after a reopen. */
async function snapshot(
  storage: Storage,
  kinds: readonly string[],
  metaKeys: readonly string[],
): Promise<unknown> {
  const records = [];
  for (const kind of kinds) {
    records.push(await storage.listRecords(kind, { includeDeleted: true }));
  }
  return {
    records,
    ops: await storage.listOps(),
    meta: await storage.getMeta(metaKeys),
  };
}

/** Every page of a listing, following `after` cursors. */
async function pages<T>(
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

/** Increments a meta counter, retrying while another writer wins. */
async function increment(storage: Storage, key: string): Promise<void> {
  for (let attempt = 0; attempt < 1000; attempt++) {
    const entry = await getMeta(storage, key);
    const value = typeof entry?.value === "number" ? entry.value : 0;
    const result = await storage.write([
      putMeta(key, value + 1, entry === undefined ? null : entry.rev),
    ]);
    if (result.ok) return;
  }
  assert.fail("Expected an optimistic increment to succeed within 1000 tries");
}

async function raceOnce(
  first: Storage,
  second: Storage,
  key: string,
  expect: Expect,
): Promise<void> {
  const [a, b] = await Promise.all([
    first.write([putRecord(record(KIND, key, { data: { by: "a" } }), expect)]),
    second.write([putRecord(record(KIND, key, { data: { by: "b" } }), expect)]),
  ]);
  assert.equal(
    Number(a.ok) + Number(b.ok),
    1,
    `Expected exactly one of two racing writes to win, got ${a.ok} and ${b.ok}`,
  );
  const stored = await getRecord(first, KIND, key);
  assert.deepEqual(stored?.value.data, { by: a.ok ? "a" : "b" });
  assert.deepEqual(await getRecord(second, KIND, key), stored);
}

async function race(first: Storage, second: Storage): Promise<void> {
  for (let round = 0; round < 10; round++) {
    const key = `race-${round}`;
    // Both create the record.
    await raceOnce(first, second, key, null);
    // Both update the version they read.
    await raceOnce(
      first,
      second,
      key,
      revOf(await getRecord(first, KIND, key)),
    );
  }
}

// ---------------------------------------------------------------------------
// The cases

const FIRST_CASE: Case = {
  clause: "capabilities are declared as data",
  async run({ storage, registered }): Promise<void> {
    assert.ok(
      registered,
      "Cannot run the storage suite as testStorage() was not awaited: await it at the top level of the test module",
    );
    const capabilities = storage.capabilities;
    assert.equal(typeof capabilities.persistent, "boolean");
    assert.equal(typeof capabilities.multiProcess, "boolean");
    for (
      const limit of [
        "maxMutationsPerWrite",
        "maxWriteBytes",
        "maxKeyLength",
      ] as const
    ) {
      const value = capabilities[limit];
      assert.ok(
        value === Infinity || (Number.isInteger(value) && value > 0),
        `Expected ${limit} to be a positive integer or Infinity: current value is ${value}`,
      );
    }
    assert.deepEqual(await call("getMeta()", () => storage.getMeta([])), []);
  },
};

const CASES: readonly Case[] = [
  {
    clause: "getRecords() returns undefined for absent records, in input order",
    async run({ storage }): Promise<void> {
      const a = record(KIND, "a", { data: { name: "a" } });
      const b = record(KIND, "b", { data: { name: "b" } });
      const c = record("other", "c", { data: { name: "c" } });
      await commit(storage, [putRecord(a), putRecord(b), putRecord(c)]);
      const entries = await storage.getRecords(KIND, ["b", "x", "a", "b", "c"]);
      assert.deepEqual(entries.map((entry) => entry?.value), [
        b,
        undefined,
        a,
        b,
        undefined,
      ]);
      assert.equal(entries[0]?.rev, entries[3]?.rev);
      assert.deepEqual(await storage.getRecords(KIND, []), []);
      assert.deepEqual(await storage.getRecords("missing", ["a"]), [undefined]);
    },
  },
  {
    clause:
      "getOps() and getMeta() return undefined for absent items, in input order",
    async run({ storage }): Promise<void> {
      await commit(storage, [
        putOp(op(opId(1))),
        putOp(op(opId(2))),
        putMeta("a", "A"),
        putMeta("b", "B"),
      ]);
      const ops = await storage.getOps([opId(2), opId(3), opId(1), opId(2)]);
      assert.deepEqual(ops.map((entry) => entry?.value), [
        op(opId(2)),
        undefined,
        op(opId(1)),
        op(opId(2)),
      ]);
      const meta = await storage.getMeta(["b", "c", "a", "b"]);
      assert.deepEqual(meta.map((entry) => entry?.value), [
        "B",
        undefined,
        "A",
        "B",
      ]);
      assert.deepEqual(await storage.getOps([]), []);
      assert.deepEqual(await storage.getMeta([]), []);
    },
  },
  {
    clause: "records round-trip with falsy values",
    async run({ storage }): Promise<void> {
      const records = [
        record(KIND, "", {
          data: {
            "": "",
            zero: 0,
            no: false,
            nil: null,
            list: [],
            object: {},
            nested: ["", 0, false, null, [], {}],
          },
        }),
        record(KIND, "0", {
          deleted: true,
          base: { data: {}, updatedAt: "", deleted: false },
          lastOpId: "",
          localUpdatedAt: 0,
        }),
        record("", "false", {
          data: { id: "false" },
          base: {
            data: { n: 0 },
            updatedAt: "1970-01-01T00:00:00.000Z",
            deleted: true,
          },
          lastOpId: opId(0),
          localUpdatedAt: 0,
        }),
      ];
      await commit(storage, records.map((value) => putRecord(value, null)));
      for (const value of records) {
        const entry = await getRecord(storage, value.kind, value.id);
        assert.deepEqual(entry?.value, value);
        revOf(entry);
      }
      assert.deepEqual(
        (await storage.listRecords(KIND, { includeDeleted: true })).map((
          entry,
        ) => entry.value),
        [records[0], records[1]],
      );
    },
  },
  {
    clause: "ops round-trip with falsy values",
    async run({ storage }): Promise<void> {
      const ops = [
        op(opId(1), {
          kind: "",
          id: "",
          type: "delete",
          payload: null,
          baseUpdatedAt: null,
          changedFields: null,
        }),
        op(opId(2), {
          payload: { "": "", n: 0, f: false, z: null },
          baseUpdatedAt: "",
          changedFields: [],
          state: "parked",
          error: {
            category: "",
            message: "",
            status: null,
            code: null,
            body: null,
            at: 0,
          },
          conflict: {
            server: null,
            serverUpdatedAt: null,
            local: null,
            base: null,
            detectedAt: 0,
          },
        }),
        op(opId(3), {
          changedFields: ["", "0"],
          state: "quarantined",
          force: true,
          attempts: 3,
          revision: 2,
          error: {
            category: "rejected",
            message: "x",
            status: 0,
            code: "",
            body: false,
            at: 1,
          },
          conflict: {
            server: {},
            serverUpdatedAt: "",
            local: {},
            base: {},
            detectedAt: 0,
          },
        }),
      ];
      await commit(storage, ops.map((value) => putOp(value, null)));
      const entries = await storage.getOps(ops.map((value) => value.opId));
      assert.deepEqual(entries.map((entry) => entry?.value), ops);
      entries.forEach(revOf);
      assert.deepEqual(
        (await storage.listOps()).map((entry) => entry.value),
        ops,
      );
    },
  },
  {
    clause: "meta round-trips every JSON value, falsy ones included",
    async run({ storage }): Promise<void> {
      const entries: [string, JsonValue][] = [
        ["", ""],
        ["0", 0],
        ["false", false],
        ["null", null],
        ["[]", []],
        ["{}", {}],
        ["true", true],
        ["number", -1.5],
        ["string", "x"],
        ["nested", { a: [0, "", false, null, {}, []] }],
      ];
      await commit(
        storage,
        entries.map(([key, value]) => putMeta(key, value, null)),
      );
      const keys = entries.map(([key]) => key);
      const read = await storage.getMeta([...keys, "absent"]);
      assert.deepEqual(read.map((entry) => entry?.value), [
        ...entries.map(([, value]) => value),
        undefined,
      ]);
      read.slice(0, -1).forEach(revOf);
    },
  },
  {
    clause:
      "values with NUL, emoji, lone surrogates and extreme numbers round-trip",
    async run({ storage }): Promise<void> {
      const data = trickyData();
      const value = record(KIND, "tricky", { data });
      const tricky = op(opId(1), { payload: data });
      await commit(storage, [
        putRecord(value),
        putOp(tricky),
        putMeta("tricky", data),
      ]);
      assert.deepEqual(
        (await getRecord(storage, KIND, "tricky"))?.value,
        value,
      );
      assert.deepEqual(
        (await storage.listRecords(KIND)).map((entry) => entry.value),
        [value],
      );
      assert.deepEqual((await getOp(storage, opId(1)))?.value, tricky);
      assert.deepEqual((await getMeta(storage, "tricky"))?.value, data);
    },
  },
  {
    clause: "numbers round-trip exactly, -0 as 0 or -0",
    async run({ storage }): Promise<void> {
      // Values are equal as JSON: JSON.stringify writes -0 as 0.
      const exact = {
        maxSafe: Number.MAX_SAFE_INTEGER,
        tiny: 1e-300,
        negative: -1.5,
      };
      const data: JsonObject = {
        negativeZero: -0,
        ...exact,
        list: [-0, ...Object.values(exact)],
      };
      await commit(storage, [
        putRecord(record(KIND, "numbers", { data })),
        putOp(op(opId(1), { payload: data })),
        putMeta("numbers", data),
        putMeta("negativeZero", -0),
      ]);
      const reads: unknown[] = [
        (await getRecord(storage, KIND, "numbers"))?.value.data,
        (await storage.listRecords(KIND))[0]?.value.data,
        (await getOp(storage, opId(1)))?.value.payload,
        (await storage.listOps())[0]?.value.payload,
        (await getMeta(storage, "numbers"))?.value,
      ];
      for (const read of reads) {
        const { negativeZero, list, ...rest } = read as {
          negativeZero: unknown;
          list: unknown[];
        };
        assertZero(negativeZero);
        // Strict deep equality compares numbers with Object.is.
        assert.deepEqual(rest, exact);
        assert.equal(list.length, 4);
        assertZero(list[0]);
        assert.deepEqual(list.slice(1), Object.values(exact));
      }
      assertZero((await getMeta(storage, "negativeZero"))?.value);
    },
  },
  {
    clause: "__proto__ and constructor keys survive as data",
    async run({ storage }): Promise<void> {
      const data = JSON.parse(PROTO_JSON) as JsonObject;
      const value = record(KIND, "__proto__", { data });
      const proto = op("__proto__", { id: "__proto__", payload: data });
      await commit(storage, [
        putRecord(value),
        putOp(proto),
        putMeta("__proto__", data),
        putMeta("constructor", [data]),
      ]);
      const reads: unknown[] = [
        (await getRecord(storage, KIND, "__proto__"))?.value.data,
        (await storage.listRecords(KIND))[0]?.value.data,
        (await getOp(storage, "__proto__"))?.value.payload,
        (await storage.listOps({ kinds: [KIND], id: "__proto__" }))[0]?.value
          .payload,
        (await getMeta(storage, "__proto__"))?.value,
        ((await getMeta(storage, "constructor"))?.value as JsonValue[])[0],
      ];
      for (const read of reads) {
        assert.deepEqual(read, data);
        assert.ok(Object.hasOwn(read as object, "__proto__"));
        assert.equal(Object.getPrototypeOf(read), Object.prototype);
        const nestedItem = (read as { nested: object[] }).nested[0];
        assert.ok(Object.hasOwn(nestedItem as object, "__proto__"));
      }
      assert.equal(({} as Record<string, unknown>)["polluted"], undefined);
    },
  },
  {
    clause: "keys with /, NUL, unicode and 2 KiB round-trip",
    async run({ storage }): Promise<void> {
      // An op id or meta key beyond the declared maxKeyLength, or a record
      // id beyond the contract's 512 code units, is the limit cases'
      // business.
      const ODD_KEYS = ALL_ODD_KEYS.filter((key) =>
        key.length <= storage.capabilities.maxKeyLength
      );
      const ODD_IDS = ALL_ODD_KEYS.filter((key) => key.length <= LONGEST_ID);
      await commit(storage, [
        ...ODD_IDS.map((key) =>
          putRecord(record(KIND, key, { data: { n: key.length } }))
        ),
        ...ODD_KEYS.map((key) => putOp(op(key, { id: shortId(key) }))),
        ...ODD_KEYS.map((key) => putMeta(key, key.length)),
      ]);
      const sorted = [...ODD_KEYS].sort();
      const records = await storage.getRecords(KIND, ODD_IDS);
      assert.deepEqual(
        records.map((entry) => entry?.value),
        ODD_IDS.map((key) => record(KIND, key, { data: { n: key.length } })),
      );
      assert.deepEqual(
        (await storage.listRecords(KIND)).map((entry) => entry.value.id),
        [...ODD_IDS].sort(),
      );
      const ops = await storage.getOps(ODD_KEYS);
      assert.deepEqual(
        ops.map((entry) => entry?.value),
        ODD_KEYS.map((key) => op(key, { id: shortId(key) })),
      );
      assert.deepEqual(
        (await storage.listOps()).map((entry) => entry.value.opId),
        sorted,
      );
      for (const key of ODD_KEYS) {
        const [entry] = await storage.listOps({
          kinds: [KIND],
          id: shortId(key),
        });
        assert.equal(entry?.value.opId, key);
      }
      const meta = await storage.getMeta(ODD_KEYS);
      assert.deepEqual(
        meta.map((entry) => entry?.value),
        ODD_KEYS.map((key) => key.length),
      );
    },
  },
  {
    clause: "keys that look alike when joined do not collide",
    async run({ storage }): Promise<void> {
      const pairs: [string, string][] = [
        ["a", "b"],
        ["a", "b/c"],
        ["a/b", "c"],
        ["a", "b\0c"],
        ["a\0b", "c"],
        ["a", "b:c"],
        ["a:b", "c"],
        ["ab", "c"],
        ["a", "bc"],
      ];
      await commit(
        storage,
        pairs.map(([kind, id]) =>
          putRecord(record(kind, id, { data: { kind, id } }), null)
        ),
      );
      // The same string in every space is a different item in each.
      await commit(storage, [
        putOp(op("a", { kind: "a", id: "a" }), null),
        putMeta("a", "meta", null),
        putRecord(record("meta", "a"), null),
      ]);
      for (const [kind, id] of pairs) {
        const entry = await getRecord(storage, kind, id);
        assert.deepEqual(entry?.value.data, { kind, id });
      }
      assert.deepEqual(
        (await storage.listRecords("a")).map((entry) => entry.value.id),
        ["b", "b\0c", "b/c", "b:c", "bc"],
      );
      for (const kind of ["a/b", "a\0b", "a:b", "ab"]) {
        assert.deepEqual(
          (await storage.listRecords(kind)).map((entry) => entry.value.id),
          ["c"],
        );
      }
      assert.equal(await getRecord(storage, "a", "a"), undefined);
      assert.equal((await getMeta(storage, "a"))?.value, "meta");
      assert.equal((await getOp(storage, "a"))?.value.kind, "a");
      assert.deepEqual(
        (await storage.listRecords("meta")).map((entry) => entry.value.id),
        ["a"],
      );
    },
  },
  {
    clause: "returned values are not shared with the caller",
    async run({ storage }): Promise<void> {
      const value = record(KIND, "1", { data: { tags: ["a"], n: 1 } });
      const shared = op(opId(1), { payload: { tags: ["a"] } });
      const meta: JsonObject = { tags: ["a"] };
      await commit(storage, [
        putRecord(value),
        putOp(shared),
        putMeta("m", meta),
      ]);
      // Changing what was written does not reach the store.
      (value.data["tags"] as JsonValue[]).push("written");
      (shared.payload!["tags"] as JsonValue[]).push("written");
      (meta["tags"] as JsonValue[]).push("written");
      const reads = async (): Promise<unknown[]> => [
        (await getRecord(storage, KIND, "1"))?.value.data,
        (await storage.listRecords(KIND))[0]?.value.data,
        (await getOp(storage, opId(1)))?.value.payload,
        (await storage.listOps())[0]?.value.payload,
        (await getMeta(storage, "m"))?.value,
      ];
      const first = await reads();
      for (const read of first) {
        assert.deepEqual((read as { tags: unknown }).tags, ["a"]);
        // Changing what was read does not reach the store either.
        (read as { tags: string[] }).tags.push("read");
        (read as Record<string, unknown>)["added"] = true;
      }
      const second = await reads();
      for (const [index, read] of second.entries()) {
        assert.deepEqual((read as { tags: unknown }).tags, ["a"]);
        assert.equal((read as Record<string, unknown>)["added"], undefined);
        assert.notEqual(read, first[index]);
      }
    },
  },
  {
    clause: "write() is all-or-nothing",
    async run({ storage }): Promise<void> {
      await commit(storage, [
        putMeta("x", 1),
        putRecord(record(KIND, "a", { data: { version: 1 } })),
      ]);
      const stale = revOf(await getMeta(storage, "x"));
      await commit(storage, [putMeta("x", 2)]);
      const x = await getMeta(storage, "x");
      const a = await getRecord(storage, KIND, "a");
      // The last mutation's expect fails.
      await refused(storage, [
        putRecord(record(KIND, "b")),
        putRecord(record(KIND, "a", { data: { version: 2 } }), revOf(a)),
        putOp(op(opId(1))),
        putMeta("y", true),
        deleteRecord(KIND, "a"),
        putMeta("x", 3, stale),
      ]);
      // The first mutation's expect fails.
      await refused(storage, [
        putRecord(record(KIND, "a", { data: { version: 3 } }), null),
        putRecord(record(KIND, "b")),
        deleteMeta("x"),
      ]);
      assert.deepEqual(await getMeta(storage, "x"), x);
      assert.deepEqual(await getRecord(storage, KIND, "a"), a);
      assert.equal(await getRecord(storage, KIND, "b"), undefined);
      assert.equal(await getOp(storage, opId(1)), undefined);
      assert.equal(await getMeta(storage, "y"), undefined);
      assert.deepEqual(await storage.listOps(), []);
      assert.equal((await storage.listRecords(KIND)).length, 1);
    },
  },
  {
    clause: "expect null requires the item to be absent",
    async run({ storage }): Promise<void> {
      for (const space of SPACES) {
        const key = `${space.name}-1`;
        await succeeds(storage, [space.put(key, 1, null)]);
        const rev = await holds(storage, space, key, 1);
        await refused(storage, [space.put(key, 2, null)]);
        await refused(storage, [space.remove(key, null)]);
        assert.equal(await holds(storage, space, key, 1), rev);
        await succeeds(storage, [space.remove(key)]);
        await succeeds(storage, [space.remove(key, null)]);
        await absent(storage, space, key);
        await succeeds(storage, [space.put(key, 3, null)]);
        await holds(storage, space, key, 3);
      }
    },
  },
  {
    clause: "expect rev requires the current revision",
    async run({ storage }): Promise<void> {
      for (const space of SPACES) {
        const key = `${space.name}-1`;
        await commit(storage, [space.put(key, 1)]);
        const first = await holds(storage, space, key, 1);
        await succeeds(storage, [space.put(key, 2, first)]);
        const second = await holds(storage, space, key, 2);
        assert.notEqual(second, first);
        await refused(storage, [space.put(key, 3, first)]);
        await refused(storage, [space.remove(key, first)]);
        assert.equal(await holds(storage, space, key, 2), second);
        await succeeds(storage, [space.remove(key, second)]);
        await absent(storage, space, key);
        await refused(storage, [space.put(key, 4, second)]);
        await refused(storage, [space.remove(key, second)]);
        await absent(storage, space, key);
      }
    },
  },
  {
    clause: "a revision changes on every write of an item",
    async run({ storage }): Promise<void> {
      for (const space of SPACES) {
        const key = `${space.name}-1`;
        const revs = new Set<string>();
        for (let write = 0; write < 5; write++) {
          // The same value each time: the revision still changes.
          await commit(storage, [space.put(key, 1)]);
          revs.add(await holds(storage, space, key, 1));
        }
        await succeeds(storage, [space.put(key, 1), space.put(key, 1)]);
        revs.add(await holds(storage, space, key, 1));
        assert.equal(revs.size, 6, `Expected 6 distinct ${space.name} revs`);
      }
    },
  },
  {
    clause: "a revision never repeats after delete and re-create",
    async run({ storage }): Promise<void> {
      for (const space of SPACES) {
        const key = `${space.name}-1`;
        const revs: string[] = [];
        for (let cycle = 0; cycle < 5; cycle++) {
          await succeeds(storage, [space.put(key, cycle, null)]);
          revs.push(await holds(storage, space, key, cycle));
          await succeeds(storage, [space.remove(key, revs.at(-1))]);
          await absent(storage, space, key);
        }
        await succeeds(storage, [space.put(key, 9, null)]);
        revs.push(await holds(storage, space, key, 9));
        assert.equal(
          new Set(revs).size,
          revs.length,
          `Expected distinct ${space.name} revs: ${revs.join(", ")}`,
        );
        for (const stale of revs.slice(0, -1)) {
          await refused(storage, [space.put(key, 10, stale)]);
        }
        await holds(storage, space, key, 9);
      }
    },
  },
  {
    clause: "expects are checked against the state before the write",
    async run({ storage }): Promise<void> {
      const [records, ops, meta] = SPACES as [Space, Space, Space];
      await commit(storage, [records.put("x", 0), meta.put("w", 0)]);
      const x = await holds(storage, records, "x", 0);
      // Both mutations expect the revision the item has before the write.
      await succeeds(storage, [records.put("x", 1, x), records.put("x", 2, x)]);
      await holds(storage, records, "x", 2);
      // Both expect the item to be absent, as it is before the write.
      await succeeds(storage, [ops.put("y", 1, null), ops.put("y", 2, null)]);
      await holds(storage, ops, "y", 2);
      await succeeds(storage, [meta.put("z", 1, null), meta.remove("z", null)]);
      await absent(storage, meta, "z");
      // The item exists before the write, so expecting absence fails even
      // after an earlier mutation of the same write deleted it.
      const w = await holds(storage, meta, "w", 0);
      await refused(storage, [meta.remove("w", w), meta.put("w", 1, null)]);
      assert.equal(await holds(storage, meta, "w", 0), w);
    },
  },
  {
    clause: "a later mutation of the same item in one write wins",
    async run({ storage }): Promise<void> {
      const [records, ops, meta] = SPACES as [Space, Space, Space];
      await commit(storage, [ops.put(opId(1), 0)]);
      await succeeds(storage, [records.put("a", 1), records.put("a", 2)]);
      await holds(storage, records, "a", 2);
      await succeeds(storage, [meta.put("m", 1), meta.remove("m")]);
      await absent(storage, meta, "m");
      await succeeds(storage, [ops.remove(opId(1)), ops.put(opId(1), 3)]);
      await holds(storage, ops, opId(1), 3);
      await succeeds(storage, [
        putOp(op(opId(2), { state: "pending" })),
        putOp(op(opId(2), { state: "parked" })),
      ]);
      const parked = await storage.listOps({ states: ["parked"] });
      assert.deepEqual(parked.map((entry) => entry.value.opId), [opId(2)]);
      const pending = await storage.listOps({ states: ["pending"] });
      assert.deepEqual(pending.map((entry) => entry.value.opId), [opId(1)]);
    },
  },
  {
    clause: "an empty write resolves ok and changes nothing",
    async run({ storage }): Promise<void> {
      await commit(storage, [putMeta("x", 1)]);
      const before = await getMeta(storage, "x");
      await succeeds(storage, []);
      assert.deepEqual(await getMeta(storage, "x"), before);
    },
  },
  {
    clause: "deleting an absent item resolves ok and changes nothing",
    async run({ storage }): Promise<void> {
      await commit(storage, [putMeta("other", 1)]);
      const other = await getMeta(storage, "other");
      await succeeds(storage, [
        deleteRecord(KIND, "absent"),
        deleteOp(opId(1)),
        deleteMeta("absent"),
      ]);
      for (const space of SPACES) {
        await absent(storage, space, space.name === "op" ? opId(1) : "absent");
      }
      assert.deepEqual(
        await storage.listRecords(KIND, { includeDeleted: true }),
        [],
      );
      assert.deepEqual(await storage.listOps(), []);
      assert.deepEqual(await getMeta(storage, "other"), other);
    },
  },
  {
    clause: "listRecords() orders ids by UTF-16 code units",
    async run({ storage }): Promise<void> {
      // One write per record, so the order cannot come from one batch.
      for (const id of ORDER_KEYS) {
        await succeeds(storage, [putRecord(record(KIND, id))]);
      }
      const ids = (await storage.listRecords(KIND)).map((entry) =>
        entry.value.id
      );
      assert.deepEqual(ids, [...ORDER_KEYS].sort());
      assert.ok(ids.indexOf("\u{1F600}") < ids.indexOf("\uFF5E"));
      assert.ok(ids.indexOf("\u{10000}") < ids.indexOf("\uE000"));
    },
  },
  {
    clause: "listOps() orders op ids by UTF-16 code units",
    async run({ storage }): Promise<void> {
      for (const id of ORDER_KEYS) {
        await succeeds(storage, [putOp(op(id))]);
      }
      const ids = (await storage.listOps()).map((entry) => entry.value.opId);
      assert.deepEqual(ids, [...ORDER_KEYS].sort());
      assert.ok(ids.indexOf("\u{1F600}") < ids.indexOf("\uFF5E"));
    },
  },
  {
    clause: "listRecords() hides deleted records unless includeDeleted is set",
    async run({ storage }): Promise<void> {
      await commit(storage, [
        putRecord(record(KIND, "a")),
        putRecord(record(KIND, "b", { deleted: true })),
        putRecord(record(KIND, "c")),
        putRecord(record(KIND, "d", { deleted: true })),
      ]);
      const ids = async (
        options: Parameters<Storage["listRecords"]>[1],
      ): Promise<string[]> =>
        (await storage.listRecords(KIND, options)).map((entry) =>
          entry.value.id
        );
      assert.deepEqual(await ids(undefined), ["a", "c"]);
      assert.deepEqual(await ids({ includeDeleted: false }), ["a", "c"]);
      assert.deepEqual(await ids({ includeDeleted: true }), [
        "a",
        "b",
        "c",
        "d",
      ]);
      assert.deepEqual(await ids({ limit: 2 }), ["a", "c"]);
      assert.deepEqual(await ids({ after: "a", limit: 1 }), ["c"]);
      // getRecords() reads by id, deleted or not.
      const [b] = await storage.getRecords(KIND, ["b"]);
      assert.equal(b?.value.deleted, true);
    },
  },
  {
    clause: "listRecords() lists only the given kind",
    async run({ storage }): Promise<void> {
      const kinds = ["a", "ab", "a/b", "b", "", "A"];
      await commit(
        storage,
        kinds.map((kind) => putRecord(record(kind, `${kind}-1`))),
      );
      for (const kind of kinds) {
        assert.deepEqual(
          (await storage.listRecords(kind)).map((entry) => entry.value.id),
          [`${kind}-1`],
        );
      }
      assert.deepEqual(await storage.listRecords("missing"), []);
    },
  },
  {
    clause:
      "listRecords() pages with after and limit, covering every record once",
    async run({ storage }): Promise<void> {
      const ids = Array.from(
        { length: 30 },
        (_, index) => `r${String(index).padStart(2, "0")}`,
      ).concat(["\u{1F600}", "\uFF5E", "r05\0"]);
      await commit(
        storage,
        ids.map((id, index) =>
          putRecord(record(KIND, id, { deleted: index % 3 === 0 }))
        ),
      );
      for (const includeDeleted of [false, true]) {
        const all = await storage.listRecords(KIND, { includeDeleted });
        assert.equal(all.length, includeDeleted ? 33 : 22);
        for (const limit of [1, 2, 7, 33, 34]) {
          const paged = await pages(
            (after) =>
              storage.listRecords(
                KIND,
                after === undefined
                  ? { includeDeleted, limit }
                  : { includeDeleted, limit, after },
              ),
            (entry) => entry.value.id,
            limit,
          );
          assert.deepEqual(paged, all, `limit ${limit}`);
        }
      }
      const ids2 = async (after: string, limit?: number): Promise<string[]> =>
        (await storage.listRecords(
          KIND,
          limit === undefined
            ? { after, includeDeleted: true }
            : { after, limit, includeDeleted: true },
        )).map((entry) => entry.value.id);
      // A cursor need not name a stored record.
      assert.deepEqual(await ids2("r05\0\0", 2), ["r06", "r07"]);
      assert.deepEqual(await ids2("\uFFFF"), []);
      assert.deepEqual(await ids2("", 0), []);
      assert.deepEqual(
        await storage.listRecords(KIND, { limit: 0, includeDeleted: true }),
        [],
      );
    },
  },
  {
    clause: "listOps() filters by states, kinds and id",
    async run({ storage }): Promise<void> {
      const layout: OpLayout = [
        ["todo", "a", "pending"],
        ["todo", "b", "quarantined"],
        ["note", "a", "parked"],
        ["todo", "a", "parked"],
        ["note", "b", "pending"],
        ["todo", "a", "pending"],
        ["todo2", "a", "pending"],
      ];
      const list = await layOut(storage, layout);
      assert.deepEqual(await list({}), [1, 2, 3, 4, 5, 6, 7]);
      assert.deepEqual(await list({ states: ["pending"] }), [1, 5, 6, 7]);
      assert.deepEqual(await list({ states: ["quarantined", "parked"] }), [
        2,
        3,
        4,
      ]);
      assert.deepEqual(await list({ states: [] }), []);
      assert.deepEqual(await list({ kinds: ["todo"] }), [1, 2, 4, 6]);
      assert.deepEqual(await list({ kinds: ["todo", "note"] }), [
        1,
        2,
        3,
        4,
        5,
        6,
      ]);
      assert.deepEqual(await list({ kinds: [] }), []);
      assert.deepEqual(await list({ kinds: ["missing"] }), []);
      assert.deepEqual(await list({ kinds: ["todo"], id: "a" }), [1, 4, 6]);
      assert.deepEqual(await list({ kinds: ["note"], id: "a" }), [3]);
      assert.deepEqual(await list({ kinds: ["todo"], id: "zzz" }), []);
      assert.deepEqual(
        await list({ kinds: ["todo"], id: "a", states: ["pending"] }),
        [1, 6],
      );
      assert.deepEqual(
        await list({
          kinds: ["todo"],
          id: "a",
          states: ["pending"],
          after: opId(1),
        }),
        [6],
      );
      assert.deepEqual(await list({ kinds: ["todo"], id: "a", limit: 2 }), [
        1,
        4,
      ]);
      assert.deepEqual(await list({ states: ["pending"], limit: 2 }), [1, 5]);
      assert.deepEqual(
        await list({ states: ["pending"], limit: 2, after: opId(5) }),
        [6, 7],
      );
      assert.deepEqual(await list({ after: opId(3) }), [4, 5, 6, 7]);
      assert.deepEqual(await list({ limit: 0 }), []);
    },
  },
  {
    clause: "listOps() with id and no kinds matches that id in every kind",
    async run({ storage }): Promise<void> {
      const layout: OpLayout = [
        ["todo", "a", "pending"],
        ["note", "a", "parked"],
        ["todo", "ab", "pending"],
        ["a", "b", "pending"],
        ["", "a", "quarantined"],
        ["todo", "", "pending"],
        ["note", "A", "pending"],
        ["x", "a", "pending"],
      ];
      const list = await layOut(storage, layout);
      assert.deepEqual(await list({ id: "a" }), [1, 2, 5, 8]);
      assert.deepEqual(await list({ id: "a", states: ["pending"] }), [1, 8]);
      assert.deepEqual(await list({ id: "a", after: opId(2) }), [5, 8]);
      assert.deepEqual(await list({ id: "a", limit: 2 }), [1, 2]);
      assert.deepEqual(await list({ id: "" }), [6]);
      assert.deepEqual(await list({ id: "b" }), [4]);
      assert.deepEqual(await list({ id: "ab" }), [3]);
      assert.deepEqual(await list({ id: "zzz" }), []);
      assert.deepEqual(await list({ id: "a", kinds: [] }), []);
      // Moving an op to another record moves it between the matches.
      await succeeds(storage, [
        putOp(op(opId(2), { kind: "note", id: "b", state: "parked" })),
      ]);
      assert.deepEqual(await list({ id: "a" }), [1, 5, 8]);
      assert.deepEqual(await list({ id: "b" }), [2, 4]);
    },
  },
  {
    clause: "listOps() reflects an op's latest state, kind and id",
    async run({ storage }): Promise<void> {
      await commit(storage, [putOp(op(opId(1), { kind: "todo", id: "a" }))]);
      const list = async (options: ListOpsOptions): Promise<string[]> =>
        (await storage.listOps(options)).map((entry) => entry.value.opId);
      assert.deepEqual(await list({ states: ["pending"] }), [opId(1)]);
      await succeeds(storage, [
        putOp(op(opId(1), { kind: "todo", id: "a", state: "quarantined" })),
      ]);
      assert.deepEqual(await list({ states: ["pending"] }), []);
      assert.deepEqual(await list({ states: ["quarantined"] }), [opId(1)]);
      await succeeds(storage, [
        putOp(op(opId(1), { kind: "note", id: "b", state: "quarantined" })),
      ]);
      assert.deepEqual(await list({ kinds: ["todo"], id: "a" }), []);
      assert.deepEqual(await list({ kinds: ["todo"] }), []);
      assert.deepEqual(await list({ kinds: ["note"], id: "b" }), [opId(1)]);
      await succeeds(storage, [deleteOp(opId(1))]);
      assert.deepEqual(await list({}), []);
      assert.deepEqual(await list({ kinds: ["note"], id: "b" }), []);
      assert.deepEqual(await list({ states: ["quarantined"] }), []);
    },
  },
  {
    clause: "listOps() pages with after and limit, covering every op once",
    async run({ storage }): Promise<void> {
      const states = ["pending", "quarantined", "parked"] as const;
      await commit(
        storage,
        Array.from({ length: 40 }, (_, index) =>
          putOp(op(opId(index), {
            state: states[index % 3]!,
            id: String(index % 4),
          }))),
      );
      const filters: ListOpsOptions[] = [
        {},
        { states: ["pending"] },
        { kinds: [KIND], id: "1" },
        { states: ["parked", "quarantined"], kinds: [KIND] },
      ];
      for (const filter of filters) {
        const all = await storage.listOps(filter);
        assert.ok(all.length > 0);
        for (const limit of [1, 3, 40, 41]) {
          const paged = await pages(
            (after) =>
              storage.listOps(
                after === undefined
                  ? { ...filter, limit }
                  : { ...filter, limit, after },
              ),
            (entry) => entry.value.opId,
            limit,
          );
          assert.deepEqual(paged, all, `${JSON.stringify(filter)} ${limit}`);
        }
      }
    },
  },
  {
    clause: "write() returns each item's new revision, null for removed items",
    async run({ storage }): Promise<void> {
      await commit(storage, [
        putRecord(record(KIND, "gone")),
        putMeta("gone", 1),
      ]);
      const result = await storage.write([
        putRecord(record(KIND, "a", { data: { n: 1 } })),
        putOp(op(opId(1))),
        putMeta("m", 1),
        { type: "deleteRecord", kind: KIND, id: "gone" },
        { type: "deleteMeta", key: "gone" },
        { type: "deleteMeta", key: "never-there" },
        putMeta("m", 2),
      ]);
      assert.ok(
        result.ok,
        "write() resolved { ok: false } where it should commit",
      );
      assert.equal(result.revs.length, 7);
      const [recordEntry] = await storage.getRecords(KIND, ["a"]);
      const [opEntry] = await storage.getOps([opId(1)]);
      const [metaEntry] = await storage.getMeta(["m"]);
      assert.equal(result.revs[0], recordEntry?.rev);
      assert.equal(result.revs[1], opEntry?.rev);
      assert.equal(
        result.revs[2],
        metaEntry?.rev,
        "the item's rev after the write",
      );
      assert.equal(result.revs[6], metaEntry?.rev);
      assert.deepEqual(result.revs.slice(3, 6), [null, null, null]);
      // A returned revision is good for the next expect.
      await succeeds(storage, [{
        ...putMeta("m", 3),
        expect: result.revs[2]!,
      }]);
    },
  },
  {
    clause: "write() accepts op ids and meta keys of exactly maxKeyLength",
    needs: ({ capabilities }) => finite(capabilities.maxKeyLength),
    async run({ storage }): Promise<void> {
      const max = storage.capabilities.maxKeyLength;
      // Unicode at the end: a limit counted in bytes instead of code units,
      // or a key cut short, shows up here.
      const key = "k".repeat(max - 2) + "\u{1F600}";
      assert.equal(key.length, max);
      await commit(storage, [putOp(op(key, { kind: LONG_KIND }))]);
      await commit(storage, [putMeta(key, 1)]);
      assert.equal((await storage.getOps([key]))[0]?.value.opId, key);
      assert.equal((await getMeta(storage, key))?.value, 1);
      const [listed] = await storage.listOps({ kinds: [LONG_KIND], id: "1" });
      assert.equal(listed?.value.opId, key);
    },
  },
  {
    clause:
      "write() rejects an op id or meta key of maxKeyLength + 1 with a StorageError and commits nothing",
    needs: ({ capabilities }) => finite(capabilities.maxKeyLength),
    async run({ storage }): Promise<void> {
      const max = storage.capabilities.maxKeyLength;
      const long = "k".repeat(max + 1);
      const writes: Mutation[][] = [
        [putMeta("before", 1), putOp(op(long))],
        [putMeta("before", 1), putMeta(long, 1)],
      ];
      for (const mutations of writes) {
        await rejectsWith(storage.write(mutations), StorageError, max);
      }
      assert.equal(await getMeta(storage, "before"), undefined);
      assert.deepEqual(await storage.listOps(), []);
    },
  },
  {
    clause:
      "records with the longest kinds and ids round-trip: read, list, page, update and delete",
    async run({ storage }): Promise<void> {
      const other = LONG_KIND.slice(0, -1) + "8";
      await commit(storage, [
        ...LONG_IDS.map((id) => putRecord(record(LONG_KIND, id), null)),
        putRecord(record(other, LONG_IDS[0]!, { data: { other: true } })),
      ]);
      const sorted = [...LONG_IDS].sort();
      const entries = await storage.getRecords(LONG_KIND, LONG_IDS);
      assert.deepEqual(
        entries.map((entry) => entry?.value),
        LONG_IDS.map((id) => record(LONG_KIND, id)),
      );
      const list = async (after?: string, limit?: number) =>
        (await storage.listRecords(LONG_KIND, {
          ...(after === undefined ? {} : { after }),
          ...(limit === undefined ? {} : { limit }),
        })).map((entry) => entry.value.id);
      assert.deepEqual(await list(), sorted);
      assert.deepEqual(await pages((after) => list(after, 3), String, 3), [
        ...sorted,
      ]);
      for (const [index, after] of sorted.entries()) {
        assert.deepEqual(
          await list(after, 2),
          sorted.slice(index + 1, index + 3),
          `Expected the two ids after ${index}`,
        );
      }
      // A cursor that is no stored id, between two that share 255
      // characters.
      assert.deepEqual(
        await list("\u{1F600}".repeat(255) + "b"),
        sorted.filter((id) => id > "\u{1F600}".repeat(255) + "b"),
      );
      assert.deepEqual(
        (await storage.listRecords(other)).map((entry) => entry.value.data),
        [{ other: true }],
      );
      const changed = LONG_IDS.map((id, n) =>
        record(LONG_KIND, id, { data: { n }, deleted: true })
      );
      await commit(
        storage,
        changed.map((value, n) => putRecord(value, entries[n]!.rev)),
      );
      const updated = await storage.getRecords(LONG_KIND, LONG_IDS);
      assert.deepEqual(updated.map((entry) => entry?.value), changed);
      assert.deepEqual(await list(), []);
      assert.deepEqual(
        (await storage.listRecords(LONG_KIND, { includeDeleted: true })).map(
          (entry) => entry.value,
        ),
        [...changed].sort(byId),
      );
      await commit(
        storage,
        LONG_IDS.map((id, n) => deleteRecord(LONG_KIND, id, updated[n]!.rev)),
      );
      assert.ok(
        (await storage.getRecords(LONG_KIND, LONG_IDS)).every((entry) =>
          entry === undefined
        ),
      );
      assert.deepEqual(
        await storage.listRecords(LONG_KIND, { includeDeleted: true }),
        [],
      );
      assert.equal((await storage.listRecords(other)).length, 1);
    },
  },
  {
    clause:
      "ops with the longest kinds and ids round-trip: read, list by record, update and delete",
    async run({ storage }): Promise<void> {
      const ops = LONG_IDS.map((id, n) => op(opId(n), { kind: LONG_KIND, id }));
      await commit(storage, ops.map((value) => putOp(value, null)));
      const opIds = ops.map((value) => value.opId);
      const entries = await storage.getOps(opIds);
      assert.deepEqual(entries.map((entry) => entry?.value), ops);
      for (const value of ops) {
        for (const kinds of [[LONG_KIND], undefined]) {
          const listed = await storage.listOps({
            id: value.id,
            ...(kinds === undefined ? {} : { kinds }),
          });
          assert.deepEqual(listed.map((entry) => entry.value), [value]);
        }
      }
      // Each op moves to the next op's record and out of the live queue.
      const changed = ops.map((value, n): StoredOp => ({
        ...value,
        id: LONG_IDS[(n + 1) % LONG_IDS.length]!,
        state: "quarantined",
      }));
      await commit(
        storage,
        changed.map((value, n) => putOp(value, entries[n]!.rev)),
      );
      const updated = await storage.getOps(opIds);
      assert.deepEqual(updated.map((entry) => entry?.value), changed);
      for (const value of changed) {
        const listed = await storage.listOps({
          kinds: [LONG_KIND],
          id: value.id,
        });
        assert.deepEqual(listed.map((entry) => entry.value), [value]);
      }
      assert.deepEqual(await storage.listOps({ states: ["pending"] }), []);
      assert.deepEqual(
        (await storage.listOps({ states: ["quarantined"] })).map((entry) =>
          entry.value
        ),
        changed,
      );
      await commit(
        storage,
        opIds.map((id, n) => deleteOp(id, updated[n]!.rev)),
      );
      assert.deepEqual(await storage.listOps(), []);
      assert.deepEqual(await storage.listOps({ id: LONG_IDS[0]! }), []);
    },
  },
  {
    // The worst write the declared limits allow: an adapter that derives
    // its limits from a budget per write (Deno KV caps the keys of one
    // atomic operation at 80 KiB) shows here that its limits fit it.
    clause:
      "write() accepts maxMutationsPerWrite ops with the longest kinds, ids and op ids in wide characters",
    needs: ({ capabilities }) => widestFits(capabilities, widestOps, putOp),
    async run({ storage }): Promise<void> {
      const { created, changed } = widestOps(storage.capabilities);
      const opIds = created.map((value) => value.opId);
      assert.equal(new Set(opIds).size, opIds.length);
      await succeeds(storage, created.map((value) => putOp(value, null)));
      const entries = await storage.getOps(opIds);
      assert.deepEqual(entries.map((entry) => entry?.value), created);
      await succeeds(
        storage,
        changed.map((value, n) => putOp(value, entries[n]!.rev)),
      );
      const updated = await storage.getOps(opIds);
      assert.deepEqual(updated.map((entry) => entry?.value), changed);
      const { kind, id } = changed[0]!;
      assert.deepEqual(
        (await storage.listOps({ kinds: [kind], id })).map((entry) =>
          entry.value
        ),
        [...changed].sort(byOpId),
      );
      assert.deepEqual(
        await storage.listOps({ kinds: [kind], id: created[0]!.id }),
        [],
      );
      assert.deepEqual(await storage.listOps({ states: ["pending"] }), []);
      await succeeds(
        storage,
        opIds.map((opId, n) => deleteOp(opId, updated[n]!.rev)),
      );
      assert.deepEqual(await storage.listOps(), []);
    },
  },
  {
    clause:
      "write() accepts maxMutationsPerWrite records with the longest kinds and ids in wide characters",
    needs: ({ capabilities }) =>
      widestFits(capabilities, widestRecords, putRecord),
    async run({ storage }): Promise<void> {
      const { created, changed } = widestRecords(storage.capabilities);
      const { kind } = created[0]!;
      const ids = created.map((value) => value.id);
      assert.equal(new Set(ids).size, ids.length);
      await succeeds(storage, created.map((value) => putRecord(value, null)));
      const entries = await storage.getRecords(kind, ids);
      assert.deepEqual(entries.map((entry) => entry?.value), created);
      await succeeds(
        storage,
        changed.map((value, n) => putRecord(value, entries[n]!.rev)),
      );
      const updated = await storage.getRecords(kind, ids);
      assert.deepEqual(updated.map((entry) => entry?.value), changed);
      assert.deepEqual(
        (await storage.listRecords(kind, { includeDeleted: true })).map((
          entry,
        ) => entry.value),
        [...changed].sort(byId),
      );
      assert.deepEqual(await storage.listRecords(kind), []);
      await succeeds(
        storage,
        ids.map((id, n) => deleteRecord(kind, id, updated[n]!.rev)),
      );
      assert.deepEqual(
        await storage.listRecords(kind, { includeDeleted: true }),
        [],
      );
    },
  },
  {
    clause:
      "values nested 256 levels deep round-trip; a deeper one is refused with a StorageError or round-trips, never a crash",
    async run({ storage }): Promise<void> {
      // The record is level 1, its data level 2.
      const deepRecord = record(KIND, "deep", {
        data: { value: chain(MAX_DEPTH - 2) },
      });
      await commit(storage, [
        putRecord(deepRecord),
        putMeta("deep", chain(MAX_DEPTH)),
      ]);
      assert.equal(
        JSON.stringify((await getRecord(storage, KIND, "deep"))?.value),
        JSON.stringify(deepRecord),
      );
      assert.equal(
        JSON.stringify((await getMeta(storage, "deep"))?.value),
        JSON.stringify(chain(MAX_DEPTH)),
      );
      // A valid mutation first, when the limits allow two: a refused write
      // must not commit it either.
      const lead = (key: string): Mutation[] =>
        storage.capabilities.maxMutationsPerWrite >= 2 ? [putMeta(key, 1)] : [];
      for (const depth of [5_000, 100_000]) {
        const value = record(KIND, `d${depth}`, {
          data: { value: chain(depth) },
        });
        const writes = [
          [...lead(`r${depth}`), putRecord(value)],
          [...lead(`m${depth}`), putMeta(`d${depth}`, chain(depth))],
        ];
        for (const mutations of writes) {
          let refused = false;
          try {
            await call("write()", () => storage.write(mutations));
          } catch (error) {
            assert.ok(
              error instanceof StorageError,
              `Expected a StorageError for a value ${depth} levels deep, got ${error}`,
            );
            refused = true;
          }
          const stored = mutations.at(-1)!.type === "putRecord"
            ? (await getRecord(storage, KIND, `d${depth}`))?.value
            : (await getMeta(storage, `d${depth}`))?.value;
          if (refused) {
            assert.equal(stored, undefined, "Expected nothing committed");
            if (mutations.length === 2) {
              const key = (mutations[0] as { key: string }).key;
              assert.equal(await getMeta(storage, key), undefined);
            }
          } else {
            const written = mutations.at(-1) as { record?: unknown };
            assert.equal(
              JSON.stringify(stored),
              JSON.stringify(written.record ?? chain(depth)),
            );
          }
        }
      }
    },
  },
  {
    clause: "write() accepts exactly maxMutationsPerWrite mutations",
    needs: ({ capabilities }) => finite(capabilities.maxMutationsPerWrite),
    async run({ storage }): Promise<void> {
      const max = storage.capabilities.maxMutationsPerWrite;
      const mutations = Array.from(
        { length: max },
        (_, index) => putMeta(`m${index}`, index),
      );
      assert.ok(
        writeBytes(mutations) <= storage.capabilities.maxWriteBytes,
        "Cannot test maxMutationsPerWrite as such a write exceeds maxWriteBytes",
      );
      await succeeds(storage, mutations);
      const entries = await storage.getMeta(mutations.map((_, i) => `m${i}`));
      assert.deepEqual(
        entries.map((entry) => entry?.value),
        mutations.map((_, index) => index),
      );
    },
  },
  {
    clause:
      "write() rejects maxMutationsPerWrite + 1 mutations with a StorageError and commits nothing",
    needs: ({ capabilities }) => finite(capabilities.maxMutationsPerWrite),
    async run({ storage }): Promise<void> {
      const max = storage.capabilities.maxMutationsPerWrite;
      await commit(storage, [putMeta("m0", "before")]);
      const before = await getMeta(storage, "m0");
      const mutations = Array.from(
        { length: max + 1 },
        (_, index) => putMeta(`m${index}`, index),
      );
      await rejectsWith(storage.write(mutations), StorageError, max);
      assert.deepEqual(await getMeta(storage, "m0"), before);
      const entries = await storage.getMeta(mutations.map((_, i) => `m${i}`));
      assert.ok(entries.slice(1).every((entry) => entry === undefined));
    },
  },
  {
    clause: "write() accepts exactly maxWriteBytes bytes",
    needs: ({ capabilities }) => finite(capabilities.maxWriteBytes),
    async run({ storage }): Promise<void> {
      const max = storage.capabilities.maxWriteBytes;
      const mutations = padded([], "big", max);
      await succeeds(storage, mutations);
      const mutation = mutations[0] as { value: JsonValue };
      assert.equal((await getMeta(storage, "big"))?.value, mutation.value);
    },
  },
  {
    clause:
      "write() rejects maxWriteBytes + 1 bytes with a StorageError and commits nothing",
    needs: ({ capabilities }) => finite(capabilities.maxWriteBytes),
    async run({ storage }): Promise<void> {
      const { maxWriteBytes, maxMutationsPerWrite } = storage.capabilities;
      await commit(storage, [putMeta("small", "before")]);
      const before = await getMeta(storage, "small");
      const prefix = maxMutationsPerWrite >= 2
        ? [putMeta("small", "after")]
        : [];
      const mutations = padded(prefix, "big", maxWriteBytes + 1);
      await rejectsWith(storage.write(mutations), StorageError, maxWriteBytes);
      assert.deepEqual(await getMeta(storage, "small"), before);
      assert.equal(await getMeta(storage, "big"), undefined);
    },
  },
  {
    clause:
      "write() rejects a malformed mutation with a TypeError and commits nothing",
    async run({ storage }): Promise<void> {
      await commit(storage, [
        putMeta("before", "old"),
        putRecord(record(KIND, "a")),
      ]);
      const meta = await getMeta(storage, "before");
      const existing = await getRecord(storage, KIND, "a");
      const malformed: unknown[] = [
        { type: "bogus" },
        { type: "putRecord", record: "not an object" },
        { type: "putRecord", record: null },
        { type: "putRecord", record: record(KIND, "b"), expect: 1 },
        { type: "deleteRecord", kind: KIND, id: "a", expect: false },
        { type: "putOp", op: { ...op(opId(1)), state: "bogus" } },
        { type: "putMeta", key: "x", value: undefined },
        null,
      ];
      // A valid mutation first, when the limits allow two: it must not
      // commit either.
      const lead = storage.capabilities.maxMutationsPerWrite >= 2
        ? [putMeta("before", "new")]
        : [];
      for (const mutation of malformed) {
        await assert.rejects(
          call(
            "write()",
            () => storage.write([...lead, mutation as Mutation]),
          ),
          TypeError,
          `Expected a TypeError for ${Deno.inspect(mutation)}`,
        );
      }
      assert.deepEqual(await getMeta(storage, "before"), meta);
      assert.deepEqual(await getRecord(storage, KIND, "a"), existing);
      assert.equal(await getRecord(storage, KIND, "b"), undefined);
      assert.deepEqual(await storage.listOps(), []);
      assert.equal(await getMeta(storage, "x"), undefined);
    },
  },
  {
    clause: "a 1 MiB record round-trips",
    needs: ({ capabilities }) =>
      writeBytes([putRecord(oneMiBRecord())]) <= capabilities.maxWriteBytes,
    async run({ storage }): Promise<void> {
      const big = oneMiBRecord();
      await succeeds(storage, [putRecord(big, null)]);
      assert.deepEqual((await getRecord(storage, KIND, "big"))?.value, big);
      const [listed] = await storage.listRecords(KIND);
      assert.deepEqual(listed?.value, big);
    },
  },
  {
    clause:
      "write() with an aborted signal rejects with its reason and commits nothing",
    async run({ storage }): Promise<void> {
      await commit(storage, [putMeta("x", 1)]);
      const before = await getMeta(storage, "x");
      const controller = new AbortController();
      const reason = new Error("Stopped by the suite");
      controller.abort(reason);
      await assert.rejects(
        call("write()", () =>
          storage.write([
            putMeta("x", 2),
            putRecord(record(KIND, "a")),
          ], { signal: controller.signal })),
        (error: unknown) => error === reason,
      );
      assert.deepEqual(await getMeta(storage, "x"), before);
      assert.equal(await getRecord(storage, KIND, "a"), undefined);
    },
  },
  {
    clause: "close() is idempotent",
    async run({ storage }): Promise<void> {
      await commit(storage, [putMeta("x", 1)]);
      await call("close()", () => storage.close());
      await call("close()", () => storage.close());
      await Promise.all([storage.close(), storage.close()]);
      await call(
        "[Symbol.asyncDispose]()",
        () => storage[Symbol.asyncDispose](),
      );
    },
  },
  {
    clause: "every method rejects with a ClosedError after close()",
    async run({ storage }): Promise<void> {
      await commit(storage, [
        putRecord(record(KIND, "a")),
        putOp(op(opId(1))),
        putMeta("x", 1),
      ]);
      await storage.close();
      const calls: [string, () => Promise<unknown>][] = [
        ["getRecords()", () => storage.getRecords(KIND, ["a"])],
        ["listRecords()", () => storage.listRecords(KIND)],
        ["getOps()", () => storage.getOps([opId(1)])],
        ["listOps()", () => storage.listOps()],
        ["getMeta()", () => storage.getMeta(["x"])],
        ["write()", () => storage.write([putMeta("x", 2)])],
        ["write() of nothing", () => storage.write([])],
      ];
      for (const [method, invoke] of calls) {
        await rejectsWith(call(method, invoke), ClosedError);
      }
    },
  },
  {
    clause: "records, ops and meta survive reopen",
    needs: ({ capabilities, reopen }) => reopen && capabilities.persistent,
    async run(harness): Promise<void> {
      const metaKeys = ["", "0", "false", "null", "tricky", "absent"];
      await commit(harness.storage, [
        putRecord(record(KIND, "a", { data: trickyData() })),
        putRecord(record(KIND, "\u{1F600}", { deleted: true })),
        putRecord(record(KIND, "\uFF5E", { lastOpId: opId(2) })),
        putRecord(record("note", "a/b\0c")),
        putOp(op(opId(1), { state: "quarantined" })),
        putOp(op(opId(2), { payload: trickyData() })),
        putOp(op(opId(3), { state: "parked", kind: "note", id: "a/b\0c" })),
        putMeta("", ""),
        putMeta("0", 0),
        putMeta("false", false),
        putMeta("null", null),
        putMeta("tricky", trickyData()),
      ]);
      // Deleted items stay deleted.
      await commit(harness.storage, [
        putRecord(record(KIND, "gone")),
        putOp(op(opId(4))),
        putMeta("gone", 1),
      ]);
      await commit(harness.storage, [
        deleteRecord(KIND, "gone"),
        deleteOp(opId(4)),
        deleteMeta("gone"),
      ]);
      const kinds = [KIND, "note"];
      const before = await snapshot(harness.storage, kinds, metaKeys);
      const storage = await harness.reopen();
      assert.deepEqual(await snapshot(storage, kinds, metaKeys), before);
      assert.equal(await getRecord(storage, KIND, "gone"), undefined);
      assert.equal(await getOp(storage, opId(4)), undefined);
      assert.equal(await getMeta(storage, "gone"), undefined);
      assert.deepEqual(
        (await storage.listOps({ states: ["parked"], kinds: ["note"] })).map((
          entry,
        ) => entry.value.opId),
        [opId(3)],
      );
    },
  },
  {
    clause: "revisions stay valid across reopen and never repeat after it",
    needs: ({ capabilities, reopen }) => reopen && capabilities.persistent,
    async run(harness): Promise<void> {
      const seen = new Map<string, string[]>();
      const remember = (space: Space, rev: string): string => {
        const revs = seen.get(space.name) ?? [];
        assert.ok(!revs.includes(rev), `Expected a new ${space.name} rev`);
        revs.push(rev);
        seen.set(space.name, revs);
        return rev;
      };
      for (const space of SPACES) {
        await commit(harness.storage, [space.put("k", 1)]);
        remember(space, await holds(harness.storage, space, "k", 1));
        await commit(harness.storage, [space.put("k", 2)]);
        remember(space, await holds(harness.storage, space, "k", 2));
      }
      let storage = await harness.reopen();
      for (const space of SPACES) {
        const [stale, current] = seen.get(space.name) as [string, string];
        await refused(storage, [space.put("k", 3, stale)]);
        await succeeds(storage, [space.put("k", 3, current)]);
        const third = remember(space, await holds(storage, space, "k", 3));
        await succeeds(storage, [space.remove("k", third)]);
      }
      storage = await harness.reopen();
      for (const space of SPACES) {
        await absent(storage, space, "k");
        for (const stale of seen.get(space.name)!) {
          await refused(storage, [space.put("k", 4, stale)]);
        }
        await succeeds(storage, [space.put("k", 4, null)]);
        remember(space, await holds(storage, space, "k", 4));
      }
    },
  },
  {
    clause: "a refused write leaves nothing behind after reopen",
    needs: ({ capabilities, reopen }) => reopen && capabilities.persistent,
    async run(harness): Promise<void> {
      await commit(harness.storage, [putMeta("x", 1)]);
      const x = await getMeta(harness.storage, "x");
      await refused(harness.storage, [
        putRecord(record(KIND, "a")),
        putOp(op(opId(1))),
        putMeta("x", 2),
        putMeta("y", 1, "no such revision"),
      ]);
      const storage = await harness.reopen();
      assert.deepEqual(await getMeta(storage, "x"), x);
      assert.equal(await getMeta(storage, "y"), undefined);
      assert.deepEqual(
        await storage.listRecords(KIND, { includeDeleted: true }),
        [],
      );
      assert.deepEqual(await storage.listOps(), []);
    },
  },
  {
    clause: "two writers racing with the same expect: exactly one wins",
    async run({ storage }): Promise<void> {
      await race(storage, storage);
    },
  },
  {
    clause: "concurrent writes of different items all land",
    async run({ storage }): Promise<void> {
      const count = 50;
      const results = await Promise.all(
        Array.from({ length: count }, (_, index) =>
          storage.write([
            putRecord(record(KIND, `r${index}`), null),
            putOp(op(opId(index), { id: `r${index}` }), null),
            putMeta(`m${index}`, index, null),
          ])),
      );
      assert.ok(results.every((result) => result.ok));
      assert.equal((await storage.listRecords(KIND)).length, count);
      assert.equal((await storage.listOps()).length, count);
      const meta = await storage.getMeta(results.map((_, i) => `m${i}`));
      assert.deepEqual(
        meta.map((entry) => entry?.value),
        results.map((_, index) => index),
      );
    },
  },
  {
    clause: "concurrent optimistic increments lose no update",
    async run({ storage }): Promise<void> {
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          for (let step = 0; step < 5; step++) {
            await increment(storage, "counter");
          }
        }),
      );
      assert.equal((await getMeta(storage, "counter"))?.value, 40);
    },
  },
  {
    clause: "two open handles see each other's writes",
    needs: ({ capabilities, reopen }) => reopen && capabilities.multiProcess,
    async run(harness): Promise<void> {
      const first = harness.storage;
      const second = await harness.another();
      await succeeds(first, [
        putRecord(record(KIND, "a")),
        putOp(op(opId(1))),
        putMeta("x", 1),
      ]);
      assert.deepEqual(
        await getRecord(second, KIND, "a"),
        await getRecord(first, KIND, "a"),
      );
      assert.deepEqual(await second.listOps(), await first.listOps());
      assert.deepEqual(await getMeta(second, "x"), await getMeta(first, "x"));
      await succeeds(second, [deleteMeta("x"), putMeta("y", 2)]);
      assert.equal(await getMeta(first, "x"), undefined);
      assert.deepEqual(await getMeta(first, "y"), await getMeta(second, "y"));
    },
  },
  {
    clause: "two open handles racing with the same expect: exactly one wins",
    needs: ({ capabilities, reopen }) => reopen && capabilities.multiProcess,
    async run(harness): Promise<void> {
      await race(harness.storage, await harness.another());
    },
  },
  {
    clause: "optimistic increments through two open handles lose no update",
    needs: ({ capabilities, reopen }) => reopen && capabilities.multiProcess,
    async run(harness): Promise<void> {
      const handles = [harness.storage, await harness.another()];
      await Promise.all(
        Array.from({ length: 8 }, async (_, worker) => {
          for (let step = 0; step < 5; step++) {
            await increment(handles[worker % 2]!, "counter");
          }
        }),
      );
      assert.equal((await getMeta(harness.storage, "counter"))?.value, 40);
    },
  },
];
