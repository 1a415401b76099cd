/**
 * The REST transport against ops and pulls that break the contract's limits
 * (issue 9, items 1 and 12): such an op is refused alone as a
 * `ValidationError` and the others go on; such a pull sends nothing.
 */

import assert from "node:assert/strict";
import { ValidationError } from "../src/errors.ts";
import type { PullRequest, PushOp, PushResult } from "../src/transport.ts";
import type { JsonObject } from "../src/json.ts";
import {
  json,
  type RecordedRequest,
  startScriptedServer,
} from "./_scripted_server.ts";
import {
  connect,
  idOf,
  opsOf,
  pullRequest as firstPull,
  record,
  T1,
  // These cases send ops with hostile ids: their keys must be visible
  // ASCII whatever the id.
  upsertAnyId as upsert,
} from "./_rest_fixtures.ts";

/** A value nested `depth` objects deep, the outer one included. */
function nested(depth: number): JsonObject {
  let value: JsonObject = { leaf: true };
  for (let i = 1; i < depth; i++) value = { child: value };
  return value;
}

function assertInvalid(
  result: PushResult | undefined,
  field: string,
  name: string,
): void {
  assert.equal(result?.type, "rejected", name);
  if (result?.type !== "rejected") return;
  assert.ok(result.error instanceof ValidationError, name);
  assert.equal(result.error.retryable, false, name);
  assert.deepEqual(result.error.issues[0]?.path, [field], name);
  assert.match(
    result.error.message,
    new RegExp(
      `^Cannot push the (upsert|delete) of '.*' as '${field}' is invalid \\(.+\\): current value is `,
    ),
    name,
  );
  assert.equal(result.body, null, name);
}

/** Ops that break the limits, each with the field it breaks. */
function hostileOps(): [PushOp, string][] {
  return [
    [upsert("\ud800lone"), "id"],
    [upsert("x".repeat(70_000)), "id"],
    [upsert("😀".repeat(257)), "id"],
    [upsert(""), "id"],
    [upsert("bad-kind", { kind: "to do" }), "kind"],
    [upsert("reserved-kind", { kind: "batch" }), "kind"],
    [upsert("deep", { payload: nested(65) }), "payload"],
    [
      upsert("bad-base", {
        type: "delete",
        payload: null,
        baseUpdatedAt: "2025\udc00",
      }),
      "baseUpdatedAt",
    ],
  ];
}

Deno.test("rest: push() without batching refuses each op that breaks the limits alone, and sends the others", async () => {
  await using server = startScriptedServer((request) =>
    json(record(idOf(request)), 201)
  );
  await using transport = connect(server, { concurrency: 1 });
  const hostile = hostileOps();
  const longest = "😀".repeat(256);
  const ops = [
    upsert("a"),
    ...hostile.map(([op]) => op),
    upsert(longest),
    upsert("b", { payload: nested(64) }),
  ];
  const results = await transport.push(ops);
  assert.equal(results.length, ops.length);
  assert.equal(results[0]?.type, "ok");
  hostile.forEach(([op, field], i) =>
    assertInvalid(results[i + 1], field, op.id.slice(0, 20))
  );
  assert.equal(results.at(-2)?.type, "ok");
  assert.equal(results.at(-1)?.type, "ok");
  assert.deepEqual(server.requests.map(idOf), ["a", longest, "b"]);
});

Deno.test("rest: push() with batching refuses each op that breaks the limits alone, and batches the others", async () => {
  await using server = startScriptedServer((request) =>
    json({
      results: opsOf(request).map((op) => ({
        opId: op.opId,
        status: 201,
        record: record(String(op.id)),
      })),
    })
  );
  await using transport = connect(server, { batch: true });
  const hostile = hostileOps();
  const ops = [upsert("a"), ...hostile.map(([op]) => op), upsert("b")];
  const results = await transport.push(ops);
  assert.equal(results[0]?.type, "ok");
  hostile.forEach(([op, field], i) =>
    assertInvalid(results[i + 1], field, op.id.slice(0, 20))
  );
  assert.equal(results.at(-1)?.type, "ok");
  assert.deepEqual(server.requests.map((r) => r.path), ["/batch"]);
  assert.deepEqual(opsOf(server.requests[0]!).map((op) => op.id), ["a", "b"]);
});

