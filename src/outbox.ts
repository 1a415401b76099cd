/**
 * The outbox: local writes and their ops (ENGINE.md clauses 1-4), the
 * planners that turn push outcomes into storage mutations (clauses 7, 8),
 * and the app-facing API over queued and quarantined ops.
 *
 * Every change is planned as a list of mutations with `expect` revisions
 * and committed in one {@linkcode Storage.write}; when another writer got
 * there first the plan is rebuilt from a fresh read. That is how a local
 * write and its op commit atomically without interactive transactions.
 *
 * @module
 */

import {
  compareInstants,
  type EngineContext,
  isFault,
  readRecordMeta,
  type TableConfig,
} from "./_context.ts";
import { ClosedError, StorageError, SyncError } from "./errors.ts";
import type { RecordChange } from "./events.ts";
import { type JsonObject, setOwn } from "./json.ts";
import { deepEqual, diffFields } from "./merge.ts";
import { ownedRecord } from "./_own.ts";
import { writeChunked } from "./_write.ts";
import { validateWith } from "./schema.ts";
import type {
  Mutation,
  OpConflict,
  OpError,
  OpState,
  RecordBase,
  Storage,
  StoredOp,
  StoredRecord,
  Versioned,
} from "./storage.ts";

/** What a local write asks for. */
export type LocalIntent =
  | {
    readonly type: "upsert";
    /** The record's new data (system fields already settled). */
    readonly data: JsonObject;
    /** The fields the write changed, when the caller knows them. */
    readonly changedFields?: readonly string[] | undefined;
    /** A patch's keys: the write changed these if they differ. */
    readonly patchKeys?: readonly string[] | undefined;
  }
  | { readonly type: "delete" };

/** The input of {@linkcode planLocalWrite}. */
export interface LocalWritePlanInput {
  /** The table. */
  readonly table: TableConfig;
  /** The record's id. */
  readonly id: string;
  /** The record as stored, with its revision. */
  readonly current: Versioned<StoredRecord> | undefined;
  /** The record's newest op (`current.lastOpId`), with its revision. */
  readonly latest: Versioned<StoredOp> | undefined;
  /**
   * Whether `latest` is the record's only op; only consulted for a delete of
   * a record the server never saw.
   */
  readonly latestIsOnly: boolean;
  /** What to write. */
  readonly intent: LocalIntent;
  /** The client clock (ms). */
  readonly now: number;
  /** Makes a new op id greater than `after`. */
  readonly newOpId: (after?: string) => string;
}

/** The plan of a local write. */
export interface LocalWritePlan {
  /** The mutations to commit together. */
  readonly mutations: Mutation[];
  /** The record after the write; `null` when it was removed. */
  readonly record: StoredRecord | null;
  /** The change the app sees. */
  readonly change: RecordChange;
}

/**
 * Plans a local write and its outbox op (clauses 1-3). Pure.
 *
 * Coalescing folds the write into the record's newest op when that op is
 * pending and was never sent: upsert+upsert keeps the older base and unions
 * the changed fields; upsert+delete becomes a delete; a create followed by a
 * delete of a record the server never saw leaves nothing at all.
 *
 * @param input The record, its newest op, and the intent.
 * @returns The plan, or `null` when the write changes nothing.
 */
