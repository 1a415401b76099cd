/**
 * The backend of a run: the reference server in process (over a memory
 * store, or over an SQLite store on a file that a server restart closes and
 * opens again), or any server at a URL. It answers the fault layer, reads
 * the server's view of a table for the verdicts, and carries the server
 * faults (restart, tombstone purge). Private.
 *
 * @module
 */

import { createSyncServer, type SyncServer } from "../server/handler.ts";
import { createMemoryServerStore } from "../server/memory.ts";
import type { ServerStore } from "../server/store.ts";
import type { Target } from "./_fault_fetch.ts";
import type { Ledger } from "./_ledger.ts";
import type { ChaosBackend, ChaosHooks } from "./_types.ts";

/** A run's backend. */
export interface Backend {
  /** The base URL the clients use. */
  readonly base: string;
  /** Whether it is the reference server in process. */
  readonly embedded: boolean;
  /** The backend now, or `null` while it restarts. */
  target(): Target | null;
  /** Restarts the server; `false` when the backend cannot. */
  restart(): Promise<boolean>;
  /** Purges every tombstone; `false` when the backend cannot. */
  purge(): Promise<boolean>;
  /** Reads every record of a table, tombstones included, without faults. */
  readAll(kind: string): Promise<Map<string, Record<string, unknown>>>;
  /** Stops the server and removes what it opened. */
  close(): Promise<void>;
}

/** What opening a backend needs. */
export interface BackendOptions {
  /** Which backend. */
  readonly backend: ChaosBackend;
  /** A directory for the SQLite server store. */
  readonly dir: () => Promise<string>;
  /** The run's ledger (server errors go there too). */
  readonly ledger: Ledger;
  /** Hooks that break the server on purpose. */
  readonly hooks: ChaosHooks;
}

/**
 * Opens a run's backend.
 *
 * @param options Which backend, and where.
 * @returns The backend.
 */
export async function openBackend(options: BackendOptions): Promise<Backend> {
  const { backend } = options;
  if (backend === "embedded" || backend === "embedded-sqlite") {
    return await openEmbedded(options, backend === "embedded-sqlite");
  }
  return remoteBackend(String(backend));
}

const EMBEDDED_BASE = "http://chaos.test";

async function openEmbedded(
  options: BackendOptions,
  durable: boolean,
): Promise<Backend> {
  const { ledger, hooks } = options;
  const path = durable ? `${await options.dir()}/server.sqlite` : null;
  // A memory store outlives a restart: only the handler (its caches, its
  // per-namespace clock) starts over.
  const memory = durable ? null : createMemoryServerStore();
  async function openStore(): Promise<ServerStore> {
    let store: ServerStore;
    if (path !== null) {
      const { openSqliteServerStore } = await import("../server/sqlite.ts");
      store = await openSqliteServerStore(path);
    } else {
      store = keepOpen(memory!);
    }
    return hooks.store === undefined ? store : hooks.store(store);
  }
  function start(store: ServerStore): SyncServer {
    return createSyncServer({
      store,
      onError(error) {
        ledger.serverErrors.push(`onError: ${String(error)}`);
      },
    });
  }
  let server: SyncServer | null = start(await openStore());
  let target: Target | null = null;
  function wrap(current: SyncServer): Target {
    const plain: Target = (request) => current.fetch(request);
    return hooks.server === undefined ? plain : hooks.server(plain);
  }
  target = wrap(server);
  return {
    base: EMBEDDED_BASE,
    embedded: true,
    target: () => target,
    async restart() {
      target = null;
      await server?.close();
      server = start(await openStore());
      target = wrap(server);
      return true;
    },
    async purge() {
      await server?.purgeTombstones({ olderThan: Date.now() + 1 });
      return true;
    },
    readAll: (kind) => readAll(EMBEDDED_BASE, kind, () => target!),
    async close() {
      target = null;
      await server?.close();
      server = null;
      await memory?.close();
    },
  };
}

/** A store whose `close()` does nothing, so a restart keeps its data. */
function keepOpen(store: ServerStore): ServerStore {
  return {
    getRecord: (ns, kind, id) => store.getRecord(ns, kind, id),
    listRecords: (ns, kind, options) => store.listRecords(ns, kind, options),
    getIdempotency: (ns, key) => store.getIdempotency(ns, key),
    commit: (writes) => store.commit(writes),
    purge: (options) => store.purge(options),
    trimIdempotency: (ns, options) => store.trimIdempotency(ns, options),
    lastWrite: (ns) => store.lastWrite(ns),
    close: () => Promise.resolve(),
    [Symbol.asyncDispose]: () => Promise.resolve(),
  };
}

function remoteBackend(base: string): Backend {
  const target: Target = (request) => fetch(request);
  return {
    base: base.replace(/\/+$/, ""),
    embedded: false,
    target: () => target,
    restart: () => Promise.resolve(false),
    purge: () => Promise.resolve(false),
    readAll: (kind) => readAll(base.replace(/\/+$/, ""), kind, () => target),
    close: () => Promise.resolve(),
  };
}

async function readAll(
  base: string,
  kind: string,
  target: () => Target,
): Promise<Map<string, Record<string, unknown>>> {
  const records = new Map<string, Record<string, unknown>>();
  let token: string | null = null;
  let last: Record<string, unknown> | null = null;
  for (let page = 0; page < 10_000; page++) {
    const url = new URL(`${base}/${encodeURIComponent(kind)}`);
    url.searchParams.set("includeDeleted", "true");
    url.searchParams.set("limit", "1000");
    if (last !== null) {
      url.searchParams.set("updatedSince", String(last.updated_at));
      url.searchParams.set("afterId", String(last.id));
    }
    if (token !== null) url.searchParams.set("pageToken", token);
    const response = await target()(
      new Request(url, { headers: { authorization: "Bearer chaos-check" } }),
    );
    if (response.status !== 200) {
      throw new Error(
        `Cannot read the server's view as it answered ${response.status}: current value is ${
          (await response.text()).slice(0, 200)
        }`,
      );
    }
    const body = await response.json() as {
      items: Record<string, unknown>[];
      nextPageToken: string | null;
    };
    for (const item of body.items) records.set(String(item.id), item);
    token = body.nextPageToken;
    last = body.items.at(-1) ?? last;
    if (token === null && body.items.length < 1000) return records;
  }
  throw new Error("Cannot read the server's view as it never ends");
}
