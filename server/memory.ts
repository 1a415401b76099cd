/**
 * The in-memory {@linkcode ServerStore}: the reference server's default
 * store, for tests and demos. Nothing survives the process.
 *
 * @example Serving from memory
 * ```ts
 * import { createSyncServer } from "@offline-first/sync/server";
 * import { createMemoryServerStore } from "@offline-first/sync/server/memory";
 * import assert from "node:assert/strict";
 *
 * await using server = createSyncServer({ store: createMemoryServerStore() });
 * const response = await server.fetch(
 *   new Request("http://localhost/todo/1", { method: "PUT", body: "{}" }),
 * );
 * assert.equal(response.status, 201);
 * ```
 *
 * @module
 */

import { ClosedError } from "../src/errors.ts";
import type { JsonObject, JsonValue } from "../src/json.ts";
import { assertServerWrite } from "./_server_write.ts";
import { utf8Length } from "./_limits.ts";
import { describe } from "../src/describe.ts";
import { inner, listedRecord } from "./_util.ts";
import type {
  IdempotencyEntry,
  LastWrite,
  ListServerRecordsOptions,
  ListServerRecordsResult,
  ServerRecord,
  ServerStore,
  ServerStorePurgeOptions,
  ServerStorePurgeResult,
  ServerWrite,
  TrimIdempotencyOptions,
  TrimIdempotencyResult,
} from "./store.ts";

/**
 * Creates a {@linkcode ServerStore} that keeps everything in memory: for
 * tests, demos and the default store of `createSyncServer()`.
 *
 * @returns An empty store.
 *
 * @example Committing and reading a record
 * ```ts
 * import { createMemoryServerStore } from "@offline-first/sync/server/memory";
 * import assert from "node:assert/strict";
 *
 * await using store = createMemoryServerStore();
 * const record = {
 *   kind: "todo",
 *   id: "a/b",
 *   updatedAt: 0,
 *   deletedAt: null,
 *   data: { id: "a/b", updated_at: "1970-01-01T00:00:00.000Z" },
 * };
 * await store.commit([{ type: "record", namespace: "alice", record }]);
 * assert.deepEqual(await store.getRecord("alice", "todo", "a/b"), record);
 * assert.equal(await store.getRecord("bob", "todo", "a/b"), null);
 * ```
 */
export function createMemoryServerStore(): ServerStore {
  return new MemoryServerStore();
}

/**
 * A record as the memory store keeps it: its data as JSON text, which is the
 * copy clause 4 asks for (the SQLite store keeps the same text) and costs a
 * third of a `structuredClone` of the object.
 */
interface MemoryRecord {
  readonly kind: string;
  readonly id: string;
  readonly updatedAt: number;
  readonly deletedAt: number | null;
  readonly data: string;
  /** The UTF-8 length of `data`, for `maxBytes`. */
  readonly size: number;
}

/** An idempotency entry as the memory store keeps it: its body as JSON text. */
interface MemoryEntry {
  readonly key: string;
  readonly fingerprint: string;
  readonly status: number;
  readonly body: string;
  readonly expiresAt: number;
}

/** One namespace's table, with its sort order cached between writes. */
interface MemoryTable {
  readonly records: Map<string, MemoryRecord>;
  /** The records in keyset order; `null` after a write invalidated it. */
  sorted: MemoryRecord[] | null;
  horizon: number | null;
}

class MemoryServerStore implements ServerStore {
  /** Tables by namespace, then kind. */
  readonly #tables = new Map<string, Map<string, MemoryTable>>();
  /** Entries by namespace, then key. */
  readonly #entries = new Map<string, Map<string, MemoryEntry>>();
  /** The newest write of each namespace. */
  readonly #lastWrites = new Map<string, LastWrite>();
  #closed = false;

  getRecord(
    namespace: string,
    kind: string,
    id: string,
  ): Promise<ServerRecord | null> {
    return settle(() => {
      this.#assertOpen("read record");
      const record = this.#tables.get(namespace)?.get(kind)?.records.get(id);
      return record === undefined ? null : toServerRecord(record);
    });
  }

  getRecords(
    namespace: string,
    refs: readonly { readonly kind: string; readonly id: string }[],
  ): Promise<(ServerRecord | null)[]> {
    return settle(() => {
      this.#assertOpen("read records");
      const tables = this.#tables.get(namespace);
      return refs.map(({ kind, id }) => {
        const record = tables?.get(kind)?.records.get(id);
        return record === undefined ? null : toServerRecord(record);
      });
    });
  }

