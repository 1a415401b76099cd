/**
 * Enqueue: one local write through the public API, against the raw cost of
 * the same atomic write on the storage's own engine, measured in the same
 * run (`deno task bench`; `BENCH_SCALE=tiny` for a quick run).
 *
 * The enqueue measured is `table.put()` of a new record: the engine reads the
 * record (absent), plans the write, makes a new op id and commits the record
 * and its outbox op in one `Storage.write()`. A new record is the write that
 * always queues a new op; `table.update()` of a record whose op was not sent
 * yet folds into that op instead (coalescing) and never grows the outbox. The
 * table has no schema, so the figures are the engine's and the storage's,
 * not a validator's.
 *
 * Groups `enqueue, <storage>` (memory, SQLite file, KV `:memory:`, KV file)
 * time a batch of {@linkcode SCALE.enqueueBatch} writes per iteration (on a
 * KV file too, though it syncs the file at every commit) into a fresh
 * store, opened, warmed by one write and closed outside the timed part, so
 * every row writes into the same almost empty store:
 *
 * - baseline: the raw atomic write, with the JSON the engine stores. SQLite:
 *   two prepared INSERTs (a record row and an op row) in one transaction, on
 *   a file in WAL mode with `synchronous = NORMAL` (the adapter's default
 *   durability). KV: one `kv.atomic()` with two `set`s of UTF-8 JSON. Memory:
 *   two `Map.set()`s of `structuredClone`d values: the memory storage must
 *   keep copies (contract clause 3), so storing the caller's objects would
 *   not be the same write.
 * - raw, in the adapter's layout (SQLite and KV): the statements or the
 *   atomic the adapter itself issues for this write, without its JS. SQLite:
 *   its own tables (UTF-16BE BLOB keys, a revision column, the ops table's
 *   two indexes); KV: two checks and three sets (record header, op header
 *   and the op's by-record index entry; a pending op has no by-state entry).
 *   The gap to the baseline is the cost of the layout.
 * - floor (SQLite and KV): the same, after a read of the record, as
 *   `table.put()` reads it before it plans (its base and newest op decide
 *   the op: ENGINE.md clauses 1-3). Nothing that reads first can beat it;
 *   the gap from it to `table.put()` is the engine's and the adapter's JS.
 * - `storage.write()` of the two mutations `table.put()` commits: the
 *   adapter alone.
 * - `table.put()`: the enqueue. Target: at least 50 % of the baseline's rate
 *   (at most 2× its time).
 *
 * Groups `enqueue at N pending ops, <storage>` (memory, SQLite file, KV
 * `:memory:`) time the same batch of `table.put()`s into one long-lived
 * store that already holds N records with a pending op each (filled outside
 * the timed part; the batch's records and ops are removed after each
 * iteration, also untimed, so N stays put). The baseline is the smallest N,
 * so the figures are the per-op ratios 10k/1k and 100k/1k. Target: 100k
 * within 1.5× of 1k (no cost that grows with the outbox). KV runs in memory
 * here (a file's fsync per commit would hide what grows) and stops at 10k
 * unless `BENCH_SCALE=full`: filling it with 100k ops takes about 20 s, as
 * Deno KV itself slows down while it grows.
 *
 * Group `raw writes at N rows, SQLite file` times the same batch of raw
 * writes in the adapter's layout (its tables, indexes and statements, as
 * the `raw, the adapter's tables and statements` row above) into a file
 * that already holds N records and N pending ops, baseline the smallest N:
 * how much SQLite itself slows down as its B-trees grow, measured in the
 * same run as the engine's growth above. (Its WAL checkpoints then copy
 * pages spread over a larger file: the commit is what grows.)
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import {
  createUlid,
  type JsonObject,
  type Storage,
  SyncEngine,
  type Table,
} from "../mod.ts";
import type { Mutation, StoredOp, StoredRecord } from "../storage/mod.ts";
import { openKvStorage } from "../storage/kv.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { createSqliteStorage } from "../storage/sqlite.ts";
import { createRestTransport } from "../transport/rest.ts";
import { SCALE, short } from "./_scale.ts";

const KIND = "todos";
const BATCH = SCALE.enqueueBatch;
const encoder = new TextEncoder();

/** A realistic to-do record (about 230 bytes of JSON). */
function todo(id: string): JsonObject {
  return {
    id,
    title: "Buy oat milk, eggs and bread",
    done: false,
    priority: 2,
    tags: ["home", "errands"],
    notes: "The shop on the corner closes at 8 pm; take the blue bag.",
    list: "groceries",
    createdBy: "user-42",
  };
}

