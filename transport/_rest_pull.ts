/**
 * A pull over REST: the request checked, its page's URL
 * (`GET {base}/{kind}?updatedSince=&afterId=&limit=&includeDeleted=true&pageToken=`),
 * and the answer read strictly into a {@linkcode PullPage}.
 *
 * @module
 */

import { describe } from "../src/describe.ts";
import { ParseError, ResyncRequiredError } from "../src/errors.ts";
import { isJsonObject } from "../src/json.ts";
import { idProblem, kindProblem } from "../src/limits.ts";
import type { PullPage, PullRequest } from "../src/transport.ts";
import type { Received } from "./_rest_fetch.ts";
import { invalid, shorten } from "./_rest_messages.ts";
import { type Call, type Interpret, send } from "./_rest_session.ts";
import {
  bodyOf,
  damaged,
  isDotSegment,
  isSuccess,
  parseObjectAnswer,
  rejection,
} from "./_rest_wire.ts";

/**
 * The longest `updatedSince` or `pageToken` sent in a URL. A token is the
 * server's opaque hint; one this long is not sent, and the engine goes on
 * from its keyset cursor without it.
 */
const MAX_QUERY_VALUE_LENGTH = 4_096;

/** The action of a pull's messages: `pull 'todos'`. */
export function pullAction(request: PullRequest): string {
  const kind = isJsonObject(request) && typeof request.kind === "string"
    ? shorten(request.kind)
    : "";
  return `pull '${kind}'`;
}

/**
 * Pulls one page.
 *
 * @throws {TypeError} When the request is malformed.
 * @throws {RangeError} When its limit is not a positive integer.
 * @throws {ValidationError} When its kind or cursor cannot travel in a URL.
 * @throws {ResyncRequiredError} When the server answers 410.
 * @throws {RejectedError} When the server refuses the pull.
 * @throws {SyncError} What the last try met when the pull gave up.
 */
export async function pullPage(
  call: Call,
  request: PullRequest,
): Promise<PullPage> {
  checkPullRequest(request);
  const outcome = await send(call, {
    action: call.action,
    request: { method: "GET", url: pullUrl(call, request) },
    interpret: pageReader(call, request),
  });
  if ("type" in outcome) throw outcome.error;
  return outcome;
}

function checkPullRequest(request: PullRequest): void {
  function fail(field: string, problem: string, value: unknown): never {
    throw new TypeError(
      `Cannot pull as '${field}' ${problem}: current value is ${
        describe(value)
      }`,
    );
  }
  if (!isJsonObject(request)) fail("request", "is not an object", request);
  if (typeof request.kind !== "string" || request.kind === "") {
    fail("kind", "is not a non-empty string", request.kind);
  }
  for (const field of ["updatedSince", "afterId", "pageToken"] as const) {
    const value = request[field];
    if (value !== null && typeof value !== "string") {
      fail(field, "is not a string or null", value);
    }
  }
  if (!Number.isSafeInteger(request.limit) || request.limit < 1) {
    throw new RangeError(
      `Cannot pull as 'limit' is not a positive integer: current value is ${
        describe(request.limit)
      }`,
    );
  }
}

/**
 * The URL of a pull page.
 *
 * @throws {ValidationError} When the kind or the cursor cannot travel in a
 * URL (the engine moves its cursor past a bad id with `cursorIdAfter`, so
 * a valid cursor is the normal case).
 */
function pullUrl(call: Call, request: PullRequest): string {
  const { action } = call;
  const problem = kindProblem(request.kind);
  if (problem !== null) {
    throw invalid(action, {
      field: "kind",
      problem,
      value: request.kind,
    });
  }
  const { afterId } = request;
  // A query carries `.` and `..` (only a path segment drops them).
  if (afterId !== null && !isDotSegment(afterId)) {
    const problem = idProblem(afterId);
    if (problem !== null) {
      throw invalid(action, {
        field: "afterId",
        problem,
        value: afterId,
      });
    }
  }
  for (const field of ["updatedSince", "pageToken"] as const) {
    const value = request[field];
    if (value !== null && !value.isWellFormed()) {
      throw invalid(action, {
        field,
        problem: "it has a lone surrogate",
        value,
      });
    }
    // Past a few KiB a URL is refused by servers and proxies alike.
    if (value !== null && value.length > MAX_QUERY_VALUE_LENGTH) {
      throw invalid(action, {
        field,
        problem:
          `it is longer than ${MAX_QUERY_VALUE_LENGTH} characters (${value.length})`,
        value,
      });
    }
  }
  const query: string[] = [];
  if (request.updatedSince !== null) {
    query.push(`updatedSince=${encodeURIComponent(request.updatedSince)}`);
  }
  if (afterId !== null) query.push(`afterId=${encodeURIComponent(afterId)}`);
  query.push(`limit=${request.limit}`, "includeDeleted=true");
  if (request.pageToken !== null) {
    query.push(`pageToken=${encodeURIComponent(request.pageToken)}`);
  }
  return `${call.options.base}/${encodeURIComponent(request.kind)}?${
    query.join("&")
  }`;
}

/** How a pull's answer is read: the page, a damaged body, or a thrown refusal. */
function pageReader(call: Call, request: PullRequest): Interpret<PullPage> {
  const { action } = call;
  return (received) => {
    const { status, text } = received;
    if (status === 410) {
      throw new ResyncRequiredError(
        `Cannot ${action} as the cursor is older than the server's tombstone retention: current value is ${
          describe(request.updatedSince)
        }`,
      );
    }
    if (!isSuccess(status)) {
      throw rejection(action, { status, body: bodyOf(text) });
    }
    const page = parsePullPage(action, received);
    if (page instanceof ParseError) return page;
    const serverDate = call.dates.of(received.headers);
    return serverDate === undefined ? page : { ...page, serverDate };
  };
}

/**
 * Parses a pull page. Its items travel raw: checking each one is the
 * engine's job (clause 25), which skips a bad item rather than the page.
 * The optional `total` is kept when it is a whole number no smaller than
 * the page.
 */
function parsePullPage(
  action: string,
  received: Received,
): PullPage | ParseError {
  const body = parseObjectAnswer(action, received);
  if (body instanceof ParseError) return body;
  function fail(problem: string, value: unknown): ParseError {
    return damaged(action, { status: received.status, problem, value });
  }
  const { items, nextPageToken } = body;
  if (!Array.isArray(items)) return fail("'items' is not an array", items);
  if (
    nextPageToken !== undefined && nextPageToken !== null &&
    typeof nextPageToken !== "string"
  ) {
    return fail("'nextPageToken' is not a string or null", nextPageToken);
  }
  const page = { items, nextPageToken: nextPageToken ?? null };
  // Advisory only: a total that is no count, or smaller than the page
  // itself, is ignored rather than failing the page.
  const { total } = body;
  return typeof total === "number" && Number.isSafeInteger(total) &&
      total >= items.length
    ? { ...page, total }
    : page;
}