  listRecords(
    namespace: string,
    kind: string,
    options: ListServerRecordsOptions,
  ): Promise<ListServerRecordsResult> {
    return settle(() => {
      this.#assertOpen("list records");
      const table = this.#tables.get(namespace)?.get(kind);
      if (table === undefined) {
        return { records: [], horizon: null, truncated: false };
      }
      table.sorted ??= [...table.records.values()].sort(compareRecords);
      const sorted = table.sorted;
      const includeDeleted = options.includeDeleted ?? true;
      const maxBytes = options.maxBytes ?? Infinity;
      const records: ServerRecord[] = [];
      let bytes = 0;
      const first = firstAfter(sorted, options);
      // The sorted array counts the rest of a selection with tombstones for
      // free; without them it would take a scan, so no total then.
      const total = includeDeleted ? { total: sorted.length - first } : {};
      for (
        let index = first;
        index < sorted.length && records.length < options.limit;
        index++
      ) {
        const record = sorted[index]!;
        if (!includeDeleted && record.deletedAt !== null) continue;
        bytes += record.size;
        if (records.length > 0 && bytes > maxBytes) {
          return { records, horizon: table.horizon, truncated: true, ...total };
        }
        records.push(listedRecord(record, record.data));
      }
      return { records, horizon: table.horizon, truncated: false, ...total };
    });
  }

  getIdempotency(
    namespace: string,
    key: string,
  ): Promise<IdempotencyEntry | null> {
    return settle(() => {
      this.#assertOpen("read idempotency entry");
      const entry = this.#entries.get(namespace)?.get(key);
      return entry === undefined ? null : toEntry(entry);
    });
  }

  getIdempotencies(
    namespace: string,
    keys: readonly string[],
  ): Promise<(IdempotencyEntry | null)[]> {
    return settle(() => {
      this.#assertOpen("read idempotency entries");
      const entries = this.#entries.get(namespace);
      return keys.map((key) => {
        const entry = entries?.get(key);
        return entry === undefined ? null : toEntry(entry);
      });
    });
  }