export function planLocalWrite(
  input: LocalWritePlanInput,
): LocalWritePlan | null {
  const { table, id, current, latest, intent, now } = input;
  const record = current?.value;
  const live = record !== undefined && !record.deleted ? record : undefined;
  const foldable = table.coalesce && latest !== undefined &&
    latest.value.state === "pending" && latest.value.attempts === 0;

  if (intent.type === "delete") {
    if (record === undefined || live === undefined) return null;
    const change: RecordChange = {
      kind: table.kind,
      id,
      data: null,
      deleted: true,
      origin: "local",
    };
    if (
      foldable && latest.value.type === "upsert" && record.base === null &&
      input.latestIsOnly
    ) {
      // Created and deleted before the server saw it: nothing to tell it.
      return {
        mutations: [
          { type: "deleteRecord", kind: table.kind, id, expect: current!.rev },
          { type: "deleteOp", opId: latest.value.opId, expect: latest.rev },
        ],
        record: null,
        change,
      };
    }
    const op: StoredOp = foldable
      ? {
        ...latest.value,
        type: "delete",
        payload: null,
        changedFields: null,
        editedAt: now,
      }
      : newOp(input, "delete", null, null);
    const saved: StoredRecord = {
      ...record,
      deleted: true,
      localUpdatedAt: now,
      lastOpId: op.opId,
    };
    return {
      mutations: [
        { type: "putRecord", record: saved, expect: current!.rev },
        { type: "putOp", op, expect: foldable ? latest.rev : null },
      ],
      record: saved,
      change,
    };
  }

  const data = intent.data;
  if (live !== undefined && diffFields(live.data, data).length === 0) {
    return null;
  }
  const system = table.policy.systemFields;
  let changed: string[];
  if (intent.changedFields !== undefined) {
    changed = [...intent.changedFields];
  } else if (intent.patchKeys !== undefined && live !== undefined) {
    changed = intent.patchKeys.filter((key) =>
      !deepEqual(own(live.data, key), own(data, key))
    );
  } else {
    // Against the version this data descends from: while ops are queued
    // that is their lineage base, not a newer one a pull put in the record
    // (diffing against that would count the other side's edits as ours).
    const lineage = latest !== undefined
      ? latest.value.base
      : record?.base?.data ?? null;
    changed = diffFields(lineage, data);
  }
  changed = changed.filter((field) => !system.includes(field));

  let op: StoredOp;
  if (foldable && latest.value.type === "upsert") {
    const union = latest.value.changedFields === null
      ? null
      : [...new Set([...latest.value.changedFields, ...changed])].sort();
    op = {
      ...latest.value,
      payload: data,
      changedFields: union,
      editedAt: now,
    };
  } else if (foldable) {
    // delete + upsert: the record is written again over the same base.
    op = {
      ...latest.value,
      type: "upsert",
      payload: data,
      changedFields: changed,
      editedAt: now,
    };
  } else {
    op = newOp(input, "upsert", data, changed);
  }
  const saved: StoredRecord = {
    kind: table.kind,
    id,
    data,
    deleted: false,
    base: record?.base ?? null,
    lastOpId: op.opId,
    localUpdatedAt: now,
  };
  return {
    mutations: [
      {
        type: "putRecord",
        record: saved,
        expect: current === undefined ? null : current.rev,
      },
      { type: "putOp", op, expect: foldable ? latest.rev : null },
    ],
    record: saved,
    change: { kind: table.kind, id, data, deleted: false, origin: "local" },
  };
}

/** Reads an own field only: `data["constructor"]` must not reach `Object`. */
function own(data: JsonObject, key: string): JsonObject[string] | undefined {
  return Object.hasOwn(data, key) ? data[key] : undefined;
}

function newOp(
  input: LocalWritePlanInput,
  type: "upsert" | "delete",
  payload: JsonObject | null,
  changedFields: readonly string[] | null,
): StoredOp {
  const record = input.current?.value;
  // Per-record FIFO: a record's ops must sort after its newest op, even when
  // another process created that op within the same millisecond.
  const opId = input.newOpId(record?.lastOpId ?? undefined);
  // The op's base is the version its data descends from. While ops are
  // queued, local data descends from the newest op's base, not from a newer
  // version a pull may have put in the record (clause 11): basing the new op
  // on that would let its stale fields overwrite the pulled changes unseen.
  const latest = input.latest?.value;
  return {
    opId,
    kind: input.table.kind,
    id: input.id,
    type,
    payload,
    baseUpdatedAt: latest === undefined
      ? record?.base?.updatedAt ?? null
      : latest.baseUpdatedAt,
    base: latest === undefined ? record?.base?.data ?? null : latest.base,
    changedFields: changedFields === null ? null : [...changedFields].sort(),
    createdAt: input.now,
    editedAt: input.now,
    attempts: 0,
    revision: 0,
    conflicts: 0,
    force: false,
    state: "pending",
    error: null,
    conflict: null,
  };
}

