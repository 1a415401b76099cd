/**
 * Auto sync (ENGINE.md clause 19): runs in the background every interval,
 * soon after local writes, and with capped exponential backoff after
 * failures, honouring the server's `Retry-After`.
 *
 * @module
 */

import {
  backoffDelay,
  clampDelay,
  MAX_RETRY_AFTER_MS,
  MAX_TIMER_MS,
} from "./backoff.ts";
import type {
  AutoSyncOptions,
  Clock,
  SyncResult,
  Timers,
} from "./_engine_options.ts";
import type { SyncStatus } from "./_status.ts";
import { ServerError, SyncError } from "./errors.ts";
import type { EventHub } from "./events.ts";

/** What the scheduler needs from its engine. */
export interface AutoSyncHost {
  /** The engine's events: local writes bring a run forward. */
  readonly hub: EventHub;
  /** The client clock. */
  readonly clock: Clock;
  /** The timers. */
  readonly timers: Timers;
  /** A random number in [0, 1), for backoff jitter. */
  readonly random: () => number;
  /** Whether the engine is closed. */
  closed(): boolean;
  /** Where the engine stands. */
  status(): SyncStatus;
  /** The run in progress, if any. */
  running(): Promise<SyncResult> | null;
  /** Starts (or shares) a sync run. */
  sync(): Promise<SyncResult>;
  /**
   * Whether another engine sharing the storage syncs it now (clause 26):
   * the timer then only re-arms.
   */
  standby?(): boolean;
}

/** The background runs of one engine: `startAuto()` and `stopAuto()`. */
export class AutoSync {
  #host: AutoSyncHost;
  #auto: {
    options: Required<Omit<AutoSyncOptions, "live">>;
    timer: unknown;
    /** When the armed timer fires (ms since the epoch), or null. */
    dueAt: number | null;
    /** No run before this (backoff or Retry-After), ms since the epoch. */
    notBefore: number;
    failures: number;
    offWrite: () => void;
  } | null = null;

  /**
   * Constructs a new instance, stopped.
   *
   * @param host What the scheduler needs from its engine.
   */
  constructor(host: AutoSyncHost) {
    this.#host = host;
  }

  /**
   * Checks the options and (re)starts background runs, the first one now.
   *
   * @param options Interval, write delay, backoff cap.
   * @throws {RangeError} When an option is not a number of ms in its range.
   */
  start(options: AutoSyncOptions): void {
    const resolved: Required<Omit<AutoSyncOptions, "live">> = {
      intervalMs: options.intervalMs ?? 30_000,
      afterWriteMs: options.afterWriteMs === undefined
        ? 500
        : options.afterWriteMs,
      maxBackoffMs: options.maxBackoffMs ?? 300_000,
    };
    for (const [name, value] of Object.entries(resolved)) {
      if (value === null && name === "afterWriteMs") continue;
      // An interval of 0 would run back to back; past MAX_TIMER_MS a timer
      // overflows and fires at once.
      const min = name === "intervalMs" ? 1 : 0;
      if (
        typeof value !== "number" || !(value >= min && value <= MAX_TIMER_MS)
      ) {
        throw new RangeError(
          `Cannot start auto sync as ${name} is not a number of ms from ${min} to ${MAX_TIMER_MS}: current value is ${value}`,
        );
      }
    }
    this.stop();
    const offWrite = resolved.afterWriteMs === null
      ? () => {}
      : this.#host.hub.on("change", (event) => {
        // `remote`: another engine sharing the storage wrote (clause 26).
        if (event.origin !== "local" && event.origin !== "remote") return;
        if (this.#auto === null) return;
        const soon = this.#host.clock.now() + resolved.afterWriteMs!;
        this.#schedule(Math.max(soon, this.#auto.notBefore), false);
      });
    this.#auto = {
      options: resolved,
      timer: undefined,
      dueAt: null,
      notBefore: 0,
      failures: 0,
      offWrite,
    };
    this.#schedule(this.#host.clock.now(), true);
  }

  /** Stops background runs; a run in progress finishes. Idempotent. */
  stop(): void {
    if (this.#auto === null) return;
    this.#host.timers.clearTimeout(this.#auto.timer);
    this.#auto.offWrite();
    this.#auto = null;
  }

  /**
   * Brings the next background run forward to now, if auto sync is on
   * (a new syncer of a shared storage catches up).
   */
  wake(): void {
    if (this.#auto === null) return;
    this.#schedule(
      Math.max(this.#host.clock.now(), this.#auto.notBefore),
      false,
    );
  }

  /**
   * Arms the auto-sync timer for `at` (ms since the epoch). A local write
   * may only bring a run forward, never past the backoff or `Retry-After`
   * the last failure asked for; `force` replaces the timer after a run.
   */
  #schedule(at: number, force: boolean): void {
    const auto = this.#auto;
    if (auto === null) return;
    if (!force && auto.dueAt !== null && at >= auto.dueAt) return;
    this.#host.timers.clearTimeout(auto.timer);
    auto.dueAt = at;
    auto.timer = this.#host.timers.setTimeout(() => {
      auto.dueAt = null;
      void this.#tick();
    }, clampDelay(at - this.#host.clock.now()));
  }

  /**
   * One background run (clause 19): everything it throws is caught here and
   * only decides the next delay; the run itself already reported the error
   * as an `error` event, so nothing becomes an unhandled rejection.
   */
  async #tick(): Promise<void> {
    const auto = this.#auto;
    if (auto === null || this.#host.closed()) return;
    if (
      this.#host.status().connection === "auth" ||
      this.#host.standby?.() === true
    ) {
      this.#schedule(this.#host.clock.now() + auto.options.intervalMs, true);
      return;
    }
    let next = auto.options.intervalMs;
    try {
      // A write during a run may have come after its push: wait for that
      // run, then start a fresh one instead of sharing its result.
      const running = this.#host.running();
      if (running !== null) await running.catch(() => {});
      const result = await this.#host.sync();
      auto.failures = 0;
      auto.notBefore = 0;
      if (result.retryAfterMs !== null) {
        // Clamped by the push phase to MAX_RETRY_AFTER_MS.
        next = Math.max(next, result.retryAfterMs);
        auto.notBefore = this.#host.clock.now() + result.retryAfterMs;
      }
    } catch (error) {
      // Already reported as an `error` event by the run; here it only
      // decides when to try again.
      auto.failures++;
      const retryable = error instanceof SyncError && error.retryable;
      const backoff = backoffDelay(auto.failures, {
        baseMs: 1000,
        maxMs: auto.options.maxBackoffMs,
        random: this.#host.random,
      });
      // A transport's value is clamped too: NaN or a year must not turn
      // into an immediate timer.
      const retryAfter = error instanceof ServerError
        ? clampDelay(error.retryAfterMs ?? 0, MAX_RETRY_AFTER_MS)
        : 0;
      // Full jitter can draw 0: keep a floor so a dead server is not hammered.
      next = retryable
        ? Math.max(backoff, retryAfter, 250)
        : auto.options.intervalMs;
      auto.notBefore = this.#host.clock.now() + next;
    }
    if (this.#auto === auto) {
      // A write during the run armed a follow-up: keep it (one run for all
      // such writes), unless the backoff asks to wait longer.
      const followUp = auto.dueAt;
      this.#schedule(this.#host.clock.now() + next, true);
      if (followUp !== null) {
        this.#schedule(Math.max(followUp, auto.notBefore), false);
      }
    }
  }
}
