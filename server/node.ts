/**
 * `@offline-first/sync/server/node`: the reference server (any
 * `(Request) => Promise<Response>` handler) on Node's `node:http`. The
 * handler stays web-standard; this adapter, kept at the edge, turns each
 * `IncomingMessage` into a `Request` (body read up to a bound, `signal`
 * aborted when the client goes away) and writes the `Response` back,
 * streaming its body chunk by chunk with backpressure, so `GET /live`
 * event streams reach the client as they are written.
 *
 * Under Deno and Bun, serve `server.fetch` directly (`Deno.serve`,
 * `Bun.serve`); this module is for Node (≥ 18) and frameworks on it.
 *
 * @example Serving the reference server with node:http
 * ```ts
 * import { createSyncServer } from "@offline-first/sync/server";
 * import { serveNode } from "@offline-first/sync/server/node";
 * import assert from "node:assert/strict";
 *
 * await using server = createSyncServer();
 * await using http = await serveNode(server.fetch, { port: 0 });
 * const response = await fetch(`http://127.0.0.1:${http.port}/health`);
 * assert.equal((await response.json()).status, "ok");
 * ```
 *
 * @module
 */

import {
  createServer,
  type IncomingMessage,
  type ServerResponse,
} from "node:http";

/** A fetch-style handler: what `createSyncServer().fetch` is. */
export type FetchHandler = (request: Request) => Response | Promise<Response>;

/** A `node:http` request listener. */
export type NodeListener = (
  request: IncomingMessage,
  response: ServerResponse,
) => void;

/** Options for {@linkcode toNodeListener}. */
export interface NodeListenerOptions {
  /**
   * The largest request body read, in bytes; a larger one is answered
   * `413 payload_too_large` without being read further. Keep it above the
   * server's own `maxBatchBytes`, which refuses with the contract's code.
   *
   * @default {16777216}
   */
  readonly maxBodyBytes?: number;
  /**
   * Receives an error the handler threw or a response body that failed
   * while streaming (the client then sees `500`, or a cut body).
   *
   * @default {console.error}
   */
  readonly onError?: (error: unknown) => void;
}

/** Options for {@linkcode serveNode}. */
export interface ServeNodeOptions extends NodeListenerOptions {
  /**
   * The port; `0` picks a free one ({@linkcode NodeServer.port} says which).
   *
   * @default {8787}
   */
  readonly port?: number;
  /**
   * The address to bind.
   *
   * @default {"127.0.0.1"}
   */
  readonly hostname?: string;
}

/** A running `node:http` server; `close()` ends open streams too. */
export interface NodeServer extends AsyncDisposable {
  /** The port it listens on. */
  readonly port: number;
  /** The address it is bound to. */
  readonly hostname: string;
  /**
   * Stops listening and closes every connection (open `/live` streams
   * included). Idempotent.
   *
   * @returns When the server is closed.
   */
  close(): Promise<void>;
}

const DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024;

function tooLarge(limit: number): Response {
  return Response.json({
    error: "payload_too_large",
    message: `Cannot read request body as it exceeds ${limit} bytes`,
  }, { status: 413 });
}

/** Reads a body up to a bound: the bytes, or `null` when it is larger. */
function readBody(
  request: IncomingMessage,
  limit: number,
): Promise<Uint8Array<ArrayBuffer> | null> {
  return new Promise((resolve, reject) => {
    const chunks: Uint8Array[] = [];
    let size = 0;
    let done = false;
    request.on("data", (chunk: Uint8Array) => {
      if (done) return;
      size += chunk.byteLength;
      if (size > limit) {
        done = true;
        // Stop reading: the rest is never buffered.
        request.pause();
        resolve(null);
        return;
      }
      chunks.push(chunk);
    });
    request.on("end", () => {
      if (done) return;
      done = true;
      const body = new Uint8Array(size);
      let offset = 0;
      for (const chunk of chunks) {
        body.set(chunk, offset);
        offset += chunk.byteLength;
      }
      resolve(body);
    });
    request.on("error", (error) => {
      if (!done) reject(error);
      done = true;
    });
  });
}

function toHeaders(request: IncomingMessage): Headers {
  const headers = new Headers();
  const raw = request.rawHeaders;
  for (let index = 0; index + 1 < raw.length; index += 2) {
    const name = raw[index]!;
    // HTTP/2 pseudo-headers (":path") are not header names for fetch.
    if (!name.startsWith(":")) headers.append(name, raw[index + 1]!);
  }
  return headers;
}

function toUrl(request: IncomingMessage): string {
  const encrypted = (request.socket as { encrypted?: boolean }).encrypted;
  const host = request.headers.host ?? "localhost";
  return `${encrypted === true ? "https" : "http"}://${host}${
    request.url ?? "/"
  }`;
}

/** Waits until a response can take more, or is closed. */
function drained(response: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      response.off("drain", done);
      response.off("close", done);
      resolve();
    };
    response.on("drain", done);
    response.on("close", done);
  });
}

