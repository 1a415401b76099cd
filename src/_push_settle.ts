/**
 * Settling pushed ops (ENGINE.md clauses 7-9, 14-17): decide what each
 * answer means (`_push_decide.ts`), plan its writes from fresh reads
 * (`_push_plan.ts`), and commit them with retries (`_commit.ts`); events
 * are emitted and counted once their writes commit.
 *
 * @module
 */

import { commitPlans, commitWithRetry, type OpPlan } from "./_commit.ts";
import type { EngineContext } from "./_context.ts";
import {
  decideOutcome,
  type Fate,
  fateOf,
  type Outcome,
} from "./_push_decide.ts";
import { type PlannedOutcome, planOutcome } from "./_push_plan.ts";
import { listLater } from "./_queue.ts";
import { NetworkError, type SyncError } from "./errors.ts";
import type { SyncEvent, SyncStats } from "./events.ts";
import type { StoredOp, StoredRecord, Versioned } from "./storage.ts";
import type { PushResult } from "./transport.ts";
import type { Conflict } from "./conflict.ts";

/** The input of {@linkcode settlePushed}: one transport call's ops. */
export interface PushedBatch {
  /** The ops sent, as claimed. */
  readonly claimed: readonly Versioned<StoredOp>[];
  /** The transport's results, one per op, in order. */
  readonly results: readonly PushResult[];
  /** When the call was sent (client clock, ms), for the clock skew. */
  readonly sentAt: number;
  /** The run's counters, updated in place. */
  readonly stats: SyncStats;
}

/** What settling a batch tells the push phase. */
export interface SettleResult {
  /** How many ops were settled here. */
  readonly done: number;
  /** What became of each op settled here, by op id. */
  readonly fates: ReadonlyMap<string, Fate>;
  /** The longest `Retry-After` asked for (clamped), in ms, if any. */
  readonly retryAfterMs: number | null;
  /** Set when every op failed on the network: the backend is out of reach. */
  readonly unreachable: SyncError | null;
}

/**
 * Settles one transport call's results: decide, then plan and commit op by
 * op; a plan whose write lost a race is planned again from fresh reads, and
 * the committed ones keep their events.
 *
 * @param ctx The engine context.
 * @param batch The ops sent, their results, when, and the run's counters.
 * @returns How many settled, their fates, and what the scheduler needs.
 * @throws {StorageError} When the store kept changing concurrently.
 */
export function settlePushed(
  ctx: EngineContext,
  batch: PushedBatch,
): Promise<SettleResult> {
  // Tracked, so `outbox.outcome()` can tell an op settling now from one
  // settled before.
  return ctx.outcomes.during(() => settleAll(ctx, batch));
}

async function settleAll(
  ctx: EngineContext,
  batch: PushedBatch,
): Promise<SettleResult> {
  const outcomes = await decideAll(ctx, batch);
  const fates = new Map<string, Fate>();
  let done = 0;
  let remaining: readonly Versioned<StoredOp>[] = batch.claimed;
  await commitWithRetry<undefined>(ctx, {
    what: "settle pushed ops",
    attempt: async (attempt) => {
      // The claim's own entries are current unless a write failed since.
      const fresh = await readFresh(ctx, remaining, { reuse: attempt === 0 });
      const planned = planAll(ctx, fresh, outcomes);
      const plans: OpPlan[] = new Array(planned.length);
      for (let i = 0; i < planned.length; i++) {
        plans[i] = planned[i]!.planned.plan;
      }
      const failed = await commitPlans(ctx, plans);
      let retry: Set<string> | undefined;
      for (let index = 0; index < planned.length; index++) {
        const { op, planned: { plan, events, settled } } = planned[index]!;
        const opId = op.value.opId;
        if (failed.has(index)) {
          (retry ??= new Set()).add(opId);
          continue;
        }
        done++;
        // From the commit itself: the writes that carried this op end here.
        if (settled !== undefined) ctx.outcomes.settle(opId, settled, op.value);
        if (plan.change !== null) {
          events.push({ type: "change", ...plan.change });
        }
        fates.set(opId, fateOf(outcomes.get(opId)!));
        for (let e = 0; e < events.length; e++) {
          const event = events[e]!;
          count(batch.stats, event);
          ctx.hub.emit(event);
        }
      }
      if (retry === undefined) return { ok: true, value: undefined };
      const again = retry;
      remaining = remaining.filter((entry) => again.has(entry.value.opId));
      return { ok: false };
    },
  });
  return { done, fates, ...summarize(outcomes, batch.claimed.length) };
}

