/**
 * An SQLite {@linkcode ServerStore} for the reference server, so that its
 * records, tombstones and idempotency entries survive a restart.
 *
 * {@linkcode createSqliteServerStore} takes any driver that fits
 * `SqliteDatabaseLike` (Deno's and Node's `node:sqlite`, `bun:sqlite`,
 * better-sqlite3); {@linkcode openSqliteServerStore} opens a file with
 * `node:sqlite`.
 *
 * @example Serving from an SQLite file
 * ```ts
 * import { createSyncServer } from "@offline-first/sync/server";
 * import { openSqliteServerStore } from "@offline-first/sync/server/sqlite";
 * import assert from "node:assert/strict";
 *
 * await using server = createSyncServer({
 *   store: openSqliteServerStore(":memory:"),
 * });
 * const response = await server.fetch(
 *   new Request("http://localhost/todo/1", { method: "PUT", body: "{}" }),
 * );
 * assert.equal(response.status, 201);
 * ```
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { ClosedError, StorageError } from "../src/errors.ts";
import { isJsonObject, type JsonObject, type JsonValue } from "../src/json.ts";
import type {
  SqliteDatabaseLike,
  SqliteStatementLike,
  SqliteValue,
} from "../src/sqlite_like.ts";
import type {
  IdempotencyEntry,
  LastWrite,
  ListRecordsOptions,
  ListRecordsResult,
  ServerRecord,
  ServerStore,
  ServerStorePurgeOptions,
  ServerStorePurgeResult,
  ServerWrite,
  TrimIdempotencyOptions,
  TrimIdempotencyResult,
} from "./store.ts";
import { utf8Length } from "./_limits.ts";

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

/** The schema version this module writes (`PRAGMA user_version`). */
const SCHEMA_VERSION = 2;

// Ids, kinds, namespaces, keys and fingerprints are BLOBs holding UTF-16BE code units:
// memcmp order on them is UTF-16 code-unit order (node:sqlite cannot register
// a collation), and Deno's node:sqlite cuts TEXT at a raw NUL on read.
// Record data and response bodies are TEXT: JSON.stringify escapes NUL.
//
// `size` is the UTF-8 length of `data`, stored before it and in the keyset
// index, so a pull measures its page from the index alone and never reads a
// record it leaves out (a record's overflow pages are only read for `data`).
const RECORDS = `
CREATE TABLE records (
  ns BLOB NOT NULL,
  kind BLOB NOT NULL,
  id BLOB NOT NULL,
  updated_at INTEGER NOT NULL,
  deleted_at INTEGER,
  size INTEGER NOT NULL,
  data TEXT NOT NULL,
  PRIMARY KEY (ns, kind, id)
) WITHOUT ROWID;
CREATE INDEX records_keyset
  ON records (ns, kind, updated_at, id, deleted_at, size);
CREATE INDEX records_tombstones ON records (updated_at)
  WHERE deleted_at IS NOT NULL;
`;

// The clock is per namespace (CONTRACT.md): the greatest (updated_at, id)
// committed there; `id` is NULL when unknown.
const CLOCKS = `
CREATE TABLE clocks (
  ns BLOB PRIMARY KEY,
  updated_at INTEGER NOT NULL,
  id BLOB
) WITHOUT ROWID;
CREATE INDEX idempotency_age ON idempotency (ns, expires_at);
`;

const SCHEMA = `${RECORDS}
CREATE TABLE idempotency (
  ns BLOB NOT NULL,
  key BLOB NOT NULL,
  fingerprint BLOB NOT NULL,
  status INTEGER NOT NULL,
  body TEXT NOT NULL,
  expires_at INTEGER NOT NULL,
  PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_expiry ON idempotency (expires_at);
CREATE TABLE horizons (
  ns BLOB NOT NULL,
  kind BLOB NOT NULL,
  horizon INTEGER NOT NULL,
  PRIMARY KEY (ns, kind)
) WITHOUT ROWID;
CREATE TABLE meta (
  name TEXT PRIMARY KEY,
  value INTEGER NOT NULL
) WITHOUT ROWID;
${CLOCKS}
PRAGMA user_version = ${SCHEMA_VERSION};
`;

