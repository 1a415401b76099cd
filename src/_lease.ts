/**
 * The syncer's lease (ENGINE.md clause 26): one meta entry that engines
 * sharing a storage take and renew with compare-and-swap on its revision.
 *
 * Expiry does not trust clocks to agree: a follower counts a lease as
 * expired once its revision stayed the same for `leaseMs` by the follower's
 * own clock. The holder renews every third of the lease and stops calling
 * itself the holder when it could not renew for four fifths of it, so it
 * steps down before any follower may take over (clock rates being about
 * equal). `expiresAt` in the stored value is the holder's clock, for people
 * reading the store.
 *
 * @module
 */

import type { Clock } from "./_engine_options.ts";
import { isJsonObject, type JsonValue } from "./json.ts";
import type { Storage, Versioned } from "./storage.ts";

/** The meta key of the lease. */
export const LEASE_KEY = "shared/lease";

/** What a stored lease says, as far as it is readable. */
export interface LeaseValue {
  /** The engine holding it. */
  readonly holder: string;
  /** When it lapses by the holder's clock (ms since the epoch). */
  readonly expiresAt: number;
}

/**
 * Reads a stored lease; `null` for a value that is not one (treated as
 * somebody else's lease, so it expires like one).
 *
 * @param entry The meta entry, if any.
 * @returns The lease, or `null`.
 */
export function readLease(
  entry: Versioned<JsonValue> | undefined,
): LeaseValue | null {
  const value = entry?.value;
  if (!isJsonObject(value)) return null;
  const { holder, expiresAt } = value;
  if (typeof holder !== "string" || typeof expiresAt !== "number") {
    return null;
  }
  return { holder, expiresAt };
}

/** The settings of a {@linkcode Lease}. */
export interface LeaseOptions {
  /** The store. */
  readonly storage: Storage;
  /** The clock. */
  readonly clock: Clock;
  /** This engine's name. */
  readonly holder: string;
  /** How long a lease lasts without renewal, in ms. */
  readonly leaseMs: number;
  /**
   * The Web Lock election, if any: the lease is taken only while it is
   * held, and then at once, whoever held the lease before.
   */
  readonly gate?: { readonly held: boolean };
}

/** One engine's side of the lease: take it, renew it, give it back. */
export class Lease {
  #options: LeaseOptions;
  /** The revision of the lease this engine holds; `null` when it holds none. */
  #rev: string | null = null;
  /** When the last successful take or renewal started (own clock). */
  #renewedAt = 0;
  /** Another holder's lease revision, and since when it stayed the same. */
  #seen: { rev: string; since: number } | null = null;

  /**
   * Constructs a new instance, holding nothing.
   *
   * @param options The store, clock, name and duration.
   */
  constructor(options: LeaseOptions) {
    this.#options = options;
  }

  /** Whether this engine holds the lease, as of its last step. */
  get held(): boolean {
    return this.#rev !== null;
  }

  /**
   * One step on a fresh reading of the lease entry: renews a lease held,
   * takes one that is absent, this engine's own from before a restart, or
   * unchanged for `leaseMs`; notices a lease lost.
   *
   * @param entry The lease entry as just read.
   * @returns Whether this engine holds the lease now.
   * @throws {StorageError} When the store fails; a held lease keeps aging.
   */
  async step(entry: Versioned<JsonValue> | undefined): Promise<boolean> {
    const { clock, leaseMs, holder, gate } = this.#options;
    const now = clock.now();
    if (gate !== undefined && !gate.held) {
      // Not elected: watch the lease, never take it.
      this.#rev = null;
      return false;
    }
    if (gate !== undefined && this.#rev === null) {
      // Elected by the Web Lock: its last holder is gone (the browser
      // passes the lock on only then), so its lease is taken at once.
      return await this.#take(entry?.rev ?? null, now);
    }
    if (this.#rev !== null) {
      if (entry?.rev !== this.#rev || now - this.#renewedAt >= leaseMs * 0.8) {
        // Taken over, released by hand, or not renewed for too long: a
        // follower may hold it already.
        this.#rev = null;
        return false;
      }
      if (now - this.#renewedAt >= leaseMs / 3) {
        return await this.#take(this.#rev, now);
      }
      return true;
    }
    if (entry === undefined || readLease(entry)?.holder === holder) {
      return await this.#take(entry?.rev ?? null, now);
    }
    if (this.#seen?.rev !== entry.rev) {
      this.#seen = { rev: entry.rev, since: now };
      return false;
    }
    if (now - this.#seen.since < leaseMs) return false;
    return await this.#take(entry.rev, now);
  }

  /**
   * Gives the lease back, so a follower takes over at its next poll.
   * Does nothing when this engine holds none or lost it meanwhile.
   */
  async release(): Promise<void> {
    const rev = this.#rev;
    if (rev === null) return;
    this.#rev = null;
    await this.#options.storage.write([{
      type: "deleteMeta",
      key: LEASE_KEY,
      expect: rev,
    }]);
  }

  async #take(expect: string | null, now: number): Promise<boolean> {
    const { storage, holder, leaseMs } = this.#options;
    const result = await storage.write([{
      type: "putMeta",
      key: LEASE_KEY,
      value: { holder, expiresAt: now + leaseMs },
      expect,
    }]);
    if (!result.ok) {
      this.#rev = null;
      return false;
    }
    this.#rev = result.revs[0]!;
    this.#renewedAt = now;
    this.#seen = null;
    return true;
  }
}
