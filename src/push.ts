/**
 * The push phase (ENGINE.md clauses 5-9, 14-17): drains the outbox to the
 * transport, one op per record at a time, and settles each outcome.
 *
 * @module
 */

import { commitWithRetry } from "./_commit.ts";
import { type EngineContext, recordKey } from "./_context.ts";
import { SyncError } from "./errors.ts";
import type { SyncStats } from "./events.ts";
import type { Fate } from "./_push_decide.ts";
import { settlePushed } from "./_push_settle.ts";
import { countPending, scanOps } from "./_queue.ts";
import { writeChunked } from "./_write.ts";
import type { StoredOp, Versioned } from "./storage.ts";
import type { PushOp } from "./transport.ts";

/** Options of {@linkcode pushPhase}. */
export interface PushPhaseOptions {
  /** The tables to push. */
  readonly kinds: readonly string[];
  /** The run's counters, updated in place. */
  readonly stats: SyncStats;
  /** Cancels the phase. */
  readonly signal: AbortSignal;
}

/** What a push phase learned that the scheduler needs. */
export interface PushPhaseResult {
  /** The longest `Retry-After` a server asked for, in ms, if any. */
  readonly retryAfterMs: number | null;
}

/**
 * The idempotency key of an op's current form (clause 6; CONTRACT.md
 * "Idempotency"): the op id for the first form, `<opId>.r<n>` for the n-th
 * new body. An op whose response was lost is re-sent in the same form, so
 * with the same key, and the server applies it once.
 *
 * @param op The op.
 * @returns The key.
 */
export function idempotencyKey(op: StoredOp): string {
  return op.revision === 0 ? op.opId : `${op.opId}.r${op.revision}`;
}

/** Scan passes per run: ops queued while a run pushes wait at most a pass. */
const MAX_PASSES = 3;

/** One push phase's state, shared by its passes and rounds. */
interface PushRun {
  readonly ctx: EngineContext;
  readonly options: PushPhaseOptions;
  /**
   * Records that wait for a later run: their head op is quarantined or
   * parked (clause 8), failed retryably, or hit the bound of tries.
   */
  readonly blocked: Set<string>;
  /**
   * A record's key in {@linkcode PushRun.blocked} and the queues: its id
   * when the run pushes one kind (no string built per op), else its kind
   * and id ({@linkcode recordKey}).
   */
  readonly keyOf: (kind: string, id: string) => string;
  /**
   * How many times each op that goes again was sent in this run (an op sent
   * once and done needs no count).
   */
  readonly tries: Map<string, number>;
  /** The most sends of one op in one run (clause 9). */
  readonly maxTries: number;
  /** The ops pending when the phase began, when progress is listened to. */
  readonly total: number | null;
  /** How many ops were settled so far. */
  done: number;
  /** The longest `Retry-After` a server asked for, in ms, if any. */
  retryAfterMs: number | null;
}

/**
 * Pushes pending ops until none is eligible. Within one run an op is tried
 * a bounded number of times: after a retryable failure its record waits for
 * the next run, and a conflict that keeps coming back parks the op.
 *
 * One scan of the outbox builds, per record, the queue of its pending ops in
 * outbox order (clause 5); each round sends the head of up to
 * `pushBatchSize` queues. A few more passes pick up ops queued meanwhile.
 *
 * @param ctx The engine context.
 * @param options Tables, counters, signal.
 * @returns What the scheduler needs to know.
 */
export async function pushPhase(
  ctx: EngineContext,
  options: PushPhaseOptions,
): Promise<PushPhaseResult> {
  const { kinds } = options;
  if (kinds.length === 0) return { retryAfterMs: null };
  const keyOf = kinds.length === 1 ? idOnly : recordKey;
  const run: PushRun = {
    ctx,
    options,
    // Their later ops wait (clause 8), the rest of the outbox goes on.
    blocked: await scanBlocked(ctx, kinds, keyOf),
    keyOf,
    tries: new Map(),
    maxTries: ctx.limits.maxConflictRetries + 2,
    total: ctx.hub.has("progress") ? await countPending(ctx, kinds) : null,
    done: 0,
    retryAfterMs: null,
  };
  ctx.hub.emit({ type: "progress", phase: "push", done: 0, total: run.total });
  for (let pass = 0; pass < MAX_PASSES; pass++) {
    const queues = await scanQueues(run);
    if (queues.size === 0) break;
    await drain(run, queues);
  }
  return { retryAfterMs: run.retryAfterMs };
}

/** A record's key among the records of one kind: its id. */
function idOnly(_kind: string, id: string): string {
  return id;
}

