/**
 * A push over REST, one request per op: the ops checked
 * ({@linkcode planPush}), then each sent as `PUT`/`DELETE {base}/{kind}/{id}`
 * with its `Idempotency-Key`, up to `concurrency` at once
 * ({@linkcode pushEach}), and each answer mapped to the op's result.
 *
 * @module
 */

import { describe } from "../src/describe.ts";
import { ParseError, type ValidationError } from "../src/errors.ts";
import { isJsonObject, type JsonObject } from "../src/json.ts";
import {
  exceedsDepth,
  idProblem,
  kindProblem,
  WIRE_LIMITS,
} from "../src/limits.ts";
import type { PushOp, PushResult } from "../src/transport.ts";
import { actionOf, invalid } from "./_rest_messages.ts";
import { type Call, send, stopsCall } from "./_rest_session.ts";
import {
  bodyOf,
  isDotSegment,
  isSuccess,
  parseAnswer,
  toPushResult,
} from "./_rest_wire.ts";

/** The ops of one push call still to send, and where their results go. */
export interface PushWork {
  /** Every op of the call. */
  readonly ops: readonly PushOp[];
  /** The indices of the ops to send, in order. */
  readonly indices: readonly number[];
  /** The call's results, by op index: filled in place. */
  readonly results: PushResult[];
}

/**
 * Checks a push's ops and refuses, alone, each op that breaks the
 * contract's limits: it could not be encoded, or the server would refuse it
 * anyway.
 *
 * @returns The ops to send; the refused ones already have their result.
 * @throws {TypeError} When the ops are malformed or two share a key.
 */
export function planPush(ops: readonly PushOp[]): PushWork {
  checkPushOps(ops);
  const results: PushResult[] = new Array(ops.length);
  const indices: number[] = [];
  for (const [index, op] of ops.entries()) {
    const error = opProblem(op);
    if (error === null) indices.push(index);
    else results[index] = { type: "rejected", error, body: null };
  }
  return { ops, indices, results };
}

/**
 * Sends the given ops one request each, up to `concurrency` at once;
 * results land at their op's index, so order never depends on timing.
 */
export async function pushEach(call: Call, work: PushWork): Promise<void> {
  const { ops, indices, results } = work;
  let next = 0;
  let failure: { error: unknown } | null = null;
  const worker = async (): Promise<void> => {
    while (next < indices.length && failure === null) {
      const index = indices[next++]!;
      if (call.stop !== null) {
        results[index] = call.stop;
        continue;
      }
      try {
        const result = await pushOne(call, ops[index]!);
        if (result.type === "retry" && stopsCall(result)) {
          call.stop ??= result;
        }
        results[index] = result;
      } catch (error) {
        // Only whole-call failures throw (AuthError, abort, close): stop
        // the other requests of the call too.
        failure ??= { error };
        call.abort.abort(error);
      }
    }
  };
  const workers = Math.min(call.options.concurrency, indices.length);
  await Promise.all(Array.from({ length: workers }, worker));
  if (failure !== null) throw (failure as { error: unknown }).error;
}

async function pushOne(call: Call, op: PushOp): Promise<PushResult> {
  const action = actionOf(op);
  if (isDotSegment(op.id)) {
    const error = invalid(action, {
      field: "id",
      problem:
        "it is a dot segment, which a URL path cannot carry and only POST /batch can",
      value: op.id,
    });
    return { type: "rejected", error, body: null };
  }
  const headers: Record<string, string> = { "idempotency-key": op.key };
  let body: string | undefined;
  if (op.type === "upsert") {
    body = serializeUpsert(op);
    if (body === undefined) {
      const error = invalid(action, {
        field: "payload",
        problem: "it cannot be serialized as JSON",
        value: op.payload,
      });
      return { type: "rejected", error, body: null };
    }
    headers["content-type"] = "application/json";
    if (op.force) headers["x-force-update"] = "true";
  } else if (op.force) {
    headers["x-force-delete"] = "true";
  }
  const outcome = await send(call, {
    action,
    request: {
      method: op.type === "upsert" ? "PUT" : "DELETE",
      url: recordUrl(call, op),
      headers,
      ...(body === undefined ? {} : { body }),
    },
    interpret: (received) => {
      const { status, text } = received;
      const serverDate = call.dates.of(received.headers);
      // A 2xx means the write was applied, and a 409 carries the record to
      // resolve against: a body that cannot be the contract's (a proxy's or
      // captive portal's page, a cut-off body) is damaged. Re-sending with
      // the same Idempotency-Key is safe: the server answers from its
      // idempotency store without applying the write again.
      const body = (isSuccess(status) || status === 409) && text.trim() !== ""
        ? parseAnswer(action, received)
        : bodyOf(text);
      if (body instanceof ParseError) return body;
      return toPushResult(action, op, { status, body, serverDate });
    },
  });
  if (outcome.type === "refused") {
    return { type: "rejected", error: outcome.error, body: null };
  }
  return outcome;
}

