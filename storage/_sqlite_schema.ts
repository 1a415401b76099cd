/**
 * The on-disk schema of the SQLite storage and its migrations. Private to
 * `storage/sqlite.ts` (and its tests, which build old files with it): not
 * exported from the package.
 *
 * Keys (kinds, record ids, op ids, meta keys) are BLOBs holding the string's
 * UTF-16BE code units: `memcmp` order on them is UTF-16 code-unit order, as
 * contract clause 4 requires (`node:sqlite` cannot register a collation), and
 * NUL characters survive (Deno's `node:sqlite` cuts TEXT at a raw NUL on
 * read). Values are JSON TEXT, which is safe because `JSON.stringify`
 * escapes NUL and lone surrogates.
 *
 * The schema version and the revision counter live in the one row of
 * `sync_state` rather than in `PRAGMA user_version`, which the owner of a
 * shared connection may use for migrations of their own.
 *
 * @module
 */

import { StorageError, SyncError } from "../src/errors.ts";
import type {
  SqliteDatabaseLike,
  SqliteStatementLike,
  SqliteValue,
} from "../src/sqlite_like.ts";
import { encodeUtf16 } from "../src/utf16.ts";

/** One step of the schema: from `version - 1` to `version`. */
export interface SqliteMigration {
  /** The version the schema has after this step. */
  readonly version: number;
  /** What the step does, for humans. */
  readonly description: string;
  /** The statements of the step, run with `exec()`. */
  readonly sql: string;
}

/**
 * Every step of the schema, in order. Append new steps; never edit a
 * published one, since files already carry its result.
 */
export const SQLITE_MIGRATIONS: readonly SqliteMigration[] = [
  {
    version: 1,
    description: "tables for records, ops, meta and the revision counter",
    sql: `
CREATE TABLE sync_state (
  singleton INTEGER PRIMARY KEY CHECK (singleton = 0),
  schema_version INTEGER NOT NULL,
  revision INTEGER NOT NULL
);
INSERT INTO sync_state (singleton, schema_version, revision) VALUES (0, 0, 0);
CREATE TABLE records (
  kind BLOB NOT NULL,
  id BLOB NOT NULL,
  deleted INTEGER NOT NULL,
  value TEXT NOT NULL,
  rev INTEGER NOT NULL,
  PRIMARY KEY (kind, id)
) WITHOUT ROWID;
CREATE TABLE ops (
  op_id BLOB NOT NULL PRIMARY KEY,
  state TEXT NOT NULL,
  kind BLOB NOT NULL,
  id BLOB NOT NULL,
  value TEXT NOT NULL,
  rev INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE meta (
  key BLOB NOT NULL PRIMARY KEY,
  value TEXT NOT NULL,
  rev INTEGER NOT NULL
) WITHOUT ROWID;
`,
  },
  {
    version: 2,
    description:
      "indexes for the outbox drain and per-record FIFO; quarantine and conflict_inbox views",
    // ops_by_record leads with the record id so that it also serves
    // listOps({ id }) without kinds (records of that id in every table).
    // The views decode the JSON for the sqlite3 CLI, where the BLOB keys are
    // unreadable; they order by the BLOB op id, the outbox's order.
    sql: `
CREATE INDEX ops_by_state ON ops (state, op_id);
CREATE INDEX ops_by_record ON ops (id, kind, op_id);
CREATE VIEW quarantine AS
SELECT json_extract(value, '$.opId') AS op_id,
  json_extract(value, '$.kind') AS kind,
  json_extract(value, '$.id') AS id,
  json_extract(value, '$.type') AS type,
  json_extract(value, '$.attempts') AS attempts,
  json_extract(value, '$.error.status') AS status,
  json_extract(value, '$.error.code') AS code,
  json_extract(value, '$.error.message') AS message,
  json_extract(value, '$.error.at') AS failed_at,
  value
FROM ops WHERE state = 'quarantined' ORDER BY ops.op_id;
CREATE VIEW conflict_inbox AS
SELECT json_extract(value, '$.opId') AS op_id,
  json_extract(value, '$.kind') AS kind,
  json_extract(value, '$.id') AS id,
  json_extract(value, '$.type') AS type,
  json_extract(value, '$.conflict.detectedAt') AS detected_at,
  json_extract(value, '$.conflict.serverUpdatedAt') AS server_updated_at,
  json_extract(value, '$.conflict.local') AS local,
  json_extract(value, '$.conflict.server') AS server,
  json_extract(value, '$.conflict.base') AS base,
  value
FROM ops WHERE state = 'parked' ORDER BY ops.op_id;
`,
  },
  {
    version: 3,
    description:
      "records.base_is_data: a base whose data is the record's data is stored once",
    // A pulled record without local edits has the same JSON as its data and
    // as its base's data; storing it once halves the row. 1 means `value`
    // holds the base without its `data`, which reads back as a copy of the
    // record's `data`. A flag column rather than a marker inside the JSON:
    // any value inside it could be a caller's own. ADD COLUMN with a
    // constant default rewrites no row, so the step is instant on any file.
    sql: `
ALTER TABLE records ADD COLUMN base_is_data INTEGER NOT NULL DEFAULT 0;
`,
  },
  {
    version: 4,
    description:
      "ops_by_state holds only the ops that are not pending: an enqueue writes one B-tree less",
    // Pending ops are nearly every op, and the primary key already lists
    // them in outbox order: a listing of pending ops walks it and skips the
    // few parked and quarantined ones. Indexing them too cost every enqueue
    // a page of its commit. Queries of held states repeat the predicate
    // (`state <> 'pending'`, verbatim) so that SQLite can use the index.
    sql: `
DROP INDEX ops_by_state;
CREATE INDEX ops_by_state ON ops (state, op_id) WHERE state <> 'pending';
`,
  },
];

