/**
 * The planners that turn push outcomes and conflict resolutions into storage
 * mutations (ENGINE.md clauses 7, 8, 15, 17): acknowledge, take the server's
 * record, force a new form, park, record a failure, and replay a record's
 * remaining ops after one left.
 *
 * @module
 */

import {
  compareInstants,
  isFault,
  readRecordMeta,
  type TableConfig,
} from "./_context.ts";
import type { OpPlan } from "./_commit.ts";
import { deepEqual, getOwn } from "./_diff.ts";
import type { SyncError } from "./errors.ts";
import { type JsonObject, setOwn } from "./json.ts";
import type {
  Mutation,
  OpConflict,
  OpError,
  OpState,
  RecordBase,
  StoredOp,
  StoredRecord,
  Versioned,
} from "./storage.ts";

/** The base a server record gives, or `null` when it is not a record. */
export function baseOf(
  table: TableConfig,
  server: JsonObject | null,
): RecordBase | null {
  if (server === null) return null;
  const meta = readRecordMeta(table, server);
  if (isFault(meta)) return null;
  return { data: server, updatedAt: meta.updatedAt, deleted: meta.deleted };
}

/** The newer of two bases, by their `updated_at` instants. */
function newer(a: RecordBase | null, b: RecordBase | null): RecordBase | null {
  if (a === null) return b;
  if (b === null) return a;
  return compareInstants(a.updatedAt, b.updatedAt) > 0 ? a : b;
}

/** Ops to move onto a version our own write produced. */
interface Rebase {
  /** The lineage base the moved ops were built on. */
  readonly from: string | null;
  /**
   * The version they now build on; `null` after a delete acknowledged
   * without a body: what follows a delete of our own re-creates the record,
   * unconditionally.
   */
  readonly to: RecordBase | null;
}

/** The input of {@linkcode settle}. */
interface SettleInput {
  /** The table. */
  readonly table: TableConfig;
  /** The record, freshly read. */
  readonly record: Versioned<StoredRecord>;
  /** The op that leaves the outbox. */
  readonly op: Versioned<StoredOp>;
  /** The record's ops queued behind `op`, in order. */
  readonly later: readonly Versioned<StoredOp>[];
  /** The record's new base: the server's version. */
  readonly base: RecordBase | null;
  /** Whether the record is deleted when the server's version is unknown. */
  readonly localDeleted: boolean;
  /** The queued ops to move onto the version our own write produced. */
  readonly rebase: Rebase | null;
}

/**
 * Takes a server record as the record's new base, and as its data when no
 * other op is queued for it; removes the op. With `rebase`, the queued ops
 * built on the acknowledged op's data move onto the version it produced
 * (clause 7): our own accepted write is never a conflict for our next write.
 */
function settle(input: SettleInput): OpPlan {
  const { table, record, op, later, base, localDeleted, rebase } = input;
  const r = record.value;
  const mutations: Mutation[] = [
    { type: "deleteOp", opId: op.value.opId, expect: op.rev },
  ];
  if (r.lastOpId === op.value.opId) {
    // The server's version, tombstone included, is what the record is now.
    const data = base !== null ? base.data : r.data;
    const deleted = base !== null ? base.deleted : localDeleted;
    const settled: StoredRecord = { ...r, data, deleted, base, lastOpId: null };
    mutations.push({ type: "putRecord", record: settled, expect: record.rev });
    const visible = deleted !== r.deleted || !deepEqual(data, r.data);
    return {
      mutations,
      change: visible
        ? {
          kind: table.kind,
          id: r.id,
          data: deleted ? null : data,
          deleted,
          origin: "pushed",
        }
        : null,
    };
  }
  mutations.push({
    type: "putRecord",
    record: { ...r, base },
    expect: record.rev,
  });
  const follow: Mutation[] = [];
  if (rebase !== null) {
    for (const entry of later) {
      // Same lineage: built on the acknowledged op's data. An op queued
      // before that op was re-formed by a conflict keeps its older lineage:
      // it never saw the merge, so it must meet its own conflict.
      if (
        entry.value.attempts === 0 &&
        entry.value.baseUpdatedAt === rebase.from
      ) {
        follow.push({
          type: "putOp",
          op: {
            ...entry.value,
            baseUpdatedAt: rebase.to?.updatedAt ?? null,
            base: rebase.to?.data ?? null,
          },
          expect: entry.rev,
        });
      }
    }
  }
  return { mutations, follow, change: null };
}

/**
 * Plans the acknowledgement of an op the server accepted.
 *
 * The queued ops built on this op's data (same lineage base) move onto the
 * version the server returned: the server holds exactly what they were
 * built on. Ops queued before this op was re-formed by a conflict keep their
 * base, meet their own conflict and merge by their own changed fields.
 *
 * @param table The table.
 * @param record The record, freshly read.
 * @param op The op, freshly read.
 * @param later The record's ops queued behind `op`, in order.
 * @param returned The base of the stored record the server returned
 * ({@linkcode baseOf}), `null` when it returned none.
 * @returns The plan.
 */
