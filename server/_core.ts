/**
 * The state of one reference server that its request handlers share: the
 * resolved options, the store, each namespace's write queue and clock, the
 * maintenance, and the lifecycle. The handler (`handler.ts`) routes, and
 * `_pull.ts`, `_write.ts` and `_batch.ts` answer through it.
 *
 * @module
 */

import { ClosedError } from "../src/errors.ts";
import { WIRE_LIMITS } from "../src/limits.ts";
import type { ServerLimits } from "./_limits.ts";
import type { ResolvedOptions } from "./_options.ts";
import { closedReply, failure, RefusedError, type Reply } from "./_reply.ts";
import { LiveHub } from "./_live.ts";
import { LiveFeed } from "./_live_feed.ts";
import { type Tenant, Tenants } from "./_tenants.ts";
import { describe } from "../src/describe.ts";
import { WriteScope } from "./_write_scope.ts";
import type { PurgeTombstonesOptions } from "./_options.ts";
import {
  type NamespaceClock,
  type ServerStore,
  StaleClockError,
} from "./store.ts";

/** How often (in ms of `now()`) expired entries and tombstones are purged. */
const MAINTENANCE_INTERVAL_MS = 60_000;
/** The most entries and tombstones one maintenance run removes. */
const MAINTENANCE_SLICE = 1_000;
/** A stored idempotency key is kept at least this long, even over the bound. */
const MIN_KEY_AGE_MS = 24 * 60 * 60 * 1000;
/**
 * How often a write to a shared store is re-run after another instance
 * moved the namespace's clock, before it is answered `503`.
 */
const MAX_STALE_RETRIES = 8;
/** The first backoff (ms) after a lost race; doubled each time, jittered. */
const STALE_BACKOFF_MS = 2;

/** One server's shared state; the handler's modules reach it, nothing else. */
export class ServerCore {
  /** The resolved options. */
  readonly options: ResolvedOptions;
  /** The store the server owns. */
  readonly store: ServerStore;
  /** The limits `GET /health` states. */
  readonly limits: ServerLimits;
  /** Each namespace's write queue, clock and key count. */
  readonly tenants: Tenants = new Tenants();
  /** The open `GET /live` streams, told of every commit. */
  readonly live: LiveHub;
  /** The shared store's change feed, read while a live stream is open. */
  readonly #feed: LiveFeed;
  /** The maintenance in progress, shared by whoever finds it due. */
  #maintenance: Promise<void> | null = null;
  /** The purges started by purgeTombstones(), awaited by close(). */
  readonly #purges = new Set<Promise<unknown>>();
  #maintenanceDueAt = -Infinity;
  #closed = false;
  /** How often a write to a shared store lost a race and ran again. */
  staleRetries = 0;
  #closing: Promise<void> | null = null;

