/**
 * A commit of the Deno KV server store (`kv.ts`): the writes of one
 * namespace planned into KV mutations, large values staged as blobs, and
 * the mutations applied in one atomic operation guarded by the namespace's
 * clock, or, when they exceed one atomic operation, as an intent that any
 * reader or writer of the namespace rolls forward. Private to the store.
 *
 * ## Why a large commit stays all-or-nothing
 *
 * KV caps an atomic operation at 1,000 mutations, 80 KiB of keys and
 * 800 KiB. A commit past that is cut into parts, each staged under a fresh
 * intent id where nothing reads it; then one guarded atomic operation takes
 * the clock (checks its version, sets it with the intent). From then on the
 * commit is decided: every reader and writer of the namespace first sees
 * the intent on the clock and applies its remaining parts (idempotent sets
 * and deletes, each part in its own atomic operation checked against the
 * clock's version, deleting the part) before it reads, and the last step
 * clears the intent. A crash leaves the intent on the clock, so the next
 * reader finishes it. Parts hold the records in `(updatedAt, id)` order, so
 * a pull listing concurrently sees a prefix of the commit in keyset order:
 * what it has not seen yet lands after its cursor.
 *
 * @module
 */

import { StaleClockError } from "./store.ts";
import { changeMutations } from "./_kv_changes.ts";
import type { IdempotencyEntry, ServerRecord, ServerWrite } from "./store.ts";
import {
  type BlobRef,
  boundedPart,
  ID_BUDGET,
  KIND_BUDGET,
  type KvKeys,
  namespacePart,
  type StoredClock,
  type StoredEntry,
  type StoredRecord,
} from "./_kv_keys.ts";

/** What the store's helpers share. */
export interface KvContext {
  /** The database. */
  readonly kv: Deno.Kv;
  /** The key builders. */
  readonly keys: KvKeys;
  /** This store object's id, in the change log (`_kv_changes.ts`). */
  readonly origin: string;
}

/** One KV mutation, as planned and as an intent part keeps it. */
export type Mutation =
  | {
    readonly type: "set";
    /** The idempotency key. */
    readonly key: Deno.KvKey;
    readonly value: unknown;
    readonly expireIn?: number;
  }
  | { readonly type: "delete"; readonly key: Deno.KvKey };

/** A value at most this large (UTF-8 bytes) is kept inline. */
export const INLINE_BYTES = 16 * 1024;
/** The size of one blob chunk: KV caps a value at 64 KiB. */
export const CHUNK_BYTES = 60_000;
/** Chunks staged per atomic operation: within KV's 800 KiB. */
const CHUNKS_PER_ATOMIC = 12;
/** The most a planned atomic operation may hold, with room to spare. */
const ATOMIC_MUTATIONS = 950;
const ATOMIC_KEY_BYTES = 64 * 1024;
const ATOMIC_BYTES = 640 * 1024;
/** The most an intent part may weigh: it is stored as one KV value. */
const PART_BYTES = 48 * 1024;
/** How long past its `expiresAt` KV keeps an entry, if nobody purges it. */
const EXPIRE_GRACE_MS = 24 * 60 * 60 * 1000;
/** The largest `expireIn` given to KV (a timer delay's range). */
const MAX_EXPIRE_IN_MS = 2 ** 31 - 1;

/**
 * Commits the writes of one namespace.
 *
 * @param context The store.
 * @param namespace The namespace of every write.
 * @param writes The writes, checked.
 * @param expect The guard's clock version, or `undefined` for an unguarded
 * commit (which retries on its own).
 * @throws {StaleClockError} When the guarded clock moved; nothing written.
 */
export async function commitNamespace(
  context: KvContext,
  namespace: string,
  writes: readonly ServerWrite[],
  expect: { version: string | null } | undefined,
): Promise<void> {
  for (;;) {
    const ns = namespacePart(namespace);
    const clockEntry = await readSettledClock(context, ns);
    if (expect !== undefined && clockEntry.versionstamp !== expect.version) {
      throw new StaleClockError(namespace, expect.version);
    }
    const plan = await planCommit(context, ns, writes, clockEntry.value);
    // Last, so that a large commit tells of itself once it is all applied.
    const logged = changeMutations(context, context.origin, namespace, writes);
    if (logged.length > 0) plan.groups.push(logged);
    const done = await applyPlan(context, ns, plan, clockEntry.versionstamp);
    if (done) return;
    if (expect !== undefined) {
      throw new StaleClockError(namespace, expect.version);
    }
  }
}

