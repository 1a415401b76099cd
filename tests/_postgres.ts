/**
 * What the Postgres tests share: the database URL (`DATABASE_URL`, default
 * the machine's service), whether a server answers there (probed by each
 * Postgres test module at load), a fresh schema per store, and dropping it
 * after.
 *
 * Where no Postgres answers (a laptop without one), the Postgres tests are
 * registered as ignored and the reason is printed; with
 * `CI_REQUIRE_POSTGRES=1` (`.ci/run`) they run anyway, and fail.
 *
 * @module
 */

import postgres from "postgres";

/** The database the tests use. */
export const DATABASE_URL = Deno.env.get("DATABASE_URL") ??
  "postgres://root@127.0.0.1:5432/test";

/** Whether a missing Postgres fails the tests instead of skipping them. */
export const REQUIRE_POSTGRES = Deno.env.get("CI_REQUIRE_POSTGRES") === "1";

/** Why Postgres cannot be reached, or `null` when it answers. */
async function probe(): Promise<string | null> {
  const sql = postgres(DATABASE_URL, {
    max: 1,
    connect_timeout: 3,
    onnotice: () => {},
  });
  try {
    await sql`SELECT 1`;
    await dropStaleSchemas(sql);
    return null;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  } finally {
    await sql.end({ timeout: 0 }).catch(() => {});
  }
}

/**
 * Whether to register the Postgres tests as ignored: no Postgres answers
 * and `CI_REQUIRE_POSTGRES` is not `1`. Prints why when none answers. Call
 * it with top-level `await`, so `ignore` is known while tests register.
 *
 * @returns Whether to ignore them.
 */
export async function ignorePostgres(): Promise<boolean> {
  const reason = await probe();
  if (reason === null) return false;
  console.log(
    REQUIRE_POSTGRES
      ? `Postgres at DATABASE_URL does not answer (${reason}); CI_REQUIRE_POSTGRES=1, so its tests run and fail`
      : `Skipping the Postgres tests: no Postgres answers at DATABASE_URL (${reason}); set DATABASE_URL to one, or CI_REQUIRE_POSTGRES=1 to fail instead`,
  );
  return !REQUIRE_POSTGRES;
}

/** A test schema older than this was left by a run that died: dropped. */
const STALE_SCHEMA_MS = 60 * 60 * 1000;

/** Drops the schemas of {@linkcode freshSchema} older than an hour. */
async function dropStaleSchemas(sql: postgres.Sql): Promise<void> {
  const rows = await sql<{ name: string }[]>`
    SELECT nspname AS name FROM pg_namespace WHERE nspname LIKE 't\_%'`;
  for (const { name } of rows) {
    const match = /^t_([0-9a-z]+)_[0-9a-f]{12}$/.exec(name);
    if (match === null) continue;
    if (Date.now() - parseInt(match[1]!, 36) < STALE_SCHEMA_MS) continue;
    // Another module may drop it at the same moment.
    await sql.unsafe(`DROP SCHEMA IF EXISTS "${name}" CASCADE`).catch(() => {});
  }
}

/** A schema name no other run uses. */
export function freshSchema(): string {
  const random = crypto.randomUUID().replaceAll("-", "").slice(0, 12);
  return `t_${Date.now().toString(36)}_${random}`;
}

/**
 * Drops a schema and everything in it.
 *
 * @param schema The schema.
 */
export async function dropSchema(schema: string): Promise<void> {
  const sql = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  } finally {
    await sql.end({ timeout: 5 });
  }
}
