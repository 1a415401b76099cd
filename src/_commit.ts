/**
 * Committing planned storage writes. Every change is planned as a list of
 * mutations with `expect` revisions and committed in one
 * `Storage.write`; when another writer got there first the plan is
 * rebuilt from a fresh read. That is how a local write and its op commit
 * atomically without interactive transactions.
 *
 * @module
 */

import type { EngineContext } from "./_context.ts";
import { StorageError } from "./errors.ts";
import type { RecordChange } from "./events.ts";
import type { Mutation } from "./storage.ts";
import { writeChunked } from "./_write.ts";

/** One read-plan-write: committed with a value, or lost a race. */
export type Attempt<T> = { readonly ok: true; readonly value: T } | {
  readonly ok: false;
};

/** What {@linkcode commitWithRetry} runs. */
export interface RetryTask<T> {
  /**
   * What is being written, as the action of the error message:
   * `claim ops for push`, `write record "1" of 'todos'`.
   */
  readonly what: string;
  /**
   * Reads, plans and writes once. `{ ok: false }` when the write failed an
   * `expect`: another writer changed what was read, so the task reads and
   * plans again. An attempt that commits part of its work keeps what it
   * committed and leaves the rest to the next.
   *
   * @param index The attempt's number, from 0: the first may reuse what
   * the caller read before.
   */
  readonly attempt: (index: number) => Promise<Attempt<T>>;
}

/**
 * Commits a read-plan-write with optimistic retries: the one way the engine
 * retries a storage commit that lost a race (local writes, claims, settles,
 * pulled pages, outbox and inbox edits). At most `writeRetries` attempts.
 * Callers name `T`: without `exactOptionalPropertyTypes` (a consumer's
 * default), TypeScript would infer it from `{ ok: false }` as well and add
 * `undefined` to it.
 *
 * @param ctx The engine context.
 * @param task What is written, and one attempt at it.
 * @returns The committed attempt's value.
 * @throws {StorageError} When every attempt lost the race.
 */
export async function commitWithRetry<T>(
  ctx: EngineContext,
  task: RetryTask<T>,
): Promise<T> {
  for (let index = 0; index < ctx.limits.writeRetries; index++) {
    const result = await task.attempt(index);
    if (result.ok) return result.value;
  }
  throw new StorageError(
    `Cannot ${task.what} as the store kept changing concurrently: current value is ${ctx.limits.writeRetries} attempts`,
    { retryable: true },
  );
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
  const follow = plan.follow;
  // Most plans have no follow-ups: their own mutations are the one write.
  if (follow === undefined || follow.length === 0) {
    return { first: plan.mutations, rest: [] };
  }
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
 * Commits many plans in as few writes as the storage allows, each plan's
 * own mutations (with the follow-ups that fit) atomically; the follow-ups
 * that did not fit (a record with more queued ops than one write holds)
 * follow, each checking its own op.
 *
 * @param ctx The engine context.
 * @param plans The plans.
 * @returns The indices of the plans whose own mutations lost a race.
 */
export async function commitPlans(
  ctx: EngineContext,
  plans: readonly OpPlan[],
): Promise<ReadonlySet<number>> {
  const maxMutations = ctx.storage.capabilities.maxMutationsPerWrite;
  const firsts: Mutation[][] = new Array(plans.length);
  let rests: { index: number; rest: Mutation[][] }[] | undefined;
  for (let index = 0; index < plans.length; index++) {
    const { first, rest } = planGroups(plans[index]!, maxMutations);
    firsts[index] = first;
    if (rest.length > 0) (rests ??= []).push({ index, rest });
  }
  const { failed } = await writeChunked(ctx, firsts);
  for (const { index, rest } of rests ?? []) {
    if (failed.has(index)) continue;
    for (const group of rest) {
      await writeChunked(ctx, group.map((m) => [m]));
    }
  }
  return failed;
}