/** The writes of one commit as KV mutations, with what they staged. */
interface Plan {
  /** Record groups in keyset order, then entries; then the clock. */
  readonly groups: Mutation[][];
  readonly clock: StoredClock;
  /** Blobs staged for this commit, removed again if it fails. */
  readonly staged: BlobRef[];
}

/** Reads a namespace's clock, after rolling forward any intent on it. */
export async function readSettledClock(
  context: KvContext,
  ns: Uint8Array,
): Promise<Deno.KvEntryMaybe<StoredClock>> {
  for (;;) {
    const entry = await context.kv.get<StoredClock>(context.keys.clock(ns));
    if ((entry.value?.intent ?? null) === null) return entry;
    await rollForward(context, ns, entry);
  }
}

/**
 * Applies what is left of the intent on a clock entry, then clears it.
 * Safe to run by several callers at once: each part is applied only while
 * the clock still has the entry's version, and deleted as it is applied.
 *
 * @param context The store.
 * @param ns The namespace's part.
 * @param clock The clock entry holding the intent.
 */
export async function rollForward(
  context: KvContext,
  ns: Uint8Array,
  clock: Deno.KvEntryMaybe<StoredClock>,
): Promise<void> {
  const { kv, keys } = context;
  const intent = clock.value?.intent;
  if (intent === undefined || intent === null) return;
  for (let part = 0; part < intent.parts; part++) {
    const key = keys.intent(ns, intent.id, part);
    const entry = await kv.get<Mutation[]>(key);
    if (entry.value === null) continue;
    const op = kv.atomic().check(clock);
    addMutations(op, entry.value);
    op.delete(key);
    if (!(await commitOp(op)).ok) return;
  }
  await commitOp(
    kv.atomic().check(clock).set(keys.clock(ns), {
      ...clock.value!,
      intent: null,
    }).delete(keys.orphan(intent.id)),
  );
}

