/**
 * The harness of `outbox_bench.ts`: a reference server on `127.0.0.1:0`
 * that starts empty for each iteration and counts the records it really
 * writes, outboxes filled once through the table API and copied per
 * iteration, the engine's drain, and the bare-`fetch` clients that send the
 * same HTTP requests without engine or storage.
 *
 * @module
 */

import { type JsonObject, SyncEngine } from "../mod.ts";
import type { Storage } from "../src/storage.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { openSqliteStorage } from "../storage/sqlite.ts";
import { createRestTransport } from "../transport/rest.ts";
import {
  createSyncServer,
  type ServerStore,
  type ServerWrite,
  type SyncServer,
} from "../server/mod.ts";
import { createMemoryServerStore } from "../server/memory.ts";

/** The table every bench writes to (also the REST path segment). */
export const KIND = "todos";

/**
 * A realistic 10-field record (≈ 300 bytes of JSON): strings, numbers, a
 * boolean, a tag list and a timestamp, as a todo app keeps them.
 *
 * @param i The record's number (distinct ids for distinct numbers).
 * @param edit Which edit of the record this is (changes three fields).
 * @returns The record.
 */
export function makeRecord(i: number, edit = 0): JsonObject {
  return {
    id: `todo-${String(i).padStart(6, "0")}`,
    title: `Water the plants on the balcony (${i}.${edit})`,
    notes: "The ferns need less than the basil; check the soil first.",
    done: edit % 2 === 1,
    priority: (i + edit) % 5,
    tags: ["home", "weekly", i % 3 === 0 ? "garden" : "indoor"],
    dueAt: "2025-03-01T10:00:00.000Z",
    assignee: "alice@example.com",
    estimateMinutes: 15 + (i % 60),
    position: i * 1000 + edit,
  };
}

/** How the transport sends writes. */
export interface DrainMode {
  /** `true`: `POST /batch`; `false`: one `PUT` per op. */
  readonly batch: boolean;
  /** Ops per `POST /batch`. */
  readonly batchSize: number;
  /** Single-op requests in flight at once. */
  readonly concurrency: number;
  /** The engine's `pushBatchSize`: ops handed to the transport per round. */
  readonly pushBatchSize: number;
}

/** One queued write as the wire carries it: what the bare clients send. */
export interface WireOp {
  /** The idempotency key: the op id of a first form. */
  readonly key: string;
  /** The record's id. */
  readonly id: string;
  /** The record, exactly as the outbox holds it. */
  readonly payload: JsonObject;
}

/**
 * The reference server with its memory store (the default of
 * `createSyncServer()`), served by `Deno.serve` on a free port of
 * `127.0.0.1`, counting the records it writes.
 */
export class DrainServer implements AsyncDisposable {
  /** The base URL the transports and bare clients use. */
  readonly url: string;
  #http: Deno.HttpServer<Deno.NetAddr>;
  #server: SyncServer;
  #written = 0;

