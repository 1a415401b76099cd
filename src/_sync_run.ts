/**
 * One sync run (ENGINE.md clauses 18-21): push, then pull, with the run's
 * events and stats; what it throws becomes a typed error, reported as an
 * `error` event before it is rethrown.
 *
 * @module
 */

import type { EngineContext } from "./_context.ts";
import type { Clock, SyncOptions, SyncResult } from "./_engine_options.ts";
import { SyncError, toSyncError } from "./errors.ts";
import type { SyncStats } from "./events.ts";
import { pullPhase } from "./pull.ts";
import { pushPhase } from "./push.ts";

/** The input of {@linkcode executeRun}. */
export interface RunInput {
  /** The run's number. */
  readonly runId: number;
  /** A sync, or a full resync (clause 13). */
  readonly mode: "sync" | "fullResync";
  /** Which tables; the caller's signal. */
  readonly options: SyncOptions;
  /** Aborted when the engine closes. */
  readonly closeSignal: AbortSignal;
  /** The client clock. */
  readonly clock: Clock;
  /** Tells the engine's status where the run stands. */
  readonly status: RunStatus;
}

/** What a run tells the engine's status (ENGINE.md clause 23). */
export interface RunStatus {
  /** A phase of the run begins. */
  phase(phase: "push" | "pull" | "resync"): void;
  /** The run ended, with what it failed with or `null`. */
  ended(error: SyncError | null): void;
}

/**
 * Runs one sync: push, then pull.
 *
 * @param ctx The engine context.
 * @param input The run's number, mode, options and engine hooks.
 * @returns The run's stats.
 * @throws {SyncError} What the run failed with, typed.
 */
export async function executeRun(
  ctx: EngineContext,
  input: RunInput,
): Promise<SyncResult> {
  const { runId, mode, options, clock } = input;
  const startedAt = clock.now();
  const stats: SyncStats = {
    pushed: 0,
    conflicts: 0,
    resolved: 0,
    deferred: 0,
    quarantined: 0,
    retrying: 0,
    pulled: 0,
    pages: 0,
    skipped: 0,
    removed: 0,
  };
  const signals = [input.closeSignal];
  if (options.signal !== undefined) signals.push(options.signal);
  const signal = AbortSignal.any(signals);
  // The run's last event, with the stats as they ended.
  const complete = (durationMs: number, error?: SyncError): void =>
    ctx.hub.emit({
      type: "syncCompleted",
      runId,
      mode,
      ok: error === undefined,
      stats: { ...stats },
      durationMs,
      ...(error === undefined ? {} : { error }),
    });
  input.status.phase("push");
  ctx.hub.emit({ type: "syncStarted", runId, mode });
  try {
    const all = [...ctx.kinds()];
    const pushKinds = checkKinds("push", options.pushKinds, all);
    const pullKinds = checkKinds("pull", options.pullKinds, all);
    const pushed = await pushPhase(ctx, {
      kinds: pushKinds,
      stats,
      signal,
    });
    input.status.phase(mode === "fullResync" ? "resync" : "pull");
    await pullPhase(ctx, {
      kinds: pullKinds,
      resync: mode === "fullResync",
      stats,
      signal,
    });
    const durationMs = clock.now() - startedAt;
    input.status.ended(null);
    complete(durationMs);
    return { runId, stats, durationMs, retryAfterMs: pushed.retryAfterMs };
  } catch (thrown) {
    const error = signal.aborted && !(thrown instanceof SyncError)
      ? abortError(signal.reason)
      : toSyncError(thrown);
    input.status.ended(error);
    ctx.hub.emit({
      type: "error",
      error,
      category: error.category,
      retryable: error.retryable,
    });
    complete(clock.now() - startedAt, error);
    throw error;
  }
}

function checkKinds(
  phase: "push" | "pull",
  requested: readonly string[] | undefined,
  all: string[],
): readonly string[] {
  if (requested === undefined) return all;
  for (const kind of requested) {
    if (!all.includes(kind)) {
      throw new SyncError(
        `Cannot ${phase} as the kind is not registered: current value is "${kind}"`,
        { category: "validation" },
      );
    }
  }
  return requested;
}

/**
 * The error of a run stopped by its signal: the engine's close, or the
 * caller's own abort (category `closed`: the run was shut down, and nothing
 * stops a later run from succeeding).
 */
function abortError(reason: unknown): SyncError {
  if (reason instanceof SyncError) return reason;
  return new SyncError("Cannot finish sync as the run was aborted", {
    category: "closed",
    retryable: true,
    cause: reason,
  });
}
