/**
 * An SQLite {@linkcode Storage}: records, the outbox and metadata in one
 * file that survives restarts and may be shared by several processes.
 *
 * {@linkcode createSqliteStorage} takes any synchronous driver that fits
 * `SqliteDatabaseLike`: Deno's and Node's built-in `node:sqlite`
 * (`DatabaseSync`), Bun's `bun:sqlite`, better-sqlite3.
 * {@linkcode openSqliteStorage} opens a file with `node:sqlite` and owns the
 * connection. In Deno, a file needs `--allow-read` and `--allow-write`.
 *
 * Every `write()` is one `BEGIN IMMEDIATE` transaction; the file is in WAL
 * mode, so readers never wait for a writer. The tables are plain enough to
 * inspect with the `sqlite3` CLI: `records`, `ops` and `meta` hold each item
 * as JSON in `value` (its keys are UTF-16BE BLOBs, so sort order is
 * JavaScript's), and the views `quarantine` and `conflict_inbox` list the
 * quarantined and parked ops with their fields decoded. A record whose
 * base's `data` is its own `data` (a pulled record without local edits) is
 * stored once: its row has `base_is_data = 1` and a base without `data`.
 *
 * @example Keeping the outbox in a file
 * ```ts
 * import { openSqliteStorage } from "@offline-first/sync/storage/sqlite";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * const path = `${dir}/app.sqlite`;
 * const op = {
 *   opId: "01JB0000000000000000000001",
 *   kind: "todo",
 *   id: "1",
 *   type: "upsert" as const,
 *   payload: { id: "1", title: "Buy milk" },
 *   baseUpdatedAt: null,
 *   base: null,
 *   changedFields: ["title"],
 *   createdAt: 0,
 *   editedAt: 0,
 *   attempts: 0,
 *   revision: 0,
 *   conflicts: 0,
 *   force: false,
 *   state: "pending" as const,
 *   error: null,
 *   conflict: null,
 * };
 * {
 *   await using storage = await openSqliteStorage(path);
 *   assert.equal(storage.capabilities.persistent, true);
 *   await storage.write([{ type: "putOp", op, expect: null }]);
 * }
 * {
 *   // A new process (here: a new handle) finds the op again.
 *   await using storage = await openSqliteStorage(path);
 *   const [pending] = await storage.listOps({ states: ["pending"], limit: 10 });
 *   assert.deepEqual(pending?.value, op);
 * }
 * await Deno.remove(dir, { recursive: true });
 * ```
 *
 * @module
 */

