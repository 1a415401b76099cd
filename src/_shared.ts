/**
 * One syncer per store (ENGINE.md clause 26): the part of an engine that
 * shares its storage with engines in other processes or isolates. Every
 * engine polls the store every `pollMs`: one read of the lease and the
 * feed's head. The lease holder is the syncer: it renews the lease, runs
 * every sync (auto sync runs only there) and answers followers' sync
 * requests. Every engine appends the records it changed to the feed
 * (`_feed.ts`); the others replay them as `change` events read from the
 * store, so `table.watch()` anywhere sees every change. See
 * `docs/coordination.md`.
 *
 * @module
 */

import type {
  Clock,
  EngineRole,
  SyncOptions,
  SyncResult,
  Timers,
} from "./_engine_options.ts";
import { SyncError, SyncRequestTimeoutError, toSyncError } from "./errors.ts";
import type { EventHub } from "./events.ts";
import {
  appendEntry,
  describeError,
  type FeedBody,
  feedKinds,
  HEAD_KEY,
  headSeq,
  readEntries,
  readError,
} from "./_feed.ts";
import type { ResolvedShared } from "./_shared_options.ts";
import { isJsonObject, type JsonObject } from "./json.ts";
import type { OutcomeRegistry } from "./_outcomes.ts";
import {
  type FeedOutcome,
  MAX_FEED_OUTCOMES,
  toFeedOutcome,
} from "./_shared_outcomes.ts";
import { FeedReplay, strings } from "./_shared_replay.ts";
import { Lease, LEASE_KEY, readLease } from "./_lease.ts";
import { WebLockGate, webLocks } from "./_web_lock.ts";
import type { Storage } from "./storage.ts";

/** What the coordinator needs from its engine. */
export interface SharedHost {
  readonly storage: Storage;
  readonly hub: EventHub;
  readonly clock: Clock;
  readonly timers: Timers;
  /** Most attempts of a feed append that loses races. */
  readonly writeRetries: number;
  /** Runs (or shares) a sync or full resync in this engine. */
  run(mode: "sync" | "fullResync", options: SyncOptions): Promise<SyncResult>;
  /** The run in progress, if any. */
  running(): Promise<SyncResult> | null;
  /** Brings auto sync's next run forward (a new syncer catches up). */
  wake(): void;
  /** The engine's per-write outcomes: told to, and from, the others. */
  readonly outcomes: OutcomeRegistry;
  /** Another engine changed the store: counts kept locally are stale. */
  foreign(): void;
}

/** A follower's sync request that waits for its answer. */
interface Pending {
  readonly id: string;
  readonly mode: "sync" | "fullResync";
  readonly options: SyncOptions;
  /** The syncer it was sent to; sent again when another one takes over. */
  holder: string | null;
  readonly resolve: (result: SyncResult) => void;
  readonly reject: (error: unknown) => void;
}

type Origin = "local" | "pushed" | "pulled";

/** The lease, the feed and sync requests of one shared engine. */
export class SharedCoordinator {
  #host: SharedHost;
  #options: ResolvedShared;
  #lease: Lease;
  /** The Web Lock election (`webLock`), if any. */
  #gate: WebLockGate | null;
  #role: EngineRole = "follower";
  /** The lease's holder as last read. */
  #holderNow: string | null = null;
  /** The last feed entry handled; `null` before the first poll. */
  #seen: number | null = null;
  #stopped = false;
  #timer: unknown = undefined;
  #ticking: Promise<void>;
  /** Whether a poll runs now, and whether the store asked for another. */
  #inTick = false;
  #tickAgain = false;
  /** Ends the store's change hints (`watchMeta`) on close. */
  #watchStop = new AbortController();
  #ready: Promise<void>;
  /** Aborted when this engine stops being the syncer: its runs stop. */
  #term = new AbortController();
  #pending = new Map<string, Pending>();
  #outgoing = new Map<Origin, Map<string, Set<string>>>();
  #publishing: Promise<void> = Promise.resolve();
  #publishQueued = false;
  /** Replays other engines' entries here (`_shared_replay.ts`). */
  #replay: FeedReplay;
  #offChange: () => void;
  #offOutcome: () => void;
  #outgoingOutcomes: FeedOutcome[] = [];

