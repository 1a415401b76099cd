/**
 * The sync engine: tables over a local store, an outbox, and `sync()`
 * (push, then pull) through a transport.
 *
 * @module
 */

import { AutoSync } from "./_auto_sync.ts";
import { LiveSync, resolveLiveOptions } from "./_live_sync.ts";
import type { EngineContext, EngineLimits, TableConfig } from "./_context.ts";
import {
  configureTable,
  resolveDefaults,
  resolveLimits,
  type TableDefaults,
} from "./_engine_config.ts";
import { observeWrites, OpCounts } from "./_op_counts.ts";
import { StatusKeeper, type SyncStatus } from "./_status.ts";
import { executeRun } from "./_sync_run.ts";
import { SharedCoordinator } from "./_shared.ts";
import { resolveShared } from "./_shared_options.ts";
import type {
  AutoSyncOptions,
  Clock,
  EngineRole,
  SyncEngineOptions,
  SyncOptions,
  SyncResult,
  Timers,
} from "./_engine_options.ts";
import { ClosedError, SyncError, toSyncError } from "./errors.ts";
import {
  EventHub,
  type ListenOptions,
  type LiveState,
  type SyncEventListener,
  type SyncEventType,
} from "./events.ts";
import { ConflictInbox } from "./inbox.ts";
import type { JsonObject } from "./json.ts";
import { kindProblem } from "./limits.ts";
import { Outbox } from "./outbox.ts";
import { OutcomeRegistry } from "./_outcomes.ts";
import type { InferOutput, StandardSchemaV1 } from "./schema.ts";
import type { Storage } from "./storage.ts";
import { Table, type TableOptions } from "./table.ts";
import type { Transport } from "./transport.ts";
import { createUlid, isUlid } from "./ulid.ts";

// The engine's options and results, public from here.
export type * from "./_engine_options.ts";
export type { SyncStatus } from "./_status.ts";

/** A run in progress, shared by concurrent callers. */
interface Run {
  readonly mode: "sync" | "fullResync";
  readonly promise: Promise<SyncResult>;
}

/**
 * The offline-first sync engine.
 *
 * Apps read and write tables locally, instantly; each write commits its
 * outbox op atomically. `sync()` pushes the outbox, resolves conflicts on
 * the client, then pulls the server's changes page by page.
 *
 * @example Two clients syncing through the reference server
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
 * const baseUrl = `http://127.0.0.1:${http.addr.port}`;
 *
 * async function client() {
 *   const storage = createMemoryStorage();
 *   const transport = createRestTransport({ baseUrl });
 *   const engine = new SyncEngine({ storage, transport });
 *   return { engine, todos: engine.table("todos") };
 * }
 * const a = await client();
 * const b = await client();
 *
 * await a.todos.put({ id: "1", title: "Buy milk", done: false });
 * await a.engine.sync();
 * await b.engine.sync();
 * assert.equal((await b.todos.get("1"))?.title, "Buy milk");
 *
 * for (const c of [a, b]) await c.engine.close();
 * ```
 */
export class SyncEngine implements AsyncDisposable {
  /** The app's view of the outbox: queued and quarantined ops. */
  readonly outbox: Outbox;
  /** The persisted conflict inbox. */
  readonly conflicts: ConflictInbox;

  #storage: Storage;
  #transport: Transport;
  #hub: EventHub;
  #limits: EngineLimits;
  #clock: Clock;
  #ids: (after?: string) => string;
  #defaults: TableDefaults;
  #tables = new Map<string, { config: TableConfig; handle: Table<unknown> }>();
  #ctx: EngineContext;
  #closed = false;
  #closing: Promise<void> | null = null;
  #closeController = new AbortController();
  #run: Run | null = null;
  #runId = 0;
  #status: StatusKeeper;
  #counts: OpCounts;
  #watching = false;
  #skewMs = 0;
  #skewKnown = false;
  #autoSync: AutoSync;
  #outcomes = new OutcomeRegistry();
  #live: LiveSync;
  #shared: SharedCoordinator | null = null;

