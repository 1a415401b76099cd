/**
 * The engine's status snapshot (ENGINE.md clause 23): connection, phase,
 * op counts, last success and last error, progress; one `status` event per
 * change, none when nothing changed. Other parts of the engine report to it
 * through {@linkcode StatusKeeper.patch} and the run hooks; the counts come
 * from `_op_counts.ts`.
 *
 * @module
 */

import type { EngineRole } from "./_engine_options.ts";
import type { SyncError } from "./errors.ts";
import type { LiveState } from "./events.ts";

/**
 * Where the engine stands, as one immutable snapshot: `engine.status`, and
 * the payload of the `status` event that fires on every change.
 */
export interface SyncStatus {
  /**
   * Whether the server was reached:
   *
   * - `online`: the last run reached the server (it succeeded, or the
   *   server answered with an error of its own);
   * - `offline`: the last run could not reach it (a `NetworkError`), or no
   *   run has reached it yet;
   * - `auth`: the server refused the credentials; auto sync pauses until a
   *   manual `sync()` succeeds;
   * - `paused`: the app stopped auto sync with `stopAuto()`; `startAuto()`
   *   resumes it (and shows the connection again).
   */
  readonly connection: "online" | "offline" | "auth" | "paused";
  /**
   * What the engine is doing: `push`, `pull` or `resync` (the pull of a
   * `fullResync()`) during a run, `idle` between runs, `closed` after
   * `close()`.
   */
  readonly phase: "idle" | "push" | "pull" | "resync" | "closed";
  /** Ops waiting to be pushed. */
  readonly pending: number;
  /** Ops the server rejected, waiting for the app (`engine.outbox`). */
  readonly quarantined: number;
  /** Conflicts parked in the inbox (`engine.conflicts`). */
  readonly deferred: number;
  /** When the last run succeeded, by the engine's clock; `null` before. */
  readonly lastSyncedAt: number | null;
  /** What the last run failed with; `null` once a run succeeds. */
  readonly lastError: SyncError | null;
  /**
   * The running phase's progress (as the `progress` event tells it), or
   * `null` between runs. `total` is `null` when unknown: a pull knows it
   * only when the server sends the page's optional `total`.
   */
  readonly progress: {
    readonly phase: "push" | "pull";
    readonly kind?: string;
    readonly done: number;
    readonly total: number | null;
  } | null;
  /**
   * Live hints (`startAuto({ live })`, clause 27): `off`, `connecting`,
   * `open`, or `unsupported` when the backend has none (interval polling
   * only), as `engine.live` tells it.
   */
  readonly live: LiveState;
  /**
   * Whether this engine runs its storage's syncs (clause 26): always
   * `syncer` without the `shared` option; with it, `syncer` while it holds
   * the store's lease and `follower` otherwise.
   */
  readonly role: EngineRole;
}

/** The fields a patch may change. */
export type StatusPatch = { -readonly [K in keyof SyncStatus]?: SyncStatus[K] };

/** Where the last run left the connection, before the app's pause. */
type Reach = "online" | "offline" | "auth";

/**
 * Holds the snapshot and emits a `status` event when a patch changes it.
 * The snapshot object is replaced, never mutated, so a UI can compare it by
 * identity.
 */
export class StatusKeeper {
  #status: SyncStatus = {
    connection: "offline",
    phase: "idle",
    pending: 0,
    quarantined: 0,
    deferred: 0,
    lastSyncedAt: null,
    lastError: null,
    progress: null,
    live: "off",
    role: "syncer",
  };
  #reach: Reach = "offline";
  #paused = false;
  #emit: (status: SyncStatus) => void;

  /**
   * Constructs a new instance.
   *
   * @param emit Receives each new snapshot (the engine emits it as a
   * `status` event; listener errors never reach the keeper).
   */
  constructor(emit: (status: SyncStatus) => void) {
    this.#emit = emit;
  }

  /** The current snapshot. */
  get current(): SyncStatus {
    return this.#status;
  }

  /**
   * Changes some fields; emits the new snapshot when one of them differs.
   *
   * @param changes The fields to set.
   */
  patch(changes: StatusPatch): void {
    const current = this.#status;
    let changed = false;
    for (const [key, value] of Object.entries(changes)) {
      const name = key as keyof SyncStatus;
      if (
        name === "progress"
          ? !sameProgress(current.progress, value as SyncStatus["progress"])
          : current[name] !== value
      ) {
        changed = true;
        break;
      }
    }
    if (!changed) return;
    this.#status = Object.freeze({ ...current, ...changes });
    this.#emit(this.#status);
  }

  /**
   * Records the app's pause (`stopAuto()`) or resume (`startAuto()`).
   *
   * @param paused Whether auto sync is stopped by the app.
   */
  setPaused(paused: boolean): void {
    this.#paused = paused;
    this.patch({ connection: paused ? "paused" : this.#reach });
  }

  /**
   * Records how a run ended: the connection it found, its time or error,
   * and the phase after it.
   *
   * @param error What the run failed with, or `null`.
   * @param info When it ended (engine clock) and whether the engine closed.
   */
  runEnded(
    error: SyncError | null,
    info: { readonly at: number; readonly closed: boolean },
  ): void {
    const reach = reachOf(error);
    if (reach !== null) this.#reach = reach;
    this.patch({
      connection: this.#paused ? "paused" : this.#reach,
      phase: info.closed ? "closed" : "idle",
      progress: null,
      lastError: error,
      ...(error === null ? { lastSyncedAt: info.at } : {}),
    });
  }
}

/**
 * The connection a run's outcome shows: success, or an error the server
 * itself answered with, reached it; a network error did not; an abort, a
 * storage or a validation error says nothing about the server.
 */
function reachOf(error: SyncError | null): Reach | null {
  if (error === null) return "online";
  switch (error.category) {
    case "network":
      return "offline";
    case "auth":
      return "auth";
    case "server":
    case "rejected":
    case "conflict":
    case "parse":
      return "online";
    default:
      return null;
  }
}

function sameProgress(
  a: SyncStatus["progress"],
  b: SyncStatus["progress"],
): boolean {
  if (a === null || b === null) return a === b;
  return a.phase === b.phase && a.kind === b.kind && a.done === b.done &&
    a.total === b.total;
}
