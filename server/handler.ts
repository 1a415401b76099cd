/**
 * The reference sync server: a `fetch`-style handler that implements the
 * whole wire contract (docs/contract.md) on top of a small, batch-shaped
 * `ServerStore` (`store.ts`). It uses web standards plus `node:crypto`'s
 * `createHash` (in Deno, Deno Deploy, Bun and Node), so the same handler runs
 * under `Deno.serve`, `Bun.serve` and Deno Deploy; the SQLite store lives in
 * `@offline-first/sync/server/sqlite` so that this module never
 * imports `node:sqlite`.
 *
 * Routes, under an optional base path: `GET /health`, `POST /batch`,
 * `GET /{kind}` (pull), `PUT /{kind}/{id}` (upsert) and
 * `DELETE /{kind}/{id}` (soft delete). Kind and id are percent-decoded path
 * segments.
 *
 * This file routes and answers; the work is in private modules: the
 * options (`_options.ts`), the shared state and write lock (`_core.ts`),
 * the pull (`_pull.ts`), the single writes (`_write.ts`) and the batch
 * (`_batch.ts`), over what a request carries (`_wire.ts`).
 *
 * @example Serving over HTTP
 * ```ts
 * import { createSyncServer } from "@offline-first/sync/server";
 * import assert from "node:assert/strict";
 *
 * await using server = createSyncServer();
 * await using http = Deno.serve(
 *   { port: 0, hostname: "127.0.0.1", onListen() {} },
 *   server.fetch,
 * );
 * const response = await fetch(`http://127.0.0.1:${http.addr.port}/health`);
 * const health = await response.json();
 * assert.equal(health.status, "ok");
 * assert.equal(health.batch, true);
 * assert.equal(health.limits.maxBatchOps, 1000);
 * ```
 *
 * @module
 */

import { RESERVED_KINDS } from "../src/limits.ts";
import { batchRequest } from "./_batch.ts";
import { ServerCore } from "./_core.ts";
import { idRefusal, kindRefusal } from "./_limits.ts";
import { resolveOptions, type SyncServerOptions } from "./_options.ts";
import { pullRequest } from "./_pull.ts";
import {
  closedReply,
  failure,
  methodNotAllowed,
  notFound,
  refusal,
  type Reply,
} from "./_reply.ts";
import { describe } from "../src/describe.ts";
import { writeRequest } from "./_write.ts";

export type { ServerLimits } from "./_limits.ts";
import type { PurgeTombstonesOptions } from "./_options.ts";
export type { PurgeTombstonesOptions, SyncServerOptions } from "./_options.ts";

/** A running reference server. */
export interface SyncServer extends AsyncDisposable {
  /**
   * Answers one request; never rejects. Bound, so `Deno.serve(server.fetch)`
   * and `Bun.serve({ fetch: server.fetch })` work.
   */
  readonly fetch: (request: Request) => Promise<Response>;

  /**
   * Removes old tombstones now. Pulls whose cursor, brought from an earlier
   * pull, predates a removed tombstone are then answered `410` (the client
   * runs a full resync).
   *
   * @param options Which tombstones.
   * @returns How many tombstones were removed.
   * @throws {TypeError} When `olderThan` is not a number.
   * @throws {ClosedError} After close.
   */
  purgeTombstones(options?: PurgeTombstonesOptions): Promise<number>;

  /**
   * Stops serving: later requests are answered `503`. Waits for the writes
   * in progress, then closes the store. Idempotent.
   *
   * @returns When the store is closed.
   */
  close(): Promise<void>;
}

/**
 * Creates the reference server.
 *
 * @param options The store, auth hook, schemas, limits and clock.
 * @returns The server; serve its `fetch`.
 * @throws {TypeError} When an option has the wrong type.
 * @throws {RangeError} When a limit is out of range.
 *
 * @example Writing and pulling through the handler
 * ```ts
 * import { createSyncServer } from "@offline-first/sync/server";
 * import assert from "node:assert/strict";
 *
 * await using server = createSyncServer({ now: () => Date.UTC(2025, 2, 1) });
 * const put = await server.fetch(
 *   new Request("http://localhost/todo/1", {
 *     method: "PUT",
 *     headers: { "idempotency-key": "op-1" },
 *     body: JSON.stringify({ title: "Buy milk" }),
 *   }),
 * );
 * assert.equal(put.status, 201);
 * assert.deepEqual(await put.json(), {
 *   id: "1",
 *   title: "Buy milk",
 *   updated_at: "2025-03-01T00:00:00.000Z",
 * });
 *
 * const pull = await server.fetch(new Request("http://localhost/todo"));
 * const page = await pull.json();
 * assert.equal(page.items.length, 1);
 * assert.equal(page.nextPageToken, null);
 * ```
 */
export function createSyncServer(options: SyncServerOptions = {}): SyncServer {
  return new ReferenceServer(new ServerCore(resolveOptions(options)));
}

/** The handler: routes each request and turns its reply into a `Response`. */
class ReferenceServer implements SyncServer {
  readonly #core: ServerCore;
  #dateSecond = NaN;
  #dateText = "";

  constructor(core: ServerCore) {
    this.#core = core;
  }

  readonly fetch = (request: Request): Promise<Response> =>
    this.#answer(request);

  purgeTombstones(options: PurgeTombstonesOptions = {}): Promise<number> {
    return this.#core.purgeTombstones(options);
  }

  close(): Promise<void> {
    return this.#core.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #answer(request: Request): Promise<Response> {
    let reply: Reply;
    try {
      reply = await this.#route(request);
    } catch (error) {
      reply = this.#core.failureReply(error);
    }
    try {
      return this.#respond(reply);
    } catch (error) {
      // A body too large to serialise must still answer, as JSON.
      return this.#respond(this.#core.internal(error));
    }
  }