/**
 * Version 1 to 2: records gain `size` (the table is rebuilt so that `size`
 * comes before `data`), the one clock of every namespace becomes one per
 * namespace, and idempotency entries get an index by age.
 *
 * A namespace's clock is the greatest `(updated_at, id)` of its records, or
 * one millisecond below its newest horizon (the newest tombstone it purged,
 * whose id is gone): every `updated_at` it ever handed out, and no other
 * namespace's.
 */
const MIGRATE_1_TO_2 = `
ALTER TABLE records RENAME TO records_v1;
DROP INDEX records_keyset;
DROP INDEX records_tombstones;
${RECORDS}
INSERT INTO records (ns, kind, id, updated_at, deleted_at, size, data)
  SELECT ns, kind, id, updated_at, deleted_at, length(CAST(data AS BLOB)), data
  FROM records_v1;
DROP TABLE records_v1;
${CLOCKS}
INSERT INTO clocks (ns, updated_at, id)
  SELECT ns, updated_at, max(id) FROM records AS r
  WHERE updated_at = (SELECT max(updated_at) FROM records WHERE ns = r.ns)
  GROUP BY ns, updated_at;
INSERT INTO clocks (ns, updated_at, id)
  SELECT ns, max(horizon) - 1, NULL FROM horizons WHERE true GROUP BY ns
  ON CONFLICT (ns) DO UPDATE SET updated_at = excluded.updated_at, id = NULL
    WHERE excluded.updated_at >= clocks.updated_at;
DELETE FROM meta WHERE name = 'clock';
PRAGMA user_version = 2;
`;