Deno.test("rest: push() sends ids '.' and '..' through /batch, and refuses them alone without it", async () => {
  const batched = startScriptedServer((request) =>
    request.path === "/health" ? json({ status: "ok", batch: true }) : json({
      results: opsOf(request).map((op) => ({
        opId: op.opId,
        status: 201,
        record: record(String(op.id)),
      })),
    })
  );
  const single = startScriptedServer((request) =>
    request.path === "/health"
      ? json({ status: "ok", batch: false })
      : json(record(idOf(request)), 201)
  );
  try {
    const ops = [upsert("."), upsert("a"), upsert("..", { key: "k2" })];
    await using viaBatch = connect(batched, { batch: "auto" });
    const results = await viaBatch.push(ops);
    assert.deepEqual(results.map((result) => result.type), ["ok", "ok", "ok"]);
    assert.deepEqual(opsOf(batched.requests[1]!).map((op) => op.id), [
      ".",
      "a",
      "..",
    ]);

    await using viaSingle = connect(single, { batch: "auto" });
    const alone = await viaSingle.push(ops);
    assertInvalid(alone[0], "id", ".");
    assert.equal(alone[1]?.type, "ok");
    assertInvalid(alone[2], "id", "..");
    assert.match(
      (alone[2] as { error: Error }).error.message,
      /dot segment.+current value is "\.\."$/,
    );
    // Only "a" travelled as a single request.
    assert.deepEqual(
      single.requests.map((request) => `${request.method} ${request.path}`),
      ["GET /health", "PUT /todos/a"],
    );
  } finally {
    await batched.close();
    await single.close();
  }
});

Deno.test("rest: push() refuses alone an op whose payload cannot be serialized, batching or not", async () => {
  const handler = (request: RecordedRequest): Response =>
    request.path === "/batch"
      ? json({
        results: opsOf(request).map((op) => ({
          opId: op.opId,
          status: 201,
          record: record(String(op.id)),
        })),
      })
      : json(record(idOf(request)), 201);
  await using server = startScriptedServer(handler);
  // Not JSON, as a corrupt store might hand over: JSON.stringify throws.
  const bad = upsert("bad", {
    payload: { id: "bad", n: 1n } as unknown as JsonObject,
  });
  for (const batch of [false, true]) {
    await using transport = connect(server, { batch, concurrency: 1 });
    const results = await transport.push([upsert("a"), bad, upsert("b")]);
    assert.equal(results[0]?.type, "ok", `batch ${batch}`);
    assertInvalid(results[1], "payload", `batch ${batch}`);
    assert.equal(results[2]?.type, "ok", `batch ${batch}`);
  }
  assert.deepEqual(
    server.requests.map((request) => `${request.method} ${request.path}`),
    // With batching, the chunk could not be serialized: one by one instead.
    ["PUT /todos/a", "PUT /todos/b", "PUT /todos/a", "PUT /todos/b"],
  );
});

Deno.test("rest: pull() rejects a kind or cursor that cannot travel in a URL with ValidationError, and sends nothing", async () => {
  await using server = startScriptedServer(() => json({ items: [] }));
  await using transport = connect(server);
  const cases: [string, Partial<PullRequest>][] = [
    ["kind", { kind: "to do/x" }],
    ["kind", { kind: "health" }],
    ["kind", { kind: "k".repeat(65) }],
    ["afterId", { updatedSince: T1, afterId: "a\ud800" }],
    ["afterId", { updatedSince: T1, afterId: "x".repeat(70_000) }],
    ["updatedSince", { updatedSince: "\udfff" }],
    ["pageToken", { updatedSince: T1, afterId: "a", pageToken: "t\ud800" }],
  ];
  for (const [field, request] of cases) {
    await assert.rejects(
      transport.pull(firstPull(request)),
      (error: unknown) => {
        assert.ok(error instanceof ValidationError, field);
        assert.deepEqual(error.issues[0]?.path, [field]);
        assert.match(
          error.message,
          new RegExp(
            `^Cannot pull '.*' as '${field}' is invalid \\(.+\\): current value is `,
          ),
        );
        return true;
      },
    );
  }
  assert.equal(server.requests.length, 0);
  // A dot id is a fine cursor: a query carries it.
  await transport.pull(firstPull({ updatedSince: T1, afterId: ".." }));
  assert.equal(server.requests[0]?.query.get("afterId"), "..");
});
