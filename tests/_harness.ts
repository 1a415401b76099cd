/**
 * End-to-end test harness: a reference server on 127.0.0.1:0 over real HTTP
 * and clients made of an engine, a storage and the REST transport.
 *
 * @module
 */

import { SyncEngine, type SyncEngineOptions, type SyncEvent } from "../mod.ts";
import type { Storage } from "../src/storage.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { openKvStorage } from "../storage/kv.ts";
import { openSqliteStorage } from "../storage/sqlite.ts";
import {
  createRestTransport,
  type RestTransportOptions,
} from "../transport/rest.ts";
import {
  createSyncServer,
  type SyncServer,
  type SyncServerOptions,
} from "../server/mod.ts";

/** A request as the test server saw it. */
export interface SeenRequest {
  readonly method: string;
  readonly path: string;
  readonly query: URLSearchParams;
  readonly headers: Headers;
  readonly body: string;
}

/** Intercepts requests before the reference server sees them. */
export type Interceptor = (
  request: Request,
  seen: SeenRequest,
  next: (request: Request) => Promise<Response>,
) => Promise<Response | undefined> | Response | undefined;

/** A running test server. */
export interface TestServer extends AsyncDisposable {
  readonly url: string;
  readonly server: SyncServer;
  /** Every request, in arrival order. */
  readonly requests: SeenRequest[];
  /** Replaces the interceptor (`undefined` passes everything through). */
  intercept(interceptor: Interceptor | undefined): void;
}

/**
 * Starts the reference server behind a real HTTP listener.
 *
 * @param options Server options.
 * @returns The server.
 */
export function startServer(options: SyncServerOptions = {}): TestServer {
  const server = createSyncServer(options);
  const requests: SeenRequest[] = [];
  let interceptor: Interceptor | undefined;
  const http = Deno.serve({
    port: 0,
    hostname: "127.0.0.1",
    onListen() {},
    onError() {
      return new Response(null, { status: 500 });
    },
  }, async (incoming) => {
    const url = new URL(incoming.url);
    const hasBody = incoming.method !== "GET" && incoming.method !== "HEAD";
    const body = hasBody ? await incoming.text() : "";
    // A fresh request: cloning the incoming one would tie its signal to ours.
    const request = new Request(incoming.url, {
      method: incoming.method,
      headers: incoming.headers,
      ...(hasBody ? { body } : {}),
    });
    const seen: SeenRequest = {
      method: request.method,
      path: url.pathname,
      query: url.searchParams,
      headers: incoming.headers,
      body,
    };
    requests.push(seen);
    const next = (req: Request): Promise<Response> => server.fetch(req);
    const answer = await interceptor?.(request, seen, next);
    return answer ?? await next(request);
  });
  return {
    url: `http://127.0.0.1:${http.addr.port}`,
    server,
    requests,
    intercept(next) {
      interceptor = next;
    },
    async [Symbol.asyncDispose]() {
      await http.shutdown();
      await server.close();
    },
  };
}

/** A client: engine + storage + transport, with a log of its events. */
export interface TestClient extends AsyncDisposable {
  readonly engine: SyncEngine;
  readonly storage: Storage;
  readonly events: SyncEvent[];
}

/** Options of {@linkcode createClient}. */
export interface TestClientOptions {
  readonly storage?: Storage;
  readonly engine?: Partial<SyncEngineOptions>;
  readonly transport?: Partial<RestTransportOptions>;
}

/**
 * Creates a client of a test server. The REST transport never sleeps for
 * real between retries.
 *
 * @param url The server's URL.
 * @param options Storage and engine/transport overrides.
 * @returns The client.
 */
export function createClient(
  url: string,
  options: TestClientOptions = {},
): TestClient {
  const storage = options.storage ?? createMemoryStorage();
  const transport = createRestTransport({
    baseUrl: url,
    sleep: () => Promise.resolve(),
    ...options.transport,
  });
  const engine = new SyncEngine({ storage, transport, ...options.engine });
  const events: SyncEvent[] = [];
  for (
    const type of [
      "syncCompleted",
      "opPushed",
      "opFailed",
      "opQuarantined",
      "conflictDetected",
      "conflictResolved",
      "conflictDeferred",
      "dataMerged",
      "pullPageApplied",
      "change",
      "error",
    ] as const
  ) {
    engine.on(type, (event) => events.push(event));
  }
  return {
    engine,
    storage,
    events,
    async [Symbol.asyncDispose]() {
      await engine.close();
      await transport.close();
      await storage.close();
    },
  };
}

/**
 * The events of one type.
 *
 * @param events The log.
 * @param type The type.
 * @returns The matching events.
 */
export function eventsOf<T extends SyncEvent["type"]>(
  events: readonly SyncEvent[],
  type: T,
): Extract<SyncEvent, { type: T }>[] {
  return events.filter((event): event is Extract<SyncEvent, { type: T }> =>
    event.type === type
  );
}

/** A storage the end-to-end tests run on. */
export interface Backend {
  readonly name: string;
  /** Opens a fresh, empty store. */
  open(): Promise<Storage>;
}

/** Every storage: the engine's end-to-end tests run on each. */
export const BACKENDS: readonly Backend[] = [
  { name: "memory", open: () => Promise.resolve(createMemoryStorage()) },
  { name: "sqlite", open: () => openSqliteStorage(":memory:") },
  { name: "kv", open: () => openKvStorage(":memory:") },
];

/**
 * Creates a client on a fresh store of `backend`.
 *
 * @param url The server's URL.
 * @param backend The storage to use.
 * @param options Engine and transport overrides.
 * @returns The client; disposing it closes the store.
 */
export async function openClient(
  url: string,
  backend: Backend,
  options: Omit<TestClientOptions, "storage"> = {},
): Promise<TestClient> {
  return createClient(url, { ...options, storage: await backend.open() });
}
