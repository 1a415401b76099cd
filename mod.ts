/**
 * `@offline-first/sync`: an offline-first cache-sync engine. Apps read and
 * write a local store instantly, online or not; every write commits, in
 * the same atomic write, an op into an outbox; `sync()` pushes the outbox to
 * any REST backend and pulls the server's changes page by page, resolving
 * conflicts on the client.
 *
 * The engine depends on two small contracts only: {@linkcode Storage}
 * (implemented by `./storage/memory`, `./storage/sqlite`, `./storage/kv`)
 * and {@linkcode Transport} (implemented by `./transport/rest`).
 *
 * @example Write offline, sync later
 * ```ts
 * import { SyncEngine } from "@offline-first/sync";
 * import { createMemoryStorage } from "@offline-first/sync/storage/memory";
 * import { createRestTransport } from "@offline-first/sync/transport/rest";
 * import { createSyncServer } from "@offline-first/sync/server";
 * import assert from "node:assert/strict";
 *
 * await using server = createSyncServer();
 * await using http = Deno.serve(
 *   { port: 0, hostname: "127.0.0.1", onListen() {} },
 *   server.fetch,
 * );
 *
 * await using storage = createMemoryStorage();
 * await using transport = createRestTransport({
 *   baseUrl: `http://127.0.0.1:${http.addr.port}`,
 * });
 * await using engine = new SyncEngine({ storage, transport });
 * const notes = engine.table("notes");
 *
 * await notes.put({ id: "n1", text: "written offline" });
 * assert.equal((await engine.outbox.list()).length, 1);
 *
 * const { stats } = await engine.sync();
 * assert.equal(stats.pushed, 1);
 * assert.equal((await engine.outbox.list()).length, 0);
 * ```
 *
 * @module
 */
export * from "./src/engine.ts";
export * from "./src/table.ts";
export * from "./src/conflict.ts";
export * from "./src/merge.ts";
export * from "./src/events.ts";
export * from "./src/errors.ts";
export * from "./src/json.ts";
export * from "./src/limits.ts";
export * from "./src/schema.ts";
export * from "./src/ulid.ts";
export { Outbox, type OutboxListOptions } from "./src/outbox.ts";
export { type ConflictEntry, ConflictInbox } from "./src/inbox.ts";
export type * from "./src/storage.ts";
export type * from "./src/transport.ts";
export type * from "./src/sqlite_like.ts";
