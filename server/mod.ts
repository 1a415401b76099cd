/**
 * The reference sync server, `@offline-first/sync/server`: a `fetch`-style
 * handler that implements the whole wire contract (docs/contract.md) over a
 * small, batch-shaped {@linkcode ServerStore}, and the contract's types for
 * whoever writes a store.
 *
 * The stores live beside it: `@offline-first/sync/server/memory` (the
 * default) and `@offline-first/sync/server/sqlite`; any other store proves
 * itself with `@offline-first/sync/server/conformance`. The handler uses web
 * standards plus `node:crypto`'s `createHash`, so it runs under
 * `Deno.serve`, `Bun.serve`, Node and Deno Deploy; `deno task serve`
 * (`server/serve.ts`) runs it on an SQLite file.
 *
 * @example Writing and pulling through the handler
 * ```ts
 * import { createSyncServer } from "@offline-first/sync/server";
 * import { createMemoryServerStore } from "@offline-first/sync/server/memory";
 * import assert from "node:assert/strict";
 *
 * await using server = createSyncServer({
 *   store: createMemoryServerStore(),
 *   now: () => Date.UTC(2025, 2, 1),
 * });
 * const put = await server.fetch(
 *   new Request("http://localhost/todo/1", { method: "PUT", body: "{}" }),
 * );
 * assert.equal(put.status, 201);
 * const pull = await server.fetch(new Request("http://localhost/todo"));
 * assert.deepEqual(await pull.json(), {
 *   items: [{ id: "1", updated_at: "2025-03-01T00:00:00.000Z" }],
 *   nextPageToken: null,
 *   total: 1, // the memory store counts the rest of a pull for free
 * });
 * ```
 *
 * @module
 */

export {
  createSyncServer,
  type PurgeTombstonesOptions,
  type ServerLimits,
  type SyncServer,
  type SyncServerOptions,
} from "./handler.ts";
export { bearerAuth, type BearerTokens, parseBearerTokens } from "./auth.ts";
export { StaleClockError } from "./store.ts";
export type {
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
