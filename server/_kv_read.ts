/**
 * The reads of the Deno KV server store (`kv.ts`): one record, one
 * idempotency entry, and a page of the pull index, each after any commit
 * in progress on the namespace's clock was rolled forward (`_kv_commit.ts`).
 * Private to the store.
 *
 * @module
 */

import type { JsonObject, JsonValue } from "../src/json.ts";
import {
  type BlobRef,
  boundedPart,
  ID_BUDGET,
  namespacePart,
  orderedPart,
  type StoredClock,
  type StoredEntry,
  type StoredRecord,
} from "./_kv_keys.ts";
import { type KvContext, rollForward } from "./_kv_commit.ts";
import type {
  IdempotencyEntry,
  ListServerRecordsOptions,
  ListServerRecordsResult,
  ServerRecord,
} from "./store.ts";

/** How often a read starts over when a blob it pointed at went away. */
const MAX_READ_ATTEMPTS = 8;

/** A blob a read pointed at was superseded and removed meanwhile. */
class BlobGoneError extends Error {}

/**
 * Reads a key together with the namespace's clock, rolling forward a
 * commit in progress first, so the read never sees half of one.
 */
async function readSettled<T>(
  context: KvContext,
  ns: Uint8Array,
  key: Deno.KvKey,
): Promise<T | null> {
  for (;;) {
    const [clock, entry] = await context.kv.getMany<[StoredClock, T]>([
      context.keys.clock(ns),
      key,
    ]);
    if ((clock.value?.intent ?? null) === null) return entry.value;
    await rollForward(context, ns, clock);
  }
}

/** Retries a read whose blob went away under it. */
async function retried<T>(read: () => Promise<T>): Promise<T> {
  for (let attempt = 1;; attempt++) {
    try {
      return await read();
    } catch (error) {
      if (!(error instanceof BlobGoneError) || attempt >= MAX_READ_ATTEMPTS) {
        throw error;
      }
    }
  }
}

/** Reads one record. */
export function readRecord(
  context: KvContext,
  namespace: string,
  kind: string,
  id: string,
): Promise<ServerRecord | null> {
  const ns = namespacePart(namespace);
  const key = context.keys.record(ns, orderedPart(kind), orderedPart(id));
  return retried(async () => {
    const stored = await readSettled<StoredRecord>(context, ns, key);
    return stored === null ? null : await toRecord(context, stored);
  });
}

/** Reads one idempotency entry. */
export function readEntry(
  context: KvContext,
  namespace: string,
  key: string,
): Promise<IdempotencyEntry | null> {
  const ns = namespacePart(namespace);
  const kvKey = context.keys.entry(
    ns,
    boundedPart(key, ID_BUDGET, "idempotency key"),
  );
  return retried(async () => {
    const stored = await readSettled<StoredEntry>(context, ns, kvKey);
    return stored === null ? null : await toEntry(context, stored);
  });
}

/** A stored entry as the contract returns it: a fresh copy. */
async function toEntry(
  context: KvContext,
  stored: StoredEntry,
): Promise<IdempotencyEntry> {
  const body = stored.blob === null
    ? stored.body!
    : await readBlob(context, stored.blob);
  return {
    key: stored.key,
    fingerprint: stored.fingerprint,
    status: stored.status,
    body: JSON.parse(new TextDecoder().decode(body)) as JsonValue,
    expiresAt: stored.expiresAt,
  };
}

/**
 * Reads many keys of one namespace, nine to a `getMany()` with the clock,
 * each nine settled as `readSettled()` settles one.
 */
async function readSettledMany<T>(
  context: KvContext,
  ns: Uint8Array,
  keys: readonly Deno.KvKey[],
): Promise<(T | null)[]> {
  const out: (T | null)[] = [];
  for (let start = 0; start < keys.length; start += 9) {
    const chunk = keys.slice(start, start + 9);
    for (;;) {
      const [clock, ...entries] = await context.kv.getMany<unknown[]>([
        context.keys.clock(ns),
        ...chunk,
      ]);
      const settled = clock as Deno.KvEntryMaybe<StoredClock>;
      if ((settled.value?.intent ?? null) === null) {
        for (const entry of entries) out.push(entry.value as T | null);
        break;
      }
      await rollForward(context, ns, settled);
    }
  }
  return out;
}

/**
 * Reads many records of one namespace (`getRecords()`): ten keys to a KV
 * call instead of one. A record whose blob went away meanwhile is read
 * again on its own.
 */
export async function readRecords(
  context: KvContext,
  namespace: string,
  refs: readonly { readonly kind: string; readonly id: string }[],
): Promise<(ServerRecord | null)[]> {
  const ns = namespacePart(namespace);
  const keys = refs.map(({ kind, id }) =>
    context.keys.record(ns, orderedPart(kind), orderedPart(id))
  );
  const stored = await readSettledMany<StoredRecord>(context, ns, keys);
  return await Promise.all(stored.map(async (record, index) => {
    if (record === null) return null;
    try {
      return await toRecord(context, record);
    } catch (error) {
      if (!(error instanceof BlobGoneError)) throw error;
      const { kind, id } = refs[index]!;
      return await readRecord(context, namespace, kind, id);
    }
  }));
}

/**
 * Reads many idempotency entries of one namespace (`getIdempotencies()`),
 * ten keys to a KV call. An entry whose blob went away meanwhile is read
 * again on its own.
 */