/** A record and its op as the engine stores them for a put of a new record. */
interface Pair {
  readonly record: StoredRecord;
  readonly op: StoredOp;
}

/** Op ids for the raw rows: a ULID, as the engine makes them. */
const ulid = createUlid();

/**
 * `count` pairs shaped exactly as `planLocalWrite()` shapes a new record's
 * write, so that raw rows carry the same JSON as the engine's.
 */
function pairs(count: number, newOpId: () => string = ulid): Pair[] {
  const now = Date.now();
  return Array.from({ length: count }, () => {
    const id = crypto.randomUUID();
    const opId = newOpId();
    const data = todo(id);
    return {
      record: {
        kind: KIND,
        id,
        data,
        deleted: false,
        base: null,
        lastOpId: opId,
        localUpdatedAt: now,
      },
      op: {
        opId,
        kind: KIND,
        id,
        type: "upsert",
        payload: data,
        baseUpdatedAt: null,
        base: null,
        changedFields: Object.keys(data).filter((key) => key !== "id").sort(),
        createdAt: now,
        editedAt: now,
        attempts: 0,
        revision: 0,
        conflicts: 0,
        force: false,
        state: "pending",
        error: null,
        conflict: null,
      },
    };
  });
}

/** The two mutations `table.put()` of a new record commits. */
function mutationsOf({ record, op }: Pair): Mutation[] {
  return [
    { type: "putRecord", record, expect: null },
    { type: "putOp", op, expect: null },
  ];
}

/** A temporary directory, removed with everything in it on dispose. */
async function tempDir(): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix: "enqueue_bench_" });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true });
    },
  };
}

/**
 * The engine never reaches the network here; it needs a transport all the
 * same. Port 9 (discard) is never contacted.
 */
function offlineTransport() {
  return createRestTransport({ baseUrl: "http://127.0.0.1:9" });
}

// ---------------------------------------------------------------------------
// Raw writes

/** One atomic write of a record row and an op row, straight to the engine. */
interface RawStore extends AsyncDisposable {
  /** Sync for SQLite and memory: nothing to await, so nothing is awaited. */
  write(pair: Pair): Promise<unknown> | void;
}

function openRawSqlite(path: string): RawStore {
  const db = new DatabaseSync(path);
  db.exec("PRAGMA journal_mode = WAL");
  db.exec("PRAGMA synchronous = NORMAL");
  db.exec(`
    CREATE TABLE records (
      kind TEXT NOT NULL, id TEXT NOT NULL, value TEXT NOT NULL,
      PRIMARY KEY (kind, id)
    ) WITHOUT ROWID;
    CREATE TABLE ops (op_id TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL)
      WITHOUT ROWID;
  `);
  const begin = db.prepare("BEGIN");
  const commit = db.prepare("COMMIT");
  const insertRecord = db.prepare(
    "INSERT INTO records (kind, id, value) VALUES (?, ?, ?)",
  );
  const insertOp = db.prepare("INSERT INTO ops (op_id, value) VALUES (?, ?)");
  return {
    write({ record, op }) {
      begin.run();
      insertRecord.run(record.kind, record.id, JSON.stringify(record));
      insertOp.run(op.opId, JSON.stringify(op));
      commit.run();
    },
    [Symbol.asyncDispose]() {
      db.close();
      return Promise.resolve();
    },
  };
}

