/**
 * Live mode of auto sync (ENGINE.md clause 27): reads the transport's live
 * hints, collects the hinted kinds for `debounceMs` and runs one
 * `sync({ pullKinds })` per burst; reconnects with capped exponential
 * backoff and jitter; stops for good when the backend has no live hints
 * (auto sync's interval runs go on either way). Background work: everything
 * it meets becomes an event, never an unhandled rejection (clause 19).
 *
 * @module
 */

import { clampDelay, MAX_RETRY_AFTER_MS, MAX_TIMER_MS } from "./backoff.ts";
import type {
  Clock,
  LiveOptions,
  SyncOptions,
  SyncResult,
  Timers,
} from "./_engine_options.ts";
import {
  AuthError,
  ServerError,
  type SyncError,
  toSyncError,
} from "./errors.ts";
import type { EventHub, LiveState } from "./events.ts";
import type { SyncStatus } from "./_status.ts";
import type { Transport } from "./transport.ts";

/** The code of the transport error that says the backend has no hints. */
const LIVE_UNSUPPORTED = "live_unsupported";

/**
 * How long a stream must have stayed open for its end to count as a fresh
 * start of the backoff: a server that accepts and drops every stream at
 * once is not reconnected to ever faster.
 */
const STABLE_MS = 10_000;

/** What live mode needs from its engine. */
export interface LiveSyncHost {
  /** The engine's events: `live` and `error` go there. */
  readonly hub: EventHub;
  /** The client clock. */
  readonly clock: Clock;
  /** The timers. */
  readonly timers: Timers;
  /** A random number in [0, 1), for the reconnect jitter. */
  readonly random: () => number;
  /** The backend. */
  readonly transport: Transport;
  /** Whether the engine is closed. */
  closed(): boolean;
  /** Where the engine stands: no hinted runs in the `auth` status. */
  status(): SyncStatus;
  /** The run in progress, if any. */
  running(): Promise<SyncResult> | null;
  /** Starts (or shares) a sync run. */
  sync(options: SyncOptions): Promise<SyncResult>;
  /** The registered tables' kinds. */
  kinds(): readonly string[];
}

/** Live options with every default resolved. */
export type ResolvedLiveOptions = Required<LiveOptions>;

/** One `startAuto({ live })` until `stop()`. */
interface Session {
  readonly options: ResolvedLiveOptions;
  readonly controller: AbortController;
  /** The hinted kinds not pulled yet. */
  readonly pending: Set<string>;
  /** The debounce timer, or null. */
  timer: unknown;
  /** Whether a hinted run is being started or waited for. */
  flushing: boolean;
  /** The stream loop, until it ends. */
  loop: Promise<void>;
}

/**
 * Checks live options and resolves their defaults.
 *
 * @param live `startAuto()`'s `live` option.
 * @returns The options, or `null` when live mode is off.
 * @throws {RangeError} When a delay is not a number of ms in its range.
 */
export function resolveLiveOptions(
  live: boolean | LiveOptions | undefined,
): ResolvedLiveOptions | null {
  if (live === undefined || live === false) return null;
  const given: LiveOptions = live === true ? {} : live;
  if (typeof given !== "object" || given === null) {
    throw new TypeError(
      `Cannot start auto sync as live is neither a boolean nor an object: current value is ${given}`,
    );
  }
  const resolved: ResolvedLiveOptions = {
    debounceMs: given.debounceMs ?? 100,
    retryBaseMs: given.retryBaseMs ?? 1000,
    maxBackoffMs: given.maxBackoffMs ?? 30_000,
  };
  for (const [name, value] of Object.entries(resolved)) {
    const min = name === "debounceMs" ? 0 : 1;
    if (
      typeof value !== "number" || !(value >= min && value <= MAX_TIMER_MS)
    ) {
      throw new RangeError(
        `Cannot start auto sync as live.${name} is not a number of ms from ${min} to ${MAX_TIMER_MS}: current value is ${value}`,
      );
    }
  }
  return resolved;
}

/** Live mode of one engine. */
export class LiveSync {
  readonly #host: LiveSyncHost;
  #state: LiveState = "off";
  #session: Session | null = null;

  /**
   * Constructs a new instance, off.
   *
   * @param host What live mode needs from its engine.
   */
  constructor(host: LiveSyncHost) {
    this.#host = host;
  }

  /** Where live mode stands. */
  get state(): LiveState {
    return this.#state;
  }

  /**
   * Stops a previous session and starts one (or none, for `null`).
   *
   * @param options Resolved by {@linkcode resolveLiveOptions}.
   */
  start(options: ResolvedLiveOptions | null): void {
    void this.stop();
    if (options === null) return;
    const session: Session = {
      options,
      controller: new AbortController(),
      pending: new Set(),
      timer: null,
      flushing: false,
      loop: Promise.resolve(),
    };
    this.#session = session;
    // #connect catches everything; the catch is a last guard (clause 19).
    session.loop = this.#connect(session).catch((error) => this.#report(error));
  }

  /**
   * Ends the stream and the pending debounce; a hinted run in progress
   * finishes (as with `stopAuto()`). Idempotent.
   *
   * @returns When the stream's loop has ended.
   */
  stop(): Promise<void> {
    const session = this.#session;
    if (session === null) return Promise.resolve();
    this.#session = null;
    session.controller.abort();
    this.#host.timers.clearTimeout(session.timer);
    session.timer = null;
    session.pending.clear();
    this.#setState("off");
    return session.loop;
  }