  /**
   * Constructs a new instance and starts polling: the first poll runs now.
   *
   * @param host What the coordinator needs from its engine.
   * @param options The resolved settings.
   */
  constructor(host: SharedHost, options: ResolvedShared) {
    this.#host = host;
    this.#options = options;
    this.#replay = new FeedReplay(host, (error) => this.#report(error));
    const locks = webLocks();
    this.#gate = options.webLock === undefined || locks === undefined
      ? null
      : new WebLockGate(locks, options.webLock, () => this.#pollSoon());
    this.#lease = new Lease({
      storage: host.storage,
      clock: host.clock,
      holder: options.holder,
      leaseMs: options.leaseMs,
      ...(this.#gate === null ? {} : { gate: this.#gate }),
    });
    this.#offChange = host.hub.on("change", (event) => {
      if (this.#replay.replaying || event.origin === "remote") return;
      let byKind = this.#outgoing.get(event.origin);
      if (byKind === undefined) {
        byKind = new Map();
        this.#outgoing.set(event.origin, byKind);
      }
      let ids = byKind.get(event.kind);
      if (ids === undefined) {
        ids = new Set();
        byKind.set(event.kind, ids);
      }
      ids.add(event.id);
      this.#schedulePublish();
    });
    this.#offOutcome = host.outcomes.observe((opId, outcome, where) => {
      if (this.#replay.replaying) return;
      const item = toFeedOutcome(opId, outcome, where);
      if (item === null) return;
      this.#outgoingOutcomes.push(item);
      this.#schedulePublish();
    });
    this.#ticking = this.#tick();
    this.#ready = this.#ticking;
    if (host.storage.watchMeta !== undefined) void this.#watch();
  }

  /** Whether this engine is the store's syncer now. */
  get role(): EngineRole {
    return this.#role;
  }

  /**
   * Runs a sync: here on the syncer; on a follower, a request the syncer
   * answers with its run's result (or this engine's own run, when it
   * becomes the syncer first).
   *
   * @param mode A sync or a full resync.
   * @param options Tables and signal.
   * @returns The run's result.
   * @throws {SyncRequestTimeoutError} When no answer came in time.
   */
  async run(
    mode: "sync" | "fullResync",
    options: SyncOptions,
  ): Promise<SyncResult> {
    await this.#ready;
    if (this.#role === "syncer") return await this.#runHere(mode, options);
    return await this.#request(mode, options);
  }

  /**
   * Stops polling, publishes what is left, rejects waiting requests and
   * gives the lease back. Idempotent.
   *
   * @param error What waiting requests reject with.
   */
  async close(error: SyncError): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#host.timers.clearTimeout(this.#timer);
    this.#watchStop.abort();
    this.#offChange();
    this.#offOutcome();
    await this.#ticking;
    await this.#publishing;
    for (const pending of [...this.#pending.values()]) {
      this.#settle(pending.id, () => pending.reject(error));
    }
    this.#term.abort(error);
    try {
      await this.#lease.release();
    } catch {
      // The lease lapses on its own within leaseMs.
    }
    // After the release: the next engine takes the lock and the lease.
    this.#gate?.close();
  }

  /**
   * The fast path where the store has one (Deno KV's `watch` inside one
   * process and on Deploy): a poll as soon as the lease or the feed's head
   * moved, not at the next `pollMs`. The poll stays: hints may never come.
   */
  async #watch(): Promise<void> {
    try {
      const hints = this.#host.storage.watchMeta!([LEASE_KEY, HEAD_KEY], {
        signal: this.#watchStop.signal,
      });
      for await (const _ of hints) this.#pollSoon();
    } catch (error) {
      // Polling alone from here on.
      this.#report(error);
    }
  }

  /** Polls now, or right after the poll that runs. */
  #pollSoon(): void {
    if (this.#stopped) return;
    if (this.#inTick) {
      this.#tickAgain = true;
      return;
    }
    this.#host.timers.clearTimeout(this.#timer);
    this.#ticking = this.#tick();
  }

  /** One poll: the lease, then the feed. Never rejects. */
  async #tick(): Promise<void> {
    this.#inTick = true;
    this.#tickAgain = false;
    try {
      const [lease, head] = await this.#host.storage.getMeta([
        LEASE_KEY,
        HEAD_KEY,
      ]);
      if (this.#stopped) return;
      const holds = await this.#lease.step(lease);
      this.#holderNow = holds
        ? this.#options.holder
        : readLease(lease)?.holder ?? null;
      this.#setRole(holds ? "syncer" : "follower");
      await this.#readFeed(headSeq(head));
      if (this.#role === "follower") await this.#resend();
    } catch (error) {
      this.#report(error);
    } finally {
      this.#inTick = false;
      this.#arm();
    }
  }

  #arm(): void {
    if (this.#stopped) return;
    const { pollMs, leaseMs } = this.#options;
    const ms = this.#tickAgain
      ? 0
      : this.#role === "syncer"
      ? Math.min(pollMs, Math.floor(leaseMs / 3))
      : pollMs;
    this.#timer = this.#host.timers.setTimeout(() => {
      this.#ticking = this.#tick();
    }, ms);
  }

  #setRole(role: EngineRole): void {
    if (role === this.#role) return;
    this.#role = role;
    if (role === "follower") {
      // Another engine may hold the lease now: this one's run stops.
      this.#term.abort(
        new SyncError(
          `Cannot continue sync as this engine lost the store's lease: current value is "${this.#options.holder}"`,
          { category: "closed", retryable: true },
        ),
      );
      this.#term = new AbortController();
    }
    this.#host.hub.emit({ type: "role", role });
    if (role === "syncer") {
      this.#host.wake();
      // Requests this engine sent to the old syncer: answered here now.
      const own = [...this.#pending.values()];
      if (own.length > 0) void this.#serve(own);
    }
  }

  async #readFeed(head: number): Promise<void> {
    const after = this.#seen;
    if (after === null || head <= after) {
      // The first poll starts at the head; a head that went back means the
      // feed was reset (the store emptied by hand): start over from it.
      if (after !== null && head < after) this.#replay.missed(null);
      this.#seen = head;
      return;
    }
    // A failed read throws before `#seen` moves: the next poll reads again.
    const { entries, missed } = await readEntries(this.#host.storage, {
      after,
      head,
    });
    this.#seen = head;
    if (missed) this.#replay.missed(null);
    const requests: Pending[] = [];
    let foreign = false;
    for (const entry of entries) {
      if (entry.from === this.#options.holder) continue;
      foreign = true;
      if ("outcomes" in entry) {
        await this.#replay.outcomes(entry.outcomes);
      } else if ("changes" in entry) {
        try {
          await this.#replay.changes(entry.changes);
        } catch (error) {
          // The records could not be read: watchers re-read instead.
          this.#report(error);
          this.#replay.missed(Object.keys(entry.changes.kinds));
        }
      } else if ("reply" in entry) this.#answer(entry.reply);
      else if ("request" in entry && this.#role === "syncer") {
        const { id, mode, pushKinds, pullKinds } = entry.request;
        const options: SyncOptions = {
          ...(Array.isArray(pushKinds)
            ? { pushKinds: strings(pushKinds) }
            : {}),
          ...(Array.isArray(pullKinds)
            ? { pullKinds: strings(pullKinds) }
            : {}),
        };
        requests.push({
          id,
          mode: mode === "fullResync" ? "fullResync" : "sync",
          options,
          holder: null,
          resolve: () => {},
          reject: () => {},
        });
      }
    }
    if (foreign) this.#host.foreign();
    if (requests.length > 0) void this.#serve(requests);
  }

  /**
   * Runs one sync for requests (several coalesce into one run) and
   * publishes the answer; this engine's own requests settle directly.
   */
  async #serve(requests: Pending[]): Promise<void> {
    const mode = requests.some((one) => one.mode === "fullResync")
      ? "fullResync"
      : "sync";
    const options: SyncOptions = {
      ...union(requests.map((one) => one.options.pushKinds), "pushKinds"),
      ...union(requests.map((one) => one.options.pullKinds), "pullKinds"),
    };
    // The request came after its writes: a run in progress may have pushed
    // before them, so a fresh one follows it.
    await this.#host.running()?.catch(() => {});
    let outcome: { ok: true; result: SyncResult } | {
      ok: false;
      error: unknown;
    };
    try {
      outcome = { ok: true, result: await this.#runHere(mode, options) };
    } catch (error) {
      outcome = { ok: false, error };
    }
    const remote: string[] = [];
    for (const request of requests) {
      if (!this.#pending.has(request.id)) {
        remote.push(request.id);
        continue;
      }
      this.#settle(
        request.id,
        () =>
          outcome.ok
            ? request.resolve(outcome.result)
            : request.reject(outcome.error),
      );
    }
    if (remote.length === 0 || this.#stopped) return;
    const reply = outcome.ok
      ? {
        ids: remote,
        ok: true,
        result: outcome.result as unknown as JsonObject,
      }
      : { ids: remote, ok: false, error: describeError(outcome.error) };
    await this.#append({ reply });
  }

  #runHere(
    mode: "sync" | "fullResync",
    options: SyncOptions,
  ): Promise<SyncResult> {
    const signals = [this.#term.signal];
    if (options.signal !== undefined) signals.push(options.signal);
    return this.#host.run(mode, {
      ...options,
      signal: AbortSignal.any(signals),
    });
  }

  #request(
    mode: "sync" | "fullResync",
    options: SyncOptions,
  ): Promise<SyncResult> {
    return new Promise<SyncResult>((resolve, reject) => {
      const id = crypto.randomUUID();
      const { signal } = options;
      if (signal?.aborted) return reject(signal.reason);
      const timer = this.#host.timers.setTimeout(() => {
        this.#settle(id, () =>
          reject(
            new SyncRequestTimeoutError(
              `Cannot sync as the store's syncer did not answer within ${this.#options.requestTimeoutMs} ms: current value is ${
                JSON.stringify(this.#holderNow)
              }`,
            ),
          ));
      }, this.#options.requestTimeoutMs);
      const onAbort = () => this.#settle(id, () => reject(signal!.reason));
      signal?.addEventListener("abort", onAbort, { once: true });
      const pending: Pending = {
        id,
        mode,
        options: {
          ...(options.pushKinds === undefined
            ? {}
            : { pushKinds: options.pushKinds }),
          ...(options.pullKinds === undefined
            ? {}
            : { pullKinds: options.pullKinds }),
        },
        holder: this.#holderNow,
        resolve: (result) => {
          this.#host.timers.clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
          resolve(result);
        },
        reject: (error) => {
          this.#host.timers.clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      this.#pending.set(id, pending);
      this.#send(pending).catch((error) =>
        this.#settle(id, () => pending.reject(toSyncError(error)))
      );
    });
  }

  /** Removes a pending request and runs `then` once. */
  #settle(id: string, then: () => void): void {
    if (!this.#pending.delete(id)) return;
    then();
  }

  async #send(pending: Pending): Promise<void> {
    const { pushKinds, pullKinds } = pending.options;
    await this.#append({
      request: {
        id: pending.id,
        mode: pending.mode,
        ...(pushKinds === undefined ? {} : { pushKinds: [...pushKinds] }),
        ...(pullKinds === undefined ? {} : { pullKinds: [...pullKinds] }),
      },
    });
  }

  /** Sends waiting requests again when another engine became the syncer. */
  async #resend(): Promise<void> {
    const holder = this.#holderNow;
    if (holder === null) return;
    for (const pending of [...this.#pending.values()]) {
      if (pending.holder === holder) continue;
      pending.holder = holder;
      await this.#send(pending);
    }
  }

  #answer(reply: Extract<FeedBody, { reply: unknown }>["reply"]): void {
    const { ids, ok, result, error } = reply;
    for (const id of ids) {
      const pending = this.#pending.get(id);
      if (pending === undefined) continue;
      this.#settle(
        id,
        () =>
          ok && isJsonObject(result)
            ? pending.resolve(result as unknown as SyncResult)
            : pending.reject(readError(error)),
      );
    }
  }

  #schedulePublish(): void {
    if (this.#publishQueued || this.#stopped) return;
    this.#publishQueued = true;
    // After the current task: one pulled page's changes go out as one entry.
    this.#publishing = this.#publishing.then(async () => {
      this.#publishQueued = false;
      const outgoing = this.#outgoing;
      this.#outgoing = new Map();
      const settled = this.#outgoingOutcomes;
      this.#outgoingOutcomes = [];
      for (const [origin, byKind] of outgoing) {
        await this.#append({ changes: { origin, kinds: feedKinds(byKind) } });
      }
      // After the changes: a follower that reads the outcome finds the
      // record's change announced already.
      for (let at = 0; at < settled.length; at += MAX_FEED_OUTCOMES) {
        await this.#append({
          outcomes: settled.slice(at, at + MAX_FEED_OUTCOMES),
        });
      }
    });
  }

  /** Appends to the feed; a failure becomes an `error` event. */
  async #append(body: FeedBody): Promise<void> {
    try {
      await appendEntry(
        this.#host.storage,
        { from: this.#options.holder, body },
        this.#host.writeRetries,
      );
    } catch (error) {
      this.#report(error);
    }
  }

  #report(error: unknown): void {
    if (this.#stopped) return;
    const typed = toSyncError(error);
    this.#host.hub.emit({
      type: "error",
      error: typed,
      category: typed.category,
      retryable: typed.retryable,
    });
  }
}

function union(
  lists: (readonly string[] | undefined)[],
  name: "pushKinds" | "pullKinds",
): SyncOptions {
  if (lists.some((list) => list === undefined)) return {};
  return { [name]: [...new Set(lists.flatMap((list) => list ?? []))] };
}
