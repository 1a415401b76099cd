/**
 * Per-write outcomes across engines sharing one storage (ENGINE.md clauses
 * 24 and 26): the syncer settles every op, including the followers' ops, so
 * it tells each settlement through the change feed, and a follower that has
 * a write waiting on that op rebuilds the outcome from the shared store.
 * The feed carries no record: the store holds it (the record as the
 * settlement left it, the quarantined op's error, the parked op's conflict).
 *
 * @module
 */

import type { OpWhere } from "./_outcomes.ts";
import { isJsonObject, type JsonValue } from "./json.ts";
import type { DropReason, WriteOutcome } from "./outcome.ts";
import type { Storage } from "./storage.ts";
import { storedOutcome } from "./_outcomes.ts";

/** One settlement as a feed entry carries it. */
export interface FeedOutcome {
  readonly opId: string;
  readonly kind: string;
  readonly id: string;
  readonly status: WriteOutcome["status"];
  readonly reason?: DropReason;
}

/** How many settlements one feed entry carries at most. */
export const MAX_FEED_OUTCOMES = 200;

const STATUSES: ReadonlySet<string> = new Set([
  "accepted",
  "merged",
  "quarantined",
  "deferred",
  "dropped",
]);
const REASONS: ReadonlySet<string> = new Set([
  "unchanged",
  "cancelled",
  "acceptServer",
  "discard",
  "removed",
]);

/**
 * A settlement in feed form, or `null` when it names no op or record.
 *
 * @param opId The op.
 * @param outcome What became of it.
 * @param where Its record.
 * @returns The feed form.
 */
export function toFeedOutcome(
  opId: string,
  outcome: WriteOutcome,
  where: OpWhere | undefined,
): FeedOutcome | null {
  if (where === undefined) return null;
  return {
    opId,
    kind: where.kind,
    id: where.id,
    status: outcome.status,
    ...(outcome.status === "dropped" ? { reason: outcome.reason } : {}),
  };
}

/**
 * The settlements of a feed entry read back from the store, checked: an
 * item of another shape is skipped.
 *
 * @param value The entry's `outcomes`.
 * @returns The well-formed items.
 */
export function readFeedOutcomes(value: JsonValue | undefined): FeedOutcome[] {
  if (!Array.isArray(value)) return [];
  const items: FeedOutcome[] = [];
  for (const item of value.slice(0, MAX_FEED_OUTCOMES)) {
    if (!isJsonObject(item)) continue;
    const { opId, kind, id, status, reason } = item;
    if (
      typeof opId !== "string" || typeof kind !== "string" ||
      typeof id !== "string" || typeof status !== "string" ||
      !STATUSES.has(status) ||
      (status === "dropped" &&
        (typeof reason !== "string" || !REASONS.has(reason)))
    ) {
      continue;
    }
    items.push(item as unknown as FeedOutcome);
  }
  return items;
}

/**
 * Rebuilds a settlement's outcome from the shared store.
 *
 * @param storage The store the syncer settled the op in.
 * @param item The settlement.
 * @returns The outcome, or `null` when the store moved on (a quarantined
 * or parked op that is gone or pending again: its next settlement follows).
 */
export async function rebuildOutcome(
  storage: Storage,
  item: FeedOutcome,
): Promise<WriteOutcome | null> {
  if (item.status === "quarantined" || item.status === "deferred") {
    const [op] = await storage.getOps([item.opId]);
    return op === undefined ? null : storedOutcome(op.value);
  }
  const [stored] = await storage.getRecords(item.kind, [item.id]);
  const record = stored === undefined || stored.value.deleted
    ? null
    : stored.value.data;
  if (item.status === "dropped") {
    return {
      status: "dropped",
      opId: item.opId,
      reason: item.reason ?? "removed",
      record,
    };
  }
  return { status: item.status, opId: item.opId, record };
}
