/**
 * The reference server's answers before they become a `Response`: the
 * {@linkcode Reply} shape, the error replies the handler, the pull and the
 * writes share, and {@linkcode RefusedError}, which carries a reply out of
 * the write lock.
 *
 * @module
 */

import type { JsonValue } from "../src/json.ts";
import { describe } from "../src/describe.ts";
import type { Refusal } from "./_limits.ts";
import type { ServerRecord } from "./store.ts";

/** A response before it becomes a `Response`. */
export interface Reply {
  /** The HTTP status. */
  readonly status: number;
  /** The JSON body. */
  readonly body: JsonValue;
  /** Headers besides the ones every response carries. */
  readonly headers?: Readonly<Record<string, string>>;
  /** The body already serialised (a pull page), sent instead of `body`. */
  readonly text?: string;
  /** An event stream (`GET /live`), sent instead of `body`. */
  readonly stream?: ReadableStream<Uint8Array>;
}

/** The outcome of one write, single or in a batch. */
export interface Outcome extends Reply {
  /** Whether it was answered from the idempotency store. */
  readonly replayed: boolean;
}

/** A whole request refused from deep inside, such as a `429` under the lock. */
export class RefusedError extends Error {
  /** The answer to the request. */
  readonly reply: Reply;

  /**
   * Wraps a reply.
   *
   * @param reply The answer to the request.
   */
  constructor(reply: Reply) {
    super("Cannot answer request as it was refused");
    this.name = "RefusedError";
    this.reply = reply;
  }
}

/**
 * A JSON error reply, `{"error": code, "message": text}`.
 *
 * @param status The HTTP status.
 * @param error The error code.
 * @param message The std-style message.
 * @returns The reply.
 */
export function failure(status: number, error: string, message: string): Reply {
  return { status, body: { error, message } };
}

/**
 * The reply of a limit's refusal.
 *
 * @param refusal The refusal.
 * @returns The reply.
 */
export function refusal({ status, error, message }: Refusal): Reply {
  return failure(status, error, message);
}

/**
 * The reply of a request that came after close.
 *
 * @returns `503 closed`.
 */
export function closedReply(): Reply {
  return failure(
    503,
    "closed",
    "Cannot answer request as the server is closed",
  );
}

/**
 * The reply of a path no route matches.
 *
 * @param request The request.
 * @returns `404 not_found`.
 */
export function notFound(request: Request): Reply {
  return failure(
    404,
    "not_found",
    `Cannot route request as no route matches its path: current value is ${
      describe(new URL(request.url).pathname)
    }`,
  );
}

/**
 * The reply of a method the route does not serve.
 *
 * @param method The request's method.
 * @param allow The methods the route serves, for `Allow`.
 * @returns `405 method_not_allowed` with `Allow`.
 */
export function methodNotAllowed(method: string, allow: string): Reply {
  return {
    ...failure(
      405,
      "method_not_allowed",
      `Cannot route request as the path allows ${allow} only: current value is ${
        JSON.stringify(method)
      }`,
    ),
    headers: { allow },
  };
}

/**
 * The reply of a body over the limit.
 *
 * @param max The limit, in bytes.
 * @returns `413 payload_too_large`.
 */
export function tooLarge(max: number): Reply {
  return failure(
    413,
    "payload_too_large",
    `Cannot read request body as it exceeds ${max} bytes`,
  );
}

/**
 * The reply of a malformed `_baseUpdatedAt`.
 *
 * @param value The base as sent.
 * @returns `400 invalid_timestamp`.
 */
export function invalidBase(value: JsonValue | undefined): Reply {
  return failure(
    400,
    "invalid_timestamp",
    `Cannot check version as '_baseUpdatedAt' is not an ISO-8601 timestamp with a timezone: current value is ${
      describe(value)
    }`,
  );
}

/**
 * The reply of a version check that failed: the current record with its
 * timestamp.
 *
 * @param current The stored record.
 * @param action `"update"` or `"delete"`.
 * @returns `409 conflict`.
 */
export function conflict(current: ServerRecord, action: string): Reply {
  const stamp = current.data.updated_at ??
    new Date(current.updatedAt).toISOString();
  return {
    status: 409,
    body: {
      error: "conflict",
      message: current.deletedAt !== null
        ? `Cannot ${action} record as it was deleted: current value is ${
          JSON.stringify(stamp)
        }`
        : `Cannot ${action} record as its base is stale: current value is ${
          JSON.stringify(stamp)
        }`,
      current: current.data,
      serverTimestamp: stamp,
    },
  };
}
