/**
 * The engine's internal context, shared by the local-write, push and pull
 * modules. Private: not exported from `mod.ts`.
 *
 * @module
 */

import { describe } from "./describe.ts";
import { parseTimestamp } from "./timestamp.ts";
import {
  cursorIdAfter,
  exceedsDepth,
  idProblem,
  WIRE_LIMITS,
} from "./limits.ts";
import type { ConflictPolicy } from "./conflict.ts";
import type { EventHub, RecordProblem } from "./events.ts";
import { isJsonObject, type JsonValue } from "./json.ts";
import type { OutcomeRegistry } from "./_outcomes.ts";
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
  /** Waits on ops' outcomes, settled where settlements commit (clause 24). */
  readonly outcomes: OutcomeRegistry;
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

/** Where an item sits in the pull order, as a cursor names it. */
export interface Position {
  /** The item's `updated_at`, as the server sent it. */
  readonly updatedAt: string;
  /** `updatedAt` as ms since the epoch. */
  readonly time: number;
  /** The cursor id: the item's id, or a valid stand-in past it. */
  readonly id: string;
}

/** A server record that breaks the limits (ENGINE.md clause 25). */
export interface RecordFault {
  /** What is wrong. */
  readonly problem: RecordProblem;
  /** What is wrong, as the end of a std-style message. */
  readonly reason: string;
  /**
   * Where the item sits, when its `updated_at` is readable and its id is a
   * non-empty string: a cursor can move past it.
   */
  readonly position: Position | null;
}

/**
 * Reads the id, `updated_at` and tombstone of a server record through the
 * table's field names, and checks it against the wire limits: an id that
 * `idProblem` accepts, a valid `updated_at`, a `deleted_at` that is absent,
 * `null` or a timestamp, and nesting no deeper than `WIRE_LIMITS.maxDepth`.
 * Every check is bounded by its limit, so a hostile record costs no more.
 *
 * @param table The table.
 * @param record The record, as received.
 * @returns The fields, or what is wrong and where the record sits.
 */
export function readRecordMeta(
  table: TableConfig,
  record: JsonValue | undefined,
): RecordMeta | RecordFault {
  if (!isJsonObject(record)) {
    return {
      problem: "not_object",
      reason: `it is not an object (${
        record === null
          ? "null"
          : Array.isArray(record)
          ? "array"
          : typeof record
      })`,
      position: null,
    };
  }
  const id = record[table.idField];
  const updatedAt = table.updatedAtField === undefined
    ? record["updated_at"] ?? record["updatedAt"]
    : record[table.updatedAtField];
  const time = parseTimestamp(updatedAt);
  const idIssue = idProblem(id);
  // A valid id is its own cursor; a bad one's stand-in is found only then.
  const cursorId = idIssue === null
    ? id as string
    : typeof id === "string"
    ? cursorIdAfter(id)
    : null;
  const position = time === null || cursorId === null
    ? null
    : { updatedAt: updatedAt as string, time, id: cursorId };
  if (idIssue !== null) {
    return {
      problem: "invalid_id",
      reason: `its "${table.idField}" is invalid: ${idIssue}`,
      position,
    };
  }
  if (time === null) {
    return {
      problem: "invalid_updated_at",
      reason: `its "${
        table.updatedAtField ?? "updated_at"
      }" is not a timestamp: current value is ${describe(updatedAt)}`,
      position,
    };
  }
  const deletedAt = table.deletedAtField === undefined
    ? record["deleted_at"] ?? record["deletedAt"]
    : record[table.deletedAtField];
  if (
    deletedAt !== undefined && deletedAt !== null &&
    parseTimestamp(deletedAt) === null
  ) {
    return {
      problem: "invalid_deleted_at",
      reason: `its "${
        table.deletedAtField ?? "deleted_at"
      }" is neither null nor a timestamp: current value is ${
        describe(deletedAt)
      }`,
      position,
    };
  }
  if (exceedsDepth(record, WIRE_LIMITS.maxDepth)) {
    return {
      problem: "too_deep",
      reason: `it nests deeper than ${WIRE_LIMITS.maxDepth} levels`,
      position,
    };
  }
  return {
    id: id as string,
    updatedAt: updatedAt as string,
    time,
    deleted: deletedAt !== undefined && deletedAt !== null,
  };
}

/**
 * Tells a record's fault from its fields.
 *
 * @param meta What {@linkcode readRecordMeta} returned.
 * @returns `true` when the record breaks the limits.
 */
export function isFault(meta: RecordMeta | RecordFault): meta is RecordFault {
  return "problem" in meta;
}

/**
 * Orders two positions as the pull does: by instant, then by id in UTF-16
 * code units (CONTRACT.md, Pull).
 *
 * @param a A position.
 * @param b Another.
 * @returns Negative, zero or positive as `a` is before, at or after `b`.
 */
export function comparePositions(a: Position, b: Position): number {
  return a.time - b.time || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
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
