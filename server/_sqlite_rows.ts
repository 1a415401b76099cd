/**
 * The SQLite server store's row readers and checks: records and counts from
 * rows, integers for binding, the guard's namespace, and SQLITE_BUSY.
 *
 * @module
 */

import { decodeUtf16 } from "../src/utf16.ts";
import type { JsonObject } from "../src/json.ts";
import type {
  CommitGuard,
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

/** Checks that a number binds as an SQLite integer. */
export function integer(value: number): number {
  if (!Number.isSafeInteger(value)) {
    throw new TypeError(
      `Cannot store number as it is not a safe integer: current value is ${value}`,
    );
  }
  return value;
}