export async function readEntries(
  context: KvContext,
  namespace: string,
  keys: readonly string[],
): Promise<(IdempotencyEntry | null)[]> {
  const ns = namespacePart(namespace);
  const kvKeys = keys.map((key) =>
    context.keys.entry(ns, boundedPart(key, ID_BUDGET, "idempotency key"))
  );
  const stored = await readSettledMany<StoredEntry>(context, ns, kvKeys);
  return await Promise.all(stored.map(async (entry, index) => {
    if (entry === null) return null;
    try {
      return await toEntry(context, entry);
    } catch (error) {
      if (!(error instanceof BlobGoneError)) throw error;
      return await readEntry(context, namespace, keys[index]!);
    }
  }));
}

/**
 * Reads a page of the pull index, then each record it names. The index
 * entries carry sizes, so `maxBytes` is kept without reading the records
 * left out. An index entry whose record moved on (committed meanwhile) is
 * skipped: that record's new version lands after every entry listed here,
 * since a commit lands after everything visible before it. The horizon is
 * read after the page: a purge between them can only raise it, which makes
 * the answer `410` at worst, never a page that silently lacks a tombstone.
 */
export function listPage(
  context: KvContext,
  namespace: string,
  kind: string,
  options: ListServerRecordsOptions,
): Promise<ListServerRecordsResult> {
  const { kv, keys } = context;
  const ns = namespacePart(namespace);
  const kindPart = orderedPart(kind);
  const prefix = keys.indexOf(ns, kindPart);
  const includeDeleted = options.includeDeleted ?? true;
  const maxBytes = options.maxBytes ?? Infinity;
  const { since, afterId } = options;
  const afterPart = since !== undefined && afterId !== undefined
    ? orderedPart(afterId)
    : null;
  return retried(async () => {
    for (;;) {
      const clock = await kv.get<StoredClock>(keys.clock(ns));
      if ((clock.value?.intent ?? null) === null) break;
      await rollForward(context, ns, clock);
    }
    const selector: Deno.KvListSelector = since === undefined ? { prefix } : {
      prefix,
      start: afterPart === null
        ? [...prefix, since]
        : [...prefix, since, afterPart],
    };
    const records: ServerRecord[] = [];
    let bytes = 0;
    let truncated = false;
    let pending: { key: Deno.KvKey; size: number; at: number }[] = [];
    const flush = async () => {
      const stored = await kv.getMany<StoredRecord[]>(
        pending.map((item) => item.key),
      );
      for (const [index, entry] of stored.entries()) {
        const item = pending[index]!;
        if (entry.value === null || entry.value.updatedAt !== item.at) {
          bytes -= item.size;
          continue;
        }
        records.push(await toRecord(context, entry.value));
      }
      pending = [];
    };
    const batchSize = Math.min(Math.max(options.limit + 1, 10), 500);
    for await (
      const entry of kv.list<{ size: number; deleted: boolean }>(selector, {
        batchSize,
      })
    ) {
      const at = entry.key[prefix.length] as number;
      const idPart = entry.key[prefix.length + 1] as Uint8Array;
      if (
        afterPart !== null && at === since && sameBytes(idPart, afterPart)
      ) {
        continue;
      }
      if (!includeDeleted && entry.value.deleted) continue;
      const size = entry.value.size;
      if (records.length + pending.length > 0 && bytes + size > maxBytes) {
        // Records that moved on free their bytes: count what is kept.
        await flush();
        if (records.length > 0 && bytes + size > maxBytes) {
          truncated = true;
          break;
        }
      }
      bytes += size;
      pending.push({
        key: keys.record(ns, kindPart, idPart),
        size,
        at,
      });
      if (
        pending.length === 10 ||
        records.length + pending.length >= options.limit
      ) {
        await flush();
        if (records.length >= options.limit) break;
      }
    }
    if (pending.length > 0) await flush();
    const horizon = await kv.get<number>(keys.horizon(ns, kindPart));
    return { records, horizon: horizon.value, truncated };
  });
}

/** A stored record as the contract returns it: a fresh copy. */
async function toRecord(
  context: KvContext,
  stored: StoredRecord,
): Promise<ServerRecord> {
  const bytes = stored.blob === null
    ? stored.data!
    : await readBlob(context, stored.blob);
  return {
    kind: stored.kind,
    id: stored.id,
    updatedAt: stored.updatedAt,
    deletedAt: stored.deletedAt,
    data: JSON.parse(new TextDecoder().decode(bytes)) as JsonObject,
  };
}

/**
 * Reads a blob's chunks.
 *
 * @throws {BlobGoneError} When a chunk is missing: the blob was superseded
 * and purged after the pointer was read.
 */
async function readBlob(
  context: KvContext,
  blob: BlobRef,
): Promise<Uint8Array> {
  const keys: Deno.KvKey[] = [];
  for (let index = 0; index < blob.chunks; index++) {
    keys.push(context.keys.chunk(blob.id, index));
  }
  const chunks: Uint8Array[] = [];
  let length = 0;
  for (let start = 0; start < keys.length; start += 10) {
    const entries = await context.kv.getMany<Uint8Array[]>(
      keys.slice(start, start + 10),
    );
    for (const entry of entries) {
      if (entry.value === null) throw new BlobGoneError();
      chunks.push(entry.value);
      length += entry.value.length;
    }
  }
  const out = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let index = 0; index < a.length; index++) {
    if (a[index] !== b[index]) return false;
  }
  return true;
}