/**
 * Runs a read-plan-write loop until the write commits or the retries run
 * out; a failed `expect` means another writer changed what was read.
 *
 * @param ctx The engine context.
 * @param what What is being written, for the error message.
 * @param attempt Reads, plans and writes once; `true` when committed.
 * @returns The committed attempt's value.
 * @throws {StorageError} When every retry lost the race.
 */
export async function withRetries<T>(
  ctx: EngineContext,
  what: string,
  attempt: () => Promise<{ ok: true; value: T } | { ok: false }>,
): Promise<T> {
  for (let i = 0; i < ctx.limits.writeRetries; i++) {
    const result = await attempt();
    if (result.ok) return result.value;
  }
  throw new StorageError(
    `Cannot ${what} as the store kept changing concurrently: current value is ${ctx.limits.writeRetries} attempts`,
    { retryable: true },
  );
}

/**
 * Writes a record locally and queues its op, atomically.
 *
 * @param ctx The engine context.
 * @param table The table.
 * @param id The record's id.
 * @param build Builds the intent from the current record (run on every
 * retry, so an update patches the freshest data).
 * @param options Whether to try the write as a create first.
 * @returns The record after the write (`null` if removed), or the unchanged
 * record when the write changed nothing.
 */
export async function writeLocal(
  ctx: EngineContext,
  table: TableConfig,
  id: string,
  build: (current: StoredRecord | undefined) => Promise<LocalIntent>,
  options: LocalWriteOptions = {},
): Promise<StoredRecord | null | undefined> {
  if (options.assumeAbsent === true) {
    // A create can skip the read: its write expects the record absent, so
    // if it exists after all the write is refused and the loop below reads.
    // The guess is extra: it does not use up one of the retries.
    const outcome = await attemptLocalWrite(ctx, table, id, build, undefined);
    options.onGuess?.(outcome.ok);
    if (outcome.ok) return outcome.value;
  }
  return await withRetries(
    ctx,
    `write record "${id}" of '${table.kind}'`,
    async () => {
      const [current] = await ctx.storage.getRecords(table.kind, [id]);
      return await attemptLocalWrite(ctx, table, id, build, current);
    },
  );
}

/** Options of {@linkcode writeLocal}. */
export interface LocalWriteOptions {
  /**
   * Try the write as a create first, without reading: the record is read
   * only if the create is refused.
   */
  readonly assumeAbsent?: boolean;
  /** Told whether the create-first guess held. */
  readonly onGuess?: (held: boolean) => void;
}

async function attemptLocalWrite(
  ctx: EngineContext,
  table: TableConfig,
  id: string,
  build: (current: StoredRecord | undefined) => Promise<LocalIntent>,
  current: Versioned<StoredRecord> | undefined,
): Promise<
  { ok: true; value: StoredRecord | null | undefined } | { ok: false }
> {
  const intent = await build(current?.value);
  const lastOpId = current?.value.lastOpId ?? null;
  const [latest] = lastOpId === null
    ? [undefined]
    : await ctx.storage.getOps([lastOpId]);
  let latestIsOnly = false;
  if (
    intent.type === "delete" && latest !== undefined &&
    current?.value.base === null
  ) {
    const ops = await ctx.storage.listOps({
      kinds: [table.kind],
      id,
      limit: 2,
    });
    latestIsOnly = ops.length === 1;
  }
  const plan = planLocalWrite({
    table,
    id,
    current,
    latest,
    latestIsOnly,
    intent,
    now: ctx.now(),
    newOpId: (after) => ctx.newOpId(after),
  });
  if (plan === null) return { ok: true, value: current?.value };
  const result = await ctx.storage.write(plan.mutations);
  if (!result.ok) return { ok: false };
  ctx.hub.emit({ type: "change", ...plan.change });
  return { ok: true, value: plan.record };
}

/**
 * Writes many records locally and queues their ops: one read of the current
 * records and their newest ops, then every record's write in as few storage
 * writes as the limits allow. Each record commits with its op atomically; a
 * record whose write lost a race is written again on its own.
 *
 * @param ctx The engine context.
 * @param table The table.
 * @param ids The records' ids, all distinct.
 * @param build Builds each record's data from its current state.
 * @returns Each record after its write, in order.
 */