/**
 * Decides every result, in order: the answer's `Date` corrects the clock
 * skew first, and a conflict is reported (and counted) before its strategy
 * runs. One server date counts once per batch: the results of one
 * `POST /batch` share their response's `Date`, and so do most answers of
 * the same second; one sample per answer keeps the smoothing of the skew
 * from being swamped by the batch's size.
 */
async function decideAll(
  ctx: EngineContext,
  batch: PushedBatch,
): Promise<Map<string, Outcome>> {
  const outcomes = new Map<string, Outcome>();
  const seen = new Set<number>();
  const maxConflictRetries = ctx.limits.maxConflictRetries;
  // Shared by every op: a conflict names its own op and table.
  const onConflict = (conflict: Conflict): void => {
    batch.stats.conflicts++;
    ctx.hub.emit({
      type: "conflictDetected",
      kind: conflict.kind,
      id: conflict.id,
      opId: conflict.opId,
      local: conflict.local,
      server: conflict.server,
      strategy: ctx.table(conflict.kind).policy.strategy,
    });
  };
  const onStrategyError = (error: SyncError): void => {
    ctx.hub.emit({
      type: "error",
      error,
      category: error.category,
      retryable: false,
    });
  };
  for (let i = 0; i < batch.claimed.length; i++) {
    const op = batch.claimed[i]!.value;
    const result = batch.results[i]!;
    if (
      (result.type === "ok" || result.type === "conflict") &&
      result.serverDate !== undefined && !seen.has(result.serverDate)
    ) {
      seen.add(result.serverDate);
      ctx.observeServerDate(result.serverDate, batch.sentAt);
    }
    const outcome = decideOutcome({
      table: ctx.table(op.kind),
      op,
      result,
      clockSkewMs: ctx.clockSkewMs(),
      maxConflictRetries,
      onConflict,
      onStrategyError,
    });
    // Only a conflict's strategy may wait: the others cost no microtask.
    outcomes.set(
      op.opId,
      outcome instanceof Promise ? await outcome : outcome,
    );
  }
  return outcomes;
}

/** A planned outcome, and the op it settles. */
interface PlannedOp {
  readonly planned: PlannedOutcome;
  readonly op: Versioned<StoredOp>;
}

/** Plans each fresh op's outcome; ops with nothing to write are left out. */
function planAll(
  ctx: EngineContext,
  fresh: FreshState,
  outcomes: ReadonlyMap<string, Outcome>,
): PlannedOp[] {
  const out: PlannedOp[] = [];
  const now = ctx.now();
  const maxConflictRetries = ctx.limits.maxConflictRetries;
  for (let i = 0; i < fresh.ops.length; i++) {
    const op = fresh.ops[i]!;
    const planned = planOutcome({
      table: ctx.table(op.value.kind),
      record: fresh.records[i],
      op,
      later: fresh.later.get(op.value.opId) ?? NONE_LATER,
      outcome: outcomes.get(op.value.opId)!,
      now,
      maxConflictRetries,
    });
    if (planned !== null) out.push({ planned, op });
  }
  return out;
}

/** The ops behind an op that has none. */
const NONE_LATER: readonly Versioned<StoredOp>[] = [];

/**
 * The longest `Retry-After` of the retryable outcomes, and whether every op
 * failed on the network (then the rest of the outbox would only fail the
 * same way).
 */
