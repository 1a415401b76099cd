/**
 * The push phase (ENGINE.md clauses 5-9, 14-17): drains the outbox to the
 * transport, one op per record at a time, and settles each outcome.
 *
 * @module
 */

import {
  compareInstants,
  type EngineContext,
  isFault,
  readRecordMeta,
  recordKey,
  type TableConfig,
} from "./_context.ts";
import { describe } from "./describe.ts";
import {
  type Conflict,
  type ConflictDecision,
  decideConflict,
} from "./conflict.ts";
import { clampDelay, MAX_RETRY_AFTER_MS } from "./backoff.ts";
import { parseTimestamp } from "./timestamp.ts";
import {
  NetworkError,
  ParseError,
  StorageError,
  SyncError,
  toSyncError,
} from "./errors.ts";
import type { SyncEvent, SyncStats } from "./events.ts";
import type { JsonObject } from "./json.ts";
import { type OpPlan, planGroups } from "./_commit.ts";
import { countPending, listLater, scanOps } from "./_queue.ts";
import {
  opError,
  planAcceptServer,
  planAck,
  planFailure,
  planForcedWrite,
  planPark,
} from "./_settle.ts";
import { writeChunked } from "./_write.ts";
import type { StoredOp, StoredRecord, Versioned } from "./storage.ts";
import type { PushOp, PushResult } from "./transport.ts";

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

/** What became of a pushed op, for the run's queues. */
type Fate =
  /** Left the outbox (acknowledged, dropped), or settled elsewhere. */
  | "done"
  /** Its record waits for a later run (quarantined, parked, retryable). */
  | "blocked"
  /** Re-formed after a conflict: it goes again, in a new form. */
  | "again";

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
        const settled = await settleResults(
          ctx,
          claimed,
          results,
          sentAt,
          fates,
          stats,
        );
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
  for (let attempt = 0; attempt < ctx.limits.writeRetries; attempt++) {
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
    if (written.failed.size === 0) return claimed;
    // Someone changed an op between our read and our claim (a local write
    // folded into it, or another engine claimed it): read those again.
    const fresh = await ctx.storage.getOps(
      [...written.failed].map((i) => current[i]!.value.opId),
    );
    current = fresh.filter((entry): entry is Versioned<StoredOp> =>
      entry !== undefined && entry.value.state === "pending"
    );
    if (current.length === 0) return claimed;
  }
  throw new StorageError(
    `Cannot claim ops for push as the store kept changing concurrently: current value is ${ctx.limits.writeRetries} attempts`,
    { retryable: true },
  );
}

/** The decided fate of one pushed op, computed once per result. */
type Outcome =
  | { type: "ack"; record: JsonObject | null; status: number }
  | {
    type: "conflict";
    conflict: Conflict;
    decision: ConflictDecision;
    server: JsonObject | null;
    serverUpdatedAt: string | null;
  }
  | { type: "recreate"; server: JsonObject | null }
  | { type: "rejected"; error: SyncError }
  | { type: "retry"; error: SyncError };

interface Settled {
  done: number;
  retryAfterMs: number | null;
  unreachable: SyncError | null;
}