import { ClosedError, StorageError, SyncError } from "../src/errors.ts";
import type { JsonValue } from "../src/json.ts";
import type {
  SqliteDatabaseLike,
  SqliteStatementLike,
  SqliteValue,
} from "../src/sqlite_like.ts";
import type {
  Expect,
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
import {
  assertSqliteSchemaKnown,
  encodeKey,
  firstRow,
  migrateSqliteSchema,
  readSqliteSchemaVersion,
} from "./_sqlite_schema.ts";
import {
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
  OP_STATES,
  resolveListOpsOptions,
  resolveListRecordsOptions,
} from "./_validate.ts";
import { decodeUtf16, encodeUtf16, isUtf16Of } from "./_utf16.ts";
import { describe, shortText } from "./_text.ts";

/** Options for {@linkcode createSqliteStorage}. */
export interface SqliteStorageOptions {
  /**
   * How hard a committed write is kept, for a file (`":memory:"` keeps
   * nothing anyway). The journal is WAL in both modes; on a file system
   * that cannot do WAL, both use `FULL`, since a rollback journal with
   * `NORMAL` may be corrupted by a power loss.
   *
   * - `"normal"`: `PRAGMA synchronous = NORMAL`. A committed write survives
   *   a crash of the process; a power loss or OS crash may lose the last
   *   writes committed before it, but never corrupts the file nor splits a
   *   write (each write is there whole or not at all).
   * - `"full"`: `PRAGMA synchronous = FULL`. The WAL is synced at every
   *   commit, so a committed write also survives a power loss, at the cost
   *   of one `fsync` per write.
   *
   * @default {"normal"}
   */
  durability?: "normal" | "full";
  /**
   * How long, in milliseconds, a write waits for another connection's lock
   * before it rejects with a retryable `StorageError` (`PRAGMA
   * busy_timeout`).
   *
   * @default {5000}
   */
  busyTimeoutMs?: number;
  /**
   * Whether the storage's `close()` closes the database too. The caller
   * owns a database it passes in, so by default it stays open.
   *
   * @default {false}
   */
  closeDatabase?: boolean;
}

/**
 * Creates a storage on an open SQLite connection, creating or upgrading its
 * tables first. Works with any synchronous driver that fits
 * `SqliteDatabaseLike`: `node:sqlite`'s `DatabaseSync` (Deno, Node ≥ 22),
 * `bun:sqlite`'s `Database`, better-sqlite3.
 *
 * The connection gets `busy_timeout` and `synchronous` set, and a file is
 * switched to WAL (which stays with the file). An older file is upgraded in
 * one transaction; a file written by a newer version of this library is
 * refused before anything is changed. The tables (`sync_state`, `records`,
 * `ops`, `meta`, views `quarantine` and `conflict_inbox`) must not clash
 * with the database's own.
 *
 * A file-backed database is `persistent` and `multiProcess`; `":memory:"`
 * (or a temporary database) is neither. SQLite has no practical cap on
 * mutations per write, bytes per write or key length, so every limit is
 * `Infinity` (a single value beyond SQLite's 1 GB `SQLITE_MAX_LENGTH`
 * rejects with a `StorageError`, committing nothing).
 *
 * @param db An open connection. Leave it alone while the storage uses it:
 * a transaction of your own left open makes writes and multi-item reads
 * fail.
 * @param options Durability, busy timeout, and whether `close()` closes `db`.
 * @returns The storage.
 * @throws {StorageError} When the database's schema is newer than this
 * code's, its upgrade fails, or the driver fails; `db` is left open.
 * @throws {TypeError} When an option has the wrong type.
 * @throws {RangeError} When an option is out of range.
 *
 * @example Using a connection the app owns
 * ```ts
 * import { createSqliteStorage } from "@offline-first/sync/storage/sqlite";
 * import { DatabaseSync } from "node:sqlite";
 * import assert from "node:assert/strict";
 *
 * const db = new DatabaseSync(":memory:");
 * const storage = createSqliteStorage(db);
 * const result = await storage.write([
 *   { type: "putMeta", key: "cursor\0todo", value: { page: 2 }, expect: null },
 * ]);
 * assert.equal(result.ok, true);
 * const [entry] = await storage.getMeta(["cursor\0todo"]);
 * assert.deepEqual(entry?.value, { page: 2 });
 *
 * await storage.close();
 * // closeDatabase defaults to false: the app's connection stays open.
 * assert.deepEqual({ ...db.prepare("SELECT 1 AS one").get() }, { one: 1 });
 * db.close();
 * ```
 */
export function createSqliteStorage(
  db: SqliteDatabaseLike,
  options: SqliteStorageOptions = {},
): Storage {
  const resolved = resolveOptions("create", options);
  const closeDatabase = options.closeDatabase ?? false;
  if (typeof closeDatabase !== "boolean") {
    throw new TypeError(
      `Cannot create SQLite storage as 'closeDatabase' is not a boolean: current value is ${
        describe(closeDatabase)
      }`,
    );
  }
  if (typeof db !== "object" || db === null) {
    throw new TypeError(
      `Cannot create SQLite storage as 'db' is not a database: current value is ${
        describe(db)
      }`,
    );
  }
  try {
    // Connection settings only: they do not touch the file.
    db.exec(`PRAGMA busy_timeout = ${resolved.busyTimeoutMs}`);
    db.exec(`PRAGMA synchronous = ${resolved.synchronous}`);
    // A newer file is refused, and a failed upgrade rolled back, before the
    // switch to WAL rewrites the file's header: either leaves the file
    // byte for byte as it was.
    assertSqliteSchemaKnown(readSqliteSchemaVersion(db));
    migrateSqliteSchema(db);
    const file = firstRow(
      db.prepare("SELECT file FROM pragma_database_list WHERE name = 'main'"),
    )?.["file"];
    // ":memory:" and temporary databases have no file name.
    const persistent = typeof file === "string" && file !== "";
    if (persistent) {
      const journal = firstRow(db.prepare("PRAGMA journal_mode = WAL"))
        ?.["journal_mode"];
      // Some file systems and VFSes cannot do WAL. In a rollback journal,
      // synchronous = NORMAL risks corruption on power loss, so the
      // "normal" promise (never corrupt) needs FULL there.
      if (journal !== "wal") db.exec("PRAGMA synchronous = FULL");
    }
    return new SqliteStorage(db, closeDatabase, persistent);
  } catch (error) {
    if (error instanceof SyncError) throw error;
    throw new StorageError(
      `Cannot create SQLite storage as SQLite failed: ${messageOf(error)}`,
      { cause: error },
    );
  }
}

/**
 * Opens (creating it if needed) an SQLite file as a storage, with the
 * built-in `node:sqlite` (Deno ≥ 2.2, Node ≥ 22, Bun). The storage owns the
 * connection and closes it on `close()`. `node:sqlite` is imported only
 * here, on first use, so code that passes its own driver to
 * {@linkcode createSqliteStorage} never loads it.
 *
 * @param path The file, or `":memory:"` for a private in-memory database.
 * @param options Durability and busy timeout.
 * @returns The open storage.
 * @throws {StorageError} When `node:sqlite` is unavailable, the file cannot
 * be opened, its schema is newer than this code's, or its upgrade fails.
 * @throws {TypeError} When `path` is not a string or an option has the wrong
 * type.
 * @throws {RangeError} When an option is out of range.
 *
 * @example Refusing a bad option
 * ```ts
 * import { openSqliteStorage } from "@offline-first/sync/storage/sqlite";
 * import assert from "node:assert/strict";
 *
 * await assert.rejects(
 *   openSqliteStorage(":memory:", { busyTimeoutMs: -1 }),
 *   RangeError,
 * );
 * await using storage = await openSqliteStorage(":memory:", {
 *   durability: "full",
 * });
 * assert.equal(storage.capabilities.persistent, false);
 * ```
 */
export async function openSqliteStorage(
  path: string,
  options: Omit<SqliteStorageOptions, "closeDatabase"> = {},
): Promise<Storage> {
  if (typeof path !== "string") {
    throw new TypeError(
      `Cannot open SQLite storage as 'path' is not a string: current value is ${
        describe(path)
      }`,
    );
  }
  resolveOptions("open", options);
  let DatabaseSync: new (path: string) => SqliteDatabaseLike;
  try {
    ({ DatabaseSync } = await import("node:sqlite"));
  } catch (error) {
    throw new StorageError(
      `Cannot open SQLite storage as node:sqlite is not available: ${
        messageOf(error)
      }`,
      { cause: error },
    );
  }
  let db: SqliteDatabaseLike;
  try {
    db = new DatabaseSync(path);
  } catch (error) {
    throw new StorageError(
      `Cannot open SQLite storage as the file cannot be opened: current value is ${
        JSON.stringify(path)
      }`,
      { cause: error },
    );
  }
  try {
    return createSqliteStorage(db, { ...options, closeDatabase: true });
  } catch (error) {
    db.close();
    throw error;
  }
}

interface ResolvedOptions {
  readonly synchronous: "NORMAL" | "FULL";
  readonly busyTimeoutMs: number;
}

function resolveOptions(
  verb: "create" | "open",
  options: Omit<SqliteStorageOptions, "closeDatabase">,
): ResolvedOptions {
  const durability: unknown = options.durability ?? "normal";
  if (durability !== "normal" && durability !== "full") {
    const Type = typeof durability === "string" ? RangeError : TypeError;
    throw new Type(
      `Cannot ${verb} SQLite storage as 'durability' is not "normal" or "full": current value is ${
        describe(durability)
      }`,
    );
  }
  const busyTimeoutMs: unknown = options.busyTimeoutMs ?? 5000;
  if (typeof busyTimeoutMs !== "number") {
    throw new TypeError(
      `Cannot ${verb} SQLite storage as 'busyTimeoutMs' is not a number: current value is ${
        describe(busyTimeoutMs)
      }`,
    );
  }
  // SQLite takes the timeout as a C int.
  if (
    !Number.isInteger(busyTimeoutMs) || busyTimeoutMs < 0 ||
    busyTimeoutMs > 2 ** 31 - 1
  ) {
    throw new RangeError(
      `Cannot ${verb} SQLite storage as 'busyTimeoutMs' is not an integer from 0 to 2147483647: current value is ${busyTimeoutMs}`,
    );
  }
  return {
    synchronous: durability === "full" ? "FULL" : "NORMAL",
    busyTimeoutMs,
  };
}

// ---------------------------------------------------------------------------
// The storage

/** The item spaces, as indexes into {@linkcode Statements.spaces}. */
const RECORD = 0;
const OP = 1;
const META = 2;
type Space = typeof RECORD | typeof OP | typeof META;

/** How a space is laid out: its table, key columns and value columns. */
interface Layout {
  readonly table: string;
  readonly keys: readonly string[];
  readonly columns: readonly string[];
  /** What a read selects: {@linkcode toEntry} decodes it. */
  readonly select: string;
}

/**
 * What a read of a record selects: the key and the `deleted` column too,
 * to check the JSON against them (contract clause 9).
 */
const RECORD_SELECT = "value, rev, base_is_data, id, deleted";

/** What a read of an op selects: its indexed columns too, likewise. */
const OP_SELECT = "value, rev, op_id, state, kind, id";

const LAYOUTS: readonly Layout[] = [
  {
    table: "records",
    keys: ["kind", "id"],
    columns: ["deleted", "base_is_data", "value"],
    select: RECORD_SELECT,
  },
  {
    table: "ops",
    keys: ["op_id"],
    columns: ["state", "kind", "id", "value"],
    select: OP_SELECT,
  },
  { table: "meta", keys: ["key"], columns: ["value"], select: "value, rev" },
];

/**
 * The most ids one `getRecords()` statement reads (`id IN (…)`). A chunk is
 * padded to a power of two by repeating its last id, so at most eight
 * statement shapes are ever prepared.
 */
const RECORDS_IN_CHUNK = 128;

/**
 * The most rows one multi-row INSERT writes. Beyond a few dozen, a longer
 * statement saves nothing more (measured with `node:sqlite`).
 */
const INSERT_ROWS = 32;

/**
 * How a batch of puts runs: `insert` for items expected absent (`INSERT …
 * ON CONFLICT DO NOTHING`), `upsert` for items without an expect.
 */
type BatchType = "insert" | "upsert";

/** The size of the chunks keys are encoded into. */
const KEY_CHUNK = 64 * 1024;

/** Key encoders for {@linkcode planOf}. */
interface KeyEncoders {
  /** A kind, encoded once per storage. */
  readonly kind: (kind: string) => Uint8Array;
  /** Any other key. */
  readonly key: (text: string) => Uint8Array;
}

/** How many encoded kinds a storage keeps (kinds are few: one per table). */
const KIND_KEYS_CACHE = 256;

/** The statements that read and write one space. */
interface SpaceStatements {
  /** `(keys) → { value, rev }` (records add `base_is_data`) */
  readonly get: SqliteStatementLike;
  /** `(keys, columns, rev)`: insert or replace. */
  readonly upsert: SqliteStatementLike;
  /** `(keys, columns, rev)`: insert unless the item exists. */
  readonly insert: SqliteStatementLike;
  /** `(columns, rev, keys, expected rev)`: replace if at the expected rev. */
  readonly update: SqliteStatementLike;
  /** `(keys)` */
  readonly remove: SqliteStatementLike;
  /** `(keys, expected rev)` */
  readonly removeIf: SqliteStatementLike;
}

interface Statements {
  readonly spaces: readonly [SpaceStatements, SpaceStatements, SpaceStatements];
  readonly begin: SqliteStatementLike;
  readonly beginRead: SqliteStatementLike;
  readonly commit: SqliteStatementLike;
  readonly rollback: SqliteStatementLike;
  readonly reserve: SqliteStatementLike;
  /** By `includeDeleted` and whether `after` is given. */
  readonly listRecords: readonly SqliteStatementLike[];
}

function prepareSpace(
  db: SqliteDatabaseLike,
  { table, keys, columns, select }: Layout,
): SpaceStatements {
  const all = [...keys, ...columns, "rev"];
  const values = all.map(() => "?").join(", ");
  const byKey = keys.map((key) => `${key} = ?`).join(" AND ");
  const insert = `INSERT INTO ${table} (${all.join(", ")}) VALUES (${values})`;
  return {
    get: db.prepare(`SELECT ${select} FROM ${table} WHERE ${byKey}`),
    upsert: db.prepare(
      `${insert} ON CONFLICT (${keys.join(", ")}) DO UPDATE SET ${
        [...columns, "rev"].map((column) => `${column} = excluded.${column}`)
          .join(", ")
      }`,
    ),
    insert: db.prepare(`${insert} ON CONFLICT DO NOTHING`),
    update: db.prepare(
      `UPDATE ${table} SET ${
        [...columns, "rev"].map((column) => `${column} = ?`).join(", ")
      } WHERE ${byKey} AND rev = ?`,
    ),
    remove: db.prepare(`DELETE FROM ${table} WHERE ${byKey}`),
    removeIf: db.prepare(`DELETE FROM ${table} WHERE ${byKey} AND rev = ?`),
  };
}

function prepareStatements(db: SqliteDatabaseLike): Statements {
  const listRecords = (live: boolean, after: boolean): SqliteStatementLike =>
    db.prepare(
      `SELECT ${RECORD_SELECT} FROM records WHERE kind = ?${
        after ? " AND id > ?" : ""
      }${live ? " AND deleted = 0" : ""} ORDER BY id LIMIT ?`,
    );
  return {
    spaces: [
      prepareSpace(db, LAYOUTS[RECORD]!),
      prepareSpace(db, LAYOUTS[OP]!),
      prepareSpace(db, LAYOUTS[META]!),
    ],
    // IMMEDIATE takes the write lock up front: a deferred transaction that
    // reads first and then writes fails at once with SQLITE_BUSY when
    // another connection wrote meanwhile, without waiting for busy_timeout.
    begin: db.prepare("BEGIN IMMEDIATE"),
    beginRead: db.prepare("BEGIN"),
    commit: db.prepare("COMMIT"),
    rollback: db.prepare("ROLLBACK"),
    // Reserves the next block of revisions for this connection.
    reserve: db.prepare(
      "UPDATE sync_state SET revision = revision + ? RETURNING revision",
    ),
    listRecords: [
      listRecords(true, false),
      listRecords(true, true),
      listRecords(false, false),
      listRecords(false, true),
    ],
  };
}

/**
 * An expectation as the write applies it: `undefined` for none, `null` for
 * "absent", a number for a revision this storage can have issued, `false`
 * for a string it never issues (so it cannot hold).
 */
type PlannedExpect = undefined | null | number | false;

/** A mutation checked and encoded, ready to run. */
interface Planned {
  readonly space: Space;
  /** The item's name within its space: record id, op id or meta key. */
  readonly name: string;
  /** A record's kind; `undefined` in the other spaces. */
  readonly kind: string | undefined;
  /** The key columns' values. */
  readonly keys: SqliteValue[];
  /** The value columns' values; `undefined` for a delete. */
  readonly columns: SqliteValue[] | undefined;
  readonly expect: PlannedExpect;
}

/** What a write applied, for the commit to take over. */
interface Applied {
  readonly revs: (string | null)[];
  /** The revision the write gave its items, if it put any. */
  readonly revision: number | undefined;
  /** The end of a block the write reserved, if it did. */
  readonly blockEnd: number | undefined;
}

/** The mutations of one item within a write, when there are several. */
interface Group {
  count: number;
  last: number;
  hasExpect: boolean;
  /** The item's revision before the write; `undefined` when absent. */
  before?: number | undefined;
}

/**
 * How many revisions a connection reserves at once. One store-wide counter
 * (`sync_state.revision`, the highest revision any connection may have
 * issued) hands out blocks under the write lock, so revisions never repeat,
 * across connections, processes and reopens, even for a key deleted and
 * written again. Reserving a block instead of bumping the counter on every
 * write spares each write a page (about a fifth of a small write's cost);
 * 2^53 allows 9 billion blocks.
 */
const REVISION_BLOCK = 1_000_000;

/** How many `listOps()` statement shapes stay prepared. */
const LIST_OPS_CACHE = 64;

class SqliteStorage implements Storage {
  readonly capabilities: StorageCapabilities;
  readonly #db: SqliteDatabaseLike;
  readonly #closeDatabase: boolean;
  #statements: Statements | undefined;
  /** `listOps()` statements by shape, oldest first. */
  #listOps = new Map<string, SqliteStatementLike>();
  /** `getRecords()` statements by the number of ids they read. */
  #recordsIn = new Map<number, SqliteStatementLike>();
  /** Multi-row INSERTs by space, type and number of rows. */
  #inserts = new Map<string, SqliteStatementLike>();
  /** Encoded kinds: every record key starts with one. */
  #kindKeys = new Map<string, Uint8Array>();
  /** Where {@linkcode SqliteStorage.#encodeKey} writes keys, and how far. */
  #keyChunk = new Uint8Array(0);
  #keyChunkUsed = 0;
  /** The encoders a write's plan uses. */
  readonly #keys: KeyEncoders = {
    kind: (kind) => this.#kindKey(kind),
    key: (text) => this.#encodeKey(text),
  };
  /** The next revision of this connection's committed block. */
  #nextRevision = 0;
  /** The end (exclusive) of this connection's committed block. */
  #blockEnd = 0;

  constructor(db: SqliteDatabaseLike, closeDatabase: boolean, file: boolean) {
    this.#db = db;
    this.#closeDatabase = closeDatabase;
    this.#statements = prepareStatements(db);
    this.capabilities = Object.freeze({
      persistent: file,
      // WAL and busy_timeout let other connections and processes share the
      // file; an in-memory database is private to its connection.
      multiProcess: file,
      maxMutationsPerWrite: Infinity,
      maxWriteBytes: Infinity,
      maxKeyLength: Infinity,
    });
  }

  getRecords(
    kind: string,
    ids: readonly string[],
    options?: StorageCallOptions,
  ): Promise<(Versioned<StoredRecord> | undefined)[]> {
    return this.#call("read records", options, (s) => {
      checkString("read records", "kind", kind);
      checkStrings("read records", "ids", ids);
      if (ids.length === 0) return [];
      const key = this.#kindKey(kind);
      if (ids.length === 1) {
        return this.#read("read records", false, () => [
          toRecord(
            firstRow(s.spaces[RECORD].get, key, encodeKey(ids[0]!)),
            kind,
          ),
        ]);
      }
      return this.#read(
        "read records",
        ids.length > RECORDS_IN_CHUNK,
        () => this.#readRecords(kind, ids),
      );
    });
  }

  listRecords(
    kind: string,
    options: ListRecordsOptions = {},
  ): Promise<Versioned<StoredRecord>[]> {
    return this.#call("list records", options, (s) => {
      checkString("list records", "kind", kind);
      const { limit, after, includeDeleted } = resolveListRecordsOptions(
        options,
      );
      if (limit === 0) return [];
      const statement = s.listRecords[
        (includeDeleted ? 2 : 0) + (after === undefined ? 0 : 1)
      ]!;
      const params: SqliteValue[] = [this.#kindKey(kind)];
      if (after !== undefined) params.push(encodeKey(after));
      params.push(sqlLimit(limit));
      return this.#read(
        "list records",
        false,
        () => statement.all(...params).map((row) => toRecord(row, kind)!),
      );
    });
  }

  getOps(
    opIds: readonly string[],
    options?: StorageCallOptions,
  ): Promise<(Versioned<StoredOp> | undefined)[]> {
    return this.#call("read ops", options, (s) => {
      checkStrings("read ops", "opIds", opIds);
      if (opIds.length === 0) return [];
      const get = s.spaces[OP].get;
      return this.#read(
        "read ops",
        opIds.length > 1,
        () => opIds.map((opId) => toOp(firstRow(get, encodeKey(opId)))),
      );
    });
  }

  listOps(options: ListOpsOptions = {}): Promise<Versioned<StoredOp>[]> {
    return this.#call("list ops", options, () => {
      const { limit, after, id, states, kinds } = resolveListOpsOptions(
        options,
      );
      if (limit === 0 || states?.size === 0 || kinds?.size === 0) return [];
      // Every state listed filters nothing: drop the filter, so that the
      // primary key's order serves the query.
      const stateList = states === undefined ||
          (states.size === OP_STATES.size &&
            [...OP_STATES].every((state) => states.has(state)))
        ? undefined
        : [...states];
      const kindList = kinds === undefined ? undefined : [...kinds];
      const statement = this.#listOpsStatement(
        stateList?.length,
        kindList?.length,
        id !== undefined,
        after !== undefined,
      );
      const params: SqliteValue[] = [];
      if (stateList !== undefined) params.push(...stateList);
      if (kindList !== undefined) params.push(...kindList.map(encodeKey));
      if (id !== undefined) params.push(encodeKey(id));
      if (after !== undefined) params.push(encodeKey(after));
      params.push(sqlLimit(limit));
      return this.#read(
        "list ops",
        false,
        () => statement.all(...params).map((row) => toOp(row)!),
      );
    });
  }

  getMeta(
    keys: readonly string[],
    options?: StorageCallOptions,
  ): Promise<(Versioned<JsonValue> | undefined)[]> {
    return this.#call("read meta", options, (s) => {
      checkStrings("read meta", "keys", keys);
      if (keys.length === 0) return [];
      const get = s.spaces[META].get;
      return this.#read(
        "read meta",
        keys.length > 1,
        () => keys.map((key) => toMeta(firstRow(get, encodeKey(key)), key)),
      );
    });
  }

  write(
    mutations: readonly Mutation[],
    options?: StorageCallOptions,
  ): Promise<WriteResult> {
    return this.#call("write mutations", options, (s) => {
      // Validating and encoding everything before the transaction keeps a
      // malformed mutation from costing a lock, and leaves only driver
      // failures for the transaction to roll back. The values are only
      // checked, not copied: they are serialised at once.
      const plan = checkMutations(mutations, this.capabilities).map((
        mutation,
      ) => planOf(mutation, this.#keys));
      if (plan.length === 0) return { ok: true, revs: [] };
      // A revision this storage never issued cannot be current.
      if (plan.some((planned) => planned.expect === false)) {
        return { ok: false };
      }
      return this.#transaction(s, plan);
    });
  }

  close(): Promise<void> {
    if (this.#statements === undefined) return Promise.resolve();
    this.#statements = undefined;
    this.#listOps.clear();
    this.#recordsIn.clear();
    this.#inserts.clear();
    if (!this.#closeDatabase) return Promise.resolve();
    try {
      this.#db.close();
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(
        new StorageError(
          `Cannot close SQLite storage as SQLite failed: ${messageOf(error)}`,
          { cause: error },
        ),
      );
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * Runs a call's synchronous body and settles a promise with its outcome:
   * the contract's methods return promises and never throw synchronously.
   */
  #call<T>(
    action: string,
    options: StorageCallOptions | undefined,
    body: (statements: Statements) => T,
  ): Promise<T> {
    try {
      const statements = this.#statements;
      if (statements === undefined) {
        throw new ClosedError(`Cannot ${action} as the storage is closed`);
      }
      options?.signal?.throwIfAborted();
      return Promise.resolve(body(statements));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Runs driver reads, in one read transaction when there are several
   * statements, so they see one snapshot even while another process
   * writes.
   */
  #read<T>(action: string, snapshot: boolean, work: () => T): T {
    const s = this.#statements!;
    try {
      if (!snapshot) return work();
      s.beginRead.run();
      let ended = false;
      try {
        const result = work();
        s.commit.run();
        ended = true;
        return result;
      } finally {
        // A read or a COMMIT that failed leaves the transaction open, and
        // every later write on this connection would fail to begin one.
        if (!ended) rollbackQuietly(s);
      }
    } catch (error) {
      throw driverError(action, error);
    }
  }

  /** Commits a plan in one transaction, or nothing if an expect fails. */
  #transaction(s: Statements, plan: readonly Planned[]): WriteResult {
    try {
      s.begin.run();
    } catch (error) {
      throw driverError("write mutations", error);
    }
    try {
      const applied = this.#apply(s, plan);
      if (applied === undefined) {
        s.rollback.run();
        return { ok: false };
      }
      s.commit.run();
      // Only a committed reservation is this connection's: a rolled-back
      // one may be handed to another connection next.
      if (applied.revision !== undefined) {
        if (applied.blockEnd !== undefined) this.#blockEnd = applied.blockEnd;
        this.#nextRevision = applied.revision + 1;
      }
      return { ok: true, revs: applied.revs };
    } catch (error) {
      rollbackQuietly(s);
      throw driverError("write mutations", error);
    }
  }

  /**
   * Applies a plan inside the transaction. Returns each mutation's
   * revision after the write, and the revision (and new block) the write
   * used, or `undefined` when an expect fails.
   *
   * An item written once is checked and written by one statement (`INSERT
   * … ON CONFLICT DO NOTHING` for "absent", `UPDATE … AND rev = ?` for a
   * revision): the common engine writes cost no extra read. Consecutive
   * puts of one space expecting absence (or nothing) share multi-row
   * statements. An item written several times has its revision read once
   * before its first mutation, so every later expect is checked against
   * the state before the write (contract clause 2).
   */
  #apply(
    s: Statements,
    plan: readonly Planned[],
  ): Applied | undefined {
    let groups: Map<string, Group> | undefined;
    if (plan.length > 1 && hasRepeatedItem(plan)) {
      groups = new Map();
      for (let index = 0; index < plan.length; index++) {
        const planned = plan[index]!;
        const item = itemOf(planned);
        const group = groups.get(item);
        if (group === undefined) {
          groups.set(item, {
            count: 1,
            last: index,
            hasExpect: planned.expect !== undefined,
          });
        } else {
          group.count++;
          group.last = index;
          group.hasExpect ||= planned.expect !== undefined;
        }
      }
    }
    // One revision for every item the write puts, taken on first need.
    let revision: number | undefined;
    let blockEnd: number | undefined;
    const nextRevision = (): number => {
      if (revision !== undefined) return revision;
      if (this.#nextRevision < this.#blockEnd) {
        revision = this.#nextRevision;
      } else {
        const last = Number(firstRow(s.reserve, REVISION_BLOCK)!["revision"]);
        revision = last - REVISION_BLOCK + 1;
        blockEnd = last + 1;
      }
      return revision;
    };
    // Puts of distinct items that need no read, consecutive in one space,
    // run as multi-row INSERTs: one call into the driver per 32 rows.
    let batch: Planned[] = [];
    let batchType: BatchType = "insert";
    const flush = (): boolean => {
      if (batch.length === 0) return true;
      const rows = batch;
      batch = [];
      return this.#insertRows(rows, batchType, nextRevision());
    };
    for (const planned of plan) {
      const group = groups?.get(itemOf(planned));
      const statements = s.spaces[planned.space];
      const { keys, columns, expect } = planned;
      if (
        columns !== undefined && (expect === undefined || expect === null) &&
        (group === undefined || group.count === 1)
      ) {
        const type = expect === null ? "insert" : "upsert";
        if (
          batch.length > 0 &&
          (batch[0]!.space !== planned.space || batchType !== type)
        ) {
          if (!flush()) return undefined;
        }
        batchType = type;
        batch.push(planned);
        continue;
      }
      if (!flush()) return undefined;
      if (group !== undefined && group.count > 1) {
        if (group.hasExpect) {
          if (!("before" in group)) {
            group.before = revisionOf(firstRow(statements.get, ...keys));
          }
          if (!expectationHolds(expect, group.before)) return undefined;
        }
        if (columns === undefined) statements.remove.run(...keys);
        else statements.upsert.run(...keys, ...columns, nextRevision());
      } else if (columns === undefined) {
        if (expect === undefined) {
          statements.remove.run(...keys);
        } else if (expect === null) {
          // Expecting absence, a delete that removes something fails.
          if (changes(statements.remove.run(...keys)) !== 0) return undefined;
        } else if (
          changes(statements.removeIf.run(...keys, expect as number)) === 0
        ) {
          return undefined;
        }
      } else if (expect === undefined) {
        statements.upsert.run(...keys, ...columns, nextRevision());
      } else if (expect === null) {
        const inserted = statements.insert.run(
          ...keys,
          ...columns,
          nextRevision(),
        );
        if (changes(inserted) === 0) return undefined;
      } else {
        const updated = statements.update.run(
          ...columns,
          nextRevision(),
          ...keys,
          expect as number,
        );
        if (changes(updated) === 0) return undefined;
      }
    }
    if (!flush()) return undefined;
    const rev = revision === undefined ? null : String(revision);
    const revs = plan.map((planned) => {
      const last = groups?.get(itemOf(planned))?.last;
      const final = last === undefined ? planned : plan[last]!;
      return final.columns === undefined ? null : rev;
    });
    return { revs, revision, blockEnd };
  }

  /**
   * Puts rows of one space with multi-row statements of 32, 16, …, 1 rows
   * (so at most six shapes per space and type are prepared). An `insert`
   * batch expects every item absent: it fails (`false`) when fewer rows
   * went in than it holds, and the write rolls back.
   */
  #insertRows(
    rows: readonly Planned[],
    type: BatchType,
    revision: number,
  ): boolean {
    let inserted = 0;
    for (let start = 0; start < rows.length;) {
      let size = INSERT_ROWS;
      while (size > rows.length - start) size /= 2;
      const params: SqliteValue[] = [];
      for (let index = start; index < start + size; index++) {
        const { keys, columns } = rows[index]!;
        for (const key of keys) params.push(key);
        for (const column of columns!) params.push(column);
        params.push(revision);
      }
      const space = rows[0]!.space;
      inserted += changes(
        this.#insertStatement(space, type, size).run(...params),
      );
      start += size;
    }
    return type === "upsert" || inserted === rows.length;
  }

  /** The prepared multi-row INSERT of `rows` rows into a space. */
  #insertStatement(
    space: Space,
    type: BatchType,
    rows: number,
  ): SqliteStatementLike {
    const shape = `${space}/${type}/${rows}`;
    let statement = this.#inserts.get(shape);
    if (statement === undefined) {
      const { table, keys, columns } = LAYOUTS[space]!;
      const all = [...keys, ...columns, "rev"];
      const row = `(${marks(all.length)})`;
      const values = Array.from({ length: rows }, () => row).join(", ");
      statement = this.#db.prepare(
        `INSERT INTO ${table} (${all.join(", ")}) VALUES ${values} ${
          type === "insert"
            ? "ON CONFLICT DO NOTHING"
            : `ON CONFLICT (${keys.join(", ")}) DO UPDATE SET ${
              [...columns, "rev"].map((column) =>
                `${column} = excluded.${column}`
              ).join(", ")
            }`
        }`,
      );
      this.#inserts.set(shape, statement);
    }
    return statement;
  }

  /**
   * Reads records by id with `id IN (…)`, a chunk of ids per statement:
   * one call into the driver per chunk instead of one per id. Rows come
   * back in the index's order, so each is matched to its id through the id
   * its value holds, checked against its key (a record's key is made of
   * its own kind and id).
   */
  #readRecords(
    kind: string,
    ids: readonly string[],
  ): (Versioned<StoredRecord> | undefined)[] {
    const kindKey = this.#kindKey(kind);
    const rows = new Map<string, unknown>();
    const parsed = new Map<string, Versioned<StoredRecord>>();
    for (let start = 0; start < ids.length; start += RECORDS_IN_CHUNK) {
      const end = Math.min(ids.length, start + RECORDS_IN_CHUNK);
      let size = 1;
      while (size < end - start) size *= 2;
      const params: SqliteValue[] = [kindKey];
      for (let index = start; index < start + size; index++) {
        params.push(this.#encodeKey(ids[Math.min(index, end - 1)]!));
      }
      for (const row of this.#recordsInStatement(size).all(...params)) {
        const entry = toRecord(row, kind)!;
        rows.set(entry.value.id, row);
        parsed.set(entry.value.id, entry);
      }
    }
    // A fresh pull finds none of its records.
    if (rows.size === 0) return ids.map(() => undefined);
    return ids.map((id) => {
      const entry = parsed.get(id);
      if (entry === undefined) {
        // A repeated id gets a fresh parse: entries share no objects.
        const row = rows.get(id);
        return row === undefined ? undefined : toRecord(row, kind);
      }
      parsed.delete(id);
      return entry;
    });
  }

  /** The prepared `getRecords()` statement for `size` ids. */
  #recordsInStatement(size: number): SqliteStatementLike {
    let statement = this.#recordsIn.get(size);
    if (statement === undefined) {
      try {
        statement = this.#db.prepare(
          `SELECT ${RECORD_SELECT} FROM records WHERE kind = ? AND id IN (${
            marks(size)
          })`,
        );
      } catch (error) {
        throw driverError("read records", error);
      }
      this.#recordsIn.set(size, statement);
    }
    return statement;
  }

  /**
   * {@linkcode encodeKey} into views of a shared chunk: one allocation per
   * 64 KiB of keys instead of one per key (a few percent of a pull). A
   * chunk is never written twice: a full one is left to the views still
   * using it, and the driver copies what it binds anyway.
   */
  #encodeKey(text: string): Uint8Array {
    const length = text.length * 2;
    if (this.#keyChunkUsed + length > this.#keyChunk.length) {
      if (length > KEY_CHUNK / 4) return encodeKey(text);
      this.#keyChunk = new Uint8Array(KEY_CHUNK);
      this.#keyChunkUsed = 0;
    }
    const start = this.#keyChunkUsed;
    this.#keyChunkUsed = start + length;
    return encodeUtf16(text, {
      into: this.#keyChunk.subarray(start, start + length),
    });
  }

  /** A kind's key, encoded once. */
  #kindKey(kind: string): Uint8Array {
    let key = this.#kindKeys.get(kind);
    if (key === undefined) {
      if (this.#kindKeys.size >= KIND_KEYS_CACHE) this.#kindKeys.clear();
      key = encodeKey(kind);
      this.#kindKeys.set(kind, key);
    }
    return key;
  }

  /** A prepared `listOps()` statement for one shape of filter. */
  #listOpsStatement(
    states: number | undefined,
    kinds: number | undefined,
    id: boolean,
    after: boolean,
  ): SqliteStatementLike {
    const shape = `${states ?? "-"}/${kinds ?? "-"}/${id}/${after}`;
    let statement = this.#listOps.get(shape);
    if (statement !== undefined) {
      // Most recently used last, so the oldest shape is evicted first.
      this.#listOps.delete(shape);
      this.#listOps.set(shape, statement);
      return statement;
    }
    const where: string[] = [];
    if (states !== undefined) {
      where.push(states === 1 ? "state = ?" : `state IN (${marks(states)})`);
    }
    if (kinds !== undefined) {
      where.push(kinds === 1 ? "kind = ?" : `kind IN (${marks(kinds)})`);
    }
    if (id) where.push("id = ?");
    if (after) where.push("op_id > ?");
    const sql = `SELECT ${OP_SELECT} FROM ops${
      where.length === 0 ? "" : ` WHERE ${where.join(" AND ")}`
    } ORDER BY op_id LIMIT ?`;
    try {
      statement = this.#db.prepare(sql);
    } catch (error) {
      throw driverError("list ops", error);
    }
    if (this.#listOps.size >= LIST_OPS_CACHE) {
      this.#listOps.delete(this.#listOps.keys().next().value!);
    }
    this.#listOps.set(shape, statement);
    return statement;
  }
}

