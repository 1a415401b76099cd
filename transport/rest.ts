/**
 * The REST transport: a {@linkcode Transport} over `fetch` for any backend
 * that follows the wire contract (pull with `GET {base}/{kind}`, writes with
 * `PUT`/`DELETE {base}/{kind}/{id}` or `POST {base}/batch`).
 *
 * It implements the client side of the contract's status table: it retries
 * what may pass later (network errors, timeouts, 408, 429, 5xx) with capped
 * exponential backoff and full jitter, honours `Retry-After`, refreshes the
 * token once on a 401, and reports every write's outcome as a value.
 *
 * Every byte from the network is treated as hostile: a body is read up to
 * `maxResponseBytes` and no further; a `2xx` answer that is cut short, not
 * UTF-8 JSON or not of the contract's shape is a retryable `ParseError`
 * (retried like a lost response); credentials never follow a redirect to
 * another origin. An op whose id or kind breaks the contract's limits is
 * rejected on its own (a `ValidationError`), and the other ops go on.
 *
 * @example Pulling a page
 * ```ts
 * import { createRestTransport } from "@offline-first/sync/transport/rest";
 * import assert from "node:assert/strict";
 *
 * // A stand-in backend; any server that follows the wire contract works.
 * await using server = Deno.serve(
 *   { port: 0, hostname: "127.0.0.1", onListen() {} },
 *   () =>
 *     Response.json({
 *       items: [{ id: "a", updated_at: "2025-03-01T10:00:00.000Z" }],
 *       nextPageToken: null,
 *     }),
 * );
 * await using transport = createRestTransport({
 *   baseUrl: `http://127.0.0.1:${server.addr.port}/api`,
 * });
 * const page = await transport.pull({
 *   kind: "todos",
 *   updatedSince: null,
 *   afterId: null,
 *   limit: 100,
 *   pageToken: null,
 * });
 * assert.deepEqual(page.items, [
 *   { id: "a", updated_at: "2025-03-01T10:00:00.000Z" },
 * ]);
 * ```
 *
 * @module
 */

import type { Transport } from "../src/transport.ts";
import { resolveOptions, type RestTransportOptions } from "./_rest_options.ts";
import { RestTransport } from "./_rest_transport.ts";

export type {
  RestRetryOptions,
  RestTokenContext,
  RestTokenProvider,
  RestTransportOptions,
} from "./_rest_options.ts";

/**
 * Creates a {@linkcode Transport} that talks to a backend over HTTP, as the
 * wire contract describes.
 *
 * Pull: `GET {base}/{kind}?updatedSince=&afterId=&limit=&includeDeleted=true&pageToken=`,
 * parsed strictly. Push: one `PUT`/`DELETE {base}/{kind}/{id}` per op (up to
 * `concurrency` at once), or `POST {base}/batch` in chunks of `batchSize`.
 * Every write carries `Idempotency-Key: <op.key>`, so a retried write is
 * applied once. Path segments are percent-encoded.
 *
 * Retries stop early for the rest of a push once one request has failed
 * after all its tries: the ops not yet sent get the same `retry` result
 * rather than hammering a server that is down (or that asked to wait).
 *
 * @param options The base URL, credentials, retry policy and batching.
 * @returns The transport; close it when done.
 * @throws {TypeError} When an option has the wrong type or `baseUrl` is not
 * an `http:`/`https:` URL without query or fragment.
 * @throws {RangeError} When a number option is out of range.
 *
 * @example Pushing writes with a token
 * ```ts
 * import { createRestTransport } from "@offline-first/sync/transport/rest";
 * import assert from "node:assert/strict";
 *
 * await using server = Deno.serve(
 *   { port: 0, hostname: "127.0.0.1", onListen() {} },
 *   async (request) => {
 *     if (request.headers.get("authorization") !== "Bearer secret") {
 *       return Response.json({ error: "unauthorized" }, { status: 401 });
 *     }
 *     const body = await request.json();
 *     return Response.json(
 *       { ...body, updated_at: "2025-03-01T10:00:00.000Z" },
 *       { status: 201 },
 *     );
 *   },
 * );
 * await using transport = createRestTransport({
 *   baseUrl: `http://127.0.0.1:${server.addr.port}`,
 *   token: () => "secret",
 *   batch: false,
 * });
 * const [result] = await transport.push([{
 *   opId: "01J0000000000000000000000A",
 *   key: "01J0000000000000000000000A",
 *   kind: "todos",
 *   id: "a",
 *   type: "upsert",
 *   payload: { id: "a", title: "Milk" },
 *   baseUpdatedAt: null,
 *   force: false,
 * }]);
 * assert.equal(result?.type, "ok");
 * ```
 *
 * @example Options are checked once, at construction
 * ```ts
 * import { createRestTransport } from "@offline-first/sync/transport/rest";
 * import assert from "node:assert/strict";
 *
 * assert.throws(
 *   () => createRestTransport({ baseUrl: "http://localhost", batchSize: 0 }),
 *   RangeError,
 * );
 * ```
 */
export function createRestTransport(options: RestTransportOptions): Transport {
  return new RestTransport(resolveOptions(options));
}
