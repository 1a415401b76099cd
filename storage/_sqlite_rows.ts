/**
 * The SQLite storage's reads: rows decoded into entries and checked against
 * their key columns (contract clause 9), records read by id a chunk at a
 * time, ops listed by one statement per filter shape, several statements
 * read in one snapshot. Private to `storage/sqlite.ts`: not exported from
 * the package.
 *
 * @module
 */

import { StorageError } from "../src/errors.ts";
import type { JsonValue } from "../src/json.ts";
import type { SqliteValue } from "../src/sqlite_like.ts";
import type { StoredOp, StoredRecord, Versioned } from "../src/storage.ts";
import type { KeyEncoder } from "./_sqlite_keys.ts";
import { encodeKey, firstRow } from "./_sqlite_schema.ts";
import {
  driverError,
  rollbackQuietly,
  type Space,
  type SqliteStatements,
  sqlLimit,
} from "./_sqlite_statements.ts";
import {
  misplaced,
  parseStored,
  recordItem,
  storedOp,
  storedRecord,
  withBaseData,
} from "./_stored.ts";
import { describe } from "../src/describe.ts";
import { decodeUtf16, isUtf16Of } from "../src/utf16.ts";
import { OP_STATES, type ResolvedListOpsOptions } from "./_validate.ts";

/**
 * The most ids one `getRecords()` statement reads (`id IN (…)`). A chunk is
 * padded to a power of two by repeating its last id, so at most eight
 * statement shapes are ever prepared.
 */
export const RECORDS_IN_CHUNK = 128;

/**
 * Runs driver reads, in one read transaction when there are several
 * statements, so they see one snapshot even while another process writes.
 *
 * @param s The statements.
 * @param read What the reads are for, whether they need a snapshot, and the
 * reads.
 * @returns What the reads return.
 * @throws {StorageError} When the driver fails.
 */
export function readRows<T>(
  s: SqliteStatements,
  read: {
    readonly action: string;
    readonly snapshot: boolean;
    readonly work: () => T;
  },
): T {
  try {
    if (!read.snapshot) return read.work();
    s.beginRead.run();
    let ended = false;
    try {
      const result = read.work();
      s.commit.run();
      ended = true;
      return result;
    } finally {
      // A read or a COMMIT that failed leaves the transaction open, and
      // every later write on this connection would fail to begin one.
      if (!ended) rollbackQuietly(s);
    }
  } catch (error) {
    throw driverError(read.action, error);
  }
}

/**
 * Reads ops or meta entries by key, one statement each, in one snapshot
 * when there are several.
 *
 * @param s The statements.
 * @param read What the reads are for, the space, the keys, and how a row
 * becomes an entry.
 * @returns The entries, in the keys' order.
 * @throws {StorageError} When the driver fails.
 */
export function readEach<T>(
  s: SqliteStatements,
  read: {
    readonly action: string;
    readonly space: Space;
    readonly names: readonly string[];
    readonly to: (row: unknown, name: string) => Versioned<T> | undefined;
  },
): (Versioned<T> | undefined)[] {
  const { action, space, names, to } = read;
  if (names.length === 0) return [];
  const get = s.spaces[space].get;
  return readRows(s, {
    action,
    snapshot: names.length > 1,
    work: () => names.map((name) => to(firstRow(get, encodeKey(name)), name)),
  });
}

/**
 * Reads records by id with `id IN (…)`, a chunk of ids per statement: one
 * call into the driver per chunk instead of one per id. Rows come back in
 * the index's order, so each is matched to its id through the id its value
 * holds, checked against its key (a record's key is made of its own kind
 * and id).
 *
 * @param s The statements.
 * @param query The kind, the ids, and the key encoder.
 * @returns The records, in the ids' order.
 */
export function readRecordsIn(
  s: SqliteStatements,
  query: {
    readonly kind: string;
    readonly ids: readonly string[];
    readonly keys: KeyEncoder;
  },
): (Versioned<StoredRecord> | undefined)[] {
  const { kind, ids, keys } = query;
  const kindKey = keys.kind(kind);
  const rows = new Map<string, unknown>();
  const parsed = new Map<string, Versioned<StoredRecord>>();
  for (let start = 0; start < ids.length; start += RECORDS_IN_CHUNK) {
    const end = Math.min(ids.length, start + RECORDS_IN_CHUNK);
    let size = 1;
    while (size < end - start) size *= 2;
    const params: SqliteValue[] = [kindKey];
    for (let index = start; index < start + size; index++) {
      params.push(keys.key(ids[Math.min(index, end - 1)]!));
    }
    for (const row of s.recordsIn(size).all(...params)) {
      const entry = toRecord(row, kind)!;
      rows.set(entry.value.id, row);
      parsed.set(entry.value.id, entry);
    }
  }
  // A fresh pull finds none of its records.
  if (rows.size === 0) return ids.map(() => undefined);
  return ids.map((id) => {
    const entry = parsed.get(id);
    if (entry === undefined) {
      // A repeated id gets a fresh parse: entries share no objects.
      const row = rows.get(id);
      return row === undefined ? undefined : toRecord(row, kind);
    }
    parsed.delete(id);
    return entry;
  });
}

