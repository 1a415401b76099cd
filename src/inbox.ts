/**
 * The conflict inbox (ENGINE.md clause 15): conflicts parked by `defer` (or
 * by `manual` without a resolver, or after too many resolution attempts),
 * persisted in the outbox, listed and resolved later by the app.
 *
 * @module
 */

import type { EngineContext } from "./_context.ts";
import { type Conflict, fromResolution, type Resolution } from "./conflict.ts";
import { SyncError } from "./errors.ts";
import { commitPlan, commitWithRetry, type OpPlan } from "./_commit.ts";
import { listLater } from "./_queue.ts";
import { baseOf, planAcceptServer, planForcedWrite } from "./_settle.ts";
import type { StoredOp, Versioned } from "./storage.ts";

/** A parked conflict, as the inbox lists it. */
export interface ConflictEntry extends Conflict {
  /** When the conflict was parked (ms since epoch). */
  readonly detectedAt: number;
}

/**
 * The persisted conflict inbox. Obtained from `engine.conflicts`.
 *
 * A parked op blocks only its own record: later ops of that record wait,
 * every other record syncs. Resolving turns the op into a forced write (or
 * drops it), which the next sync sends.
 */
export class ConflictInbox {
  #ctx: EngineContext;
  #assertOpen: (action: string) => void;

  /**
   * Constructs a new instance. Apps get one from `engine.conflicts`.
   *
   * @param ctx The engine context.
   * @param assertOpen Throws a `ClosedError` once the engine is closed.
   */
  constructor(ctx: EngineContext, assertOpen: (action: string) => void) {
    this.#ctx = ctx;
    this.#assertOpen = assertOpen;
  }

  /**
   * Lists the parked conflicts in outbox order.
   *
   * @param options Only these tables.
   * @returns The conflicts.
   */
  async list(
    options: { readonly kinds?: readonly string[] } = {},
  ): Promise<ConflictEntry[]> {
    this.#assertOpen("list conflicts");
    const entries = await this.#ctx.storage.listOps({
      states: ["parked"],
      ...(options.kinds === undefined ? {} : { kinds: options.kinds }),
    });
    return entries.map((entry) => toEntry(this.#ctx, entry.value));
  }

  /**
   * Resolves a parked conflict.
   *
   * `acceptClient` and `acceptMerged` queue a forced write for the next
   * sync (with a fresh idempotency key); `acceptServer` and `discard` drop
   * the op and take the server's record; `defer` leaves it parked.
   *
   * The write that queued the op saw its `synced` end as `deferred`; a
   * resolution does not end it again. `acceptClient` and `acceptMerged`
   * put the op back in the queue: await its next outcome (`merged` once the
   * server stores it) with `engine.outbox.outcome(opId)`.
   *
   * @param opId The parked op.
   * @param resolution What to do.
   * @throws {SyncError} When the op is not parked.
   */
  async resolve(opId: string, resolution: Resolution): Promise<void> {
    this.#assertOpen("resolve a conflict");
    await this.#ctx.outcomes.during(() => this.#resolve(opId, resolution));
  }

  async #resolve(opId: string, resolution: Resolution): Promise<void> {
    const ctx = this.#ctx;
    await commitWithRetry<undefined>(ctx, {
      what: `resolve conflict "${opId}"`,
      attempt: async () => {
        const [op] = await ctx.storage.getOps([opId]);
        if (op === undefined || op.value.state !== "parked") {
          throw new SyncError(
            `Cannot resolve conflict as the op is not parked: current value is ${
              op === undefined ? "absent" : `"${op.value.state}"`
            }`,
            { category: "conflict" },
          );
        }
        const table = ctx.tableOrDefault(op.value.kind);
        const conflict = toEntry(ctx, op.value);
        const decision = fromResolution(conflict, resolution);
        if (decision.type === "defer") return { ok: true, value: undefined };
        const [record] = await ctx.storage.getRecords(op.value.kind, [
          op.value.id,
        ]);
        if (record === undefined) {
          throw new SyncError(
            `Cannot resolve conflict as the local record is gone: current value is "${op.value.id}"`,
            { category: "storage" },
          );
        }
        const server = op.value.conflict?.server ?? null;
        // The op leaves the inbox as a pending op, so planning works on it as
        // the push phase would.
        const unparked: Versioned<StoredOp> = {
          value: { ...op.value, state: "pending", conflict: null },
          rev: op.rev,
        };
        let plan: OpPlan;
        if (decision.type === "write") {
          plan = planForcedWrite(
            table,
            record,
            unparked,
            server,
            decision.data,
          );
        } else {
          const later = record.value.lastOpId === opId
            ? []
            : await listLater(ctx, op.value.kind, op.value.id, opId);
          plan = planAcceptServer(table, record, unparked, server, later);
        }
        if (!await commitPlan(ctx, plan)) return { ok: false };
        if (decision.type !== "write") {
          // The op left the outbox: anyone waiting on it (through
          // `outbox.outcome`) learns why.
          ctx.outcomes.settle(opId, {
            status: "dropped",
            opId,
            reason: decision.type,
            record: baseOf(table, server)?.data ?? null,
          }, op.value);
        }
        if (plan.change !== null) {
          ctx.hub.emit({ type: "change", ...plan.change });
        }
        ctx.hub.emit({
          type: "conflictResolved",
          kind: op.value.kind,
          id: op.value.id,
          opId,
          strategy: "manual",
          resolution: decision.type === "write"
            ? decision.resolution
            : decision.type,
          result: decision.type === "write" ? decision.data : server,
        });
        return { ok: true, value: undefined };
      },
    });
  }
}

function toEntry(ctx: EngineContext, op: StoredOp): ConflictEntry {
  const conflict = op.conflict;
  const table = ctx.tableOrDefault(op.kind);
  const base = baseOf(table, conflict?.server ?? null);
  return {
    kind: op.kind,
    id: op.id,
    opId: op.opId,
    opType: op.type,
    local: conflict?.local ?? op.payload,
    server: conflict?.server ?? null,
    serverDeleted: base?.deleted ?? false,
    base: conflict?.base ?? null,
    changedFields: op.changedFields,
    localUpdatedAt: op.createdAt,
    serverUpdatedAt: conflict?.serverUpdatedAt ?? null,
    detectedAt: conflict?.detectedAt ?? op.createdAt,
  };
}
