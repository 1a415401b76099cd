/**
 * A {@linkcode Storage} on IndexedDB, for web pages and workers: records,
 * the outbox and meta entries survive a reload, a closed tab and a crashed
 * one. It needs nothing but the browser's IndexedDB, and passes the
 * package's conformance suite in Chromium.
 *
 * ## Layout
 *
 * One database per store, named by the caller, with four object stores:
 *
 * | store      | key           | value                                           |
 * | ---------- | ------------- | ----------------------------------------------- |
 * | `records`  | `[kind, id]`  | `{ v, r, i, l }`: JSON, revision, id, live kind |
 * | `ops`      | `opId`        | `{ v, r, s, i, o }`: JSON, revision, state, id, op id |
 * | `meta`     | `key`         | `{ v, r }`                                      |
 * | `counters` | `"rev"`       | the last revision issued                        |
 *
 * Indexes: `records.live` on `[l, i]` holds the records that are not
 * deleted (`l` is absent on a deleted one), `ops.state` on `[s, o]` and
 * `ops.record` on `[i, o]`. Every value is stored as JSON text, parsed and
 * checked when read back (contract clause 9), so what comes back is equal
 * as JSON to what was written: `-0` reads as `0`, `__proto__` keys stay
 * data. IndexedDB orders strings by UTF-16 code units and array keys
 * element by element, which is the contract's order of ids and op ids.
 *
 * ## Writes
 *
 * One `write()` is one `readwrite` transaction over the stores it touches
 * and the revision counter: it reads the revisions its `expect`s name,
 * aborts when one fails, and otherwise writes everything and advances the
 * counter. IndexedDB commits a transaction whole or not at all, also when
 * the page goes away mid-write, so a record and its outbox op are never
 * split. Transactions over the counter are serialised, also between pages
 * of one origin sharing the database: `capabilities.multiProcess` is
 * `true`. Revisions are that counter in base 36: they never repeat for the
 * database's life.
 *
 * By default a write's transaction asks for `strict` durability: it
 * resolves once the browser flushed it to disk, so a write that resolved
 * survives a crash of the browser or the machine, not only of the page.
 * `relaxed` trades that for speed.
 *
 * ## Limits
 *
 * IndexedDB has no limit of its own on a transaction's size but the
 * origin's quota and the memory of the page, so the limits are the
 * adapter's choice, declared and enforced: 500 mutations, 16 MiB, and op
 * ids and meta keys of 512 code units by default (the engine needs 71).
 * They bound how long one write holds the database: in Chromium, a write
 * of 500 ops with the longest ids the limits allow takes about a second.
 *
 * ## Other pages
 *
 * When another page deletes the database or opens it with a newer layout,
 * this handle closes its connection so as not to block it, and every later
 * call rejects with a `StorageError`.
 *
 * @example Opening a store in a page
 * ```ts ignore
 * import { openIndexedDbStorage } from "@offline-first/sync/storage/indexeddb";
 *
 * const storage = await openIndexedDbStorage("my-app");
 * const result = await storage.write([
 *   { type: "putMeta", key: "greeting", value: "hello", expect: null },
 * ]);
 * console.log(result.ok);
 * await storage.close();
 * ```
 *
 * @module
 */

import { runCall } from "./_call.ts";
import { ClosedError, StorageError } from "../src/errors.ts";
import type { JsonValue } from "../src/json.ts";
import type {
  ListOpsOptions,
  ListRecordsOptions,
  Mutation,
  Storage,
  StorageCallOptions,
  StorageCapabilities,
  StoredOp,
  StoredRecord,
  Versioned,
  WriteResult,
} from "../src/storage.ts";
import { describe } from "../src/describe.ts";
import {
  checkMutations,
  checkString,
  checkStrings,
  checkWriteBytes,
  resolveListOpsOptions,
  resolveListRecordsOptions,
} from "./_validate.ts";
import { utf8Length } from "./_text.ts";
import {
  createLayout,
  hasLayout,
  idbFailure,
  LAYOUT_VERSION,
} from "./_idb_layout.ts";
import {
  getMeta,
  getOps,
  getRecords,
  type IdbSource,
  listOps,
  listRecords,
} from "./_idb_read.ts";
import { commitWrite } from "./_idb_write.ts";
import {
  type IdbDatabase,
  type IdbGlobals,
  idbGlobals,
  type IdbOpenRequest,
} from "./_idb_types.ts";

