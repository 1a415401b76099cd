/**
 * Typed engine events (ENGINE.md clause 20) and the small hub that delivers
 * them. A throwing listener never breaks the engine: its error goes to the
 * hub's `onListenerError`.
 *
 * @module
 */

import type { SyncStatus } from "./_status.ts";
import type { SyncError } from "./errors.ts";
import type { JsonObject } from "./json.ts";

/** Counters of one sync run. */
export interface SyncStats {
  /** Ops the server accepted. */
  pushed: number;
  /** Conflicts met (409s). */
  conflicts: number;
  /** Conflicts resolved by a write or by taking the server's record. */
  resolved: number;
  /** Ops parked in the conflict inbox. */
  deferred: number;
  /** Ops quarantined after a rejection. */
  quarantined: number;
  /** Ops left for a later run after a retryable failure. */
  retrying: number;
  /** Records received by pulls (tombstones included). */
  pulled: number;
  /** Pull pages applied. */
  pages: number;
  /**
   * Pulled items skipped for breaking the wire limits (clause 25), each
   * reported by a `pullItemSkipped` event.
   */
  skipped: number;
  /** Local records removed by a full resync. */
  removed: number;
}

/**
 * What is wrong with a record a server sent (ENGINE.md clause 25): not an
 * object, an id the limits refuse, an `updated_at` that is not a timestamp,
 * a `deleted_at` that is neither null nor a timestamp, or nesting deeper
 * than the limit.
 */
export type RecordProblem =
  | "not_object"
  | "invalid_id"
  | "invalid_updated_at"
  | "invalid_deleted_at"
  | "too_deep";

/**
 * Where a change to local data came from:
 *
 * - `local`: a write of this app (or a quarantined op edited or dropped);
 * - `pushed`: the server's answer to this client's own push (its stored
 *   version after an acknowledged write, or what a conflict resolved to);
 * - `pulled`: a pull brought another client's change;
 * - `remote`: another engine sharing this storage wrote it locally
 *   (ENGINE.md clause 26; its pushes and pulls keep their own origin).
 */
export type ChangeOrigin = "local" | "pushed" | "pulled" | "remote";

/** A change to a record as the app sees it. */
export interface RecordChange {
  /** The table. */
  readonly kind: string;
  /** The record's id. */
  readonly id: string;
  /** The record's data now; `null` when it was removed. */
  readonly data: JsonObject | null;
  /** Whether the record is now deleted. */
  readonly deleted: boolean;
  /** Where the change came from. */
  readonly origin: ChangeOrigin;
}

/**
 * Where live mode stands (`startAuto({ live })`, ENGINE.md clause 27):
 *
 * - `off`: not asked for, or stopped;
 * - `connecting`: opening the stream, or waiting to reconnect;
 * - `open`: hints arrive; a hinted change is pulled within `debounceMs`;
 * - `unsupported`: the transport or the server has no live hints; auto sync
 *   polls every `intervalMs`.
 */
export type LiveState = "off" | "connecting" | "open" | "unsupported";

/** Every event the engine emits, discriminated by `type`. */
export type SyncEvent =
  | {
    readonly type: "syncStarted";
    readonly runId: number;
    readonly mode: "sync" | "fullResync";
  }
  | {
    readonly type: "syncCompleted";
    readonly runId: number;
    readonly mode: "sync" | "fullResync";
    readonly ok: boolean;
    readonly stats: SyncStats;
    readonly durationMs: number;
    readonly error?: SyncError;
  }
  | {
    readonly type: "progress";
    readonly phase: "push" | "pull";
    readonly kind?: string;
    readonly done: number;
    readonly total: number | null;
  }
  | {
    readonly type: "opPushed";
    readonly kind: string;
    readonly id: string;
    readonly opId: string;
    readonly opType: "upsert" | "delete";
    readonly status: number;
  }
  | {
    readonly type: "opFailed";
    readonly kind: string;
    readonly id: string;
    readonly opId: string;
    readonly error: SyncError;
    readonly retryable: boolean;
  }
  | {
    readonly type: "opQuarantined";
    readonly kind: string;
    readonly id: string;
    readonly opId: string;
    readonly error: SyncError;
  }
  | {
    readonly type: "conflictDetected";
    readonly kind: string;
    readonly id: string;
    readonly opId: string;
    readonly local: JsonObject | null;
    readonly server: JsonObject | null;
    readonly strategy: string;
  }
  | {
    readonly type: "conflictResolved";
    readonly kind: string;
    readonly id: string;
    readonly opId: string;
    readonly strategy: string;
    readonly resolution:
      | "acceptServer"
      | "acceptClient"
      | "acceptMerged"
      | "discard";
    /** The record the client now holds or sends; `null` for a delete. */
    readonly result: JsonObject | null;
  }
  | {
    readonly type: "conflictDeferred";
    readonly kind: string;
    readonly id: string;
    readonly opId: string;
    readonly reason: "manual" | "retries-exhausted";
  }
  | {
    readonly type: "dataMerged";
    readonly kind: string;
    readonly id: string;
    readonly local: JsonObject;
    readonly server: JsonObject;
    readonly result: JsonObject;
    readonly localFields: readonly string[];
    readonly serverFields: readonly string[];
    readonly conflictingFields: readonly string[];
  }
  | {
    readonly type: "pullPageApplied";
    readonly kind: string;
    readonly count: number;
    readonly cursor: { readonly updatedAt: string; readonly id: string };
  }
  | {
    /**
     * A pulled item broke the wire limits (ENGINE.md clause 25) and was not
     * applied; the pull went on past it.
     */
    readonly type: "pullItemSkipped";
    readonly kind: string;
    /** The item's index in its page. */
    readonly index: number;
    /** What is wrong, machine-readable. */
    readonly problem: RecordProblem;
    /** What is wrong, in words. */
    readonly reason: string;
    /**
     * The cursor position past the item (its `updated_at`, and its id or a
     * valid stand-in past it); `null` when the item has no readable
     * position, and the cursor moves past it only with the items after it.
     */
    readonly position:
      | { readonly updatedAt: string; readonly id: string }
      | null;
  }
  | ({ readonly type: "change" } & RecordChange)
  | {
    /** `engine.status` changed (ENGINE.md clause 23): its new snapshot. */
    readonly type: "status";
    readonly status: SyncStatus;
  }
  | {
    /** Live mode changed state. */
    readonly type: "live";
    readonly state: LiveState;
  }
  | {
    /**
     * Changes made by another engine sharing this storage were missed
     * (its change feed moved on too far, or named too many records): the
     * app should re-read these tables. `kinds` is `null` for every table.
     */
    readonly type: "changesMissed";
    readonly kinds: readonly string[] | null;
  }
  | {
    /** This engine became the store's syncer, or a follower (clause 26). */
    readonly type: "role";
    readonly role: "syncer" | "follower";
  }
  | {
    readonly type: "error";
    readonly error: SyncError;
    readonly category: SyncError["category"];
    readonly retryable: boolean;
  };