  /**
   * Constructs a new instance.
   *
   * @param options Storage, transport, strategy and injectable clock, ids,
   * timers.
   * @throws {RangeError} When a numeric option is not a positive integer,
   * or a `shared` option is out of its range.
   * @throws {TypeError} When the strategy is unknown.
   */
  constructor(options: SyncEngineOptions) {
    if (options?.storage === undefined || options.transport === undefined) {
      throw new TypeError(
        "Cannot create sync engine as storage and transport are required",
      );
    }
    this.#storage = options.storage;
    this.#transport = options.transport;
    this.#hub = new EventHub(options.onListenerError);
    this.#clock = options.clock ?? Date;
    const clock = this.#clock;
    this.#ids = options.ids ?? createUlid({ now: () => clock.now() });
    this.#status = new StatusKeeper((status) =>
      this.#hub.emit({ type: "status", status })
    );
    this.#counts = new OpCounts(this.#storage, {
      changed: (counts) => this.#status.patch(counts),
      failed: (error) => {
        const failure = toSyncError(error, "storage");
        this.#hub.emit({
          type: "error",
          error: failure,
          category: failure.category,
          retryable: failure.retryable,
        });
      },
    });
    const timers: Timers = options.timers ?? {
      setTimeout: (callback, ms) => setTimeout(callback, ms),
      clearTimeout: (handle) => clearTimeout(handle as number),
    };
    const shared = options.shared === undefined
      ? null
      : resolveShared(options.shared);
    this.#autoSync = new AutoSync({
      hub: this.#hub,
      clock,
      timers,
      random: options.random ?? Math.random,
      closed: () => this.#closed,
      status: () => this.#status.current,
      running: () => this.#run?.promise ?? null,
      sync: () => this.sync(),
      standby: () => this.#shared?.role === "follower",
    });
    this.#live = new LiveSync({
      hub: this.#hub,
      clock,
      timers,
      random: options.random ?? Math.random,
      transport: this.#transport,
      closed: () => this.#closed,
      status: () => this.#status.current,
      running: () => this.#run?.promise ?? null,
      sync: (syncOptions) => this.sync(syncOptions),
      kinds: () => [...this.#tables.keys()],
    });
    this.#limits = resolveLimits(options);
    this.#defaults = resolveDefaults(options);
    this.#ctx = this.#createContext();
    if (shared !== null) {
      this.#shared = new SharedCoordinator({
        storage: this.#storage,
        hub: this.#hub,
        clock,
        timers,
        writeRetries: this.#limits.writeRetries,
        run: (mode, runOptions) =>
          mode === "sync"
            ? this.#start("sync", runOptions)
            : this.#fullResync(runOptions),
        running: () => this.#run?.promise ?? null,
        wake: () => this.#autoSync.wake(),
        outcomes: this.#outcomes,
        // Another engine settled or queued ops in the shared store: this
        // one's counts were kept from its own writes only.
        foreign: () => this.#counts.recount(),
      }, shared);
    }
    // The snapshot also tells live mode's state and the role (clause 23).
    this.#hub.on("live", ({ state }) => this.#status.patch({ live: state }));
    this.#hub.on("role", ({ role }) => this.#status.patch({ role }));
    this.#status.patch({ role: this.role });
    const guard = (action: string): void => assertOpen(this.#closed, action);
    this.outbox = new Outbox(this.#ctx, guard);
    this.conflicts = new ConflictInbox(this.#ctx, guard);
  }

  /**
   * Where the engine stands (ENGINE.md clause 23): connection, phase, op
   * counts, last success and error, progress. A new snapshot object on
   * every change, each also sent as a `status` event. The op counts are
   * counted once, in the background, when the status is first read or
   * listened to (a `status` event follows), then kept current from the
   * engine's own writes, and counted again when another engine sharing
   * the store (the `shared` option) announces changes.
   *
   * @example Binding a UI to the status
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
   * await using engine = new SyncEngine({
   *   storage: createMemoryStorage(),
   *   transport: createRestTransport({
   *     baseUrl: `http://127.0.0.1:${http.addr.port}`,
   *   }),
   * });
   * const render = (status: typeof engine.status) =>
   *   `${status.connection}: ${status.pending} to send`;
   * let label = render(engine.status);
   * engine.on("status", (event) => label = render(event.status));
   *
   * await engine.table("todos").put({ id: "1", title: "Buy milk" });
   * await engine.sync();
   * assert.equal(label, "online: 0 to send");
   * assert.equal(engine.status.phase, "idle");
   * assert.equal(engine.status.lastError, null);
   * ```
   */
  get status(): SyncStatus {
    this.#watchCounts();
    return this.#status.current;
  }

  /**
   * Where live mode stands: `off` unless `startAuto({ live })` runs;
   * `unsupported` when the transport or server has no live hints (auto
   * sync then polls). Each change is also a `live` event.
   */
  get live(): LiveState {
    return this.#live.state;
  }

  /**
   * Whether this engine runs the syncs of its storage (ENGINE.md clause
   * 26): an engine with the `shared` option is the `syncer` while it holds
   * the store's lease and a `follower` otherwise (a `role` event tells each
   * change); one without it is always the `syncer`.
   */
  get role(): EngineRole {
    return this.#shared?.role ?? "syncer";
  }

  /**
   * The measured clock skew: server time minus client time, in ms (0 until
   * a response carried a `Date` header).
   */
  get clockSkewMs(): number {
    return this.#skewMs;
  }

  /**
   * Registers a table, or returns the one registered under `kind`.
   *
   * @typeParam S The schema, whose output types the records.
   * @param kind The table's kind: its REST path segment.
   * @param options Schema, field names, conflict strategy, coalescing.
   * @returns The table handle.
   * @throws {TypeError} When `kind` breaks the wire limits (1 to 64
   * characters of `[A-Za-z0-9_-]`, not `health`, `batch` or `live`), or is
   * registered already with other options.
   */
  table<S extends StandardSchemaV1>(
    kind: string,
    options: TableOptions<InferOutput<S>> & { readonly schema: S },
  ): Table<InferOutput<S>>;
  /**
   * Registers a table, or returns the one registered under `kind`.
   *
   * @typeParam T The record type.
   * @param kind The table's kind: its REST path segment.
   * @param options Field names, conflict strategy, coalescing.
   * @returns The table handle.
   */
  table<T = JsonObject>(kind: string, options?: TableOptions<T>): Table<T>;
  table<T>(kind: string, options?: TableOptions<T>): Table<T> {
    assertOpen(this.#closed, "register a table");
    // A TypeError, like every other misconfiguration of a table: a kind is
    // code, not data, and one the server refuses could never sync.
    const problem = kindProblem(kind);
    if (problem !== null) {
      throw new TypeError(
        `Cannot register table as its kind is invalid, ${problem}: current value is ${
          JSON.stringify(kind)
        }`,
      );
    }
    const existing = this.#tables.get(kind);
    if (existing !== undefined) {
      if (options !== undefined) {
        throw new TypeError(
          `Cannot register table as '${kind}' is registered already: current value is "${kind}"`,
        );
      }
      return existing.handle as Table<T>;
    }
    const config = this.#configure(kind, options ?? {});
    const handle = new Table<T>(
      this.#ctx,
      config,
      (action) => assertOpen(this.#closed, action),
      this.#closeController.signal,
    );
    this.#tables.set(kind, { config, handle: handle as Table<unknown> });
    return handle;
  }

  /**
   * Adds an event listener.
   *
   * @param type The event type.
   * @param listener Called with each event of that type; what it throws is
   * reported, never propagated.
   * @param options A signal that removes the listener.
   * @returns A function that removes the listener.
   */
  on<T extends SyncEventType>(
    type: T,
    listener: SyncEventListener<T>,
    options?: ListenOptions,
  ): () => void {
    const off = this.#hub.on(type, listener, options);
    if (type === "status") this.#watchCounts();
    return off;
  }

  /**
   * Pushes the outbox, then pulls every table's changes. One run at a time
   * (clause 18): a call during a run shares that run's result. On a
   * follower of a shared storage (the `shared` option), asks the syncer to
   * sync and resolves with its run's result.
   *
   * @param options Which tables to push and pull; a signal.
   * @returns The run's stats.
   * @throws {SyncError} A typed error when the run fails; nothing applied
   * is lost and the outbox is kept.
   * @throws {SyncRequestTimeoutError} On a follower, when the syncer did
   * not answer within `shared.requestTimeoutMs`.
   */
  sync(options: SyncOptions = {}): Promise<SyncResult> {
    if (this.#shared !== null && !this.#closed) {
      return this.#shared.run("sync", options);
    }
    return this.#start("sync", options);
  }

  /**
   * Pushes, then re-pulls every table from the start and removes local
   * records the server no longer has, except those with pending ops
   * (clause 13). Waits for a run in progress, then runs.
   *
   * @param options Which tables; a signal.
   * @returns The run's stats.
   * @throws {SyncError} A typed error when the run fails.
   */
  fullResync(options: SyncOptions = {}): Promise<SyncResult> {
    if (this.#shared !== null && !this.#closed) {
      return this.#shared.run("fullResync", options);
    }
    return this.#fullResync(options);
  }

  async #fullResync(options: SyncOptions): Promise<SyncResult> {
    while (this.#run !== null) {
      if (this.#run.mode === "fullResync") return await this.#run.promise;
      await this.#run.promise.catch(() => {});
    }
    return await this.#start("fullResync", options);
  }

  /**
   * Runs `sync()` in the background: every `intervalMs`, soon after local
   * writes, and with capped exponential backoff after failures (honouring
   * the server's `Retry-After`). Errors become `error` events, never
   * unhandled rejections. Runs pause in the `auth` status until a manual
   * `sync()` succeeds.
   *
   * With `live`, the engine also reads the transport's live hints
   * (`GET /live` on the REST transport) and pulls the hinted tables once
   * per burst, so another client's change arrives within about
   * `debounceMs` plus one pull; it reconnects with backoff, and falls back
   * to the interval runs when the server has no live hints
   * (`engine.live`, `live` events).
   *
   * @param options Interval, write delay, backoff cap, live mode.
   * @throws {RangeError} When an option is not a number of ms in its range
   * (`intervalMs` from 1, the others from 0, all up to `2 ** 31 - 1`;
   * `live.retryBaseMs` and `live.maxBackoffMs` from 1).
   * @throws {TypeError} When `live` is neither a boolean nor an object.
   *
   * @example Live updates from another client
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
   * const baseUrl = `http://127.0.0.1:${http.addr.port}`;
   * await using storageA = createMemoryStorage();
   * await using storageB = createMemoryStorage();
   * await using transportA = createRestTransport({ baseUrl });
   * await using transportB = createRestTransport({ baseUrl });
   * await using a = new SyncEngine({ storage: storageA, transport: transportA });
   * await using b = new SyncEngine({ storage: storageB, transport: transportB });
   * const todosA = a.table("todos");
   * const todosB = b.table("todos");
   *
   * // B polls only hourly, but hears of changes at once.
   * const open = new Promise((resolve) =>
   *   b.on("live", (event) => event.state === "open" && resolve(event))
   * );
   * b.startAuto({ intervalMs: 3_600_000, live: true });
   * await open;
   * const seen = todosB.watch();
   *
   * a.startAuto({ afterWriteMs: 0 }); // push each write at once
   * await todosA.put({ id: "t1", title: "Buy milk" });
   * for await (const item of seen) {
   *   if (item.type === "change" && item.origin === "pulled") break;
   * }
   * assert.equal((await todosB.get("t1"))?.title, "Buy milk");
   * ```
   */
  startAuto(options: AutoSyncOptions = {}): void {
    assertOpen(this.#closed, "start auto sync");
    const live = resolveLiveOptions(options.live);
    this.#autoSync.start(options);
    this.#status.setPaused(false);
    this.#live.start(live);
  }

  /**
   * Stops background runs; a run in progress finishes. Idempotent. The
   * status shows the connection `paused` until `startAuto()`.
   */
  stopAuto(): void {
    this.#autoSync.stop();
    if (!this.#closed) this.#status.setPaused(true);
    void this.#live.stop();
  }

  /**
   * Stops auto sync, aborts a run in progress and waits for it, and
   * rejects every later call with a `ClosedError` (clause 22). The storage and
   * transport stay open: they belong to the caller. Idempotent.
   */
  close(): Promise<void> {
    if (this.#closing !== null) return this.#closing;
    this.#closed = true;
    // Taken before stopAuto(), which would leave nothing to wait for.
    const live = this.#live.stop();
    this.stopAuto();
    this.#closeController.abort(
      new ClosedError("Cannot continue sync as the engine is closed"),
    );
    // No write's `synced` is left hanging: every wait rejects.
    this.#outcomes.close(
      new ClosedError("Cannot await a write's outcome as the engine is closed"),
    );
    const running = this.#run?.promise;
    this.#closing = (async () => {
      await running?.catch(() => {});
      await live;
      await this.#shared?.close(
        new ClosedError("Cannot sync as the engine is closed"),
      );
      await this.#counts.settled();
      this.#status.patch({ phase: "closed", progress: null });
      this.#hub.clear();
    })();
    return this.#closing;
  }

  /** Closes the engine. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Starts the op counts and the progress they show, once. */
  #watchCounts(): void {
    if (this.#closed || this.#watching) return;
    this.#watching = true;
    this.#counts.start();
    this.#hub.on(
      "progress",
      ({ phase, kind, done, total }) =>
        this.#status.patch({
          progress: {
            phase,
            ...(kind === undefined ? {} : { kind }),
            done,
            total,
          },
        }),
    );
  }

  #configure<T>(kind: string, options: TableOptions<T>): TableConfig {
    return configureTable(kind, options, this.#defaults);
  }

  #createContext(): EngineContext {
    // deno-lint-ignore no-this-alias
    const engine = this;
    return {
      storage: observeWrites(this.#storage, this.#counts),
      transport: this.#transport,
      hub: this.#hub,
      limits: this.#limits,
      outcomes: this.#outcomes,
      now: () => engine.#clock.now(),
      newOpId(after?: string): string {
        const id = engine.#ids(after);
        if (!isUlid(id) || (after !== undefined && id <= after)) {
          throw new TypeError(
            `Cannot queue op as the id factory returned no ULID greater than "${
              after ?? ""
            }": current value is "${id}"`,
          );
        }
        return id;
      },
      table(kind: string): TableConfig {
        const entry = engine.#tables.get(kind);
        if (entry === undefined) {
          throw new SyncError(
            `Cannot sync op as the kind is not registered: current value is "${kind}"`,
            { category: "validation" },
          );
        }
        return entry.config;
      },
      tableOrDefault(kind: string): TableConfig {
        return engine.#tables.get(kind)?.config ??
          engine.#configure(kind, { strategy: "autoPreserve" });
      },
      kinds: () => [...engine.#tables.keys()],
      clockSkewMs: () => engine.#skewMs,
      observeServerDate(serverDate: number | undefined, sentAt: number): void {
        if (serverDate === undefined || !Number.isFinite(serverDate)) return;
        // The Date header has whole seconds: add half a second and compare
        // with the request's midpoint, then smooth the noise.
        const now = engine.#clock.now();
        const sample = serverDate + 500 - (sentAt + now) / 2;
        engine.#skewMs = engine.#skewKnown
          ? Math.round(engine.#skewMs * 0.8 + sample * 0.2)
          : Math.round(sample);
        engine.#skewKnown = true;
      },
    };
  }

  #start(
    mode: "sync" | "fullResync",
    options: SyncOptions,
  ): Promise<SyncResult> {
    if (this.#closed) {
      return Promise.reject(
        new ClosedError(
          `Cannot ${
            mode === "sync" ? "sync" : "resync"
          } as the engine is closed`,
        ),
      );
    }
    if (this.#run !== null) return this.#run.promise;
    const promise = executeRun(this.#ctx, {
      runId: ++this.#runId,
      mode,
      options,
      closeSignal: this.#closeController.signal,
      clock: this.#clock,
      status: {
        phase: (phase) => this.#status.patch({ phase }),
        ended: (error) => {
          this.#status.runEnded(error, {
            at: this.#clock.now(),
            closed: this.#closed,
          });
          if (!this.#closed) this.#counts.refresh();
        },
      },
    }).finally(() => {
      this.#run = null;
    });
    this.#run = { mode, promise };
    return promise;
  }
}

/**
 * The assert used by engine-owned objects after close.
 *
 * @param closed Whether the engine is closed.
 * @param action What was attempted.
 * @throws {ClosedError} When closed.
 */
function assertOpen(closed: boolean, action: string): void {
  if (closed) {
    throw new ClosedError(`Cannot ${action} as the engine is closed`);
  }
}
