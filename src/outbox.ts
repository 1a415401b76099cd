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
  readRecordMeta,
  type TableConfig,
} from "./_context.ts";
import { ClosedError, StorageError, SyncError } from "./errors.ts";
import type { RecordChange } from "./events.ts";
import type { JsonObject } from "./json.ts";
import { deepEqual, diffFields } from "./merge.ts";
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
      source: "local",
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
      ? { ...latest.value, type: "delete", payload: null, changedFields: null }
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
    changed = diffFields(record?.base?.data ?? null, data);
  }
  changed = changed.filter((field) => !system.includes(field));

  let op: StoredOp;
  if (foldable && latest.value.type === "upsert") {
    const union = latest.value.changedFields === null
      ? null
      : [...new Set([...latest.value.changedFields, ...changed])].sort();
    op = { ...latest.value, payload: data, changedFields: union };
  } else if (foldable) {
    // delete + upsert: the record is written again over the same base.
    op = {
      ...latest.value,
      type: "upsert",
      payload: data,
      changedFields: changed,
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
    change: { kind: table.kind, id, data, deleted: false, source: "local" },
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
  return {
    opId,
    kind: input.table.kind,
    id: input.id,
    type,
    payload,
    baseUpdatedAt: record?.base?.updatedAt ?? null,
    changedFields: changedFields === null ? null : [...changedFields].sort(),
    createdAt: input.now,
    attempts: 0,
    revision: 0,
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
 * @returns The record after the write (`null` if removed), or the unchanged
 * record when the write changed nothing.
 */
export function writeLocal(
  ctx: EngineContext,
  table: TableConfig,
  id: string,
  build: (current: StoredRecord | undefined) => Promise<LocalIntent>,
): Promise<StoredRecord | null | undefined> {
  return withRetries(
    ctx,
    `write record "${id}" of '${table.kind}'`,
    async () => {
      const [current] = await ctx.storage.getRecords(table.kind, [id]);
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
    },
  );
}

/** Settles a table's server-owned fields on data the app wants to write. */
export function settleSystemFields(
  table: TableConfig,
  id: string,
  data: JsonObject,
  current: StoredRecord | undefined,
): JsonObject {
  const out: JsonObject = {};
  for (const key of Object.keys(data)) {
    Object.defineProperty(out, key, {
      value: data[key],
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  // updated_at and deleted_at belong to the server: the app cannot set them,
  // and a put that omits them must not count as changing them.
  for (const field of serverOwnedFields(table)) {
    delete out[field];
    const kept = current === undefined ? undefined : own(current.data, field);
    if (kept !== undefined && !field.startsWith("deleted")) out[field] = kept;
  }
  out[table.idField] = id;
  return out;
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
  if (typeof meta === "string") return null;
  return { data: server, updatedAt: meta.updatedAt, deleted: meta.deleted };
}

/** A planned change of one record and its op, with what the app sees. */
export interface OpPlan {
  /** The mutations. */
  readonly mutations: Mutation[];
  /** The change the app sees, if the visible data changed. */
  readonly change: RecordChange | null;
}

/**
 * Moves the ops queued behind an acknowledged one onto the new base
 * (clause 7): our own accepted write is never a conflict for our next write.
 */
function rebase(
  later: readonly Versioned<StoredOp>[],
  base: RecordBase | null,
): Mutation[] {
  if (base === null) return [];
  return later
    .filter((entry) => entry.value.baseUpdatedAt !== base.updatedAt)
    .map((entry) => ({
      type: "putOp" as const,
      op: { ...entry.value, baseUpdatedAt: base.updatedAt },
      expect: entry.rev,
    }));
}

/**
 * Takes a server record as the record's new base, and as its data when no
 * other op is queued for it; removes the op.
 */
function settle(
  table: TableConfig,
  record: Versioned<StoredRecord>,
  op: Versioned<StoredOp>,
  later: readonly Versioned<StoredOp>[],
  base: RecordBase | null,
  localDeleted: boolean,
): OpPlan {
  const r = record.value;
  const mutations: Mutation[] = [
    { type: "deleteOp", opId: op.value.opId, expect: op.rev },
  ];
  if (r.lastOpId === op.value.opId) {
    // The server's version, tombstone included, is what the record is now.
    const data = base !== null ? base.data : r.data;
    const deleted = base !== null ? base.deleted : localDeleted;
    const next: StoredRecord = { ...r, data, deleted, base, lastOpId: null };
    mutations.push({ type: "putRecord", record: next, expect: record.rev });
    const visible = deleted !== r.deleted || !deepEqual(data, r.data);
    return {
      mutations,
      change: visible
        ? {
          kind: table.kind,
          id: r.id,
          data: deleted ? null : data,
          deleted,
          source: "remote",
        }
        : null,
    };
  }
  mutations.push({
    type: "putRecord",
    record: { ...r, base },
    expect: record.rev,
  });
  mutations.push(...rebase(later, base));
  return { mutations, change: null };
}

/**
 * Plans the acknowledgement of an op the server accepted.
 *
 * @param table The table.
 * @param record The record, freshly read.
 * @param op The op, freshly read.
 * @param later The record's ops queued behind `op`.
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
  let base = baseOf(table, server);
  if (base === null) {
    // 204 or 404 on a delete: the record is gone, at a version we were not
    // told. Keep what we knew, marked deleted; a pull brings the tombstone.
    const old = record.value.base;
    base = op.value.type === "delete" && old !== null
      ? { ...old, deleted: true }
      : old;
  } else if (
    record.value.base !== null &&
    compareInstants(record.value.base.updatedAt, base.updatedAt) > 0
  ) {
    // A pull already brought a newer version than this response.
    base = record.value.base;
  }
  return settle(table, record, op, later, base, op.value.type === "delete");
}

/**
 * Plans taking the server's record after a conflict (serverWins, discard).
 *
 * @param table The table.
 * @param record The record.
 * @param op The op to drop.
 * @param later The record's ops queued behind `op`.
 * @param server The server's current record, if known.
 * @returns The plan.
 */
export function planAcceptServer(
  table: TableConfig,
  record: Versioned<StoredRecord>,
  op: Versioned<StoredOp>,
  later: readonly Versioned<StoredOp>[],
  server: JsonObject | null,
): OpPlan {
  const base = baseOf(table, server) ?? record.value.base;
  return settle(table, record, op, later, base, record.value.deleted);
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
 * @returns The plan.
 */
export function planForcedWrite(
  table: TableConfig,
  record: Versioned<StoredRecord>,
  op: Versioned<StoredOp>,
  server: JsonObject | null,
  data: JsonObject | null,
): OpPlan {
  const r = record.value;
  const base = baseOf(table, server) ?? r.base;
  const next: StoredOp = {
    ...op.value,
    type: data === null ? "delete" : "upsert",
    payload: data,
    force: true,
    revision: op.value.revision + 1,
    baseUpdatedAt: base?.updatedAt ?? null,
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
        source: "remote",
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
   * @returns The ops.
   */
  quarantined(): Promise<StoredOp[]> {
    return this.list({ states: ["quarantined"] });
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
   * Removes an op for good. When it was the record's only op, the local
   * record returns to the last server version (or disappears if the server
   * never had it).
   *
   * @param opId The op.
   * @returns `true` when an op was removed.
   */
  async drop(opId: string): Promise<boolean> {
    this.#assertOpen("drop an op");
    const ctx = this.#ctx;
    return await withRetries(ctx, `drop op "${opId}"`, async () => {
      const [op] = await ctx.storage.getOps([opId]);
      if (op === undefined) return { ok: true, value: false };
      const { kind, id } = op.value;
      const [record] = await ctx.storage.getRecords(kind, [id]);
      const mutations: Mutation[] = [
        { type: "deleteOp", opId, expect: op.rev },
      ];
      let change: RecordChange | null = null;
      if (record !== undefined && record.value.lastOpId === opId) {
        const ops = await ctx.storage.listOps({ kinds: [kind], id });
        const previous = ops.filter((entry) => entry.value.opId < opId).at(-1);
        const r = record.value;
        if (previous !== undefined) {
          mutations.push({
            type: "putRecord",
            record: { ...r, lastOpId: previous.value.opId },
            expect: record.rev,
          });
        } else if (r.base === null) {
          mutations.push({
            type: "deleteRecord",
            kind,
            id,
            expect: record.rev,
          });
          change = { kind, id, data: null, deleted: true, source: "local" };
        } else {
          const reverted: StoredRecord = {
            ...r,
            data: r.base.data,
            deleted: r.base.deleted,
            lastOpId: null,
          };
          mutations.push({
            type: "putRecord",
            record: reverted,
            expect: record.rev,
          });
          change = {
            kind,
            id,
            data: reverted.deleted ? null : reverted.data,
            deleted: reverted.deleted,
            source: "local",
          };
        }
      }
      const result = await ctx.storage.write(mutations);
      if (!result.ok) return { ok: false };
      if (change !== null) ctx.hub.emit({ type: "change", ...change });
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
      const table = ctx.table(op.value.kind);
      const mutations: Mutation[] = [];
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
        validated ??= table.schema === undefined ? payload : await validateWith(
          table.schema,
          payload,
          `op "${opId}"`,
        ) as JsonObject;
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
            source: "local",
          };
        }
      }
      mutations.push({ type: "putOp", op: next, expect: op.rev });
      const result = await ctx.storage.write(mutations);
      if (!result.ok) return { ok: false };
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
