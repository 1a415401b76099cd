/**
 * The Postgres server store's batch reads (`getRecords`,
 * `getIdempotencies`): many records or idempotency entries of one namespace
 * in one statement, so a batch slice costs one round trip per kind of read
 * instead of one per op. Private to the store.
 *
 * @module
 */

import { encodeUtf16 } from "../src/utf16.ts";
import {
  type PgParameter,
  type PgQueryable,
  type PgRow,
  toEntry,
  toRecord,
} from "./_pg_sql.ts";
import type { IdempotencyEntry, ServerRecord } from "./store.ts";
import { utf16Hex } from "./_pg_write.ts";

/**
 * Reads many records of one namespace: the refs go as two arrays of hex
 * (postgres.js sends `text[]` as it is), joined on the primary key.
 *
 * @param sql The pool.
 * @param schema The quoted schema.
 * @param namespace The principal.
 * @param refs The records, by kind and id.
 * @returns One record or `null` per ref, in order.
 */
export async function readRecords(
  sql: PgQueryable,
  schema: string,
  namespace: string,
  refs: readonly { readonly kind: string; readonly id: string }[],
): Promise<(ServerRecord | null)[]> {
  if (refs.length === 0) return [];
  const kinds = refs.map(({ kind }) => utf16Hex(kind));
  const ids = refs.map(({ id }) => utf16Hex(id));
  const rows = await sql.unsafe(
    `SELECT kind, id, updated_at, deleted_at, data FROM ${schema}.records
     WHERE ns = $1 AND (kind, id) IN (
       SELECT decode(k, 'hex'), decode(i, 'hex')
       FROM unnest($2::text[], $3::text[]) AS t(k, i))`,
    [encodeUtf16(namespace), kinds, ids] as unknown as PgParameter[],
  );
  const found = new Map<string, PgRow>();
  for (const row of rows) found.set(`${hexOf(row.kind)}/${hexOf(row.id)}`, row);
  return refs.map((_, index) => {
    const row = found.get(`${kinds[index]}/${ids[index]}`);
    // Each its own copy, also when a ref repeats.
    return row === undefined ? null : toRecord(row);
  });
}

/**
 * Reads many idempotency entries of one namespace in one statement.
 *
 * @param sql The pool.
 * @param schema The quoted schema.
 * @param namespace The principal.
 * @param keys The keys.
 * @returns One entry or `null` per key, in order.
 */
export async function readEntries(
  sql: PgQueryable,
  schema: string,
  namespace: string,
  keys: readonly string[],
): Promise<(IdempotencyEntry | null)[]> {
  if (keys.length === 0) return [];
  const hexes = keys.map(utf16Hex);
  const rows = await sql.unsafe(
    `SELECT key, fingerprint, status, body, expires_at
     FROM ${schema}.idempotency WHERE ns = $1 AND key IN (
       SELECT decode(k, 'hex') FROM unnest($2::text[]) AS t(k))`,
    [encodeUtf16(namespace), hexes] as unknown as PgParameter[],
  );
  const found = new Map<string, PgRow>();
  for (const row of rows) found.set(hexOf(row.key), row);
  return hexes.map((hex) => {
    const row = found.get(hex);
    return row === undefined ? null : toEntry(row);
  });
}

/** A `bytea` column (a Uint8Array from postgres.js) in hex. */
function hexOf(value: unknown): string {
  if (!(value instanceof Uint8Array)) return String(value);
  let out = "";
  for (const byte of value) out += byte.toString(16).padStart(2, "0");
  return out;
}
