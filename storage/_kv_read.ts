/**
 * The KV storage's reads: items by key, records listed in id order, ops
 * listed in op-id order or by record, each checked against the key it was
 * read under and with its blob read when it has one. Private to
 * `storage/kv.ts`: not exported from the package.
 *
 * @module
 */

import { StorageError } from "../src/errors.ts";
import type {
  OpState,
  StoredOp,
  StoredRecord,
  Versioned,
} from "../src/storage.ts";
import {
  decodeText,
  encodeText,
  hashedGroup,
  hashText,
  ID_BUDGET,
  keyPart,
  KIND_BUDGET,
  partMatches,
  sameBytes,
  startsWith,
} from "./_kv_keys.ts";
import { KV_MAX_BATCH } from "./_kv_limits.ts";
import { readBlob } from "./_kv_blobs.ts";
import {
  compareKeys,
  type Envelope,
  isOpState,
  type KvKeyspace,
  recordOf,
  UNINDEXED_STATE,
} from "./_kv_keyspace.ts";
import { misplaced, storedOp } from "./_stored.ts";
import { describe } from "../src/describe.ts";

/** How often a read retries when a blob vanished under it. */
const MAX_READ_ATTEMPTS = 5;

/** Checks a stored value and makes it an item (see {@linkcode getItems}). */
export type Reader<T> = (
  value: unknown,
  envelope: Envelope,
  index: number,
) => T;

/** What a listing of ops keeps. */
export interface OpFilter {
  /** The paging cursor. */
  readonly after: string | undefined;
  /** The record id. */
  readonly id: string | undefined;
  /** The states. */
  readonly states: ReadonlySet<string> | undefined;
  /** The kinds. */
  readonly kinds: ReadonlySet<string> | undefined;
  /** The most ops. */
  readonly limit: number;
}

/**
 * Reads items by header key, `undefined` keys being absent.
 *
 * @param space The store.
 * @param request The keys, and `read`, which checks a stored value and
 * makes it the item (`index` is its key's position).
 * @returns The items, in the keys' order.
 */
export async function getItems<T>(
  space: KvKeyspace,
  request: {
    readonly keys: readonly (Deno.KvKey | undefined)[];
    readonly read: Reader<T>;
  },
): Promise<(Versioned<T> | undefined)[]> {
  const { keys, read } = request;
  const positions: number[] = [];
  const present: Deno.KvKey[] = [];
  keys.forEach((key, index) => {
    if (key === undefined) return;
    positions.push(index);
    present.push(key);
  });
  const entries = await space.getMany(present);
  // Inline values need no further read: only large ones are awaited.
  let large = false;
  const items = entries.map((entry, n) => {
    if (entry.versionstamp === null) return undefined;
    const index = positions[n]!;
    const envelope = space.decodeEnvelope(entry);
    if (!Object.hasOwn(envelope, "v")) {
      large = true;
      return materialize(space, {
        entry,
        read: (value, fresh) => read(value, fresh, index),
      });
    }
    return {
      value: read(envelope.v, envelope, index),
      rev: entry.versionstamp,
    };
  });
  const settled = large
    ? await Promise.all(items)
    : items as (Versioned<T> | undefined)[];
  let next = 0;
  return keys.map((key) => key === undefined ? undefined : settled[next++]);
}

/**
 * Reads ops by id.
 *
 * @param space The store.
 * @param opIds The op ids.
 * @returns The ops, in order.
 */
export function getOpItems(
  space: KvKeyspace,
  opIds: readonly string[],
): Promise<(Versioned<StoredOp> | undefined)[]> {
  return getItems(space, {
    keys: opIds.map((opId) => space.readKey("o", opId)),
    read: (value, _envelope, index) => {
      const opId = opIds[index]!;
      return storedOp(value, () => `op ${describe(opId)}`, opId);
    },
  });
}

/**
 * Turns a header entry into the item, reading its blob if it has one. A
 * blob can vanish between reading the header and reading the chunks (a
 * concurrent write replaced the value): then the header is read again. A
 * header that did not change while its chunks stayed incomplete is
 * damaged: chunks are complete before a header refers to them, and are
 * deleted only after it no longer does.
 */
