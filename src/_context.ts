/**
 * The engine's internal context, shared by the local-write, push and pull
 * modules. Private: not exported from `mod.ts`.
 *
 * @module
 */

import { parseTimestamp } from "./_timestamp.ts";
import type { ConflictPolicy } from "./conflict.ts";
import type { EventHub } from "./events.ts";
import type { JsonObject } from "./json.ts";
import type { StandardSchemaV1 } from "./schema.ts";
import type { Storage } from "./storage.ts";
import type { Transport } from "./transport.ts";

/** A table's resolved settings. */
export interface TableConfig {
  /** The table's kind (REST path segment). */
  readonly kind: string;
  /** The validator for local writes. */
  readonly schema: StandardSchemaV1 | undefined;
  /** The record's id field. */
  readonly idField: string;
  /** The server timestamp field; `undefined` = `updated_at` or `updatedAt`. */
  readonly updatedAtField: string | undefined;
  /** The tombstone field; `undefined` = `deleted_at` or `deletedAt`. */
  readonly deletedAtField: string | undefined;
  /** Whether unsent writes to one record fold into one op. */
  readonly coalesce: boolean;
  /** How conflicts are resolved. */
  readonly policy: ConflictPolicy;
}

/** The engine's resolved numeric settings. */
export interface EngineLimits {
  /** Pull page size. */
  readonly pageSize: number;
  /** Most ops handed to the transport in one call. */
  readonly pushBatchSize: number;
  /** Most conflict resolutions of one op before it is parked. */
  readonly maxConflictRetries: number;
  /** Most optimistic retries of one storage read-modify-write. */
  readonly writeRetries: number;
}

/** What the push, pull and local-write modules need from the engine. */
export interface EngineContext {
  readonly storage: Storage;
  readonly transport: Transport;
  readonly hub: EventHub;
  readonly limits: EngineLimits;
  /** The client clock, ms since the epoch. */
  now(): number;
  /** A new op id, greater than `after` when given. */
  newOpId(after?: string): string;
  /** The table registered under `kind`, or a thrown `SyncError`. */
  table(kind: string): TableConfig;
  /**
   * The table registered under `kind`, or default settings for a kind not
   * registered (yet): enough to read its records' ids and timestamps.
   */
  tableOrDefault(kind: string): TableConfig;
  /** The kinds registered so far, in registration order. */
  kinds(): readonly string[];
  /** Server time minus client time, as last measured (ms). */
  clockSkewMs(): number;
  /** Records a server `Date` reading to correct the skew. */
  observeServerDate(serverDate: number | undefined, sentAt: number): void;
}

/** The id, server timestamp and deletion of a server record. */
export interface RecordMeta {
  readonly id: string;
  readonly updatedAt: string;
  /** `updatedAt` as ms since the epoch, parsed once. */
  readonly time: number;
  readonly deleted: boolean;
}

/**
 * Reads the id, `updated_at` and tombstone of a record through the table's
 * field names.
 *
 * @param table The table.
 * @param record The record.
 * @returns The fields, or a string saying what is missing.
 */
export function readRecordMeta(
  table: TableConfig,
  record: JsonObject,
): RecordMeta | string {
  const id = record[table.idField];
  if (typeof id !== "string" || id === "") {
    return `the record has no string "${table.idField}"`;
  }
  const updatedAt = table.updatedAtField === undefined
    ? record["updated_at"] ?? record["updatedAt"]
    : record[table.updatedAtField];
  const time = parseTimestamp(updatedAt);
  if (typeof updatedAt !== "string" || time === null) {
    return `the record "${id}" has no valid "${
      table.updatedAtField ?? "updated_at"
    }" timestamp`;
  }
  const deletedAt = table.deletedAtField === undefined
    ? record["deleted_at"] ?? record["deletedAt"]
    : record[table.deletedAtField];
  return {
    id,
    updatedAt,
    time,
    deleted: deletedAt !== undefined && deletedAt !== null,
  };
}

/**
 * Compares two server timestamps as instants (never as strings).
 *
 * @param a An ISO-8601 timestamp.
 * @param b An ISO-8601 timestamp.
 * @returns Negative, zero or positive as `a` is before, at or after `b`.
 */
export function compareInstants(a: string, b: string): number {
  return Date.parse(a) - Date.parse(b);
}

/** The outbox key of a record, for sets and maps. */
export function recordKey(kind: string, id: string): string {
  return `${kind}\u0000${id}`;
}
