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
  const { kinds, stats, signal } = options;
  if (kinds.length === 0) return { retryAfterMs: null };
  // Records whose head op is quarantined or parked: their later ops wait
  // (clause 8), the rest of the outbox goes on.
  const blocked = new Set<string>();
  for await (
    const entry of scanOps(ctx, { states: ["quarantined", "parked"], kinds })
  ) {
    blocked.add(recordKey(entry.value.kind, entry.value.id));
  }
  const tries = new Map<string, number>();
  const maxTries = ctx.limits.maxConflictRetries + 2;
  const total = ctx.hub.has("progress") ? await countPending(ctx, kinds) : null;
  let done = 0;
  let retryAfterMs: number | null = null;
  ctx.hub.emit({ type: "progress", phase: "push", done, total });

  for (let pass = 0; pass < MAX_PASSES; pass++) {
    const queues = new Map<string, Versioned<StoredOp>[]>();
    for await (const entry of scanOps(ctx, { states: ["pending"], kinds })) {
      const key = recordKey(entry.value.kind, entry.value.id);
      if (blocked.has(key)) continue;
      let queue = queues.get(key);
      if (queue === undefined) queues.set(key, queue = []);
      queue.push(entry);
    }
    if (queues.size === 0) break;
    // Heads re-formed by a conflict: their queued entry is stale.
    const stale = new Set<string>();
    while (queues.size > 0) {
      signal.throwIfAborted();
      const heads: Versioned<StoredOp>[] = [];
      for (const [key, queue] of queues) {
        const head = queue[0]!;
        if ((tries.get(head.value.opId) ?? 0) >= maxTries) {
          // Defensive bound (clause 9): never spin on one op within a run.
          blocked.add(key);
          queues.delete(key);
          continue;
        }
        heads.push(head);
        if (heads.length >= ctx.limits.pushBatchSize) break;
      }
      if (heads.length === 0) break;
      const fresh = await refresh(ctx, heads, stale);
      const claimed = await claim(ctx, fresh);
      for (const op of claimed) {
        tries.set(op.value.opId, (tries.get(op.value.opId) ?? 0) + 1);
      }
      const fates = new Map<string, Fate>();
      await fateOfUnclaimed(ctx, heads, claimed, fates);
      if (claimed.length > 0) {
        const sentAt = ctx.now();
        const results = await ctx.transport.push(
          claimed.map((entry) => toPushOp(entry.value)),
          { signal },
        );
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
          stats,
        });
        for (const [opId, fate] of settled.fates) fates.set(opId, fate);
        done += settled.done;
        if (settled.retryAfterMs !== null) {
          retryAfterMs = Math.max(retryAfterMs ?? 0, settled.retryAfterMs);
        }
        ctx.hub.emit({ type: "progress", phase: "push", done, total });
        if (settled.unreachable !== null) {
          // Every op of the call failed on the network: the backend is out
          // of reach, so the rest of the outbox would only fail the same way.
          throw settled.unreachable;
        }
      }
      for (const head of heads) {
        const key = recordKey(head.value.kind, head.value.id);
        const queue = queues.get(key)!;
        // A head that vanished before its claim was settled elsewhere.
        const fate = fates.get(head.value.opId) ?? "done";
        if (fate === "again") {
          stale.add(head.value.opId);
          continue;
        }
        stale.delete(head.value.opId);
        if (fate === "blocked") {
          blocked.add(key);
          queues.delete(key);
          continue;
        }
        queue.shift();
        if (queue.length === 0) queues.delete(key);
        // The next op may have been rebased or rebuilt by the settle.
        else stale.add(queue[0]!.value.opId);
      }
    }
  }
  return { retryAfterMs };
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
  fates: Map<string, Fate>,
): Promise<void> {
  const sent = new Set(claimed.map((entry) => entry.value.opId));
  const missing = heads.filter((head) => !sent.has(head.value.opId));
  if (missing.length === 0) return;
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
  heads: Versioned<StoredOp>[],
): Promise<Versioned<StoredOp>[]> {
  const claimed: Versioned<StoredOp>[] = [];
  let current = heads;
  return await commitWithRetry(ctx, {
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
        const rev = written.revs[i]?.[0];
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