async function materialize<T>(
  space: KvKeyspace,
  found: {
    readonly entry: Deno.KvEntryMaybe<unknown>;
    readonly read: (value: unknown, envelope: Envelope) => T;
  },
): Promise<Versioned<T> | undefined> {
  let entry = found.entry;
  for (let attempt = 0; attempt < MAX_READ_ATTEMPTS; attempt++) {
    if (entry.versionstamp === null) return undefined;
    const envelope = space.decodeEnvelope(entry);
    const value = Object.hasOwn(envelope, "v")
      ? envelope.v
      : await readBlob(space, { envelope, key: entry.key });
    if (value !== undefined) {
      return { value: found.read(value, envelope), rev: entry.versionstamp };
    }
    const before = entry.versionstamp;
    entry = await space.kv.get<unknown>(entry.key, { consistency: "strong" });
    if (entry.versionstamp === before) {
      throw new StorageError(
        `Cannot read ${
          space.name(entry.key)
        } as the chunks of its large value are incomplete: current value is blob ${
          describe(envelope.b)
        }`,
      );
    }
  }
  throw new StorageError(
    `Cannot read ${
      space.name(entry.key)
    } as the chunks of its large value kept vanishing: current value is ${MAX_READ_ATTEMPTS} attempts`,
    { retryable: true },
  );
}

/** How many entries a listing fetches per batch. */
function batchSize(limit: number): number {
  // One more than asked: the entry at the cursor itself is skipped.
  return limit === Infinity ? 500 : Math.min(limit + 1, KV_MAX_BATCH);
}

/** What {@linkcode listRecords} lists. */
export interface RecordQuery {
  /** The kind. */
  readonly kind: string;
  /** The paging cursor. */
  readonly after: string | undefined;
  /** Whether deleted records are listed. */
  readonly includeDeleted: boolean;
  /** The most records. */
  readonly limit: number;
}

/**
 * Lists a table's records in id order, from their headers. Keys order
 * records by id, except that ids cut at one prefix (see `_kv_keys.ts`) sit
 * together in hash order: such a group is read whole and sorted.
 *
 * @param space The store.
 * @param query The kind, cursor, deleted ones or not, and limit.
 * @returns The records.
 */
export async function listRecords(
  space: KvKeyspace,
  query: RecordQuery,
): Promise<Versioned<StoredRecord>[]> {
  const { kind, after, limit } = query;
  const result: Versioned<StoredRecord>[] = [];
  if (limit === 0) return result;
  const prefix = space.key("r", keyPart(kind, KIND_BUDGET));
  // A cursor in a group starts at the group, whose ids are filtered.
  const afterPart = after === undefined ? undefined : keyPart(after, ID_BUDGET);
  const start = afterPart === undefined
    ? undefined
    : hashedGroup(afterPart, ID_BUDGET) ?? afterPart;
  const source = space.kv.list<unknown>(
    start === undefined ? { prefix } : { prefix, start: [...prefix, start] },
    { consistency: "strong", batchSize: batchSize(limit) },
  )[Symbol.asyncIterator]();
  // Adds a listed record unless it is the cursor (or a group member before
  // it); whether the page is full.
  const take = (item: Versioned<StoredRecord> | undefined): boolean => {
    if (item === undefined) return false;
    if (after !== undefined && !(item.value.id > after)) return false;
    result.push(item);
    return result.length >= limit;
  };
  try {
    for await (const members of idGroups(source)) {
      const items = await Promise.all(
        members.map((entry) => listedRecord(space, { entry, query })),
      );
      const sorted = members.length === 1 ? items : items
        .filter((item) => item !== undefined)
        .sort((a, b) => compareKeys(a.value.id, b.value.id));
      if (sorted.some(take)) break;
    }
  } finally {
    await source.return?.();
  }
  return result;
}

/**
 * The entries of a listing of record headers, one at a time, or a group of
 * ids cut at one prefix at once. It reads ahead only to find where a group
 * ends: a page that ends on a single entry does not fetch the next batch.
 */
async function* idGroups(
  source: AsyncIterator<Deno.KvEntry<unknown>>,
): AsyncGenerator<Deno.KvEntry<unknown>[]> {
  let ahead: IteratorResult<Deno.KvEntry<unknown>> | undefined;
  for (;;) {
    const next = ahead ?? await source.next();
    ahead = undefined;
    if (next.done) return;
    const part = next.value.key.at(-1);
    const group = part instanceof Uint8Array
      ? hashedGroup(part, ID_BUDGET)
      : undefined;
    if (group === undefined) {
      yield [next.value];
      continue;
    }
    const members = [next.value];
    for (;;) {
      ahead = await source.next();
      if (ahead.done || !startsWith(ahead.value.key.at(-1), group)) break;
      members.push(ahead.value);
    }
    yield members;
  }
}

