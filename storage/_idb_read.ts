/**
 * The IndexedDB adapter's reads: items by key, and the ordered listings of
 * records and ops. Each call is one `readonly` transaction, so it sees one
 * consistent state. IndexedDB orders string keys by UTF-16 code units and
 * array keys element by element (a shorter array first), which is the
 * contract's order (clause 4) for `[kind, id]` and for op ids. Private to
 * the IndexedDB adapter.
 *
 * @module
 */

import type { JsonValue } from "../src/json.ts";
import type { StoredOp, StoredRecord, Versioned } from "../src/storage.ts";
import type {
  ResolvedListOpsOptions,
  ResolvedListRecordsOptions,
} from "./_validate.ts";
import {
  LIVE_INDEX,
  META,
  OPS,
  readMeta,
  readOp,
  readRecord,
  RECORD_INDEX,
  RECORDS,
  STATE_INDEX,
} from "./_idb_layout.ts";
import {
  type IdbDatabase,
  type IdbKey,
  type IdbKeyRangeStatic,
  type IdbReadable,
  settled,
} from "./_idb_types.ts";
import { StorageError } from "../src/errors.ts";
import { describe } from "../src/describe.ts";

/** What a read needs: the open database and the key range constructor. */
export interface IdbSource {
  /** The open database. */
  readonly database: IdbDatabase;
  /** `globalThis.IDBKeyRange`. */
  readonly keyRange: IdbKeyRangeStatic;
}

/**
 * How many items one `getAll()` of a filtered listing reads: a listing
 * whose filter drops items reads on in batches of this size.
 */
const BATCH = 256;

/** The largest `count` IndexedDB's `getAll()` takes (an unsigned long). */
const MAX_COUNT = 2 ** 32 - 1;

/** An array key greater than every `[x, string]`: arrays sort after strings. */
const AFTER_STRINGS: readonly IdbKey[] = [];

/** Reads records of one kind by id. */
export async function getRecords(
  source: IdbSource,
  kind: string,
  ids: readonly string[],
): Promise<(Versioned<StoredRecord> | undefined)[]> {
  if (ids.length === 0) return [];
  const store = source.database.transaction(RECORDS, "readonly").objectStore(
    RECORDS,
  );
  const raws = await Promise.all(
    ids.map((id) => settled(store.get([kind, id]))),
  );
  return raws.map((raw, index) =>
    raw === undefined ? undefined : readRecord(raw, { kind, id: ids[index]! })
  );
}

/** Lists a kind's records in id order. */
export async function listRecords(
  source: IdbSource,
  kind: string,
  options: ResolvedListRecordsOptions,
): Promise<Versioned<StoredRecord>[]> {
  const { limit, after, includeDeleted } = options;
  if (limit === 0) return [];
  const store = source.database.transaction(RECORDS, "readonly").objectStore(
    RECORDS,
  );
  const readable = includeDeleted ? store : store.index(LIVE_INDEX);
  // Both key a record by [kind, id]: the live index's key is [l, i].
  return await scan(readable, {
    keyRange: source.keyRange,
    prefix: kind,
    after,
    limit,
    take: ({ primaryKey, raw }) => {
      const [storedKind, id] = Array.isArray(primaryKey) ? primaryKey : [];
      if (storedKind !== kind || typeof id !== "string") {
        throw new StorageError(
          `Cannot list records of kind ${
            describe(kind)
          } as IndexedDB returned a record under another key: current value is ${
            describe(primaryKey)
          }`,
        );
      }
      return readRecord(raw, { kind, id });
    },
  });
}

/** Reads ops by op id. */
export async function getOps(
  source: IdbSource,
  opIds: readonly string[],
): Promise<(Versioned<StoredOp> | undefined)[]> {
  if (opIds.length === 0) return [];
  const store = source.database.transaction(OPS, "readonly").objectStore(OPS);
  const raws = await Promise.all(opIds.map((opId) => settled(store.get(opId))));
  return raws.map((raw, index) =>
    raw === undefined ? undefined : readOp(raw, opIds[index]!)
  );
}

/**
 * Lists ops in op-id order. With an id, reads that record's ops from the
 * record index; with states, each state's ops from the state index (a
 * quarantined op never slows the drain of pending ones) and merges them;
 * otherwise the whole outbox in order. Filters are checked on the parsed
 * op, so the indexes only narrow what is read.
 */