/** Reads what the writes replace and turns them into mutations. */
async function planCommit(
  context: KvContext,
  ns: Uint8Array,
  writes: readonly ServerWrite[],
  current: StoredClock | null,
): Promise<Plan> {
  const { kv, keys } = context;
  // The last write of a record or key wins.
  const records = new Map<string, ServerRecord>();
  const entries = new Map<string, IdempotencyEntry>();
  for (const write of writes) {
    if (write.type === "record") {
      records.set(`${write.record.kind}\u0000${write.record.id}`, write.record);
    } else {
      entries.set(write.entry.key, write.entry);
    }
  }
  const sorted = [...records.values()].sort(compareRecords);
  const recordParts = sorted.map((record) => ({
    kind: boundedPart(record.kind, KIND_BUDGET, "kind"),
    id: boundedPart(record.id, ID_BUDGET, "record id"),
  }));
  const recordKeys = recordParts.map(({ kind, id }) =>
    keys.record(ns, kind, id)
  );
  const entryList = [...entries.values()];
  const entryParts = entryList.map((entry) =>
    boundedPart(entry.key, ID_BUDGET, "idempotency key")
  );
  const entryKeys = entryParts.map((key) => keys.entry(ns, key));
  const oldRecords = await getAll<StoredRecord>(kv, recordKeys);
  const oldEntries = await getAll<StoredEntry>(kv, entryKeys);
  const staged: BlobRef[] = [];
  const now = Date.now();
  const groups: Mutation[][] = [];
  try {
    for (const [index, record] of sorted.entries()) {
      const { kind, id } = recordParts[index]!;
      const text = JSON.stringify(record.data);
      const bytes = new TextEncoder().encode(text);
      const blob = bytes.length > INLINE_BYTES
        ? await stageBlob(context, bytes, staged)
        : null;
      const stored: StoredRecord = {
        kind: record.kind,
        id: record.id,
        updatedAt: record.updatedAt,
        deletedAt: record.deletedAt,
        size: bytes.length,
        data: blob === null ? bytes : null,
        blob,
      };
      const old = oldRecords[index] ?? null;
      const group: Mutation[] = [
        { type: "set", key: recordKeys[index]!, value: stored },
        {
          type: "set",
          key: keys.index(ns, kind, record.updatedAt, id),
          value: { size: bytes.length, deleted: record.deletedAt !== null },
        },
      ];
      if (old !== null && old.updatedAt !== record.updatedAt) {
        group.push({
          type: "delete",
          key: keys.index(ns, kind, old.updatedAt, id),
        });
      }
      if (
        old !== null && old.deletedAt !== null &&
        (record.deletedAt === null || old.updatedAt !== record.updatedAt)
      ) {
        group.push({
          type: "delete",
          key: keys.tombstone(old.updatedAt, ns, kind, id),
        });
      }
      if (record.deletedAt !== null) {
        group.push({
          type: "set",
          key: keys.tombstone(record.updatedAt, ns, kind, id),
          value: null,
        });
      }
      if (blob !== null) {
        group.push({ type: "delete", key: keys.orphan(blob.id) });
      }
      const oldBlob = old?.blob ?? null;
      if (oldBlob !== null) {
        // Superseded: a reader may still hold the old pointer, so the purge
        // removes it after a grace period, not this commit.
        group.push({
          type: "set",
          key: keys.orphan(oldBlob.id),
          value: { at: now, intent: null },
        });
      }
      groups.push(group);
    }
    for (const [index, entry] of entryList.entries()) {
      const key = entryParts[index]!;
      const text = JSON.stringify(entry.body) as string | undefined;
      if (text === undefined) {
        throw new TypeError(
          `Cannot commit idempotency entry as its body is not JSON: current value is ${
            JSON.stringify(entry.key)
          }`,
        );
      }
      const bytes = new TextEncoder().encode(text);
      const blob = bytes.length > INLINE_BYTES
        ? await stageBlob(context, bytes, staged)
        : null;
      const stored: StoredEntry = {
        key: entry.key,
        fingerprint: entry.fingerprint,
        status: entry.status,
        expiresAt: entry.expiresAt,
        body: blob === null ? bytes : null,
        blob,
      };
      // A backstop for a store nobody purges: KV drops the entry a day
      // after it stopped counting (expireIn is never earlier than asked).
      // Never capped: an expireIn shorter than asked would drop an entry
      // that still counts, so past the largest delay there is none.
      const expireIn = entry.expiresAt - now + EXPIRE_GRACE_MS;
      const expire = expireIn > EXPIRE_GRACE_MS && expireIn <= MAX_EXPIRE_IN_MS
        ? { expireIn }
        : {};
      const old = oldEntries[index] ?? null;
      const group: Mutation[] = [
        { type: "set", key: entryKeys[index]!, value: stored, ...expire },
        {
          type: "set",
          key: keys.byExpiry(ns, entry.expiresAt, key),
          value: null,
          ...expire,
        },
        {
          type: "set",
          key: keys.expiry(entry.expiresAt, ns, key),
          value: null,
          ...expire,
        },
      ];
      if (old !== null && old.expiresAt !== entry.expiresAt) {
        group.push(
          { type: "delete", key: keys.byExpiry(ns, old.expiresAt, key) },
          { type: "delete", key: keys.expiry(old.expiresAt, ns, key) },
        );
      }
      if (blob !== null) {
        group.push({ type: "delete", key: keys.orphan(blob.id) });
      }
      const oldBlob = old?.blob ?? null;
      if (oldBlob !== null) {
        group.push({
          type: "set",
          key: keys.orphan(oldBlob.id),
          value: { at: now, intent: null },
        });
      }
      groups.push(group);
    }
  } catch (error) {
    await removeBlobs(context, staged);
    throw error;
  }
  let updatedAt = current?.updatedAt ?? null;
  let id = current?.id ?? null;
  for (const record of sorted) {
    if (
      updatedAt === null || record.updatedAt > updatedAt ||
      (record.updatedAt === updatedAt && id !== null && record.id > id)
    ) {
      updatedAt = record.updatedAt;
      id = record.id;
    }
  }
  return { groups, clock: { updatedAt, id, intent: null }, staged };
}

