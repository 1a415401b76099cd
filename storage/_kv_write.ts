/**
 * The KV storage's commit of a planned write (see `_kv_plan.ts`): read what
 * the write must know, pre-write its large values, build its one atomic
 * operation, commit, and try again while only the storage's own checks
 * failed. Private to `storage/kv.ts`: not exported from the package.
 *
 * @module
 */

import { StorageError } from "../src/errors.ts";
import type { StoredOp, StoredRecord, WriteResult } from "../src/storage.ts";
import { hashText } from "./_kv_keys.ts";
import { AtomicTally } from "./_kv_limits.ts";
import {
  type BlobRef,
  discardQuietly,
  garbageTicket,
  newTicketKey,
  type Prewrite,
  prewriteBlobs,
  type TicketRef,
} from "./_kv_blobs.ts";
import {
  commitRetrying,
  delay,
  encodeJson,
  isOpState,
  type KvKeyspace,
  opHeaderOf,
  UNINDEXED_STATE,
} from "./_kv_keyspace.ts";
import type { Item, WritePlan } from "./_kv_plan.ts";

/** How often a write retries when only internal checks failed. */
const MAX_ATTEMPTS = 20;

/** The write's one atomic operation, and what committing it changes. */
interface Atomic {
  readonly tally: AtomicTally;
  /** The change to the count of large values. */
  readonly delta: number;
  /** The garbage ticket the operation sets, listing replaced blobs. */
  readonly garbage: TicketRef | undefined;
}

/**
 * Commits a planned write as one atomic operation, after reading what it
 * must and pre-writing its large values; tries again while only our own
 * checks fail (a concurrent writer changed an item we read for its index
 * entries or blob, never one whose expect the caller gave).
 *
 * @param space The store.
 * @param write The plan, and an abort signal.
 * @returns The write's result.
 * @throws {StorageError} When KV fails, or the store kept changing.
 */
export async function commitWrite(
  space: KvKeyspace,
  write: {
    readonly plan: WritePlan;
    readonly signal?: AbortSignal | undefined;
  },
): Promise<WriteResult> {
  const { plan, signal } = write;
  const state: Attempts = { prewrite: undefined, committed: false };
  try {
    for (let attempt = 1;; attempt++) {
      signal?.throwIfAborted();
      const result = await tryWrite(space, { plan, state, signal });
      if (result !== undefined) return result;
      if (attempt >= MAX_ATTEMPTS) {
        throw new StorageError(
          `Cannot write mutations as the store kept changing concurrently: current value is ${attempt} attempts`,
          { retryable: true },
        );
      }
      for (const item of plan.items) item.read = undefined;
      await delay(Math.random() * Math.min(2 ** attempt, 50));
    }
  } finally {
    const { committed, prewrite } = state;
    if (!committed && prewrite !== undefined) {
      await discardQuietly(space, {
        key: prewrite.ticketKey,
        blobs: [...prewrite.blobs.values()],
      });
    }
  }
}

/** What a write's attempts share. */
interface Attempts {
  /** The pre-written blobs, while they may still be used. */
  prewrite: Prewrite<Item> | undefined;
  /** Whether an attempt committed. */
  committed: boolean;
}

/**
 * One attempt at a write: the result, or `undefined` when only our own
 * checks failed and the write is tried again.
 */
async function tryWrite(
  space: KvKeyspace,
  attempt: {
    readonly plan: WritePlan;
    readonly state: Attempts;
    readonly signal: AbortSignal | undefined;
  },
): Promise<WriteResult | undefined> {
  const { plan: { items, itemOf }, state, signal } = attempt;
  if (!await readItems(space, items)) return { ok: false };
  if (state.prewrite === undefined && items.some((item) => item.large)) {
    state.prewrite = await prewriteBlobs(space, largeValues(items));
  }
  const atomic = buildAtomic(space, { items, prewrite: state.prewrite });
  signal?.throwIfAborted();
  let result: Deno.KvCommitResult | Deno.KvCommitError;
  try {
    result = await commitRetrying(atomic.tally.operation);
  } catch (error) {
    // The outcome is unknown (a remote KV may have committed): the
    // pre-written blobs stay for vacuum(), which only takes them when no
    // header references them.
    state.prewrite = undefined;
    throw error;
  }
  if (result.ok) {
    state.committed = true;
    await settle(space, { atomic, versionstamp: result.versionstamp });
    const rev = result.versionstamp;
    return {
      ok: true,
      revs: itemOf.map((item) => item.value === undefined ? null : rev),
    };
  }
  // A check failed: the caller's expect, or only one of ours.
  const verdict = await verify(space, { items, prewrite: state.prewrite });
  if (!verdict.expectsHold) return { ok: false };
  // vacuum() took the pre-written blobs: write them again.
  if (!verdict.ticketHolds) state.prewrite = undefined;
  return undefined;
}

/** The JSON of the items whose values go to blobs. */
function largeValues(items: readonly Item[]): Map<Item, Uint8Array> {
  const values = new Map<Item, Uint8Array>();
  for (const item of items) {
    if (item.large && item.bytes !== undefined) values.set(item, item.bytes);
  }
  return values;
}