/**
 * A listed record header as the item, checked against its key; `undefined`
 * when it is deleted and not wanted, or vanished.
 */
async function listedRecord(
  space: KvKeyspace,
  listed: {
    readonly entry: Deno.KvEntry<unknown>;
    readonly query: RecordQuery;
  },
): Promise<Versioned<StoredRecord> | undefined> {
  const { entry, query: { kind, includeDeleted } } = listed;
  const item = () => space.name(entry.key);
  const part = entry.key.at(-1) as Uint8Array;
  const read = (value: unknown, envelope: Envelope): StoredRecord => {
    const record = recordOf(value, { envelope, item, kind });
    if (!partMatches(part, record.id, ID_BUDGET)) {
      throw misplaced(item, "id", record.id);
    }
    return record;
  };
  const envelope = space.decodeEnvelope(entry);
  if (Object.hasOwn(envelope, "v")) {
    const value = read(envelope.v, envelope);
    if (!includeDeleted && value.deleted) return undefined;
    return { value, rev: entry.versionstamp };
  }
  // A large record says whether it is deleted without its chunks.
  if (!includeDeleted && envelope.d === true) return undefined;
  const large = await materialize(space, { entry, read });
  if (large === undefined || (!includeDeleted && large.value.deleted)) {
    return undefined;
  }
  return large;
}

/**
 * Whether an op passes a filter.
 *
 * @param filter The filter.
 * @param op The op, or its ids and state.
 * @returns Whether it passes.
 */
function matches(
  filter: OpFilter,
  op: Pick<StoredOp, "opId" | "kind" | "id" | "state">,
): boolean {
  return (filter.id === undefined || op.id === filter.id) &&
    (filter.kinds === undefined || filter.kinds.has(op.kind)) &&
    (filter.states === undefined || filter.states.has(op.state)) &&
    (filter.after === undefined || op.opId > filter.after);
}

/** A listed op header with what merging and filtering need. */
interface OpEntry {
  readonly entry: Deno.KvEntry<unknown>;
  /** The op, or for a large op its id, kind, id and state only. */
  readonly op: StoredOp;
  readonly large: boolean;
}

/**
 * Lists ops in op-id order: from the headers, skipping other states, when
 * pending ops are asked (they have no by-state entries), else by merging
 * the state index's ranges.
 *
 * @param space The store.
 * @param query The filter, and the states to list.
 * @returns The ops.
 */
export async function listOpsInOrder(
  space: KvKeyspace,
  query: { readonly filter: OpFilter; readonly states: readonly OpState[] },
): Promise<Versioned<StoredOp>[]> {
  const { filter, states } = query;
  const cursor = filter.after === undefined
    ? undefined
    : encodeText(filter.after.slice(0, space.maxKeyLength));
  const prefixes = states.includes(UNINDEXED_STATE)
    ? [space.key("o")]
    : states.map((state) => space.key("s", state));
  const sources = prefixes.map((prefix) =>
    space.kv.list<unknown>(
      cursor === undefined
        ? { prefix }
        : { prefix, start: [...prefix, cursor] },
      { consistency: "strong", batchSize: batchSize(filter.limit) },
    )[Symbol.asyncIterator]()
  );
  const result: Versioned<StoredOp>[] = [];
  const next = (index: number) =>
    nextOpEntry(space, { source: sources[index]!, cursor });
  try {
    const heads = await Promise.all(sources.map((_, index) => next(index)));
    for (;;) {
      const best = earliest(heads);
      if (best < 0) break;
      const head = heads[best]!;
      heads[best] = await next(best);
      // Before a large op's chunks are read: its header has its ids and
      // state.
      if (!matches(filter, head.op)) continue;
      const item = head.large
        ? await materializeOp(space, head)
        : { value: head.op, rev: head.entry.versionstamp };
      if (item === undefined || !matches(filter, item.value)) continue;
      result.push(item);
      if (result.length >= filter.limit) break;
    }
  } finally {
    await Promise.all(sources.map((source) => source.return?.()));
  }
  return result;
}

/** The index of the head with the least op id; -1 when all ended. */
function earliest(heads: readonly (OpEntry | undefined)[]): number {
  let best = -1;
  for (let index = 0; index < heads.length; index++) {
    const head = heads[index];
    if (head === undefined) continue;
    if (best < 0 || head.op.opId < heads[best]!.op.opId) best = index;
  }
  return best;
}

