/**
 * What the server-store conformance cases share: the shape of a case, and
 * builders of records, writes and entries.
 *
 * @module
 */

import type { JsonObject } from "../src/json.ts";
import type {
  IdempotencyEntry,
  ListServerRecordsOptions,
  ServerRecord,
  ServerStore,
  ServerWrite,
} from "./store.ts";

/** What `setup()` returns: a fresh store and how to reach its data again. */
export interface ServerStoreSetup {
  /** A fresh, empty store, used by one case only. */
  readonly store: ServerStore;
  /**
   * Opens the same data again after `store` was closed (persistent stores);
   * the reopen cases call it.
   */
  readonly reopen?: () => ServerStore | Promise<ServerStore>;
  /** Removes whatever the setup created, after the store was closed. */
  readonly teardown?: () => Promise<void>;
}

/** One clause of the contract, as a test. */
export interface ServerStoreCase {
  /** The test's name after the adapter's. */
  readonly title: string;
  /**
   * Whether it needs data to survive a reopen; ignored for a store that
   * does not declare `persistent`.
   */
  readonly persistent?: boolean;
  /**
   * Whether it needs the shared capability (`readClock`, guarded commits);
   * ignored for a store that does not declare `shared`.
   */
  readonly shared?: boolean;
  /**
   * Runs the case on a fresh store; the suite closes it and tears down.
   *
   * @param store The store under test.
   * @param context What `setup()` returned, for `reopen`.
   * @returns When the case passed.
   */
  run(store: ServerStore, context: ServerStoreSetup): Promise<void>;
}

/**
 * Builds a record as the server would store it.
 *
 * @param kind The table.
 * @param id The record's id.
 * @param updatedAt Its `updatedAt` (ms), also its `deleted_at` when deleted.
 * @param options Whether it is a tombstone, and its other fields.
 * @returns The record.
 */
export function serverRecord(
  kind: string,
  id: string,
  updatedAt: number,
  options: { deleted?: boolean; fields?: JsonObject } = {},
): ServerRecord {
  const stamp = new Date(updatedAt).toISOString();
  const deleted = options.deleted ?? false;
  return {
    kind,
    id,
    updatedAt,
    deletedAt: deleted ? updatedAt : null,
    data: {
      id,
      ...options.fields,
      updated_at: stamp,
      ...(deleted ? { deleted_at: stamp } : {}),
    },
  };
}

/**
 * A record write.
 *
 * @param namespace The principal.
 * @param record The record.
 * @returns The write.
 */
export function put(namespace: string, record: ServerRecord): ServerWrite {
  return { type: "record", namespace, record };
}

/**
 * An idempotency entry with a JSON body that nests.
 *
 * @param key The key.
 * @param expiresAt When it expires (ms).
 * @param status The stored status.
 * @returns The entry.
 */
export function entry(
  key: string,
  expiresAt: number,
  status = 201,
): IdempotencyEntry {
  return {
    key,
    fingerprint: `fp:${key}`,
    status,
    body: { id: key, nested: [1, "two", null, { three: false }] },
    expiresAt,
  };
}

/**
 * Listed records as plain records, to compare with what was committed: a
 * record's optional `text` must be exactly `JSON.stringify(data)` (a pull
 * sends it as it is), and is left out of the result.
 *
 * @param records Records from `listRecords`.
 * @returns The same records without `text`.
 * @throws {Error} When a record's `text` is not its data's JSON.
 */
export function plain(records: readonly ServerRecord[]): ServerRecord[] {
  return records.map((record) => {
    const { kind, id, updatedAt, deletedAt, data } = record;
    if (record.text !== undefined && record.text !== JSON.stringify(data)) {
      throw new Error(
        `Cannot accept listed record ${
          JSON.stringify(id)
        } as its text is not its data's JSON: current value is ${
          JSON.stringify(record.text)
        }`,
      );
    }
    return { kind, id, updatedAt, deletedAt, data };
  });
}

/**
 * The ids of records, in order.
 *
 * @param records The records.
 * @returns Their ids.
 */
export function ids(records: readonly ServerRecord[]): string[] {
  return records.map((record) => record.id);
}

/**
 * Sorts as the contract orders: updatedAt, then id by UTF-16 code units.
 *
 * @param records The records.
 * @returns A sorted copy.
 */
export function keysetSort(records: readonly ServerRecord[]): ServerRecord[] {
  return [...records].sort((a, b) =>
    a.updatedAt - b.updatedAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
  );
}

/** The instant tests start at. */
export const T0: number = Date.UTC(2025, 2, 1, 10, 0, 0);

/**
 * A timestamp as the wire writes it.
 *
 * @param ms The instant.
 * @returns ISO-8601 with milliseconds.
 */
export function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/**
 * The auth hook of the cases: the principal named by `Authorization: Bearer
 * <name>`.
 *
 * @param request The request.
 * @returns The principal, or `null`.
 */
export function bearerPrincipal(request: Request): string | null {
  return request.headers.get("authorization")?.match(/^Bearer (\w+)$/)?.[1] ??
    null;
}

/**
 * Whether the keyset of `options` selects `record` (CONTRACT.md, Pull).
 *
 * @param record The record.
 * @param options The keyset.
 * @returns `true` when selected.
 */
export function selects(
  record: ServerRecord,
  options: Partial<ListServerRecordsOptions>,
): boolean {
  const { since, afterId } = options;
  if (since === undefined) return true;
  if (afterId === undefined) return record.updatedAt >= since;
  return record.updatedAt > since ||
    (record.updatedAt === since && record.id > afterId);
}

/**
 * A deterministic shuffle (LCG), so a failure replays identically.
 *
 * @param items The items.
 * @param seed The generator's seed.
 * @returns A shuffled copy.
 */
export function shuffled<T>(items: readonly T[], seed = 42): T[] {
  const result = [...items];
  let state = seed;
  for (let index = result.length - 1; index > 0; index--) {
    state = (state * 1103515245 + 12345) % 2147483648;
    const other = state % (index + 1);
    [result[index], result[other]] = [result[other]!, result[index]!];
  }
  return result;
}

/** Ids the contract says must survive: `/`, NUL, unicode, lone surrogates. */
export const AWKWARD_IDS: readonly string[] = [
  "a/b",
  "q?x=1&y",
  "h#frag",
  "100%",
  "%2F",
  "with space",
  "ünï😀",
  "nul\0byte",
  "\0",
  "lone\uD800",
];
