/**
 * The pending writes of one request or batch slice, read through before the
 * store, and the namespace's clock as they move it.
 *
 * @module
 */

import type { Tenant } from "./_tenants.ts";
import { inner } from "./_util.ts";
import type {
  IdempotencyEntry,
  ServerRecord,
  ServerStore,
  ServerWrite,
} from "./store.ts";

/**
 * The pending writes of one request or batch, in one namespace: later ops
 * read earlier ones through it, and the server commits it as one store
 * call, so nothing is half-applied.
 */
export class WriteScope {
  /** The writes to commit, in order. */
  readonly writes: ServerWrite[] = [];
  /** How many idempotency keys this scope adds that the store did not hold. */
  newKeys = 0;
  readonly #store: ServerStore;
  readonly #tenant: Tenant;
  /** Pending records by namespace, kind and id. */
  readonly #records = new Map<string, Map<string, Map<string, ServerRecord>>>();
  /** Pending entries by namespace and key. */
  readonly #entries = new Map<string, Map<string, IdempotencyEntry>>();
  /** The namespace's clock as this scope moved it. */
  clock: number;
  /** The id written last at `clock`. */
  lastId: string | null;

  /**
   * Opens a scope over a store, starting from the namespace's clock.
   *
   * @param store The store that holds what the scope does not.
   * @param tenant The namespace's state.
   */
  constructor(store: ServerStore, tenant: Tenant) {
    this.#store = store;
    this.#tenant = tenant;
    this.clock = tenant.clock ?? -Infinity;
    this.lastId = tenant.lastId;
  }

  /**
   * Reads a record, pending or stored.
   *
   * @param namespace The principal.
   * @param kind The table.
   * @param id The record's id.
   * @returns The record, or `null`.
   */
  getRecord(
    namespace: string,
    kind: string,
    id: string,
  ): Promise<ServerRecord | null> {
    const pending = this.#records.get(namespace)?.get(kind)?.get(id);
    if (pending !== undefined) return Promise.resolve(pending);
    return this.#store.getRecord(namespace, kind, id);
  }

  /**
   * Stores a record in the scope.
   *
   * @param namespace The principal.
   * @param record The record.
   */
  putRecord(namespace: string, record: ServerRecord): void {
    inner(inner(this.#records, namespace), record.kind).set(record.id, record);
    this.writes.push({ type: "record", namespace, record });
  }

  /**
   * Reads an idempotency entry, pending or stored.
   *
   * @param namespace The principal.
   * @param key The key.
   * @returns The entry, or `null`.
   */
  getIdempotency(
    namespace: string,
    key: string,
  ): Promise<IdempotencyEntry | null> {
    const pending = this.#entries.get(namespace)?.get(key);
    if (pending !== undefined) return Promise.resolve(pending);
    return this.#store.getIdempotency(namespace, key);
  }

  /**
   * Stores an entry in the scope.
   *
   * @param namespace The principal.
   * @param entry The entry.
   * @param added Whether the store held none under its key.
   */
  putIdempotency(
    namespace: string,
    entry: IdempotencyEntry,
    added: boolean,
  ): void {
    inner(this.#entries, namespace).set(entry.key, entry);
    this.writes.push({ type: "idempotency", namespace, entry });
    if (added) this.newKeys++;
  }

  /**
   * Assigns the next `updated_at` of the namespace. The clock never goes
   * back (nor below the floor that pull marks raised) and, within one
   * millisecond, a later write gets the same instant only if its id sorts
   * after every id already written at that instant: otherwise a client
   * holding the cursor `(t, lastId)` would never see it. That also makes
   * every record's `updated_at` strictly increase.
   *
   * @param now The server's `now()`.
   * @param id The record's id.
   * @param previous The record's stored `updatedAt`, or `null`.
   * @returns The instant, in ms.
   * @throws {RangeError} When the clock left the range of dates.
   */
  nextTimestamp(now: number, id: string, previous: number | null): number {
    let ts = Math.max(Math.trunc(now), this.clock, this.#tenant.floor);
    if (ts === this.clock && (this.lastId === null || id <= this.lastId)) {
      ts = this.clock + 1;
    }
    // Already implied by the rule above; kept so that the per-record clause
    // of the contract holds even with a store whose lastWrite() lags.
    if (previous !== null && ts <= previous) ts = previous + 1;
    if (!Number.isSafeInteger(ts) || Math.abs(ts) > 8.64e15) {
      throw new RangeError(
        `Cannot assign updated_at as the clock is out of range: current value is ${ts}`,
      );
    }
    this.clock = ts;
    this.lastId = id;
    // Invisible until committed: a pull mark taken meanwhile stays below it.
    this.#tenant.pending ??= ts;
    return ts;
  }
}
