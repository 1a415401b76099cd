/**
 * The Transport contract: how the engine talks to a backend. Types and MUST
 * clauses only, no runtime code. `@offline-first/sync/transport/rest`
 * implements it over `fetch` for any backend that follows the wire contract
 * (docs/contract.md); a test double or another protocol can implement it
 * too.
 *
 * @module
 */

import type { SyncError } from "./errors.ts";
import type { JsonObject, JsonValue } from "./json.ts";

/** Common options of every call. */
export interface TransportCallOptions {
  /** Aborts the call; pending requests are cancelled. */
  readonly signal?: AbortSignal;
}

/** One page request of a pull. */
export interface PullRequest {
  /** The table (the REST path segment). */
  readonly kind: string;
  /** The `updated_at` of the last item received; `null` on a first pull. */
  readonly updatedSince: string | null;
  /** The id of the last item received; `null` on a first pull. */
  readonly afterId: string | null;
  /** The page size. */
  readonly limit: number;
  /** The opaque token the previous page returned, if any. */
  readonly pageToken: string | null;
}

/** One page of a pull. */
export interface PullPage {
  /**
   * The items as received, ordered by `(updated_at, id)`; tombstones
   * included. Each should be a record, but the engine checks every one
   * (ENGINE.md clause 25): a transport passes a bad item through rather than
   * failing the page for it.
   */
  readonly items: readonly JsonValue[];
  /** The opaque hint for the next page, or `null`. */
  readonly nextPageToken: string | null;
  /**
   * How many items the request's selection holds, this page's and every
   * later page's, when the server tells (the wire's optional `total`): a
   * non-negative integer, at least `items.length`. Advisory: the engine
   * shows it as the pull's progress total and never ends a pull by it.
   */
  readonly total?: number;
  /** The server's clock from the response's `Date` header (ms), if sent. */
  readonly serverDate?: number;
}

/** One write to push. */
export interface PushOp {
  /** The op's id (stable across attempts). */
  readonly opId: string;
  /**
   * The idempotency key of this attempt's form of the op: repeated unchanged
   * when the same body is re-sent, fresh when the body differs.
   */
  readonly key: string;
  /** The table. */
  readonly kind: string;
  /** The record's id. */
  readonly id: string;
  /** Whether the op writes or deletes the record. */
  readonly type: "upsert" | "delete";
  /** The record to store (upsert); `null` for a delete. */
  readonly payload: JsonObject | null;
  /** The server version the write is based on; `null` when unknown. */
  readonly baseUpdatedAt: string | null;
  /** Whether the write skips the server's version check. */
  readonly force: boolean;
}

/** The outcome of one {@linkcode PushOp}. */
export type PushResult =
  /** Accepted (2xx, or 404 on a delete). */
  | {
    readonly type: "ok";
    /** The HTTP status. */
    readonly status: number;
    /** The stored record, or `null` when the server sent none. */
    readonly record: JsonObject | null;
    /** The server's clock from the `Date` header (ms), if sent. */
    readonly serverDate?: number;
  }
  /** The server holds a different version (409). */
  | {
    readonly type: "conflict";
    /** The server's current record; `null` if it sent none. */
    readonly current: JsonObject | null;
    /** The current record's `updated_at`, if known. */
    readonly serverTimestamp: string | null;
    /** The server's clock from the `Date` header (ms), if sent. */
    readonly serverDate?: number;
  }
  /** Definitively refused (400, 403, 413, 422, other 4xx): never retried. */
  | {
    readonly type: "rejected";
    /** The error, with its status, code and body. */
    readonly error: SyncError;
    /** The response body. */
    readonly body: JsonValue | null;
  }
  /** Failed in a way that may pass later (network, 408, 429, 5xx). */
  | {
    readonly type: "retry";
    /** The error. */
    readonly error: SyncError;
    /** How long the server asked to wait, in milliseconds, if it did. */
    readonly retryAfterMs: number | null;
  };

