/**
 * The Postgres {@linkcode ServerStore}: the reference server on PostgreSQL,
 * so that any number of stateless server processes behind a load balancer
 * serve one database. It lives on its own sub-path and is the only module
 * that imports the driver (`npm:postgres`, postgres.js).
 *
 * Opening a store creates its schema on first start and upgrades it after,
 * by versioned migrations (`schema_migrations`), applied in one transaction
 * under an advisory lock so that processes starting together do not race.
 * Records live in one table keyed by (namespace, kind, id); idempotency
 * entries carry their expiry; each kind's tombstone horizon has its row.
 *
 * It is a shared store (`readClock`): each namespace's clock row holds the
 * greatest `(updated_at, id)` and a version. A commit locks the row
 * (`SELECT … FOR UPDATE`) in its write transaction, checks that the version
 * is still the one its writer read the clock at, writes, and moves the
 * version before `COMMIT` releases the lock; otherwise it rolls back and
 * throws `StaleClockError`, and the handler runs the write again from fresh
 * reads. Commits to one namespace are thus serialised in clock order: every
 * `updated_at` is later than everything committed before it, and a record
 * committed after a client read a page never lands behind its cursor,
 * whichever process served either.
 *
 * A commit also `NOTIFY`s the kinds it wrote, delivered at `COMMIT`, and
 * `changes()` `LISTEN`s, so a write through one instance wakes the
 * `GET /live` streams of every other.
 *
 * @example Serving on Postgres
 * ```ts ignore
 * // Needs a Postgres server.
 * import { createSyncServer } from "@offline-first/sync/server";
 * import { openPostgresServerStore } from "@offline-first/sync/server/postgres";
 *
 * await using server = createSyncServer({
 *   store: await openPostgresServerStore("postgres://127.0.0.1:5432/app"),
 * });
 * Deno.serve({ port: 8787 }, server.fetch);
 * ```
 *
 * @module
 */

import { ClosedError } from "../src/errors.ts";
import { encodeUtf16 } from "../src/utf16.ts";
import { assertServerWrite } from "./_server_write.ts";
import { assertInGuard } from "./_sqlite_rows.ts";
import { migrate, quoteSchema, STALE_CLOCK_SQLSTATE } from "./_pg_schema.ts";
import { changePayload, channelOf, listenChanges } from "./_pg_changes.ts";
import { readEntries, readRecords } from "./_pg_read.ts";
import { clampInt, writeRows } from "./_pg_write.ts";
import {
  int,
  openPool,
  type PgQueryable,
  type PgSql,
  type PgTransaction,
  toClock,
  toEntry,
  toRecord,
} from "./_pg_sql.ts";
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
  type StoreChange,
  type TrimIdempotencyOptions,
  type TrimIdempotencyResult,
} from "./store.ts";

/** Options for {@linkcode openPostgresServerStore}. */
export interface PostgresServerStoreOptions {
  /**
   * The schema that holds the store's tables, created on first start. One
   * database can hold several stores (or a store beside other data) in
   * different schemas. Letters, digits and `_`, at most 63.
   *
   * @default {"offline_first_sync"}
   */
  readonly schema?: string;
  /**
   * The most connections the pool opens, besides the one that `LISTEN`s
   * while a `GET /live` stream is open.
   *
   * @default {10}
   */
  readonly maxConnections?: number;
  /**
   * How long to wait for a connection, in seconds.
   *
   * @default {10}
   */
  readonly connectTimeoutS?: number;
}

/** The default schema of {@linkcode openPostgresServerStore}. */
export const DEFAULT_POSTGRES_SCHEMA = "offline_first_sync";