async function settleResults(
  ctx: EngineContext,
  claimed: readonly Versioned<StoredOp>[],
  results: readonly PushResult[],
  sentAt: number,
  fates: Map<string, Fate>,
  stats: SyncStats,
): Promise<Settled> {
  let retryAfterMs: number | null = null;
  let networkFailures = 0;
  let firstNetworkError: SyncError | null = null;
  const outcomes = new Map<string, Outcome>();

  for (let i = 0; i < claimed.length; i++) {
    const op = claimed[i]!.value;
    const result = results[i]!;
    if (result.type === "ok" || result.type === "conflict") {
      ctx.observeServerDate(result.serverDate, sentAt);
      const wrong = answerError(ctx.table(op.kind), op, result);
      if (wrong !== null) {
        outcomes.set(op.opId, { type: "rejected", error: wrong });
        continue;
      }
    }
    switch (result.type) {
      case "ok":
        outcomes.set(op.opId, {
          type: "ack",
          record: result.record,
          status: result.status,
        });
        break;
      case "rejected":
        outcomes.set(op.opId, { type: "rejected", error: result.error });
        break;
      case "retry":
        if (result.retryAfterMs !== null) {
          retryAfterMs = Math.max(
            retryAfterMs ?? 0,
            clampDelay(result.retryAfterMs, MAX_RETRY_AFTER_MS),
          );
        }
        if (result.error.category === "network") {
          networkFailures++;
          firstNetworkError ??= result.error;
        }
        outcomes.set(op.opId, { type: "retry", error: result.error });
        break;
      case "conflict": {
        const table = ctx.table(op.kind);
        const conflict = buildConflict(table, op, result);
        if (
          op.type === "upsert" && conflict.serverDeleted &&
          op.baseUpdatedAt !== null &&
          conflict.serverUpdatedAt !== null &&
          compareInstants(conflict.serverUpdatedAt, op.baseUpdatedAt) === 0
        ) {
          // The server refuses a based write onto a tombstone, but this
          // tombstone is the very version the op builds on: the app deleted
          // and re-created the record knowingly. Not a conflict: re-send it
          // unconditionally (the contract resurrects), with a fresh key.
          outcomes.set(op.opId, { type: "recreate", server: result.current });
          break;
        }
        stats.conflicts++;
        ctx.hub.emit({
          type: "conflictDetected",
          kind: op.kind,
          id: op.id,
          opId: op.opId,
          local: conflict.local,
          server: conflict.server,
          strategy: table.policy.strategy,
        });
        let decision: ConflictDecision;
        try {
          decision = op.conflicts >= ctx.limits.maxConflictRetries
            ? { type: "defer" }
            : await decideConflict(conflict, table.policy, {
              clockSkewMs: ctx.clockSkewMs(),
            });
        } catch (error) {
          // A throwing resolver or merge function must not lose the op:
          // park it and report the error.
          const syncError = toSyncError(error, "conflict");
          ctx.hub.emit({
            type: "error",
            error: syncError,
            category: syncError.category,
            retryable: false,
          });
          decision = { type: "defer" };
        }
        outcomes.set(op.opId, {
          type: "conflict",
          conflict,
          decision,
          server: result.current,
          serverUpdatedAt: result.serverTimestamp ?? conflict.serverUpdatedAt,
        });
        break;
      }
    }
  }

  // Plan and commit op by op; a group whose write lost a race is planned
  // again from fresh reads, the committed ones keep their events.
  let done = 0;
  let remaining = [...claimed];
  for (
    let attempt = 0;
    remaining.length > 0 && attempt < ctx.limits.writeRetries;
    attempt++
  ) {
    // The claim's own entries are current unless a write failed since.
    const fresh = await readFresh(ctx, remaining, attempt === 0);
    const plans: {
      op: Versioned<StoredOp>;
      plan: OpPlan;
      events: SyncEvent[];
    }[] = [];
    for (const op of fresh.ops) {
      const events: SyncEvent[] = [];
      const plan = planOutcome(
        ctx,
        ctx.table(op.value.kind),
        fresh.records.get(recordKey(op.value.kind, op.value.id)),
        op,
        fresh.later.get(op.value.opId) ?? [],
        outcomes.get(op.value.opId)!,
        events,
      );
      if (plan !== null) plans.push({ op, plan, events });
    }
    const maxMutations = ctx.storage.capabilities.maxMutationsPerWrite;
    const groups = plans.map((p) => planGroups(p.plan, maxMutations));
    const { failed } = await writeChunked(
      ctx,
      groups.map((group) => group.first),
    );
    // Follow-ups that did not fit their plan's write (a record with more
    // queued ops than one write holds): each checks its own op.
    for (const [index, group] of groups.entries()) {
      if (failed.has(index)) continue;
      for (const rest of group.rest) {
        await writeChunked(ctx, rest.map((m) => [m]));
      }
    }
    const retry = new Set<string>();
    plans.forEach(({ op, plan, events }, index) => {
      if (failed.has(index)) {
        retry.add(op.value.opId);
        return;
      }
      done++;
      if (plan.change !== null) events.push({ type: "change", ...plan.change });
      fates.set(op.value.opId, fateOf(outcomes.get(op.value.opId)!));
      for (const event of events) {
        count(stats, event);
        ctx.hub.emit(event);
      }
    });
    remaining = remaining.filter((entry) => retry.has(entry.value.opId));
  }
  if (remaining.length > 0) {
    throw new StorageError(
      `Cannot settle pushed ops as the store kept changing concurrently: current value is ${ctx.limits.writeRetries} attempts`,
      { retryable: true },
    );
  }
  return {
    done,
    retryAfterMs,
    unreachable:
      networkFailures === claimed.length && firstNetworkError !== null
        ? new NetworkError(firstNetworkError.message, {
          cause: firstNetworkError,
        })
        : null,
  };
}