/** The names of the events. */
export type SyncEventType = SyncEvent["type"];

/** The event of one type. */
export type SyncEventOf<T extends SyncEventType> = Extract<
  SyncEvent,
  { type: T }
>;

/** A listener for events of type `T`. */
export type SyncEventListener<T extends SyncEventType> = (
  event: SyncEventOf<T>,
) => void;

/** Options for {@linkcode EventHub.on}. */
export interface ListenOptions {
  /** Removes the listener when aborted. */
  readonly signal?: AbortSignal;
}

/**
 * Delivers typed events to listeners, in registration order, synchronously.
 * Listener errors are caught and handed to `onListenerError`.
 *
 * @example Listening until a signal aborts
 * ```ts
 * import { EventHub } from "./events.ts";
 * import assert from "node:assert/strict";
 *
 * const hub = new EventHub();
 * const seen: string[] = [];
 * const controller = new AbortController();
 * hub.on("opPushed", (event) => seen.push(event.id), {
 *   signal: controller.signal,
 * });
 * hub.emit({
 *   type: "opPushed",
 *   kind: "todos",
 *   id: "a",
 *   opId: "01",
 *   opType: "upsert",
 *   status: 201,
 * });
 * controller.abort();
 * hub.emit({
 *   type: "opPushed",
 *   kind: "todos",
 *   id: "b",
 *   opId: "02",
 *   opType: "upsert",
 *   status: 201,
 * });
 * assert.deepEqual(seen, ["a"]);
 * ```
 */
export class EventHub {
  #listeners = new Map<SyncEventType, Set<(event: SyncEvent) => void>>();
  #onListenerError: (error: unknown, event: SyncEvent) => void;

  /**
   * Constructs a new instance.
   *
   * @param onListenerError Receives what a listener throws. Defaults to
   * `console.error`, so a faulty listener is visible but harmless.
   */
  constructor(
    onListenerError?: (error: unknown, event: SyncEvent) => void,
  ) {
    this.#onListenerError = onListenerError ?? defaultListenerError;
  }

  /**
   * Adds a listener.
   *
   * @param type The event type.
   * @param listener Called with each event of that type.
   * @param options A signal that removes the listener.
   * @returns A function that removes the listener.
   */
  on<T extends SyncEventType>(
    type: T,
    listener: SyncEventListener<T>,
    options: ListenOptions = {},
  ): () => void {
    const wrapped = listener as (event: SyncEvent) => void;
    let set = this.#listeners.get(type);
    if (set === undefined) {
      set = new Set();
      this.#listeners.set(type, set);
    }
    set.add(wrapped);
    const off = (): void => {
      set.delete(wrapped);
      options.signal?.removeEventListener("abort", off);
    };
    if (options.signal?.aborted) off();
    else options.signal?.addEventListener("abort", off, { once: true });
    return off;
  }

  /**
   * Tells whether anyone listens to a type, so costly event payloads can be
   * skipped.
   *
   * @param type The event type.
   * @returns `true` when at least one listener is registered.
   */
  has(type: SyncEventType): boolean {
    return (this.#listeners.get(type)?.size ?? 0) > 0;
  }

  /**
   * Delivers an event to its listeners.
   *
   * @param event The event.
   */
  emit(event: SyncEvent): void {
    const set = this.#listeners.get(event.type);
    if (set === undefined) return;
    for (const listener of [...set]) {
      try {
        listener(event);
      } catch (error) {
        try {
          this.#onListenerError(error, event);
        } catch {
          // The error reporter itself failed: nothing safe is left to do.
        }
      }
    }
  }

  /** Removes every listener. */
  clear(): void {
    this.#listeners.clear();
  }
}

function defaultListenerError(error: unknown, event: SyncEvent): void {
  console.error(`Listener for "${event.type}" threw:`, error);
}
