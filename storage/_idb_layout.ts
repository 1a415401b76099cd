/**
 * The IndexedDB adapter's database layout: its object stores, indexes and
 * the stored form of an item, and the checks made on that form when it is
 * read back (contract clause 9). Private to the IndexedDB adapter.
 *
 * @module
 */

import { StorageError } from "../src/errors.ts";
import type { JsonValue } from "../src/json.ts";
import type { StoredOp, StoredRecord } from "../src/storage.ts";
import { describe } from "../src/describe.ts";
import {
  type ItemName,
  parseStored,
  recordItem,
  storedOp,
  storedRecord,
} from "./_stored.ts";
import type { IdbDatabase, IdbTransaction } from "./_idb_types.ts";

/** The layout's version: the database version passed to `open()`. */
export const LAYOUT_VERSION = 1;

/** Records, keyed by `[kind, id]`. */
export const RECORDS = "records";
/** Outbox ops, keyed by op id. */
export const OPS = "ops";
/** Meta entries, keyed by their key. */
export const META = "meta";
/** Counters: `"rev"`, the last revision issued. */
export const COUNTERS = "counters";

/** Records that are not deleted, by `[kind, id]` (`l` is absent otherwise). */
export const LIVE_INDEX = "live";
/** Ops by `[state, opId]`. */
export const STATE_INDEX = "state";
/** Ops by `[id, opId]`: a record's ops, whatever their kind. */
export const RECORD_INDEX = "record";

/** The key of the revision counter in {@linkcode COUNTERS}. */
export const REV_COUNTER = "rev";

/**
 * A stored item. `v` is the item's JSON text rather than a structured
 * clone, so that what is read back is parsed and checked like any input
 * (clause 9), values follow JSON's rules (`-0` reads back as `0`, as in
 * every other adapter), and the write's size is the size the contract
 * measures; `r` is its revision.
 */
export interface Stored {
  /** The item's JSON. */
  readonly v: string;
  /** The item's revision. */
  readonly r: string;
}

/** A stored record: its id, and its kind when it is not deleted. */
export interface StoredRecordRow extends Stored {
  /** The record's kind, only while it is not deleted (the live index). */
  readonly l?: string;
  /** The record's id. */
  readonly i: string;
}

/** A stored op, with the fields its indexes use. */
export interface StoredOpRow extends Stored {
  /** The op's state. */
  readonly s: string;
  /** The op's record id. */
  readonly i: string;
  /** The op id. */
  readonly o: string;
}

/**
 * Creates the layout's stores and indexes on a new database, inside the
 * `versionchange` transaction of `open()`.
 */
export function createLayout(database: IdbDatabase, oldVersion: number): void {
  if (oldVersion >= LAYOUT_VERSION) return;
  const records = database.createObjectStore(RECORDS);
  records.createIndex(LIVE_INDEX, ["l", "i"]);
  const ops = database.createObjectStore(OPS);
  ops.createIndex(STATE_INDEX, ["s", "o"]);
  ops.createIndex(RECORD_INDEX, ["i", "o"]);
  database.createObjectStore(META);
  database.createObjectStore(COUNTERS);
}

/** Whether an open database has every store of the layout. */
export function hasLayout(database: IdbDatabase): boolean {
  return [RECORDS, OPS, META, COUNTERS].every((name) =>
    database.objectStoreNames.contains(name)
  );
}

/** The stored form of a record. */
export function recordRow(
  record: StoredRecord,
  text: string,
  rev: string,
): StoredRecordRow {
  return record.deleted
    ? { v: text, r: rev, i: record.id }
    : { v: text, r: rev, l: record.kind, i: record.id };
}

/** The stored form of an op. */
export function opRow(op: StoredOp, text: string, rev: string): StoredOpRow {
  return { v: text, r: rev, s: op.state, i: op.id, o: op.opId };
}

/** The stored form of a meta value. */
export function metaRow(text: string, rev: string): Stored {
  return { v: text, r: rev };
}

/**
 * Checks a stored item's envelope: an object with a string `v` and a string
 * revision `r`.
 *
 * @returns The item's JSON text and revision.
 * @throws {StorageError} When it is not such an envelope.
 */
export function envelope(raw: unknown, item: ItemName): Stored {
  const name = (): string => typeof item === "string" ? item : item();
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new StorageError(
      `Cannot read ${name()} as its stored value is not an object: current value is ${
        describe(raw)
      }`,
    );
  }
  const { r } = raw as { r?: unknown };
  if (typeof r !== "string") {
    throw new StorageError(
      `Cannot read ${name()} as its stored revision is not a string: current value is ${
        describe(r)
      }`,
    );
  }
  return raw as Stored;
}

/** A stored record read back, checked against the key it was read under. */
export function readRecord(
  raw: unknown,
  key: { readonly kind: string; readonly id: string },
): { value: StoredRecord; rev: string } {
  const item = (): string => recordItem(key.kind, key.id);
  const { v, r } = envelope(raw, item);
  const value = storedRecord(parseStored(v, item), item, key);
  return { value, rev: r };
}

/** A stored op read back, checked against the op id it was read under. */
export function readOp(
  raw: unknown,
  opId: string,
): { value: StoredOp; rev: string } {
  const item = (): string => `op ${describe(opId)}`;
  const { v, r } = envelope(raw, item);
  return { value: storedOp(parseStored(v, item), item, opId), rev: r };
}

/** A stored meta value read back. */
export function readMeta(
  raw: unknown,
  key: string,
): { value: JsonValue; rev: string } {
  const item = (): string => `meta entry ${describe(key)}`;
  const { v, r } = envelope(raw, item);
  return { value: parseStored(v, item) as JsonValue, rev: r };
}

/**
 * The error for a failure of IndexedDB itself (quota, a closed connection,
 * a browser that cleared the origin's data), naming the call.
 */
export function idbFailure(action: string, error: unknown): StorageError {
  if (error instanceof StorageError) return error;
  const detail = error instanceof Error || error instanceof DOMException
    ? `${error.name}: ${error.message}`
    : describe(error);
  return new StorageError(
    `Cannot ${action} as IndexedDB failed: current value is ${detail}`,
    { cause: error },
  );
}

/** Aborts a transaction that may have ended already. */
export function abortQuietly(transaction: IdbTransaction): boolean {
  try {
    transaction.abort();
    return true;
  } catch {
    // It committed or aborted already: nothing left to undo.
    return false;
  }
}