/** Options for {@linkcode openIndexedDbStorage}. */
export interface IndexedDbStorageOptions {
  /**
   * The most mutations one `write()` accepts; a larger write rejects with a
   * `StorageError` (the engine splits its work to fit). IndexedDB has no
   * limit of its own; this one bounds how long one transaction holds the
   * database (500 ops of the longest ids take about a second in Chromium).
   *
   * @default {500}
   */
  readonly maxMutationsPerWrite?: number;
  /**
   * The most bytes (UTF-8 length of `JSON.stringify(mutations)`) one
   * `write()` accepts; a larger write rejects with a `StorageError`.
   *
   * @default {16777216}
   */
  readonly maxWriteBytes?: number;
  /**
   * The longest op id or meta key, in UTF-16 code units, a write accepts.
   * Kinds and record ids of any length the contract allows are held. Long
   * keys cost: IndexedDB keeps each op id in three keys (the op and two
   * indexes).
   *
   * @default {512}
   */
  readonly maxKeyLength?: number;
  /**
   * The durability a write's transaction asks for: `strict` resolves a
   * write once the browser flushed it to disk, `relaxed` once the browser
   * has it, which is faster but may lose the last writes when the browser
   * or the machine crashes (never a part of one write).
   *
   * @default {"strict"}
   */
  readonly durability?: "strict" | "relaxed";
}

/** A {@linkcode Storage} on IndexedDB. */
export interface IndexedDbStorage extends Storage {
  /** The name of the IndexedDB database. */
  readonly name: string;
}

/** The default of {@linkcode IndexedDbStorageOptions.maxMutationsPerWrite}. */
const DEFAULT_MAX_MUTATIONS = 500;
/** The default of {@linkcode IndexedDbStorageOptions.maxWriteBytes}. */
const DEFAULT_MAX_WRITE_BYTES = 16 * 1024 * 1024;
/** The default of {@linkcode IndexedDbStorageOptions.maxKeyLength}. */
const DEFAULT_MAX_KEY_LENGTH = 512;

/**
 * Opens (or creates) the IndexedDB database `name` as a storage.
 *
 * Pages of one origin that open the same name share the store; each call
 * opens its own connection, closed by the handle's `close()`.
 *
 * @param name The database's name.
 * @param options Write limits and durability.
 * @returns The open storage.
 * @throws {TypeError} When `name` is not a string, or `durability` is not
 * `"strict"` or `"relaxed"`.
 * @throws {RangeError} When a limit is not a positive integer or
 * `Infinity`.
 * @throws {StorageError} When the runtime has no IndexedDB, or the database
 * cannot be opened (a newer layout, a database of another program, the
 * browser refused storage).
 *
 * @example Opening a store, refusing a write beyond its limits
 * ```ts ignore
 * import { openIndexedDbStorage } from "@offline-first/sync/storage/indexeddb";
 * import { StorageError } from "@offline-first/sync";
 *
 * const storage = await openIndexedDbStorage("my-app", {
 *   maxMutationsPerWrite: 2,
 * });
 * try {
 *   await storage.write([
 *     { type: "putMeta", key: "a", value: 1 },
 *     { type: "putMeta", key: "b", value: 2 },
 *     { type: "putMeta", key: "c", value: 3 },
 *   ]);
 * } catch (error) {
 *   console.log(error instanceof StorageError); // true
 * }
 * await storage.close();
 * ```
 */
export async function openIndexedDbStorage(
  name: string,
  options: IndexedDbStorageOptions = {},
): Promise<IndexedDbStorage> {
  checkString("open IndexedDB storage", "name", name);
  const capabilities = Object.freeze({
    persistent: true,
    multiProcess: true,
    maxMutationsPerWrite: resolveLimit(
      "maxMutationsPerWrite",
      options.maxMutationsPerWrite,
      DEFAULT_MAX_MUTATIONS,
    ),
    maxWriteBytes: resolveLimit(
      "maxWriteBytes",
      options.maxWriteBytes,
      DEFAULT_MAX_WRITE_BYTES,
    ),
    maxKeyLength: resolveLimit(
      "maxKeyLength",
      options.maxKeyLength,
      DEFAULT_MAX_KEY_LENGTH,
    ),
  });
  const durability = options.durability ?? "strict";
  if (durability !== "strict" && durability !== "relaxed") {
    throw new TypeError(
      `Cannot open IndexedDB storage as 'durability' is not "strict" or "relaxed": current value is ${
        describe(durability)
      }`,
    );
  }
  const globals = idbGlobals();
  if (globals === undefined) {
    throw new StorageError(
      "Cannot open IndexedDB storage as this runtime has no IndexedDB: current value is undefined",
    );
  }
  const database = await openDatabase(globals, name);
  return new IdbStorage({
    name,
    capabilities,
    durability,
    source: { database, keyRange: globals.IDBKeyRange },
  });
}