export function planAck(
  table: TableConfig,
  record: Versioned<StoredRecord>,
  op: Versioned<StoredOp>,
  later: readonly Versioned<StoredOp>[],
  returned: RecordBase | null,
): OpPlan {
  let base = returned;
  if (base === null) {
    // 204 or 404 on a delete: the record is gone, at a version we were not
    // told. Keep what we knew, marked deleted; a pull brings the tombstone.
    const old = record.value.base;
    base = op.value.type === "delete" && old !== null
      ? { ...old, deleted: true }
      : old;
  }
  // A pull may already have brought a newer version than this response.
  const settled = newer(record.value.base, base);
  return settle({
    table,
    record,
    op,
    later,
    base: settled,
    localDeleted: op.value.type === "delete",
    rebase: returned !== null
      ? { from: op.value.baseUpdatedAt, to: returned }
      : op.value.type === "delete"
      ? { from: op.value.baseUpdatedAt, to: null }
      : null,
  });
}

/**
 * Plans taking the server's record after a conflict (serverWins, discard).
 * The ops queued behind are rebuilt on the server's record (their own
 * changed fields on top of it), so the refused change does not come back
 * inside them; they keep their bases and meet their own conflicts.
 *
 * @param table The table.
 * @param record The record.
 * @param op The op to drop.
 * @param server The server's record when the conflict was met, if known.
 * @param later The record's ops queued behind `op`, in order.
 * @returns The plan.
 */
export function planAcceptServer(
  table: TableConfig,
  record: Versioned<StoredRecord>,
  op: Versioned<StoredOp>,
  server: JsonObject | null,
  later: readonly Versioned<StoredOp>[] = [],
): OpPlan {
  // A parked conflict may be resolved long after a pull brought a newer
  // version than the one it saw: never go back to the older one.
  const base = newer(record.value.base, baseOf(table, server));
  if (record.value.lastOpId === op.value.opId || later.length === 0) {
    return settle({
      table,
      record,
      op,
      later: [],
      base,
      localDeleted: record.value.deleted,
      rebase: null,
    });
  }
  const replay = planReplay(
    { value: { ...record.value, base }, rev: record.rev },
    later,
  );
  return {
    mutations: [
      { type: "deleteOp", opId: op.value.opId, expect: op.rev },
      ...replay.mutations,
    ],
    follow: replay.follow ?? [],
    change: replay.change === null
      ? null
      : { ...replay.change, origin: "pushed" },
  };
}

/** Options of {@linkcode planForcedWrite}. */
export interface ForcedWriteOptions {
  /**
   * Whether this new form answers a conflict (counted against the engine's
   * bound), rather than re-creating over our own known tombstone.
   */
  readonly countsAsConflict: boolean;
}

/**
 * Plans re-sending an op in a new form after a conflict: a forced write of
 * `data`, or a forced delete when `data` is `null`. The new form gets the
 * next revision, hence a fresh idempotency key.
 *
 * @param table The table.
 * @param record The record.
 * @param op The op.
 * @param server The server's current record, if known.
 * @param data What to force; `null` to force a delete.
 * @param options Whether the form counts as a conflict.
 * @returns The plan.
 */
export function planForcedWrite(
  table: TableConfig,
  record: Versioned<StoredRecord>,
  op: Versioned<StoredOp>,
  server: JsonObject | null,
  data: JsonObject | null,
  options: ForcedWriteOptions = { countsAsConflict: true },
): OpPlan {
  const r = record.value;
  const seen = baseOf(table, server);
  const base = newer(r.base, seen);
  const next: StoredOp = {
    ...op.value,
    type: data === null ? "delete" : "upsert",
    payload: data,
    force: true,
    revision: op.value.revision + 1,
    conflicts: op.value.conflicts + (options.countsAsConflict ? 1 : 0),
    // The body now builds on the version it was merged with.
    baseUpdatedAt: seen?.updatedAt ?? op.value.baseUpdatedAt,
    base: seen?.data ?? op.value.base,
    state: "pending",
    error: null,
    conflict: null,
  };
  const isLast = r.lastOpId === op.value.opId;
  const nextRecord: StoredRecord = isLast
    ? { ...r, base, data: data ?? r.data, deleted: data === null }
    : { ...r, base };
  const visible = isLast &&
    (nextRecord.deleted !== r.deleted || !deepEqual(nextRecord.data, r.data));
  return {
    mutations: [
      { type: "putOp", op: next, expect: op.rev },
      { type: "putRecord", record: nextRecord, expect: record.rev },
    ],
    change: visible
      ? {
        kind: table.kind,
        id: r.id,
        data: nextRecord.deleted ? null : nextRecord.data,
        deleted: nextRecord.deleted,
        origin: "pushed",
      }
      : null,
  };
}