/**
 * Whether a plan writes some item more than once. Most writes (a page of
 * pulled records, a put) do not, and then need no groups.
 */
function hasRepeatedItem(plan: readonly Planned[]): boolean {
  // Names strictly increasing within each space and kind are distinct: a
  // pass of comparisons, where a set would hash every fresh string (about
  // 300 ns each, a few percent of a pull).
  const last = new Map<string | Space, string>();
  let increasing = true;
  for (const planned of plan) {
    const scope = planned.kind ?? planned.space;
    const previous = last.get(scope);
    if (previous !== undefined && !(previous < planned.name)) {
      increasing = false;
      break;
    }
    last.set(scope, planned.name);
  }
  if (increasing) return false;
  // By space and kind, so that no item string is built for it.
  const names = new Map<string | Space, Set<string>>();
  for (const planned of plan) {
    const scope = planned.kind ?? planned.space;
    let seen = names.get(scope);
    if (seen === undefined) names.set(scope, seen = new Set());
    else if (seen.has(planned.name)) return true;
    seen.add(planned.name);
  }
  return false;
}

/**
 * Identifies an item within a write; a record's kind length keeps
 * `("a", "bc")` from `("ab", "c")`.
 */
function itemOf(planned: Planned): string {
  const { space, kind, name } = planned;
  if (space === RECORD) return `r${kind!.length}:${kind}${name}`;
  return `${space === OP ? "o" : "m"}${name}`;
}