/** UTF-16BE code units: how the SQLite adapter stores its keys. */
function utf16be(text: string): Uint8Array {
  const bytes = new Uint8Array(text.length * 2);
  for (let index = 0; index < text.length; index++) {
    const unit = text.charCodeAt(index);
    bytes[index * 2] = unit >> 8;
    bytes[index * 2 + 1] = unit & 0xff;
  }
  return bytes;
}

/**
 * The statements the SQLite adapter runs for this write, on its own tables
 * (created by the adapter, then used directly): `BEGIN IMMEDIATE`, two
 * `INSERT … ON CONFLICT DO NOTHING` with a revision, `COMMIT`.
 */
async function openLayoutSqlite(
  path: string,
  options: { readFirst?: boolean } = {},
): Promise<RawStore> {
  const db = new DatabaseSync(path);
  await createSqliteStorage(db).close();
  const writer = layoutWriter(db);
  if (options.readFirst !== true) return writer;
  // What `table.put()` reads before it plans: the record (absent here).
  const read = db.prepare(
    "SELECT deleted, value, rev, base_is_data FROM records WHERE kind = ? AND id = ?",
  );
  return {
    write(pair) {
      read.get(utf16be(pair.record.kind), utf16be(pair.record.id));
      writer.write(pair);
    },
    [Symbol.asyncDispose]: () => writer[Symbol.asyncDispose](),
  };
}

/** Raw writes in the adapter's layout, and the means to fill and undo. */
interface LayoutStore extends RawStore {
  /** The write's two INSERTs, outside any transaction of its own. */
  insert(pair: Pair): void;
  /** Deletes the pairs' rows, in one transaction. */
  remove(pairs: readonly Pair[]): void;
}

/** Raw writes in the adapter's layout on `db`, whose tables exist. */
function layoutWriter(db: DatabaseSync): LayoutStore {
  const begin = db.prepare("BEGIN IMMEDIATE");
  const commit = db.prepare("COMMIT");
  const deleteRecord = db.prepare(
    "DELETE FROM records WHERE kind = ? AND id = ?",
  );
  const deleteOp = db.prepare("DELETE FROM ops WHERE op_id = ?");
  const insertRecord = db.prepare(
    "INSERT INTO records (kind, id, deleted, value, rev) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
  );
  const insertOp = db.prepare(
    "INSERT INTO ops (op_id, state, kind, id, value, rev) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
  );
  let rev = 0;
  const insert = ({ record, op }: Pair) => {
    rev++;
    insertRecord.run(
      utf16be(record.kind),
      utf16be(record.id),
      0,
      JSON.stringify(record),
      rev,
    );
    insertOp.run(
      utf16be(op.opId),
      op.state,
      utf16be(op.kind),
      utf16be(op.id),
      JSON.stringify(op),
      rev,
    );
  };
  return {
    insert,
    write(pair) {
      begin.run();
      insert(pair);
      commit.run();
    },
    remove(pairs) {
      begin.run();
      for (const { record, op } of pairs) {
        deleteRecord.run(utf16be(record.kind), utf16be(record.id));
        deleteOp.run(utf16be(op.opId));
      }
      commit.run();
    },
    [Symbol.asyncDispose]() {
      db.close();
      return Promise.resolve();
    },
  };
}

async function openRawKv(path: string): Promise<RawStore> {
  const kv = await Deno.openKv(path);
  return {
    write({ record, op }) {
      return kv.atomic()
        .set(
          ["r", record.kind, record.id],
          encoder.encode(JSON.stringify(record)),
        )
        .set(["o", op.opId], encoder.encode(JSON.stringify(op)))
        .commit();
    },
    [Symbol.asyncDispose]() {
      kv.close();
      return Promise.resolve();
    },
  };
}