  constructor() {
    const store = countingStore(createMemoryServerStore(), (records) => {
      this.#written += records;
    });
    this.#server = createSyncServer({ store });
    this.#http = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen() {} },
      this.#server.fetch,
    );
    this.url = `http://127.0.0.1:${this.#http.addr.port}`;
  }

  /**
   * How many records the server wrote: every op it applied, never an
   * idempotent replay.
   */
  get written(): number {
    return this.#written;
  }

  /** Stops listening and closes the server. */
  async close(): Promise<void> {
    await this.#http.shutdown();
    await this.#server.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Wraps a store to count the record writes of every commit. */
function countingStore(
  store: ServerStore,
  count: (records: number) => void,
): ServerStore {
  return {
    getRecord: (namespace, kind, id) => store.getRecord(namespace, kind, id),
    listRecords: (namespace, kind, options) =>
      store.listRecords(namespace, kind, options),
    getIdempotency: (namespace, key) => store.getIdempotency(namespace, key),
    async commit(writes: readonly ServerWrite[]): Promise<void> {
      await store.commit(writes);
      let records = 0;
      for (const write of writes) if (write.type === "record") records++;
      count(records);
    },
    purge: (options) => store.purge(options),
    trimIdempotency: (namespace, options) =>
      store.trimIdempotency(namespace, options),
    lastWrite: (namespace) => store.lastWrite(namespace),
    close: () => store.close(),
    [Symbol.asyncDispose]: () => store.close(),
  };
}

/**
 * A filled outbox in an SQLite file, copied for each iteration. It holds no
 * op in memory: a 100k-op outbox read back would stay on the heap through
 * every later drain of the run, and its garbage collection would be
 * charged to them ({@linkcode readWireOps} reads them when a baseline
 * needs them).
 */
export interface OutboxTemplate {
  /** The SQLite file (closed, WAL checkpointed). */
  readonly path: string;
}

/** Options of {@linkcode fillOutbox}. */
export interface FillOptions {
  /** How many distinct records. */
  readonly records: number;
  /** How many writes in all, round-robin over the records. */
  readonly edits: number;
  /** The table's `coalesce` option. */
  readonly coalesce: boolean;
}

/**
 * Queues writes through the table API (each one a record and its op in one
 * atomic write), offline: nothing is sent.
 *
 * @param storage The outbox.
 * @param options Records, edits, coalescing.
 */
export async function fillOutbox(
  storage: Storage,
  options: FillOptions,
): Promise<void> {
  // Port 9 (discard) is never contacted: the engine does not sync here.
  await using transport = createRestTransport({
    baseUrl: "http://127.0.0.1:9",
  });
  await using engine = new SyncEngine({ storage, transport });
  const table = engine.table(KIND, { coalesce: options.coalesce });
  for (let n = 0; n < options.edits; n++) {
    const i = n % options.records;
    await table.put(makeRecord(i, Math.floor(n / options.records)));
  }
}

/**
 * Fills an SQLite outbox once.
 *
 * @param path Where to create the file.
 * @param options Records, edits, coalescing.
 * @returns The template.
 */
export async function createTemplate(
  path: string,
  options: FillOptions,
): Promise<OutboxTemplate> {
  const storage = await openSqliteStorage(path);
  try {
    await fillOutbox(storage, options);
    return { path };
  } finally {
    // Closing the last connection checkpoints the WAL into the file, so a
    // plain copy of the file is the whole outbox.
    await storage.close();
  }
}

/**
 * Reads a template's pending ops back, as the wire carries them: the bare
 * clients send exactly these keys and bodies. The template is read through
 * a copy, so that it stays as filled.
 *
 * @param template The filled outbox.
 * @param path Where to put the copy (removed before returning).
 * @returns The ops, in outbox order.
 */
export async function readWireOps(
  template: OutboxTemplate,
  path: string,
): Promise<WireOp[]> {
  const storage = await copyOutbox(template, path);
  try {
    const entries = await storage.listOps({ states: ["pending"] });
    return entries.map(({ value }) => {
      if (value.type !== "upsert" || value.payload === null) {
        throw new TypeError(`Cannot use op ${value.opId} as it is no upsert`);
      }
      return { key: value.opId, id: value.id, payload: value.payload };
    });
  } finally {
    await storage.close();
    for (const suffix of ["", "-wal", "-shm"]) {
      await Deno.remove(`${path}${suffix}`).catch((error) => {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      });
    }
  }
}

/**
 * Copies a template to a fresh file and opens it.
 *
 * @param template The filled outbox.
 * @param path The copy's path.
 * @returns The open storage; close it, then remove the file.
 */
export async function copyOutbox(
  template: OutboxTemplate,
  path: string,
): Promise<Storage> {
  await Deno.copyFile(template.path, path);
  return await openSqliteStorage(path);
}

/**
 * A memory outbox filled through the table API.
 *
 * @param options Records, edits, coalescing.
 * @returns The storage.
 */
export async function memoryOutbox(options: FillOptions): Promise<Storage> {
  const storage = createMemoryStorage();
  await fillOutbox(storage, options);
  return storage;
}

/** An engine and transport ready to drain an outbox. */
export interface Drainer extends AsyncDisposable {
  /** Runs the push phase only (`pullKinds: []`); resolves with ops pushed. */
  drain(): Promise<number>;
}

/**
 * Sets up an engine on `storage` that pushes to `url` in `mode`. Built
 * before the timed part: construction is not the drain.
 *
 * @param storage The filled outbox; closed with the drainer.
 * @param url The server.
 * @param mode Batch or per-op, sizes, concurrency.
 * @param coalesce The table's `coalesce` option.
 * @returns The drainer.
 */
export function createDrainer(
  storage: Storage,
  url: string,
  mode: DrainMode,
  coalesce = true,
): Drainer {
  const transport = createRestTransport({
    baseUrl: url,
    batch: mode.batch,
    batchSize: mode.batchSize,
    concurrency: mode.concurrency,
  });
  const engine = new SyncEngine({
    storage,
    transport,
    pushBatchSize: mode.pushBatchSize,
  });
  engine.table(KIND, { coalesce });
  return {
    async drain(): Promise<number> {
      const { stats } = await engine.sync({ pullKinds: [] });
      return stats.pushed;
    },
    async [Symbol.asyncDispose](): Promise<void> {
      await engine.close();
      await transport.close();
      await storage.close();
    },
  };
}

/**
 * What the REST transport sends for one op, without it: `PUT`, the same
 * path, headers and body (a create has no `_baseUpdatedAt`).
 *
 * @param url The server.
 * @param ops The ops, in order.
 * @param concurrency Requests in flight at once.
 * @returns How many writes were accepted.
 */
export async function barePerOp(
  url: string,
  ops: readonly WireOp[],
  concurrency: number,
): Promise<number> {
  let next = 0;
  let accepted = 0;
  const worker = async (): Promise<void> => {
    while (next < ops.length) {
      const op = ops[next++]!;
      const response = await fetch(
        `${url}/${KIND}/${encodeURIComponent(op.id)}`,
        {
          method: "PUT",
          headers: {
            "accept": "application/json",
            "content-type": "application/json",
            "idempotency-key": op.key,
          },
          body: JSON.stringify(op.payload),
        },
      );
      // A client must read the stored record: it is the new base.
      const record = await response.json();
      if (response.ok && record.id === op.id) accepted++;
    }
  };
  await Promise.all(
    Array.from({ length: Math.min(concurrency, ops.length) }, worker),
  );
  return accepted;
}

/**
 * What the REST transport sends in batch mode, without it: `POST /batch`
 * with `batchSize` ops each, one after the other, the same envelope.
 *
 * @param url The server.
 * @param ops The ops, in order.
 * @param batchSize Ops per request.
 * @returns How many writes were accepted.
 */
export async function bareBatch(
  url: string,
  ops: readonly WireOp[],
  batchSize: number,
): Promise<number> {
  let accepted = 0;
  for (let start = 0; start < ops.length; start += batchSize) {
    const chunk = ops.slice(start, start + batchSize).map((op) => ({
      opId: op.key,
      kind: KIND,
      id: op.id,
      type: "upsert",
      payload: op.payload,
    }));
    const response = await fetch(`${url}/batch`, {
      method: "POST",
      headers: {
        "accept": "application/json",
        "content-type": "application/json",
      },
      body: JSON.stringify({ ops: chunk }),
    });
    const { results } = await response.json() as {
      results: { status: number }[];
    };
    for (const result of results) {
      if (result.status >= 200 && result.status < 300) accepted++;
    }
  }
  return accepted;
}