/**
 * Creates a {@linkcode ServerStore} on an open SQLite connection, creating
 * its tables on first use. One server process should use a database at a
 * time: the server serialises writes in memory.
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
 * {@linkcode ServerStore} in WAL mode. The store owns the connection.
 *
 * @param path The file, or `":memory:"`.
 * @param options The busy timeout.
 * @returns The store.
 * @throws {StorageError} When the file holds a newer schema version.
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
 *   await using store = openSqliteServerStore(path);
 *   await store.commit([{ type: "record", namespace: "public", record }]);
 * }
 * {
 *   await using store = openSqliteServerStore(path);
 *   assert.deepEqual(await store.getRecord("public", "todo", "1"), record);
 * }
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export function openSqliteServerStore(
  path: string,
  options: OpenSqliteServerStoreOptions = {},
): ServerStore {
  const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
  if (!Number.isSafeInteger(busyTimeoutMs) || busyTimeoutMs < 0) {
    throw new RangeError(
      `Cannot open SQLite server store as 'busyTimeoutMs' is not a non-negative integer: current value is ${busyTimeoutMs}`,
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

interface Statements {
  readonly getRecord: SqliteStatementLike;
  readonly listFrom: SqliteStatementLike;
  readonly listAfter: SqliteStatementLike;
  readonly listAll: SqliteStatementLike;
  readonly listLiveFrom: SqliteStatementLike;
  readonly listLiveAfter: SqliteStatementLike;
  readonly listLiveAll: SqliteStatementLike;
  readonly sizesFrom: SqliteStatementLike;
  readonly sizesAfter: SqliteStatementLike;
  readonly sizesAll: SqliteStatementLike;
  readonly sizesLiveFrom: SqliteStatementLike;
  readonly sizesLiveAfter: SqliteStatementLike;
  readonly sizesLiveAll: SqliteStatementLike;
  readonly horizon: SqliteStatementLike;
  readonly getIdempotency: SqliteStatementLike;
  readonly putRecord: SqliteStatementLike;
  readonly putIdempotency: SqliteStatementLike;
  readonly raiseClock: SqliteStatementLike;
  readonly clock: SqliteStatementLike;
  readonly purgeIdempotency: SqliteStatementLike;
  readonly nthTombstone: SqliteStatementLike;
  readonly newestTombstones: SqliteStatementLike;
  readonly raiseHorizon: SqliteStatementLike;
  readonly purgeTombstones: SqliteStatementLike;
  readonly countIdempotency: SqliteStatementLike;
  readonly trimIdempotency: SqliteStatementLike;
}

const RECORD_COLUMNS = "kind, id, updated_at, deleted_at, data";

/** A keyset selection: `where` narrows `ns = ? AND kind = ?`. */
function listStatement(
  db: SqliteDatabaseLike,
  columns: string,
  where: string,
): SqliteStatementLike {
  return db.prepare(
    `SELECT ${columns} FROM records WHERE ns = ? AND kind = ?${where}
     ORDER BY updated_at, id LIMIT ?`,
  );
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
    const after = " AND (updated_at, id) > (?, ?)";
    const from = " AND updated_at >= ?";
    const live = " AND deleted_at IS NULL";
    // The sizes of a page come from the keyset index alone.
    const sizes = "size";
    this.#statements = {
      getRecord: db.prepare(
        `SELECT ${RECORD_COLUMNS} FROM records WHERE ns = ? AND kind = ? AND id = ?`,
      ),
      listFrom: listStatement(db, RECORD_COLUMNS, from),
      listAfter: listStatement(db, RECORD_COLUMNS, after),
      listAll: listStatement(db, RECORD_COLUMNS, ""),
      listLiveFrom: listStatement(db, RECORD_COLUMNS, from + live),
      listLiveAfter: listStatement(db, RECORD_COLUMNS, after + live),
      listLiveAll: listStatement(db, RECORD_COLUMNS, live),
      sizesFrom: listStatement(db, sizes, from),
      sizesAfter: listStatement(db, sizes, after),
      sizesAll: listStatement(db, sizes, ""),
      sizesLiveFrom: listStatement(db, sizes, from + live),
      sizesLiveAfter: listStatement(db, sizes, after + live),
      sizesLiveAll: listStatement(db, sizes, live),
      horizon: db.prepare(
        "SELECT horizon FROM horizons WHERE ns = ? AND kind = ?",
      ),
      getIdempotency: db.prepare(
        `SELECT key, fingerprint, status, body, expires_at FROM idempotency
         WHERE ns = ? AND key = ?`,
      ),
      putRecord: db.prepare(
        `INSERT INTO records (ns, kind, id, updated_at, deleted_at, size, data)
         VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (ns, kind, id) DO UPDATE SET updated_at = excluded.updated_at,
           deleted_at = excluded.deleted_at, size = excluded.size,
           data = excluded.data`,
      ),
      putIdempotency: db.prepare(
        `INSERT INTO idempotency (ns, key, fingerprint, status, body, expires_at)
         VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (ns, key) DO UPDATE SET fingerprint = excluded.fingerprint,
           status = excluded.status, body = excluded.body,
           expires_at = excluded.expires_at`,
      ),
      // Raised only by a greater (updated_at, id); an unknown id (NULL)
      // stays unknown at its instant.
      raiseClock: db.prepare(
        `INSERT INTO clocks (ns, updated_at, id) VALUES (?, ?, ?)
         ON CONFLICT (ns) DO UPDATE SET updated_at = excluded.updated_at,
           id = excluded.id
         WHERE excluded.updated_at > clocks.updated_at
           OR (excluded.updated_at = clocks.updated_at
             AND clocks.id IS NOT NULL AND excluded.id > clocks.id)`,
      ),
      clock: db.prepare("SELECT updated_at, id FROM clocks WHERE ns = ?"),
      purgeIdempotency: db.prepare(
        `DELETE FROM idempotency WHERE (ns, key) IN (
           SELECT ns, key FROM idempotency WHERE expires_at <= ?
           ORDER BY expires_at LIMIT ?)`,
      ),
      nthTombstone: db.prepare(
        `SELECT updated_at FROM records
         WHERE deleted_at IS NOT NULL AND updated_at < ?
         ORDER BY updated_at LIMIT 1 OFFSET ?`,
      ),
      newestTombstones: db.prepare(
        `SELECT ns, kind, max(updated_at) AS newest FROM records
         WHERE deleted_at IS NOT NULL AND updated_at < ? GROUP BY ns, kind`,
      ),
      raiseHorizon: db.prepare(
        `INSERT INTO horizons (ns, kind, horizon) VALUES (?, ?, ?)
         ON CONFLICT (ns, kind) DO UPDATE SET
           horizon = max(horizon, excluded.horizon)`,
      ),
      purgeTombstones: db.prepare(
        "DELETE FROM records WHERE deleted_at IS NOT NULL AND updated_at < ?",
      ),
      countIdempotency: db.prepare(
        `SELECT count(*) AS count, min(expires_at) AS oldest FROM idempotency
         WHERE ns = ?`,
      ),
      trimIdempotency: db.prepare(
        `DELETE FROM idempotency WHERE ns = ? AND key IN (
           SELECT key FROM idempotency WHERE ns = ? AND expires_at <= ?
           ORDER BY expires_at, key LIMIT ?)`,
      ),
    };
  }

  getRecord(
    namespace: string,
    kind: string,
    id: string,
  ): Promise<ServerRecord | null> {
    return this.#run("read record", () => {
      const row = this.#statements.getRecord.get(
        utf16(namespace),
        utf16(kind),
        utf16(id),
      );
      return row === undefined ? null : toRecord(row);
    });
  }

  listRecords(
    namespace: string,
    kind: string,
    options: ListRecordsOptions,
  ): Promise<ListRecordsResult> {
    return this.#run("list records", () => {
      const { since, afterId, maxBytes } = options;
      let limit = options.limit;
      const live = options.includeDeleted === false;
      const s = this.#statements;
      const keyset: SqliteValue[] = [utf16(namespace), utf16(kind)];
      if (since !== undefined) keyset.push(since);
      if (since !== undefined && afterId !== undefined) {
        keyset.push(utf16(afterId));
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
          records: rows.map(toRecord),
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
      const row = this.#statements.getIdempotency.get(
        utf16(namespace),
        utf16(key),
      ) as
        | {
          key: Uint8Array;
          fingerprint: Uint8Array;
          status: number | bigint;
          body: string;
          expires_at: number | bigint;
        }
        | undefined;
      if (row === undefined) return null;
      return {
        key: fromUtf16(row.key),
        fingerprint: fromUtf16(row.fingerprint),
        status: Number(row.status),
        body: JSON.parse(row.body) as JsonValue,
        expiresAt: Number(row.expires_at),
      };
    });
  }

  commit(writes: readonly ServerWrite[]): Promise<void> {
    return this.#run("commit writes", () => {
      if (writes.length === 0) return;
      const s = this.#statements;
      this.#transaction("BEGIN IMMEDIATE", () => {
        // The newest record of each namespace raises its clock once.
        const newest = new Map<string, { updatedAt: number; id: string }>();
        for (const write of writes) {
          if (write.type === "record") {
            const { record } = write;
            if (!isJsonObject(record.data)) {
              throw new TypeError(
                `Cannot commit record as its data is not a JSON object: current value is ${
                  JSON.stringify(record.data)
                }`,
              );
            }
            const data = JSON.stringify(record.data);
            s.putRecord.run(
              utf16(write.namespace),
              utf16(record.kind),
              utf16(record.id),
              integer(record.updatedAt),
              record.deletedAt === null ? null : integer(record.deletedAt),
              utf8Length(data),
              data,
            );
            const last = newest.get(write.namespace);
            if (
              last === undefined || record.updatedAt > last.updatedAt ||
              (record.updatedAt === last.updatedAt && record.id > last.id)
            ) {
              newest.set(write.namespace, {
                updatedAt: record.updatedAt,
                id: record.id,
              });
            }
          } else if (write.type === "idempotency") {
            const { entry } = write;
            s.putIdempotency.run(
              utf16(write.namespace),
              utf16(entry.key),
              utf16(entry.fingerprint),
              integer(entry.status),
              JSON.stringify(entry.body),
              integer(entry.expiresAt),
            );
          } else {
            // A throw here rolls back what this commit already wrote.
            throw new TypeError(
              `Cannot commit write as its type is unknown: current value is ${
                JSON.stringify((write as { type: unknown }).type)
              }`,
            );
          }
        }
        for (const [namespace, { updatedAt, id }] of newest) {
          s.raiseClock.run(utf16(namespace), updatedAt, utf16(id));
        }
      });
    });
  }

  purge(options: ServerStorePurgeOptions): Promise<ServerStorePurgeResult> {
    return this.#run("purge", () => {
      const s = this.#statements;
      return this.#transaction("BEGIN IMMEDIATE", () => {
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
      const ns = utf16(namespace);
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
    return this.#run("read last write", () => {
      const row = this.#statements.clock.get(utf16(namespace)) as
        | { updated_at: number | bigint; id: Uint8Array | null }
        | undefined;
      if (row === undefined || row === null) return null;
      return {
        updatedAt: Number(row.updated_at),
        id: row.id === null ? null : fromUtf16(row.id),
      };
    });
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

  #transaction<T>(begin: string, work: () => T): T {
    this.#db.exec(begin);
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
    const row = this.#db.prepare("PRAGMA user_version").get() as
      | { user_version: number | bigint }
      | undefined;
    const version = Number(row?.user_version ?? 0);
    if (version === SCHEMA_VERSION) return;
    if (version === 0) {
      this.#transaction("BEGIN IMMEDIATE", () => this.#db.exec(SCHEMA));
    } else if (version === 1) {
      this.#transaction("BEGIN IMMEDIATE", () => this.#db.exec(MIGRATE_1_TO_2));
    } else {
      throw new StorageError(
        `Cannot open SQLite server store as its schema version is not ${SCHEMA_VERSION} or older: current value is ${version}`,
      );
    }
  }
}