  /** Reads streams until the session ends or the backend has none. */
  async #connect(session: Session): Promise<void> {
    const { signal } = session.controller;
    const live = this.#host.transport.live?.bind(this.#host.transport);
    if (live === undefined) {
      this.#setState("unsupported", session);
      return;
    }
    let failures = 0;
    while (!signal.aborted) {
      this.#setState("connecting", session);
      let openedAt: number | null = null;
      let failure: unknown = null;
      try {
        const hints = live({
          signal,
          onProblem: (error) => this.#report(error),
        });
        for await (const hint of hints) {
          if (signal.aborted) break;
          if (openedAt === null) {
            openedAt = this.#host.clock.now();
            this.#setState("open", session);
            // What changed while no stream was open was not hinted.
            this.#queue(session, this.#host.kinds());
          }
          this.#queue(session, hint.kinds);
        }
      } catch (error) {
        failure = error;
      }
      if (signal.aborted) return;
      if (failure instanceof ServerError && failure.code === LIVE_UNSUPPORTED) {
        this.#setState("unsupported", session);
        return;
      }
      const error = failure === null ? null : toSyncError(failure, "network");
      if (error?.category === "closed") {
        // The transport was closed: no stream will open again.
        this.#report(error);
        this.#setState("off", session);
        return;
      }
      if (error !== null) this.#report(error);
      const now = this.#host.clock.now();
      if (openedAt !== null && now - openedAt >= STABLE_MS) failures = 0;
      failures++;
      this.#setState("connecting", session);
      if (error instanceof AuthError) await this.#authCleared(signal);
      await this.#sleep(this.#delay(session.options, failures, error), signal);
    }
  }

  /**
   * The wait before reconnecting: `base × 2^(failures-1)` capped, between
   * half of that and all of it; the cap for an error retrying cannot cure;
   * at least the server's `Retry-After`.
   */
  #delay(
    options: ResolvedLiveOptions,
    failures: number,
    error: SyncError | null,
  ): number {
    const bound = Math.min(
      options.maxBackoffMs,
      options.retryBaseMs * 2 ** Math.min(failures - 1, 40),
    );
    let wait = error !== null && !error.retryable
      ? options.maxBackoffMs
      : bound / 2 + (bound / 2) * this.#host.random();
    if (error instanceof ServerError && error.retryAfterMs !== undefined) {
      wait = Math.max(wait, clampDelay(error.retryAfterMs, MAX_RETRY_AFTER_MS));
    }
    return Math.round(clampDelay(wait));
  }

  /** Adds hinted kinds (registered ones only) and arms the debounce. */
  #queue(session: Session, kinds: readonly string[]): void {
    if (session.controller.signal.aborted) return;
    const registered = new Set(this.#host.kinds());
    for (const kind of kinds) {
      if (registered.has(kind)) session.pending.add(kind);
    }
    if (
      session.pending.size === 0 || session.timer !== null || session.flushing
    ) {
      return;
    }
    session.timer = this.#host.timers.setTimeout(() => {
      session.timer = null;
      void this.#flush(session);
    }, session.options.debounceMs);
  }

  /**
   * One run for the kinds collected. A run already in progress may have
   * pulled those kinds before the hint: it is waited for, then a fresh one
   * starts. Hints during the run arm one follow-up.
   */
  async #flush(session: Session): Promise<void> {
    const { signal } = session.controller;
    if (signal.aborted) return;
    session.flushing = true;
    try {
      const running = this.#host.running();
      if (running !== null) await running.catch(() => {});
      if (signal.aborted || this.#host.closed()) return;
      // Runs pause in the auth status until a manual sync succeeds.
      if (this.#host.status().connection === "auth") {
        session.pending.clear();
        return;
      }
      const pullKinds = [...session.pending];
      session.pending.clear();
      // The run reports its own failure as an `error` event.
      await this.#host.sync({ pullKinds }).catch(() => {});
    } finally {
      session.flushing = false;
      this.#queue(session, []);
    }
  }

  /** Waits until a run succeeds (new credentials), or the session ends. */
  #authCleared(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        off();
        signal.removeEventListener("abort", done);
        resolve();
      };
      const off = this.#host.hub.on("syncCompleted", (event) => {
        if (event.ok) done();
      });
      signal.addEventListener("abort", done, { once: true });
      if (signal.aborted) done();
    });
  }

  /** Waits `ms` on the host's timers, or less when `signal` aborts. */
  #sleep(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal.aborted) {
        resolve();
        return;
      }
      const done = (): void => {
        this.#host.timers.clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = this.#host.timers.setTimeout(done, ms);
      signal.addEventListener("abort", done, { once: true });
    });
  }

  /** Sets the state and emits a `live` event when it changed. */
  #setState(state: LiveState, session?: Session): void {
    // A stopped session's loop no longer speaks for the engine.
    if (session !== undefined && this.#session !== session) return;
    if (this.#state === state) return;
    this.#state = state;
    this.#host.hub.emit({ type: "live", state });
  }

  #report(thrown: unknown): void {
    const error = toSyncError(thrown);
    this.#host.hub.emit({
      type: "error",
      error,
      category: error.category,
      retryable: error.retryable,
    });
  }
}
