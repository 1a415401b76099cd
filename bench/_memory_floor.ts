/**
 * The memory outbox's drain work written by hand (issue 14's floor for the
 * memory drain): no engine and no adapter, only `Map`s holding the records
 * and ops as a memory store holds them, and the deep copies the storage
 * contract asks of any store (clause 3: what a store keeps shares nothing
 * with what it was given, and what it returns shares nothing with what it
 * keeps). `bench/outbox_bench.ts` adds it to the bare requests as a floor
 * row.
 *
 * Per round of `step` ops, as the drain does it with generic mutations:
 * list the pending ops (a copy of each), claim each (a copy with `attempts
 * + 1` stored in its place), read the records (a copy of each), settle each
 * (the op deleted, the record stored with the server's answer as its data
 * and base: one copy). Four copies of a record per op, a revision per item.
 *
 * @module
 */

import type { JsonObject, JsonValue } from "../mod.ts";
import type { WireOp } from "./_drain.ts";

/** An item as a memory store keeps it: its value and its revision. */
interface Held<T> {
  value: T;
  rev: number;
}

/** The ops and records of an outbox, as a memory store keeps them. */
export interface MemoryOutbox {
  /** Op entries by op id, in op id order. */
  readonly ops: Map<string, Held<JsonObject>>;
  /** Record entries by id. */
  readonly records: Map<string, Held<JsonObject>>;
}

/**
 * Builds the outbox the drain starts from (outside the timed part): each op
 * and its record, as `table.put()` leaves them.
 *
 * @param ops The ops, in outbox order.
 * @returns The store's maps.
 */
export function memoryOutboxOf(ops: readonly WireOp[]): MemoryOutbox {
  const outbox: MemoryOutbox = { ops: new Map(), records: new Map() };
  let rev = 0;
  for (const { key, id, payload } of ops) {
    rev++;
    outbox.records.set(id, {
      value: copy({
        kind: "todos",
        id,
        data: payload,
        deleted: false,
        base: null,
        lastOpId: key,
        localUpdatedAt: 0,
      }) as JsonObject,
      rev,
    });
    outbox.ops.set(key, {
      value: copy({
        opId: key,
        kind: "todos",
        id,
        type: "upsert",
        payload,
        attempts: 0,
        state: "pending",
      }) as JsonObject,
      rev,
    });
  }
  return outbox;
}

/**
 * The drain's storage work on `outbox`, by hand, in rounds of `step`.
 *
 * @param outbox The store's maps; emptied of ops.
 * @param step Ops per round.
 * @returns How many ops were settled.
 */
export function memoryByHand(outbox: MemoryOutbox, step: number): number {
  const { ops, records } = outbox;
  let rev = 1e9;
  let settled = 0;
  const pending = [...ops.keys()];
  for (let start = 0; start < pending.length; start += step) {
    const round = pending.slice(start, start + step);
    // List: a copy of each op returned.
    const listed = round.map((opId) => {
      const held = ops.get(opId)!;
      return { value: copy(held.value) as JsonObject, rev: held.rev };
    });
    // Claim: each op stored again with attempts + 1 (a copy kept).
    for (const op of listed) {
      const opId = op.value.opId as string;
      if (ops.get(opId)!.rev !== op.rev) throw new Error("claim lost a race");
      op.value.attempts = (op.value.attempts as number) + 1;
      ops.set(opId, { value: copy(op.value) as JsonObject, rev: ++rev });
    }
    // Read the records: a copy of each returned.
    const read = listed.map((op) => {
      const held = records.get(op.value.id as string)!;
      return { value: copy(held.value) as JsonObject, rev: held.rev };
    });
    // Settle: the op deleted, the record stored with the server's answer.
    for (let i = 0; i < listed.length; i++) {
      const op = listed[i]!.value;
      const record = read[i]!;
      const answer = { ...(op.payload as JsonObject), updated_at: "x" };
      ops.delete(op.opId as string);
      const id = op.id as string;
      if (records.get(id)!.rev !== record.rev) throw new Error("settle lost");
      records.set(id, {
        value: copy({
          ...record.value,
          data: answer,
          base: { data: answer, updatedAt: "x", deleted: false },
          lastOpId: null,
        }) as JsonObject,
        rev: ++rev,
      });
      settled++;
    }
  }
  return settled;
}

/** A deep copy of JSON data. */
function copy(value: JsonValue): JsonValue {
  if (typeof value !== "object" || value === null) return value;
  if (Array.isArray(value)) return value.map(copy);
  const out: JsonObject = {};
  for (const key of Object.keys(value)) out[key] = copy(value[key]!);
  return out;
}