function marks(count: number): string {
  return Array.from({ length: count }, () => "?").join(", ");
}

/**
 * SQLite's "no limit" is a negative LIMIT; a number beyond 2^53 would bind
 * as a REAL, which LIMIT refuses.
 */
function sqlLimit(limit: number): number {
  return limit > Number.MAX_SAFE_INTEGER ? -1 : limit;
}

function changes(result: { readonly changes: number | bigint }): number {
  return Number(result.changes);
}

function revisionOf(
  row: Record<string, unknown> | undefined,
): number | undefined {
  return row === undefined ? undefined : Number(row["rev"]);
}

/**
 * A record row as the entry, checked (contract clause 9): its JSON must
 * parse and be a record of the row's kind and id and `deleted` column.
 */
function toRecord(
  row: unknown,
  kind: string,
): Versioned<StoredRecord> | undefined {
  if (row === null || row === undefined) return undefined;
  const { value, rev, base_is_data: baseIsData, id, deleted } = row as {
    value: unknown;
    rev: number | bigint;
    base_is_data: number | bigint;
    id: Uint8Array;
    deleted: number | bigint;
  };
  // 1 (a number or a bigint) means the base was stored without its data,
  // which is the record's (schema v3).
  const shared = Number(baseIsData) !== 0;
  const item = (): string => recordItem(kind, decodeUtf16(id));
  // A fresh parse per entry: nothing is shared with the caller or between
  // entries, and JSON.parse keeps "__proto__" keys as own data properties.
  const record = storedRecord(parseStored(value, item), item, {
    kind,
    baseIsData: shared,
  });
  if (!isUtf16Of(id, record.id)) throw misplaced(item, "id", record.id);
  if (Number(deleted) !== (record.deleted ? 1 : 0)) {
    throw new StorageError(
      `Cannot read ${item()} as its stored 'deleted' disagrees with its row: current value is ${record.deleted}`,
    );
  }
  return {
    value: shared ? withBaseData(record, item) : record,
    rev: String(rev),
  };
}