function fateOf(outcome: Outcome): Fate {
  switch (outcome.type) {
    case "ack":
      return "done";
    case "recreate":
      return "again";
    case "rejected":
    case "retry":
      return "blocked";
    case "conflict":
      return outcome.decision.type === "write"
        ? "again"
        : outcome.decision.type === "defer"
        ? "blocked"
        : "done";
  }
}

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

function planOutcome(
  ctx: EngineContext,
  table: TableConfig,
  record: Versioned<StoredRecord> | undefined,
  op: Versioned<StoredOp>,
  later: readonly Versioned<StoredOp>[],
  outcome: Outcome,
  events: SyncEvent[],
): OpPlan | null {
  const { kind, id, opId } = op.value;
  const now = ctx.now();
  switch (outcome.type) {
    case "ack": {
      if (record === undefined) {
        // The record is gone locally (never expected): the server has the
        // write, so the op is done; a pull brings the record back.
        return {
          mutations: [{ type: "deleteOp", opId, expect: op.rev }],
          change: null,
        };
      }
      events.push({
        type: "opPushed",
        kind,
        id,
        opId,
        opType: op.value.type,
        status: outcome.status,
      });
      return planAck(table, record, op, later, outcome.record);
    }
    case "recreate":
      if (record === undefined) return null;
      return planForcedWrite(
        table,
        record,
        op,
        outcome.server,
        op.value.payload,
        { countsAsConflict: false },
      );
    case "rejected":
      events.push({
        type: "opQuarantined",
        kind,
        id,
        opId,
        error: outcome.error,
      });
      return planFailure(op, opError(outcome.error, now), "quarantined");
    case "retry":
      events.push({
        type: "opFailed",
        kind,
        id,
        opId,
        error: outcome.error,
        retryable: true,
      });
      return planFailure(op, opError(outcome.error, now), "pending");
    case "conflict": {
      const { decision, conflict, server } = outcome;
      if (record === undefined) {
        // Nothing local to resolve against (never expected): park it where
        // the app can see it rather than resend it forever.
        events.push({
          type: "conflictDeferred",
          kind,
          id,
          opId,
          reason: "manual",
        });
        return planPark(op, {
          server,
          serverUpdatedAt: outcome.serverUpdatedAt,
          local: op.value.payload,
          base: op.value.base,
          detectedAt: now,
        });
      }
      const strategy = table.policy.strategy;
      if (decision.type === "defer") {
        events.push({
          type: "conflictDeferred",
          kind,
          id,
          opId,
          reason: op.value.conflicts >= ctx.limits.maxConflictRetries
            ? "retries-exhausted"
            : "manual",
        });
        return planPark(op, {
          server,
          serverUpdatedAt: outcome.serverUpdatedAt,
          local: op.value.payload,
          base: op.value.base,
          detectedAt: now,
        });
      }
      if (decision.type === "write") {
        if (decision.merge !== undefined && conflict.server !== null) {
          events.push({
            type: "dataMerged",
            kind,
            id,
            local: conflict.local ?? {},
            server: conflict.server,
            result: decision.merge.data,
            localFields: decision.merge.localFields,
            serverFields: decision.merge.serverFields,
            conflictingFields: decision.merge.conflictingFields,
          });
        }
        events.push({
          type: "conflictResolved",
          kind,
          id,
          opId,
          strategy,
          resolution: decision.resolution,
          result: decision.data,
        });
        return planForcedWrite(table, record, op, server, decision.data);
      }
      events.push({
        type: "conflictResolved",
        kind,
        id,
        opId,
        strategy,
        resolution: decision.type,
        result: server,
      });
      return planAcceptServer(table, record, op, server, later);
    }
  }
}

/**
 * Checks what a server answered for an op (ENGINE.md clause 25): the record
 * of a `2xx`, or the current record of a `409`, must be a valid record (see
 * `readRecordMeta`) of the op's own id, and a 409's `serverTimestamp` a
 * timestamp. Anything else is a protocol error for that op alone: it is
 * quarantined rather than retried, since the server would replay the same
 * stored answer for the same idempotency key, and nothing of the answer is
 * stored under either id.
 *
 * @returns The error, or `null` when the answer is sound.
 */