  commit(writes: readonly ServerWrite[]): Promise<void> {
    return settle(() => {
      this.#assertOpen("commit writes");
      // Validate and serialise everything first: a commit is all-or-nothing.
      for (const write of writes) assertServerWrite(write);
      const texts = serialize(writes);
      for (const [index, write] of writes.entries()) {
        if (write.type === "record") {
          const { kind, id, updatedAt, deletedAt } = write.record;
          const data = texts[index]!;
          const record: MemoryRecord = {
            kind,
            id,
            updatedAt,
            deletedAt,
            data,
            size: utf8Length(data),
          };
          const tables = inner(this.#tables, write.namespace);
          let table = tables.get(kind);
          if (table === undefined) {
            table = { records: new Map(), sorted: null, horizon: null };
            tables.set(kind, table);
          }
          table.records.set(record.id, record);
          table.sorted = null;
          const last = this.#lastWrites.get(write.namespace);
          if (
            last === undefined || updatedAt > last.updatedAt ||
            (updatedAt === last.updatedAt && last.id !== null && id > last.id)
          ) {
            this.#lastWrites.set(write.namespace, { updatedAt, id });
          }
        } else {
          const { key, fingerprint, status, expiresAt } = write.entry;
          const entries = inner(this.#entries, write.namespace);
          // Re-inserted, so iteration order stays write order.
          entries.delete(key);
          entries.set(key, {
            key,
            fingerprint,
            status,
            body: texts[index]!,
            expiresAt,
          });
        }
      }
    });
  }

  purge(options: ServerStorePurgeOptions): Promise<ServerStorePurgeResult> {
    return settle(() => {
      this.#assertOpen("purge");
      let idempotency = 0;
      let tombstones = 0;
      const limit = Math.floor(options.limit ?? Infinity);
      if (!(limit >= 1)) return { idempotency, tombstones };
      const expiredAt = options.idempotencyExpiredAt;
      if (expiredAt !== undefined) {
        const expired: [Map<string, MemoryEntry>, MemoryEntry][] = [];
        for (const entries of this.#entries.values()) {
          for (const entry of entries.values()) {
            if (entry.expiresAt <= expiredAt) expired.push([entries, entry]);
          }
        }
        if (expired.length > limit) {
          expired.sort((a, b) => a[1].expiresAt - b[1].expiresAt);
          expired.length = limit;
        }
        for (const [entries, entry] of expired) entries.delete(entry.key);
        idempotency = expired.length;
      }
      let before = options.tombstonesUpdatedBefore;
      if (before !== undefined) {
        const old: number[] = [];
        for (const tables of this.#tables.values()) {
          for (const table of tables.values()) {
            for (const record of table.records.values()) {
              if (record.deletedAt !== null && record.updatedAt < before) {
                old.push(record.updatedAt);
              }
            }
          }
        }
        if (old.length > limit) {
          old.sort((a, b) => a - b);
          before = old[limit - 1]! + 1;
        }
        for (const tables of this.#tables.values()) {
          for (const table of tables.values()) {
            let newest = -Infinity;
            for (const [id, record] of table.records) {
              if (record.deletedAt !== null && record.updatedAt < before) {
                table.records.delete(id);
                newest = Math.max(newest, record.updatedAt);
                tombstones++;
              }
            }
            if (newest !== -Infinity) {
              table.horizon = Math.max(table.horizon ?? -Infinity, newest + 1);
              table.sorted = null;
            }
          }
        }
      }
      return { idempotency, tombstones };
    });
  }

  trimIdempotency(
    namespace: string,
    options: TrimIdempotencyOptions,
  ): Promise<TrimIdempotencyResult> {
    return settle(() => {
      this.#assertOpen("trim idempotency entries");
      const entries = this.#entries.get(namespace);
      if (entries === undefined) return { count: 0, oldestExpiresAt: null };
      const excess = entries.size - options.keep;
      if (excess > 0) {
        const candidates = [...entries.values()]
          .filter((entry) => entry.expiresAt <= options.expiresAtOrBefore)
          .sort((a, b) =>
            a.expiresAt - b.expiresAt ||
            (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)
          );
        for (const entry of candidates.slice(0, excess)) {
          entries.delete(entry.key);
        }
      }
      let oldest: number | null = null;
      for (const entry of entries.values()) {
        if (oldest === null || entry.expiresAt < oldest) {
          oldest = entry.expiresAt;
        }
      }
      return { count: entries.size, oldestExpiresAt: oldest };
    });
  }

  lastWrite(namespace: string): Promise<LastWrite | null> {
    return settle(() => {
      this.#assertOpen("read last write");
      return this.#lastWrites.get(namespace) ?? null;
    });
  }

  close(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #assertOpen(action: string): void {
    if (this.#closed) {
      throw new ClosedError(`Cannot ${action} as the store is closed`);
    }
  }
}

function toServerRecord(record: MemoryRecord): ServerRecord {
  return {
    kind: record.kind,
    id: record.id,
    updatedAt: record.updatedAt,
    deletedAt: record.deletedAt,
    data: JSON.parse(record.data) as JsonObject,
  };
}

/** An entry as the store returns it: a copy, its body parsed again. */
function toEntry(entry: MemoryEntry): IdempotencyEntry {
  return {
    key: entry.key,
    fingerprint: entry.fingerprint,
    status: entry.status,
    body: JSON.parse(entry.body) as JsonValue,
    expiresAt: entry.expiresAt,
  };
}

/**
 * The JSON text of each write's data or body. A write's record and the
 * response stored under its key are usually one object (the stored record
 * is the `2xx` body), so each object is stringified once per commit.
 *
 * @throws {TypeError} When a body is not JSON (`undefined`, a function, a
 * BigInt, a cycle).
 */
function serialize(writes: readonly ServerWrite[]): string[] {
  const seen = new Map<JsonValue, string>();
  return writes.map((write) => {
    const value = write.type === "record"
      ? write.record.data
      : write.entry.body;
    let text = seen.get(value) ??
      (write.type === "record" ? write.text : undefined);
    if (text === undefined) {
      text = JSON.stringify(value) as string | undefined;
      if (text === undefined) {
        throw new TypeError(
          `Cannot commit ${write.type} write as its data is not JSON: current value is ${
            describe(value)
          }`,
        );
      }
      if (typeof value === "object" && value !== null) seen.set(value, text);
    }
    return text;
  });
}

function compareRecords(a: MemoryRecord, b: MemoryRecord): number {
  if (a.updatedAt !== b.updatedAt) return a.updatedAt < b.updatedAt ? -1 : 1;
  // `<` on strings compares UTF-16 code units: the order the contract fixes.
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** The index of the first record the keyset selects (binary search). */
function firstAfter(
  sorted: readonly MemoryRecord[],
  { since, afterId }: ListServerRecordsOptions,
): number {
  if (since === undefined) return 0;
  let low = 0;
  let high = sorted.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    const record = sorted[middle]!;
    const selected = afterId === undefined
      ? record.updatedAt >= since
      : record.updatedAt > since ||
        (record.updatedAt === since && record.id > afterId);
    if (selected) high = middle;
    else low = middle + 1;
  }
  return low;
}

/** Runs synchronous work as a Promise, so a store method never throws. */
function settle<T>(work: () => T): Promise<T> {
  try {
    return Promise.resolve(work());
  } catch (error) {
    return Promise.reject(error);
  }
}
