/**
 * Table handles: the app's whole local API for one kind of record. Reads
 * come from the local store; writes commit the record and its outbox op
 * atomically and never wait for the network.
 *
 * @module
 */

import type { EngineContext, TableConfig } from "./_context.ts";
import { describe } from "./describe.ts";
import type {
  ConflictResolver,
  ConflictStrategy,
  MergeFunction,
} from "./conflict.ts";
import { SyncError, ValidationError } from "./errors.ts";
import type { RecordChange } from "./events.ts";
import { isJsonObject, type JsonObject, setOwn } from "./json.ts";
import { exceedsDepth, idProblem, WIRE_LIMITS } from "./limits.ts";
import { ownedCleanRecord, ownedRecord } from "./_own.ts";
import {
  FieldsMemo,
  settleSystemFields,
  writeLocal,
  writeLocalMany,
} from "./_local_write.ts";
import { type StandardSchemaV1, validateWith } from "./schema.ts";
import type { WriteManyPromise, WritePromise } from "./outcome.ts";
import {
  type WriteDone,
  WriteEnds,
  writeManyPromise,
  writePromise,
} from "./_outcomes.ts";

/** Field names of a table's records, when the backend spells them its way. */
export interface FieldNames {
  /**
   * The id field.
   *
   * @default {"id"}
   */
  readonly id?: string;
  /**
   * The server timestamp field.
   *
   * @default {"updated_at" or "updatedAt", whichever a record has}
   */
  readonly updatedAt?: string;
  /**
   * The tombstone field.
   *
   * @default {"deleted_at" or "deletedAt", whichever a record has}
   */
  readonly deletedAt?: string;
}

/** Options of a table, given when it is registered. */
export interface TableOptions<T = JsonObject> {
  /**
   * Validates every local write (any Standard Schema v1 validator, e.g.
   * zod 4). Invalid writes reject with a `ValidationError` and change
   * nothing.
   */
  readonly schema?: StandardSchemaV1<unknown, T>;
  /** The record's field names. */
  readonly fields?: FieldNames;
  /**
   * The conflict strategy.
   *
   * @default {the engine's strategy}
   */
  readonly strategy?: ConflictStrategy;
  /**
   * The resolver of the `manual` strategy.
   *
   * @default {the engine's resolver}
   */
  readonly resolver?: ConflictResolver;
  /**
   * The merge function of the `merge` strategy.
   *
   * @default {the engine's merge function}
   */
  readonly mergeFn?: MergeFunction;
  /**
   * Whether writes to a record whose newest op was not sent yet fold into
   * that op.
   *
   * @default {true}
   */
  readonly coalesce?: boolean;
}

/** Options of {@linkcode Table.get}. */
export interface GetOptions {
  /**
   * Whether a deleted record is returned too.
   *
   * @default {false}
   */
  readonly includeDeleted?: boolean;
}

/** Options of {@linkcode Table.list}. */
export interface ListOptions extends GetOptions {
  /** Return records whose id sorts after this one (a paging cursor). */
  readonly after?: string;
  /**
   * The most records to return.
   *
   * @default {Infinity}
   */
  readonly limit?: number;
}

/** Options of {@linkcode Table.put}. */
export interface PutOptions {
  /**
   * The fields this write changed, when the caller knows better than the
   * diff against the last server version.
   */
  readonly changedFields?: readonly string[];
}

/** Options of {@linkcode Table.watch}. */
export interface WatchOptions {
  /** Ends the iteration when aborted. */
  readonly signal?: AbortSignal;
  /**
   * How many changes may wait unread. When a slow reader falls this far
   * behind, the buffer is replaced by one `{ type: "overflow" }` item: the
   * reader should re-read what it shows.
   *
   * @default {1000}
   */
  readonly bufferSize?: number;
}

/**
 * The fields the server owns on every record it stored, in the spellings
 * the engine reads by default: absent until the server has the record, and
 * `deleted_at` only on a tombstone. A table with other field names (the
 * `fields` option) finds them under those names instead.
 */
