/**
 * One client of a run: an engine over its own storage, whose REST transport
 * reaches the backend through the client's fault link, with a clock that
 * the run may skew. It closes and opens again (a process restart) on the
 * same storage. Private.
 *
 * @module
 */

import { SyncEngine } from "../src/engine.ts";
import type { ConflictStrategy } from "../src/conflict.ts";
import type { JsonObject } from "../src/json.ts";
import type { Storage } from "../src/storage.ts";
import type { Table } from "../src/table.ts";
import type { Transport } from "../src/transport.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { createRestTransport } from "../transport/rest.ts";
import type { FaultLink } from "./_fault_fetch.ts";
import type { Prng } from "./_prng.ts";
import type {
  ChaosHooks,
  ChaosStorageFactory,
  ChaosStorageName,
} from "./_types.ts";

/** What a client needs to open. */
export interface ClientOptions {
  /** The client's number. */
  readonly index: number;
  /** The storage, by name or factory. */
  readonly storage: ChaosStorageName | ChaosStorageFactory;
  /** A directory of the client's own. */
  readonly dir: () => Promise<string>;
  /** The backend's base URL. */
  readonly base: string;
  /** The client's link through the fault layer. */
  readonly link: FaultLink;
  /** The tables and their strategies. */
  readonly tables: Readonly<Record<string, ConflictStrategy>>;
  /** The client's own stream (jitter, ids, batch mode). */
  readonly random: Prng;
  /** Hooks that break the storage on purpose. */
  readonly hooks: ChaosHooks;
}

/** The `merge` strategy's function: the server's record, local fields on top. */
function mergeFn(local: JsonObject, server: JsonObject): JsonObject {
  return { ...server, ...local };
}

/** A client of a run. */
export class ChaosClient {
  /** The client's number. */
  readonly index: number;
  /** The clock skew, in ms. */
  skewMs = 0;
  #options: ClientOptions;
  #storage: Storage | null = null;
  #memory: Storage | null = null;
  #kv: Deno.Kv | null = null;
  #transport: Transport | null = null;
  #engine: SyncEngine | null = null;
  #tables = new Map<string, Table>();
  #generation = 0;
  #batch: boolean;
  #pageSize: number;

  /**
   * Makes a closed client; {@linkcode ChaosClient.open} opens it.
   *
   * @param options Its storage, link, tables and stream.
   */
  constructor(options: ClientOptions) {
    this.index = options.index;
    this.#options = options;
    this.#batch = options.random.chance(0.5);
    this.#pageSize = options.random.pick([3, 5, 100]);
  }

  /** The engine; throws while closed. */
  get engine(): SyncEngine {
    if (this.#engine === null) throw new Error("client is closed");
    return this.#engine;
  }

  /**
   * A table of the engine.
   *
   * @param kind The table.
   * @returns Its handle.
   */
  table(kind: string): Table {
    const table = this.#tables.get(kind);
    if (table === undefined) throw new Error(`no table ${kind}`);
    return table;
  }

  /** Opens the storage, transport and engine. */
  async open(): Promise<void> {
    const options = this.#options;
    let storage = await this.#openStorage();
    if (options.hooks.storage !== undefined) {
      storage = options.hooks.storage(storage, this.index);
    }
    this.#storage = storage;
    const now = () => Date.now() + this.skewMs;
    const random = options.random;
    this.#transport = createRestTransport({
      baseUrl: options.base,
      fetch: options.link.fetch,
      token: options.link.token,
      retry: { attempts: 3, baseDelayMs: 1, maxDelayMs: 4 },
      timeoutMs: 10_000,
      batch: this.#batch,
      batchSize: 7,
      concurrency: 3,
      random: () => random.next(),
      // Waits (backoff, Retry-After) are honoured in spirit but not in wall
      // time: a run must stay fast.
      sleep: (_ms, signal) =>
        new Promise((resolve, reject) => {
          if (signal?.aborted) reject(signal.reason);
          else setTimeout(resolve, 0);
        }),
      now,
    });
    this.#engine = new SyncEngine({
      storage,
      transport: this.#transport,
      clock: { now },
      random: () => random.next(),
      pageSize: this.#pageSize,
      pushBatchSize: 7,
      mergeFn,
      onListenerError() {},
    });
    this.#tables.clear();
    for (const [kind, strategy] of Object.entries(options.tables)) {
      this.#tables.set(kind, this.#engine.table(kind, { strategy }));
    }
  }

  async #openStorage(): Promise<Storage> {
    const { storage, index } = this.#options;
    const generation = this.#generation++;
    if (typeof storage === "function") {
      return await storage({
        client: index,
        dir: await this.#options.dir(),
        generation,
      });
    }
    if (storage === "memory") {
      this.#memory ??= createMemoryStorage();
      return this.#memory;
    }
    if (storage === "sqlite") {
      const dir = await this.#options.dir();
      const { openSqliteStorage } = await import("../storage/sqlite.ts");
      return await openSqliteStorage(`${dir}/client.sqlite`);
    }
    // An in-memory KV kept across reopens: the KV adapter's whole logic
    // without a disk sync per commit (the process-kill runs use files).
    this.#kv ??= await Deno.openKv(":memory:");
    const { openKvStorage } = await import("../storage/kv.ts");
    return await openKvStorage(this.#kv);
  }

  /** Closes the engine, transport and (unless memory) the storage. */
  async close(): Promise<void> {
    await this.#engine?.close();
    await this.#transport?.close();
    if (this.#storage !== null && this.#storage !== this.#memory) {
      await this.#storage.close();
    }
    this.#engine = null;
    this.#transport = null;
    this.#storage = null;
  }

  /** Closes and opens again on the same storage. */
  async reopen(): Promise<void> {
    await this.close();
    await this.open();
  }

  /** Closes everything, the memory storage too. */
  async dispose(): Promise<void> {
    await this.close();
    await this.#memory?.close();
    this.#memory = null;
    this.#kv?.close();
    this.#kv = null;
  }
}