/**
 * Opens a {@linkcode ServerStore} on a Postgres database, creating its
 * schema on first start and applying the migrations it lacks. Any number of
 * stores, in any number of processes, may use one database and schema at
 * once. The store owns its connection pool: `close()` ends it.
 *
 * @param url A `postgres://user:password@host:port/database` URL.
 * @param options The schema, pool size and connect timeout.
 * @returns The store.
 * @throws {StorageError} When no server answers at `url`, or the schema is
 * at a newer version than this code.
 * @throws {TypeError} When the schema name is not an identifier.
 * @throws {RangeError} When a number option is out of range.
 *
 * @example Opening a store in its own schema
 * ```ts ignore
 * // Needs a Postgres server.
 * import { openPostgresServerStore } from "@offline-first/sync/server/postgres";
 * import assert from "node:assert/strict";
 *
 * await using store = await openPostgresServerStore(
 *   "postgres://127.0.0.1:5432/app",
 *   { schema: "sync", maxConnections: 20 },
 * );
 * assert.equal(await store.lastWrite("alice"), null);
 * ```
 */
export async function openPostgresServerStore(
  url: string,
  options: PostgresServerStoreOptions = {},
): Promise<ServerStore> {
  const schema = options.schema ?? DEFAULT_POSTGRES_SCHEMA;
  const quoted = quoteSchema(schema);
  const max = options.maxConnections ?? 10;
  const connectTimeoutS = options.connectTimeoutS ?? 10;
  if (!Number.isSafeInteger(max) || max < 1) {
    throw new RangeError(
      `Cannot open Postgres server store as 'maxConnections' is not a positive integer: current value is ${max}`,
    );
  }
  if (!(connectTimeoutS > 0)) {
    throw new RangeError(
      `Cannot open Postgres server store as 'connectTimeoutS' is not positive: current value is ${connectTimeoutS}`,
    );
  }
  const sql = await openPool(url, { max, connectTimeoutS });
  try {
    await migrate(sql, schema);
  } catch (error) {
    await sql.end({ timeout: 0 }).catch(() => {});
    throw error;
  }
  return new PostgresServerStore(sql, quoted, channelOf(schema));
}

/** The record columns every read selects. */
const RECORD_COLUMNS = "kind, id, updated_at, deleted_at, data";

class PostgresServerStore implements ServerStore {
  readonly #sql: PgSql;
  /** The quoted schema name. */
  readonly #s: string;
  readonly #channel: string;
  /** This store object's id in the notifications it sends. */
  readonly #origin = crypto.randomUUID();
  /** Ends every change feed at close. */
  readonly #closing = new AbortController();
  #closed: Promise<void> | null = null;

  constructor(sql: PgSql, quotedSchema: string, channel: string) {
    this.#sql = sql;
    this.#s = quotedSchema;
    this.#channel = channel;
  }

