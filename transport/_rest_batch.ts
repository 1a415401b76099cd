/**
 * A push over REST in batches: whether the server takes them
 * ({@linkcode BatchSupport}, from `GET {base}/health`), and the ops sent as
 * `POST {base}/batch` in chunks of `batchSize` ({@linkcode pushBatches}),
 * each answer matched to its ops by `opId`.
 *
 * @module
 */

import { AuthError, ParseError } from "../src/errors.ts";
import { isJsonObject, type JsonObject, type JsonValue } from "../src/json.ts";
import type { PushOp } from "../src/transport.ts";
import { fetchOnce, type Received } from "./_rest_fetch.ts";
import { actionOf } from "./_rest_messages.ts";
import type { ResolvedOptions } from "./_rest_options.ts";
import { pushEach, type PushWork } from "./_rest_push.ts";
import {
  type Call,
  send,
  stopsCall,
  type TokenSession,
} from "./_rest_session.ts";
import { RequestSignals } from "./_rest_signals.ts";
import {
  bodyOf,
  damaged,
  isSuccess,
  parseObjectAnswer,
  toPushResult,
} from "./_rest_wire.ts";

/**
 * Whether one transport's writes go through `POST {base}/batch`: the
 * `batch` option, or with `"auto"` the health check's answer, asked once
 * when first needed and shared by concurrent calls.
 */
export class BatchSupport {
  readonly #options: ResolvedOptions;
  /** Aborts on close: the health check outlives no transport. */
  readonly #closing: AbortSignal;
  /** The health check's definitive answer, once there is one. */
  #supported: boolean | undefined;
  /** The health check under way, shared by concurrent calls. */
  #health: Promise<boolean> | undefined;

  /** The batch support of a transport that aborts on `closing`. */
  constructor(options: ResolvedOptions, closing: AbortSignal) {
    this.#options = options;
    this.#closing = closing;
  }

  /** Whether the call's writes go in batches. */
  async use(call: Call): Promise<boolean> {
    const mode = this.#options.batch;
    if (mode !== "auto") return mode;
    if (this.#supported !== undefined) return this.#supported;
    this.#health ??= this.#check(call.auth).finally(() => {
      this.#health = undefined;
    });
    return await raceSignal(this.#health, call.signal);
  }

  /**
   * Asks `GET {base}/health` once, without retries: a failure means no batch
   * for now, and the next call asks again. Never rejects.
   */
  async #check(auth: TokenSession): Promise<boolean> {
    const requests = new RequestSignals(this.#closing, this.#options.timeoutMs);
    try {
      const token = await auth.token();
      const outcome = await fetchOnce(this.#options, {
        action: "check the server's health",
        request: { method: "GET", url: `${this.#options.base}/health` },
        token,
        requests,
      });
      if (outcome.type !== "response" || !isSuccess(outcome.status)) {
        return false;
      }
      const body = bodyOf(outcome.text);
      if (!isJsonObject(body)) return false;
      this.#supported = body.batch === true;
      return this.#supported;
    } catch {
      return false;
    } finally {
      requests.close();
    }
  }
}

/** Sends the ops in chunks of `batchSize`, one chunk after the other. */
export async function pushBatches(call: Call, work: PushWork): Promise<void> {
  const { indices, results } = work;
  const size = call.options.batchSize;
  for (let start = 0; start < indices.length; start += size) {
    const chunk = indices.slice(start, start + size);
    if (call.stop !== null) {
      for (const index of chunk) results[index] = call.stop;
      continue;
    }
    await pushChunk(call, { ...work, indices: chunk });
  }
}