/**
 * Reads the items a write must know (see {@linkcode needsRead}). Reading
 * refreshes the count of large values; when it turns out non-zero, the
 * records and meta entries skipped so far are read too. `false` when a
 * caller's expect already fails.
 */
async function readItems(
  space: KvKeyspace,
  items: readonly Item[],
): Promise<boolean> {
  for (;;) {
    const toRead = items.filter((item) =>
      item.read === undefined && needsRead(space, item)
    );
    if (toRead.length === 0) return true;
    const entries = await space.getMany([
      ...toRead.map((item) => item.headerKey),
      space.countKey,
    ]);
    space.count = space.decodeCount(entries.at(-1)!);
    for (const [index, item] of toRead.entries()) {
      const entry = entries[index]!;
      if (
        typeof item.expect === "string" && entry.versionstamp !== item.expect
      ) {
        return false;
      }
      item.read = {
        versionstamp: entry.versionstamp,
        envelope: entry.versionstamp === null
          ? undefined
          : space.decodeEnvelope(entry),
      };
    }
  }
}

/**
 * Whether a write must read an item first: an op, to update its index
 * entries; a record or meta entry, to find the blob it replaces while the
 * store holds large values. An item that must be absent has nothing to
 * read.
 */
function needsRead(space: KvKeyspace, item: Item): boolean {
  if (item.expect === null) return false;
  return item.space === "op" || space.count.value > 0;
}

/** After a commit: the new count, and the replaced blobs deleted. */
async function settle(
  space: KvKeyspace,
  committed: { readonly atomic: Atomic; readonly versionstamp: string },
): Promise<void> {
  const { atomic, versionstamp } = committed;
  if (atomic.delta !== 0) {
    space.count = { value: space.count.value + atomic.delta, versionstamp };
  }
  // The write committed whatever happens here: a failure leaves the
  // garbage ticket to vacuum().
  if (atomic.garbage !== undefined) {
    await discardQuietly(space, atomic.garbage);
  }
}

/**
 * Builds the write's one atomic operation.
 *
 * @throws {StorageError} When it exceeds KV's caps, which the capabilities
 * guarantee it does not: a bug, reported before KV would refuse it.
 */
function buildAtomic(
  space: KvKeyspace,
  build: {
    readonly items: readonly Item[];
    readonly prewrite: Prewrite<Item> | undefined;
  },
): Atomic {
  const { items, prewrite } = build;
  const tally = new AtomicTally(space);
  const replaced: BlobRef[] = [];
  let delta = 0;
  let reliesOnCount = false;
  for (const item of items) {
    checkItem(tally, item);
    const old = item.read?.envelope;
    const oldBlob = typeof old?.b === "string"
      ? { id: old.b, n: old.n ?? 0 }
      : undefined;
    if (oldBlob !== undefined) replaced.push(oldBlob);
    const blob = item.large ? prewrite?.blobs.get(item) : undefined;
    if (item.space === "op") {
      addOp(space, { tally, item, blob });
      continue;
    }
    if (item.read === undefined && item.expect !== null) reliesOnCount = true;
    delta += (blob === undefined ? 0 : 1) - (oldBlob === undefined ? 0 : 1);
    addValue(tally, { item, blob });
  }
  if (reliesOnCount || delta !== 0) {
    tally.check(space.countKey, space.count.versionstamp);
  }
  if (delta !== 0) {
    tally.set(space.countKey, encodeJson(space.count.value + delta));
  }
  const garbage = addTickets(space, { tally, prewrite, replaced });
  const excess = tally.excess();
  if (excess !== undefined) {
    throw new StorageError(
      `Cannot write mutations as they exceed one KV atomic operation: current value is ${excess}`,
    );
  }
  return { tally, delta, garbage };
}

/** Checks an item's header: its expect, or the version the write read. */
function checkItem(tally: AtomicTally, item: Item): void {
  if (item.expect === null) tally.check(item.headerKey, null);
  else if (typeof item.expect === "string") {
    tally.check(item.headerKey, item.expect);
  } else if (item.read !== undefined) {
    tally.check(item.headerKey, item.read.versionstamp);
  }
}

/** Sets or deletes a record's or meta entry's header. */
function addValue(
  tally: AtomicTally,
  add: { readonly item: Item; readonly blob: BlobRef | undefined },
): void {
  const { item, blob } = add;
  if (item.value === undefined) {
    tally.delete(item.headerKey);
  } else if (blob === undefined) {
    tally.set(item.headerKey, item.header!);
  } else {
    const record = item.space === "record"
      ? item.value as StoredRecord
      : undefined;
    tally.set(
      item.headerKey,
      encodeJson({
        b: blob.id,
        n: blob.n,
        z: item.bytes!.length,
        ...(record === undefined ? {} : { d: record.deleted }),
        ...(item.shared ? { a: 1 } : {}),
      }),
    );
  }
}