/**
 * The predicate of the partial index `ops_by_state` (schema v4). A query
 * may use the index only when its WHERE clause holds this exact term.
 */
export const HELD_STATES = "state <> 'pending'";

/** The schema version this code writes: the last migration's. */
export const SQLITE_SCHEMA_VERSION: number = SQLITE_MIGRATIONS.length;

/**
 * Encodes a key as the BLOB the schema stores: the string's UTF-16BE code
 * units, lone surrogates included.
 *
 * @param text The key.
 * @returns Two bytes per code unit, big-endian.
 */
export function encodeKey(text: string): Uint8Array {
  return encodeUtf16(text);
}

/**
 * Runs a statement and returns its first row. The one place where drivers'
 * "no row" differs: `bun:sqlite` returns `null`, the others `undefined`.
 *
 * @param statement A statement that returns rows.
 * @param params Its parameters.
 * @returns The first row, or `undefined`.
 */
export function firstRow(
  statement: SqliteStatementLike,
  ...params: SqliteValue[]
): Record<string, unknown> | undefined {
  const row = statement.get(...params);
  return row === null || row === undefined
    ? undefined
    : row as Record<string, unknown>;
}

/**
 * Reads the schema version of a database; `0` when it has no schema yet.
 *
 * @param db The connection.
 * @returns The version.
 * @throws {Error} When the driver fails (for one, on a file that is not a
 * database).
 */
export function readSqliteSchemaVersion(db: SqliteDatabaseLike): number {
  const table = firstRow(
    db.prepare(
      "SELECT 1 AS found FROM sqlite_master WHERE type = 'table' AND name = 'sync_state'",
    ),
  );
  if (table === undefined) return 0;
  const row = firstRow(db.prepare("SELECT schema_version FROM sync_state"));
  return Number(row?.["schema_version"] ?? 0);
}

/**
 * Throws when a database's schema is newer than the migrations know: the
 * code cannot tell what a newer schema means, so it must not touch it.
 *
 * @param version The database's version.
 * @param migrations The known migrations.
 * @throws {StorageError} When `version` is newer.
 */
export function assertSqliteSchemaKnown(
  version: number,
  migrations: readonly SqliteMigration[] = SQLITE_MIGRATIONS,
): void {
  if (version > migrations.length) {
    throw new StorageError(
      `Cannot open SQLite storage as its schema is newer than version ${migrations.length}: current value is ${version}`,
    );
  }
}

/**
 * Brings a database's schema to the last of `migrations`, running every
 * missing step in one `BEGIN IMMEDIATE` transaction: a file ends up either
 * fully migrated or exactly as it was. Another connection migrating at the
 * same moment waits on the lock, then finds nothing left to do.
 *
 * @param db The connection (not inside a transaction).
 * @param migrations The steps, versions 1, 2, … in order.
 * @throws {StorageError} When the schema is newer than `migrations`, or a
 * step fails (with the driver's error as `cause`); nothing is changed.
 */
export function migrateSqliteSchema(
  db: SqliteDatabaseLike,
  migrations: readonly SqliteMigration[] = SQLITE_MIGRATIONS,
): void {
  migrations.forEach((migration, index) => {
    if (migration.version !== index + 1) {
      throw new RangeError(
        `Cannot migrate SQLite storage as migration ${index} is not version ${
          index + 1
        }: current value is ${migration.version}`,
      );
    }
  });
  const target = migrations.length;
  // The common case, an up-to-date file, takes no write lock.
  let version = readSqliteSchemaVersion(db);
  assertSqliteSchemaKnown(version, migrations);
  if (version === target) return;
  db.exec("BEGIN IMMEDIATE");
  try {
    version = readSqliteSchemaVersion(db);
    assertSqliteSchemaKnown(version, migrations);
    for (const migration of migrations.slice(version)) db.exec(migration.sql);
    db.prepare("UPDATE sync_state SET schema_version = ?").run(target);
    db.exec("COMMIT");
  } catch (error) {
    try {
      db.exec("ROLLBACK");
    } catch {
      // SQLite may have rolled back already; the first error is the one
      // worth reporting.
    }
    if (error instanceof SyncError) throw error;
    throw new StorageError(
      `Cannot open SQLite storage as migrating its schema to version ${target} failed: current value is ${version}`,
      { cause: error },
    );
  }
}