/**
 * An op row as the entry, checked: its JSON must parse and be an op of the
 * row's op id, state, kind and id (the columns listings filter on).
 */
function toOp(row: unknown): Versioned<StoredOp> | undefined {
  if (row === null || row === undefined) return undefined;
  const { value, rev, op_id: opId, state, kind, id } = row as {
    value: unknown;
    rev: number | bigint;
    op_id: Uint8Array;
    state: unknown;
    kind: Uint8Array;
    id: Uint8Array;
  };
  const item = (): string => `op ${shortText(decodeUtf16(opId))}`;
  const op = storedOp(parseStored(value, item), item);
  if (!isUtf16Of(opId, op.opId)) throw misplaced(item, "opId", op.opId);
  if (op.state !== state) throw misplaced(item, "state", op.state);
  if (!isUtf16Of(kind, op.kind)) throw misplaced(item, "kind", op.kind);
  if (!isUtf16Of(id, op.id)) throw misplaced(item, "id", op.id);
  return { value: op, rev: String(rev) };
}

/** A meta row as the entry: any JSON is a meta value. */
function toMeta(row: unknown, key: string): Versioned<JsonValue> | undefined {
  if (row === null || row === undefined) return undefined;
  const { value, rev } = row as { value: unknown; rev: number | bigint };
  const parsed = parseStored(value, `meta entry ${shortText(key)}`);
  return { value: parsed as JsonValue, rev: String(rev) };
}