export interface ServerFields {
  /** When the server last stored the record (ISO-8601 UTC, ms). */
  readonly updated_at?: string;
  /** The same, for a backend that spells it `updatedAt`. */
  readonly updatedAt?: string;
  /** When the server deleted the record; `null` or absent while it lives. */
  readonly deleted_at?: string | null;
  /** The same, for a backend that spells it `deletedAt`. */
  readonly deletedAt?: string | null;
}

/**
 * A record as a table returns it: the app's fields and the server-owned
 * timestamps.
 *
 * @example Reading the server's timestamp
 * ```ts
 * import type { Synced } from "@offline-first/sync";
 *
 * type Todo = { id: string; title: string };
 * const todo: Synced<Todo> = {
 *   id: "t1",
 *   title: "write",
 *   updated_at: "2025-03-01T10:00:00.000Z",
 * };
 * console.log(todo.updated_at);
 * ```
 */
export type Synced<T> = T & ServerFields;

/** An item of {@linkcode Table.watch}. */
export type WatchItem<T> =
  | (
    & { readonly type: "change"; readonly record: Synced<T> | null }
    & RecordChange
  )
  | { readonly type: "overflow" };

/**
 * A registered table. Obtained from `engine.table(kind)`.
 *
 * @typeParam T The record type.
 */
export class Table<T = JsonObject> {
  /** The table's kind (its REST path segment). */
  readonly kind: string;
  #ctx: EngineContext;
  #config: TableConfig;
  #assertOpen: (action: string) => void;
  #closeSignal: AbortSignal;
  /**
   * Whether `put` should guess the record is new and skip the read (one
   * storage round trip instead of two, half the cost of a create on Deno
   * KV). A wrong guess costs a refused write, so the guess follows what
   * this table's puts turned out to be: creates raise it, replacements
   * lower it twice as fast.
   */
  #guessNew = 0;
  /** The fields of this table's last create, for the next of its shape. */
  #fields = new FieldsMemo();

  /**
   * Constructs a new instance. Apps get one from `engine.table()`.
   *
   * @param ctx The engine context.
   * @param config The table's settings.
   * @param assertOpen Throws once the engine is closed.
   * @param closeSignal Aborts when the engine closes.
   */
  constructor(
    ctx: EngineContext,
    config: TableConfig,
    assertOpen: (action: string) => void,
    closeSignal: AbortSignal,
  ) {
    this.kind = config.kind;
    this.#ctx = ctx;
    this.#config = config;
    this.#assertOpen = assertOpen;
    this.#closeSignal = closeSignal;
  }

  /**
   * Reads a record.
   *
   * @param id The record's id.
   * @param options Whether to return a deleted record.
   * @returns The record, or `undefined` when absent (or deleted).
   */
  async get(
    id: string,
    options: GetOptions = {},
  ): Promise<Synced<T> | undefined> {
    this.#assertOpen("get a record");
    assertId(this.kind, id);
    const [entry] = await this.#ctx.storage.getRecords(this.kind, [id]);
    if (entry === undefined) return undefined;
    if (entry.value.deleted && options.includeDeleted !== true) {
      return undefined;
    }
    return entry.value.data as Synced<T>;
  }

