import { describe } from "../src/describe.ts";
/**
 * The reference server's `POST /batch`: every op checked and hashed first
 * (nothing applied when the batch as a whole is refused), then applied in
 * slices of at most 250 ops / ~1 MiB, each one store commit, with a turn of
 * the event loop between slices so that other principals' requests run.
 *
 * @module
 */

import { isJsonObject, type JsonObject, type JsonValue } from "../src/json.ts";
import type { ServerCore } from "./_core.ts";
import { canonicalBody, fingerprintOf } from "./_fingerprint.ts";
import { idRefusal, keyRefusal, kindRefusal, utf8Length } from "./_limits.ts";
import { failure, invalidBase, refusal, type Reply } from "./_reply.ts";
import {
  type BodyInput,
  readBody,
  withinDepth,
  type WriteCall,
} from "./_wire.ts";
import { applyWrite } from "./_write.ts";

/** Where a batch goes: the principal, and the request with its ops. */
export interface BatchRoute {
  /** The principal. */
  readonly namespace: string;
  /** The request. */
  readonly request: Request;
}

/**
 * Answers a batch with one result per op.
 *
 * @param core The server.
 * @param route The principal and the request.
 * @returns `200` with the results, or the refusal of the whole batch
 * (`400`, `413`), which applies nothing.
 */
export async function batchRequest(
  core: ServerCore,
  route: BatchRoute,
): Promise<Reply> {
  const { namespace, request } = route;
  const { maxBatchBytes, maxBatchOps } = core.options;
  const body = await readBody(request, maxBatchBytes);
  if (body.type === "too_large") {
    return failure(
      413,
      "batch_too_large",
      `Cannot apply batch as its body exceeds ${maxBatchBytes} bytes`,
    );
  }
  const ops = body.type === "json" && isJsonObject(body.value)
    ? body.value.ops
    : undefined;
  if (!Array.isArray(ops)) {
    return failure(
      400,
      "invalid_body",
      `Cannot apply batch as the body is not {"ops": [...]}: current value is ${
        describe(
          body.type === "json"
            ? body.value
            : body.type === "text"
            ? body.text
            : null,
        )
      }`,
    );
  }
  if (ops.length > maxBatchOps) {
    return failure(
      413,
      "batch_too_large",
      `Cannot apply batch as it holds more than ${maxBatchOps} ops: current value is ${ops.length}`,
    );
  }
  const calls: {
    opId: string;
    call: WriteCall | Reply;
    fingerprint: string;
  }[] = [];
  const turns = new Turns();
  for (const [index, op] of ops.entries()) {
    // Checking and hashing are synchronous: let other requests run
    // between slices of them too.
    if (index > 0 && index % SLICE_OPS === 0) await turns.next();
    const opId = isJsonObject(op) ? op.opId : undefined;
    if (!isJsonObject(op) || typeof opId !== "string") {
      return failure(
        400,
        "invalid_body",
        `Cannot apply batch as op ${index} has no string 'opId': current value is ${
          describe(op)
        }`,
      );
    }
    const badKey = keyRefusal(opId, `apply batch op ${index}`);
    if (badKey !== null) return refusal(badKey);
    const { call, canonical } = batchCall(op, opId, core.options.maxBodyBytes);
    // Hashed before the write lock, as for a single write.
    const fingerprint = "method" in call ? fingerprintOf(call, canonical) : "";
    calls.push({ opId, call, fingerprint });
  }
  // The answer echoes records: 1,000 deletes of 1 MiB records would
  // answer a GiB. Past the budget, ops are answered 503 unapplied (never
  // stored), which the client re-sends with the same keys.
  const budget = 2 * maxBatchBytes;
  // Each result as JSON text, in order: a record's text is the one its
  // write staged (the store writes the same text), never made twice.
  const results: string[] = [];
  let spent = 0;
  for (const slice of slices(calls)) {
    // Each slice is one store commit; between two, other principals'
    // requests run: a synchronous store (SQLite) would otherwise hold
    // the whole process for the whole batch.
    if (results.length > 0) await turns.next();
    // The slice's results count once it committed: a failure before
    // leaves its ops unapplied.
    let done: string[] = [];
    const spentBefore = spent;
    try {
      await core.inScope(namespace, async (scope) => {
        // Re-run from scratch when a shared store's commit lost a race.
        done = [];
        spent = spentBefore;
        const writes: WriteCall[] = [];
        for (const { call } of slice) if ("method" in call) writes.push(call);
        await scope.prefetch(namespace, writes);
        for (const { opId, call, fingerprint } of slice) {
          if (spent > budget) {
            done.push(
              resultText(opId, 503, JSON.stringify(answerFull(budget))),
            );
            continue;
          }
          const outcome = "method" in call
            ? await applyWrite(core, { namespace, scope, call, fingerprint })
            : { ...call, replayed: false };
          const body = scope.textOf(outcome.body);
          spent += body?.length ?? 0;
          done.push(resultText(opId, outcome.status, body, outcome.replayed));
        }
      });
      results.push(...done);
    } catch (error) {
      // A failure of the first slice fails the batch (nothing applied);
      // later, the slices before it stand, so only the ops not applied
      // get it, each as its own result (a 429, a 5xx: retried by the
      // client under the same keys).
      if (results.length === 0) throw error;
      const { status, body } = core.failureReply(error);
      const text = JSON.stringify(body);
      for (const { opId } of calls.slice(results.length)) {
        results.push(resultText(opId, status, text));
      }
      break;
    }
  }
  return {
    status: 200,
    body: null,
    text: `{"results":[${results.join(",")}]}`,
  };
}

