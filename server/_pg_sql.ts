/**
 * The Postgres server store's driver boundary (`postgres.ts`): the
 * postgres.js types it uses, opening a pool, and reading rows back into
 * records, entries and clocks. Private to the store.
 *
 * @module
 */

import postgres from "postgres";
import { StorageError } from "../src/errors.ts";
import { decodeUtf16 } from "../src/utf16.ts";
import type { JsonObject, JsonValue } from "../src/json.ts";
import type {
  IdempotencyEntry,
  NamespaceClock,
  ServerRecord,
} from "./store.ts";

/** A parameter of a query. */
export type PgParameter = Uint8Array | string | number | boolean | null;

/** One row as postgres.js returns it. */
export type PgRow = Record<string, unknown>;

/** The rows of a query, and how many rows it changed. */
export interface PgRows extends Array<PgRow> {
  /** The rows a `DELETE`, `UPDATE` or `INSERT` changed. */
  readonly count: number;
}

/** What runs a query: a pool or a transaction (postgres.js's `unsafe`). */
export interface PgQueryable {
  /**
   * Runs one statement with `$1`-style parameters.
   *
   * @param query The statement.
   * @param parameters Its parameters.
   * @returns Its rows.
   */
  unsafe(query: string, parameters?: PgParameter[]): Promise<PgRows>;
}

/** A postgres.js transaction, as the store uses it. */
export type PgTransaction = PgQueryable;

/** A connection reserved from the pool. */
export interface PgReserved extends PgQueryable {
  /** Gives the connection back to the pool. */
  release(): void;
}

/** A postgres.js pool, as the store uses it. */
export interface PgSql extends PgQueryable {
  /**
   * Runs `work` in a transaction: committed when it resolves, rolled back
   * when it rejects.
   *
   * @param options What follows `BEGIN` (e.g. an isolation level).
   * @param work The transaction's work.
   * @returns What `work` resolved to.
   */
  begin<T>(
    options: string,
    work: (tx: PgTransaction) => Promise<T>,
  ): Promise<T>;
  /**
   * Runs `work` in a transaction.
   *
   * @param work The transaction's work.
   * @returns What `work` resolved to.
   */
  begin<T>(work: (tx: PgTransaction) => Promise<T>): Promise<T>;
  /**
   * `LISTEN`s on a channel, on a connection of its own.
   *
   * @param channel The channel.
   * @param onNotify Called with each payload.
   * @returns When listening; `unlisten()` stops.
   */
  listen(
    channel: string,
    onNotify: (payload: string) => void,
  ): Promise<{ unlisten(): Promise<void> }>;
  /**
   * Takes one connection out of the pool for the caller alone, until
   * `release()`: its queries are pipelined on it, in order.
   *
   * @returns The connection.
   */
  reserve(): Promise<PgReserved>;
  /**
   * Ends the pool.
   *
   * @param options How long to wait for running queries, in seconds.
   * @returns When every connection is closed.
   */
  end(options?: { timeout?: number }): Promise<void>;
}

/** What {@linkcode openPool} needs. */
export interface PoolOptions {
  /** The most connections the pool opens (besides one for `LISTEN`). */
  readonly max: number;
  /** How long to wait for a connection, in seconds. */
  readonly connectTimeoutS: number;
}

/**
 * Opens a postgres.js pool on a URL and checks it answers.
 *
 * @param url A `postgres://` URL.
 * @param options The pool's size and connect timeout.
 * @returns The pool.
 * @throws {StorageError} When no server answers at `url`.
 */
export async function openPool(
  url: string,
  options: PoolOptions,
): Promise<PgSql> {
  const sql = postgres(url, {
    max: options.max,
    connect_timeout: options.connectTimeoutS,
    // "schema already exists, skipping" and the like.
    onnotice: () => {},
    // bigint columns come back as strings; the store reads them itself.
  }) as unknown as PgSql;
  try {
    await sql.unsafe("SELECT 1");
    return sql;
  } catch (error) {
    await sql.end({ timeout: 0 }).catch(() => {});
    throw new StorageError(
      `Cannot open Postgres server store as no server answers at the URL: current value is ${
        JSON.stringify(redact(url))
      }`,
      { cause: error },
    );
  }
}

/** A URL without its password, for messages. */
export function redact(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== "") parsed.password = "***";
    return parsed.toString();
  } catch {
    return "(not a URL)";
  }
}

/** A `bigint` column (a string from postgres.js) as a number. */
export function int(value: unknown): number {
  return typeof value === "number" ? value : Number(value);
}

/** A nullable `bigint` column as a number or `null`. */
export function intOrNull(value: unknown): number | null {
  return value === null || value === undefined ? null : int(value);
}

/** Reads a record row (`kind, id, updated_at, deleted_at, data`). */
export function toRecord(row: PgRow): ServerRecord {
  return {
    kind: decodeUtf16(row.kind),
    id: decodeUtf16(row.id),
    updatedAt: int(row.updated_at),
    deletedAt: intOrNull(row.deleted_at),
    data: JSON.parse(row.data as string) as JsonObject,
  };
}

/** Reads an idempotency row. */
export function toEntry(row: PgRow): IdempotencyEntry {
  return {
    key: decodeUtf16(row.key),
    fingerprint: decodeUtf16(row.fingerprint),
    status: int(row.status),
    body: JSON.parse(row.body as string) as JsonValue,
    expiresAt: int(row.expires_at),
  };
}

/**
 * Reads a clock row (`updated_at, id, version`), or its absence. A row at
 * version 0 (created by a commit still in flight) is no commit yet.
 */
export function toClock(row: PgRow | undefined): NamespaceClock {
  if (row === undefined || int(row.version) === 0) {
    return { last: null, version: null };
  }
  return {
    last: row.updated_at === null ? null : {
      updatedAt: int(row.updated_at),
      id: row.id === null ? null : decodeUtf16(row.id),
    },
    version: String(row.version),
  };
}
