/**
 * The options and results of {@linkcode SyncEngine}: a leaf module, so the
 * engine's parts (auto sync, runs) share them without importing the engine.
 * Public through `engine.ts`.
 *
 * @module
 */

import type {
  ConflictResolver,
  ConflictStrategy,
  MergeFunction,
} from "./conflict.ts";
import type { SyncEvent, SyncStats } from "./events.ts";
import type { Storage } from "./storage.ts";
import type { Transport } from "./transport.ts";

/** A clock. */
export interface Clock {
  /** The current time in ms since the epoch. */
  now(): number;
}

/** Timer functions, injectable so tests control time. */
export interface Timers {
  /** Schedules `callback` after `ms`. */
  setTimeout(callback: () => void, ms: number): unknown;
  /** Cancels a scheduled callback. */
  clearTimeout(handle: unknown): void;
}

/** Options of {@linkcode SyncEngine}. */
export interface SyncEngineOptions {
  /** The local store. The engine does not close it. */
  readonly storage: Storage;
  /** The backend. The engine does not close it. */
  readonly transport: Transport;
  /**
   * The conflict strategy of tables that name none.
   *
   * @default {"autoPreserve"}
   */
  readonly strategy?: ConflictStrategy;
  /** The resolver of the `manual` strategy, for tables that name none. */
  readonly resolver?: ConflictResolver;
  /** The merge function of the `merge` strategy, for tables that name none. */
  readonly mergeFn?: MergeFunction;
  /**
   * The client clock.
   *
   * @default {Date}
   */
  readonly clock?: Clock;
  /**
   * Makes op ids: must return a ULID greater than `after` when given.
   *
   * @default {a monotonic ULID factory on `clock`}
   */
  readonly ids?: (after?: string) => string;
  /**
   * Timers for `startAuto()`.
   *
   * @default {globalThis.setTimeout and clearTimeout}
   */
  readonly timers?: Timers;
  /**
   * A random number in [0, 1), for backoff jitter.
   *
   * @default {Math.random}
   */
  readonly random?: () => number;
  /**
   * The pull page size.
   *
   * @default {100}
   */
  readonly pageSize?: number;
  /**
   * The most ops handed to the transport in one call.
   *
   * @default {100}
   */
  readonly pushBatchSize?: number;
  /**
   * How many times one op may be re-sent after conflicts before it is parked
   * in the conflict inbox (clause 17).
   *
   * @default {3}
   */
  readonly maxConflictRetries?: number;
  /**
   * How many times a read-modify-write is retried when another writer
   * changed the store in between.
   *
   * @default {20}
   */
  readonly writeRetries?: number;
  /**
   * Receives what an event listener throws.
   *
   * @default {console.error}
   */
  readonly onListenerError?: (error: unknown, event: SyncEvent) => void;
  /**
   * Shares the storage with engines in other processes or isolates
   * (ENGINE.md clause 26): they elect one syncer with an expiring lease in
   * the store; the others follow its results and ask it to sync. Off when
   * absent: the engine assumes it is the store's only user.
   *
   * @default {undefined}
   */
  readonly shared?: SharedOptions;
}

/**
 * Options of an engine that shares its storage with engines in other
 * processes or isolates (ENGINE.md clause 26, `docs/coordination.md`). The
 * engines elect one syncer with an expiring lease in the store; the others
 * follow: they see its results through the store's change feed (`watch()`
 * and `change` events), their writes are pushed by it, and their `sync()`
 * asks it to sync. Every engine of one store should register the same
 * tables (the syncer syncs its own) and use the same `leaseMs`.
 *
 * @example A follower's write, pushed by the syncer
 * ```ts
 * import { SyncEngine } from "@offline-first/sync";
 * import { createMemoryStorage } from "@offline-first/sync/storage/memory";
 * import { createRestTransport } from "@offline-first/sync/transport/rest";
 * import { createSyncServer } from "@offline-first/sync/server";
 * import assert from "node:assert/strict";
 *
 * await using server = createSyncServer();
 * await using http = Deno.serve(
 *   { port: 0, hostname: "127.0.0.1", onListen() {} },
 *   server.fetch,
 * );
 * await using transport = createRestTransport({
 *   baseUrl: `http://127.0.0.1:${http.addr.port}`,
 * });
 * // One store, two engines: in an app, processes opening one SQLite or KV file.
 * await using storage = createMemoryStorage();
 * await using a = new SyncEngine({
 *   storage,
 *   transport,
 *   shared: { holder: "a", pollMs: 50 },
 * });
 * a.table("todos"); // the syncer syncs the tables it has: register them all
 * await new Promise((resolve) => a.on("role", resolve)); // a takes the lease
 * await using b = new SyncEngine({
 *   storage,
 *   transport,
 *   shared: { holder: "b", pollMs: 50 },
 * });
 * assert.equal(a.role, "syncer");
 * assert.equal(b.role, "follower");
 *
 * await b.table("todos").put({ id: "1", title: "written by b" });
 * const { stats } = await b.sync(); // a runs it and answers
 * assert.equal(stats.pushed, 1);
 * ```
 */
