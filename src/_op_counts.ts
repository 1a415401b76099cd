/**
 * The outbox counts of the status (ENGINE.md clause 23): pending,
 * quarantined and parked ops, counted once when first asked for, then kept
 * current from the engine's own commits, so a local write never scans the
 * outbox. Every engine commit goes through {@linkcode observeWrites}, and
 * every op mutation the engine plans carries an `expect`: a revision means
 * the op existed (its state is known here: quarantined and parked ops are
 * few and held by id, every other op is pending), `null` means it did not.
 * A commit this cannot read (a mutation without `expect`) triggers a
 * recount instead.
 *
 * @module
 */

import type { Mutation, OpState, Storage, WriteResult } from "./storage.ts";

/** The counts, as the status shows them. */
export interface OpCountValues {
  /** Pending ops. */
  readonly pending: number;
  /** Quarantined ops. */
  readonly quarantined: number;
  /** Parked ops (the conflict inbox). */
  readonly deferred: number;
}

const PAGE = 1000;
/** Recounts in a row that met a concurrent commit before giving up. */
const MAX_RECOUNTS = 5;

/**
 * Wraps a storage so that each write is reported as it starts and ends.
 * Every other member is the storage's own (bound), so later additions to
 * the contract pass through.
 *
 * @param storage The engine's storage.
 * @param counts Told of each write: its start, and its end with the
 * mutations when it committed (`null` when it did not).
 * @returns The storage, observed.
 */
export function observeWrites(storage: Storage, counts: OpCounts): Storage {
  const write: Storage["write"] = async (mutations, options) => {
    counts.writeStarted();
    let result: WriteResult | undefined;
    try {
      result = await storage.write(mutations, options);
      return result;
    } finally {
      // A write that threw committed nothing (the Storage contract).
      counts.writeEnded(result?.ok === true ? mutations : null);
    }
  };
  // Bound once per member: reads on the hot path allocate nothing.
  const bound = new Map<PropertyKey, unknown>();
  return new Proxy(storage, {
    get(target, property) {
      if (property === "write") return write;
      const value = Reflect.get(target, property, target);
      if (typeof value !== "function") return value;
      let method = bound.get(property);
      if (method === undefined) {
        method = value.bind(target);
        bound.set(property, method);
      }
      return method;
    },
  });
}

/**
 * Keeps the outbox counts. Inactive (and free) until {@linkcode start}:
 * then it counts once, and adjusts the counts from each committed write.
 */
export class OpCounts {
  #storage: Storage;
  #changed: (counts: OpCountValues) => void;
  #failed: (error: unknown) => void;
  /** Quarantined and parked ops by id; every other op is pending. */
  #held = new Map<string, "quarantined" | "parked">();
  #pending = 0;
  #quarantined = 0;
  #active = false;
  #known = false;
  /** Bumped as each write starts and ends, so a count knows it raced one. */
  #epoch = 0;
  /** Writes in flight. */
  #writing = 0;
  #counting: Promise<void> | null = null;
  /** A recount was asked for while one ran: it may have read too early. */
  #again = false;

  /**
   * Constructs a new instance, inactive.
   *
   * @param storage The store, unobserved (counting reads only).
   * @param hooks Receive the new counts, and what a count failed with.
   */
  constructor(
    storage: Storage,
    hooks: {
      readonly changed: (counts: OpCountValues) => void;
      readonly failed: (error: unknown) => void;
    },
  ) {
    this.#storage = storage;
    this.#changed = hooks.changed;
    this.#failed = hooks.failed;
  }

  /** Starts counting, once: the first count runs in the background. */
  start(): void {
    if (this.#active) return;
    this.#active = true;
    this.recount();
  }

  /**
   * Counts again in the background (when active and no count is running).
   * The adjusted counts stay in place until the new ones are known.
   */
  recount(): void {
    if (!this.#active) return;
    if (this.#counting !== null) {
      this.#again = true;
      return;
    }
    this.#again = false;
    this.#counting = this.#count()
      .catch((error) => this.#failed(error))
      .finally(() => {
        this.#counting = null;
        if (this.#again) this.recount();
      });
  }

  /** Stops counting and waits for a count in progress (the engine's close). */
  async settled(): Promise<void> {
    this.#active = false;
    while (this.#counting !== null) await this.#counting;
  }

  /** Counts again unless the counts are known (after each run). */
  refresh(): void {
    if (!this.#known) this.recount();
  }

  /** A write starts. */
  writeStarted(): void {
    this.#epoch++;
    this.#writing++;
  }

  /**
   * A write ended: adjusts the counts by it when it committed.
   *
   * @param mutations The write's mutations in order, `null` when it did not
   * commit.
   */
  writeEnded(mutations: readonly Mutation[] | null): void {
    this.#epoch++;
    this.#writing--;
    if (mutations !== null && this.#known) this.#committed(mutations);
  }

  #committed(mutations: readonly Mutation[]): void {
    // The state of each op this write touched, before and after it; the
    // `expect`s name the state before the write, the last mutation wins.
    const before = new Map<string, OpState | null>();
    const after = new Map<string, OpState | null>();
    for (const mutation of mutations) {
      if (mutation.type !== "putOp" && mutation.type !== "deleteOp") continue;
      const opId = mutation.type === "putOp" ? mutation.op.opId : mutation.opId;
      if (!before.has(opId)) {
        if (mutation.expect === undefined) {
          // Unconditional: whether the op existed is not known here.
          this.#known = false;
          this.recount();
          return;
        }
        before.set(
          opId,
          mutation.expect === null ? null : this.#held.get(opId) ?? "pending",
        );
      }
      after.set(opId, mutation.type === "putOp" ? mutation.op.state : null);
    }
    if (after.size === 0) return;
    for (const [opId, state] of after) {
      const was = before.get(opId) ?? null;
      if (was === "pending") this.#pending--;
      if (state === "pending") this.#pending++;
      if (was === "quarantined") this.#quarantined--;
      if (state === "quarantined") this.#quarantined++;
      if (state === "quarantined" || state === "parked") {
        this.#held.set(opId, state);
      } else this.#held.delete(opId);
    }
    this.#report();
  }

  #report(): void {
    this.#changed({
      pending: Math.max(0, this.#pending),
      quarantined: this.#quarantined,
      deferred: this.#held.size - this.#quarantined,
    });
  }

  /**
   * Counts pending ops and lists held ones, in pages; starts over when a
   * write ran meanwhile (its effect may be half in the pages read, and one
   * in flight at the end may have committed without being told yet).
   */
  async #count(): Promise<void> {
    for (let round = 0; round < MAX_RECOUNTS; round++) {
      const epoch = this.#epoch;
      let pending = 0;
      const held = new Map<string, "quarantined" | "parked">();
      let after: string | undefined;
      for (;;) {
        const page = await this.#storage.listOps({
          ...(after === undefined ? {} : { after }),
          limit: PAGE,
        });
        for (const { value } of page) {
          if (value.state === "pending") pending++;
          else held.set(value.opId, value.state);
        }
        if (page.length < PAGE) break;
        after = page[page.length - 1]!.value.opId;
      }
      if (epoch !== this.#epoch || this.#writing !== 0) continue;
      this.#pending = pending;
      this.#held = held;
      this.#quarantined = 0;
      for (const state of held.values()) {
        if (state === "quarantined") this.#quarantined++;
      }
      this.#known = true;
      this.#report();
      return;
    }
    // The store kept changing: the next run's end counts again.
  }
}