/** The URL of one op's record; only for an op with a valid, non-dot id. */
function recordUrl(call: Call, op: PushOp): string {
  const url = `${call.options.base}/${encodeURIComponent(op.kind)}/${
    encodeURIComponent(op.id)
  }`;
  if (op.type === "delete" && op.baseUpdatedAt !== null && !op.force) {
    return `${url}?_baseUpdatedAt=${encodeURIComponent(op.baseUpdatedAt)}`;
  }
  return url;
}

/** An upsert's PUT body, or `undefined` when it cannot be serialized. */
function serializeUpsert(op: PushOp): string | undefined {
  const payload = op.payload!;
  const base = op.baseUpdatedAt !== null && !op.force ? op.baseUpdatedAt : null;
  try {
    // The common create: the payload is the body, no copy needed.
    if (base === null && !Object.hasOwn(payload, "_baseUpdatedAt")) {
      return JSON.stringify(payload);
    }
    const record: JsonObject = { ...payload };
    delete record._baseUpdatedAt;
    if (base !== null) record._baseUpdatedAt = base;
    return JSON.stringify(record);
  } catch {
    return undefined;
  }
}

/**
 * The fields of a {@linkcode PushOp} that must be non-empty strings. Its
 * kind and id are checked per op instead ({@linkcode opProblem}).
 */
const OP_STRING_FIELDS = ["opId", "key"] as const;

/** What a header value may hold: visible ASCII, one or more characters. */
const VISIBLE_ASCII = /^[\x21-\x7e]+$/;

function checkPushOps(ops: readonly PushOp[]): void {
  function fail(index: number, problem: string, value: unknown): never {
    throw new TypeError(
      `Cannot push op ${index} as ${problem}: current value is ${
        describe(value)
      }`,
    );
  }
  if (!Array.isArray(ops)) {
    throw new TypeError(
      `Cannot push ops as they are not an array: current value is ${
        describe(ops)
      }`,
    );
  }
  const keys = new Set<string>();
  for (const [index, op] of ops.entries()) {
    if (typeof op !== "object" || op === null) {
      fail(index, "it is not an object", op);
    }
    for (const field of OP_STRING_FIELDS) {
      if (typeof op[field] !== "string" || op[field] === "") {
        fail(index, `'${field}' is not a non-empty string`, op[field]);
      }
    }
    // The key travels as a header, which only carries visible ASCII (a
    // ULID, or a ULID with a suffix, always does).
    if (!VISIBLE_ASCII.test(op.key)) {
      fail(index, "'key' is not visible ASCII", op.key);
    }
    if (op.type !== "upsert" && op.type !== "delete") {
      fail(index, '\'type\' is not "upsert" or "delete"', op.type);
    }
    if (op.type === "upsert" && !isJsonObject(op.payload)) {
      fail(index, "an upsert's 'payload' is not an object", op.payload);
    }
    if (op.baseUpdatedAt !== null && typeof op.baseUpdatedAt !== "string") {
      fail(index, "'baseUpdatedAt' is not a string or null", op.baseUpdatedAt);
    }
    if (typeof op.force !== "boolean") {
      fail(index, "'force' is not a boolean", op.force);
    }
    // Two ops with one key would be one write to the server (or a 422
    // idempotency mismatch), and batch results are matched by key.
    if (keys.has(op.key)) fail(index, "its 'key' repeats another op's", op.key);
    keys.add(op.key);
  }
}

/**
 * Why an op cannot be sent, if it cannot: an id or kind that breaks the
 * contract's limits (CONTRACT.md §Limits), a base that no URL can carry, a
 * payload nested too deep to serialize safely. Ids `.` and `..` pass here:
 * they travel in a batch, and only a single request refuses them.
 */
function opProblem(op: PushOp): ValidationError | null {
  const kind = kindProblem(op.kind);
  if (kind !== null) {
    return invalid(actionOf(op), {
      field: "kind",
      problem: kind,
      value: op.kind,
    });
  }
  const id = isDotSegment(op.id) ? null : idProblem(op.id);
  if (id !== null) {
    return invalid(actionOf(op), { field: "id", problem: id, value: op.id });
  }
  if (op.baseUpdatedAt !== null && !op.baseUpdatedAt.isWellFormed()) {
    return invalid(actionOf(op), {
      field: "baseUpdatedAt",
      problem: "it has a lone surrogate",
      value: op.baseUpdatedAt,
    });
  }
  if (op.type === "upsert" && exceedsDepth(op.payload, WIRE_LIMITS.maxDepth)) {
    return invalid(actionOf(op), {
      field: "payload",
      problem: `it nests deeper than ${WIRE_LIMITS.maxDepth} levels`,
      value: op.payload,
    });
  }
  return null;
}
