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
// What an app needs, and nothing more: adapter authors find the contracts
// on `./storage` and `./transport`, backend authors the limits on `./limits`.
export {
  type AutoSyncOptions,
  type Clock,
  type EngineRole,
  type LiveOptions,
  type SharedOptions,
  SyncEngine,
  type SyncEngineOptions,
  type SyncOptions,
  type SyncResult,
  type SyncStatus,
  type Timers,
} from "./src/engine.ts";
export type {
  FieldNames,
  GetOptions,
  ListOptions,
  PutOptions,
  ServerFields,
  Synced,
  Table,
  TableOptions,
  WatchItem,
  WatchOptions,
} from "./src/table.ts";
export type { Outbox, OutboxListOptions } from "./src/outbox.ts";
export type {
  DropReason,
  OpOutcome,
  WriteManyPromise,
  WriteOutcome,
  WritePromise,
} from "./src/outcome.ts";
export type { ConflictEntry, ConflictInbox } from "./src/inbox.ts";
export {
  type Conflict,
  type ConflictResolver,
  type ConflictStrategy,
  type MergeFunction,
  type Resolution,
  Resolutions,
} from "./src/conflict.ts";
export {
  type AutoPreserveInput,
  autoPreserveMerge,
  deepEqual,
  diffFields,
  type MergeResult,
} from "./src/merge.ts";
export type {
  ChangeOrigin,
  ListenOptions,
  LiveState,
  RecordChange,
  RecordProblem,
  SyncEvent,
  SyncEventListener,
  SyncEventOf,
  SyncEventType,
  SyncStats,
} from "./src/events.ts";
export {
  AuthError,
  ClosedError,
  type ErrorCategory,
  NetworkError,
  ParseError,
  RejectedError,
  ResyncRequiredError,
  ServerError,
  StorageError,
  SyncError,
  type SyncErrorOptions,
  SyncRequestTimeoutError,
  ValidationError,
  type ValidationIssue,
} from "./src/errors.ts";
export type { JsonObject, JsonPrimitive, JsonValue } from "./src/json.ts";
export type {
  InferOutput,
  StandardSchemaV1,
  StandardSchemaV1Props,
  StandardSchemaV1Result,
} from "./src/schema.ts";
export { createUlid, type UlidFactory, type UlidOptions } from "./src/ulid.ts";
export type { Storage } from "./src/storage.ts";
export type { Transport } from "./src/transport.ts";