/**
 * A live hint (CONTRACT.md §Live hint): the server committed changes to
 * these kinds. It carries no records: the engine answers it with a pull.
 */
export interface LiveHint {
  /**
   * The kinds that changed. Empty in the first hint of every stream, which
   * says only that the stream is open (changes made while it was not may
   * have been missed).
   */
  readonly kinds: readonly string[];
}

/** Options of {@linkcode Transport.live}. */
export interface LiveCallOptions {
  /** Ends the stream: the iteration finishes, the request is cancelled. */
  readonly signal: AbortSignal;
  /**
   * Receives what the transport skipped in the stream (an event that is not
   * JSON, a kind the limits refuse, a line past the transport's bound); the
   * stream goes on. The engine reports each as an `error` event.
   */
  readonly onProblem?: (error: SyncError) => void;
}

/**
 * How the engine reaches a backend.
 *
 * Every transport MUST:
 *
 * 1. Send each {@linkcode PushOp} with its `key` as idempotency key, so that
 *    a re-sent op is applied once.
 * 2. Return one {@linkcode PushResult} per op, in the same order, and
 *    deliver ops of one record in the order given (the engine never gives
 *    two ops of one record in one call).
 * 3. Reject a whole call only for what concerns every op: `AuthError` once
 *    credentials are refused for good, `ClosedError` after close, an abort.
 *    Per-op failures are values.
 * 4. For a pull, return items only from a response that parsed completely
 *    (a JSON object with an `items` array); otherwise reject with a
 *    retryable `ParseError` (a damaged body is a lost response),
 *    `ResyncRequiredError` (410), `AuthError`, `ServerError` or
 *    `NetworkError`. A request that cannot be sent at all (a kind or cursor
 *    that breaks the contract's limits) rejects with `ValidationError`
 *    before anything is sent; an answer that can never be read (over the
 *    transport's size cap, a redirect to another origin) rejects with a
 *    non-retryable error, so nobody hammers the server for it. Checking each item (an object, its id, timestamps and
 *    depth) is the engine's job: it knows every table's field names, and
 *    skips a bad item instead of failing the page (clause 25).
 * 5. Make `close()` idempotent and reject every later call with
 *    `ClosedError`.
 */
export interface Transport extends AsyncDisposable {
  /**
   * Fetches one page of a table's changes. The engine asks for the next
   * page while it writes the current one, and cancels that request through
   * the signal when the page is no longer wanted (the write failed, another
   * engine moved the cursor, the run ended): it does not wait for it.
   *
   * @param request The table, cursor, page size and token.
   * @param options Abort signal.
   * @returns The page.
   * @throws {ParseError | ResyncRequiredError | AuthError | ServerError | NetworkError | ValidationError}
   */
  pull(request: PullRequest, options?: TransportCallOptions): Promise<PullPage>;

  /**
   * Sends writes.
   *
   * @param ops The writes; at most one per record.
   * @param options Abort signal.
   * @returns One result per op, in order.
   * @throws {AuthError} When credentials are refused after one refresh.
   */
  push(
    ops: readonly PushOp[],
    options?: TransportCallOptions,
  ): Promise<PushResult[]>;

  /**
   * Optional: the backend's live hints, read until the signal aborts. The
   * first hint (`{ kinds: [] }`) comes once the server accepted the stream;
   * each later one names kinds that changed. The iteration ends when the
   * server ends the stream, and throws what broke it: a `ServerError` with
   * code `"live_unsupported"` (not retryable) when the backend has no live
   * hints, `AuthError`, a retryable `ServerError` (with `retryAfterMs`) or
   * `NetworkError`. A transport without it, or a backend without the route,
   * leaves the engine to interval polling.
   *
   * @param options The signal that ends the stream; where skipped bytes are
   * reported.
   * @returns The hints.
   */
  live?(options: LiveCallOptions): AsyncIterable<LiveHint>;

  /** Releases the transport. Idempotent. */
  close(): Promise<void>;
}
