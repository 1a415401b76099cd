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

/** Told an op's next outcome, or the registry's close. */
export interface Waiter {
  /** The op settled. */
  resolve(outcome: WriteOutcome): void;
  /** The registry closed. */
  reject(error: unknown): void;
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
  /** Per op: its one wait (most ops), or a set once it has more. */
  #waiters = new Map<string, Waiter | Set<Waiter>>();
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
    this.add(opId, waiter);
    return {
      promise,
      ended: () => ended,
      cancel: () => this.#remove(opId, waiter),
    };
  }

  /**
   * Registers a wait without a promise of its own (a slot of
   * {@linkcode WriteEnds}); rejected at once when the registry is closed.
   *
   * @param opId The op.
   * @param waiter Told the op's next outcome, or the close's error.
   */
  add(opId: string, waiter: Waiter): void {
    if (this.#isClosed) {
      waiter.reject(this.#closed);
      return;
    }
    const held = this.#waiters.get(opId);
    if (held === undefined) this.#waiters.set(opId, waiter);
    else if (held instanceof Set) held.add(waiter);
    else this.#waiters.set(opId, new Set([held, waiter]));
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
    const held = this.#waiters.get(opId);
    if (held === undefined) return;
    this.#waiters.delete(opId);
    if (held instanceof Set) {
      for (const waiter of held) waiter.resolve(outcome);
    } else held.resolve(outcome);
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
    const held = this.#waiters.get(fromOpId);
    if (held === undefined) return;
    this.#waiters.delete(fromOpId);
    if (held instanceof Set) {
      for (const waiter of held) this.add(toOpId, waiter);
    } else this.add(toOpId, held);
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
    for (const held of all) {
      if (held instanceof Set) {
        for (const waiter of held) waiter.reject(error);
      } else held.reject(error);
    }
    this.#idle?.resolve();
    this.#idle = null;
  }

  #remove(opId: string, waiter: Waiter): void {
    const held = this.#waiters.get(opId);
    if (held === waiter) this.#waiters.delete(opId);
    else if (held instanceof Set) {
      held.delete(waiter);
      if (held.size === 0) this.#waiters.delete(opId);
    }
  }
}

/**
 * Ends a write that changed nothing: it shares the record's newest op when
 * one is queued (that op carries the record's state), else it is
 * `unchanged`.
 *
 * @param ends The call's ends.
 * @param index The write's place in the call.
 * @param latest The record's newest op, if any.
 * @returns The op id the write shares, `null` when none.
 */
