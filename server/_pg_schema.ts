/**
 * The Postgres server store's schema (`postgres.ts`): its versioned
 * migrations, applied on open under an advisory lock, and the quoting of
 * the schema name every statement is qualified with. Private to the store.
 *
 * Ids, kinds, namespaces, keys and fingerprints are `bytea` holding UTF-16BE
 * code units: byte order on them is UTF-16 code-unit order (the contract's
 * order, which no Postgres collation gives), and they keep NUL and lone
 * surrogates, which `text` refuses. Record data and response bodies are
 * `text` holding `JSON.stringify` output (which escapes both), never
 * `jsonb` (which would reorder keys and refuse `\u0000`).
 *
 * @module
 */

import { StorageError } from "../src/errors.ts";
import type { PgSql } from "./_pg_sql.ts";

/** One migration: its version and its statements, run in order. */
export interface Migration {
  /** The version the schema has after it; 1, 2, … without gaps. */
  readonly version: number;
  /** What it changes, for `schema_migrations`. */
  readonly name: string;
  /**
   * The statements; `S` stands for the quoted schema name.
   *
   * @param s The quoted schema name.
   * @returns The statements.
   */
  readonly statements: (s: string) => readonly string[];
}

/**
 * Every migration, oldest first. Append only: a released migration never
 * changes, a change of layout is a new one.
 */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "records, idempotency, horizons, clocks",
    statements: (s) => [
      // `size` is the UTF-8 length of `data`, kept in the keyset index so a
      // pull measures its page from the index alone and never reads a record
      // it leaves out.
      `CREATE TABLE ${s}.records (
        ns bytea NOT NULL,
        kind bytea NOT NULL,
        id bytea NOT NULL,
        updated_at bigint NOT NULL,
        deleted_at bigint,
        size integer NOT NULL,
        data text NOT NULL,
        PRIMARY KEY (ns, kind, id)
      )`,
      `CREATE INDEX records_keyset ON ${s}.records
        (ns, kind, updated_at, id) INCLUDE (deleted_at, size)`,
      `CREATE INDEX records_tombstones ON ${s}.records (updated_at)
        WHERE deleted_at IS NOT NULL`,
      `CREATE TABLE ${s}.idempotency (
        ns bytea NOT NULL,
        key bytea NOT NULL,
        fingerprint bytea NOT NULL,
        status integer NOT NULL,
        body text NOT NULL,
        expires_at bigint NOT NULL,
        PRIMARY KEY (ns, key)
      )`,
      `CREATE INDEX idempotency_expiry ON ${s}.idempotency (expires_at)`,
      `CREATE INDEX idempotency_age ON ${s}.idempotency (ns, expires_at)`,
      `CREATE TABLE ${s}.horizons (
        ns bytea NOT NULL,
        kind bytea NOT NULL,
        horizon bigint NOT NULL,
        PRIMARY KEY (ns, kind)
      )`,
      // The clock is per namespace (CONTRACT.md): the greatest
      // (updated_at, id) committed there (`id` NULL when unknown,
      // `updated_at` NULL while only idempotency entries were committed),
      // and a version every commit to the namespace raises while holding
      // the row's lock.
      `CREATE TABLE ${s}.clocks (
        ns bytea PRIMARY KEY,
        updated_at bigint,
        id bytea,
        version bigint NOT NULL
      )`,
      // A commit's first statement per namespace: creates the clock row
      // (version 0: no commit yet) if needed and locks it until COMMIT; a
      // guarded commit whose clock moved raises OFS01 and aborts the
      // transaction. Unguarded, `expected` is ignored.
      `CREATE FUNCTION ${s}.lock_clock(target bytea, guarded boolean, expected bigint)
      RETURNS void LANGUAGE plpgsql AS $fn$
      DECLARE
        current bigint;
      BEGIN
        INSERT INTO ${s}.clocks (ns, updated_at, id, version)
          VALUES (target, NULL, NULL, 0) ON CONFLICT (ns) DO NOTHING;
        SELECT version INTO current FROM ${s}.clocks WHERE ns = target
          FOR UPDATE;
        IF guarded AND current IS DISTINCT FROM coalesce(expected, 0) THEN
          RAISE EXCEPTION 'the clock of the namespace moved: current version is %',
            current USING ERRCODE = '${STALE_CLOCK_SQLSTATE}';
        END IF;
      END
      $fn$`,
    ],
  },
];

/** The SQLSTATE `lock_clock()` raises when a guarded commit's clock moved. */
export const STALE_CLOCK_SQLSTATE = "OFS01";

/** The schema version this code writes. */
export const SCHEMA_VERSION: number = MIGRATIONS.at(-1)!.version;

/**
 * Checks a schema name and quotes it as an identifier. Names are kept to
 * letters, digits and `_` (at most 63 bytes, Postgres's limit), so a name
 * is never cut or folded silently.
 *
 * @param schema The schema name.
 * @returns The quoted name.
 * @throws {TypeError} When the name is not such an identifier.
 */
export function quoteSchema(schema: string): string {
  if (
    typeof schema !== "string" || !/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(schema)
  ) {
    throw new TypeError(
      `Cannot open Postgres server store as 'schema' is not an identifier of letters, digits and _ (at most 63): current value is ${
        JSON.stringify(schema)
      }`,
    );
  }
  return `"${schema}"`;
}

/**
 * Creates the schema if needed and applies the migrations it lacks, in one
 * transaction under an advisory lock on the schema's name: two processes
 * opening one database at once apply each migration once, the second
 * finding the first's work done.
 *
 * @param sql The connection pool.
 * @param schema The schema name (checked).
 * @param migrations The migrations (tests pass their own).
 * @returns The schema's version.
 * @throws {StorageError} When the schema is at a version newer than the
 * code's.
 */
export async function migrate(
  sql: PgSql,
  schema: string,
  migrations: readonly Migration[] = MIGRATIONS,
): Promise<number> {
  const s = quoteSchema(schema);
  const target = migrations.at(-1)?.version ?? 0;
  return await sql.begin(async (tx) => {
    await tx.unsafe(
      "SELECT pg_advisory_xact_lock(hashtext($1)::bigint)",
      [`@offline-first/sync server schema ${schema}`],
    );
    await tx.unsafe(`CREATE SCHEMA IF NOT EXISTS ${s}`);
    await tx.unsafe(
      `CREATE TABLE IF NOT EXISTS ${s}.schema_migrations (
        version integer PRIMARY KEY,
        name text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
      )`,
    );
    const [row] = await tx.unsafe(
      `SELECT coalesce(max(version), 0) AS version FROM ${s}.schema_migrations`,
    );
    const current = Number(row!.version);
    if (current > target) {
      throw new StorageError(
        `Cannot open Postgres server store as schema ${
          JSON.stringify(schema)
        } is at a version newer than ${target}: current value is ${current}`,
      );
    }
    for (const migration of migrations) {
      if (migration.version <= current) continue;
      for (const statement of migration.statements(s)) {
        await tx.unsafe(statement);
      }
      await tx.unsafe(
        `INSERT INTO ${s}.schema_migrations (version, name) VALUES ($1, $2)`,
        [migration.version, migration.name],
      );
    }
    return target;
  });
}
