/**
 * Local writes (ENGINE.md clauses 1-4): a record and its outbox op, planned
 * together and committed in one storage write, with coalescing into the
 * record's newest unsent op.
 *
 * @module
 */

import type { EngineContext, TableConfig } from "./_context.ts";
import { type Attempt, commitWithRetry } from "./_commit.ts";
import { deepEqual, diffFields, getOwn } from "./_diff.ts";
import type { RecordChange } from "./events.ts";
import { type JsonObject, setOwn } from "./json.ts";
import { cloneValue } from "./_clone.ts";
import { writeChunked } from "./_write.ts";
import { endUnchanged, type WriteEnds } from "./_outcomes.ts";
import type { WriteOutcome } from "./outcome.ts";
import type { Mutation, StoredOp, StoredRecord, Versioned } from "./storage.ts";

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
  /** Remembers the fields of the last create, for the next of its shape. */
  readonly fields?: FieldsMemo | undefined;
}

/** The plan of a local write. */
export interface LocalWritePlan {
  /** The mutations to commit together. */
  readonly mutations: Mutation[];
  /** The record after the write; `null` when it was removed. */
  readonly record: StoredRecord | null;
  /** The change the app sees. */
  readonly change: RecordChange;
  /**
   * The op that carries the write; with `cancelled`, the op removed with it
   * (created and deleted before the server saw it).
   */
  readonly opId: string;
  /** Whether the write removed its op instead of queuing one. */
  readonly cancelled?: boolean;
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
        opId: latest.value.opId,
        cancelled: true,
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
      opId: op.opId,
    };
  }

  const data = intent.data;
  if (live !== undefined && diffFields(live.data, data).length === 0) {
    return null;
  }
  const system = table.policy.systemFields;
  let changed: string[];
  // Whether `changed` is sorted already, as an op keeps it.
  let sorted = false;
  if (intent.changedFields !== undefined) {
    changed = [...intent.changedFields];
  } else if (intent.patchKeys !== undefined && live !== undefined) {
    changed = intent.patchKeys.filter((key) =>
      !deepEqual(getOwn(live.data, key), getOwn(data, key))
    );
  } else {
    // Against the version this data descends from: while ops are queued
    // that is their lineage base, not a newer one a pull put in the record
    // (diffing against that would count the other side's edits as ours).
    const lineage = latest !== undefined
      ? latest.value.base
      : record?.base?.data ?? null;
    if (lineage === null && input.fields !== undefined) {
      // Every field of a create: the memo has them when the last create
      // had the same keys (a batch of one shape), system fields left out.
      changed = input.fields.of(data, system);
    } else {
      changed = diffFields(lineage, data);
      changed = changed.filter((field) => !system.includes(field));
    }
    sorted = true;
  }
  if (!sorted) changed = changed.filter((field) => !system.includes(field));

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
    op = newOp(input, "upsert", data, sorted ? changed : changed.sort());
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
    opId: op.opId,
  };
}

/**
 * Tells the `change` listeners of a local write, with data of their own:
 * the caller holds the record `put()` returned, and changing it must not
 * change what a watcher is told.
 */
function announce(ctx: EngineContext, change: RecordChange): void {
  const data = change.data === null
    ? null
    : cloneValue(change.data) as JsonObject;
  ctx.hub.emit({ type: "change", ...change, data });
}