/** The records whose head op is quarantined or parked. */
async function scanBlocked(
  ctx: EngineContext,
  kinds: readonly string[],
  keyOf: (kind: string, id: string) => string,
): Promise<Set<string>> {
  const blocked = new Set<string>();
  for await (
    const page of scanOps(ctx, { states: ["quarantined", "parked"], kinds })
  ) {
    for (const entry of page) {
      blocked.add(keyOf(entry.value.kind, entry.value.id));
    }
  }
  return blocked;
}

/** Per record not blocked, its pending ops in outbox order (clause 5). */
async function scanQueues(
  run: PushRun,
): Promise<Map<string, Versioned<StoredOp>[]>> {
  const queues = new Map<string, Versioned<StoredOp>[]>();
  const filter = { states: ["pending" as const], kinds: run.options.kinds };
  for await (const page of scanOps(run.ctx, filter)) {
    for (let i = 0; i < page.length; i++) {
      const entry = page[i]!;
      const key = run.keyOf(entry.value.kind, entry.value.id);
      if (run.blocked.has(key)) continue;
      let queue = queues.get(key);
      if (queue === undefined) queues.set(key, queue = []);
      queue.push(entry);
    }
  }
  return queues;
}

/** Sends the queues' heads round by round until no queue is left. */
async function drain(
  run: PushRun,
  queues: Map<string, Versioned<StoredOp>[]>,
): Promise<void> {
  // Heads re-formed by a conflict: their queued entry is stale.
  const stale = new Set<string>();
  while (queues.size > 0) {
    run.options.signal.throwIfAborted();
    const { heads, keys } = pickHeads(run, queues);
    if (heads.length === 0) break;
    const fates = await pushRound(run, heads, stale);
    advance(run, { queues, heads, keys, fates, stale });
  }
}

/**
 * The heads of up to `pushBatchSize` queues, in scan order, with their
 * queues' keys (so that moving on needs no key built again).
 */
function pickHeads(
  run: PushRun,
  queues: Map<string, Versioned<StoredOp>[]>,
): { heads: Versioned<StoredOp>[]; keys: string[] } {
  const heads: Versioned<StoredOp>[] = [];
  const keys: string[] = [];
  for (const [key, queue] of queues) {
    const head = queue[0]!;
    if ((run.tries.get(head.value.opId) ?? 0) >= run.maxTries) {
      // Defensive bound (clause 9): never spin on one op within a run.
      run.blocked.add(key);
      queues.delete(key);
      continue;
    }
    heads.push(head);
    keys.push(key);
    if (heads.length >= run.ctx.limits.pushBatchSize) break;
  }
  return { heads, keys };
}

/**
 * One round: claim the heads, send them in one transport call, and settle
 * the results (decide, plan, commit).
 *
 * @returns The fate of each head, by op id.
 */
async function pushRound(
  run: PushRun,
  heads: readonly Versioned<StoredOp>[],
  stale: ReadonlySet<string>,
): Promise<Map<string, Fate>> {
  const { ctx, options } = run;
  const fresh = await refresh(ctx, heads, stale);
  const claimed = await claim(ctx, fresh);
  const fates = await fateOfUnclaimed(ctx, heads, claimed);
  if (claimed.length === 0) return fates;
  const sentAt = ctx.now();
  const ops: PushOp[] = new Array(claimed.length);
  for (let i = 0; i < claimed.length; i++) ops[i] = toPushOp(claimed[i]!.value);
  const results = await ctx.transport.push(ops, { signal: options.signal });
  if (results.length !== claimed.length) {
    throw new SyncError(
      `Cannot push ops as the transport returned ${results.length} results for ${claimed.length} ops`,
      { category: "parse" },
    );
  }
  const settled = await settlePushed(ctx, {
    claimed,
    results,
    sentAt,
    stats: options.stats,
  });
  run.done += settled.done;
  if (settled.retryAfterMs !== null) {
    run.retryAfterMs = Math.max(run.retryAfterMs ?? 0, settled.retryAfterMs);
  }
  ctx.hub.emit({
    type: "progress",
    phase: "push",
    done: run.done,
    total: run.total,
  });
  if (settled.unreachable !== null) {
    // Every op of the call failed on the network: the backend is out of
    // reach, so the rest of the outbox would only fail the same way.
    throw settled.unreachable;
  }
  settled.fates.forEach((fate, opId) => fates.set(opId, fate));
  return fates;
}

/** A round's heads and their fates, to move the queues on by. */
interface RoundEnd {
  readonly queues: Map<string, Versioned<StoredOp>[]>;
  readonly heads: readonly Versioned<StoredOp>[];
  /** Each head's queue key, in the same order. */
  readonly keys: readonly string[];
  readonly fates: ReadonlyMap<string, Fate>;
  readonly stale: Set<string>;
}

/**
 * Moves each head's queue on by its fate: a head that goes again stays (and
 * is read again), a blocked record leaves, a done head makes way for the
 * next op, which the settle may have rebased or rebuilt.
 */