function resolveLimit(
  option: string,
  value: number | undefined,
  fallback: number,
): number {
  if (value === undefined) return fallback;
  if (
    typeof value !== "number" ||
    !(value === Infinity || (Number.isInteger(value) && value > 0))
  ) {
    throw new RangeError(
      `Cannot open IndexedDB storage as '${option}' is not a positive integer or Infinity: current value is ${
        describe(value)
      }`,
    );
  }
  return value;
}

/** Opens the database, creating or upgrading its layout. */
async function openDatabase(
  globals: IdbGlobals,
  name: string,
): Promise<IdbDatabase> {
  let request: IdbOpenRequest;
  try {
    request = globals.indexedDB.open(name, LAYOUT_VERSION);
  } catch (error) {
    throw idbFailure(`open IndexedDB database ${describe(name)}`, error);
  }
  const database = await new Promise<IdbDatabase>((resolve, reject) => {
    request.onupgradeneeded = (event) => {
      createLayout(request.result, event.oldVersion);
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = (event) => {
      event.preventDefault();
      reject(
        idbFailure(`open IndexedDB database ${describe(name)}`, request.error),
      );
    };
  });
  if (!hasLayout(database)) {
    database.close();
    throw new StorageError(
      `Cannot open IndexedDB database ${
        describe(name)
      } as storage as it is not one: current value is version ${database.version} without its stores`,
    );
  }
  return database;
}

interface IdbStorageInit {
  readonly name: string;
  readonly capabilities: StorageCapabilities;
  readonly durability: "strict" | "relaxed";
  readonly source: IdbSource;
}

/** The `BroadcastChannel` of a database's meta writes. */
function channelName(name: string): string {
  return `offline-first-sync/meta/${name}`;
}

class IdbStorage implements IndexedDbStorage {
  readonly name: string;
  readonly capabilities: StorageCapabilities;
  readonly #durability: "strict" | "relaxed";
  readonly #source: IdbSource;
  #closing: Promise<void> | undefined;
  /** Why the connection was lost, when another page took it away. */
  #lost: string | undefined;
  readonly #inFlight = new Set<Promise<unknown>>();
  /** Ends the open `watchMeta` iterations on close. */
  readonly #watches = new AbortController();
  /** This handle's own meta writes, told to its own watchers. */
  readonly #local = new EventTarget();
  /** Where meta writes are told to other handles and pages, if anywhere. */
  #channel: BroadcastChannel | null | undefined;

  constructor(init: IdbStorageInit) {
    this.name = init.name;
    this.capabilities = init.capabilities;
    this.#durability = init.durability;
    this.#source = init.source;
    const database = init.source.database;
    // Another page deletes the database or upgrades its layout: let it, by
    // closing this connection, which would otherwise block it forever.
    database.onversionchange = () => {
      this.#lost ??= "another page deleted or upgraded the database";
      database.close();
    };
    // The browser closed the connection (the user cleared site data).
    database.onclose = () => {
      this.#lost ??= "the browser closed the database";
    };
  }

  getRecords(
    kind: string,
    ids: readonly string[],
    options?: StorageCallOptions,
  ): Promise<(Versioned<StoredRecord> | undefined)[]> {
    return this.#run("read records", options, () => {
      checkString("read records", "kind", kind);
      checkStrings("read records", "ids", ids);
      return () => getRecords(this.#source, kind, ids);
    });
  }

  listRecords(
    kind: string,
    options: ListRecordsOptions = {},
  ): Promise<Versioned<StoredRecord>[]> {
    return this.#run("list records", options, () => {
      checkString("list records", "kind", kind);
      const resolved = resolveListRecordsOptions(options);
      return () => listRecords(this.#source, kind, resolved);
    });
  }

  getOps(
    opIds: readonly string[],
    options?: StorageCallOptions,
  ): Promise<(Versioned<StoredOp> | undefined)[]> {
    return this.#run("read ops", options, () => {
      checkStrings("read ops", "opIds", opIds);
      return () => getOps(this.#source, opIds);
    });
  }

  listOps(options: ListOpsOptions = {}): Promise<Versioned<StoredOp>[]> {
    return this.#run("list ops", options, () => {
      const resolved = resolveListOpsOptions(options);
      return () => listOps(this.#source, resolved);
    });
  }

  getMeta(
    keys: readonly string[],
    options?: StorageCallOptions,
  ): Promise<(Versioned<JsonValue> | undefined)[]> {
    return this.#run("read meta", options, () => {
      checkStrings("read meta", "keys", keys);
      return () => getMeta(this.#source, keys);
    });
  }

  write(
    mutations: readonly Mutation[],
    options?: StorageCallOptions,
  ): Promise<WriteResult> {
    return this.#run("write mutations", options, () => {
      const { maxWriteBytes } = this.capabilities;
      // Validated whole before the transaction starts: a malformed or
      // oversized write is refused without touching the database.
      const checked = checkMutations(mutations, this.capabilities, {
        checkBytes: false,
      });
      const texts = checked.map((mutation) =>
        mutation.value === undefined
          ? undefined
          : JSON.stringify(mutation.value)
      );
      if (maxWriteBytes !== Infinity) {
        checkWriteBytes(mutations, maxWriteBytes, (index) => {
          const text = texts[index];
          return text === undefined ? undefined : utf8Length(text);
        });
      }
      const plan = {
        mutations: checked,
        texts,
        signal: options?.signal,
        durability: this.#durability,
      };
      const metaKeys = mutations.flatMap((mutation) =>
        mutation.type === "putMeta" || mutation.type === "deleteMeta"
          ? [mutation.key]
          : []
      );
      return async () => {
        const result = await commitWrite(this.#source.database, plan);
        if (result.ok && metaKeys.length > 0) this.#tell(metaKeys);
        return result;
      };
    });
  }

  /**
   * Tells when meta entries may have changed: this handle's writes, and
   * through a `BroadcastChannel` named after the database, the writes of
   * every other handle on it in this page and in the origin's other pages
   * and workers (where the browser has `BroadcastChannel`).
   *
   * @param keys The meta keys.
   * @param options The signal that ends the iteration.
   * @returns One item per change told.
   * @throws {ClosedError} When the storage is closed.
   * @throws {TypeError} When a key is not a string.
   */
  async *watchMeta(
    keys: readonly string[],
    options: { readonly signal: AbortSignal },
  ): AsyncIterableIterator<void> {
    if (this.#closing !== undefined) {
      throw new ClosedError("Cannot watch meta as the storage is closed");
    }
    checkStrings("watch meta", "keys", keys);
    const signal = AbortSignal.any([options.signal, this.#watches.signal]);
    if (signal.aborted) return;
    const wanted = new Set(keys);
    let hints = 0;
    let wake: (() => void) | null = null;
    const hear = (told: unknown) => {
      if (!Array.isArray(told) || !told.some((key) => wanted.has(key))) return;
      hints++;
      wake?.();
    };
    const onLocal = (event: Event) => hear((event as CustomEvent).detail);
    this.#local.addEventListener("meta", onLocal);
    const channel = typeof BroadcastChannel === "function"
      ? new BroadcastChannel(channelName(this.name))
      : null;
    if (channel !== null) {
      channel.onmessage = (event) =>
        hear((event.data as { meta?: unknown })?.meta);
    }
    const stop = () => wake?.();
    signal.addEventListener("abort", stop, { once: true });
    try {
      while (!signal.aborted) {
        if (hints === 0) {
          await new Promise<void>((resolve) => wake = resolve);
          wake = null;
          continue;
        }
        hints = 0;
        yield;
      }
    } finally {
      signal.removeEventListener("abort", stop);
      this.#local.removeEventListener("meta", onLocal);
      channel?.close();
    }
  }

  /** Tells watchers here and elsewhere that meta entries changed. */
  #tell(keys: readonly string[]): void {
    this.#local.dispatchEvent(new CustomEvent("meta", { detail: keys }));
    if (this.#channel === undefined) {
      this.#channel = typeof BroadcastChannel === "function"
        ? new BroadcastChannel(channelName(this.name))
        : null;
    }
    try {
      this.#channel?.postMessage({ meta: keys });
    } catch {
      // A hint only: watchers keep polling.
    }
  }

  close(): Promise<void> {
    this.#watches.abort();
    this.#channel?.close();
    this.#channel = null;
    this.#closing ??= (async () => {
      // Calls in flight finish first; IndexedDB would let their
      // transactions finish anyway, but not start their next batch.
      await Promise.allSettled([...this.#inFlight]);
      this.#source.database.close();
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * Runs a call: rejects after close and on an aborted signal, runs
   * `prepare` (the validation, whose TypeError, RangeError or StorageError
   * rejects the call as it is), then its work, whose failures other than
   * the adapter's own errors and the signal's reason are IndexedDB's and
   * become StorageErrors. Never throws synchronously.
   */
  #run<T>(
    action: string,
    options: StorageCallOptions | undefined,
    prepare: () => () => Promise<T>,
  ): Promise<T> {
    if (this.#closing !== undefined) {
      return Promise.reject(
        new ClosedError(`Cannot ${action} as the storage is closed`),
      );
    }
    if (this.#lost !== undefined) {
      return Promise.reject(
        new StorageError(
          `Cannot ${action} as the connection is lost: current value is "${this.#lost}"`,
        ),
      );
    }
    return runCall({
      signal: options?.signal,
      prepare,
      failure: (error) => idbFailure(action, error),
      inFlight: this.#inFlight,
    });
  }
}