/**
 * One op's result as JSON text: `{"opId", "status", "record" | "error",
 * "replayed"?}` (a `2xx` carries `record`, any other status `error`).
 */
function resultText(
  opId: string,
  status: number,
  body: string | undefined,
  replayed = false,
): string {
  let text = `{"opId":${JSON.stringify(opId)},"status":${status}`;
  if (body !== undefined) {
    text += status >= 200 && status < 300
      ? `,"record":${body}`
      : `,"error":${body}`;
  }
  return replayed ? `${text},"replayed":true}` : `${text}}`;
}

/**
 * The most ops, and about the most payload bytes, of one batch slice. An
 * SQLite file commit costs about 1.3 ms whatever it holds (the WAL's
 * sync): 250 ops keep it near 5 µs per op while a slice of ~300-byte
 * records holds the event loop for about as long as `HOLD_MS`.
 */
const SLICE_OPS = 250;
const SLICE_BYTES = 1_048_576;

/** A batch's calls cut into slices of at most SLICE_OPS ops and ~SLICE_BYTES. */
function* slices<T extends { call: WriteCall | Reply }>(
  calls: readonly T[],
): Generator<T[]> {
  let slice: T[] = [];
  let bytes = 0;
  for (const entry of calls) {
    const { call } = entry;
    const size = "method" in call && call.method === "PUT" &&
        call.body.type === "json"
      ? call.body.size ?? 0
      : 0;
    if (
      slice.length === SLICE_OPS ||
      (slice.length > 0 && bytes + size > SLICE_BYTES)
    ) {
      yield slice;
      slice = [];
      bytes = 0;
    }
    slice.push(entry);
    bytes += size;
  }
  if (slice.length > 0) yield slice;
}

/**
 * The longest a batch holds the event loop (ms) before it lets I/O in.
 * Between two slices a batch always lets queued callbacks run
 * (`setImmediate`, some µs), but only a timer lets the event loop poll the
 * sockets, and a `setTimeout(0)` costs 1 to 4 ms of idle: one per slice
 * made a 500-op batch on the memory store spend most of its time asleep.
 * So a batch sleeps once per `HOLD_MS` of work; another principal's request
 * waits about that long, plus one slice.
 */
export const HOLD_MS = 10;

