/**
 * The Deno KV {@linkcode ServerStore}: the reference server on Deno KV, so
 * it runs on Deno Deploy, where many isolates share one KV database, and
 * locally on a KV file that several server processes open at once.
 *
 * It is a shared store (`readClock`): each namespace's clock lives in KV,
 * and a commit applies only while the clock still has the version its
 * writer read (one atomic operation checks the clock's versionstamp, writes
 * the records and entries, and moves the clock). Two instances thus never
 * assign `updated_at` independently, a record committed after a client read
 * a page never lands behind its cursor, and preconditions and idempotency
 * keys are decided on the state a commit lands on: the handler re-runs a
 * write that lost the race. Records up to the contract's 1 MiB are kept in
 * 60 KB chunks (KV caps a value at 64 KiB), and a commit larger than one
 * atomic operation stays all-or-nothing through an intent on the clock that
 * every reader finishes first (`_kv_commit.ts`). Idempotency entries carry
 * `expireIn` as a backstop to the server's purge. Every commit also logs
 * the kinds it wrote, so that `changes()` tells each instance of the
 * others' commits and `GET /live` hints cross instances (`_kv_changes.ts`:
 * KV `watch` where it delivers, else a poll of one head key).
 *
 * @example Serving on a KV database
 * ```ts
 * import { createSyncServer } from "@offline-first/sync/server";
 * import { openKvServerStore } from "@offline-first/sync/server/kv";
 * import assert from "node:assert/strict";
 *
 * await using server = createSyncServer({
 *   store: await openKvServerStore(":memory:"),
 * });
 * const put = await server.fetch(
 *   new Request("http://localhost/todo/1", { method: "PUT", body: "{}" }),
 * );
 * assert.equal(put.status, 201);
 * ```
 *
 * @module
 */

import { ClosedError } from "../src/errors.ts";
import { describe } from "../src/describe.ts";
import { assertServerWrite } from "./_server_write.ts";
import { KvKeys, namespacePart, PREFIX_BUDGET } from "./_kv_keys.ts";
import {
  commitNamespace,
  type KvContext,
  readSettledClock,
} from "./_kv_commit.ts";
import { readChanges } from "./_kv_changes.ts";
import {
  listPage,
  readEntries,
  readEntry,
  readRecord,
  readRecords,
} from "./_kv_read.ts";
import { purge, trimEntries } from "./_kv_upkeep.ts";
import type {
  CommitGuard,
  IdempotencyEntry,
  LastWrite,
  ListServerRecordsOptions,
  ListServerRecordsResult,
  NamespaceClock,
  ServerRecord,
  ServerStore,
  ServerStorePurgeOptions,
  ServerStorePurgeResult,
  ServerWrite,
  StoreChange,
  TrimIdempotencyOptions,
  TrimIdempotencyResult,
} from "./store.ts";

/** Options for {@linkcode createKvServerStore}. */
export interface KvServerStoreOptions {
  /**
   * The key prefix under which the store keeps everything, so that one KV
   * database can hold other data too (a client storage, another server).
   *
   * @default {["sync-server"]}
   */
  readonly prefix?: readonly Deno.KvKeyPart[];
  /**
   * Whether the store's `close()` closes the KV database too.
   *
   * @default {false}
   */
  readonly closeKv?: boolean;
  /**
   * How often, in ms, the change feed (`changes()`, read by the server
   * while a `GET /live` stream is open) polls the change log's head for
   * commits of other instances. `kv.watch()` wakes it sooner where KV
   * delivers watches (Deno Deploy); a local KV file delivers them only
   * within one process, so there the poll is what carries hints across
   * processes.
   *
   * @default {250}
   */
  readonly changesPollMs?: number;
}

