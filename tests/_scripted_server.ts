/**
 * A real HTTP server on 127.0.0.1:0 for transport tests: it records every
 * request (raw path, query, headers, body) and answers what the test's
 * handler scripts. Not published (underscore).
 *
 * @module
 */

/** A request as the server received it. */
export interface RecordedRequest {
  /** The HTTP method. */
  readonly method: string;
  /** The raw path, still percent-encoded as sent. */
  readonly path: string;
  /** The raw query, with its leading `?`, or `""`. */
  readonly search: string;
  /** The decoded query. */
  readonly query: URLSearchParams;
  /** The request headers. */
  readonly headers: Headers;
  /** The body as text (`""` when none). */
  readonly body: string;
  /** The body parsed as JSON, or `undefined` when it is not JSON. */
  readonly json: unknown;
}

/** Answers one request; `index` counts requests from 0. */
export type ScriptedHandler = (
  request: RecordedRequest,
  index: number,
) => Response | Promise<Response>;

/** A running scripted server. */
export interface ScriptedServer extends AsyncDisposable {
  /** The base URL, without a trailing slash. */
  readonly url: string;
  /** Every request received so far, in arrival order. */
  readonly requests: RecordedRequest[];
  /** Stops the server after releasing every handler waiting on a gate. */
  close(): Promise<void>;
  /** A promise that resolves when the server closes, for handlers to wait on. */
  readonly closed: Promise<void>;
}

/**
 * Starts a scripted server.
 *
 * @param handler Answers each request.
 * @returns The server; close it (or `await using` it) at the end.
 */
export function startScriptedServer(handler: ScriptedHandler): ScriptedServer {
  const requests: RecordedRequest[] = [];
  const closing = Promise.withResolvers<void>();
  const server = Deno.serve(
    {
      port: 0,
      hostname: "127.0.0.1",
      onListen(): void {},
      // Tests that break a response off on purpose need no stack trace.
      onError(): Response {
        return new Response("", { status: 500 });
      },
    },
    async (request) => {
      const url = new URL(request.url);
      const body = await request.text();
      let json: unknown;
      try {
        json = JSON.parse(body);
      } catch {
        json = undefined;
      }
      const recorded: RecordedRequest = {
        method: request.method,
        path: url.pathname,
        search: url.search,
        query: url.searchParams,
        headers: request.headers,
        body,
        json,
      };
      const index = requests.push(recorded) - 1;
      try {
        return await handler(recorded, index);
      } catch (error) {
        return new Response(String(error), { status: 599 });
      }
    },
  );
  let closed = false;
  async function close(): Promise<void> {
    if (closed) return;
    closed = true;
    closing.resolve();
    await server.shutdown();
  }
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    requests,
    close,
    closed: closing.promise,
    [Symbol.asyncDispose]: close,
  };
}

/**
 * A JSON response.
 *
 * @param body The body.
 * @param status The status.
 * @param headers Extra headers.
 * @returns The response.
 */
export function json(
  body: unknown,
  status = 200,
  headers: HeadersInit = {},
): Response {
  return Response.json(body, { status, headers });
}

/**
 * A handler that answers the n-th request with the n-th handler, and every
 * later one with the last.
 *
 * @param handlers The answers, in order.
 * @returns The handler.
 */
export function sequence(...handlers: ScriptedHandler[]): ScriptedHandler {
  return function answer(request, index): Response | Promise<Response> {
    const handler = handlers[Math.min(index, handlers.length - 1)]!;
    return handler(request, index);
  };
}