export interface SharedOptions {
  /**
   * How long the syncer's lease lasts without a renewal, in ms (at least
   * 30). The syncer renews it every third of that; when the syncer dies,
   * another engine takes over within about `leaseMs + pollMs`.
   *
   * @default {5000}
   */
  readonly leaseMs?: number;
  /**
   * How often every engine reads the store's lease and change feed, in ms
   * (from 1 to `leaseMs`): how soon a follower sees the syncer's results.
   *
   * @default {500}
   */
  readonly pollMs?: number;
  /**
   * How long `sync()` on a follower waits for the syncer's answer before it
   * rejects with a `SyncRequestTimeoutError`, in ms (at least 1).
   *
   * @default {60000}
   */
  readonly requestTimeoutMs?: number;
  /**
   * This engine's name in the lease and the feed: 1 to 128 characters,
   * unique among the store's engines. A process that restarts under the
   * same name takes its old lease back at once.
   *
   * @default {a random UUID}
   */
  readonly holder?: string;
  /**
   * In a browser: elect the syncer among the origin's tabs and workers
   * with the Web Lock of this name (use the IndexedDB database's name).
   * The lock goes to one engine at a time and passes on the moment its
   * page closes or crashes; the holder takes the store's lease at once.
   * Every engine on the store must give the same name.
   *
   * @default {undefined: the store's lease alone}
   */
  readonly webLock?: string;
}

/**
 * What an engine sharing its storage does (ENGINE.md clause 26): the
 * `syncer` holds the lease and runs every sync; a `follower` sees the
 * syncer's results and asks it to sync. An engine without `shared` is
 * always the `syncer`.
 */
export type EngineRole = "syncer" | "follower";

/** Options of {@linkcode SyncEngine.sync}. */
export interface SyncOptions {
  /**
   * The tables to push.
   *
   * @default {every registered table}
   */
  readonly pushKinds?: readonly string[];
  /**
   * The tables to pull.
   *
   * @default {every registered table}
   */
  readonly pullKinds?: readonly string[];
  /** Cancels the run (shared runs: the first caller's signal). */
  readonly signal?: AbortSignal;
}

/** The result of a sync run. */
export interface SyncResult {
  /** The run's number. */
  readonly runId: number;
  /** What the run did. */
  readonly stats: SyncStats;
  /** How long it took, by the engine's clock. */
  readonly durationMs: number;
  /** The longest `Retry-After` a server asked for, in ms, if any. */
  readonly retryAfterMs: number | null;
}

/**
 * Options of {@linkcode SyncEngine.startAuto}. Every delay is at most
 * `2 ** 31 - 1` ms (about 24.8 days), the longest a timer holds; a
 * server's `Retry-After` is honoured up to one hour.
 */
export interface AutoSyncOptions {
  /**
   * The time between runs, in ms: more than 0.
   *
   * @default {30000}
   */
  readonly intervalMs?: number;
  /**
   * How soon after a local write a run starts, in ms; `null` to wait for
   * the interval.
   *
   * @default {500}
   */
  readonly afterWriteMs?: number | null;
  /**
   * The cap of the backoff after failed runs, in ms.
   *
   * @default {300000}
   */
  readonly maxBackoffMs?: number;
  /**
   * Live mode (ENGINE.md clause 27): read the transport's live hints and
   * pull the hinted tables once per burst; the interval runs stay as a
   * safety net. `true` for the defaults. Without `transport.live`, or when
   * the server has no live hints, auto sync polls as without it.
   *
   * @default {false}
   */
  readonly live?: boolean | LiveOptions;
}

/** Options of live mode: `startAuto({ live })`. */
export interface LiveOptions {
  /**
   * How long hints are collected before one run pulls every kind they
   * named, in ms.
   *
   * @default {100}
   */
  readonly debounceMs?: number;
  /**
   * The bound of the first reconnect delay, in ms; it doubles with each
   * failure in a row (between half the bound and the bound: jitter).
   *
   * @default {1000}
   */
  readonly retryBaseMs?: number;
  /**
   * The cap of the reconnect delay, in ms (a server's `Retry-After` is
   * honoured up to one hour).
   *
   * @default {30000}
   */
  readonly maxBackoffMs?: number;
}