/**
 * Checks that the pre-write's ticket is still pending (vacuum() may have
 * taken it), and turns it, or a fresh ticket, into the garbage ticket of
 * the blobs the write replaces; deletes it when there are none.
 */
function addTickets(
  space: KvKeyspace,
  add: {
    readonly tally: AtomicTally;
    readonly prewrite: Prewrite<Item> | undefined;
    readonly replaced: readonly BlobRef[];
  },
): TicketRef | undefined {
  const { tally, prewrite, replaced } = add;
  let garbage: TicketRef | undefined;
  if (prewrite !== undefined) {
    tally.check(prewrite.ticketKey, prewrite.ticketVersionstamp);
    if (replaced.length > 0) {
      garbage = { key: prewrite.ticketKey, blobs: replaced };
    } else tally.delete(prewrite.ticketKey);
  } else if (replaced.length > 0) {
    garbage = { key: newTicketKey(space), blobs: replaced };
  }
  if (garbage !== undefined) {
    tally.set(garbage.key, garbageTicket(garbage.blobs));
  }
  return garbage;
}

/** The old state, record bucket and slot an op's index entries are under. */
function oldIndex(
  space: KvKeyspace,
  item: Item,
): { state: StoredOp["state"]; bucket: number; slot: number } | undefined {
  const old = item.read?.envelope;
  if (old === undefined) return undefined;
  const oldOp = Object.hasOwn(old, "v")
    ? old.v as unknown as StoredOp
    : { kind: old.k, id: old.i, state: old.t } as StoredOp;
  // The old index entries are found from these: a header that lost them
  // cannot be replaced without leaving stale entries.
  if (
    typeof old.s !== "number" || typeof oldOp !== "object" ||
    oldOp === null || typeof oldOp.id !== "string" || !isOpState(oldOp.state)
  ) {
    throw space.formatError(item.headerKey, old);
  }
  return { state: oldOp.state, bucket: hashText(oldOp.id), slot: old.s };
}

/** Adds an op's header and index entries to the atomic operation. */
function addOp(
  space: KvKeyspace,
  add: {
    readonly tally: AtomicTally;
    readonly item: Item;
    readonly blob: BlobRef | undefined;
  },
): void {
  const { tally, item, blob } = add;
  const opPart = item.headerKey.at(-1)!;
  const old = oldIndex(space, item);
  const slot = old?.slot ?? item.freshSlot;
  const indexedState = old?.state === UNINDEXED_STATE ? undefined : old?.state;
  if (item.value === undefined) {
    tally.delete(item.headerKey);
    if (indexedState !== undefined) {
      tally.delete(space.key("s", indexedState, opPart));
    }
    if (old !== undefined) tally.delete(space.key("i", old.bucket, slot));
    return;
  }
  const op = item.value as StoredOp;
  const header = opHeader({ item, op, slot, blob });
  tally.set(item.headerKey, header);
  if (indexedState !== undefined && indexedState !== op.state) {
    tally.delete(space.key("s", indexedState, opPart));
  }
  if (op.state !== UNINDEXED_STATE) {
    tally.set(space.key("s", op.state, opPart), header);
  }
  const bucket = hashText(op.id);
  if (old !== undefined && old.bucket !== bucket) {
    tally.delete(space.key("i", old.bucket, slot));
  }
  tally.set(
    space.key("i", bucket, slot),
    encodeJson([op.opId, op.kind, op.id, op.state]),
  );
}

/** An op's header: inline, or a reference to its blob with its ids. */
function opHeader(
  header: {
    readonly item: Item;
    readonly op: StoredOp;
    readonly slot: number;
    readonly blob: BlobRef | undefined;
  },
): Uint8Array {
  const { item, op, slot, blob } = header;
  if (blob === undefined) return opHeaderOf(item.bytes!, slot);
  return encodeJson({
    s: slot,
    b: blob.id,
    n: blob.n,
    z: item.bytes!.length,
    k: op.kind,
    i: op.id,
    t: op.state,
  });
}

/**
 * After a failed commit: whether the caller's expects still hold (then
 * only an internal check failed and the write is tried again), and
 * whether the pre-written blobs' ticket is still pending.
 */
async function verify(
  space: KvKeyspace,
  failed: {
    readonly items: readonly Item[];
    readonly prewrite: Prewrite<Item> | undefined;
  },
): Promise<{ expectsHold: boolean; ticketHolds: boolean }> {
  const { items, prewrite } = failed;
  const expected = items.filter((item) => item.expect !== undefined);
  const keys = [...expected.map((item) => item.headerKey), space.countKey];
  if (prewrite !== undefined) keys.push(prewrite.ticketKey);
  const entries = await space.getMany(keys);
  space.count = space.decodeCount(entries[expected.length]!);
  const expectsHold = expected.every((item, index) =>
    entries[index]!.versionstamp === item.expect
  );
  const ticketHolds = prewrite === undefined ||
    entries.at(-1)!.versionstamp === prewrite.ticketVersionstamp;
  return { expectsHold, ticketHolds };
}
