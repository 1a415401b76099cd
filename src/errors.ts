/**
 * Typed errors. Every error the library raises or reports is a
 * {@linkcode SyncError} with a {@linkcode ErrorCategory} and a `retryable`
 * flag (ENGINE.md clause 21); subclasses exist only for what callers catch.
 *
 * @module
 */

import type { JsonValue } from "./json.ts";

/**
 * What went wrong, coarsely: lets an app decide whether to retry, ask the
 * user to sign in again, or show a bug report.
 */
export type ErrorCategory =
  | "network"
  | "auth"
  | "server"
  | "rejected"
  | "conflict"
  | "parse"
  | "validation"
  | "storage"
  | "closed";

/** Options for {@linkcode SyncError}. */
export interface SyncErrorOptions extends ErrorOptions {
  /** The error's category. */
  category: ErrorCategory;
  /**
   * Whether the same operation may succeed if tried again later.
   *
   * @default false
   */
  retryable?: boolean;
  /** The HTTP status that caused the error, if any. */
  status?: number;
  /** The machine-readable error code from the response body, if any. */
  code?: string;
}

/**
 * The base of every error this library raises.
 *
 * @example Telling errors apart
 * ```ts
 * import { SyncError } from "@offline-first/sync";
 * import assert from "node:assert/strict";
 *
 * const error = new SyncError("Cannot sync as the server is down", {
 *   category: "server",
 *   retryable: true,
 *   status: 503,
 * });
 * assert.equal(error.category, "server");
 * assert.equal(error.retryable, true);
 * assert.ok(error instanceof Error);
 * ```
 */
export class SyncError extends Error {
  /** The error's category. */
  readonly category: ErrorCategory;
  /** Whether the same operation may succeed later. */
  readonly retryable: boolean;
  /** The HTTP status behind the error, if any. */
  readonly status: number | undefined;
  /** The machine-readable code from the server's error body, if any. */
  readonly code: string | undefined;

  /**
   * Constructs a new instance.
   *
   * @param message The std-style message: action first, current value last.
   * @param options Category, retryability, status, code and cause.
   */
  constructor(message: string, options: SyncErrorOptions) {
    super(
      message,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = "SyncError";
    this.category = options.category;
    this.retryable = options.retryable ?? false;
    this.status = options.status;
    this.code = options.code;
  }
}

/**
 * The server could not be reached, the connection broke, or a request timed
 * out. Always retryable.
 */
export class NetworkError extends SyncError {
  /**
   * Constructs a new instance.
   *
   * @param message What failed.
   * @param options The underlying cause.
   */
  constructor(message: string, options: ErrorOptions = {}) {
    super(message, { ...options, category: "network", retryable: true });
    this.name = "NetworkError";
  }
}

/**
 * The server refused the credentials, even after one token refresh. Sync
 * pauses in the `auth` state until the app provides a new token; the outbox
 * is kept.
 */
export class AuthError extends SyncError {
  /**
   * Constructs a new instance.
   *
   * @param message What failed.
   * @param options The HTTP status and the cause.
   */
  constructor(
    message: string,
    options: ErrorOptions & { status?: number } = {},
  ) {
    super(message, { ...options, category: "auth", retryable: false });
    this.name = "AuthError";
  }
}

/**
 * The server answered with a status the client may retry (408, 429, 5xx)
 * or with one that needs a whole-call reaction (410). Not retryable when
 * retrying cannot help: code `"redirect"` (a redirect the REST transport
 * refuses to follow, e.g. to another origin) and code `"gone"` (a `410`
 * during a full resync, which breaks the contract).
 */
export class ServerError extends SyncError {
  /** How long the server asked the client to wait, in milliseconds. */
  readonly retryAfterMs: number | undefined;

  /**
   * Constructs a new instance.
   *
   * @param message What failed.
   * @param options Status, code, retry delay and cause.
   */
  constructor(
    message: string,
    options: ErrorOptions & {
      status: number;
      code?: string;
      retryable?: boolean;
      retryAfterMs?: number;
    },
  ) {
    const { retryAfterMs, ...rest } = options;
    super(message, {
      ...rest,
      category: "server",
      retryable: options.retryable ?? true,
    });
    this.name = "ServerError";
    this.retryAfterMs = retryAfterMs;
  }
}

/**
 * The server's pull cursor is older than its tombstone retention (`410
 * Gone`): the client must run a full resync. The outbox is kept.
 */
export class ResyncRequiredError extends SyncError {
  /**
   * Constructs a new instance.
   *
   * @param message What failed.
   * @param options The cause.
   */
  constructor(message: string, options: ErrorOptions = {}) {
    super(message, {
      ...options,
      category: "server",
      retryable: true,
      status: 410,
      code: "gone",
    });
    this.name = "ResyncRequiredError";
  }
}

/**
 * The server definitively refused an operation (400, 403, 413, 422 and other
 * 4xx). Never retried as is: the op is quarantined with this error.
 */
export class RejectedError extends SyncError {
  /** The parsed error body, when the server sent one. */
  readonly body: JsonValue | undefined;

