/**
 * The Postgres server store's row writes inside a commit's transaction: all
 * of a commit's records in one `INSERT … SELECT FROM unnest(…)`, and all of
 * its idempotency entries in another, instead of one statement per write
 * (each of which Postgres parsed and planned: 200 writes took 55 ms, two
 * statements take a few). Private to the store.
 *
 * @module
 */

import type { JsonValue } from "../src/json.ts";
import { utf8Length } from "./_limits.ts";
import type { PgParameter, PgQueryable } from "./_pg_sql.ts";
import type { IdempotencyEntry, ServerRecord, ServerWrite } from "./store.ts";

/**
 * The statements that write a commit's rows, to run in its transaction
 * after the clocks are locked. A later write of the same record or key
 * wins, as one statement per write would make it: only the last one is
 * sent (one `INSERT … ON CONFLICT DO UPDATE` may not touch a row twice).
 *
 * @param tx The transaction's connection.
 * @param schema The quoted schema.
 * @param writes The writes, checked by `assertServerWrite()`.
 * @returns The statements, each to be awaited with the transaction.
 * @throws {TypeError} When a record's data or an entry's body is not JSON;
 * nothing was sent.
 */
export function writeRows(
  tx: PgQueryable,
  schema: string,
  writes: readonly ServerWrite[],
): Promise<unknown>[] {
  const records = new Map<
    string,
    { ns: string; record: ServerRecord; text: string | undefined }
  >();
  const entries = new Map<string, { ns: string; entry: IdempotencyEntry }>();
  for (const write of writes) {
    const ns = utf16Hex(write.namespace);
    if (write.type === "record") {
      const { record } = write;
      const key = `${ns}/${utf16Hex(record.kind)}/${utf16Hex(record.id)}`;
      // Deleted first: the map keeps the order of the last writes.
      records.delete(key);
      records.set(key, { ns, record, text: write.text });
    } else {
      const key = `${ns}/${utf16Hex(write.entry.key)}`;
      entries.delete(key);
      entries.set(key, { ns, entry: write.entry });
    }
  }
  // A record's data and the response stored under its key are usually one
  // object (the stored record is the `2xx` body): stringified once.
  const texts = new Map<JsonValue, string>();
  const json = (value: JsonValue, what: string): string => {
    let text = texts.get(value);
    if (text === undefined) {
      text = JSON.stringify(value) as string | undefined;
      if (typeof text !== "string") {
        throw new TypeError(
          `Cannot commit ${what} as it is not JSON: current value is ${
            String(value)
          }`,
        );
      }
      if (typeof value === "object" && value !== null) texts.set(value, text);
    }
    return text;
  };
  const statements: Promise<unknown>[] = [];
  if (records.size > 0) {
    const ns: string[] = [];
    const kinds: string[] = [];
    const ids: string[] = [];
    const updated: number[] = [];
    const deleted: (number | null)[] = [];
    const sizes: number[] = [];
    const data: string[] = [];
    for (const write of records.values()) {
      const { record } = write;
      if (write.text !== undefined) texts.set(record.data, write.text);
      const text = json(record.data, "record data");
      ns.push(write.ns);
      kinds.push(utf16Hex(record.kind));
      ids.push(utf16Hex(record.id));
      updated.push(record.updatedAt);
      deleted.push(record.deletedAt);
      sizes.push(utf8Length(text));
      data.push(text);
    }
    const columns = [ns, kinds, ids, updated, deleted, sizes, data];
    statements.push(tx.unsafe(
      `INSERT INTO ${schema}.records
         (ns, kind, id, updated_at, deleted_at, size, data)
       SELECT decode(n, 'hex'), decode(k, 'hex'), decode(i, 'hex'), u, d, z, t
       FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[],
         $5::bigint[], $6::integer[], $7::text[]) AS w(n, k, i, u, d, z, t)
       ON CONFLICT (ns, kind, id) DO UPDATE SET
         updated_at = excluded.updated_at, deleted_at = excluded.deleted_at,
         size = excluded.size, data = excluded.data`,
      columns as unknown as PgParameter[],
    ));
  }
  if (entries.size > 0) {
    const ns: string[] = [];
    const keys: string[] = [];
    const fingerprints: string[] = [];
    const statuses: number[] = [];
    const bodies: string[] = [];
    const expiries: number[] = [];
    for (const write of entries.values()) {
      const { entry } = write;
      ns.push(write.ns);
      keys.push(utf16Hex(entry.key));
      fingerprints.push(utf16Hex(entry.fingerprint));
      statuses.push(entry.status);
      bodies.push(json(entry.body, "idempotency body"));
      expiries.push(clampInt(entry.expiresAt));
    }
    const columns = [ns, keys, fingerprints, statuses, bodies, expiries];
    statements.push(tx.unsafe(
      `INSERT INTO ${schema}.idempotency
         (ns, key, fingerprint, status, body, expires_at)
       SELECT decode(n, 'hex'), decode(k, 'hex'), decode(f, 'hex'), s, b, e
       FROM unnest($1::text[], $2::text[], $3::text[], $4::integer[],
         $5::text[], $6::bigint[]) AS w(n, k, f, s, b, e)
       ON CONFLICT (ns, key) DO UPDATE SET fingerprint = excluded.fingerprint,
         status = excluded.status, body = excluded.body,
         expires_at = excluded.expires_at`,
      columns as unknown as PgParameter[],
    ));
  }
  return statements;
}

/**
 * A string's UTF-16BE code units in hex: its `bytea` key as text, which
 * `decode(…, 'hex')` turns back into the key.
 *
 * @param text The string, lone surrogates and NUL included.
 * @returns Four hex digits per code unit.
 */
export function utf16Hex(text: string): string {
  let out = "";
  for (let index = 0; index < text.length; index++) {
    out += text.charCodeAt(index).toString(16).padStart(4, "0");
  }
  return out;
}

/**
 * A bound as a `bigint` parameter: infinities and fractions made whole.
 *
 * @param value The bound.
 * @returns A safe integer.
 */
export function clampInt(value: number): number {
  if (!(value < Number.MAX_SAFE_INTEGER)) return Number.MAX_SAFE_INTEGER;
  if (!(value > Number.MIN_SAFE_INTEGER)) return Number.MIN_SAFE_INTEGER;
  return Math.floor(value);
}