export async function writeLocalMany(
  ctx: EngineContext,
  table: TableConfig,
  ids: readonly string[],
  build: (current: StoredRecord | undefined, index: number) => JsonObject,
): Promise<(StoredRecord | null | undefined)[]> {
  const out: (StoredRecord | null | undefined)[] = new Array(ids.length);
  const CHUNK = 500;
  for (let start = 0; start < ids.length; start += CHUNK) {
    const slice = ids.slice(start, start + CHUNK);
    const currents = await ctx.storage.getRecords(table.kind, slice);
    const lastOpIds = currents.map((entry) => entry?.value.lastOpId ?? null);
    const wanted = lastOpIds.filter((id): id is string => id !== null);
    const latestById = new Map<string, Versioned<StoredOp>>();
    if (wanted.length > 0) {
      const read = await ctx.storage.getOps(wanted);
      read.forEach((entry) => {
        if (entry !== undefined) latestById.set(entry.value.opId, entry);
      });
    }
    const plans: (LocalWritePlan | null)[] = slice.map((id, i) => {
      const current = currents[i];
      const lastOpId = lastOpIds[i] ?? null;
      return planLocalWrite({
        table,
        id,
        current,
        latest: lastOpId === null ? undefined : latestById.get(lastOpId),
        latestIsOnly: false,
        intent: { type: "upsert", data: build(current?.value, start + i) },
        now: ctx.now(),
        newOpId: (after) => ctx.newOpId(after),
      });
    });
    const groups = plans.map((plan) => plan?.mutations ?? []);
    const { failed } = await writeChunked(ctx, groups, (committed) => {
      // Announced as each write lands: if a later one fails, the records
      // already written are known.
      for (const i of committed) {
        const plan = plans[i];
        if (plan !== null && plan !== undefined) {
          ctx.hub.emit({ type: "change", ...plan.change });
        }
      }
    });
    for (let i = 0; i < slice.length; i++) {
      const plan = plans[i]!;
      if (failed.has(i)) {
        // Another writer changed this record in between: write it alone.
        const index = start + i;
        out[index] = await writeLocal(
          ctx,
          table,
          slice[i]!,
          (current) =>
            Promise.resolve({
              type: "upsert",
              data: build(current, index),
            }),
        );
        continue;
      }
      out[start + i] = plan === null ? currents[i]?.value : plan.record;
    }
  }
  return out;
}

/**
 * Settles a table's server-owned fields on data the app wants to write,
 * in place: the data must be a copy the engine owns.
 */
export function settleSystemFields(
  table: TableConfig,
  id: string,
  data: JsonObject,
  current: StoredRecord | undefined,
): JsonObject {
  // `data` is the caller's own copy (ownedRecord): settled in place.
  // updated_at and deleted_at belong to the server: the app cannot set them,
  // and a put that omits them must not count as changing them.
  for (const field of serverOwnedFields(table)) {
    if (Object.hasOwn(data, field)) delete data[field];
    const kept = current === undefined ? undefined : own(current.data, field);
    if (kept !== undefined && !field.startsWith("deleted")) {
      setOwn(data, field, kept);
    }
  }
  setOwn(data, table.idField, id);
  return data;
}

function serverOwnedFields(table: TableConfig): string[] {
  return [
    ...(table.updatedAtField === undefined
      ? ["updated_at", "updatedAt"]
      : [table.updatedAtField]),
    ...(table.deletedAtField === undefined
      ? ["deleted_at", "deletedAt"]
      : [table.deletedAtField]),
  ];
}

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

/** A planned change of one record and its op, with what the app sees. */
export interface OpPlan {
  /** The mutations that must commit together. */
  readonly mutations: Mutation[];
  /**
   * Mutations of other queued ops (rebases, rebuilt bodies) that commit with
   * `mutations` when they fit one write, and in writes of their own when
   * they do not: each stands alone and checks its op's revision.
   */
  readonly follow?: Mutation[];
  /** The change the app sees, if the visible data changed. */
  readonly change: RecordChange | null;
}

/**
 * Splits a plan into writes: the plan's own mutations with as many of the
 * follow-up ones as fit, then the rest in groups that fit.
 *
 * @param plan The plan.
 * @param maxMutations The storage's `maxMutationsPerWrite`.
 * @returns The first group (atomic) and the further groups.
 */
