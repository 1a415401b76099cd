/**
 * Reads of the outbox queue: a record's ops queued behind one of them, ops
 * in outbox order page by page, and counts.
 *
 * @module
 */

import type { EngineContext } from "./_context.ts";
import type { OpState, Storage, StoredOp, Versioned } from "./storage.ts";

const SCAN_PAGE = 512;

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

/**
 * Iterates ops in outbox order, a page at a time: one resumption of the
 * generator per page, not per op (an async generator's `yield` costs a
 * promise and a microtask each, a few µs per op of a 10k-op drain).
 */
export async function* scanOps(
  ctx: EngineContext,
  filter: { states: StoredOp["state"][]; kinds: readonly string[] },
): AsyncGenerator<Versioned<StoredOp>[]> {
  let after: string | undefined;
  for (;;) {
    const page = await ctx.storage.listOps({
      ...filter,
      ...(after === undefined ? {} : { after }),
      limit: SCAN_PAGE,
    });
    if (page.length > 0) yield page;
    if (page.length < SCAN_PAGE) return;
    after = page[page.length - 1]!.value.opId;
  }
}

/**
 * Counts the pending ops of some tables.
 *
 * @param ctx The engine context.
 * @param kinds The tables.
 * @returns The count.
 */
export async function countPending(
  ctx: EngineContext,
  kinds: readonly string[],
): Promise<number> {
  let count = 0;
  for await (const page of scanOps(ctx, { states: ["pending"], kinds })) {
    count += page.length;
  }
  return count;
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