  /**
   * Lists records in id order.
   *
   * @param options Deleted records, paging cursor, limit.
   * @returns The records.
   */
  async list(options: ListOptions = {}): Promise<Synced<T>[]> {
    this.#assertOpen("list records");
    const entries = await this.#ctx.storage.listRecords(this.kind, {
      includeDeleted: options.includeDeleted ?? false,
      ...(options.after === undefined ? {} : { after: options.after }),
      ...(options.limit === undefined ? {} : { limit: options.limit }),
    });
    return entries.map((entry) => entry.value.data as Synced<T>);
  }

  /**
   * Creates or replaces a record. The id comes from the record's id field.
   * Server-owned fields (`updated_at`, `deleted_at`) are the server's: the
   * ones passed are ignored.
   *
   * @param record The whole record.
   * @param options The fields changed, when known.
   * @returns The record as stored; its `synced` resolves with the write's
   * end (see {@linkcode WritePromise}).
   * @throws {ValidationError} When the record fails the schema, its id
   * breaks the wire limits (1 to 256 characters of well-formed Unicode, not
   * `.` or `..`), or it nests deeper than 64 levels; nothing is queued.
   *
   * @example Awaiting the server's record
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
   * await using storage = createMemoryStorage();
   * await using transport = createRestTransport({
   *   baseUrl: `http://127.0.0.1:${http.addr.port}`,
   * });
   * await using engine = new SyncEngine({ storage, transport });
   * const notes = engine.table("notes");
   *
   * const write = notes.put({ id: "n1", text: "hello" });
   * assert.equal((await write).text, "hello"); // local, instant
   * await engine.sync();
   * const outcome = await write.synced;
   * assert.equal(outcome.status, "accepted");
   * ```
   */
  put(record: T, options: PutOptions = {}): WritePromise<Synced<T>> {
    const ends = new WriteEnds(this.#ctx.outcomes, 1);
    return writePromise(this.#put(record, options, ends), ends) as WritePromise<
      Synced<T>
    >;
  }

  async #put(
    record: T,
    options: PutOptions,
    ends: WriteEnds,
  ): Promise<WriteDone<JsonObject>> {
    this.#assertOpen("put a record");
    const valid = this.#withId(record);
    return await this.#putValid(
      valid instanceof Promise ? await valid : valid,
      { options, ends, index: 0 },
    );
  }

  /**
   * Validates a record and checks its id against the wire limits; at once
   * (no promise to wait for) when the table has no schema.
   */
  #withId(record: T): JsonObject | Promise<JsonObject> {
    const valid = this.#validate(record);
    if (valid instanceof Promise) return valid.then((v) => this.#idChecked(v));
    return this.#idChecked(valid);
  }

  #idChecked(valid: JsonObject): JsonObject {
    assertWireId(this.kind, this.#config.idField, valid[this.#config.idField]);
    return valid;
  }

  async #putValid(
    valid: JsonObject,
    { options, ends, index }: {
      options: PutOptions;
      ends: WriteEnds;
      index: number;
    },
  ): Promise<WriteDone<JsonObject>> {
    const config = this.#config;
    const id = valid[config.idField] as string;
    const stored = await writeLocal(this.#ctx, {
      table: config,
      id,
      build: (current) => ({
        type: "upsert",
        data: settleSystemFields(config, id, valid, current),
        changedFields: options.changedFields,
      }),
      ends,
      index,
      fields: this.#fields,
      assumeAbsent: this.#guessNew >= 0,
      onGuess: (held) => {
        this.#guessNew = Math.max(
          -8,
          Math.min(8, this.#guessNew + (held ? 1 : -2)),
        );
      },
    });
    return { opId: stored.opId, value: stored.record?.data ?? valid };
  }

  /**
   * Creates or replaces many records at once: one read of the current
   * records, then their writes in as few storage writes as the storage's
   * limits allow. Each record still commits together with its outbox op;
   * every record is validated before anything is written, so invalid input
   * changes nothing. A record given twice is written twice, in order. If
   * the storage fails midway, the records whose writes landed stay written
   * (their `change` events were emitted) and the call rejects.
   *
   * @param records The whole records.
   * @returns The records as stored, in input order; its `synced` resolves
   * with one outcome per record (see {@linkcode WriteManyPromise}).
   * @throws {ValidationError} When a record fails the schema, its id breaks
   * the wire limits, or it nests deeper than 64 levels; nothing is written.
   *
   * @example Importing a batch
   * ```ts
   * import { SyncEngine } from "@offline-first/sync";
   * import { createMemoryStorage } from "@offline-first/sync/storage/memory";
   * import { createRestTransport } from "@offline-first/sync/transport/rest";
   * import assert from "node:assert/strict";
   *
   * await using storage = createMemoryStorage();
   * await using transport = createRestTransport({ baseUrl: "http://127.0.0.1:65535" });
   * await using engine = new SyncEngine({ storage, transport });
   * const notes = engine.table("notes");
   * const batch = Array.from({ length: 100 }, (_, i) => ({ id: `n${i}`, i }));
   * await notes.putMany(batch);
   * assert.equal((await notes.list()).length, 100);
   * assert.equal(await engine.outbox.count(), 100);
   * ```
   */
  putMany(records: readonly T[]): WriteManyPromise<Synced<T>[]> {
    // The records as they are now: a caller changing its array while a
    // schema runs must change neither what is written nor how many
    // outcomes `synced` waits for.
    const list = Array.isArray(records) ? records.slice() : records;
    const ends = new WriteEnds(
      this.#ctx.outcomes,
      Array.isArray(list) ? list.length : 0,
    );
    return writeManyPromise(this.#putMany(list, ends), ends);
  }

  async #putMany(
    records: readonly T[],
    ends: WriteEnds,
  ): Promise<{ value: Synced<T>[]; opIds: (string | null)[] }> {
    this.#assertOpen("put records");
    if (!Array.isArray(records)) {
      throw new TypeError(
        `Cannot put records into '${this.kind}' as they are not an array: current value is ${typeof records}`,
      );
    }
    const config = this.#config;
    const valid: JsonObject[] = [];
    for (const record of records) {
      const checked = this.#withId(record);
      valid.push(checked instanceof Promise ? await checked : checked);
    }
    const ids = valid.map((record) => record[config.idField] as string);
    if (new Set(ids).size !== ids.length) {
      // Repeats fold into one another in order: keep the simple path.
      const value: Synced<T>[] = [];
      const opIds: (string | null)[] = [];
      for (const [index, record] of valid.entries()) {
        const write = await this.#putValid(record, {
          options: {},
          ends,
          index,
        });
        value.push(write.value as Synced<T>);
        opIds.push(write.opId);
      }
      return { value, opIds };
    }
    const stored = await writeLocalMany(this.#ctx, {
      table: config,
      ids,
      build: (current, i) =>
        settleSystemFields(config, ids[i]!, valid[i]!, current),
      ends,
      fields: this.#fields,
    });
    const value: Synced<T>[] = new Array(stored.length);
    const opIds: (string | null)[] = new Array(stored.length);
    for (let i = 0; i < stored.length; i++) {
      const write = stored[i]!;
      value[i] = (write.record?.data ?? valid[i]) as Synced<T>;
      opIds[i] = write.opId;
    }
    return { value, opIds };
  }

  /**
   * Changes some fields of an existing record. Only the patch's keys count
   * as changed; a patch that changes nothing queues nothing; a key set to
   * `undefined` removes the field.
   *
   * @param id The record's id.
   * @param patch The fields to set.
   * @returns The record as stored; its `synced` resolves with the write's
   * end (see {@linkcode WritePromise}).
   * @throws {SyncError} When the record does not exist (category
   * `validation`).
   * @throws {TypeError} When `id` is not a non-empty string.
   * @throws {ValidationError} When `id` breaks the wire limits, or the
   * patched record fails the schema or nests deeper than 64 levels.
   */
  update(id: string, patch: Partial<T>): WritePromise<Synced<T>> {
    const ends = new WriteEnds(this.#ctx.outcomes, 1);
    return writePromise(this.#update(id, patch, ends), ends);
  }

  async #update(
    id: string,
    patch: Partial<T>,
    ends: WriteEnds,
  ): Promise<WriteDone<Synced<T>>> {
    this.#assertOpen("update a record");
    assertId(this.kind, id);
    assertWireId(this.kind, this.#config.idField, id);
    if (!isJsonObject(patch)) {
      throw new TypeError(
        `Cannot update record as the patch is not an object: current value is ${
          JSON.stringify(patch)
        }`,
      );
    }
    const config = this.#config;
    const patchKeys = Object.keys(patch);
    const stored = await writeLocal(this.#ctx, {
      table: config,
      id,
      build: async (current) => {
        if (current === undefined || current.deleted) {
          throw new SyncError(
            `Cannot update record in '${this.kind}' as it does not exist: current value is "${id}"`,
            { category: "validation" },
          );
        }
        const merged: JsonObject = { ...current.data };
        for (const key of patchKeys) {
          if ((patch as Record<string, unknown>)[key] === undefined) {
            // An explicit `undefined` removes the field, as JSON would.
            delete merged[key];
            continue;
          }
          setOwn(merged, key, (patch as JsonObject)[key]!);
        }
        const valid = await this.#validate(merged as T);
        return {
          type: "upsert",
          data: settleSystemFields(config, id, valid, current),
          patchKeys,
        };
      },
      ends,
    });
    return { opId: stored.opId, value: stored.record!.data as Synced<T> };
  }

  /**
   * Deletes a record. A record the server never saw disappears without
   * trace; otherwise a delete is queued and reads hide the record.
   *
   * @param id The record's id.
   * @returns `true` when a record was deleted, `false` when there was none;
   * its `synced` resolves with the write's end (see
   * {@linkcode WritePromise}).
   * @throws {TypeError} When `id` is not a non-empty string.
   * @throws {ValidationError} When `id` breaks the wire limits.
   */
  delete(id: string): WritePromise<boolean> {
    const ends = new WriteEnds(this.#ctx.outcomes, 1);
    return writePromise(this.#delete(id, ends), ends);
  }

  async #delete(id: string, ends: WriteEnds): Promise<WriteDone<boolean>> {
    this.#assertOpen("delete a record");
    assertId(this.kind, id);
    assertWireId(this.kind, this.#config.idField, id);
    let existed = false;
    const stored = await writeLocal(this.#ctx, {
      table: this.#config,
      id,
      build: (current) => {
        existed = current !== undefined && !current.deleted;
        return { type: "delete" };
      },
      ends,
    });
    return { opId: stored.opId, value: existed };
  }

  /**
   * Streams changes to this table's records, local and pulled, until the
   * signal aborts or the engine closes.
   *
   * @param options Signal and buffer size.
   * @returns The changes.
   */
  watch(options: WatchOptions = {}): AsyncIterableIterator<WatchItem<T>> {
    const bufferSize = options.bufferSize ?? 1000;
    if (!Number.isInteger(bufferSize) || bufferSize < 1) {
      throw new RangeError(
        `Cannot watch '${this.kind}' as bufferSize is not a positive integer: current value is ${bufferSize}`,
      );
    }
    this.#assertOpen("watch a table");
    const signals = [this.#closeSignal];
    if (options.signal !== undefined) signals.push(options.signal);
    const signal = AbortSignal.any(signals);
    const buffer: WatchItem<T>[] = [];
    let wake: (() => void) | null = null;
    const off = this.#ctx.hub.on("change", (event) => {
      if (event.kind !== this.kind) return;
      if (buffer.length >= bufferSize) {
        buffer.length = 0;
        buffer.push({ type: "overflow" });
      } else {
        buffer.push({
          type: "change",
          kind: event.kind,
          id: event.id,
          data: event.data,
          deleted: event.deleted,
          origin: event.origin,
          record: event.data as Synced<T> | null,
        });
      }
      wake?.();
    }, { signal });
    // Another engine on this storage changed records this one cannot name
    // (clause 26): the reader re-reads, as after its own overflow.
    const offMissed = this.#ctx.hub.on("changesMissed", (event) => {
      if (event.kinds !== null && !event.kinds.includes(this.kind)) return;
      buffer.length = 0;
      buffer.push({ type: "overflow" });
      wake?.();
    }, { signal });
    signal.addEventListener("abort", () => wake?.(), { once: true });
    const iterator: AsyncIterableIterator<WatchItem<T>> = {
      async next(): Promise<IteratorResult<WatchItem<T>>> {
        while (buffer.length === 0 && !signal.aborted) {
          await new Promise<void>((resolve) => wake = resolve);
          wake = null;
        }
        const item = buffer.shift();
        if (item === undefined) return { done: true, value: undefined };
        return { done: false, value: item };
      },
      return(): Promise<IteratorResult<WatchItem<T>>> {
        off();
        offMissed();
        buffer.length = 0;
        return Promise.resolve({ done: true, value: undefined });
      },
      [Symbol.asyncIterator](): AsyncIterableIterator<WatchItem<T>> {
        return iterator;
      },
    };
    return iterator;
  }

  /** Validates a record: at once when the table has no schema. */
  #validate(record: T): JsonObject | Promise<JsonObject> {
    const schema = this.#config.schema;
    if (schema === undefined && isJsonObject(record)) {
      // One walk checks and copies a clean record, and gives up at the
      // depth limit: a record it copied is within it.
      const owned = ownedCleanRecord(record, WIRE_LIMITS.maxDepth + 1);
      if (owned !== undefined) return owned;
    }
    // Before the schema and the copy, which both recurse: a record nested
    // thousands of levels deep must fail here, not overflow the stack.
    assertDepth(this.kind, record);
    if (schema === undefined) return this.#owned(record);
    return validateWith(schema, record, `record of '${this.kind}'`).then(
      (value) => {
        if (value !== record) assertDepth(this.kind, value);
        return this.#owned(value);
      },
    );
  }

  /** The engine's own copy of a validated record. */
  #owned(value: unknown): JsonObject {
    if (!isJsonObject(value)) {
      throw new ValidationError(
        `Cannot write record into '${this.kind}' as it is not an object: current value is ${
          JSON.stringify(value)
        }`,
        [{ message: "Expected an object", path: [] }],
      );
    }
    return ownedRecord(this.kind, value);
  }
}