export function planGroups(
  plan: OpPlan,
  maxMutations: number,
): { first: Mutation[]; rest: Mutation[][] } {
  const follow = plan.follow ?? [];
  const room = Math.max(0, maxMutations - plan.mutations.length);
  const first = [...plan.mutations, ...follow.slice(0, room)];
  const rest: Mutation[][] = [];
  for (let i = room; i < follow.length; i += Math.max(1, maxMutations)) {
    rest.push(follow.slice(i, i + Math.max(1, maxMutations)));
  }
  return { first, rest };
}

/**
 * Commits one plan: its mutations atomically (with the follow-ups that
 * fit), then the other follow-ups; a follow-up whose op changed meanwhile is
 * skipped, as its op was rewritten by someone who saw newer state.
 *
 * @param ctx The engine context.
 * @param plan The plan.
 * @returns Whether the plan's own mutations committed.
 */
export async function commitPlan(
  ctx: EngineContext,
  plan: OpPlan,
): Promise<boolean> {
  const { first, rest } = planGroups(
    plan,
    ctx.storage.capabilities.maxMutationsPerWrite,
  );
  const result = await ctx.storage.write(first);
  if (!result.ok) return false;
  for (const group of rest) {
    // Each follow-up checks its own op; one refused does not stop the rest.
    for (const mutation of group) await ctx.storage.write([mutation]);
  }
  return true;
}

/**
 * Lists all ops queued behind `after` for one record, page by page.
 *
 * @param ctx The engine context.
 * @param kind The table.
 * @param id The record's id.
 * @param after The op they follow.
 * @returns The ops, in outbox order.
 */