/**
 * The atomic the KV adapter commits for this write (its documented key
 * layout, string key parts instead of its byte encoding): the headers must
 * be absent; the record's header, the op's header and its by-record index
 * entry are set (a pending op has no by-state entry). With `readFirst`, the
 * record's header is read before, as `table.put()` reads the record before
 * it plans.
 */
async function openLayoutKv(
  path: string,
  options: { readFirst?: boolean } = {},
): Promise<RawStore> {
  const kv = await Deno.openKv(path);
  const prefix = "offline-first-sync";
  const readFirst = options.readFirst === true;
  return {
    async write({ record, op }) {
      const recordKey = [prefix, "r", record.kind, record.id];
      if (readFirst) await kv.getMany([recordKey]);
      const opKey = [prefix, "o", op.opId];
      const slot = Math.floor(Math.random() * 2 ** 53);
      const opHeader = encoder.encode(
        `{"s":${slot},"v":${JSON.stringify(op)}}`,
      );
      return await kv.atomic()
        .check({ key: recordKey, versionstamp: null })
        .check({ key: opKey, versionstamp: null })
        .set(recordKey, encoder.encode(`{"v":${JSON.stringify(record)}}`))
        .set(opKey, opHeader)
        .set(
          [prefix, "i", Math.floor(Math.random() * 2 ** 53), slot],
          encoder.encode(JSON.stringify([op.opId, op.kind, op.id, op.state])),
        )
        .commit();
    },
    [Symbol.asyncDispose]() {
      kv.close();
      return Promise.resolve();
    },
  };
}

function openRawMemory(): RawStore {
  const records = new Map<string, StoredRecord>();
  const ops = new Map<string, StoredOp>();
  return {
    write({ record, op }) {
      records.set(`${record.kind}\0${record.id}`, structuredClone(record));
      ops.set(op.opId, structuredClone(op));
    },
    [Symbol.asyncDispose]() {
      records.clear();
      ops.clear();
      return Promise.resolve();
    },
  };
}

// ---------------------------------------------------------------------------
// Groups "enqueue, <storage>": the rate against the raw write

interface RawVariant {
  readonly name: string;
  open(dir: string): Promise<RawStore>;
}

interface Backend {
  readonly name: string;
  /** Writes per iteration: fewer where each one waits for an fsync. */
  readonly batch: number;
  /** A fresh, empty storage in `dir`. */
  open(dir: string): Promise<Storage>;
  readonly raw: RawVariant;
  readonly layout?: RawVariant;
  /** The layout's write after a read of the record: a put's floor. */
  readonly floor?: RawVariant;
}