/** Lets other work run between slices: queued callbacks always, I/O often. */
export class Turns {
  readonly #now: () => number;
  #since: number;

  /**
   * Starts the budget now.
   *
   * @param now The clock, in ms (`performance.now` unless a test's).
   */
  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
    this.#since = now();
  }

  /**
   * Resolves after the event loop served what else was waiting: queued
   * callbacks, and I/O once `HOLD_MS` passed since the last sleep.
   */
  async next(): Promise<void> {
    if (this.#now() - this.#since < HOLD_MS) {
      await new Promise((resolve) => setImmediate(resolve));
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 0));
    this.#since = this.#now();
  }
}

/** The error of a batch op left unapplied because the answer is full. */
function answerFull(budget: number): JsonObject {
  return {
    error: "batch_answer_full",
    message:
      `Cannot apply op as the batch's answer already holds about ${budget} bytes of records: send it again`,
  };
}

/**
 * Turns one batch op into the single request it stands for, or the `400`
 * that op gets on its own (not stored: it names no request), with the
 * canonical JSON of a JSON PUT body (`canonicalBody()`), which measured it.
 */
function batchCall(
  op: JsonObject,
  opId: string,
  maxRecordBytes: number,
): { call: WriteCall | Reply; canonical?: string } {
  const { kind, id, type, payload, baseUpdatedAt, force } = op;
  if (
    typeof kind !== "string" || typeof id !== "string" ||
    (type !== "upsert" && type !== "delete") ||
    (force !== undefined && typeof force !== "boolean")
  ) {
    return {
      call: failure(
        400,
        "invalid_op",
        `Cannot apply op as it needs a string kind and id, a type of "upsert" or "delete" and a boolean force: current value is ${
          describe(op)
        }`,
      ),
    };
  }
  const action = type === "upsert" ? "store record" : "delete record";
  const refused = kindRefusal(kind, action) ?? idRefusal(id, action);
  if (refused !== null) return { call: refusal(refused) };
  const base = baseUpdatedAt ?? null;
  if (type === "delete") {
    // A single DELETE carries its base in the query: a string or nothing.
    if (base !== null && typeof base !== "string") {
      return { call: invalidBase(base) };
    }
    return {
      call: {
        method: "DELETE",
        kind,
        id,
        key: opId,
        force: force === true,
        base,
        extra: [],
      },
    };
  }
  // The body a single PUT would carry: the payload plus its base.
  const value = isJsonObject(payload) && base !== null
    ? { ...payload, _baseUpdatedAt: base }
    : payload ?? null;
  const { body, canonical } = withinLimits(value, maxRecordBytes);
  return {
    call: {
      method: "PUT",
      kind,
      id,
      key: opId,
      force: force === true,
      body,
      extra: [],
    },
    ...(canonical === undefined ? {} : { canonical }),
  };
}

/**
 * A batch op's body as a single PUT of it would read: limits first. Its
 * size is `JSON.stringify(value)`'s, counted from its canonical JSON (the
 * same text but for key order and a top-level `_baseUpdatedAt`), which the
 * fingerprint then reuses.
 */
function withinLimits(
  value: JsonValue,
  maxBytes: number,
): { body: BodyInput; canonical?: string } {
  const body = withinDepth({ type: "json", value });
  if (body.type !== "json") return { body };
  const canonical = canonicalBody(value);
  // The member the canonical text leaves out: `"_baseUpdatedAt":…`.
  const base = isJsonObject(value) && Object.hasOwn(value, "_baseUpdatedAt")
    ? `${canonical === "{}" ? "" : ","}"_baseUpdatedAt":${
      JSON.stringify(value._baseUpdatedAt)
    }`
    : "";
  const length = canonical.length + base.length;
  // Every UTF-16 unit is at most 3 UTF-8 bytes: most bodies skip the count.
  return length * 3 > maxBytes &&
      utf8Length(canonical) + utf8Length(base) > maxBytes
    ? { body: { type: "too_large" } }
    : { body: { type: "json", value, size: length }, canonical };
}