/**
 * The next entry of a listing of op headers (or by-state copies of them),
 * skipping the one at the cursor, checked against its key.
 */
async function nextOpEntry(
  space: KvKeyspace,
  listing: {
    readonly source: AsyncIterator<Deno.KvEntry<unknown>>;
    readonly cursor: Uint8Array | undefined;
  },
): Promise<OpEntry | undefined> {
  const { source, cursor } = listing;
  for (;;) {
    const next = await source.next();
    if (next.done) return undefined;
    const entry = next.value;
    const part = entry.key.at(-1);
    if (cursor !== undefined && sameBytes(part, cursor)) continue;
    if (!(part instanceof Uint8Array)) {
      throw space.formatError(entry.key, part);
    }
    const item = () => space.name(entry.key);
    const envelope = space.decodeEnvelope(entry);
    if (Object.hasOwn(envelope, "v")) {
      const op = storedOp(envelope.v, item);
      if (!partMatches(part, op.opId, Infinity)) {
        throw misplaced(item, "opId", op.opId);
      }
      return { entry, op, large: false };
    }
    const { k: kind, i: id, t: state } = envelope;
    if (
      typeof kind !== "string" || typeof id !== "string" || !isOpState(state)
    ) {
      throw space.formatError(entry.key, envelope);
    }
    const op = { opId: decodeText(part), kind, id, state } as StoredOp;
    return { entry, op, large: true };
  }
}

/**
 * A large op listed from the headers or the state index. Its blob may
 * vanish under a concurrent write: then its header is read as it is now.
 */
async function materializeOp(
  space: KvKeyspace,
  head: OpEntry,
): Promise<Versioned<StoredOp> | undefined> {
  const { entry, op: { opId } } = head;
  const read = (value: unknown): StoredOp =>
    storedOp(value, () => `op ${describe(opId)}`, opId);
  const value = await readBlob(space, {
    envelope: space.decodeEnvelope(entry),
    key: entry.key,
  });
  if (value !== undefined) {
    return { value: read(value), rev: entry.versionstamp };
  }
  const fresh = await space.kv.get<unknown>(
    space.key("o", entry.key.at(-1)!),
    { consistency: "strong" },
  );
  return await materialize(space, { entry: fresh, read });
}

/**
 * Lists one record's ops (every table's when `kinds` is absent).
 *
 * @param space The store.
 * @param filter The filter, with the record's id.
 * @returns The ops.
 */
export async function listRecordOps(
  space: KvKeyspace,
  filter: OpFilter & { readonly id: string },
): Promise<Versioned<StoredOp>[]> {
  const candidates = await indexedOps(space, filter);
  const result: Versioned<StoredOp>[] = [];
  for (let start = 0; start < candidates.length;) {
    // Fetch about as many as still needed: the index may be a step behind
    // a concurrent write, so some may no longer match.
    const take = Math.min(
      candidates.length - start,
      Math.max(filter.limit - result.length, 1),
      KV_MAX_BATCH,
    );
    const ops = await getOpItems(
      space,
      candidates.slice(start, start + take),
    );
    start += take;
    for (const op of ops) {
      if (op === undefined || !matches(filter, op.value)) continue;
      result.push(op);
      if (result.length >= filter.limit) return result;
    }
  }
  return result;
}

/** The op ids a record's index entries list that pass a filter, sorted. */
async function indexedOps(
  space: KvKeyspace,
  filter: OpFilter & { readonly id: string },
): Promise<string[]> {
  const candidates: string[] = [];
  const entries = space.kv.list<unknown>(
    { prefix: space.key("i", hashText(filter.id)) },
    { consistency: "strong", batchSize: KV_MAX_BATCH },
  );
  for await (const entry of entries) {
    const indexed = space.decodeJson(entry);
    if (
      !Array.isArray(indexed) || indexed.length !== 4 ||
      !indexed.every((part) => typeof part === "string") ||
      !isOpState(indexed[3])
    ) {
      throw space.formatError(entry.key, indexed);
    }
    const [opId, kind, id, state] = indexed as [
      string,
      string,
      string,
      OpState,
    ];
    if (matches(filter, { opId, kind, id, state })) candidates.push(opId);
  }
  return candidates.sort(compareKeys);
}