const BACKENDS: readonly Backend[] = [
  {
    name: "memory",
    batch: BATCH,
    open: () => Promise.resolve(createMemoryStorage()),
    raw: {
      name: "2 Map.set() of structuredClone()d values",
      open: () => Promise.resolve(openRawMemory()),
    },
  },
  {
    name: "SQLite file",
    batch: BATCH,
    open: (dir) =>
      Promise.resolve(
        createSqliteStorage(new DatabaseSync(`${dir}/app.sqlite`), {
          closeDatabase: true,
        }),
      ),
    raw: {
      name: "2 prepared INSERTs in one transaction",
      open: (dir) => Promise.resolve(openRawSqlite(`${dir}/raw.sqlite`)),
    },
    layout: {
      name: "raw, the adapter's tables and statements",
      open: (dir) => openLayoutSqlite(`${dir}/layout.sqlite`),
    },
    floor: {
      name: "floor: the record's SELECT, then the adapter's statements",
      open: (dir) =>
        openLayoutSqlite(`${dir}/floor.sqlite`, { readFirst: true }),
    },
  },
  {
    name: "KV :memory:",
    batch: BATCH,
    open: () => openKvStorage(":memory:"),
    raw: {
      name: "kv.atomic() with 2 sets",
      open: () => openRawKv(":memory:"),
    },
    layout: {
      name: "raw, the adapter's atomic (2 checks, 3 sets)",
      open: () => openLayoutKv(":memory:"),
    },
    floor: {
      name: "floor: the record's get, then the adapter's atomic",
      open: () => openLayoutKv(":memory:", { readFirst: true }),
    },
  },
  {
    name: "KV file",
    // KV syncs its file at every commit (0.3-0.6 ms here): 200 writes take
    // about 100 ms per iteration, and fewer (50 before) left the ratio to
    // the noise of a few slow fsyncs (60-100 % from run to run).
    batch: BATCH,
    open: (dir) => openKvStorage(`${dir}/app.kv`),
    raw: {
      name: "kv.atomic() with 2 sets",
      open: (dir) => openRawKv(`${dir}/raw.kv`),
    },
    layout: {
      name: "raw, the adapter's atomic (2 checks, 3 sets)",
      open: (dir) => openLayoutKv(`${dir}/layout.kv`),
    },
    floor: {
      name: "floor: the record's get, then the adapter's atomic",
      open: (dir) => openLayoutKv(`${dir}/floor.kv`, { readFirst: true }),
    },
  },
];

/**
 * Iterations take milliseconds: a few warm-ups and a few measured ones past
 * Deno's half-second budget are enough (its defaults, 20 and 10, would
 * triple the file's run time).
 */
const ITERATIONS = { warmup: 2, n: 5 } as const;

/** Registers a raw row: a batch of raw writes after an untimed warm-up one. */
function benchRaw(
  group: string,
  size: number,
  variant: RawVariant,
  baseline: boolean,
) {
  Deno.bench({
    name: baseline ? `baseline: ${variant.name}` : variant.name,
    group,
    baseline,
    ...ITERATIONS,
    async fn(b) {
      await using dir = await tempDir();
      await using raw = await variant.open(dir.path);
      const [warm, ...batch] = pairs(size + 1);
      await raw.write(warm!);
      b.start();
      for (const pair of batch) {
        const pending = raw.write(pair);
        if (pending !== undefined) await pending;
      }
      b.end();
    },
  });
}

for (const backend of BACKENDS) {
  const size = backend.batch;
  const group = `enqueue, ${backend.name} (${size} writes per iteration)`;
  benchRaw(group, size, backend.raw, true);
  if (backend.layout !== undefined) {
    benchRaw(group, size, backend.layout, false);
  }
  if (backend.floor !== undefined) {
    benchRaw(group, size, backend.floor, false);
  }

  Deno.bench({
    name: "storage.write() of the put's 2 mutations",
    group,
    ...ITERATIONS,
    async fn(b) {
      await using dir = await tempDir();
      await using storage = await backend.open(dir.path);
      const [warm, ...batch] = pairs(size + 1).map(mutationsOf);
      await storage.write(warm!);
      b.start();
      for (const mutations of batch) await storage.write(mutations);
      b.end();
      await assertPending(storage, size + 1);
    },
  });

  Deno.bench({
    name: "table.put() of a new record (the enqueue)",
    group,
    ...ITERATIONS,
    async fn(b) {
      await using dir = await tempDir();
      await using storage = await backend.open(dir.path);
      await using transport = offlineTransport();
      await using engine = new SyncEngine({ storage, transport });
      const table = engine.table(KIND);
      const [warm, ...batch] = newTodos(size + 1);
      await table.put(warm!);
      b.start();
      for (const record of batch) await table.put(record);
      b.end();
      await assertPending(storage, size + 1);
    },
  });
}

function newTodos(count: number): JsonObject[] {
  return Array.from({ length: count }, () => todo(crypto.randomUUID()));
}