export async function listLater(
  ctx: EngineContext,
  kind: string,
  id: string,
  after: string,
): Promise<Versioned<StoredOp>[]> {
  const out: Versioned<StoredOp>[] = [];
  let cursor = after;
  for (;;) {
    const page = await ctx.storage.listOps({
      kinds: [kind],
      id,
      after: cursor,
      limit: 512,
    });
    out.push(...page);
    if (page.length < 512) return out;
    cursor = page[page.length - 1]!.value.opId;
  }
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

/**
 * Takes a server record as the record's new base, and as its data when no
 * other op is queued for it; removes the op. With `rebase`, the queued ops
 * built on the acknowledged op's data move onto the version it produced
 * (clause 7): our own accepted write is never a conflict for our next write.
 */
function settle(
  table: TableConfig,
  record: Versioned<StoredRecord>,
  op: Versioned<StoredOp>,
  later: readonly Versioned<StoredOp>[],
  base: RecordBase | null,
  localDeleted: boolean,
  rebase: Rebase | null,
): OpPlan {
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
 * @param server The stored record the server returned, if any.
 * @returns The plan.
 */
export function planAck(
  table: TableConfig,
  record: Versioned<StoredRecord>,
  op: Versioned<StoredOp>,
  later: readonly Versioned<StoredOp>[],
  server: JsonObject | null,
): OpPlan {
  const returned = baseOf(table, server);
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
  return settle(
    table,
    record,
    op,
    later,
    settled,
    op.value.type === "delete",
    returned !== null
      ? { from: op.value.baseUpdatedAt, to: returned }
      : op.value.type === "delete"
      ? { from: op.value.baseUpdatedAt, to: null }
      : null,
  );
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
    return settle(table, record, op, [], base, record.value.deleted, null);
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
    const value = own(from, field);
    if (value === undefined) {
      delete out[field];
    } else {
      setOwn(out, field, value);
    }
  }
  return out;
}

/** Options for {@linkcode Outbox.list}. */
export interface OutboxListOptions {
  /** Only ops in these states. */
  readonly states?: readonly OpState[];
  /** Only ops of these tables. */
  readonly kinds?: readonly string[];
  /** Only ops after this op id. */
  readonly after?: string;
  /**
   * The most ops to return.
   *
   * @default 1000
   */
  readonly limit?: number;
}

/**
 * The app's view of the outbox: what is queued, what was rejected, and the
 * means to retry, edit or drop rejected ops (clause 8). Obtained from
 * `engine.outbox`.
 */
export class Outbox {
  #ctx: EngineContext;
  #assertOpen: (action: string) => void;

  /**
   * Constructs a new instance. Apps get one from `engine.outbox`.
   *
   * @param ctx The engine context.
   * @param assertOpen Throws a `ClosedError` once the engine is closed.
   */
  constructor(ctx: EngineContext, assertOpen: (action: string) => void) {
    this.#ctx = ctx;
    this.#assertOpen = assertOpen;
  }

  /**
   * Lists ops in outbox order.
   *
   * @param options Filters and paging.
   * @returns The ops.
   */
  async list(options: OutboxListOptions = {}): Promise<StoredOp[]> {
    this.#assertOpen("list the outbox");
    const entries = await this.#ctx.storage.listOps({
      ...(options.states === undefined ? {} : { states: options.states }),
      ...(options.kinds === undefined ? {} : { kinds: options.kinds }),
      ...(options.after === undefined ? {} : { after: options.after }),
      limit: options.limit ?? 1000,
    });
    return entries.map((entry) => entry.value);
  }

  /**
   * Counts ops, in pages so a large outbox is never loaded whole.
   *
   * @param states Which states to count.
   * @returns The count.
   */
  async count(
    states: readonly OpState[] = ["pending", "quarantined", "parked"],
  ): Promise<number> {
    this.#assertOpen("count the outbox");
    return await countOps(this.#ctx.storage, states);
  }

  /**
   * Lists the quarantined ops (rejected by the server) with their errors.
   *
   * @param options Tables, paging cursor and limit (1000 by default).
   * @returns The ops.
   */
  quarantined(
    options: Omit<OutboxListOptions, "states"> = {},
  ): Promise<StoredOp[]> {
    return this.list({ ...options, states: ["quarantined"] });
  }

  /**
   * Puts a quarantined op back in the live queue, unchanged. It is sent with
   * a fresh idempotency key, as the server keeps its refusal under the old
   * one.
   *
   * @param opId The op.
   * @throws {SyncError} When the op is not quarantined.
   */
  async retry(opId: string): Promise<void> {
    this.#assertOpen("retry an op");
    await this.#revive(opId, "retry", undefined);
  }

  /**
   * Replaces a quarantined op's payload and puts it back in the queue. The
   * table's schema validates the new payload, and the local record shows it
   * when no later op is queued.
   *
   * @param opId The op.
   * @param payload The record to send instead.
   * @throws {SyncError} When the op is not quarantined or not an upsert.
   * @throws {ValidationError} When the payload fails the schema.
   */
  async edit(opId: string, payload: JsonObject): Promise<void> {
    this.#assertOpen("edit an op");
    await this.#revive(opId, "edit", payload);
  }

  /**
   * Removes a quarantined, parked or never-sent op for good. The local
   * record becomes the last server version plus the changes of the ops that
   * remain (or disappears if the server never had it), and the remaining
   * unsent ops' bodies lose the dropped change too.
   *
   * @param opId The op.
   * @returns `true` when an op was removed.
   * @throws {SyncError} When the op was sent and may be on the server.
   */
  async drop(opId: string): Promise<boolean> {
    this.#assertOpen("drop an op");
    const ctx = this.#ctx;
    return await withRetries<boolean>(ctx, `drop op "${opId}"`, async () => {
      const [op] = await ctx.storage.getOps([opId]);
      if (op === undefined) return { ok: true, value: false };
      if (op.value.state === "pending" && op.value.attempts > 0) {
        // Its response may have been lost: the server may hold it already,
        // and the local record must not pretend otherwise.
        throw new SyncError(
          `Cannot drop op as it may have reached the server: current value is ${op.value.attempts} attempts`,
          { category: "validation" },
        );
      }
      const { kind, id } = op.value;
      const [record] = await ctx.storage.getRecords(kind, [id]);
      const ops = await listLater(ctx, kind, id, "");
      const remaining = ops.filter((entry) => entry.value.opId !== opId);
      const replay = record === undefined
        ? null
        : planReplay(record, remaining);
      const plan: OpPlan = {
        mutations: [
          { type: "deleteOp", opId, expect: op.rev },
          ...(replay?.mutations ?? []),
        ],
        follow: replay?.follow ?? [],
        change: replay?.change ?? null,
      };
      if (!await commitPlan(ctx, plan)) return { ok: false };
      if (plan.change !== null) {
        ctx.hub.emit({ type: "change", ...plan.change });
      }
      return { ok: true, value: true };
    });
  }

  async #revive(
    opId: string,
    action: "retry" | "edit",
    payload: JsonObject | undefined,
  ): Promise<void> {
    const ctx = this.#ctx;
    let validated: JsonObject | undefined;
    await withRetries(ctx, `${action} op "${opId}"`, async () => {
      const [op] = await ctx.storage.getOps([opId]);
      if (op === undefined || op.value.state !== "quarantined") {
        throw new SyncError(
          `Cannot ${action} op as it is not quarantined: current value is ${
            op === undefined ? "absent" : `"${op.value.state}"`
          }`,
          { category: "validation" },
        );
      }
      const table = ctx.tableOrDefault(op.value.kind);
      const mutations: Mutation[] = [];
      const follow: Mutation[] = [];
      let change: RecordChange | null = null;
      let next: StoredOp = {
        ...op.value,
        state: "pending",
        error: null,
        revision: op.value.revision + 1,
      };
      if (payload !== undefined) {
        if (op.value.type !== "upsert") {
          throw new SyncError(
            `Cannot edit op as it is not an upsert: current value is "${op.value.type}"`,
            { category: "validation" },
          );
        }
        // An owned copy: the app may reuse its payload object afterwards.
        validated ??= ownedRecord(
          table.kind,
          table.schema === undefined ? payload : await validateWith(
            table.schema,
            payload,
            `op "${opId}"`,
          ) as JsonObject,
        );
        const [record] = await ctx.storage.getRecords(op.value.kind, [
          op.value.id,
        ]);
        const data = settleSystemFields(
          table,
          op.value.id,
          validated,
          record?.value,
        );
        next = {
          ...next,
          payload: data,
          changedFields: next.changedFields === null ? null : [
            ...new Set([
              ...next.changedFields,
              ...diffFields(op.value.payload, data),
            ]),
          ].sort(),
        };
        if (record !== undefined && record.value.lastOpId === opId) {
          mutations.push({
            type: "putRecord",
            record: { ...record.value, data, deleted: false },
            expect: record.rev,
          });
          change = {
            kind: table.kind,
            id: op.value.id,
            data,
            deleted: false,
            origin: "local",
          };
        } else if (record !== undefined) {
          // Ops queued behind carry the rejected body inside theirs: rebuild
          // them on the edited one, so the edit is what they build on.
          const later = await listLater(ctx, op.value.kind, op.value.id, opId);
          const replay = planReplay(record, later, data);
          mutations.push(...replay.mutations);
          follow.push(...replay.follow ?? []);
          change = replay.change;
        }
      }
      mutations.push({ type: "putOp", op: next, expect: op.rev });
      if (!await commitPlan(ctx, { mutations, follow, change })) {
        return { ok: false };
      }
      if (change !== null) ctx.hub.emit({ type: "change", ...change });
      return { ok: true, value: undefined };
    });
  }
}

/**
 * Counts ops in pages.
 *
 * @param storage The store.
 * @param states Which states to count.
 * @param kinds Which tables, or all.
 * @returns The count.
 */
export async function countOps(
  storage: Storage,
  states: readonly OpState[],
  kinds?: readonly string[],
): Promise<number> {
  let count = 0;
  let after: string | undefined;
  for (;;) {
    const page = await storage.listOps({
      states,
      ...(kinds === undefined ? {} : { kinds }),
      ...(after === undefined ? {} : { after }),
      limit: 1000,
    });
    count += page.length;
    if (page.length < 1000) return count;
    after = page[page.length - 1]!.value.opId;
  }
}

/**
 * The assert used by engine-owned objects after close.
 *
 * @param closed Whether the engine is closed.
 * @param action What was attempted.
 * @throws {ClosedError} When closed.
 */
export function assertOpen(closed: boolean, action: string): void {
  if (closed) {
    throw new ClosedError(`Cannot ${action} as the engine is closed`);
  }
}