/**
 * Lists ops with the statement of the filter's shape.
 *
 * @param s The statements.
 * @param query The resolved options of `listOps()`, and the key encoder.
 * @returns The ops.
 */
export function listOpRows(
  s: SqliteStatements,
  query: ResolvedListOpsOptions & { readonly keys: KeyEncoder },
): Versioned<StoredOp>[] {
  const { limit, after, id, states, kinds, keys } = query;
  // Every state listed filters nothing: drop the filter, so that the
  // primary key's order serves the query.
  const stateList = states === undefined ||
      (states.size === OP_STATES.size &&
        [...OP_STATES].every((state) => states.has(state)))
    ? undefined
    : [...states];
  const kindList = kinds === undefined ? undefined : [...kinds];
  const statement = s.listOps({
    states: stateList?.length,
    held: stateList !== undefined && !stateList.includes("pending"),
    kinds: kindList?.length,
    id: id !== undefined,
    after: after !== undefined,
  });
  const params: SqliteValue[] = [];
  if (stateList !== undefined) params.push(...stateList);
  if (kindList !== undefined) {
    for (const kind of kindList) params.push(keys.key(kind));
  }
  if (id !== undefined) params.push(keys.key(id));
  if (after !== undefined) params.push(keys.key(after));
  params.push(sqlLimit(limit));
  return readRows(s, {
    action: "list ops",
    snapshot: false,
    work: () => statement.all(...params).map((row) => toOp(row)!),
  });
}

/**
 * A row's revision.
 *
 * @param row The row, or `undefined` when there is none.
 * @returns Its revision, or `undefined`.
 */
export function revisionOf(
  row: Record<string, unknown> | undefined,
): number | undefined {
  return row === undefined ? undefined : Number(row["rev"]);
}

/**
 * A record row as the entry, checked (contract clause 9): its JSON must
 * parse and be a record of the row's kind and id and `deleted` column.
 *
 * @param row The row; `null` or `undefined` when there is none.
 * @param kind The kind it was read under.
 * @returns The entry, or `undefined`.
 * @throws {StorageError} When the row is damaged.
 */
export function toRecord(
  row: unknown,
  kind: string,
): Versioned<StoredRecord> | undefined {
  if (row === null || row === undefined) return undefined;
  const { value, rev, base_is_data: baseIsData, id, deleted } = row as {
    value: unknown;
    rev: number | bigint;
    base_is_data: number | bigint;
    id: Uint8Array;
    deleted: number | bigint;
  };
  // 1 (a number or a bigint) means the base was stored without its data,
  // which is the record's (schema v3).
  const shared = Number(baseIsData) !== 0;
  const item = (): string => recordItem(kind, decodeUtf16(id));
  // A fresh parse per entry: nothing is shared with the caller or between
  // entries, and JSON.parse keeps "__proto__" keys as own data properties.
  const record = storedRecord(parseStored(value, item), item, {
    kind,
    baseIsData: shared,
  });
  if (!isUtf16Of(id, record.id)) throw misplaced(item, "id", record.id);
  if (Number(deleted) !== (record.deleted ? 1 : 0)) {
    throw new StorageError(
      `Cannot read ${item()} as its stored 'deleted' disagrees with its row: current value is ${record.deleted}`,
    );
  }
  return {
    value: shared ? withBaseData(record, item) : record,
    rev: String(rev),
  };
}

/**
 * An op row as the entry, checked: its JSON must parse and be an op of the
 * row's op id, state, kind and id (the columns listings filter on).
 *
 * @param row The row; `null` or `undefined` when there is none.
 * @returns The entry, or `undefined`.
 * @throws {StorageError} When the row is damaged.
 */
export function toOp(row: unknown): Versioned<StoredOp> | undefined {
  if (row === null || row === undefined) return undefined;
  const { value, rev, op_id: opId, state, kind, id } = row as {
    value: unknown;
    rev: number | bigint;
    op_id: Uint8Array;
    state: unknown;
    kind: Uint8Array;
    id: Uint8Array;
  };
  const item = (): string => `op ${describe(decodeUtf16(opId))}`;
  const op = storedOp(parseStored(value, item), item);
  if (!isUtf16Of(opId, op.opId)) throw misplaced(item, "opId", op.opId);
  if (op.state !== state) throw misplaced(item, "state", op.state);
  if (!isUtf16Of(kind, op.kind)) throw misplaced(item, "kind", op.kind);
  if (!isUtf16Of(id, op.id)) throw misplaced(item, "id", op.id);
  return { value: op, rev: String(rev) };
}

/**
 * A meta row as the entry: any JSON is a meta value.
 *
 * @param row The row; `null` or `undefined` when there is none.
 * @param key The key it was read under.
 * @returns The entry, or `undefined`.
 * @throws {StorageError} When its value is not JSON.
 */
export function toMeta(
  row: unknown,
  key: string,
): Versioned<JsonValue> | undefined {
  if (row === null || row === undefined) return undefined;
  const { value, rev } = row as { value: unknown; rev: number | bigint };
  const parsed = parseStored(value, `meta entry ${describe(key)}`);
  return { value: parsed as JsonValue, rev: String(rev) };
}