function summarize(
  outcomes: ReadonlyMap<string, Outcome>,
  sent: number,
): Pick<SettleResult, "retryAfterMs" | "unreachable"> {
  let retryAfterMs: number | null = null;
  let networkFailures = 0;
  let firstNetworkError: SyncError | null = null;
  for (const outcome of outcomes.values()) {
    if (outcome.type !== "retry") continue;
    if (outcome.retryAfterMs !== null) {
      retryAfterMs = Math.max(retryAfterMs ?? 0, outcome.retryAfterMs);
    }
    if (outcome.error.category === "network") {
      networkFailures++;
      firstNetworkError ??= outcome.error;
    }
  }
  return {
    retryAfterMs,
    unreachable: networkFailures === sent && firstNetworkError !== null
      ? new NetworkError(firstNetworkError.message, {
        cause: firstNetworkError,
      })
      : null,
  };
}

/** Counts a committed event in the run's stats. */
function count(stats: SyncStats, event: SyncEvent): void {
  switch (event.type) {
    case "opPushed":
      stats.pushed++;
      break;
    case "opQuarantined":
      stats.quarantined++;
      break;
    case "opFailed":
      stats.retrying++;
      break;
    case "conflictDeferred":
      stats.deferred++;
      break;
    case "conflictResolved":
      stats.resolved++;
      break;
  }
}

/** Reads the records of ops (one op per record), in the ops' order. */
async function readRecords(
  ctx: EngineContext,
  ops: readonly Versioned<StoredOp>[],
): Promise<(Versioned<StoredRecord> | undefined)[]> {
  const out: (Versioned<StoredRecord> | undefined)[] = new Array(ops.length);
  // The ops' positions by table: most pushes hold one table.
  const byKind = new Map<string, number[]>();
  for (let i = 0; i < ops.length; i++) {
    const kind = ops[i]!.value.kind;
    const positions = byKind.get(kind);
    if (positions === undefined) byKind.set(kind, [i]);
    else positions.push(i);
  }
  for (const [kind, positions] of byKind) {
    const ids: string[] = new Array(positions.length);
    for (let j = 0; j < positions.length; j++) {
      ids[j] = ops[positions[j]!]!.value.id;
    }
    const entries = await ctx.storage.getRecords(kind, ids);
    for (let j = 0; j < positions.length; j++) out[positions[j]!] = entries[j];
  }
  return out;
}

/** The claimed ops still to settle, with what their plans need. */
interface FreshState {
  ops: Versioned<StoredOp>[];
  /** Each op's record, at the op's index. */
  records: (Versioned<StoredRecord> | undefined)[];
  later: Map<string, Versioned<StoredOp>[]>;
}

/**
 * Re-reads claimed ops, their records and the ops queued behind them. Ops
 * that vanished or changed form meanwhile were settled by another writer
 * and are left out. With `reuse`, the claimed entries are taken as read.
 */
async function readFresh(
  ctx: EngineContext,
  claimed: readonly Versioned<StoredOp>[],
  options: { readonly reuse: boolean },
): Promise<FreshState> {
  const current = options.reuse ? claimed : await ctx.storage.getOps(
    claimed.map((entry) => entry.value.opId),
  );
  const ops: Versioned<StoredOp>[] = [];
  for (let i = 0; i < current.length; i++) {
    const entry = current[i];
    if (
      entry !== undefined && entry.value.state === "pending" &&
      entry.value.revision === claimed[i]!.value.revision
    ) {
      ops.push(entry);
    }
  }
  const records = await readRecords(ctx, ops);
  const later = new Map<string, Versioned<StoredOp>[]>();
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i]!;
    const record = records[i];
    if (record !== undefined && record.value.lastOpId !== op.value.opId) {
      later.set(
        op.value.opId,
        await listLater(ctx, op.value.kind, op.value.id, op.value.opId),
      );
    }
  }
  return { ops, records, later };
}
