/**
 * The pending writes of one request or batch slice, read through before the
 * store, and the namespace's clock as they move it.
 *
 * @module
 */

import type { JsonValue } from "../src/json.ts";
import type { Tenant } from "./_tenants.ts";
import { inner } from "./_util.ts";
import type { WriteCall } from "./_wire.ts";
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
  /** The JSON text of each record's data staged here, by the data. */
  readonly #texts = new Map<JsonValue, string>();
  /** Stored records read ahead by `prefetch()`, by namespace, kind and id. */
  readonly #storedRecords = new Map<
    string,
    Map<string, Map<string, ServerRecord | null>>
  >();
  /** Stored entries read ahead by `prefetch()`, by namespace and key. */
  readonly #storedEntries = new Map<
    string,
    Map<string, IdempotencyEntry | null>
  >();
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
    const pending = this.#records.get(namespace)?.get(kind)?.get(id) ??
      this.#storedRecords.get(namespace)?.get(kind)?.get(id);
    if (pending !== undefined) return Promise.resolve(pending);
    return this.#store.getRecord(namespace, kind, id);
  }

  /**
   * Reads ahead what the given writes will read from the store (their
   * records and idempotency entries) with the store's batch reads, one call
   * each, when it has them: a batch slice then costs two reads of the store
   * instead of two per op, which on a networked store are round trips.
   * Later reads of those records and keys come from the scope (a write
   * staged since still wins). A store without batch reads is read op by op,
   * as before.
   *
   * @param namespace The principal.
   * @param calls The writes.
   * @returns When the reads are done.
   * @throws {TypeError} When a batch read returned a list of another length.
   */
  async prefetch(
    namespace: string,
    calls: readonly WriteCall[],
  ): Promise<void> {
    const store = this.#store;
    const refs: { kind: string; id: string }[] = [];
    const keys: string[] = [];
    const seenRefs = new Map<string, Map<string, true>>();
    const seenKeys = new Set<string>();
    for (const call of calls) {
      const ids = inner(seenRefs, call.kind);
      if (!ids.has(call.id)) {
        ids.set(call.id, true);
        refs.push({ kind: call.kind, id: call.id });
      }
      if (call.key !== null && !seenKeys.has(call.key)) {
        seenKeys.add(call.key);
        keys.push(call.key);
      }
    }
    const [records, entries] = await Promise.all([
      store.getRecords !== undefined && refs.length > 1
        ? store.getRecords(namespace, refs)
        : null,
      store.getIdempotencies !== undefined && keys.length > 1
        ? store.getIdempotencies(namespace, keys)
        : null,
    ]);
    if (records !== null) {
      assertLength("records", records, refs.length);
      const byKind = inner(this.#storedRecords, namespace);
      for (const [index, { kind, id }] of refs.entries()) {
        inner(byKind, kind).set(id, records[index]!);
      }
    }
    if (entries !== null) {
      assertLength("idempotency entries", entries, keys.length);
      const byKey = inner(this.#storedEntries, namespace);
      for (const [index, key] of keys.entries()) {
        byKey.set(key, entries[index]!);
      }
    }
  }

  /**
   * Stores a record in the scope.
   *
   * @param namespace The principal.
   * @param record The record.
   */
  putRecord(namespace: string, record: ServerRecord): void {
    inner(inner(this.#records, namespace), record.kind).set(record.id, record);
    // Serialised once: the store writes this text, and the answer and the
    // response stored under the write's key (the same object) reuse it.
    const text = JSON.stringify(record.data);
    this.#texts.set(record.data, text);
    this.writes.push({ type: "record", namespace, record, text });
  }

  /**
   * The JSON text of a value, reusing the text of a record's data staged
   * in this scope (the body a write answers with).
   *
   * @param value A reply's body.
   * @returns `JSON.stringify(value)`.
   */
  textOf(value: JsonValue): string | undefined {
    return (typeof value === "object" && value !== null
      ? this.#texts.get(value)
      : undefined) ?? JSON.stringify(value) as string | undefined;
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
    const pending = this.#entries.get(namespace)?.get(key) ??
      this.#storedEntries.get(namespace)?.get(key);
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

/** Throws when a batch read answered another number of items than asked. */
function assertLength(what: string, list: unknown, expected: number): void {
  if (!Array.isArray(list) || list.length !== expected) {
    throw new TypeError(
      `Cannot read ${what} as the store's batch read returned a list of another length than ${expected}: current value is ${
        Array.isArray(list) ? list.length : typeof list
      }`,
    );
  }
}
