/**
 * The SQLite server store's row readers and checks: records and counts from
 * rows, integers for binding, the guard's namespace, and SQLITE_BUSY.
 *
 * @module
 */

import { decodeUtf16, encodeUtf16 } from "../src/utf16.ts";
import { isJsonObject, type JsonObject, type JsonValue } from "../src/json.ts";
import { utf8Length } from "./_limits.ts";
import type { Statements } from "./_sqlite_schema.ts";
import { listedRecord } from "./_util.ts";
import type {
  CommitGuard,
  IdempotencyEntry,
  ServerRecord,
  ServerWrite,
  TrimIdempotencyResult,
} from "./store.ts";

/** Throws when a guarded commit holds a write of another namespace. */
export function assertInGuard(
  writes: readonly ServerWrite[],
  guard: CommitGuard,
): void {
  for (const write of writes) {
    if (write.namespace !== guard.namespace) {
      throw new TypeError(
        `Cannot commit guarded writes as one is outside the guard's namespace ${
          JSON.stringify(guard.namespace)
        }: current value is ${JSON.stringify(write.namespace)}`,
      );
    }
  }
}

/** Whether a driver error is SQLITE_BUSY (another connection's lock). */
export function isBusy(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  const { code, errcode, message } = error as {
    code?: unknown;
    errcode?: unknown;
    message?: unknown;
  };
  return (typeof errcode === "number" && (errcode & 0xff) === 5) ||
    (typeof code === "string" && code.startsWith("SQLITE_BUSY")) ||
    (typeof message === "string" && message.includes("database is locked"));
}

/** Reads a `countIdempotency` row. */
export function readCount(row: unknown): TrimIdempotencyResult {
  const { count, oldest } = row as {
    count: number | bigint;
    oldest: number | bigint | null;
  };
  return {
    count: Number(count),
    oldestExpiresAt: oldest === null ? null : Number(oldest),
  };
}

/** Reads a record row. */
export function toRecord(row: unknown): ServerRecord {
  const { kind, id, updated_at, deleted_at, data } = row as {
    kind: Uint8Array;
    id: Uint8Array;
    updated_at: number | bigint;
    deleted_at: number | bigint | null;
    data: string;
  };
  return {
    kind: decodeUtf16(kind),
    id: decodeUtf16(id),
    updatedAt: Number(updated_at),
    deletedAt: deleted_at === null ? null : Number(deleted_at),
    data: JSON.parse(data) as JsonObject,
  };
}

/** Reads a listed record row: its text kept, its data parsed when read. */
export function toListedRecord(row: unknown): ServerRecord {
  const { kind, id, updated_at, deleted_at, data } = row as {
    kind: Uint8Array;
    id: Uint8Array;
    updated_at: number | bigint;
    deleted_at: number | bigint | null;
    data: string;
  };
  return listedRecord({
    kind: decodeUtf16(kind),
    id: decodeUtf16(id),
    updatedAt: Number(updated_at),
    deletedAt: deleted_at === null ? null : Number(deleted_at),
  }, data);
}

/** Reads an idempotency row, or its absence. */
export function toEntry(row: unknown): IdempotencyEntry | null {
  if (row === undefined || row === null) return null;
  const { key, fingerprint, status, body, expires_at } = row as {
    key: Uint8Array;
    fingerprint: Uint8Array;
    status: number | bigint;
    body: string;
    expires_at: number | bigint;
  };
  return {
    key: decodeUtf16(key),
    fingerprint: decodeUtf16(fingerprint),
    status: Number(status),
    body: JSON.parse(body) as JsonValue,
    expiresAt: Number(expires_at),
  };
}

/** Checks that a number binds as an SQLite integer. */
export function integer(value: number): number {
  if (!Number.isSafeInteger(value)) {
    throw new TypeError(
      `Cannot store number as it is not a safe integer: current value is ${value}`,
    );
  }
  return value;
}

/**
 * Writes a commit's rows inside its write transaction, then raises each
 * namespace's clock to its newest record once and moves its version once.
 * A namespace or kind is encoded once per commit, and a record's data and
 * the response stored under its key, usually one object (the stored record
 * is the `2xx` body), are stringified once.
 *
 * @param s The connection's statements.
 * @param writes The writes, in order.
 * @throws {TypeError} For a record whose data is not a JSON object, or a
 * write of unknown type: the caller rolls back what was written.
 */
export function writeRows(s: Statements, writes: readonly ServerWrite[]): void {
  const newest = new Map<string, { updatedAt: number; id: string }>();
  const encoded = new Map<string, Uint8Array>();
  const utf16 = (text: string): Uint8Array => {
    let bytes = encoded.get(text);
    if (bytes === undefined) {
      bytes = encodeUtf16(text);
      encoded.set(text, bytes);
    }
    return bytes;
  };
  const texts = new Map<JsonValue, string>();
  for (const write of writes) {
    const ns = utf16(write.namespace);
    if (write.type === "record") {
      const { record } = write;
      if (!isJsonObject(record.data)) {
        throw new TypeError(
          `Cannot commit record as its data is not a JSON object: current value is ${
            JSON.stringify(record.data)
          }`,
        );
      }
      const data = write.text ?? JSON.stringify(record.data);
      texts.set(record.data, data);
      s.putRecord.run(
        ns,
        utf16(record.kind),
        encodeUtf16(record.id),
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
        ns,
        encodeUtf16(entry.key),
        encodeUtf16(entry.fingerprint),
        integer(entry.status),
        texts.get(entry.body) ?? JSON.stringify(entry.body),
        integer(entry.expiresAt),
      );
    } else {
      throw new TypeError(
        `Cannot commit write as its type is unknown: current value is ${
          JSON.stringify((write as { type: unknown }).type)
        }`,
      );
    }
  }
  for (const [namespace, { updatedAt, id }] of newest) {
    s.raiseClock.run(utf16(namespace), updatedAt, encodeUtf16(id));
  }
  for (const namespace of new Set(writes.map((write) => write.namespace))) {
    s.bumpVersion.run(utf16(namespace));
  }
}
