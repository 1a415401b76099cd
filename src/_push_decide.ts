/**
 * What a server's answer means for a pushed op (ENGINE.md clauses 7-9,
 * 14-17, 25): the decision from the op, the answer and the table's conflict
 * strategy to an {@linkcode Outcome}. It reads no storage and emits no
 * event; the only code it runs besides its own is the strategy's resolver or
 * merge function.
 *
 * @module
 */

import {
  compareInstants,
  isFault,
  readRecordMeta,
  type TableConfig,
} from "./_context.ts";
import { clampDelay, MAX_RETRY_AFTER_MS } from "./backoff.ts";
import {
  type Conflict,
  type ConflictDecision,
  decideConflict,
} from "./conflict.ts";
import { describe } from "./describe.ts";
import { ParseError, type SyncError, toSyncError } from "./errors.ts";
import type { JsonObject } from "./json.ts";
import type { RecordBase, StoredOp } from "./storage.ts";
import { parseTimestamp } from "./timestamp.ts";
import type { PushResult } from "./transport.ts";

/** The decided fate of one pushed op, computed once per result. */
export type Outcome =
  /**
   * Accepted (clause 7), with the base the server's record gives (read
   * once, by the answer's check), `null` when it returned none.
   */
  | {
    type: "ack";
    record: JsonObject | null;
    base: RecordBase | null;
    status: number;
  }
  /** A real conflict, and what its strategy decided (clauses 14-17). */
  | {
    type: "conflict";
    conflict: Conflict;
    decision: ConflictDecision;
    server: JsonObject | null;
    serverUpdatedAt: string | null;
  }
  /** A re-creation over our own known tombstone: sent again, forced. */
  | { type: "recreate"; server: JsonObject | null }
  /** Refused, or answered with what breaks the contract (clauses 8, 25). */
  | { type: "rejected"; error: SyncError }
  /** A retryable failure, with the `Retry-After` asked for, clamped. */
  | { type: "retry"; error: SyncError; retryAfterMs: number | null };

/** What became of a pushed op, for the run's queues. */
export type Fate =
  /** Left the outbox (acknowledged, dropped), or settled elsewhere. */
  | "done"
  /** Its record waits for a later run (quarantined, parked, retryable). */
  | "blocked"
  /** Re-formed after a conflict: it goes again, in a new form. */
  | "again";

/** The input of {@linkcode decideOutcome}. */
export interface DecideInput {
  /** The op's table: field names and conflict policy. */
  readonly table: TableConfig;
  /** The op as it was sent. */
  readonly op: StoredOp;
  /** The server's answer to it. */
  readonly result: PushResult;
  /** Server time minus client time, in ms, for `lastWriteWins`. */
  readonly clockSkewMs: number;
  /** Resolutions of one op before it is parked (clause 17). */
  readonly maxConflictRetries: number;
  /** Told of a real conflict before its strategy runs. */
  readonly onConflict: (conflict: Conflict) => void;
  /**
   * Told what a throwing resolver or merge function threw; the op is then
   * parked rather than lost.
   */
  readonly onStrategyError: (error: SyncError) => void;
}

/**
 * Decides what a server's answer means for an op: an answer that breaks
 * the contract is a rejection of that op alone (clause 25); a `409` runs the
 * table's strategy, or parks the op once it met `maxConflictRetries`
 * conflicts (clause 17).
 *
 * @param input The op, the answer, the strategy's settings.
 * @returns The outcome; a promise only for a conflict, whose strategy may be
 * asynchronous (the common answers cost no promise and no microtask).
 */
export function decideOutcome(
  input: DecideInput,
): Outcome | Promise<Outcome> {
  const { table, op, result } = input;
  let base: RecordBase | null = null;
  if (result.type === "ok" || result.type === "conflict") {
    const checked = checkAnswer(table, op, result);
    if (checked instanceof ParseError) {
      return { type: "rejected", error: checked };
    }
    base = checked;
  }
  switch (result.type) {
    case "ok":
      return {
        type: "ack",
        record: result.record,
        base,
        status: result.status,
      };
    case "rejected":
      return { type: "rejected", error: result.error };
    case "retry":
      return {
        type: "retry",
        error: result.error,
        retryAfterMs: result.retryAfterMs === null
          ? null
          : clampDelay(result.retryAfterMs, MAX_RETRY_AFTER_MS),
      };
    case "conflict":
      return decideConflictOutcome(input, result);
  }
}

/** A `409`'s outcome: a known re-creation, or what the strategy decides. */
async function decideConflictOutcome(
  input: DecideInput,
  result: Extract<PushResult, { type: "conflict" }>,
): Promise<Outcome> {
  const { table, op } = input;
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
    return { type: "recreate", server: result.current };
  }
  input.onConflict(conflict);
  return {
    type: "conflict",
    conflict,
    decision: await decideStrategy(input, conflict),
    server: result.current,
    serverUpdatedAt: result.serverTimestamp ?? conflict.serverUpdatedAt,
  };
}

/** Runs the table's strategy, or defers once the op met too many. */
async function decideStrategy(
  input: DecideInput,
  conflict: Conflict,
): Promise<ConflictDecision> {
  if (input.op.conflicts >= input.maxConflictRetries) return { type: "defer" };
  try {
    return await decideConflict(conflict, input.table.policy, {
      clockSkewMs: input.clockSkewMs,
    });
  } catch (error) {
    // A throwing resolver or merge function must not lose the op: park it
    // and report the error.
    input.onStrategyError(toSyncError(error, "conflict"));
    return { type: "defer" };
  }
}

/**
 * Where an outcome leaves the op's record in this run.
 *
 * @param outcome The outcome.
 * @returns Its fate.
 */
export function fateOf(outcome: Outcome): Fate {
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

/**
 * Checks what a server answered for an op (ENGINE.md clause 25): the record
 * of a `2xx`, or the current record of a `409`, must be a valid record (see
 * `readRecordMeta`) of the op's own id, and a 409's `serverTimestamp` a
 * timestamp. Anything else is a protocol error for that op alone: it is
 * quarantined rather than retried, since the server would replay the same
 * stored answer for the same idempotency key, and nothing of the answer is
 * stored under either id.
 *
 * @returns The error; else the base the record gives (its meta walks the
 * whole record, so it is read here once), `null` when there is none.
 */
function checkAnswer(
  table: TableConfig,
  op: StoredOp,
  result: Extract<PushResult, { type: "ok" | "conflict" }>,
): ParseError | RecordBase | null {
  const record = result.type === "ok" ? result.record : result.current;
  // Built only for a message.
  const action = () =>
    `Cannot accept the server's answer to op "${op.opId}" of '${op.kind}'`;
  if (
    result.type === "conflict" && result.serverTimestamp !== null &&
    parseTimestamp(result.serverTimestamp) === null
  ) {
    return new ParseError(
      `${action()} as its 'serverTimestamp' is not a timestamp: current value is ${
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
    return new ParseError(`${action()} as the record ${meta.reason}`, {
      code: meta.problem,
    });
  }
  if (meta.id !== op.id) {
    return new ParseError(
      `${action()} as the record's "${table.idField}" is not the op's id ${
        describe(op.id)
      }: current value is ${describe(meta.id)}`,
      { code: "id_mismatch" },
    );
  }
  return { data: record, updatedAt: meta.updatedAt, deleted: meta.deleted };
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
