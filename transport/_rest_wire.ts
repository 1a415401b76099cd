/**
 * The wire mapping of the REST transport's answers: a body read as the
 * contract's JSON (or found damaged), a status and body mapped to a typed
 * outcome (a write's {@linkcode PushResult}, a `RejectedError`, a retryable
 * `ServerError`), and the server's clock from its `Date` header.
 *
 * @module
 */

import { describe } from "../src/describe.ts";
import { ParseError, RejectedError, ServerError } from "../src/errors.ts";
import { isJsonObject, type JsonObject, type JsonValue } from "../src/json.ts";
import type { PushOp, PushResult } from "../src/transport.ts";
import type { Received } from "./_rest_fetch.ts";
import { cannot, type Problem } from "./_rest_messages.ts";

/**
 * A 2xx or 409 body as JSON, or why it is damaged: not UTF-8 (a record
 * with U+FFFD in place of its text would be stored as if it were the
 * server's), or not JSON.
 */
export function parseAnswer(
  action: string,
  received: Received,
): JsonValue | ParseError {
  const { status, text } = received;
  const body = parseJson(text);
  if (received.malformed || body === undefined) {
    return damaged(action, {
      status,
      problem: `the response is not ${received.malformed ? "UTF-8" : "JSON"}`,
      value: text,
    });
  }
  return body;
}

/** A 2xx body that must be a JSON object, or why it is damaged. */
export function parseObjectAnswer(
  action: string,
  received: Received,
): JsonObject | ParseError {
  const body = parseAnswer(action, received);
  if (body instanceof ParseError || isJsonObject(body)) return body;
  return damaged(action, {
    status: received.status,
    problem: "the response is not an object",
    value: body,
  });
}

/** What one write's answer says: status, body, the server's clock. */
export interface WriteAnswer {
  /** The HTTP status, or a batch result's. */
  readonly status: number;
  /** The record, the error body, or `null` when empty. */
  readonly body: JsonValue | null;
  /** The server's clock from its `Date` header, if valid. */
  readonly serverDate: number | undefined;
}

/**
 * Maps a final status (not 401) and its body to the op's outcome, or to a
 * retryable `ParseError` when the body cannot be what that status carries:
 * a 2xx record or a 409 `current` that is not an object.
 */
export function toPushResult(
  action: string,
  op: PushOp,
  answer: WriteAnswer,
): PushResult | ParseError {
  const { status, body, serverDate } = answer;
  if (isSuccess(status)) {
    if (body !== null && !isJsonObject(body)) {
      return damaged(action, {
        status,
        problem: "the record is not an object",
        value: body,
      });
    }
    return acknowledged(status, body, serverDate);
  }
  if (status === 404 && op.type === "delete") {
    return acknowledged(status, null, serverDate);
  }
  if (status === 409) return toConflict(action, answer);
  if (isRetryableStatus(status)) {
    const code = codeOf(body);
    return {
      type: "retry",
      error: new ServerError(
        `Cannot ${action} as the server answered with a retryable status: current value is ${status}`,
        { status, ...(code === undefined ? {} : { code }) },
      ),
      retryAfterMs: null,
    };
  }
  return { type: "rejected", error: rejection(action, { status, body }), body };
}

/**
 * An acknowledgement, built without an object spread (one per op of a
 * 1,000-op batch): `serverDate` only when the answer had one.
 */
function acknowledged(
  status: number,
  record: JsonObject | null,
  serverDate: number | undefined,
): PushResult {
  return serverDate === undefined
    ? { type: "ok", status, record }
    : { type: "ok", status, record, serverDate };
}

/**
 * A 409's conflict. An empty body is a conflict without the server's record
 * (the engine then relies on a pull); a body whose record or timestamp is
 * of the wrong type is damaged, never a conflict against nothing.
 */
function toConflict(
  action: string,
  answer: WriteAnswer,
): PushResult | ParseError {
  const { status, body, serverDate } = answer;
  const date = serverDate === undefined ? {} : { serverDate };
  if (body === null) {
    return { type: "conflict", current: null, serverTimestamp: null, ...date };
  }
  if (!isJsonObject(body)) {
    return damaged(action, {
      status,
      problem: "the conflict is not an object",
      value: body,
    });
  }
  const current = body.current ?? body.serverData ?? null;
  if (current !== null && !isJsonObject(current)) {
    return damaged(action, {
      status,
      problem: "'current' is not an object",
      value: current,
    });
  }
  let serverTimestamp = body.serverTimestamp ?? null;
  if (serverTimestamp !== null && typeof serverTimestamp !== "string") {
    return damaged(action, {
      status,
      problem: "'serverTimestamp' is not a string",
      value: serverTimestamp,
    });
  }
  if (serverTimestamp === null && current !== null) {
    // The record's own fields are the engine's to check.
    const own = current.updated_at ?? current.updatedAt;
    if (typeof own === "string") serverTimestamp = own;
  }
  return { type: "conflict", current, serverTimestamp, ...date };
}

/** A damaged answer: retryable, like a lost response. */
export function damaged(
  action: string,
  found: Problem & { readonly status: number },
): ParseError {
  return new ParseError(cannot(action, found), {
    status: found.status,
    retryable: true,
  });
}

/** A final refusal: the status, the server's code and message. */
export function rejection(
  action: string,
  answer: { readonly status: number; readonly body: JsonValue | null },
): RejectedError {
  const { status, body } = answer;
  const code = codeOf(body);
  const detail = isJsonObject(body) && typeof body.message === "string"
    ? body.message
    : code ?? body;
  return new RejectedError(
    `Cannot ${action} as the server rejected it with status ${status}: current value is ${
      describe(detail)
    }`,
    {
      status,
      ...(code === undefined ? {} : { code }),
      ...(body === null ? {} : { body }),
    },
  );
}

/** Whether a status is a 2xx. */
export function isSuccess(status: number): boolean {
  return status >= 200 && status < 300;
}

/** Whether a status may pass later: 408, 429, 5xx. */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || (status >= 500 && status < 600);
}

/** The error code of an error body (`{"error": "…"}`), if it has one. */
export function codeOf(body: JsonValue | null): string | undefined {
  return isJsonObject(body) && typeof body.error === "string"
    ? body.error
    : undefined;
}

/** An error body: its JSON, else its text, else `null` when empty. */
export function bodyOf(text: string): JsonValue | null {
  if (text.trim() === "") return null;
  return parseJson(text) ?? text;
}

/** Parses JSON; `undefined` when the text is not JSON. */
function parseJson(text: string): JsonValue | undefined {
  try {
    return JSON.parse(text) as JsonValue;
  } catch {
    return undefined;
  }
}

/** Whether an id is `.` or `..`, which a URL path cannot carry. */
export function isDotSegment(id: unknown): boolean {
  return id === "." || id === "..";
}

/**
 * The server's clock from the `Date` headers of one transport's answers
 * (ms), when it sent a valid one. The header changes once a second, so the
 * last one parsed is kept.
 */
export class ServerDates {
  #value: string | null = null;
  #ms: number | undefined = undefined;

  /** The clock of one response, or `undefined` without a valid `Date`. */
  of(headers: Headers): number | undefined {
    const value = headers.get("date");
    if (value !== this.#value) {
      this.#value = value;
      this.#ms = parseDate(value);
    }
    return this.#ms;
  }
}

/** A `Date` header in ms, or `undefined` when absent or unreadable. */
function parseDate(value: string | null): number | undefined {
  if (value === null) return undefined;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? undefined : ms;
}