function answerError(
  table: TableConfig,
  op: StoredOp,
  result: Extract<PushResult, { type: "ok" | "conflict" }>,
): ParseError | null {
  const record = result.type === "ok" ? result.record : result.current;
  const action =
    `Cannot accept the server's answer to op "${op.opId}" of '${op.kind}'`;
  if (
    result.type === "conflict" && result.serverTimestamp !== null &&
    parseTimestamp(result.serverTimestamp) === null
  ) {
    return new ParseError(
      `${action} as its 'serverTimestamp' is not a timestamp: current value is ${
        describe(result.serverTimestamp)
      }`,
      { code: "invalid_updated_at" },
    );
  }
  if (record === null) return null;
  if (result.type === "ok" && !looksLikeRecord(table, record)) {
    // An acknowledgement body (`{"ok": true}`) carries no record: the op is
    // done and nothing of the body is stored, as for a 204.
    return null;
  }
  const meta = readRecordMeta(table, record);
  if (isFault(meta)) {
    return new ParseError(`${action} as the record ${meta.reason}`, {
      code: meta.problem,
    });
  }
  if (meta.id !== op.id) {
    return new ParseError(
      `${action} as the record's "${table.idField}" is not the op's id ${
        describe(op.id)
      }: current value is ${describe(meta.id)}`,
      { code: "id_mismatch" },
    );
  }
  return null;
}

/** Whether a body has a record's id or `updated_at` field. */
function looksLikeRecord(table: TableConfig, body: JsonObject): boolean {
  const stamps = table.updatedAtField === undefined
    ? ["updated_at", "updatedAt"]
    : [table.updatedAtField];
  return Object.hasOwn(body, table.idField) ||
    stamps.some((field) => Object.hasOwn(body, field));
}

function buildConflict(
  table: TableConfig,
  op: StoredOp,
  result: Extract<PushResult, { type: "conflict" }>,
): Conflict {
  const meta = result.current === null
    ? null
    : readRecordMeta(table, result.current);
  const serverMeta = meta === null || isFault(meta) ? null : meta;
  return {
    kind: op.kind,
    id: op.id,
    opId: op.opId,
    opType: op.type,
    local: op.type === "delete" ? null : op.payload,
    server: result.current,
    serverDeleted: serverMeta?.deleted ?? false,
    base: op.base,
    changedFields: op.changedFields,
    localUpdatedAt: op.editedAt,
    serverUpdatedAt: result.serverTimestamp ?? serverMeta?.updatedAt ?? null,
  };
}

async function readRecords(
  ctx: EngineContext,
  ops: readonly StoredOp[],
): Promise<Map<string, Versioned<StoredRecord>>> {
  const byKind = new Map<string, string[]>();
  for (const op of ops) {
    const ids = byKind.get(op.kind) ?? [];
    ids.push(op.id);
    byKind.set(op.kind, ids);
  }
  const out = new Map<string, Versioned<StoredRecord>>();
  for (const [kind, ids] of byKind) {
    const entries = await ctx.storage.getRecords(kind, ids);
    entries.forEach((entry, i) => {
      if (entry !== undefined) out.set(recordKey(kind, ids[i]!), entry);
    });
  }
  return out;
}

interface FreshState {
  ops: Versioned<StoredOp>[];
  records: Map<string, Versioned<StoredRecord>>;
  later: Map<string, Versioned<StoredOp>[]>;
}

/**
 * Re-reads claimed ops, their records and the ops queued behind them. Ops
 * that vanished or changed form meanwhile were settled by another writer
 * and are left out.
 */
async function readFresh(
  ctx: EngineContext,
  claimed: readonly Versioned<StoredOp>[],
  reuse: boolean,
): Promise<FreshState> {
  const current = reuse ? claimed : await ctx.storage.getOps(
    claimed.map((entry) => entry.value.opId),
  );
  const ops = current.filter((entry, i): entry is Versioned<StoredOp> =>
    entry !== undefined && entry.value.state === "pending" &&
    entry.value.revision === claimed[i]!.value.revision
  );
  const records = await readRecords(ctx, ops.map((entry) => entry.value));
  const later = new Map<string, Versioned<StoredOp>[]>();
  for (const op of ops) {
    const record = records.get(recordKey(op.value.kind, op.value.id));
    if (record !== undefined && record.value.lastOpId !== op.value.opId) {
      later.set(
        op.value.opId,
        await listLater(ctx, op.value.kind, op.value.id, op.value.opId),
      );
    }
  }
  return { ops, records, later };
}