  /**
   * Starts the state of a server.
   *
   * @param options The resolved options.
   */
  constructor(options: ResolvedOptions) {
    this.options = options;
    this.store = options.store;
    this.#feed = new LiveFeed(
      options.store,
      () => this.live,
      (error) => this.#report(error),
    );
    this.live = new LiveHub({
      heartbeatMs: options.liveHeartbeatMs,
      maxStreams: options.maxLiveStreams,
      onActive: (active) => this.#feed.active(active),
    });
    this.limits = Object.freeze({
      maxIdLength: WIRE_LIMITS.maxIdLength,
      maxKindLength: WIRE_LIMITS.maxKindLength,
      maxDepth: WIRE_LIMITS.maxDepth,
      maxRecordBytes: options.maxBodyBytes,
      maxBatchOps: options.maxBatchOps,
      maxBatchBytes: options.maxBatchBytes,
      maxPageItems: options.maxPageSize,
      maxPageBytes: options.maxPageBytes,
      maxIdempotencyKeyLength: WIRE_LIMITS.maxIdempotencyKeyLength,
      maxIdempotencyKeys: options.maxIdempotencyKeys,
    });
  }

  /**
   * Stops writing, waits for the writes and purges in progress, then closes
   * the store. Idempotent.
   *
   * @returns When the store is closed.
   */
  close(): Promise<void> {
    this.#closed = true;
    // Streams never end by themselves: end them, so a server over
    // `Deno.serve` can shut down.
    this.live.close();
    // After the writes in progress, which thus finish on an open store.
    this.#closing ??= (async () => {
      await this.#feed.close();
      await this.tenants.idle();
      await this.#maintenance?.catch(ignore);
      await Promise.allSettled([...this.#purges]);
      await this.store.close();
    })();
    return this.#closing;
  }

  /** Whether `close()` was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Reads the injected clock.
   *
   * @returns The time, in ms since epoch.
   * @throws {TypeError} When `now()` returned no finite number.
   */
  now(): number {
    const now = this.options.now();
    if (typeof now !== "number" || !Number.isFinite(now)) {
      throw new TypeError(
        `Cannot read the clock as now() returned no finite number: current value is ${
          describe(now)
        }`,
      );
    }
    return now;
  }

  /**
   * The reply to what a request's work threw.
   *
   * @param error What was thrown.
   * @returns Its reply: a refusal, `503` after close, else `500`.
   */
  failureReply(error: unknown): Reply {
    if (error instanceof RefusedError) return error.reply;
    if (error instanceof ClosedError && this.#closed) return closedReply();
    return this.internal(error);
  }

  /**
   * Reports an unexpected error to `onError`.
   *
   * @param error The error.
   * @returns `500 internal`.
   */
  internal(error: unknown): Reply {
    try {
      this.options.onError(error);
    } catch {
      // A failing error hook must not turn a 500 into a rejected fetch.
    }
    return failure(
      500,
      "internal",
      "Cannot answer request as the server failed",
    );
  }

  /** Reports an error to `onError`, which may not throw back. */
  #report(error: unknown): void {
    try {
      this.options.onError(error);
    } catch {
      // A failing error hook must not end the caller's work.
    }
  }

  /**
   * Runs the maintenance when due; every caller awaits the same run.
   *
   * @returns When the maintenance, if due, is done.
   */
  async maintainIfDue(): Promise<void> {
    if (this.now() < this.#maintenanceDueAt) return;
    this.#maintenance ??= this.#maintain().finally(() => {
      this.#maintenance = null;
    });
    await this.#maintenance;
  }

  /** Purges expired idempotency entries and tombstones past retention. */
  async #maintain(): Promise<void> {
    const now = this.now();
    if (now < this.#maintenanceDueAt) return;
    const retention = this.options.tombstoneRetentionMs;
    // Bounded: the requests that find maintenance due wait for one slice
    // of it, whichever principal they come from; the next slice runs with
    // the next request.
    const removed = await this.store.purge(
      Number.isFinite(retention)
        ? {
          idempotencyExpiredAt: Math.floor(now),
          tombstonesUpdatedBefore: Math.ceil(now - retention),
          limit: MAINTENANCE_SLICE,
        }
        : { idempotencyExpiredAt: Math.floor(now), limit: MAINTENANCE_SLICE },
    );
    // Keys of any namespace may be gone: count them again when needed.
    this.tenants.forgetKeyCounts();
    const more = removed.idempotency >= MAINTENANCE_SLICE ||
      removed.tombstones >= MAINTENANCE_SLICE;
    this.#maintenanceDueAt = more ? now : now + MAINTENANCE_INTERVAL_MS;
  }

  /**
   * Runs writes under the namespace's write lock in one scope, then commits
   * the scope as one store call; the clock advances only when the commit
   * succeeded. Other namespaces never wait for it.
   *
   * @param namespace The principal.
   * @param work The writes, staged in the scope.
   * @returns What `work` returns.
   * @throws {ClosedError} After close.
   * @throws {RefusedError} When the principal's keys are at the bound.
   */
  async inScope<T>(
    namespace: string,
    work: (scope: WriteScope) => Promise<T>,
  ): Promise<T> {
    return await this.tenants.exclusive(namespace, async () => {
      if (this.#closed) {
        throw new ClosedError("Cannot write as the server is closed");
      }
      await this.maintainIfDue();
      const tenant = this.tenants.get(namespace);
      if (this.store.readClock !== undefined) {
        return await this.#inSharedScope(namespace, tenant, work);
      }
      if (tenant.clock === null) {
        const last = await this.store.lastWrite(namespace);
        tenant.clock = last?.updatedAt ?? -Infinity;
        tenant.lastId = last?.id ?? null;
      }
      const scope = new WriteScope(this.store, tenant);
      try {
        const result = await work(scope);
        if (scope.newKeys > 0) {
          await this.#admitKeys(namespace, tenant, scope.newKeys);
        }
        if (scope.writes.length > 0) {
          await this.store.commit(scope.writes);
          this.live.publish(namespace, changedKinds(scope));
        }
        tenant.clock = scope.clock;
        tenant.lastId = scope.lastId;
        if (tenant.keys !== null) tenant.keys += scope.newKeys;
        return result;
      } finally {
        tenant.pending = null;
      }
    });
  }

  /**
   * `inScope()` over a shared store: other instances write the namespace
   * too, so the clock is read from the store at the start of every attempt
   * and the commit is guarded by it. When another instance committed
   * meanwhile, nothing was written: the work runs again from fresh reads
   * (records, idempotency entries, the clock), so a precondition and an
   * idempotency key are decided on the state the commit lands on.
   *
   * A scope starts with no last id: its first write gets a later
   * millisecond than the clock it read, and the commit succeeds only while
   * that clock is current. So every commit lands strictly after every
   * record visible before it, which is what keeps pull cursors safe
   * (`sharedPullMark()` in `_tenants.ts`).
   */
  async #inSharedScope<T>(
    namespace: string,
    tenant: Tenant,
    work: (scope: WriteScope) => Promise<T>,
  ): Promise<T> {
    const readClock = this.store.readClock!.bind(this.store);
    for (let attempt = 0;; attempt++) {
      const clock: NamespaceClock = await readClock(namespace);
      const snapshot: Tenant = {
        ...tenant,
        clock: clock.last?.updatedAt ?? -Infinity,
        lastId: null,
        floor: -Infinity,
        pending: null,
      };
      const scope = new WriteScope(this.store, snapshot);
      const result = await work(scope);
      if (scope.newKeys > 0) {
        await this.#admitKeys(namespace, tenant, scope.newKeys);
      }
      if (scope.writes.length > 0) {
        try {
          await this.store.commit(scope.writes, { namespace, expect: clock });
        } catch (error) {
          if (!(error instanceof StaleClockError)) throw error;
          this.staleRetries++;
          if (attempt >= MAX_STALE_RETRIES || this.#closed) {
            throw new RefusedError({
              ...failure(
                503,
                "busy",
                `Cannot write as other server instances kept writing this principal's records, retry in 1 s: current value is ${
                  attempt + 1
                } attempts`,
              ),
              headers: { "retry-after": "1" },
            });
          }
          const ceiling = STALE_BACKOFF_MS * 2 ** Math.min(attempt, 6);
          await new Promise((resolve) =>
            setTimeout(resolve, ceiling / 2 + Math.random() * ceiling)
          );
          continue;
        }
        this.live.publish(namespace, changedKinds(scope));
      }
      if (tenant.keys !== null) tenant.keys += scope.newKeys;
      return result;
    }
  }

  /**
   * Makes room for `added` new idempotency keys in a namespace, expiring
   * the oldest keys that are at least a day old.
   *
   * @throws {RefusedError} `429 too_many_keys` with `Retry-After` when no
   * key can expire yet; the caller then applies nothing.
   */
  async #admitKeys(
    namespace: string,
    tenant: Tenant,
    added: number,
  ): Promise<void> {
    const max = this.options.maxIdempotencyKeys;
    if (tenant.keys === null) {
      const counted = await this.store.trimIdempotency(namespace, {
        keep: Infinity,
        expiresAtOrBefore: -Infinity,
      });
      tenant.keys = counted.count;
      tenant.oldestExpiresAt = counted.oldestExpiresAt;
    }
    if (tenant.keys + added <= max) return;
    const now = Math.floor(this.now());
    const retention = this.options.idempotencyRetentionMs;
    // An entry was stored at `expiresAt - retention`; expired ones may go too.
    const bound = Math.max(now, now - MIN_KEY_AGE_MS + retention);
    if (tenant.oldestExpiresAt === null || tenant.oldestExpiresAt <= bound) {
      // A little more than needed, so a principal at the bound does not
      // trim on every write.
      const slack = Math.floor(max / 100);
      const trimmed = await this.store.trimIdempotency(namespace, {
        keep: Math.max(0, max - added - slack),
        expiresAtOrBefore: bound,
      });
      tenant.keys = trimmed.count;
      tenant.oldestExpiresAt = trimmed.oldestExpiresAt;
      if (tenant.keys + added <= max) return;
    }
    const oldest = tenant.oldestExpiresAt ?? now;
    const seconds = Math.max(
      1,
      Math.ceil((oldest - retention + MIN_KEY_AGE_MS - now) / 1000),
    );
    throw new RefusedError({
      ...failure(
        429,
        "too_many_keys",
        `Cannot store idempotency key as the principal holds the most allowed (${max}), none old enough to expire, retry in ${seconds} s: current value is ${tenant.keys}`,
      ),
      headers: { "retry-after": String(seconds) },
    });
  }

  /**
   * Removes old tombstones now, in slices: `SyncServer.purgeTombstones()`.
   *
   * @param options Which tombstones.
   * @returns How many tombstones were removed.
   * @throws {TypeError} When `olderThan` is not a number.
   * @throws {ClosedError} After close.
   */
  async purgeTombstones(options: PurgeTombstonesOptions): Promise<number> {
    if (this.#closed) {
      throw new ClosedError("Cannot purge tombstones as the server is closed");
    }
    const { olderThan } = options;
    if (olderThan !== undefined && typeof olderThan !== "number") {
      throw new TypeError(
        `Cannot purge tombstones as 'olderThan' is not a number: current value is ${
          describe(olderThan)
        }`,
      );
    }
    if (Number.isNaN(olderThan)) {
      throw new RangeError(
        "Cannot purge tombstones as 'olderThan' is not a number: current value is NaN",
      );
    }
    const retention = this.options.tombstoneRetentionMs;
    const bound = olderThan ??
      (Number.isFinite(retention) ? this.now() - retention : Infinity);
    // Stores bind the bound as an integer: clamp instead of passing Infinity.
    const before = Math.max(
      Math.min(Math.ceil(bound), Number.MAX_SAFE_INTEGER),
      Number.MIN_SAFE_INTEGER,
    );
    // No write lock: a purge removes only tombstones older than `before`,
    // which no write in progress creates; close() waits for it. In slices,
    // so that requests are served between them.
    let removed = 0;
    for (;;) {
      const purge = this.store.purge({
        tombstonesUpdatedBefore: before,
        limit: MAINTENANCE_SLICE,
      });
      this.#purges.add(purge);
      try {
        const { tombstones } = await purge;
        removed += tombstones;
        if (tombstones < MAINTENANCE_SLICE || this.#closed) return removed;
      } finally {
        this.#purges.delete(purge);
      }
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  }
}

function ignore(): void {}

/** The kinds of the records a scope wrote. */
function* changedKinds(scope: WriteScope): Iterable<string> {
  for (const write of scope.writes) {
    if (write.type === "record") yield write.record.kind;
  }
}