  #respond(reply: Reply): Response {
    let now: number;
    try {
      now = this.#core.now();
    } catch {
      now = Date.now();
    }
    // A record, not a `Headers`: `Response` copies either, and a record
    // costs a third. Sync responses are never cacheable: a cached pull or
    // conflict is wrong.
    if (reply.stream !== undefined) {
      return new Response(reply.stream, {
        status: reply.status,
        headers: {
          "content-type": "text/event-stream",
          "cache-control": "no-store",
          "x-accel-buffering": "no",
          "date": this.#httpDate(now),
        },
      });
    }
    const headers: Record<string, string> = {
      ...reply.headers,
      "content-type": "application/json",
      "cache-control": "no-store",
      "date": this.#httpDate(now),
    };
    return new Response(reply.text ?? JSON.stringify(reply.body), {
      status: reply.status,
      headers,
    });
  }

  /** `Date` header text, formatted once per second of `now()`. */
  #httpDate(now: number): string {
    const second = Math.floor(now / 1000);
    if (second !== this.#dateSecond) {
      this.#dateSecond = second;
      this.#dateText = new Date(now).toUTCString();
    }
    return this.#dateText;
  }

  async #route(request: Request): Promise<Reply> {
    if (this.#core.closed) return closedReply();
    const url = new URL(request.url);
    const segments = this.#segments(url.pathname);
    if (segments === null) return notFound(request);
    if (!Array.isArray(segments)) {
      const [what, code] = segments.invalid === 0
        ? ["kind", "invalid_kind"]
        : segments.invalid === 1
        ? ["id", "invalid_id"]
        : ["path segment", "invalid_path"];
      return failure(
        400,
        code,
        `Cannot route request as its ${what} is not valid percent-encoded UTF-8 (a lone surrogate, say)`,
      );
    }
    const method = request.method;
    if (segments.length === 1 && segments[0] === "health") {
      if (method !== "GET") return methodNotAllowed(method, "GET");
      return {
        status: 200,
        body: {
          status: "ok",
          batch: this.#core.options.batch,
          live: this.#core.options.live,
          contract: 1,
          limits: { ...this.#core.limits },
        },
      };
    }

    const principal = await this.#core.options.auth(request);
    if (principal === null) {
      return {
        ...failure(
          401,
          "unauthorized",
          "Cannot answer request as its credentials were refused",
        ),
        headers: { "www-authenticate": "Bearer" },
      };
    }
    if (typeof principal !== "string") {
      throw new TypeError(
        `Cannot authorize request as the auth hook returned neither a string nor null: current value is ${
          describe(principal)
        }`,
      );
    }

    const [kind, id, ...rest] = segments;
    if (kind === undefined || kind === "" || rest.length > 0 || id === "") {
      return notFound(request);
    }
    if (kind === "batch" && id === undefined && this.#core.options.batch) {
      if (method !== "POST") return methodNotAllowed(method, "POST");
      return await batchRequest(this.#core, { namespace: principal, request });
    }
    if (kind === "live" && id === undefined && this.#core.options.live) {
      if (method !== "GET") return methodNotAllowed(method, "GET");
      return this.#live(principal);
    }
    if (RESERVED_KINDS.has(kind)) {
      // `/health/x`, `/batch/x`: a record route on a name no kind may take.
      if (id === undefined) return notFound(request);
      const refused = kindRefusal(kind, "route request");
      if (refused !== null) return refusal(refused);
    }
    if (id === undefined) {
      if (method !== "GET") return methodNotAllowed(method, "GET");
      const refused = kindRefusal(kind, "pull");
      if (refused !== null) return refusal(refused);
      return await pullRequest(this.#core, {
        namespace: principal,
        kind,
        params: url.searchParams,
      });
    }
    if (method === "PUT" || method === "DELETE") {
      const action = method === "PUT" ? "store record" : "delete record";
      const refused = kindRefusal(kind, action) ?? idRefusal(id, action);
      if (refused !== null) return refusal(refused);
      return await writeRequest(this.#core, {
        namespace: principal,
        request,
        kind,
        id,
        params: url.searchParams,
      });
    }
    return methodNotAllowed(method, "PUT, DELETE");
  }

  /**
   * The decoded path segments under the base path; `null` when outside;
   * the index of the first segment that is not percent-encoded UTF-8 (a
   * lone surrogate, say).
   */
  /** Opens a live stream, or refuses one past the principal's bound. */
  #live(principal: string): Reply {
    const stream = this.#core.live.open(principal);
    if (stream === null) {
      const seconds = Math.ceil(this.#core.options.liveHeartbeatMs / 1000);
      return {
        ...failure(
          429,
          "too_many_streams",
          `Cannot open live stream as the principal holds ${this.#core.options.maxLiveStreams} already: close one first`,
        ),
        headers: { "retry-after": String(seconds) },
      };
    }
    return { status: 200, body: null, stream };
  }

  #segments(pathname: string): string[] | { invalid: number } | null {
    const { basePath } = this.#core.options;
    if (basePath !== "") {
      if (pathname === basePath) return [];
      if (!pathname.startsWith(`${basePath}/`)) return null;
      pathname = pathname.slice(basePath.length);
    }
    const raw = pathname.split("/").slice(1);
    if (raw.length === 1 && raw[0] === "") return [];
    const segments: string[] = [];
    for (const segment of raw) {
      try {
        segments.push(decodeURIComponent(segment));
      } catch {
        // Reported by position: a kind or an id that is not UTF-8.
        return { invalid: segments.length };
      }
    }
    return segments;
  }
}