/** Fails the bench when the writes did not queue what they should have. */
async function assertPending(storage: Storage, expected: number) {
  const ops = await storage.listOps({ states: ["pending"] });
  if (ops.length !== expected) {
    throw new Error(
      `Cannot trust the bench as the outbox holds ${ops.length} pending ops: expected ${expected}`,
    );
  }
}

// ---------------------------------------------------------------------------
// Group "raw writes at N rows, SQLite file": SQLite's own growth

/**
 * A file per N in the adapter's layout, filled with N pairs by the raw
 * statements (in transactions of 1,000, untimed) and kept for the run.
 */
const rawScaleStores = new Map<number, Promise<LayoutStore>>();

function rawScaleStore(rows: number): Promise<LayoutStore> {
  let store = rawScaleStores.get(rows);
  if (store === undefined) {
    store = (async () => {
      scaleDir ??= Deno.makeTempDirSync({ prefix: "enqueue_bench_" });
      const db = new DatabaseSync(`${scaleDir}/raw-${rows}.sqlite`);
      await createSqliteStorage(db).close();
      cleanups.push(() => db.close());
      const writer = layoutWriter(db);
      const dayAgo = createUlid({ now: () => Date.now() - 86_400_000 });
      for (let start = 0; start < rows; start += 1000) {
        db.exec("SAVEPOINT fill");
        for (const pair of pairs(Math.min(1000, rows - start), dayAgo)) {
          writer.insert(pair);
        }
        db.exec("RELEASE fill");
      }
      return writer;
    })();
    rawScaleStores.set(rows, store);
  }
  return store;
}

{
  const group =
    `raw writes at N rows, SQLite file, the adapter's layout (${BATCH} writes per iteration)`;
  SCALE.pendingOps.forEach((rows, index) => {
    Deno.bench({
      name: `${short(rows)} records and pending ops`,
      group,
      baseline: index === 0,
      ...ITERATIONS,
      async fn(b) {
        const raw = await rawScaleStore(rows);
        const batch = pairs(BATCH);
        b.start();
        for (const pair of batch) raw.write(pair);
        b.end();
        raw.remove(batch);
      },
    });
  });
}

// ---------------------------------------------------------------------------
// Groups "enqueue at N pending ops, <storage>": the cost per op as the
// outbox grows

/**
 * A store that lives for the whole module, so that filling it with up to
 * 100k pending ops is paid once. `deno bench` has no after-all hook and
 * `unload` listeners cannot await, so the SQLite and KV handles are opened
 * here and closed synchronously on `unload`.
 */
interface ScaleStore {
  readonly storage: Storage;
  readonly table: Table;
  /** The records filled in, each with its one pending op, oldest first. */
  readonly filled: Pair[];
}

interface ScaleBackend {
  readonly name: string;
  readonly pendingOps: readonly number[];
  open(dir: string): Promise<{ storage: Storage; close(): void }>;
}

const SCALE_BACKENDS: readonly ScaleBackend[] = [
  {
    name: "memory",
    pendingOps: SCALE.pendingOps,
    open: () => Promise.resolve({ storage: createMemoryStorage(), close() {} }),
  },
  {
    name: "SQLite file",
    pendingOps: SCALE.pendingOps,
    open(dir) {
      const db = new DatabaseSync(`${dir}/scale.sqlite`);
      return Promise.resolve({
        storage: createSqliteStorage(db),
        close: () => db.close(),
      });
    },
  },
  {
    // In memory rather than in a file: a file's fsync per commit would
    // drown a cost that grows with the outbox, and filling 100k ops would
    // take most of the run.
    name: "KV :memory:",
    pendingOps: SCALE.kvPendingOps,
    async open() {
      const kv = await Deno.openKv(":memory:");
      return { storage: await openKvStorage(kv), close: () => kv.close() };
    },
  },
];

/** What `unload` must release, in order. */
const cleanups: (() => void)[] = [];
let scaleDir: string | undefined;
const scaleStores = new Map<string, Promise<ScaleStore>>();

