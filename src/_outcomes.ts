/**
 * The registry of per-write outcomes (ENGINE.md clause 24): writes wait on
 * the op that carries them, and the engine settles an op from the exact
 * place where its settlement commits, never from events. Private.
 *
 * @module
 */

import type { JsonObject } from "./json.ts";
import type {
  OpOutcome,
  WriteManyPromise,
  WriteOutcome,
  WritePromise,
} from "./outcome.ts";
import type { StoredOp } from "./storage.ts";

interface Waiter {
  readonly resolve: (outcome: WriteOutcome) => void;
  readonly reject: (error: unknown) => void;
}

/** The record an op writes, as settlements tell observers. */
export interface OpWhere {
  readonly kind: string;
  readonly id: string;
}

/** Hears a settlement: the op, its outcome, and its record when known. */
export type SettleObserver = (
  opId: string,
  outcome: WriteOutcome,
  where: OpWhere | undefined,
) => void;

/** A registered wait, and the means to withdraw it. */
export interface WaitHandle {
  /** Resolves with the op's next outcome. */
  readonly promise: Promise<WriteOutcome>;
  /** Whether the wait ended already (settled or rejected). */
  readonly ended: () => boolean;
  /** Withdraws the wait; its promise then never settles. */
  readonly cancel: () => void;
}

/**
 * Waits per op id. `settle` resolves and forgets every wait of an op, so an
 * entry lives exactly as long as someone waits for an op still queued;
 * `close` rejects every wait left.
 */
export class OutcomeRegistry {
  #waiters = new Map<string, Set<Waiter>>();
  #observers = new Set<SettleObserver>();
  #closed: unknown = undefined;
  #isClosed = false;
  #busy = 0;
  #idle: { promise: Promise<void>; resolve: () => void } | null = null;

  /** How many ops have waits (for tests: no leak). */
  get size(): number {
    return this.#waiters.size;
  }

