/**
 * An SQLite {@linkcode ServerStore} for the reference server, so that its
 * records, tombstones and idempotency entries survive a restart.
 *
 * {@linkcode createSqliteServerStore} takes any driver that fits
 * `SqliteDatabaseLike` (Deno's and Node's `node:sqlite`, `bun:sqlite`,
 * better-sqlite3) synchronously; {@linkcode openSqliteServerStore} opens a
 * file with `node:sqlite`, imported on first use (so a caller that brings
 * its own driver never loads it).
 *
 * It is a shared store (`readClock`), so several server processes may serve
 * one file: each namespace's clock row holds the greatest `(updated_at, id)`
 * and a version, and a commit applies only inside `BEGIN IMMEDIATE` after
 * re-checking that the version is the one its writer read, moving it in the
 * same transaction; otherwise it rolls back and throws `StaleClockError`,
 * and the handler runs the write again from fresh reads. A record committed
 * after a client read a page thus never lands behind its cursor, whichever
 * process served either. A commit that finds another process holding the
 * write lock past the busy timeout is stale too (nothing was written).
 *
 * @example Serving from an SQLite file
 * ```ts
 * import { createSyncServer } from "@offline-first/sync/server";
 * import { openSqliteServerStore } from "@offline-first/sync/server/sqlite";
 * import assert from "node:assert/strict";
 *
 * await using server = createSyncServer({
 *   store: await openSqliteServerStore(":memory:"),
 * });
 * const response = await server.fetch(
 *   new Request("http://localhost/todo/1", { method: "PUT", body: "{}" }),
 * );
 * assert.equal(response.status, 201);
 * ```
 *
 * @module
 */

import { ClosedError, StorageError } from "../src/errors.ts";
import { decodeUtf16, encodeUtf16 } from "../src/utf16.ts";
import type { SqliteDatabaseLike, SqliteValue } from "../src/sqlite_like.ts";
import {
  type CommitGuard,
  type IdempotencyEntry,
  type LastWrite,
  type ListServerRecordsOptions,
  type ListServerRecordsResult,
  type NamespaceClock,
  type ServerRecord,
  type ServerStore,
  type ServerStorePurgeOptions,
  type ServerStorePurgeResult,
  type ServerWrite,
  StaleClockError,
  type TrimIdempotencyOptions,
  type TrimIdempotencyResult,
} from "./store.ts";
import {
  assertInGuard,
  integer,
  isBusy,
  readCount,
  toEntry,
  toListedRecord,
  toRecord,
  writeRows,
} from "./_sqlite_rows.ts";
import {
  MIGRATE_1_TO_2,
  MIGRATE_2_TO_3,
  prepareStatements,
  SCHEMA,
  SCHEMA_VERSION,
  type Statements,
} from "./_sqlite_schema.ts";

/** Options for {@linkcode createSqliteServerStore}. */
export interface SqliteServerStoreOptions {
  /**
   * Whether the store's `close()` closes the database too.
   *
   * @default {false}
   */
  readonly closeDatabase?: boolean;
}

/** Options for {@linkcode openSqliteServerStore}. */
export interface OpenSqliteServerStoreOptions {
  /**
   * How long a write waits for another connection's lock, in ms.
   *
   * @default {5000}
   */
  readonly busyTimeoutMs?: number;
}

/**
 * Creates a {@linkcode ServerStore} on an open SQLite connection, creating
 * its tables on first use (or upgrading them). Several connections, in one
 * or several processes, may use one database file at once; give each a busy
 * timeout (`PRAGMA busy_timeout`) and, for concurrent reads, WAL mode.
 *
 * @param db Any driver that fits `SqliteDatabaseLike`.
 * @param options Whether `close()` closes `db`.
 * @returns The store.
 * @throws {StorageError} When the database holds a newer schema version.
 * @throws {TypeError} When an option has the wrong type.
 *
 * @example Using a node:sqlite connection
 * ```ts
 * import { createSqliteServerStore } from "@offline-first/sync/server/sqlite";
 * import { DatabaseSync } from "node:sqlite";
 * import assert from "node:assert/strict";
 *
 * const db = new DatabaseSync(":memory:");
 * await using store = createSqliteServerStore(db, { closeDatabase: true });
 * const record = {
 *   kind: "todo",
 *   id: "nul\0id",
 *   updatedAt: 1,
 *   deletedAt: null,
 *   data: { id: "nul\0id", updated_at: "1970-01-01T00:00:00.001Z" },
 * };
 * await store.commit([{ type: "record", namespace: "public", record }]);
 * assert.deepEqual(await store.getRecord("public", "todo", "nul\0id"), record);
 * ```
 */