/**
 * Applies a plan guarded by the clock's version: in one atomic operation
 * when it fits, else as an intent (see the module doc).
 *
 * @returns `false` when the clock moved; nothing was written.
 */
async function applyPlan(
  context: KvContext,
  ns: Uint8Array,
  plan: Plan,
  version: string | null,
): Promise<boolean> {
  const { kv, keys } = context;
  const clockKey = keys.clock(ns);
  const all = plan.groups.flat();
  const single = weigh(all);
  if (
    single.mutations + 1 <= ATOMIC_MUTATIONS &&
    single.keyBytes <= ATOMIC_KEY_BYTES && single.bytes <= ATOMIC_BYTES
  ) {
    const op = kv.atomic().check({ key: clockKey, versionstamp: version });
    addMutations(op, all);
    op.set(clockKey, plan.clock);
    if ((await commitOp(op)).ok) return true;
    await removeBlobs(context, plan.staged);
    return false;
  }
  // Parts: whole groups (a record's keys together), in keyset order.
  const parts: Mutation[][] = [];
  let part: Mutation[] = [];
  let weight = 0;
  for (const group of plan.groups) {
    const size = weigh(group).bytes;
    if (part.length > 0 && weight + size > PART_BYTES) {
      parts.push(part);
      part = [];
      weight = 0;
    }
    part.push(...group);
    weight += size;
  }
  if (part.length > 0) parts.push(part);
  const intent = { id: crypto.randomUUID(), parts: parts.length };
  await commitOp(
    kv.atomic().set(keys.orphan(intent.id), { at: Date.now(), intent: ns }),
  );
  for (let start = 0; start < parts.length; start += CHUNKS_PER_ATOMIC) {
    const op = kv.atomic();
    for (let index = start; index < parts.length; index++) {
      if (index >= start + CHUNKS_PER_ATOMIC) break;
      op.set(keys.intent(ns, intent.id, index), parts[index]);
    }
    await commitOrThrow(op, "stage commit");
  }
  const taken = await commitOp(
    kv.atomic()
      .check({ key: clockKey, versionstamp: version })
      .set(clockKey, { ...plan.clock, intent }),
  );
  if (!taken.ok) {
    await removeIntent(context, ns, intent.id, parts.length);
    await removeBlobs(context, plan.staged);
    return false;
  }
  const entry = await kv.get<StoredClock>(clockKey);
  if (entry.versionstamp === taken.versionstamp) {
    await rollForward(context, ns, entry);
  }
  // Else another caller rolled it forward already, or is doing so: reads
  // roll it forward before they look, so the commit is visible either way.
  await readSettledClock(context, ns);
  return true;
}

/** Stages a large value as chunks no read can reach until a commit points at them. */
async function stageBlob(
  context: KvContext,
  bytes: Uint8Array,
  staged: BlobRef[],
): Promise<BlobRef> {
  const { kv, keys } = context;
  const blob: BlobRef = {
    id: crypto.randomUUID(),
    chunks: Math.ceil(bytes.length / CHUNK_BYTES),
  };
  staged.push(blob);
  // The marker first: a crash from here on leaves an orphan that the purge
  // finds and removes.
  await commitOp(
    kv.atomic().set(keys.orphan(blob.id), { at: Date.now(), intent: null }),
  );
  for (let start = 0; start < blob.chunks; start += CHUNKS_PER_ATOMIC) {
    const op = kv.atomic();
    const end = Math.min(blob.chunks, start + CHUNKS_PER_ATOMIC);
    for (let index = start; index < end; index++) {
      op.set(
        keys.chunk(blob.id, index),
        bytes.subarray(index * CHUNK_BYTES, (index + 1) * CHUNK_BYTES),
      );
    }
    await commitOrThrow(op, "stage blob");
  }
  return blob;
}

/**
 * Removes blobs and their markers.
 *
 * @param context The store.
 * @param blobs The blobs.
 */
export async function removeBlobs(
  context: KvContext,
  blobs: readonly BlobRef[],
): Promise<void> {
  const { kv, keys } = context;
  for (const blob of blobs) {
    for (let start = 0; start < blob.chunks; start += ATOMIC_MUTATIONS) {
      const op = kv.atomic();
      const end = Math.min(blob.chunks, start + ATOMIC_MUTATIONS);
      for (let index = start; index < end; index++) {
        op.delete(keys.chunk(blob.id, index));
      }
      await commitOp(op);
    }
    await commitOp(kv.atomic().delete(keys.orphan(blob.id)));
  }
}

