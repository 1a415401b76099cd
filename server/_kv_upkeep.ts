/**
 * The upkeep of the Deno KV server store (`kv.ts`): purging expired
 * idempotency entries, old tombstones (raising horizons) and orphaned blobs
 * and intents, and trimming a namespace's entries. Private to the store.
 *
 * Each removal is its own atomic operation, checked against the versions it
 * read: a purge never removes what a concurrent commit just rewrote, in this
 * or another process.
 *
 * @module
 */

import {
  namespacePart,
  type StoredClock,
  type StoredEntry,
  type StoredRecord,
} from "./_kv_keys.ts";
import { commitOp, type KvContext, rollForward } from "./_kv_commit.ts";
import type {
  ServerStorePurgeOptions,
  ServerStorePurgeResult,
  TrimIdempotencyOptions,
  TrimIdempotencyResult,
} from "./store.ts";

/**
 * How long a staged or superseded blob, or an unreferenced intent, is kept
 * before a purge removes it: far longer than any commit takes between
 * staging and its atomic operation, or a read between a pointer and its
 * chunks.
 */
export const ORPHAN_GRACE_MS = 60 * 60 * 1000;
/** The most orphan markers one purge looks at, and removes. */
const ORPHANS_SCANNED = 1000;
const ORPHANS_PER_PURGE = 100;
/** How often a removal is tried again when a concurrent write moved it. */
const MAX_REMOVE_ATTEMPTS = 5;

/** An orphan marker's value. */
interface Orphan {
  readonly at: number;
  /** The namespace part of an intent; `null` for a blob. */
  readonly intent: Uint8Array | null;
}

/**
 * Removes expired entries, old tombstones and old orphans.
 *
 * @param context The store.
 * @param options What to remove.
 * @returns How much was removed.
 */
export async function purge(
  context: KvContext,
  options: ServerStorePurgeOptions,
): Promise<ServerStorePurgeResult> {
  const limit = Math.floor(options.limit ?? Infinity);
  if (!(limit >= 1)) return { idempotency: 0, tombstones: 0 };
  const idempotency = options.idempotencyExpiredAt === undefined
    ? 0
    : await purgeEntries(context, options.idempotencyExpiredAt, limit);
  const tombstones = options.tombstonesUpdatedBefore === undefined
    ? 0
    : await purgeTombstones(context, options.tombstonesUpdatedBefore, limit);
  await purgeOrphans(context, Date.now() - ORPHAN_GRACE_MS);
  return { idempotency, tombstones };
}

async function purgeEntries(
  context: KvContext,
  expiredAt: number,
  limit: number,
): Promise<number> {
  const { kv, keys } = context;
  const prefix = keys.expiries();
  const found: { expiresAt: number; ns: Uint8Array; key: Uint8Array }[] = [];
  for await (const entry of kv.list({ prefix }, { batchSize: 500 })) {
    const expiresAt = entry.key[prefix.length] as number;
    if (expiresAt > expiredAt || found.length >= limit) break;
    found.push({
      expiresAt,
      ns: entry.key[prefix.length + 1] as Uint8Array,
      key: entry.key[prefix.length + 2] as Uint8Array,
    });
  }
  let removed = 0;
  for (const { expiresAt, ns, key } of found) {
    if (await removeEntry(context, ns, key, expiresAt)) removed++;
  }
  return removed;
}

/**
 * Removes one idempotency entry with its index keys, unless it was
 * rewritten with another `expiresAt` meanwhile.
 *
 * @returns Whether an entry was removed.
 */
async function removeEntry(
  context: KvContext,
  ns: Uint8Array,
  key: Uint8Array,
  expiresAt: number,
): Promise<boolean> {
  const { kv, keys } = context;
  for (let attempt = 0; attempt < MAX_REMOVE_ATTEMPTS; attempt++) {
    const entry = await kv.get<StoredEntry>(keys.entry(ns, key));
    const op = kv.atomic().check(entry)
      .delete(keys.byExpiry(ns, expiresAt, key))
      .delete(keys.expiry(expiresAt, ns, key));
    const live = entry.value !== null && entry.value.expiresAt === expiresAt;
    if (live) {
      op.delete(entry.key);
      if (entry.value!.blob !== null) {
        op.set(keys.orphan(entry.value!.blob.id), {
          at: Date.now(),
          intent: null,
        });
      }
    }
    if ((await commitOp(op)).ok) return live;
  }
  return false;
}