export async function listOps(
  source: IdbSource,
  options: ResolvedListOpsOptions,
): Promise<Versioned<StoredOp>[]> {
  const { limit, after, id, states, kinds } = options;
  if (limit === 0 || states?.size === 0 || kinds?.size === 0) return [];
  const store = source.database.transaction(OPS, "readonly").objectStore(OPS);
  const keep = (op: StoredOp): boolean =>
    (states === undefined || states.has(op.state)) &&
    (kinds === undefined || kinds.has(op.kind)) &&
    (id === undefined || op.id === id);
  const plan = { keyRange: source.keyRange, after, limit };
  const read = (
    readable: IdbReadable,
    prefix: string | undefined,
  ): Promise<Versioned<StoredOp>[]> =>
    scan(readable, {
      ...plan,
      prefix,
      take: (row) => {
        const entry = readOp(row.raw, opIdOf(row.primaryKey));
        return keep(entry.value) ? entry : undefined;
      },
    });
  if (id !== undefined) return await read(store.index(RECORD_INDEX), id);
  if (states === undefined) return await read(store, undefined);
  const lists = await Promise.all(
    [...states].map((state) => read(store.index(STATE_INDEX), state)),
  );
  const merged = lists.flat();
  if (lists.length > 1) {
    merged.sort((a, b) =>
      a.value.opId < b.value.opId ? -1 : a.value.opId > b.value.opId ? 1 : 0
    );
  }
  return merged.slice(0, limit);
}

function opIdOf(primaryKey: unknown): string {
  if (typeof primaryKey !== "string") {
    throw new StorageError(
      `Cannot list ops as IndexedDB returned an op under a key that is not a string: current value is ${
        describe(primaryKey)
      }`,
    );
  }
  return primaryKey;
}

/** Reads meta entries by key. */
export async function getMeta(
  source: IdbSource,
  keys: readonly string[],
): Promise<(Versioned<JsonValue> | undefined)[]> {
  if (keys.length === 0) return [];
  const store = source.database.transaction(META, "readonly").objectStore(
    META,
  );
  const raws = await Promise.all(keys.map((key) => settled(store.get(key))));
  return raws.map((raw, index) =>
    raw === undefined ? undefined : readMeta(raw, keys[index]!)
  );
}

/** One stored item a scan read: its primary key and stored form. */
interface Row {
  readonly primaryKey: unknown;
  readonly raw: unknown;
}

/** What {@linkcode scan} reads. */
interface Scan<T> {
  readonly keyRange: IdbKeyRangeStatic;
  /**
   * The first element of every key read (`[prefix, key]` keys, for an index
   * or the records store), or `undefined` for the ops store's plain op ids.
   */
  readonly prefix: string | undefined;
  /** Only keys after this one (the second element with a prefix). */
  readonly after: string | undefined;
  /** The most rows to return. */
  readonly limit: number;
  /** Reads a row; `undefined` skips it (a filter). */
  readonly take: (row: Row) => T | undefined;
}

/**
 * Reads rows in key order, in `getAll()` batches, until `limit` rows were
 * kept or the range ends. The values and the primary keys come from two
 * requests over the same range and count in one transaction, so they line
 * up. Every key of the readables scanned here ends with a string that
 * follows from the primary key (an op id, or a record id), so the next
 * batch starts after the last key read.
 */
async function scan<T>(readable: IdbReadable, plan: Scan<T>): Promise<T[]> {
  const { keyRange, prefix, limit, take } = plan;
  const kept: T[] = [];
  let after = plan.after;
  for (;;) {
    const wanted = limit - kept.length;
    // Unfiltered scans could read exactly what is wanted, but a filter may
    // drop rows: read a batch at least, and everything when unbounded.
    const count = wanted > MAX_COUNT ? undefined : Math.max(wanted, BATCH);
    const range = prefix === undefined
      ? after === undefined
        ? undefined
        : keyRange.bound(after, AFTER_STRINGS, true, true)
      : keyRange.bound(
        after === undefined ? [prefix] : [prefix, after],
        [prefix, AFTER_STRINGS],
        after !== undefined,
        true,
      );
    const [raws, primaryKeys] = await Promise.all([
      settled(readable.getAll(range, count)),
      settled(readable.getAllKeys(range, count)),
    ]);
    for (let index = 0; index < raws.length; index++) {
      const item = take({ primaryKey: primaryKeys[index], raw: raws[index] });
      if (item !== undefined) {
        kept.push(item);
        if (kept.length >= limit) return kept;
      }
    }
    if (count === undefined || raws.length < count) return kept;
    after = lastString(primaryKeys[primaryKeys.length - 1]);
  }
}

/** The string a key ends with: an op id, or a record's id. */
function lastString(primaryKey: unknown): string {
  const last = Array.isArray(primaryKey)
    ? primaryKey[primaryKey.length - 1]
    : primaryKey;
  if (typeof last !== "string") {
    throw new StorageError(
      `Cannot list items as IndexedDB returned a key that does not end with a string: current value is ${
        describe(primaryKey)
      }`,
    );
  }
  return last;
}