export function createSqliteServerStore(
  db: SqliteDatabaseLike,
  options: SqliteServerStoreOptions = {},
): ServerStore {
  const closeDatabase = options.closeDatabase ?? false;
  if (typeof closeDatabase !== "boolean") {
    throw new TypeError(
      `Cannot create SQLite server store as 'closeDatabase' is not a boolean: current value is ${
        String(closeDatabase)
      }`,
    );
  }
  return new SqliteServerStore(db, closeDatabase);
}

/**
 * Opens (creating it if needed) an SQLite file with `node:sqlite` as a
 * {@linkcode ServerStore} in WAL mode, with a busy timeout. The store owns
 * the connection; any number of processes may open one file at once.
 * `node:sqlite` is imported here, on first use.
 *
 * @param path The file, or `":memory:"`.
 * @param options The busy timeout.
 * @returns The store.
 * @throws {StorageError} When `node:sqlite` is not available, or the file
 * holds a newer schema version.
 * @throws {RangeError} When `busyTimeoutMs` is not a non-negative integer.
 * @throws {Error} When the file cannot be opened.
 *
 * @example Surviving a reopen
 * ```ts
 * import { openSqliteServerStore } from "@offline-first/sync/server/sqlite";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * const path = `${dir}/sync.sqlite`;
 * const record = {
 *   kind: "todo",
 *   id: "1",
 *   updatedAt: 1,
 *   deletedAt: null,
 *   data: { id: "1", updated_at: "1970-01-01T00:00:00.001Z" },
 * };
 * {
 *   await using store = await openSqliteServerStore(path);
 *   await store.commit([{ type: "record", namespace: "public", record }]);
 * }
 * {
 *   await using store = await openSqliteServerStore(path);
 *   assert.deepEqual(await store.getRecord("public", "todo", "1"), record);
 * }
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function openSqliteServerStore(
  path: string,
  options: OpenSqliteServerStoreOptions = {},
): Promise<ServerStore> {
  const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
  if (!Number.isSafeInteger(busyTimeoutMs) || busyTimeoutMs < 0) {
    throw new RangeError(
      `Cannot open SQLite server store as 'busyTimeoutMs' is not a non-negative integer: current value is ${busyTimeoutMs}`,
    );
  }
  let DatabaseSync: new (path: string) => SqliteDatabaseLike;
  try {
    ({ DatabaseSync } = await import("node:sqlite"));
  } catch (error) {
    throw new StorageError(
      "Cannot open SQLite server store as node:sqlite is not available",
      { cause: error },
    );
  }
  const db = new DatabaseSync(path);
  try {
    db.exec(`PRAGMA busy_timeout = ${busyTimeoutMs}`);
    // WAL lets pulls read while a write commits; ":memory:" stays "memory".
    db.exec("PRAGMA journal_mode = WAL");
    return new SqliteServerStore(db, true);
  } catch (error) {
    db.close();
    throw error;
  }
}

class SqliteServerStore implements ServerStore {
  readonly #db: SqliteDatabaseLike;
  readonly #closeDatabase: boolean;
  readonly #statements: Statements;
  #closed = false;

  constructor(db: SqliteDatabaseLike, closeDatabase: boolean) {
    this.#db = db;
    this.#closeDatabase = closeDatabase;
    this.#migrate();
    this.#statements = prepareStatements(db);
  }

  getRecord(
    namespace: string,
    kind: string,
    id: string,
  ): Promise<ServerRecord | null> {
    return this.#run("read record", () => {
      const row = this.#statements.getRecord.get(
        encodeUtf16(namespace),
        encodeUtf16(kind),
        encodeUtf16(id),
      );
      return row === undefined ? null : toRecord(row);
    });
  }

  getRecords(
    namespace: string,
    refs: readonly { readonly kind: string; readonly id: string }[],
  ): Promise<(ServerRecord | null)[]> {
    return this.#run("read records", () => {
      const statement = this.#statements.getRecord;
      const ns = encodeUtf16(namespace);
      const kinds = new Map<string, Uint8Array>();
      // One read transaction: one snapshot, as one call should be.
      return this.#transaction("BEGIN", () =>
        refs.map(({ kind, id }) => {
          let encoded = kinds.get(kind);
          if (encoded === undefined) {
            encoded = encodeUtf16(kind);
            kinds.set(kind, encoded);
          }
          const row = statement.get(ns, encoded, encodeUtf16(id));
          return row === undefined ? null : toRecord(row);
        }));
    });
  }

  listRecords(
    namespace: string,
    kind: string,
    options: ListServerRecordsOptions,
  ): Promise<ListServerRecordsResult> {
    return this.#run("list records", () => {
      const { since, afterId, maxBytes } = options;
      let limit = options.limit;
      const live = options.includeDeleted === false;
      const s = this.#statements;
      const keyset: SqliteValue[] = [encodeUtf16(namespace), encodeUtf16(kind)];
      if (since !== undefined) keyset.push(since);
      if (since !== undefined && afterId !== undefined) {
        keyset.push(encodeUtf16(afterId));
      }
      const shape = since === undefined
        ? "All"
        : afterId === undefined
        ? "From"
        : "After";
      const variant = `${live ? "Live" : ""}${shape}` as const;
      // One read transaction: the sizes, the page and its horizon come from
      // one snapshot, so neither a purge nor a write by another connection
      // can slip between them.
      return this.#transaction("BEGIN", () => {
        let truncated = false;
        if (maxBytes !== undefined) {
          const sizes = s[`sizes${variant}`].all(...keyset, limit) as {
            size: number | bigint;
          }[];
          let bytes = 0;
          for (let index = 0; index < sizes.length; index++) {
            bytes += Number(sizes[index]!.size);
            if (index > 0 && bytes > maxBytes) {
              limit = index;
              truncated = true;
              break;
            }
          }
        }
        const rows = s[`list${variant}`].all(...keyset, limit);
        const horizon = s.horizon.get(keyset[0]!, keyset[1]!) as
          | { horizon: number | bigint }
          | undefined;
        return {
          records: rows.map(toListedRecord),
          horizon: horizon === undefined ? null : Number(horizon.horizon),
          truncated,
        };
      });
    });
  }

  getIdempotency(
    namespace: string,
    key: string,
  ): Promise<IdempotencyEntry | null> {
    return this.#run("read idempotency entry", () => {
      return toEntry(
        this.#statements.getIdempotency.get(
          encodeUtf16(namespace),
          encodeUtf16(key),
        ),
      );
    });
  }

  getIdempotencies(
    namespace: string,
    keys: readonly string[],
  ): Promise<(IdempotencyEntry | null)[]> {
    return this.#run("read idempotency entries", () => {
      const statement = this.#statements.getIdempotency;
      const ns = encodeUtf16(namespace);
      return this.#transaction(
        "BEGIN",
        () => keys.map((key) => toEntry(statement.get(ns, encodeUtf16(key)))),
      );
    });
  }

  commit(writes: readonly ServerWrite[], guard?: CommitGuard): Promise<void> {
    return this.#run("commit writes", () => {
      if (guard !== undefined) assertInGuard(writes, guard);
      if (writes.length === 0) return;
      const s = this.#statements;
      this.#writeTransaction(guard, () => {
        // Checked under the write lock: no other connection can move the
        // clock between this check and the COMMIT below, which moves it.
        if (guard !== undefined) {
          const current = this.#readClock(guard.namespace).version;
          if (current !== guard.expect.version) {
            throw new StaleClockError(guard.namespace, guard.expect.version);
          }
        }
        writeRows(s, writes);
      });
    });
  }

  purge(options: ServerStorePurgeOptions): Promise<ServerStorePurgeResult> {
    return this.#run("purge", () => {
      const s = this.#statements;
      try {
        this.#db.exec("BEGIN IMMEDIATE");
      } catch (error) {
        // Another process holds the write lock past the busy timeout (most
        // likely purging too): this purge removes nothing now, and the
        // server's next maintenance tries again.
        if (isBusy(error)) return { idempotency: 0, tombstones: 0 };
        throw error;
      }
      return this.#inTransaction(() => {
        let idempotency = 0;
        let tombstones = 0;
        // SQLite reads a negative LIMIT as none.
        const limit = Number.isFinite(options.limit ?? Infinity)
          ? Math.floor(options.limit!)
          : -1;
        if (limit === 0 || limit < -1) return { idempotency, tombstones };
        if (options.idempotencyExpiredAt !== undefined) {
          idempotency = Number(
            s.purgeIdempotency.run(
              integer(options.idempotencyExpiredAt),
              limit,
            ).changes,
          );
        }
        let before = options.tombstonesUpdatedBefore;
        if (before !== undefined && limit > 0) {
          // The limit-th oldest: tombstones up to its millisecond go.
          const nth = s.nthTombstone.get(integer(before), limit - 1) as {
            updated_at: number | bigint;
          } | undefined;
          if (nth !== undefined) {
            before = Math.min(before, Number(nth.updated_at) + 1);
          }
        }
        if (before !== undefined) {
          const newest = s.newestTombstones.all(integer(before)) as {
            ns: Uint8Array;
            kind: Uint8Array;
            newest: number | bigint;
          }[];
          for (const row of newest) {
            s.raiseHorizon.run(row.ns, row.kind, Number(row.newest) + 1);
          }
          tombstones = Number(s.purgeTombstones.run(integer(before)).changes);
        }
        return { idempotency, tombstones };
      });
    });
  }

  trimIdempotency(
    namespace: string,
    options: TrimIdempotencyOptions,
  ): Promise<TrimIdempotencyResult> {
    return this.#run("trim idempotency entries", () => {
      const s = this.#statements;
      const ns = encodeUtf16(namespace);
      // Counting alone takes no write lock, so it never waits for another
      // process's write.
      if (
        !(options.keep < Infinity && Number.isFinite(options.expiresAtOrBefore))
      ) {
        return readCount(s.countIdempotency.get(ns));
      }
      return this.#transaction("BEGIN IMMEDIATE", () => {
        let counted = readCount(s.countIdempotency.get(ns));
        const excess = counted.count - options.keep;
        if (excess > 0 && Number.isFinite(options.expiresAtOrBefore)) {
          s.trimIdempotency.run(
            ns,
            ns,
            integer(options.expiresAtOrBefore),
            excess,
          );
          counted = readCount(s.countIdempotency.get(ns));
        }
        return counted;
      });
    });
  }

  lastWrite(namespace: string): Promise<LastWrite | null> {
    return this.#run("read last write", () => this.#readClock(namespace).last);
  }

  readClock(namespace: string): Promise<NamespaceClock> {
    return this.#run("read clock", () => this.#readClock(namespace));
  }

  /** Reads a namespace's clock row (one statement: one snapshot). */
  #readClock(namespace: string): NamespaceClock {
    const row = this.#statements.clock.get(encodeUtf16(namespace)) as
      | {
        updated_at: number | bigint | null;
        id: Uint8Array | null;
        version: number | bigint;
      }
      | undefined;
    if (row === undefined || row === null) return { last: null, version: null };
    return {
      last: row.updated_at === null ? null : {
        updatedAt: Number(row.updated_at),
        id: row.id === null ? null : decodeUtf16(row.id),
      },
      version: String(row.version),
    };
  }

  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    try {
      if (this.#closeDatabase) this.#db.close();
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(
        new StorageError("Cannot close SQLite server store", { cause: error }),
      );
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Runs synchronous driver work as a Promise; never throws synchronously. */
  #run<T>(action: string, work: () => T): Promise<T> {
    if (this.#closed) {
      return Promise.reject(
        new ClosedError(`Cannot ${action} as the store is closed`),
      );
    }
    try {
      return Promise.resolve(work());
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * A commit's write transaction. Another process holding the lock past the
   * busy timeout (at `BEGIN IMMEDIATE`, or at `COMMIT` without WAL) makes a
   * guarded commit stale rather than failed: nothing was written (the
   * transaction never began, or was rolled back), and the handler runs the
   * write again after a backoff instead of answering `500`.
   */
  #writeTransaction(guard: CommitGuard | undefined, work: () => void): void {
    try {
      this.#transaction("BEGIN IMMEDIATE", work);
    } catch (error) {
      if (guard !== undefined && isBusy(error)) {
        throw new StaleClockError(guard.namespace, guard.expect.version);
      }
      throw error;
    }
  }

  #transaction<T>(begin: string, work: () => T): T {
    this.#db.exec(begin);
    return this.#inTransaction(work);
  }

  #inTransaction<T>(work: () => T): T {
    try {
      const result = work();
      this.#db.exec("COMMIT");
      return result;
    } catch (error) {
      try {
        this.#db.exec("ROLLBACK");
      } catch {
        // SQLite may already have rolled back (e.g. on SQLITE_FULL); the
        // original error is the one worth reporting.
      }
      throw error;
    }
  }

  #migrate(): void {
    if (this.#schemaVersion() === SCHEMA_VERSION) return;
    // Read again under the write lock: another process opening the same
    // file may have migrated it meanwhile.
    this.#transaction("BEGIN IMMEDIATE", () => {
      const version = this.#schemaVersion();
      if (version === 0) {
        this.#db.exec(SCHEMA);
      } else if (version === 1 || version === 2) {
        if (version === 1) this.#db.exec(MIGRATE_1_TO_2);
        this.#db.exec(MIGRATE_2_TO_3);
      } else if (version !== SCHEMA_VERSION) {
        throw new StorageError(
          `Cannot open SQLite server store as its schema version is not ${SCHEMA_VERSION} or older: current value is ${version}`,
        );
      }
    });
  }

  #schemaVersion(): number {
    const row = this.#db.prepare("PRAGMA user_version").get() as
      | { user_version: number | bigint }
      | undefined;
    return Number(row?.user_version ?? 0);
  }
}