export function endUnchanged(
  ends: WriteEnds,
  index: number,
  latest: StoredOp | undefined,
): string | null {
  if (latest === undefined) {
    ends.end(index, {
      status: "dropped",
      opId: null,
      reason: "unchanged",
      record: null,
    });
    return null;
  }
  const stored = storedOutcome(latest);
  if (stored === null) ends.wait(index, latest.opId);
  else ends.end(index, stored);
  return latest.opId;
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

/** A wait of {@linkcode WriteEnds} on one op: no promise, no closure. */
class EndSlot implements Waiter {
  readonly #ends: WriteEnds;
  readonly #index: number;

  constructor(ends: WriteEnds, index: number) {
    this.#ends = ends;
    this.#index = index;
  }

  resolve(outcome: WriteOutcome): void {
    this.#ends.end(this.#index, outcome);
  }

  reject(error: unknown): void {
    this.#ends.fail(error);
  }
}

/**
 * The ends (clause 24) of the writes of one call (`put` is one write,
 * `putMany` one per record), kept without a promise per write: each write
 * whose end is its op's settlement registers a small slot with the
 * registry as it commits, and the promise the app awaits is made only when
 * it asks for it (`synced`). An app that never asks pays for no promise;
 * one that asks late still gets every outcome, kept here as it arrived.
 */
export class WriteEnds {
  readonly #registry: OutcomeRegistry;
  readonly #outcomes: (WriteOutcome | undefined)[];
  #left: number;
  #failed = false;
  #error: unknown = undefined;
  #all: PromiseWithResolvers<WriteOutcome[]> | null = null;

  /**
   * Constructs the ends of `count` writes.
   *
   * @param registry Where the writes wait on their ops.
   * @param count How many writes the call makes.
   */
  constructor(registry: OutcomeRegistry, count: number) {
    this.#registry = registry;
    this.#outcomes = new Array(count);
    this.#left = count;
  }

  /**
   * The write at `index` ended, with `outcome`.
   *
   * @param index The write's place in the call.
   * @param outcome Its outcome.
   */
  end(index: number, outcome: WriteOutcome): void {
    if (this.#outcomes[index] !== undefined) return;
    this.#outcomes[index] = outcome;
    this.#left--;
    if (this.#left === 0 && !this.#failed) {
      this.#all?.resolve(this.#outcomes as WriteOutcome[]);
    }
  }

  /**
   * The write at `index` ends when `opId` settles: waits on it from now on.
   * Call in the commit's own continuation, before any settlement can run.
   *
   * @param index The write's place in the call.
   * @param opId The op carrying it.
   */
  wait(index: number, opId: string): void {
    this.#registry.add(opId, new EndSlot(this, index));
  }

  /**
   * Every end rejects with `error`: the call failed, or the engine closed.
   *
   * @param error The rejection.
   */
  fail(error: unknown): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#error = error;
    this.#all?.reject(error);
  }

  /**
   * Resolves with every write's outcome, in call order, once all ended.
   *
   * @returns The promise, the same one on every call. It is handled from
   * the start: no unhandled rejection if the app drops it.
   */
  all(): Promise<WriteOutcome[]> {
    if (this.#all === null) {
      this.#all = Promise.withResolvers();
      this.#all.promise.catch(() => {});
      if (this.#failed) this.#all.reject(this.#error);
      else if (this.#left === 0) {
        this.#all.resolve(this.#outcomes as WriteOutcome[]);
      }
    }
    return this.#all.promise;
  }
}

/** A local write's result, as the table builds it. */
export interface WriteDone<R> {
  /** What the write method resolves to. */
  readonly value: R;
  /** The op carrying the write (`null` when none does). */
  readonly opId: string | null;
}

/**
 * Wraps a local write into a {@linkcode WritePromise}. `synced` and `opId`
 * are made when first read, and handled from the start (an app that never
 * reads them sees no unhandled rejection); they reject with the write's
 * error when it fails.
 *
 * @param work The write.
 * @param ends Its end (a call of one write).
 * @returns The write promise.
 */
export function writePromise<R>(
  work: Promise<WriteDone<R>>,
  ends: WriteEnds,
): WritePromise<R> {
  const value = work.then(
    (done) => done.value,
    (error) => {
      ends.fail(error);
      throw error;
    },
  );
  let synced: Promise<WriteOutcome> | undefined;
  let opId: Promise<string | null> | undefined;
  return Object.defineProperties(value, {
    synced: {
      get: () => synced ??= handled(ends.all().then((all) => all[0]!)),
      enumerable: true,
    },
    opId: {
      get: () => opId ??= handled(work.then((done) => done.opId)),
      enumerable: true,
    },
  }) as WritePromise<R>;
}

/**
 * Wraps a many-record local write into a {@linkcode WriteManyPromise}, as
 * {@linkcode writePromise} does.
 *
 * @param work The write: the result and the op of each record.
 * @param ends The records' ends.
 * @returns The write promise.
 */
export function writeManyPromise<R>(
  work: Promise<{ value: R; opIds: readonly (string | null)[] }>,
  ends: WriteEnds,
): WriteManyPromise<R> {
  const value = work.then(
    (done) => done.value,
    (error) => {
      ends.fail(error);
      throw error;
    },
  );
  let opIds: Promise<(string | null)[]> | undefined;
  return Object.defineProperties(value, {
    synced: { get: () => ends.all(), enumerable: true },
    opIds: {
      get: () => opIds ??= handled(work.then((done) => [...done.opIds])),
      enumerable: true,
    },
  }) as WriteManyPromise<R>;
}

/** A promise with a rejection handler: dropping it is no unhandled rejection. */
function handled<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => {});
  return promise;
}