/** Reads a `countIdempotency` row. */
function readCount(row: unknown): TrimIdempotencyResult {
  const { count, oldest } = row as {
    count: number | bigint;
    oldest: number | bigint | null;
  };
  return {
    count: Number(count),
    oldestExpiresAt: oldest === null ? null : Number(oldest),
  };
}

function toRecord(row: unknown): ServerRecord {
  const { kind, id, updated_at, deleted_at, data } = row as {
    kind: Uint8Array;
    id: Uint8Array;
    updated_at: number | bigint;
    deleted_at: number | bigint | null;
    data: string;
  };
  return {
    kind: fromUtf16(kind),
    id: fromUtf16(id),
    updatedAt: Number(updated_at),
    deletedAt: deleted_at === null ? null : Number(deleted_at),
    data: JSON.parse(data) as JsonObject,
  };
}

function integer(value: number): number {
  if (!Number.isSafeInteger(value)) {
    throw new TypeError(
      `Cannot store number as it is not a safe integer: current value is ${value}`,
    );
  }
  return value;
}

/** A string's UTF-16BE code units, lone surrogates included. */
function utf16(text: string): Uint8Array {
  const bytes = new Uint8Array(text.length * 2);
  for (let index = 0; index < text.length; index++) {
    const unit = text.charCodeAt(index);
    bytes[index * 2] = unit >> 8;
    bytes[index * 2 + 1] = unit & 0xff;
  }
  return bytes;
}

/**
 * The inverse of {@linkcode utf16}. Not `TextDecoder("utf-16be")`: it would
 * replace lone surrogates with U+FFFD.
 */
function fromUtf16(bytes: Uint8Array): string {
  const units = new Uint16Array(bytes.length >> 1);
  for (let index = 0; index < units.length; index++) {
    units[index] = (bytes[index * 2]! << 8) | bytes[index * 2 + 1]!;
  }
  let text = "";
  // Chunked: String.fromCharCode takes its units as call arguments.
  for (let start = 0; start < units.length; start += 8192) {
    text += String.fromCharCode(...units.subarray(start, start + 8192));
  }
  return text;
}