/**
 * Refuses an id the wire contract does not allow (CONTRACT.md §Limits): it
 * could never reach the server, and would stop every pull of the kind on
 * every other client. Linear in the id, bounded by the limit.
 */
function assertWireId(kind: string, field: string, id: unknown): void {
  const problem = idProblem(id);
  if (problem === null) return;
  throw new ValidationError(
    `Cannot write record into '${kind}' as its "${field}" is invalid, ${problem}: current value is ${
      describe(id ?? null)
    }`,
    [{ message: `Invalid id: ${problem}`, path: [field] }],
  );
}

/**
 * Refuses a record nested deeper than the wire limit; the walk stops at the
 * limit, so its cost is bounded whatever the record holds.
 */
function assertDepth(kind: string, record: unknown): void {
  if (!exceedsDepth(record, WIRE_LIMITS.maxDepth)) return;
  const path = deepPath(record, WIRE_LIMITS.maxDepth);
  throw new ValidationError(
    `Cannot write record into '${kind}' as it nests deeper than ${WIRE_LIMITS.maxDepth} levels at "${
      path.slice(0, 8).join(".")
    }${path.length > 8 ? "..." : ""}"`,
    [{
      message: `Nesting deeper than ${WIRE_LIMITS.maxDepth} levels`,
      path,
    }],
  );
}

/**
 * The path to the first object or array past `maxDepth` levels, for the
 * error only: the walk descends at most `maxDepth` levels.
 */
function deepPath(value: unknown, maxDepth: number): PropertyKey[] {
  const path: PropertyKey[] = [];
  const walk = (node: unknown, remaining: number): boolean => {
    if (typeof node !== "object" || node === null) return false;
    if (remaining <= 0) return true;
    for (const key of Array.isArray(node) ? node.keys() : Object.keys(node)) {
      path.push(key);
      if (walk((node as Record<PropertyKey, unknown>)[key], remaining - 1)) {
        return true;
      }
      path.pop();
    }
    return false;
  };
  walk(value, maxDepth);
  return path;
}

function assertId(kind: string, id: string): void {
  if (typeof id !== "string" || id === "") {
    throw new TypeError(
      `Cannot address a record of '${kind}' as the id is not a non-empty string: current value is ${
        JSON.stringify(id)
      }`,
    );
  }
}