function advance(run: PushRun, round: RoundEnd): void {
  const { queues, heads, keys, fates, stale } = round;
  for (let i = 0; i < heads.length; i++) {
    const head = heads[i]!;
    const key = keys[i]!;
    const queue = queues.get(key)!;
    // A head that vanished before its claim was settled elsewhere.
    const fate = fates.get(head.value.opId) ?? "done";
    if (fate === "again") {
      // Sent (or about to be re-read) again: count the sends so far.
      const opId = head.value.opId;
      run.tries.set(opId, (run.tries.get(opId) ?? 0) + 1);
      stale.add(opId);
      continue;
    }
    stale.delete(head.value.opId);
    if (fate === "blocked") {
      run.blocked.add(key);
      queues.delete(key);
      continue;
    }
    queue.shift();
    if (queue.length === 0) queues.delete(key);
    // The next op may have been rebased or rebuilt by the settle.
    else stale.add(queue[0]!.value.opId);
  }
}

/**
 * Decides the fate of heads that could not be claimed: gone (settled by
 * someone else), or no longer pending because another engine on the same
 * storage quarantined or parked it: then its record waits (clause 8).
 */
async function fateOfUnclaimed(
  ctx: EngineContext,
  heads: readonly Versioned<StoredOp>[],
  claimed: readonly Versioned<StoredOp>[],
): Promise<Map<string, Fate>> {
  const fates = new Map<string, Fate>();
  const sent = new Set(claimed.map((entry) => entry.value.opId));
  const missing = heads.filter((head) => !sent.has(head.value.opId));
  if (missing.length === 0) return fates;
  const now = await ctx.storage.getOps(missing.map((head) => head.value.opId));
  missing.forEach((head, i) => {
    const entry = now[i];
    fates.set(
      head.value.opId,
      entry !== undefined && entry.value.state !== "pending"
        ? "blocked"
        : "done",
    );
  });
  return fates;
}

/**
 * Re-reads the heads whose stored form changed since the scan (re-formed,
 * rebased or rebuilt), keeping the others as scanned: a head that changed
 * in some other way fails its claim's expect and is read again there.
 */
async function refresh(
  ctx: EngineContext,
  heads: readonly Versioned<StoredOp>[],
  stale: ReadonlySet<string>,
): Promise<Versioned<StoredOp>[]> {
  const ids = heads.filter((head) => stale.has(head.value.opId)).map((head) =>
    head.value.opId
  );
  if (ids.length === 0) return [...heads];
  const read = await ctx.storage.getOps(ids);
  const byId = new Map<string, Versioned<StoredOp> | undefined>();
  ids.forEach((id, i) => byId.set(id, read[i]));
  const out: Versioned<StoredOp>[] = [];
  for (const head of heads) {
    if (!byId.has(head.value.opId)) {
      out.push(head);
      continue;
    }
    const entry = byId.get(head.value.opId);
    if (entry !== undefined && entry.value.state === "pending") out.push(entry);
  }
  return out;
}

function toPushOp(op: StoredOp): PushOp {
  return {
    opId: op.opId,
    key: idempotencyKey(op),
    kind: op.kind,
    id: op.id,
    type: op.type,
    payload: op.payload,
    baseUpdatedAt: op.baseUpdatedAt,
    force: op.force,
  };
}

/**
 * Marks ops as sent before sending them (attempts + 1): from then on they
 * are frozen, so a local write can no longer fold into a body the server
 * may already hold under that idempotency key.
 */
async function claim(
  ctx: EngineContext,
  heads: readonly Versioned<StoredOp>[],
): Promise<Versioned<StoredOp>[]> {
  const claimed: Versioned<StoredOp>[] = [];
  let current = heads;
  return await commitWithRetry<Versioned<StoredOp>[]>(ctx, {
    what: "claim ops for push",
    attempt: async () => {
      const ops = current.map((entry) => ({
        ...entry.value,
        attempts: entry.value.attempts + 1,
      }));
      const written = await writeChunked(
        ctx,
        ops.map((op, i) => [{ type: "putOp", op, expect: current[i]!.rev }]),
      );
      ops.forEach((op, i) => {
        const rev = written.firstRevs[i];
        if (rev !== undefined && rev !== null) claimed.push({ value: op, rev });
      });
      if (written.failed.size === 0) return { ok: true, value: claimed };
      // Someone changed an op between our read and our claim (a local write
      // folded into it, or another engine claimed it): read those again.
      const fresh = await ctx.storage.getOps(
        [...written.failed].map((i) => current[i]!.value.opId),
      );
      current = fresh.filter((entry): entry is Versioned<StoredOp> =>
        entry !== undefined && entry.value.state === "pending"
      );
      if (current.length === 0) return { ok: true, value: claimed };
      return { ok: false };
    },
  });
}
