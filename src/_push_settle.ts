/**
 * Settling pushed ops (ENGINE.md clauses 7, 8, 14-17, 25): what each answer
 * means, the storage writes it plans, and their commit.
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
  type SyncError,
  toSyncError,
} from "./errors.ts";
import type { SyncEvent, SyncStats } from "./events.ts";
import type { JsonObject } from "./json.ts";
import { commitWithRetry, type OpPlan, planGroups } from "./_commit.ts";
import { listLater } from "./_queue.ts";
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
import type { PushResult } from "./transport.ts";

/** What became of a pushed op, for the run's queues. */
export type Fate =
  /** Left the outbox (acknowledged, dropped), or settled elsewhere. */
  | "done"
  /** Its record waits for a later run (quarantined, parked, retryable). */
  | "blocked"
  /** Re-formed after a conflict: it goes again, in a new form. */
  | "again";

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

export async function settleResults(
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
  await commitWithRetry(ctx, {
    what: "settle pushed ops",
    attempt: async (attempt) => {
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
        if (plan.change !== null) {
          events.push({ type: "change", ...plan.change });
        }
        fates.set(op.value.opId, fateOf(outcomes.get(op.value.opId)!));
        for (const event of events) {
          count(stats, event);
          ctx.hub.emit(event);
        }
      });
      remaining = remaining.filter((entry) => retry.has(entry.value.opId));
      return remaining.length === 0
        ? { ok: true, value: undefined }
        : { ok: false };
    },
  });
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