async function writeResponse(
  answer: Response,
  response: ServerResponse,
  method: string,
  signal: AbortSignal,
): Promise<void> {
  const headers: [string, string][] = [];
  for (const [name, value] of answer.headers) {
    if (name !== "set-cookie") headers.push([name, value]);
  }
  for (const cookie of answer.headers.getSetCookie()) {
    headers.push(["set-cookie", cookie]);
  }
  if (answer.statusText === "") {
    response.writeHead(answer.status, headers.flat());
  } else response.writeHead(answer.status, answer.statusText, headers.flat());
  if (answer.body === null || method === "HEAD") {
    await answer.body?.cancel();
    response.end();
    return;
  }
  // The head goes out now: an event stream's first event may be far off.
  response.flushHeaders();
  const reader = answer.body.getReader();
  const cancel = () => void reader.cancel().catch(() => {});
  signal.addEventListener("abort", cancel, { once: true });
  try {
    while (!signal.aborted) {
      const { value, done } = await reader.read();
      if (done) break;
      if (!response.write(value)) await drained(response);
    }
  } finally {
    signal.removeEventListener("abort", cancel);
    if (signal.aborted) cancel();
    response.end();
  }
}

/**
 * Turns a fetch-style handler into a `node:http` request listener: for
 * `http.createServer(listener)`, or a framework that hands out Node's
 * `req`/`res`. Request bodies are read whole up to `maxBodyBytes` (larger
 * ones are `413`); response bodies stream with backpressure; a client that
 * disconnects aborts `request.signal` and cancels the response body.
 *
 * @param handler The handler, such as `createSyncServer().fetch`.
 * @param options The body bound and error sink.
 * @returns The listener.
 * @throws {RangeError} When `maxBodyBytes` is not a positive integer.
 *
 * @example With node:http
 * ```ts
 * import { createSyncServer } from "@offline-first/sync/server";
 * import { toNodeListener } from "@offline-first/sync/server/node";
 * import { createServer } from "node:http";
 * import assert from "node:assert/strict";
 *
 * await using server = createSyncServer();
 * const http = createServer(toNodeListener(server.fetch));
 * await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
 * const { port } = http.address() as { port: number };
 * const put = await fetch(`http://127.0.0.1:${port}/todo/1`, {
 *   method: "PUT",
 *   headers: { "idempotency-key": "op-1" },
 *   body: JSON.stringify({ title: "Buy milk" }),
 * });
 * assert.equal(put.status, 201);
 * await put.body?.cancel();
 * await new Promise((resolve) => http.close(resolve));
 * ```
 */
export function toNodeListener(
  handler: FetchHandler,
  options: NodeListenerOptions = {},
): NodeListener {
  const limit = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  if (!Number.isSafeInteger(limit) || limit <= 0) {
    throw new RangeError(
      `Cannot create Node listener as 'maxBodyBytes' is not a positive integer: current value is ${limit}`,
    );
  }
  const onError = options.onError ?? console.error;
  return (request, response) => {
    const controller = new AbortController();
    // "close" comes when the response ended or the connection went away:
    // only the second aborts the handler's work.
    response.on("close", () => {
      if (!response.writableFinished) controller.abort();
    });
    void serveOne(request, response, controller.signal).catch((error) => {
      onError(error);
      if (!response.headersSent) {
        response.writeHead(500, { "content-type": "application/json" });
        response.end(
          JSON.stringify({ error: "internal", message: "Internal error" }),
        );
      } else response.destroy();
    });
  };

  async function serveOne(
    request: IncomingMessage,
    response: ServerResponse,
    signal: AbortSignal,
  ): Promise<void> {
    const method = request.method ?? "GET";
    const declared = Number(request.headers["content-length"] ?? 0);
    let body: Uint8Array<ArrayBuffer> | null = null;
    if (method !== "GET" && method !== "HEAD") {
      body = declared > limit ? null : await readBody(request, limit);
      if (body === null) {
        await writeResponse(tooLarge(limit), response, method, signal);
        // The unread rest of the body must not be taken for a next request.
        response.once("finish", () => request.destroy());
        return;
      }
    }
    const init: RequestInit = {
      method,
      headers: toHeaders(request),
      signal,
    };
    if (body !== null && body.byteLength > 0) init.body = body;
    const answer = await handler(new Request(toUrl(request), init));
    await writeResponse(answer, response, method, signal);
  }
}

/**
 * Serves a fetch-style handler with `node:http` and resolves once it
 * listens.
 *
 * @param handler The handler, such as `createSyncServer().fetch`.
 * @param options Port, address, body bound, error sink.
 * @returns The running server; `close()` it (or `await using`).
 * @throws {RangeError} When `maxBodyBytes` is not a positive integer.
 *
 * @example Serving on a free port
 * ```ts
 * import { createSyncServer } from "@offline-first/sync/server";
 * import { serveNode } from "@offline-first/sync/server/node";
 * import assert from "node:assert/strict";
 *
 * await using server = createSyncServer();
 * await using http = await serveNode(server.fetch, { port: 0 });
 * const response = await fetch(`http://127.0.0.1:${http.port}/todo`);
 * assert.deepEqual(await response.json(), { items: [], nextPageToken: null });
 * ```
 */
export async function serveNode(
  handler: FetchHandler,
  options: ServeNodeOptions = {},
): Promise<NodeServer> {
  const http = createServer(toNodeListener(handler, options));
  const hostname = options.hostname ?? "127.0.0.1";
  await new Promise<void>((resolve, reject) => {
    http.once("error", reject);
    http.listen(options.port ?? 8787, hostname, () => {
      http.off("error", reject);
      resolve();
    });
  });
  const address = http.address();
  const port = typeof address === "object" && address !== null
    ? address.port
    : 0;
  let closing: Promise<void> | null = null;
  function close(): Promise<void> {
    closing ??= new Promise<void>((resolve) => {
      http.close(() => resolve());
      // Open event streams would hold close() forever.
      http.closeAllConnections?.();
    });
    return closing;
  }
  return { port, hostname, close, [Symbol.asyncDispose]: close };
}