/** Removes the staged parts of an intent that never took the clock. */
export async function removeIntent(
  context: KvContext,
  ns: Uint8Array,
  id: string,
  parts: number,
): Promise<void> {
  const { kv, keys } = context;
  for (let start = 0; start < parts; start += ATOMIC_MUTATIONS) {
    const op = kv.atomic();
    for (let index = start; index < Math.min(parts, start + 1000); index++) {
      op.delete(keys.intent(ns, id, index));
    }
    await commitOp(op);
  }
  await commitOp(kv.atomic().delete(keys.orphan(id)));
}

/** How often an atomic operation is tried again while KV's file is locked. */
const MAX_LOCKED_ATTEMPTS = 100;

/**
 * Commits an atomic operation, trying again while a local KV file is locked
 * by another process: KV on a local file is SQLite, and two processes
 * writing it at once get `database is locked` (nothing was applied) where
 * Deno Deploy's KV would just order them.
 *
 * @param op The operation; KV lets one operation commit again.
 * @returns Its result.
 */
export async function commitOp(
  op: Deno.AtomicOperation,
): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
  for (let attempt = 1;; attempt++) {
    try {
      return await op.commit();
    } catch (error) {
      if (!isLocked(error) || attempt >= MAX_LOCKED_ATTEMPTS) throw error;
      await new Promise((resolve) =>
        setTimeout(resolve, 1 + Math.random() * Math.min(attempt, 20))
      );
    }
  }
}

function isLocked(error: unknown): boolean {
  return error instanceof Error && /database is locked/.test(error.message);
}

/** Reads many keys, ten at a time (KV's `getMany()` cap). */
export async function getAll<T>(
  kv: Deno.Kv,
  keys: readonly Deno.KvKey[],
): Promise<(T | null)[]> {
  const out: (T | null)[] = [];
  for (let start = 0; start < keys.length; start += 10) {
    const entries = await kv.getMany<T[]>(keys.slice(start, start + 10));
    for (const entry of entries) out.push(entry.value as T | null);
  }
  return out;
}

function addMutations(op: Deno.AtomicOperation, mutations: Mutation[]): void {
  for (const mutation of mutations) {
    if (mutation.type === "delete") op.delete(mutation.key);
    else if (mutation.expireIn === undefined) {
      op.set(mutation.key, mutation.value);
    } else {
      op.set(mutation.key, mutation.value, { expireIn: mutation.expireIn });
    }
  }
}

async function commitOrThrow(
  op: Deno.AtomicOperation,
  action: string,
): Promise<void> {
  const result = await commitOp(op);
  if (!result.ok) {
    throw new Error(`Cannot ${action} as KV refused the atomic operation`);
  }
}

/** An over-estimate of what mutations weigh against KV's atomic caps. */
function weigh(mutations: readonly Mutation[]): {
  mutations: number;
  keyBytes: number;
  bytes: number;
} {
  let keyBytes = 0;
  let bytes = 0;
  for (const mutation of mutations) {
    const key = sizeOf(mutation.key);
    keyBytes += key;
    bytes += 2 * key +
      (mutation.type === "set" ? sizeOf(mutation.value) : 0);
  }
  return { mutations: mutations.length, keyBytes, bytes };
}

/** An over-estimate of a key's or value's encoded size. */
function sizeOf(value: unknown): number {
  if (value instanceof Uint8Array) return value.length + 8;
  if (typeof value === "string") return 2 * value.length + 8;
  if (value === null || typeof value !== "object") return 10;
  let size = 8;
  if (Array.isArray(value)) {
    for (const item of value) size += sizeOf(item);
  } else {
    for (const [name, item] of Object.entries(value)) {
      size += 2 * name.length + 4 + sizeOf(item);
    }
  }
  return size;
}

function compareRecords(a: ServerRecord, b: ServerRecord): number {
  if (a.updatedAt !== b.updatedAt) return a.updatedAt < b.updatedAt ? -1 : 1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}
