/**
 * Per-write outcomes (ENGINE.md clause 24): what became of a local write
 * once the engine settled the outbox op that carries it.
 *
 * @module
 */

import type { JsonObject } from "./json.ts";
import type { OpConflict, OpError } from "./storage.ts";

/**
 * Why a write left the outbox without the server storing it.
 *
 * - `"unchanged"`: the write changed nothing and no op was queued for the
 *   record (e.g. a delete of a missing record, a put of the same data).
 * - `"cancelled"`: the record was created and deleted locally before the
 *   server saw it; nothing was sent.
 * - `"acceptServer"`, `"discard"`: a conflict was resolved by taking the
 *   server's record (the `serverWins` strategy, a resolver's choice, or
 *   `engine.conflicts.resolve()`).
 * - `"removed"`: the app removed the op with `engine.outbox.drop()`.
 */
export type DropReason =
  | "unchanged"
  | "cancelled"
  | "acceptServer"
  | "discard"
  | "removed";

/**
 * What became of a local write, discriminated by `status`. `opId` is the op
 * that carried the write's change: a write folded into a queued op
 * (coalescing) shares that op's outcome; `null` when no op was involved.
 *
 * - `"accepted"`: the server stored the write; `record` is the record it
 *   returned (`null` when it returned none, e.g. a `204` to a delete).
 * - `"merged"`: the write met a conflict, the table's strategy (or the app,
 *   through the conflict inbox) resolved it, and the server stored the
 *   resolved record, returned in `record`.
 * - `"quarantined"`: the server refused the op; it waits in
 *   `engine.outbox.quarantined()` with `error`.
 * - `"deferred"`: a conflict was parked in `engine.conflicts`; `conflict`
 *   is what the inbox keeps.
 * - `"dropped"`: the write left the outbox unsent or was overruled; see
 *   {@linkcode DropReason}. `record` is the server's record, when known.
 *
 * `quarantined` and `deferred` end a write's `synced` promise: the op stays
 * in the outbox until the app acts on it. After `outbox.retry()`,
 * `outbox.edit()` or a `conflicts.resolve()` that sends a new form, await
 * the op's next outcome with `engine.outbox.outcome(opId)`.
 */
export type WriteOutcome =
  | {
    readonly status: "accepted";
    readonly opId: string;
    readonly record: JsonObject | null;
  }
  | {
    readonly status: "merged";
    readonly opId: string;
    readonly record: JsonObject | null;
  }
  | {
    readonly status: "quarantined";
    readonly opId: string;
    readonly error: OpError;
  }
  | {
    readonly status: "deferred";
    readonly opId: string;
    readonly conflict: OpConflict;
  }
  | {
    readonly status: "dropped";
    readonly opId: string | null;
    readonly reason: DropReason;
    readonly record: JsonObject | null;
  };

/**
 * What `engine.outbox.outcome(opId)` resolves to: a {@linkcode WriteOutcome},
 * or `"unknown"` when the op is not in the outbox (it settled before, in this
 * engine or an earlier one, or never existed).
 */
export type OpOutcome = WriteOutcome | {
  readonly status: "unknown";
  readonly opId: string;
};

/**
 * What `put`, `update` and `delete` return: a Promise of the local write's
 * result (resolved once the write is committed locally, as before), with
 * the write's end attached.
 *
 * Neither `synced` nor `opId` causes an unhandled rejection when the app
 * never reads them. If the local write fails, both reject with its error.
 *
 * @typeParam R The local result.
 *
 * @example Awaiting a write to its end
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
 * await using storage = createMemoryStorage();
 * await using transport = createRestTransport({
 *   baseUrl: `http://127.0.0.1:${http.addr.port}`,
 * });
 * await using engine = new SyncEngine({ storage, transport });
 * const todos = engine.table("todos");
 *
 * const write = todos.put({ id: "1", title: "Buy milk" });
 * await write; // committed locally
 * await engine.sync();
 * const outcome = await write.synced;
 * assert.equal(outcome.status, "accepted");
 * if (outcome.status === "accepted") {
 *   assert.equal(typeof outcome.record?.updated_at, "string");
 * }
 * ```
 */
export interface WritePromise<R> extends Promise<R> {
  /** Resolves once the op carrying this write settles. */
  readonly synced: Promise<WriteOutcome>;
  /**
   * The op carrying this write, once committed locally (`null` when the
   * write queued nothing). Keep it to await the outcome after a restart
   * with `engine.outbox.outcome(opId)`.
   */
  readonly opId: Promise<string | null>;
}

/**
 * What `putMany` returns: a Promise of the records as stored, with one
 * outcome (and one op id) per record, in input order.
 *
 * @typeParam R The local result.
 */
export interface WriteManyPromise<R> extends Promise<R> {
  /** Resolves once every record's op settled, one outcome per record. */
  readonly synced: Promise<WriteOutcome[]>;
  /** The op carrying each record's write, in input order. */
  readonly opIds: Promise<(string | null)[]>;
}
