/**
 * The storage writes a pushed op's outcome plans (ENGINE.md clauses 7, 8,
 * 15, 17), with the events they announce once committed. Pure: the input
 * is everything read, the output is a plan for `_commit.ts`.
 *
 * @module
 */

import type { TableConfig } from "./_context.ts";
import type { OpPlan } from "./_commit.ts";
import type { Outcome } from "./_push_decide.ts";
import {
  baseOf,
  opError,
  planAcceptServer,
  planAck,
  planFailure,
  planForcedWrite,
  planPark,
} from "./_settle.ts";
import type { SyncEvent } from "./events.ts";
import { acceptedOutcome } from "./_outcomes.ts";
import type { WriteOutcome } from "./outcome.ts";
import type { StoredOp, StoredRecord, Versioned } from "./storage.ts";

/** The input of {@linkcode planOutcome}: the outcome and fresh reads. */
export interface OutcomePlanInput {
  /** The op's table. */
  readonly table: TableConfig;
  /** The op's record, freshly read; `undefined` when it is gone. */
  readonly record: Versioned<StoredRecord> | undefined;
  /** The op, freshly read. */
  readonly op: Versioned<StoredOp>;
  /** The record's ops queued behind `op`, in order. */
  readonly later: readonly Versioned<StoredOp>[];
  /** What the server's answer means for the op. */
  readonly outcome: Outcome;
  /** The client clock (ms), for the errors and conflicts recorded. */
  readonly now: number;
  /** Resolutions of one op before it is parked (clause 17). */
  readonly maxConflictRetries: number;
}

/** A planned outcome: the writes, and the events once they commit. */
export interface PlannedOutcome {
  /** The writes. */
  readonly plan: OpPlan;
  /** The events, in order; the plan's `change` comes after them. */
  readonly events: SyncEvent[];
  /**
   * What the op's writes end once committed (clause 24); absent when the op
   * stays queued (retried, or re-formed to go again).
   */
  readonly settled?: WriteOutcome;
}

/**
 * Plans the writes of one op's outcome.
 *
 * @param input The outcome, the op, its record and the ops behind it.
 * @returns The plan and its events, or `null` when there is nothing to
 * write.
 */
export function planOutcome(input: OutcomePlanInput): PlannedOutcome | null {
  const { table, record, op, later, outcome, now } = input;
  const { kind, id, opId } = op.value;
  switch (outcome.type) {
    case "ack": {
      // Read once, by the answer's check: the meta walks the whole record.
      const returned = outcome.base;
      if (record === undefined) {
        // The record is gone locally (never expected): the server has the
        // write, so the op is done; a pull brings the record back.
        return {
          plan: {
            mutations: [{ type: "deleteOp", opId, expect: op.rev }],
            change: null,
          },
          events: [],
          settled: acceptedOutcome(op.value, returned?.data ?? null),
        };
      }
      return {
        settled: acceptedOutcome(op.value, returned?.data ?? null),
        plan: planAck(table, record, op, later, returned),
        events: [{
          type: "opPushed",
          kind,
          id,
          opId,
          opType: op.value.type,
          status: outcome.status,
        }],
      };
    }
    case "recreate":
      if (record === undefined) return null;
      return {
        plan: planForcedWrite(
          table,
          record,
          op,
          outcome.server,
          op.value.payload,
          { countsAsConflict: false },
        ),
        events: [],
      };
    case "rejected": {
      const error = opError(outcome.error, now);
      return {
        settled: { status: "quarantined", opId, error },
        plan: planFailure(op, error, "quarantined"),
        events: [{
          type: "opQuarantined",
          kind,
          id,
          opId,
          error: outcome.error,
        }],
      };
    }
    case "retry":
      return {
        plan: planFailure(op, opError(outcome.error, now), "pending"),
        events: [{
          type: "opFailed",
          kind,
          id,
          opId,
          error: outcome.error,
          retryable: true,
        }],
      };
    case "conflict":
      return planConflict(input, outcome);
  }
}

/** Plans a conflict's decision: park, force a new form, or take the server's. */
function planConflict(
  input: OutcomePlanInput,
  outcome: Extract<Outcome, { type: "conflict" }>,
): PlannedOutcome {
  const { table, record, op, later, now } = input;
  const { kind, id, opId } = op.value;
  const { decision, conflict, server } = outcome;
  if (record === undefined || decision.type === "defer") {
    // Without a local record (never expected) there is nothing to resolve
    // against: park it where the app can see it rather than resend it.
    const exhausted = record !== undefined &&
      op.value.conflicts >= input.maxConflictRetries;
    const parked = {
      server,
      serverUpdatedAt: outcome.serverUpdatedAt,
      local: op.value.payload,
      base: op.value.base,
      detectedAt: now,
    };
    return {
      settled: { status: "deferred", opId, conflict: parked },
      plan: planPark(op, parked),
      events: [{
        type: "conflictDeferred",
        kind,
        id,
        opId,
        reason: exhausted ? "retries-exhausted" : "manual",
      }],
    };
  }
  const strategy = table.policy.strategy;
  if (decision.type === "write") {
    const events: SyncEvent[] = [];
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
    return {
      plan: planForcedWrite(table, record, op, server, decision.data),
      events,
    };
  }
  return {
    settled: {
      status: "dropped",
      opId,
      reason: decision.type,
      record: baseOf(table, server)?.data ?? null,
    },
    plan: planAcceptServer(table, record, op, server, later),
    events: [{
      type: "conflictResolved",
      kind,
      id,
      opId,
      strategy,
      resolution: decision.type,
      result: server,
    }],
  };
}