/**
 * Plans parking an op in the conflict inbox (clause 15).
 *
 * @param op The op.
 * @param conflict What the inbox keeps about the conflict.
 * @returns The plan.
 */
export function planPark(
  op: Versioned<StoredOp>,
  conflict: OpConflict,
): OpPlan {
  return {
    mutations: [{
      type: "putOp",
      op: { ...op.value, state: "parked", conflict },
      expect: op.rev,
    }],
    change: null,
  };
}

/**
 * Plans recording an op's failure: quarantined for a rejection (clause 8),
 * left pending with its error for a retryable failure.
 *
 * @param op The op.
 * @param error The error to record.
 * @param state `"quarantined"` or `"pending"`.
 * @returns The plan.
 */
export function planFailure(
  op: Versioned<StoredOp>,
  error: OpError,
  state: OpState,
): OpPlan {
  return {
    mutations: [{
      type: "putOp",
      op: { ...op.value, state, error },
      expect: op.rev,
    }],
    change: null,
  };
}

/**
 * Describes an error for storage on an op.
 *
 * @param error The error.
 * @param at When it happened.
 * @returns The stored form.
 */
export function opError(error: SyncError, at: number): OpError {
  const body = "body" in error ? (error as { body?: unknown }).body : undefined;
  return {
    category: error.category,
    message: error.message,
    status: error.status ?? null,
    code: error.code ?? null,
    body: body === undefined ? null : body as OpError["body"],
    at,
  };
}

/**
 * Plans a record after one of its ops left the outbox (dropped, or settled
 * by taking the server's version): the record becomes its base plus the
 * remaining ops' changes, replayed in order, and each unsent remaining op's
 * body is rebuilt the same way, so the change that left leaves no trace in
 * the data or in a later body. A sent op keeps its body: the server may hold
 * it under its idempotency key.
 *
 * @param record The record.
 * @param remaining The record's ops that stay, in outbox order.
 * @param start The data the remaining ops build on, when it is not the
 * record's base (an edited op's new body).
 * @returns The plan.
 */
export function planReplay(
  record: Versioned<StoredRecord>,
  remaining: readonly Versioned<StoredOp>[],
  start?: JsonObject,
): OpPlan {
  const r = record.value;
  const base = r.base;
  const mutations: Mutation[] = [];
  const follow: Mutation[] = [];
  if (remaining.length === 0 && base === null && start === undefined) {
    mutations.push({
      type: "deleteRecord",
      kind: r.kind,
      id: r.id,
      expect: record.rev,
    });
    return {
      mutations,
      change: r.deleted ? null : {
        kind: r.kind,
        id: r.id,
        data: null,
        deleted: true,
        origin: "local",
      },
    };
  }
  // `state` is the record as the replayed changes leave it (null = deleted).
  // Bodies change, bases do not: each op still meets its own conflict with
  // whatever the server did since the version it was made on.
  let state: JsonObject | null = start ??
    (base !== null && !base.deleted ? base.data : null);
  let shown: JsonObject = start ?? base?.data ?? r.data;
  for (const entry of remaining) {
    const o = entry.value;
    if (o.attempts > 0) {
      // Sent: its body is fixed (the server may hold it under its key).
      state = o.type === "delete" ? null : o.payload;
      if (o.payload !== null) shown = o.payload;
      continue;
    }
    let body = o.payload;
    if (o.type === "upsert" && o.payload !== null) {
      body = state === null || o.changedFields === null
        ? o.payload
        : withFields(state, o.payload, o.changedFields);
    }
    if (!deepEqual(body ?? null, o.payload ?? null)) {
      follow.push({
        type: "putOp",
        op: { ...o, payload: body },
        expect: entry.rev,
      });
    }
    state = o.type === "delete" ? null : body;
    if (body !== null) shown = body;
  }
  const deleted = state === null;
  const data = state ?? shown;
  const next: StoredRecord = {
    ...r,
    data,
    deleted,
    // The newest op stays the newest unless it is the one that left.
    lastOpId: remaining.some((entry) => entry.value.opId === r.lastOpId)
      ? r.lastOpId
      : remaining.at(-1)?.value.opId ?? null,
  };
  mutations.push({ type: "putRecord", record: next, expect: record.rev });
  const visible = deleted !== r.deleted || !deepEqual(data, r.data);
  return {
    mutations,
    follow,
    change: visible
      ? {
        kind: r.kind,
        id: r.id,
        data: deleted ? null : data,
        deleted,
        origin: "local",
      }
      : null,
  };
}

/** `state` with `fields` taken from `from` (absent there = removed). */
function withFields(
  state: JsonObject,
  from: JsonObject,
  fields: readonly string[],
): JsonObject {
  const out: JsonObject = { ...state };
  for (const field of fields) {
    const value = getOwn(from, field);
    if (value === undefined) {
      delete out[field];
    } else {
      setOwn(out, field, value);
    }
  }
  return out;
}
