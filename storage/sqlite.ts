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
import type { SqliteDatabaseLike, SqliteValue } from "../src/sqlite_like.ts";
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
import { KeyEncoder } from "./_sqlite_keys.ts";
import { planWrite } from "./_sqlite_plan.ts";
import {
  listOpRows,
  readEach,
  readRecordsIn,
  readRows,
  RECORDS_IN_CHUNK,
  toMeta,
  toOp,
  toRecord,
} from "./_sqlite_rows.ts";
import {
  assertSqliteSchemaKnown,
  encodeKey,
  firstRow,
  migrateSqliteSchema,
  readSqliteSchemaVersion,
} from "./_sqlite_schema.ts";
import {
  messageOf,
  META,
  OP,
  RECORD,
  SqliteStatements,
  sqlLimit,
} from "./_sqlite_statements.ts";
import { commitWrite, RevisionBlock } from "./_sqlite_write.ts";
import { describe } from "../src/describe.ts";
import {
  checkMutations,
  checkString,
  checkStrings,
  resolveListOpsOptions,
  resolveListRecordsOptions,
} from "./_validate.ts";

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
    return new SqliteStorage(db, { closeDatabase, persistent });
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

/** The storage: the contract's calls on one connection. */
class SqliteStorage implements Storage {
  readonly capabilities: StorageCapabilities;
  readonly #db: SqliteDatabaseLike;
  readonly #closeDatabase: boolean;
  #statements: SqliteStatements | undefined;
  readonly #keys = new KeyEncoder();
  readonly #block = new RevisionBlock();

  constructor(
    db: SqliteDatabaseLike,
    options: { readonly closeDatabase: boolean; readonly persistent: boolean },
  ) {
    this.#db = db;
    this.#closeDatabase = options.closeDatabase;
    this.#statements = new SqliteStatements(db);
    const file = options.persistent;
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
      const action = "read records";
      if (ids.length === 1) {
        const get = s.spaces[RECORD].get;
        const key = this.#keys.kind(kind);
        return readRows(s, {
          action,
          snapshot: false,
          work: () => [toRecord(firstRow(get, key, encodeKey(ids[0]!)), kind)],
        });
      }
      return readRows(s, {
        action,
        snapshot: ids.length > RECORDS_IN_CHUNK,
        work: () => readRecordsIn(s, { kind, ids, keys: this.#keys }),
      });
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
      const params: SqliteValue[] = [this.#keys.kind(kind)];
      if (after !== undefined) params.push(encodeKey(after));
      params.push(sqlLimit(limit));
      return readRows(s, {
        action: "list records",
        snapshot: false,
        work: () => statement.all(...params).map((row) => toRecord(row, kind)!),
      });
    });
  }

  getOps(
    opIds: readonly string[],
    options?: StorageCallOptions,
  ): Promise<(Versioned<StoredOp> | undefined)[]> {
    return this.#call("read ops", options, (s) => {
      checkStrings("read ops", "opIds", opIds);
      return readEach(s, {
        action: "read ops",
        space: OP,
        names: opIds,
        to: toOp,
      });
    });
  }

  listOps(options: ListOpsOptions = {}): Promise<Versioned<StoredOp>[]> {
    return this.#call("list ops", options, (s) => {
      const resolved = resolveListOpsOptions(options);
      const { limit, states, kinds } = resolved;
      if (limit === 0 || states?.size === 0 || kinds?.size === 0) return [];
      return listOpRows(s, { ...resolved, keys: this.#keys });
    });
  }

  getMeta(
    keys: readonly string[],
    options?: StorageCallOptions,
  ): Promise<(Versioned<JsonValue> | undefined)[]> {
    return this.#call("read meta", options, (s) => {
      checkStrings("read meta", "keys", keys);
      return readEach(s, {
        action: "read meta",
        space: META,
        names: keys,
        to: toMeta,
      });
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
      const checked = checkMutations(mutations, this.capabilities);
      const decided = planWrite(checked, this.#keys);
      if ("ok" in decided) return decided;
      return commitWrite(s, { steps: decided, block: this.#block });
    });
  }

  close(): Promise<void> {
    if (this.#statements === undefined) return Promise.resolve();
    this.#statements.clear();
    this.#statements = undefined;
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
    body: (statements: SqliteStatements) => T,
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
}