function newOp(
  input: LocalWritePlanInput,
  type: "upsert" | "delete",
  payload: JsonObject | null,
  changedFields: readonly string[] | null,
): StoredOp {
  // `changedFields`: sorted, and never changed in place afterwards.
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
    // Sorted by the caller; shared by the ops of a batch of one shape, which
    // nothing changes in place (a fold builds a new list).
    changedFields: changedFields as string[] | null,
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
 * The fields a create changes, remembered for the next create of the same
 * shape: a batch's records mostly have the same keys in the same order, and
 * then share one sorted list instead of sorting their keys each. One memo
 * per table: the list leaves the table's system fields out.
 */
export class FieldsMemo {
  /** The keys of the data last asked about; `null` when they cannot share. */
  #keys: string[] | null = null;
  #fields: string[] = [];

  /**
   * Every field of `data` that has a value, system fields left out, sorted:
   * what `diffFields(null, data)` gives, without them.
   *
   * @param data The record's data.
   * @param system The table's system fields.
   * @returns The fields; the same list for data of the same keys. Never
   * change it in place.
   */
  of(data: JsonObject, system: readonly string[]): string[] {
    const keys = Object.keys(data);
    const known = this.#keys;
    let same = known !== null && keys.length === known.length;
    for (let i = 0; same && i < keys.length; i++) {
      same = keys[i] === known![i] && data[keys[i]!] !== undefined;
    }
    if (same) return this.#fields;
    const fields: string[] = [];
    for (const key of keys) {
      if (data[key] !== undefined && !system.includes(key)) fields.push(key);
    }
    fields.sort();
    // Only data whose every key has a value can share: the check above
    // then only compares keys and looks for `undefined`.
    const complete = fields.length + countSystem(keys, system) === keys.length;
    this.#keys = complete ? keys : null;
    this.#fields = fields;
    return fields;
  }
}

/** How many of `keys` are system fields. */
function countSystem(keys: readonly string[], system: readonly string[]) {
  let count = 0;
  for (const key of keys) if (system.includes(key)) count++;
  return count;
}

/** What {@linkcode writeLocal} writes. */
export interface LocalWriteRequest {
  /** The table. */
  readonly table: TableConfig;
  /** The record's id. */
  readonly id: string;
  /**
   * Builds the intent from the current record (run on every retry, so an
   * update patches the freshest data).
   */
  readonly build: (
    current: StoredRecord | undefined,
  ) => LocalIntent | Promise<LocalIntent>;
  /** Where the write's end (clause 24) goes, at `index`. */
  readonly ends: WriteEnds;
  /**
   * The write's place in its call.
   *
   * @default {0}
   */
  readonly index?: number;
  /**
   * Try the write as a create first, without reading: the record is read
   * only if the create is refused.
   */
  readonly assumeAbsent?: boolean;
  /** Told whether the create-first guess held. */
  readonly onGuess?: (held: boolean) => void;
  /** Remembers the fields of the table's last create. */
  readonly fields?: FieldsMemo;
}

/** What {@linkcode writeLocal} did. */
export interface LocalWriteResult {
  /**
   * The record after the write (`null` if removed), or the unchanged record
   * when the write changed nothing.
   */
  readonly record: StoredRecord | null | undefined;
  /** The op carrying the write, or `null` when none does. */
  readonly opId: string | null;
}

/**
 * Writes a record locally and queues its op, atomically; its end goes to
 * the request's `ends`.
 *
 * @param ctx The engine context.
 * @param request The table, the id, the intent's builder, and whether to
 * try the write as a create first.
 * @returns The record and the op carrying the write.
 */
export async function writeLocal(
  ctx: EngineContext,
  request: LocalWriteRequest,
): Promise<LocalWriteResult> {
  const { table, id } = request;
  if (request.assumeAbsent === true) {
    // A create can skip the read: its write expects the record absent, so
    // if it exists after all the write is refused and the loop below reads.
    // The guess is extra: it does not use up one of the retries.
    const outcome = await attemptLocalWrite(ctx, request, undefined);
    request.onGuess?.(outcome.ok);
    if (outcome.ok) return outcome.value;
  }
  return await commitWithRetry(ctx, {
    what: `write record "${id}" of '${table.kind}'`,
    attempt: async () => {
      const [current] = await ctx.storage.getRecords(table.kind, [id]);
      return await attemptLocalWrite(ctx, request, current);
    },
  });
}

/** Reads the newest op, plans against `current`, and writes once. */
async function attemptLocalWrite(
  ctx: EngineContext,
  request: LocalWriteRequest,
  current: Versioned<StoredRecord> | undefined,
): Promise<Attempt<LocalWriteResult>> {
  const { table, id } = request;
  const index = request.index ?? 0;
  const built = request.build(current?.value);
  const intent = built instanceof Promise ? await built : built;
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
    fields: request.fields,
  });
  if (plan === null) {
    const opId = endUnchanged(request.ends, index, latest?.value);
    return { ok: true, value: { record: current?.value, opId } };
  }
  const result = await ctx.storage.write(plan.mutations);
  if (!result.ok) return { ok: false };
  // In the commit's own continuation: no settlement of this op can have
  // committed yet.
  settleLocal(ctx, plan, request.ends, index);
  if (ctx.hub.has("change")) announce(ctx, plan.change);
  return { ok: true, value: { record: plan.record, opId: plan.opId } };
}

/**
 * The end of a committed local write: a wait on its op, or, when it
 * cancelled its op, that op settled as dropped (its earlier writes too).
 */
function settleLocal(
  ctx: EngineContext,
  plan: LocalWritePlan,
  ends: WriteEnds,
  index: number,
): void {
  if (plan.cancelled === true) {
    const outcome: WriteOutcome = {
      status: "dropped",
      opId: plan.opId,
      reason: "cancelled",
      record: null,
    };
    ctx.outcomes.settle(plan.opId, outcome, {
      kind: plan.change.kind,
      id: plan.change.id,
    });
    ends.end(index, outcome);
    return;
  }
  ends.wait(index, plan.opId);
}