function expectationHolds(
  expect: PlannedExpect,
  rev: number | undefined,
): boolean {
  if (expect === undefined) return true;
  if (expect === null) return rev === undefined;
  return rev === expect;
}

/**
 * Ends the connection's transaction after a failure. SQLite may have rolled
 * back already (SQLITE_FULL, SQLITE_IOERR), or never begun: the first error
 * is the one worth reporting, so this one is dropped.
 */
function rollbackQuietly(s: Statements): void {
  try {
    s.rollback.run();
  } catch {
    // See above.
  }
}

/** Wraps a driver failure, marking lock timeouts as retryable. */
function driverError(action: string, error: unknown): unknown {
  if (error instanceof SyncError) return error;
  return new StorageError(
    `Cannot ${action} as SQLite failed: ${messageOf(error)}`,
    { cause: error, retryable: isBusy(error) },
  );
}

/**
 * Whether SQLite gave up waiting for a lock. Drivers report it differently:
 * `code: "SQLITE_BUSY"` (bun:sqlite, better-sqlite3), `errcode: 5` or only
 * the message (node:sqlite).
 */
function isBusy(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  const { code, errcode, message } = error as {
    code?: unknown;
    errcode?: unknown;
    message?: unknown;
  };
  if (typeof code === "string" && /^SQLITE_(BUSY|LOCKED)/.test(code)) {
    return true;
  }
  if (typeof errcode === "number" && [5, 6].includes(errcode & 0xff)) {
    return true;
  }
  return typeof message === "string" &&
    /database (table )?is locked/.test(message);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

// ---------------------------------------------------------------------------
// Encoding

/** Encodes a checked mutation as the statements' parameters. */
function planOf(mutation: CheckedMutation, encode: KeyEncoders): Planned {
  const expect = plannedExpect(mutation.expect);
  switch (mutation.space) {
    case "record": {
      const { kind, id, value } = mutation;
      return {
        space: RECORD,
        name: id,
        kind,
        keys: [encode.kind(kind), encode.key(id)],
        columns: value === undefined ? undefined : recordColumns(value),
        expect,
      };
    }
    case "op": {
      const { opId, value } = mutation;
      return {
        space: OP,
        name: opId,
        kind: undefined,
        keys: [encode.key(opId)],
        columns: value === undefined ? undefined : [
          value.state,
          encode.key(value.kind),
          encode.key(value.id),
          JSON.stringify(value),
        ],
        expect,
      };
    }
    case "meta": {
      const { key, value } = mutation;
      return {
        space: META,
        name: key,
        kind: undefined,
        keys: [encode.key(key)],
        columns: value === undefined ? undefined : [JSON.stringify(value)],
        expect,
      };
    }
  }
}

/**
 * A record's value columns: `deleted`, `base_is_data` and the JSON. A base
 * whose data is the record's own data object (the engine passes one object
 * for both when a pulled record has no local edits) is stored without it:
 * the same JSON twice would double the row. Only the same object counts:
 * comparing distinct objects would cost what storing them costs.
 */
function recordColumns(record: StoredRecord): SqliteValue[] {
  const base = record.base as StoredRecord["base"] | undefined;
  if (
    typeof base === "object" && base !== null && base.data === record.data
  ) {
    const { data: _, ...rest } = base;
    return [
      record.deleted ? 1 : 0,
      1,
      JSON.stringify({ ...record, base: rest }),
    ];
  }
  return [record.deleted ? 1 : 0, 0, JSON.stringify(record)];
}

function plannedExpect(expect: Expect): PlannedExpect {
  if (typeof expect !== "string") return expect;
  // Revisions are the counter in decimal; anything else was not issued.
  if (!/^[1-9][0-9]{0,15}$/.test(expect)) return false;
  const rev = Number(expect);
  return Number.isSafeInteger(rev) ? rev : false;
}
