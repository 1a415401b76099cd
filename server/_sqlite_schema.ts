/**
 * The SQLite server store's schema, its migrations from versions 1 and 2,
 * and the statements the store prepares on a connection.
 *
 * @module
 */

import type {
  SqliteDatabaseLike,
  SqliteStatementLike,
} from "../src/sqlite_like.ts";

/** The schema version the SQLite server store writes (`PRAGMA user_version`). */
export const SCHEMA_VERSION = 3;

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
// committed there; `id` is NULL when unknown. Version 2's layout, kept for
// the migration from version 1.
const CLOCKS_V2 = `
CREATE TABLE clocks (
  ns BLOB PRIMARY KEY,
  updated_at INTEGER NOT NULL,
  id BLOB
) WITHOUT ROWID;
CREATE INDEX idempotency_age ON idempotency (ns, expires_at);
`;

// Version 3: the clock row also holds the namespace's `version`, which every
// commit to the namespace raises in its write transaction (so that several
// processes on one file can guard their commits by it: the shared
// capability); `updated_at` is NULL while the namespace has committed only
// idempotency entries.
const CLOCKS = `
CREATE TABLE clocks (
  ns BLOB PRIMARY KEY,
  updated_at INTEGER,
  id BLOB,
  version INTEGER NOT NULL
) WITHOUT ROWID;
`;

/** The tables and indexes of an empty database, at {@linkcode SCHEMA_VERSION}. */
export const SCHEMA = `${RECORDS}
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
CREATE INDEX idempotency_age ON idempotency (ns, expires_at);
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
export const MIGRATE_1_TO_2 = `
ALTER TABLE records RENAME TO records_v1;
DROP INDEX records_keyset;
DROP INDEX records_tombstones;
${RECORDS}
INSERT INTO records (ns, kind, id, updated_at, deleted_at, size, data)
  SELECT ns, kind, id, updated_at, deleted_at, length(CAST(data AS BLOB)), data
  FROM records_v1;
DROP TABLE records_v1;
${CLOCKS_V2}
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
 * Version 2 to 3: each clock row gains the namespace's `version` (the
 * table is rebuilt, since `updated_at` may now be NULL). Every existing
 * clock starts at version 1, so a process still holding a clock read before
 * the upgrade finds it moved.
 */
export const MIGRATE_2_TO_3 = `
ALTER TABLE clocks RENAME TO clocks_v2;
${CLOCKS}
INSERT INTO clocks (ns, updated_at, id, version)
  SELECT ns, updated_at, id, 1 FROM clocks_v2;
DROP TABLE clocks_v2;
PRAGMA user_version = 3;
`;

/** The name of each statement the store prepares. */
export type StatementName =
  | "getRecord"
  | "listFrom"
  | "listAfter"
  | "listAll"
  | "listLiveFrom"
  | "listLiveAfter"
  | "listLiveAll"
  | "sizesFrom"
  | "sizesAfter"
  | "sizesAll"
  | "sizesLiveFrom"
  | "sizesLiveAfter"
  | "sizesLiveAll"
  | "horizon"
  | "getIdempotency"
  | "putRecord"
  | "putIdempotency"
  | "raiseClock"
  | "bumpVersion"
  | "clock"
  | "purgeIdempotency"
  | "nthTombstone"
  | "newestTombstones"
  | "raiseHorizon"
  | "purgeTombstones"
  | "countIdempotency"
  | "trimIdempotency";

/** The prepared statements of one connection, by name. */
export type Statements = Readonly<Record<StatementName, SqliteStatementLike>>;

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

/**
 * Prepares every statement of the store on a connection whose schema is
 * current.
 *
 * @param db The connection.
 * @returns The statements.
 */
export function prepareStatements(db: SqliteDatabaseLike): Statements {
  const after = " AND (updated_at, id) > (?, ?)";
  const from = " AND updated_at >= ?";
  const live = " AND deleted_at IS NULL";
  // The sizes of a page come from the keyset index alone.
  const sizes = "size";
  return {
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
    // stays unknown at its instant. The version moves separately.
    raiseClock: db.prepare(
      `INSERT INTO clocks (ns, updated_at, id, version) VALUES (?, ?, ?, 0)
       ON CONFLICT (ns) DO UPDATE SET updated_at = excluded.updated_at,
         id = excluded.id
       WHERE clocks.updated_at IS NULL
         OR excluded.updated_at > clocks.updated_at
         OR (excluded.updated_at = clocks.updated_at
           AND clocks.id IS NOT NULL AND excluded.id > clocks.id)`,
    ),
    // Every commit to a namespace moves its version, in its transaction.
    bumpVersion: db.prepare(
      `INSERT INTO clocks (ns, updated_at, id, version) VALUES (?, NULL, NULL, 1)
       ON CONFLICT (ns) DO UPDATE SET version = clocks.version + 1`,
    ),
    clock: db.prepare(
      "SELECT updated_at, id, version FROM clocks WHERE ns = ?",
    ),
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