/**
 * Creates a {@linkcode ServerStore} over an open Deno KV database. Any
 * number of stores, in any number of processes or isolates, may use one
 * database at once.
 *
 * @param kv The database, from `Deno.openKv()`.
 * @param options The key prefix, and whether `close()` closes `kv`.
 * @returns The store.
 * @throws {TypeError} When an option has the wrong type.
 * @throws {RangeError} When the prefix is too long for KV's keys.
 *
 * @example Two stores over one database
 * ```ts
 * import { createKvServerStore } from "@offline-first/sync/server/kv";
 * import assert from "node:assert/strict";
 *
 * await using kv = await Deno.openKv(":memory:");
 * await using a = createKvServerStore(kv);
 * await using b = createKvServerStore(kv);
 * const record = {
 *   kind: "todo",
 *   id: "1",
 *   updatedAt: 1,
 *   deletedAt: null,
 *   data: { id: "1", updated_at: "1970-01-01T00:00:00.001Z" },
 * };
 * await a.commit([{ type: "record", namespace: "alice", record }]);
 * assert.deepEqual(await b.getRecord("alice", "todo", "1"), record);
 * assert.deepEqual(await b.lastWrite("alice"), { updatedAt: 1, id: "1" });
 * ```
 */
export function createKvServerStore(
  kv: Deno.Kv,
  options: KvServerStoreOptions = {},
): ServerStore {
  const prefix = options.prefix ?? ["sync-server"];
  const closeKv = options.closeKv ?? false;
  if (typeof closeKv !== "boolean") {
    throw new TypeError(
      `Cannot create KV server store as 'closeKv' is not a boolean: current value is ${
        describe(closeKv)
      }`,
    );
  }
  if (!Array.isArray(prefix)) {
    throw new TypeError(
      `Cannot create KV server store as 'prefix' is not an array: current value is ${
        describe(prefix)
      }`,
    );
  }
  const prefixBytes = prefix.reduce(
    (sum: number, part) =>
      sum + (typeof part === "string" ? 3 * part.length + 2 : 12),
    0,
  );
  if (prefixBytes > PREFIX_BUDGET) {
    throw new RangeError(
      `Cannot create KV server store as 'prefix' takes more than ${PREFIX_BUDGET} bytes of every key: current value is ${prefixBytes}`,
    );
  }
  const pollMs = options.changesPollMs ?? 250;
  if (typeof pollMs !== "number" || !(pollMs > 0)) {
    throw new TypeError(
      `Cannot create KV server store as 'changesPollMs' is not a positive number: current value is ${
        describe(pollMs)
      }`,
    );
  }
  return new KvServerStore(
    { kv, keys: new KvKeys([...prefix]), origin: crypto.randomUUID() },
    closeKv,
    pollMs,
  );
}