  async getRecord(
    namespace: string,
    kind: string,
    id: string,
  ): Promise<ServerRecord | null> {
    this.#assertOpen("read record");
    const [row] = await this.#sql.unsafe(
      `SELECT ${RECORD_COLUMNS} FROM ${this.#s}.records
       WHERE ns = $1 AND kind = $2 AND id = $3`,
      [encodeUtf16(namespace), encodeUtf16(kind), encodeUtf16(id)],
    );
    return row === undefined ? null : toRecord(row);
  }

  async getRecords(
    namespace: string,
    refs: readonly { readonly kind: string; readonly id: string }[],
  ): Promise<(ServerRecord | null)[]> {
    this.#assertOpen("read records");
    return await readRecords(this.#sql, this.#s, namespace, refs);
  }

  async listRecords(
    namespace: string,
    kind: string,
    options: ListServerRecordsOptions,
  ): Promise<ListServerRecordsResult> {
    this.#assertOpen("list records");
    const { since, afterId, maxBytes } = options;
    const params: (Uint8Array | number)[] = [
      encodeUtf16(namespace),
      encodeUtf16(kind),
    ];
    let where = "ns = $1 AND kind = $2";
    if (since !== undefined && afterId !== undefined) {
      params.push(since, encodeUtf16(afterId));
      where += " AND (updated_at, id) > ($3::bigint, $4::bytea)";
    } else if (since !== undefined) {
      params.push(since);
      where += " AND updated_at >= $3::bigint";
    }
    if (options.includeDeleted === false) where += " AND deleted_at IS NULL";
    const limitAt = `$${params.length + 1}::bigint`;
    const select = (columns: string) =>
      `SELECT ${columns} FROM ${this.#s}.records WHERE ${where}
       ORDER BY updated_at, id LIMIT ${limitAt}`;
    // One snapshot: the sizes, the page and its horizon are read together,
    // so neither a purge nor another instance's commit slips between them.
    // Pipelined on one connection: two round trips with maxBytes, else one.
    // (A postgres.js query is sent when first awaited: each Promise.all
    // below awaits its queries in the order they run.)
    const tx = await this.#sql.reserve();
    let open = false;
    try {
      const begin = tx.unsafe(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
      );
      open = true;
      let limit = options.limit;
      let truncated = false;
      if (maxBytes !== undefined) {
        // From the keyset index alone (`size` is in it).
        const [, sizes] = await Promise.all([
          begin,
          tx.unsafe(select("size"), [...params, limit]),
        ]);
        let bytes = 0;
        for (let index = 0; index < sizes.length; index++) {
          bytes += int(sizes[index]!.size);
          if (index > 0 && bytes > maxBytes) {
            limit = index;
            truncated = true;
            break;
          }
        }
      }
      const [, rows, horizons] = await Promise.all([
        begin,
        tx.unsafe(select(RECORD_COLUMNS), [...params, limit]),
        tx.unsafe(
          `SELECT horizon FROM ${this.#s}.horizons WHERE ns = $1 AND kind = $2`,
          [params[0]!, params[1]!],
        ),
        tx.unsafe("COMMIT"),
      ]);
      open = false;
      const horizon = horizons[0];
      return {
        records: rows.map(toRecord),
        horizon: horizon === undefined ? null : int(horizon.horizon),
        truncated,
      };
    } finally {
      // A failed read leaves the transaction open: end it before the
      // connection goes back to the pool.
      if (open) await tx.unsafe("ROLLBACK").catch(() => {});
      tx.release();
    }
  }

  async getIdempotency(
    namespace: string,
    key: string,
  ): Promise<IdempotencyEntry | null> {
    this.#assertOpen("read idempotency entry");
    const [row] = await this.#sql.unsafe(
      `SELECT key, fingerprint, status, body, expires_at
       FROM ${this.#s}.idempotency WHERE ns = $1 AND key = $2`,
      [encodeUtf16(namespace), encodeUtf16(key)],
    );
    return row === undefined ? null : toEntry(row);
  }

  async getIdempotencies(
    namespace: string,
    keys: readonly string[],
  ): Promise<(IdempotencyEntry | null)[]> {
    this.#assertOpen("read idempotency entries");
    return await readEntries(this.#sql, this.#s, namespace, keys);
  }

  async commit(
    writes: readonly ServerWrite[],
    guard?: CommitGuard,
  ): Promise<void> {
    this.#assertOpen("commit writes");
    if (guard !== undefined) assertInGuard(writes, guard);
    for (const write of writes) assertServerWrite(write);
    if (writes.length === 0) return;
    // Locked in one order everywhere, so two multi-namespace commits never
    // deadlock.
    const namespaces = [...new Set(writes.map((write) => write.namespace))]
      .sort();
    const s = this.#s;
    // The whole transaction is sent at once, pipelined on one connection,
    // so a commit costs one round trip and holds the clock row's lock for
    // no longer than that and the COMMIT. A statement that fails aborts the
    // transaction: the statements after it fail too, and COMMIT rolls back.
    const tx = await this.#sql.reserve();
    try {
      const queries: Promise<unknown>[] = [tx.unsafe("BEGIN")];
      for (const namespace of namespaces) {
        // Creates the clock row if needed, locks it (FOR UPDATE) until
        // COMMIT, and raises OFS01 when it is guarded and its version moved
        // since the guard's clock was read: no other writer can move it
        // between this check and the COMMIT below, which moves it.
        const expect = guard?.namespace === namespace ? guard.expect : null;
        queries.push(tx.unsafe(
          `SELECT ${s}.lock_clock($1, $2::boolean, $3::bigint)`,
          [encodeUtf16(namespace), expect !== null, expect?.version ?? null],
        ));
      }
      queries.push(...writeRows(tx, s, writes));
      for (const namespace of namespaces) {
        queries.push(this.#moveClock(tx, namespace, writes));
        // Delivered by Postgres at COMMIT, and only then.
        const payload = changePayload(
          namespace,
          kindsOf(writes, namespace),
          this.#origin,
        );
        if (payload !== null) {
          queries.push(
            tx.unsafe("SELECT pg_notify($1, $2)", [this.#channel, payload]),
          );
        }
      }
      queries.push(tx.unsafe("COMMIT"));
      const results = await Promise.allSettled(queries);
      // The first failure is the cause; the later ones are its echo.
      const failed = results.find((result) => result.status === "rejected");
      if (failed !== undefined) {
        // COMMIT already rolled the aborted transaction back; this covers a
        // pipeline cut before it ran.
        await tx.unsafe("ROLLBACK").catch(() => {});
        const error = (failed as PromiseRejectedResult).reason;
        if (guard !== undefined && isStale(error)) {
          throw new StaleClockError(guard.namespace, guard.expect.version);
        }
        throw error;
      }
    } finally {
      tx.release();
    }
  }

  /**
   * Raises a namespace's clock to the newest record of a commit (when
   * greater; an unknown id stays unknown at its instant) and moves its
   * version, under the lock taken by `lock_clock`.
   */
  #moveClock(
    tx: PgQueryable,
    namespace: string,
    writes: readonly ServerWrite[],
  ): Promise<unknown> {
    const next = newestOf(writes, namespace);
    const raise = `$2::bigint IS NOT NULL AND (updated_at IS NULL
      OR $2::bigint > updated_at
      OR ($2::bigint = updated_at AND id IS NOT NULL AND $3::bytea > id))`;
    return tx.unsafe(
      `UPDATE ${this.#s}.clocks SET version = version + 1,
         updated_at = CASE WHEN ${raise} THEN $2::bigint ELSE updated_at END,
         id = CASE WHEN ${raise} THEN $3::bytea ELSE id END
       WHERE ns = $1`,
      [
        encodeUtf16(namespace),
        next?.updatedAt ?? null,
        next === null ? null : encodeUtf16(next.id),
      ],
    );
  }

  async purge(
    options: ServerStorePurgeOptions,
  ): Promise<ServerStorePurgeResult> {
    this.#assertOpen("purge");
    const limit = options.limit ?? Infinity;
    if (!(limit >= 1)) return { idempotency: 0, tombstones: 0 };
    // LIMIT NULL is no limit.
    const bound = Number.isFinite(limit) ? Math.floor(limit) : null;
    const s = this.#s;
    return await this.#sql.begin(async (tx) => {
      let idempotency = 0;
      let tombstones = 0;
      if (options.idempotencyExpiredAt !== undefined) {
        const result = await tx.unsafe(
          `DELETE FROM ${s}.idempotency WHERE (ns, key) IN (
             SELECT ns, key FROM ${s}.idempotency WHERE expires_at <= $1::bigint
             ORDER BY expires_at LIMIT $2::bigint)`,
          [clampInt(options.idempotencyExpiredAt), bound],
        );
        idempotency = result.count;
      }
      let before = options.tombstonesUpdatedBefore;
      if (before === undefined) return { idempotency, tombstones };
      before = clampInt(before);
      if (bound !== null) {
        // The limit-th oldest: tombstones up to its millisecond go.
        const [nth] = await tx.unsafe(
          `SELECT updated_at FROM ${s}.records
           WHERE deleted_at IS NOT NULL AND updated_at < $1::bigint
           ORDER BY updated_at LIMIT 1 OFFSET $2::bigint`,
          [before, bound - 1],
        );
        if (nth !== undefined) {
          before = Math.min(before, int(nth.updated_at) + 1);
        }
      }
      await tx.unsafe(
        `INSERT INTO ${s}.horizons (ns, kind, horizon)
           SELECT ns, kind, max(updated_at) + 1 FROM ${s}.records
           WHERE deleted_at IS NOT NULL AND updated_at < $1::bigint
           GROUP BY ns, kind
         ON CONFLICT (ns, kind) DO UPDATE SET
           horizon = greatest(${s}.horizons.horizon, excluded.horizon)`,
        [before],
      );
      const result = await tx.unsafe(
        `DELETE FROM ${s}.records
         WHERE deleted_at IS NOT NULL AND updated_at < $1::bigint`,
        [before],
      );
      tombstones = result.count;
      return { idempotency, tombstones };
    });
  }

  async trimIdempotency(
    namespace: string,
    options: TrimIdempotencyOptions,
  ): Promise<TrimIdempotencyResult> {
    this.#assertOpen("trim idempotency entries");
    const ns = encodeUtf16(namespace);
    const s = this.#s;
    const count = async (sql: PgSql | PgTransaction) => {
      const [row] = await sql.unsafe(
        `SELECT count(*) AS count, min(expires_at) AS oldest
         FROM ${s}.idempotency WHERE ns = $1`,
        [ns],
      );
      return {
        count: int(row!.count),
        oldestExpiresAt: row!.oldest === null ? null : int(row!.oldest),
      };
    };
    if (
      !(options.keep < Infinity && Number.isFinite(options.expiresAtOrBefore))
    ) {
      return await count(this.#sql);
    }
    return await this.#sql.begin(async (tx) => {
      const counted = await count(tx);
      const excess = counted.count - options.keep;
      if (excess <= 0) return counted;
      await tx.unsafe(
        `DELETE FROM ${s}.idempotency WHERE ns = $1 AND key IN (
           SELECT key FROM ${s}.idempotency
           WHERE ns = $1 AND expires_at <= $2::bigint
           ORDER BY expires_at, key LIMIT $3::bigint)`,
        [ns, clampInt(options.expiresAtOrBefore), excess],
      );
      return await count(tx);
    });
  }

  async lastWrite(namespace: string): Promise<LastWrite | null> {
    return (await this.readClock(namespace)).last;
  }

  async readClock(namespace: string): Promise<NamespaceClock> {
    this.#assertOpen("read clock");
    const [row] = await this.#sql.unsafe(
      `SELECT updated_at, id, version FROM ${this.#s}.clocks WHERE ns = $1`,
      [encodeUtf16(namespace)],
    );
    return toClock(row);
  }

  changes(signal: AbortSignal): AsyncIterable<StoreChange> {
    // Aborted already after close: the feed then ends at once.
    const both = AbortSignal.any([signal, this.#closing.signal]);
    return listenChanges(this.#sql, this.#channel, this.#origin, both);
  }

  close(): Promise<void> {
    if (this.#closed === null) {
      this.#closing.abort();
      this.#closed = this.#sql.end({ timeout: 5 });
    }
    return this.#closed;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #assertOpen(action: string): void {
    if (this.#closed !== null) {
      throw new ClosedError(`Cannot ${action} as the store is closed`);
    }
  }
}

/** The greatest `(updatedAt, id)` of a commit's records in a namespace. */
function newestOf(
  writes: readonly ServerWrite[],
  namespace: string,
): { updatedAt: number; id: string } | null {
  let newest: { updatedAt: number; id: string } | null = null;
  for (const write of writes) {
    if (write.type !== "record" || write.namespace !== namespace) continue;
    const { updatedAt, id } = write.record;
    if (
      newest === null || updatedAt > newest.updatedAt ||
      (updatedAt === newest.updatedAt && id > newest.id)
    ) {
      newest = { updatedAt, id };
    }
  }
  return newest;
}

/** The kinds of a commit's records in a namespace, without repeats. */
function kindsOf(writes: readonly ServerWrite[], namespace: string): string[] {
  const kinds = new Set<string>();
  for (const write of writes) {
    if (write.type === "record" && write.namespace === namespace) {
      kinds.add(write.record.kind);
    }
  }
  return [...kinds];
}

/** Whether a driver error is `lock_clock`'s "the clock moved". */
function isStale(error: unknown): boolean {
  return typeof error === "object" && error !== null &&
    (error as { code?: unknown }).code === STALE_CLOCK_SQLSTATE;
}