/** Sends one chunk, `work.indices`, as one `POST {base}/batch`. */
async function pushChunk(call: Call, work: PushWork): Promise<void> {
  const { ops, indices, results } = work;
  const chunk = indices.map((index) => ops[index]!);
  const action = `push a batch of ${chunk.length} ops`;
  let body: string;
  try {
    body = JSON.stringify({ ops: chunk.map(toWireOp) });
  } catch {
    // One payload cannot be serialized: one by one, it alone is refused.
    await pushEach(call, work);
    return;
  }
  const outcome = await send(call, {
    action,
    request: {
      method: "POST",
      url: `${call.options.base}/batch`,
      headers: { "content-type": "application/json" },
      body,
    },
    interpret: (received) =>
      isSuccess(received.status)
        ? parseBatchResults(received, { action, chunk })
        : { type: "refused" as const },
  });
  if (outcome.type === "retry") {
    if (stopsCall(outcome)) call.stop ??= outcome;
    for (const index of indices) results[index] = outcome;
    return;
  }
  if (outcome.type === "refused") {
    // A refused batch applied nothing (contract), so sending its ops one
    // by one is safe: 413 is the case the contract names; any other
    // refusal (404/405 from a server without batch support, 400/403/422)
    // is better reported per op than by quarantining every op at once.
    // An answer over `maxResponseBytes` lands here too: one by one, each
    // op's answer is smaller, and its idempotency key makes the server
    // answer from its store without applying the op again.
    await pushEach(call, work);
    return;
  }
  const serverDate = call.dates.of(outcome.headers);
  outcome.results.forEach((result, position) => {
    const op = chunk[position]!;
    if (!(result instanceof ParseError) && result.status === 401) {
      throw new AuthError(
        `Cannot ${
          actionOf(op)
        } as the server refused the credentials: current value is 401`,
        { status: 401 },
      );
    }
    const value = result instanceof ParseError
      ? result
      : toPushResult(actionOf(op), op, {
        status: result.status,
        body: result.body,
        serverDate,
      });
    // One damaged result is that op's alone: the others were answered.
    results[indices[position]!] = value instanceof ParseError
      ? { type: "retry", error: value, retryAfterMs: null }
      : value;
  });
}

/** A batch answer whose shape holds: one result (or damage) per op. */
interface BatchAnswer {
  readonly type: "results";
  readonly headers: Headers;
  readonly results: readonly (BatchResult | ParseError)[];
}

/** One result of a batch response: its status and body (record or error). */
interface BatchResult {
  readonly status: number;
  readonly body: JsonValue | null;
}

/** An op as `POST {base}/batch` carries it. */
function toWireOp(op: PushOp): JsonObject {
  const wire: JsonObject = {
    opId: op.key,
    kind: op.kind,
    id: op.id,
    type: op.type,
  };
  if (op.type === "upsert" && op.payload !== null) wire.payload = op.payload;
  if (op.baseUpdatedAt !== null && !op.force) {
    wire.baseUpdatedAt = op.baseUpdatedAt;
  }
  if (op.force) wire.force = true;
  return wire;
}

/**
 * Validates a batch response and orders its results like `chunk` (matched by
 * `opId`, one result per op). A broken shape damages the whole answer; a
 * broken result (status, record, conflict) damages only its op.
 */
function parseBatchResults(
  received: Received,
  sent: { readonly action: string; readonly chunk: readonly PushOp[] },
): BatchAnswer | ParseError {
  const { action, chunk } = sent;
  const body = parseObjectAnswer(action, received);
  if (body instanceof ParseError) return body;
  const { status } = received;
  function fail(problem: string, value: unknown): ParseError {
    return damaged(action, { status, problem, value });
  }
  const list = body.results;
  if (!Array.isArray(list)) return fail("'results' is not an array", list);
  if (list.length !== chunk.length) {
    return fail(
      `'results' does not hold one result per op (${chunk.length})`,
      list.length,
    );
  }
  const positions = new Map<string, number>();
  chunk.forEach((op, position) => positions.set(op.key, position));
  const ordered: (BatchResult | ParseError | undefined)[] = new Array(
    chunk.length,
  );
  for (const [i, result] of list.entries()) {
    if (!isJsonObject(result)) {
      return fail(`result ${i} is not an object`, result);
    }
    const position = typeof result.opId === "string"
      ? positions.get(result.opId)
      : undefined;
    if (position === undefined) {
      return fail(`result ${i} has an unknown 'opId'`, result.opId);
    }
    if (ordered[position] !== undefined) {
      return fail(`result ${i} repeats an 'opId'`, result.opId);
    }
    const code = result.status;
    // A batch result carries a final status: no 1xx, no redirect.
    if (
      typeof code !== "number" || !Number.isInteger(code) || code < 200 ||
      code > 599 || (code >= 300 && code < 400)
    ) {
      ordered[position] = damaged(actionOf(chunk[position]!), {
        status,
        problem: "its batch result has no valid 'status'",
        value: code,
      });
      continue;
    }
    const body = isSuccess(code) ? result.record : result.error;
    ordered[position] = { status: code, body: body ?? null };
  }
  return {
    type: "results",
    headers: received.headers,
    results: ordered as (BatchResult | ParseError)[],
  };
}

/** The promise's outcome, or the signal's reason once it aborts. */
function raceSignal<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    function onAbort(): void {
      reject(signal.reason);
    }
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (error) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}