/**
 * Opens a Deno KV database as a {@linkcode ServerStore} that owns it.
 *
 * @param path The KV file, `":memory:"`, or absent for the default database
 * (Deno Deploy's).
 * @param options The key prefix.
 * @returns The store.
 * @throws {Error} When the database cannot be opened.
 *
 * @example Surviving a reopen
 * ```ts
 * import { openKvServerStore } from "@offline-first/sync/server/kv";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * const record = {
 *   kind: "todo",
 *   id: "1",
 *   updatedAt: 1,
 *   deletedAt: null,
 *   data: { id: "1", updated_at: "1970-01-01T00:00:00.001Z" },
 * };
 * {
 *   await using store = await openKvServerStore(`${dir}/sync.kv`);
 *   await store.commit([{ type: "record", namespace: "public", record }]);
 * }
 * {
 *   await using store = await openKvServerStore(`${dir}/sync.kv`);
 *   assert.deepEqual(await store.getRecord("public", "todo", "1"), record);
 * }
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function openKvServerStore(
  path?: string,
  options: Omit<KvServerStoreOptions, "closeKv"> = {},
): Promise<ServerStore> {
  const kv = await Deno.openKv(path);
  try {
    return createKvServerStore(kv, { ...options, closeKv: true });
  } catch (error) {
    kv.close();
    throw error;
  }
}

class KvServerStore implements ServerStore {
  readonly #context: KvContext;
  readonly #closeKv: boolean;
  readonly #pollMs: number;
  /** Aborted by close(): ends every change feed. */
  readonly #closing = new AbortController();
  #closed = false;

  constructor(context: KvContext, closeKv: boolean, pollMs: number) {
    this.#context = context;
    this.#closeKv = closeKv;
    this.#pollMs = pollMs;
  }

  async getRecord(
    namespace: string,
    kind: string,
    id: string,
  ): Promise<ServerRecord | null> {
    this.#assertOpen("read record");
    return await readRecord(this.#context, namespace, kind, id);
  }

  async getRecords(
    namespace: string,
    refs: readonly { readonly kind: string; readonly id: string }[],
  ): Promise<(ServerRecord | null)[]> {
    this.#assertOpen("read records");
    return await readRecords(this.#context, namespace, refs);
  }

  async listRecords(
    namespace: string,
    kind: string,
    options: ListServerRecordsOptions,
  ): Promise<ListServerRecordsResult> {
    this.#assertOpen("list records");
    return await listPage(this.#context, namespace, kind, options);
  }

  async getIdempotency(
    namespace: string,
    key: string,
  ): Promise<IdempotencyEntry | null> {
    this.#assertOpen("read idempotency entry");
    return await readEntry(this.#context, namespace, key);
  }

  async getIdempotencies(
    namespace: string,
    keys: readonly string[],
  ): Promise<(IdempotencyEntry | null)[]> {
    this.#assertOpen("read idempotency entries");
    return await readEntries(this.#context, namespace, keys);
  }

  async commit(
    writes: readonly ServerWrite[],
    guard?: CommitGuard,
  ): Promise<void> {
    this.#assertOpen("commit writes");
    // Checked whole first: a malformed commit applies nothing.
    const byNamespace = new Map<string, ServerWrite[]>();
    for (const write of writes) {
      assertServerWrite(write);
      if (
        write.type === "record" &&
        JSON.stringify(write.record.data) === undefined
      ) {
        throw new TypeError(
          `Cannot commit record write as its data is not JSON: current value is ${
            describe(write.record.data)
          }`,
        );
      }
      if (guard !== undefined && write.namespace !== guard.namespace) {
        throw new TypeError(
          `Cannot commit guarded writes as one is outside the guard's namespace ${
            JSON.stringify(guard.namespace)
          }: current value is ${JSON.stringify(write.namespace)}`,
        );
      }
      let list = byNamespace.get(write.namespace);
      if (list === undefined) byNamespace.set(write.namespace, list = []);
      list.push(write);
    }
    if (guard !== undefined) {
      const list = byNamespace.get(guard.namespace);
      if (list === undefined) return;
      await commitNamespace(this.#context, guard.namespace, list, guard.expect);
      return;
    }
    // The handler never commits across namespaces; a direct caller that
    // does gets one atomic commit per namespace, in order.
    for (const [namespace, list] of byNamespace) {
      await commitNamespace(this.#context, namespace, list, undefined);
    }
  }

  async purge(
    options: ServerStorePurgeOptions,
  ): Promise<ServerStorePurgeResult> {
    this.#assertOpen("purge");
    return await purge(this.#context, options);
  }

  async trimIdempotency(
    namespace: string,
    options: TrimIdempotencyOptions,
  ): Promise<TrimIdempotencyResult> {
    this.#assertOpen("trim idempotency entries");
    return await trimEntries(this.#context, namespace, options);
  }

  async lastWrite(namespace: string): Promise<LastWrite | null> {
    this.#assertOpen("read last write");
    return (await this.readClock(namespace)).last;
  }

  async readClock(namespace: string): Promise<NamespaceClock> {
    this.#assertOpen("read clock");
    const entry = await readSettledClock(
      this.#context,
      namespacePart(namespace),
    );
    const value = entry.value;
    return {
      last: value === null || value.updatedAt === null
        ? null
        : { updatedAt: value.updatedAt, id: value.id },
      version: entry.versionstamp,
    };
  }

  changes(signal: AbortSignal): AsyncIterable<StoreChange> {
    this.#assertOpen("read changes");
    return readChanges(
      this.#context,
      AbortSignal.any([signal, this.#closing.signal]),
      { pollMs: this.#pollMs, watch: true, origin: this.#context.origin },
    );
  }

  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#closing.abort();
      if (this.#closeKv) this.#context.kv.close();
    }
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