  /**
   * Constructs a new instance.
   *
   * @param message What was refused.
   * @param options Status, code, body and cause.
   */
  constructor(
    message: string,
    options: ErrorOptions & { status: number; code?: string; body?: JsonValue },
  ) {
    const { body, ...rest } = options;
    super(message, { ...rest, category: "rejected", retryable: false });
    this.name = "RejectedError";
    this.body = body;
  }
}

/**
 * A response could not be understood: not JSON, or JSON of the wrong shape.
 * Nothing from it is applied. Retryable when the body looks damaged in
 * transit (cut short, not JSON), which a retry may not repeat.
 */
export class ParseError extends SyncError {
  /**
   * Constructs a new instance.
   *
   * @param message What was malformed.
   * @param options Status, machine-readable code, retryability (default
   * `false`) and cause.
   */
  constructor(
    message: string,
    options: ErrorOptions & {
      status?: number;
      code?: string;
      retryable?: boolean;
    } = {},
  ) {
    super(message, {
      ...options,
      category: "parse",
      retryable: options.retryable ?? false,
    });
    this.name = "ParseError";
  }
}

/** One problem found by a schema, as Standard Schema reports it. */
export interface ValidationIssue {
  /** What is wrong. */
  readonly message: string;
  /** Where, as a list of keys from the record's root. */
  readonly path: readonly PropertyKey[];
}

/**
 * A value broke a rule before anything was done with it: a local write
 * failed its table's schema or the wire contract's limits (an id, the
 * nesting depth), or the transport refused to send an op or a pull that
 * breaks those limits. Nothing was written or sent.
 *
 * @example Reading the issues
 * ```ts
 * import { ValidationError } from "@offline-first/sync";
 * import assert from "node:assert/strict";
 *
 * const error = new ValidationError("Cannot write record as it is invalid", [
 *   { message: "Expected string", path: ["title"] },
 * ]);
 * assert.equal(error.issues[0]?.path[0], "title");
 * ```
 */
export class ValidationError extends SyncError {
  /** Every problem the schema found. */
  readonly issues: readonly ValidationIssue[];

  /**
   * Constructs a new instance.
   *
   * @param message What was invalid.
   * @param issues The schema's issues.
   */
  constructor(message: string, issues: readonly ValidationIssue[]) {
    super(message, { category: "validation", retryable: false });
    this.name = "ValidationError";
    this.issues = issues;
  }
}

/** The local store failed, or refused a write beyond its declared limits. */
export class StorageError extends SyncError {
  /**
   * Constructs a new instance.
   *
   * @param message What failed.
   * @param options Retryability and cause.
   */
  constructor(
    message: string,
    options: ErrorOptions & { retryable?: boolean } = {},
  ) {
    super(message, {
      ...options,
      category: "storage",
      retryable: options.retryable ?? false,
    });
    this.name = "StorageError";
  }
}

/** The object was closed; nothing more can be done with it. */
export class ClosedError extends SyncError {
  /**
   * Constructs a new instance.
   *
   * @param message What was attempted after close.
   */
  constructor(message: string) {
    super(message, { category: "closed", retryable: false });
    this.name = "ClosedError";
  }
}

/**
 * A follower's `sync()` got no answer from the store's syncer in time
 * (ENGINE.md clause 26). The syncer may still run the sync; retryable.
 */
export class SyncRequestTimeoutError extends SyncError {
  /**
   * Constructs a new instance.
   *
   * @param message What was waited for.
   */
  constructor(message: string) {
    super(message, { category: "network", retryable: true });
    this.name = "SyncRequestTimeoutError";
  }
}

/**
 * Wraps anything thrown into a {@linkcode SyncError}, keeping SyncErrors as
 * they are.
 *
 * @param error What was thrown.
 * @param fallback The category to use for a foreign error.
 * @returns A SyncError describing `error`.
 */
export function toSyncError(
  error: unknown,
  fallback: ErrorCategory = "storage",
): SyncError {
  if (error instanceof SyncError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new SyncError(message, { category: fallback, cause: error });
}