async function purgeTombstones(
  context: KvContext,
  before: number,
  limit: number,
): Promise<number> {
  const { kv, keys } = context;
  const prefix = keys.tombstones();
  const found: {
    at: number;
    ns: Uint8Array;
    kind: Uint8Array;
    id: Uint8Array;
  }[] = [];
  for await (const entry of kv.list({ prefix }, { batchSize: 500 })) {
    const at = entry.key[prefix.length] as number;
    if (at >= before) break;
    // Past the limit, only the tombstones of the last one's millisecond, so
    // that the horizon stays exact.
    if (found.length >= limit && at !== found.at(-1)!.at) break;
    found.push({
      at,
      ns: entry.key[prefix.length + 1] as Uint8Array,
      kind: entry.key[prefix.length + 2] as Uint8Array,
      id: entry.key[prefix.length + 3] as Uint8Array,
    });
  }
  let removed = 0;
  for (const tombstone of found) {
    if (await removeTombstone(context, tombstone)) removed++;
  }
  return removed;
}

/**
 * Removes one tombstone, raising its kind's horizon in the same atomic
 * operation, unless a commit rewrote the record meanwhile.
 */
async function removeTombstone(
  context: KvContext,
  found: { at: number; ns: Uint8Array; kind: Uint8Array; id: Uint8Array },
): Promise<boolean> {
  const { kv, keys } = context;
  const { at, ns, kind, id } = found;
  for (let attempt = 0; attempt < MAX_REMOVE_ATTEMPTS; attempt++) {
    const [record, horizon] = await kv.getMany<[StoredRecord, number]>([
      keys.record(ns, kind, id),
      keys.horizon(ns, kind),
    ]);
    const op = kv.atomic().check(record).check(horizon)
      .delete(keys.tombstone(at, ns, kind, id));
    const live = record.value !== null && record.value.deletedAt !== null &&
      record.value.updatedAt === at;
    if (live) {
      op.delete(record.key).delete(keys.index(ns, kind, at, id));
      op.set(horizon.key, Math.max(horizon.value ?? -Infinity, at + 1));
      if (record.value!.blob !== null) {
        op.set(keys.orphan(record.value!.blob.id), {
          at: Date.now(),
          intent: null,
        });
      }
    }
    if ((await commitOp(op)).ok) return live;
  }
  return false;
}

/** Removes blobs and intents that nothing has referenced since `before`. */
async function purgeOrphans(
  context: KvContext,
  before: number,
): Promise<void> {
  const { kv, keys } = context;
  const prefix = keys.orphans();
  const old: Deno.KvEntry<Orphan>[] = [];
  for await (
    const entry of kv.list<Orphan>({ prefix }, { limit: ORPHANS_SCANNED })
  ) {
    if (entry.value.at < before) old.push(entry);
    if (old.length >= ORPHANS_PER_PURGE) break;
  }
  for (const marker of old) {
    const id = marker.key[prefix.length] as string;
    const ns = marker.value.intent;
    if (ns !== null) {
      const clock = await kv.get<StoredClock>(keys.clock(ns));
      if (clock.value?.intent?.id === id) {
        // A commit that took the clock and was never finished: finish it.
        await rollForward(context, ns, clock);
        continue;
      }
    }
    const parts = ns === null ? keys.chunksOf(id) : keys.intentOf(ns, id);
    const op = kv.atomic().check(marker).delete(marker.key);
    let count = 0;
    for await (const part of kv.list({ prefix: parts })) {
      op.delete(part.key);
      // KV caps an atomic operation at 1,000 mutations; the rest goes with
      // the next purge (the marker then stays).
      if (++count >= 900) break;
    }
    await commitOp(op);
  }
}

/**
 * Counts a namespace's entries and removes the oldest beyond `keep`.
 *
 * @param context The store.
 * @param namespace The principal.
 * @param options How many to keep, and which may go.
 * @returns What is left.
 */
export async function trimEntries(
  context: KvContext,
  namespace: string,
  options: TrimIdempotencyOptions,
): Promise<TrimIdempotencyResult> {
  const { kv, keys } = context;
  const ns = namespacePart(namespace);
  const prefix = keys.byExpiryOf(ns);
  const all: { expiresAt: number; key: Uint8Array }[] = [];
  for await (const entry of kv.list({ prefix }, { batchSize: 1000 })) {
    all.push({
      expiresAt: entry.key[prefix.length] as number,
      key: entry.key[prefix.length + 1] as Uint8Array,
    });
  }
  let excess = all.length - options.keep;
  let count = all.length;
  const left: { expiresAt: number }[] = [];
  for (const item of all) {
    if (excess > 0 && item.expiresAt <= options.expiresAtOrBefore) {
      excess--;
      if (await removeEntry(context, ns, item.key, item.expiresAt)) {
        count--;
        continue;
      }
    }
    left.push(item);
  }
  return { count, oldestExpiresAt: left[0]?.expiresAt ?? null };
}