  /**
   * Waits for an op's next settlement.
   *
   * @param opId The op.
   * @returns The wait.
   */
  wait(opId: string): WaitHandle {
    let ended = false;
    let waiter!: Waiter;
    const promise = new Promise<WriteOutcome>((resolve, reject) => {
      waiter = {
        resolve: (outcome) => {
          ended = true;
          resolve(outcome);
        },
        reject: (error) => {
          ended = true;
          reject(error);
        },
      };
    });
    // A wait nobody reads must not turn `close()` into an unhandled
    // rejection; a reader still sees it.
    promise.catch(() => {});
    if (this.#isClosed) {
      waiter.reject(this.#closed);
    } else {
      const set = this.#waiters.get(opId) ?? new Set();
      set.add(waiter);
      this.#waiters.set(opId, set);
    }
    return {
      promise,
      ended: () => ended,
      cancel: () => this.#remove(opId, waiter),
    };
  }

  /**
   * Settles an op: every wait on it resolves with `outcome`, and is removed.
   * Call only once the settlement's storage write committed.
   *
   * @param opId The op.
   * @param outcome What became of it.
   * @param where The op's record, for observers in other engines.
   */
  settle(opId: string, outcome: WriteOutcome, where?: OpWhere): void {
    for (const observer of this.#observers) observer(opId, outcome, where);
    const set = this.#waiters.get(opId);
    if (set === undefined) return;
    this.#waiters.delete(opId);
    for (const waiter of set) waiter.resolve(outcome);
  }

  /**
   * Whether an op has waits.
   *
   * @param opId The op.
   * @returns Whether a settlement of it would resolve something.
   */
  has(opId: string): boolean {
    return this.#waiters.has(opId);
  }

  /**
   * Hears every settlement, waited for or not (cross-process coordination
   * tells the engines sharing the store). An observer must not throw.
   *
   * @param observer Called with each settlement.
   * @returns A function that stops it.
   */
  observe(observer: SettleObserver): () => void {
    this.#observers.add(observer);
    return () => this.#observers.delete(observer);
  }

  /**
   * Moves the waits of one op onto another that now carries its change:
   * they resolve with that op's outcome. This engine's own coalescing,
   * conflict re-forms and rebases keep op ids (a fold rewrites the queued
   * op in place), so it needs none; it is here for parts that move a change
   * to a new op (e.g. cross-process coordination).
   *
   * @param fromOpId The op whose change moved.
   * @param toOpId The op that carries it now.
   */
  follow(fromOpId: string, toOpId: string): void {
    if (fromOpId === toOpId) return;
    const set = this.#waiters.get(fromOpId);
    if (set === undefined) return;
    this.#waiters.delete(fromOpId);
    const target = this.#waiters.get(toOpId) ?? new Set();
    for (const waiter of set) target.add(waiter);
    this.#waiters.set(toOpId, target);
  }

  /**
   * Runs a settlement, so that `idle()` waits for it: a reader that found an
   * op gone can tell "settled before" from "settling now".
   *
   * @param work The settlement.
   * @returns What it returns.
   */
  async during<T>(work: () => Promise<T>): Promise<T> {
    this.#busy++;
    try {
      return await work();
    } finally {
      if (--this.#busy === 0 && this.#idle !== null) {
        this.#idle.resolve();
        this.#idle = null;
      }
    }
  }

  /** Resolves once no settlement runs. */
  idle(): Promise<void> {
    if (this.#busy === 0) return Promise.resolve();
    if (this.#idle === null) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => resolve = r);
      this.#idle = { promise, resolve };
    }
    return this.#idle.promise;
  }

  /**
   * Rejects every wait, now and later, with `error`. Idempotent.
   *
   * @param error The rejection (a `ClosedError`).
   */
  close(error: unknown): void {
    if (this.#isClosed) return;
    this.#isClosed = true;
    this.#closed = error;
    const all = [...this.#waiters.values()];
    this.#waiters.clear();
    for (const set of all) for (const waiter of set) waiter.reject(error);
    this.#idle?.resolve();
    this.#idle = null;
  }

  #remove(opId: string, waiter: Waiter): void {
    const set = this.#waiters.get(opId);
    if (set === undefined) return;
    set.delete(waiter);
    if (set.size === 0) this.#waiters.delete(opId);
  }
}

/**
 * The outcome a write that changed nothing shares: the record's newest op
 * when one is queued (it carries the record's state), else `unchanged`.
 *
 * @param registry The registry.
 * @param latest The record's newest op, if any.
 * @returns The op id and the outcome.
 */
export function ticketOf(
  registry: OutcomeRegistry,
  latest: StoredOp | undefined,
): { opId: string | null; synced: Promise<WriteOutcome> } {
  if (latest === undefined) {
    return {
      opId: null,
      synced: Promise.resolve({
        status: "dropped",
        opId: null,
        reason: "unchanged",
        record: null,
      }),
    };
  }
  const stored = storedOutcome(latest);
  return {
    opId: latest.opId,
    synced: stored === null
      ? registry.wait(latest.opId).promise
      : Promise.resolve(stored),
  };
}

/**
 * The outcome an op in the outbox already reached: `quarantined` or
 * `deferred`; `null` while it is pending.
 *
 * @param op The op as stored.
 * @returns The outcome, or `null`.
 */
export function storedOutcome(op: StoredOp): WriteOutcome | null {
  if (op.state === "quarantined" && op.error !== null) {
    return { status: "quarantined", opId: op.opId, error: op.error };
  }
  if (op.state === "parked" && op.conflict !== null) {
    return { status: "deferred", opId: op.opId, conflict: op.conflict };
  }
  return null;
}

/**
 * Awaits an op by id (`engine.outbox.outcome`): the outcome it reached if it
 * is quarantined or parked, its next one while it is pending, `unknown`
 * when it is not in the outbox.
 *
 * @param registry The registry.
 * @param opId The op.
 * @param read Reads the op from storage.
 * @returns The outcome.
 */
export async function awaitOp(
  registry: OutcomeRegistry,
  opId: string,
  read: (opId: string) => Promise<StoredOp | undefined>,
): Promise<OpOutcome> {
  // Registered before the read: a settlement that commits after the read
  // cannot slip between the two.
  const handle = registry.wait(opId);
  handle.promise.catch(() => {});
  let op: StoredOp | undefined;
  try {
    op = await read(opId);
  } catch (error) {
    handle.cancel();
    throw error;
  }
  if (op !== undefined) {
    const stored = storedOutcome(op);
    if (stored === null) return await handle.promise;
    handle.cancel();
    return stored;
  }
  // Gone: settled before, or by a settlement still running (committed but
  // not yet announced). Wait for the running ones to end to tell.
  await registry.idle();
  if (handle.ended()) return await handle.promise;
  handle.cancel();
  return { status: "unknown", opId };
}

/**
 * The accepted outcome of an op: `merged` when it went through a conflict
 * resolution first (its stored `conflicts` count, kept across restarts).
 *
 * @param op The op as it was acknowledged.
 * @param record The record the server returned, if any.
 * @returns The outcome.
 */
export function acceptedOutcome(
  op: StoredOp,
  record: JsonObject | null,
): WriteOutcome {
  return {
    status: op.conflicts > 0 ? "merged" : "accepted",
    opId: op.opId,
    record,
  };
}

/** A local write's result with its end, as the table builds it. */
export interface WriteDone<R> {
  /** What the write method resolves to. */
  readonly value: R;
  /** The op carrying the write. */
  readonly opId: string | null;
  /** The write's end. */
  readonly synced: Promise<WriteOutcome>;
}

/**
 * Wraps a local write into a {@linkcode WritePromise}. `synced` and `opId`
 * are handled from the start (an app that never reads them sees no
 * unhandled rejection); they reject with the write's error when it fails.
 *
 * @param work The write.
 * @returns The write promise.
 */
export function writePromise<R>(
  work: Promise<WriteDone<R>>,
): WritePromise<R> {
  const synced = work.then((done) => done.synced);
  const opId = work.then((done) => done.opId);
  synced.catch(() => {});
  opId.catch(() => {});
  return Object.defineProperties(work.then((done) => done.value), {
    synced: { value: synced, enumerable: true },
    opId: { value: opId, enumerable: true },
  }) as WritePromise<R>;
}

/**
 * Wraps a many-record local write into a {@linkcode WriteManyPromise}.
 *
 * @param work The write: the result and one end per record.
 * @returns The write promise.
 */
export function writeManyPromise<R>(
  work: Promise<{ value: R; writes: readonly WriteDone<unknown>[] }>,
): WriteManyPromise<R> {
  const synced = work.then((done) =>
    Promise.all(done.writes.map((write) => write.synced))
  );
  const opIds = work.then((done) => done.writes.map((write) => write.opId));
  synced.catch(() => {});
  opIds.catch(() => {});
  return Object.defineProperties(work.then((done) => done.value), {
    synced: { value: synced, enumerable: true },
    opIds: { value: opIds, enumerable: true },
  }) as WriteManyPromise<R>;
}
