/**
 * The kit's `/health` and limit checks (CONTRACT.md §Limits, §Health): the
 * health body's shape, and each stated limit holding at its edge (the
 * largest passes, one more is refused with the contract's status and code,
 * before any data is touched). Private.
 *
 * @module
 */

import {
  type BackendCheck,
  byId,
  type CheckContext,
  expect,
  expectError,
  expectStatus,
  isObject,
  pullAll,
  put,
  recordPath,
  show,
} from "./_backend_http.ts";

/** The contract's default limits, used where `/health` states none. */
export const CONTRACT_LIMITS: Readonly<Record<string, number>> = {
  maxIdLength: 256,
  maxKindLength: 64,
  maxDepth: 64,
  maxRecordBytes: 1_048_576,
  maxBatchOps: 1000,
  maxBatchBytes: 8_388_608,
  maxIdempotencyKeyLength: 255,
};

const health: BackendCheck = {
  name: "health",
  rule:
    'GET /health is 200 {"status": "ok", "batch": boolean, "live": boolean, "contract": 1, "limits": {...}}',
  async run(context) {
    const answer = await context.call("GET", "/health", { as: null });
    expectStatus(answer, [200], "read GET /health without credentials");
    const body = answer.json;
    expect(
      isObject(body) && body.status === "ok" && body.contract === 1 &&
        typeof body.batch === "boolean" && typeof body.live === "boolean" &&
        isObject(body.limits),
      `Cannot read GET /health as the contract's body has status "ok", contract 1, batch, live and limits: current value is ${
        show(answer)
      }`,
    );
    return `batch ${body.batch}, live ${body.live}`;
  },
};

/** A record body nesting `levels` deep, counting the record itself. */
function nested(levels: number): Record<string, unknown> {
  let value: unknown = 0;
  for (let level = 1; level < levels; level++) value = [value];
  return { deep: value };
}

/** A PUT with explicit headers and a raw path. */
function rawPut(
  context: CheckContext,
  path: string,
  body: unknown,
  key?: string,
): ReturnType<CheckContext["call"]> {
  return context.call("PUT", path, {
    body,
    headers: { "idempotency-key": key ?? context.key() },
  });
}

const limits: BackendCheck = {
  name: "limits",
  rule:
    "ids, kinds, depth, body size, batch size and idempotency keys at the limit pass; past it the contract's 4xx, nothing stored",
  async run(context) {
    const limit = (name: string): number =>
      context.health.limits[name] ?? CONTRACT_LIMITS[name]!;
    const kind = context.kind("limits");
    const longest = "i".repeat(limit("maxIdLength"));
    expectStatus(
      await put(context, kind, longest),
      [201],
      `create a record whose id has ${limit("maxIdLength")} characters`,
    );
    const tooLong = "j".repeat(limit("maxIdLength") + 1);
    expectError(
      await put(context, kind, tooLong),
      400,
      "invalid_id",
      `create a record whose id has ${limit("maxIdLength") + 1} characters`,
    );
    // A lone surrogate cannot be percent-encoded as UTF-8: its bytes are
    // sent raw, as a buggy client would.
    expectError(
      await rawPut(context, `/${kind}/%ED%A0%80`, {}),
      400,
      "invalid_id",
      "create a record whose id is a lone surrogate (%ED%A0%80)",
    );
    const longestKind = "k".repeat(limit("maxKindLength"));
    const tooLongKind = "k".repeat(limit("maxKindLength") + 1);
    // The longest kind is shared between runs: its id is this run's.
    expectStatus(
      await put(context, longestKind, kind),
      [200, 201],
      `create a record whose kind has ${limit("maxKindLength")} characters`,
    );
    for (
      const bad of [tooLongKind, "bad kind!", "health", "batch", "live"]
    ) {
      expectError(
        await rawPut(context, recordPath(bad, "x"), { id: "x" }),
        400,
        "invalid_kind",
        `create a record of kind ${JSON.stringify(bad)}`,
      );
    }
    expectError(
      await context.call("GET", `/${encodeURIComponent("bad kind!")}`),
      400,
      "invalid_kind",
      'pull the kind "bad kind!"',
    );
    expectStatus(
      await put(context, kind, "deepest", nested(limit("maxDepth"))),
      [201],
      `create a record nesting ${limit("maxDepth")} levels`,
    );
    expectError(
      await put(context, kind, "too-deep", nested(limit("maxDepth") + 1)),
      400,
      "too_deep",
      `create a record nesting ${limit("maxDepth") + 1} levels`,
    );
    const padding = "x".repeat(limit("maxRecordBytes") + 1);
    const large = await put(context, kind, "too-large", { padding });
    expectError(
      large,
      413,
      null,
      `create a record of more than ${limit("maxRecordBytes")} bytes`,
    );
    const ops = Array.from(
      { length: limit("maxBatchOps") + 1 },
      (_, index) => ({
        opId: `${context.key()}-op`,
        kind,
        id: `batch-${index}`,
        type: "upsert",
        payload: { n: index },
      }),
    );
    if (context.health.batch) {
      expectError(
        await context.call("POST", "/batch", { body: { ops } }),
        413,
        "batch_too_large",
        `apply a batch of ${ops.length} ops`,
      );
    }
    const keyLength = limit("maxIdempotencyKeyLength");
    expectStatus(
      await rawPut(
        context,
        recordPath(kind, "longest-key"),
        {},
        `${context.key()}-`.padEnd(keyLength, "k"),
      ),
      [201],
      `create a record with an Idempotency-Key of ${keyLength} characters`,
    );
    for (const key of ["k".repeat(keyLength + 1), "has space"]) {
      expectError(
        await rawPut(context, recordPath(kind, "bad-key"), {}, key),
        400,
        "invalid_idempotency_key",
        `create a record with the Idempotency-Key ${
          JSON.stringify(key.length > 20 ? `${key.slice(0, 8)}…` : key)
        } (${key.length} characters)`,
      );
    }
    const stored = byId((await pullAll(context, kind)).items);
    const wanted = [longest, "deepest", "longest-key"];
    expect(
      stored.size === wanted.length && wanted.every((id) => stored.has(id)),
      `Cannot refuse a write over a limit before touching data: current value is ${
        JSON.stringify(
          [...stored.keys()].map((id) =>
            id.length > 20 ? `${id.slice(0, 8)}…` : id
          ),
        )
      }, wanted only the writes at the limit`,
    );
  },
};

/** The health and limit checks, in order. */
export const LIMIT_CHECKS: readonly BackendCheck[] = [health, limits];