globalThis.addEventListener("unload", () => {
  for (const cleanup of cleanups.reverse()) cleanup();
  if (scaleDir !== undefined) Deno.removeSync(scaleDir, { recursive: true });
});

function scaleStore(backend: ScaleBackend): Promise<ScaleStore> {
  let store = scaleStores.get(backend.name);
  if (store === undefined) {
    store = (async () => {
      scaleDir ??= Deno.makeTempDirSync({ prefix: "enqueue_bench_" });
      const { storage, close } = await backend.open(scaleDir);
      cleanups.push(close);
      const transport = offlineTransport();
      const engine = new SyncEngine({ storage, transport });
      cleanups.push(() => {
        // Nothing of the engine or transport holds an OS resource: closing
        // them marks them closed, and the handles go with the process.
        void engine.close();
        void transport.close();
      });
      return { storage, table: engine.table(KIND), filled: [] };
    })();
    scaleStores.set(backend.name, store);
  }
  return store;
}

/** Mutation groups in writes the storage accepts, several writes at once. */
async function writeChunked(storage: Storage, groups: Mutation[][]) {
  const perWrite = Math.min(2000, storage.capabilities.maxMutationsPerWrite);
  const writes: Mutation[][] = [];
  let current: Mutation[] = [];
  for (const group of groups) {
    if (current.length + group.length > perWrite) {
      writes.push(current);
      current = [];
    }
    current.push(...group);
  }
  if (current.length > 0) writes.push(current);
  // A few writes in flight overlap KV's I/O with our JS; they touch
  // distinct items, so none fails another's expect.
  for (let start = 0; start < writes.length; start += 8) {
    const results = await Promise.all(
      writes.slice(start, start + 8).map((mutations) =>
        storage.write(mutations)
      ),
    );
    if (results.some((result) => !result.ok)) {
      throw new Error("Cannot fill the bench store as a write failed");
    }
  }
}

/**
 * Fills the store to exactly `count` pending ops, each with its record.
 * Their op ids are a day old, as ops queued while offline would be, so the
 * benchmark's new ops sort after them as they would in use.
 */
async function fill(store: ScaleStore, count: number) {
  const { storage, filled } = store;
  if (filled.length === count) return;
  if (filled.length < count) {
    const dayAgo = createUlid({ now: () => Date.now() - 86_400_000 });
    const added = pairs(count - filled.length, dayAgo);
    await writeChunked(storage, added.map(mutationsOf));
    filled.push(...added);
  } else if (filled.length > count) {
    const removed = filled.splice(count);
    await writeChunked(
      storage,
      removed.map(({ record, op }) => [
        { type: "deleteRecord", kind: KIND, id: record.id },
        { type: "deleteOp", opId: op.opId },
      ]),
    );
  }
  await assertPending(storage, count);
}

/** Removes the records a bench iteration put, and their ops. */
async function removePut(store: ScaleStore, ids: readonly string[]) {
  const records = await store.storage.getRecords(KIND, ids);
  await writeChunked(
    store.storage,
    records.map((entry, index) => [
      { type: "deleteRecord", kind: KIND, id: ids[index]! },
      { type: "deleteOp", opId: entry!.value.lastOpId! },
    ]),
  );
}

for (const backend of SCALE_BACKENDS) {
  const group =
    `enqueue at N pending ops, ${backend.name} (${BATCH} puts per iteration)`;
  backend.pendingOps.forEach((pending, index) => {
    Deno.bench({
      name: `${short(pending)} pending ops`,
      group,
      baseline: index === 0,
      ...ITERATIONS,
      async fn(b) {
        const store = await scaleStore(backend);
        await fill(store, pending);
        const batch = newTodos(BATCH);
        b.start();
        for (const record of batch) await store.table.put(record);
        b.end();
        await removePut(store, batch.map((record) => record.id as string));
      },
    });
  });
}