/** What {@linkcode writeLocalMany} writes. */
export interface LocalWriteManyRequest {
  /** The table. */
  readonly table: TableConfig;
  /** The records' ids, all distinct. */
  readonly ids: readonly string[];
  /** Builds each record's data from its current state. */
  readonly build: (
    current: StoredRecord | undefined,
    index: number,
  ) => JsonObject;
  /** Where each record's end goes, at its index. */
  readonly ends: WriteEnds;
  /** Remembers the fields of the table's last create. */
  readonly fields?: FieldsMemo;
}

/** How many records {@linkcode writeLocalMany} reads and plans at once. */
const MANY_CHUNK = 500;

/**
 * Writes many records locally and queues their ops: one read of the current
 * records and their newest ops, then every record's write in as few storage
 * writes as the limits allow. Each record commits with its op atomically; a
 * record whose write lost a race is written again on its own. The work that
 * does not depend on the record is done once per chunk of records: one
 * clock reading, and a `change` event built only when someone listens.
 *
 * @param ctx The engine context.
 * @param request The table, the ids, and the records' builder.
 * @returns Each record's result, in order.
 */
export async function writeLocalMany(
  ctx: EngineContext,
  request: LocalWriteManyRequest,
): Promise<LocalWriteResult[]> {
  const { table, ids, build, ends } = request;
  const out: LocalWriteResult[] = new Array(ids.length);
  const newOpId = (after?: string) => ctx.newOpId(after);
  for (let start = 0; start < ids.length; start += MANY_CHUNK) {
    const slice = ids.slice(start, start + MANY_CHUNK);
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
    const now = ctx.now();
    const plans: (LocalWritePlan | null)[] = new Array(slice.length);
    const groups: Mutation[][] = new Array(slice.length);
    for (let i = 0; i < slice.length; i++) {
      const current = currents[i];
      const lastOpId = lastOpIds[i] ?? null;
      const plan = planLocalWrite({
        table,
        id: slice[i]!,
        current,
        latest: lastOpId === null ? undefined : latestById.get(lastOpId),
        latestIsOnly: false,
        intent: { type: "upsert", data: build(current?.value, start + i) },
        now,
        newOpId,
        fields: request.fields,
      });
      plans[i] = plan;
      groups[i] = plan === null ? [] : plan.mutations;
    }
    const { failed } = await writeChunked(ctx, groups, (committed) => {
      // Announced as each write lands: if a later one fails, the records
      // already written are known.
      const listened = ctx.hub.has("change");
      for (const i of committed) {
        const plan = plans[i];
        if (plan === null || plan === undefined) continue;
        settleLocal(ctx, plan, ends, start + i);
        if (listened) announce(ctx, plan.change);
      }
    });
    for (let i = 0; i < slice.length; i++) {
      const plan = plans[i]!;
      const index = start + i;
      if (failed.has(i)) {
        // Another writer changed this record in between: write it alone.
        out[index] = await writeLocal(ctx, {
          table,
          id: slice[i]!,
          build: (current) => ({
            type: "upsert",
            data: build(current, index),
          }),
          ends,
          index,
        });
        continue;
      }
      if (plan === null) {
        const lastOpId = lastOpIds[i] ?? null;
        const latest = lastOpId === null
          ? undefined
          : latestById.get(lastOpId)?.value;
        out[index] = {
          record: currents[i]?.value,
          opId: endUnchanged(ends, index, latest),
        };
      } else {
        out[index] = { record: plan.record, opId: plan.opId };
      }
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
    const kept = current === undefined
      ? undefined
      : getOwn(current.data, field);
    if (kept !== undefined && !field.startsWith("deleted")) {
      setOwn(data, field, kept);
    }
  }
  if (getOwn(data, table.idField) !== id) setOwn(data, table.idField, id);
  return data;
}

/** The server-owned fields of a table with the default field names. */
const DEFAULT_SERVER_OWNED: readonly string[] = Object.freeze([
  "updated_at",
  "updatedAt",
  "deleted_at",
  "deletedAt",
]);

function serverOwnedFields(table: TableConfig): readonly string[] {
  if (
    table.updatedAtField === undefined && table.deletedAtField === undefined
  ) {
    return DEFAULT_SERVER_OWNED;
  }
  return [
    ...(table.updatedAtField === undefined
      ? ["updated_at", "updatedAt"]
      : [table.updatedAtField]),
    ...(table.deletedAtField === undefined
      ? ["deleted_at", "deletedAt"]
      : [table.deletedAtField]),
  ];
}
