/**
 * The app's view of the outbox (ENGINE.md clause 8): what is queued, what
 * was rejected, and the means to retry, edit or drop rejected ops.
 *
 * @module
 */

import type { EngineContext } from "./_context.ts";
import { commitPlan, commitWithRetry, type OpPlan } from "./_commit.ts";
import { diffFields } from "./_diff.ts";
import { settleSystemFields } from "./_local_write.ts";
import { countOps, listLater } from "./_queue.ts";
import { planReplay } from "./_settle.ts";
import { awaitOp } from "./_outcomes.ts";
import type { OpOutcome } from "./outcome.ts";
import { SyncError } from "./errors.ts";
import type { RecordChange } from "./events.ts";
import type { JsonObject } from "./json.ts";
import { ownedRecord } from "./_own.ts";
import { validateWith } from "./schema.ts";
import type { Mutation, OpState, StoredOp } from "./storage.ts";

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
   * Awaits what becomes of a queued op (clause 24), e.g. after a restart,
   * with an op id kept from a write's `opId`. An op still pending resolves
   * when it settles; a quarantined or parked op resolves at once with that
   * outcome (`quarantined`, `deferred`); an op not in the outbox resolves
   * `{ status: "unknown" }`: it settled before (the outcome of an op that
   * left the outbox is not kept) or never existed.
   *
   * @param opId The op.
   * @returns The op's outcome.
   * @throws {ClosedError} When the engine is closed, or closes before the
   * op settles.
   *
   * @example Awaiting an op after a restart
   * ```ts
   * import { SyncEngine } from "@offline-first/sync";
   * import { createMemoryStorage } from "@offline-first/sync/storage/memory";
   * import { createRestTransport } from "@offline-first/sync/transport/rest";
   * import { createSyncServer } from "@offline-first/sync/server";
   * import assert from "node:assert/strict";
   *
   * await using server = createSyncServer();
   * await using http = Deno.serve(
   *   { port: 0, hostname: "127.0.0.1", onListen() {} },
   *   server.fetch,
   * );
   * await using storage = createMemoryStorage();
   * await using transport = createRestTransport({
   *   baseUrl: `http://127.0.0.1:${http.addr.port}`,
   * });
   *
   * const first = new SyncEngine({ storage, transport });
   * const opId = await first.table("notes").put({ id: "n1" }).opId;
   * await first.close();
   *
   * await using engine = new SyncEngine({ storage, transport });
   * engine.table("notes");
   * const outcome = engine.outbox.outcome(opId!);
   * await engine.sync();
   * assert.equal((await outcome).status, "accepted");
   * ```
   */
  async outcome(opId: string): Promise<OpOutcome> {
    this.#assertOpen("await an op");
    if (typeof opId !== "string" || opId === "") {
      throw new TypeError(
        `Cannot await an op as its id is not a non-empty string: current value is ${
          JSON.stringify(opId)
        }`,
      );
    }
    const ctx = this.#ctx;
    return await awaitOp(ctx.outcomes, opId, async (id) => {
      const [entry] = await ctx.storage.getOps([id]);
      return entry?.value;
    });
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
   * unsent ops' bodies lose the dropped change too. A write still waiting
   * on the op ends `dropped` (reason `"removed"`).
   *
   * @param opId The op.
   * @returns `true` when an op was removed.
   * @throws {SyncError} When the op was sent and may be on the server.
   */
  async drop(opId: string): Promise<boolean> {
    this.#assertOpen("drop an op");
    return await this.#ctx.outcomes.during(() => this.#drop(opId));
  }

  async #drop(opId: string): Promise<boolean> {
    const ctx = this.#ctx;
    return await commitWithRetry<boolean>(ctx, {
      what: `drop op "${opId}"`,
      attempt: async () => {
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
        ctx.outcomes.settle(opId, {
          status: "dropped",
          opId,
          reason: "removed",
          record: null,
        }, { kind, id });
        if (plan.change !== null) {
          ctx.hub.emit({ type: "change", ...plan.change });
        }
        return { ok: true, value: true };
      },
    });
  }

  async #revive(
    opId: string,
    action: "retry" | "edit",
    payload: JsonObject | undefined,
  ): Promise<void> {
    const ctx = this.#ctx;
    let validated: JsonObject | undefined;
    await commitWithRetry<undefined>(ctx, {
      what: `${action} op "${opId}"`,
      attempt: async () => {
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
            const later = await listLater(
              ctx,
              op.value.kind,
              op.value.id,
              opId,
            );
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
      },
    });
  }
}
