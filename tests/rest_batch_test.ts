/**
 * The REST transport's batches: `GET /health` decides, ops go as
 * `POST /batch` in chunks of `batchSize`, results are matched by `opId`, and a
 * refused or damaged batch answer falls back or is retried.
 */

import assert from "node:assert/strict";
import {
  AuthError,
  ParseError,
  RejectedError,
  ServerError,
} from "../src/errors.ts";
import type { JsonObject } from "../src/json.ts";
import {
  json,
  type RecordedRequest,
  startScriptedServer,
} from "./_scripted_server.ts";
import {
  connect,
  HTTP_DATE,
  idOf,
  record,
  recordSleeps,
  remove,
  T1,
  T2,
  upsert,
} from "./_rest_fixtures.ts";

function batchHandler(
  answer: (ops: JsonObject[]) => Response,
): (request: RecordedRequest) => Response {
  return function handle(request): Response {
    if (request.path === "/health") {
      return json({ status: "ok", batch: true, contract: 1 });
    }
    if (request.path === "/batch") {
      return answer((request.json as { ops: JsonObject[] }).ops);
    }
    return json(record(idOf(request)), 201);
  };
}

function allOk(ops: JsonObject[]): Response {
  return json({
    results: ops.map((op) => ({
      opId: op.opId,
      status: op.type === "delete" ? 204 : 201,
      ...(op.type === "delete" ? {} : { record: record(String(op.id)) }),
    })),
  });
}

Deno.test("rest: push() uses POST /batch when /health says so, and asks once", async () => {
  await using server = startScriptedServer(batchHandler(allOk));
  await using transport = connect(server, { batch: "auto" });
  const results = await transport.push([
    upsert("a", { baseUpdatedAt: T1 }),
    upsert("b", { baseUpdatedAt: T1, force: true }),
    remove("c", { baseUpdatedAt: T1 }),
  ]);
  await transport.push([upsert("d")]);
  assert.deepEqual(
    server.requests.map((request) => `${request.method} ${request.path}`),
    ["GET /health", "POST /batch", "POST /batch"],
  );
  const batch = server.requests[1]!;
  assert.equal(batch.headers.get("content-type"), "application/json");
  assert.deepEqual(batch.json, {
    ops: [
      {
        opId: "key-a",
        kind: "todos",
        id: "a",
        type: "upsert",
        payload: { id: "a", title: "title a" },
        baseUpdatedAt: T1,
      },
      {
        opId: "key-b",
        kind: "todos",
        id: "b",
        type: "upsert",
        payload: { id: "b", title: "title b" },
        force: true,
      },
      {
        opId: "key-c",
        kind: "todos",
        id: "c",
        type: "delete",
        baseUpdatedAt: T1,
      },
    ],
  });
  assert.deepEqual(results.map((result) => result.type), ["ok", "ok", "ok"]);
  assert.deepEqual(results[0]?.type === "ok" && results[0].record, record("a"));
});

Deno.test("rest: push() sends single requests when /health fails, and asks again on the next call", async () => {
  await using server = startScriptedServer((request) =>
    request.path === "/health"
      ? new Response("", { status: 500 })
      : json(record(idOf(request)), 201)
  );
  await using transport = connect(server, { batch: "auto" });
  await transport.push([upsert("a")]);
  await transport.push([upsert("b")]);
  assert.deepEqual(
    server.requests.map((request) => `${request.method} ${request.path}`),
    ["GET /health", "PUT /todos/a", "GET /health", "PUT /todos/b"],
  );
});

Deno.test("rest: push() remembers a /health without batch support", async () => {
  await using server = startScriptedServer((request) =>
    request.path === "/health"
      ? json({ status: "ok", batch: false })
      : json(record(idOf(request)), 201)
  );
  await using transport = connect(server, { batch: "auto" });
  await transport.push([upsert("a")]);
  await transport.push([upsert("b")]);
  assert.deepEqual(
    server.requests.map((request) => `${request.method} ${request.path}`),
    ["GET /health", "PUT /todos/a", "PUT /todos/b"],
  );
});

Deno.test("rest: push() with batch: true never asks /health and chunks by batchSize in order", async () => {
  await using server = startScriptedServer(batchHandler(allOk));
  await using transport = connect(server, { batch: true, batchSize: 2 });
  const ids = ["a", "b", "c", "d", "e"];
  const results = await transport.push(ids.map((id) => upsert(id)));
  assert.deepEqual(
    server.requests.map((request) =>
      (request.json as { ops: JsonObject[] }).ops.map((op) => op.id)
    ),
    [["a", "b"], ["c", "d"], ["e"]],
  );
  assert.deepEqual(
    results.map((result) => result.type === "ok" && result.record?.id),
    ids,
  );
});

Deno.test("rest: push() maps batch results by opId, including conflict and rejected", async () => {
  await using server = startScriptedServer(
    batchHandler(() =>
      // Out of order on purpose: results are matched by opId.
      json(
        {
          results: [
            { opId: "key-busy", status: 503, error: { error: "unavailable" } },
            {
              opId: "key-bad",
              status: 422,
              error: { error: "invalid", message: "title required" },
            },
            {
              opId: "key-stale",
              status: 409,
              error: {
                error: "conflict",
                current: record("stale", { title: "server" }),
                serverTimestamp: T2,
              },
            },
            { opId: "key-gone", status: 404, error: { error: "not_found" } },
            { opId: "key-new", status: 201, record: record("new") },
          ],
        },
        200,
        { date: HTTP_DATE },
      )
    ),
  );
  await using transport = connect(server, { batch: true });
  const results = await transport.push([
    upsert("new"),
    remove("gone"),
    upsert("stale", { baseUpdatedAt: T1 }),
    upsert("bad"),
    upsert("busy"),
  ]);
  const serverDate = Date.parse(HTTP_DATE);
  assert.deepEqual(results.slice(0, 3), [
    { type: "ok", status: 201, record: record("new"), serverDate },
    { type: "ok", status: 404, record: null, serverDate },
    {
      type: "conflict",
      current: record("stale", { title: "server" }),
      serverTimestamp: T2,
      serverDate,
    },
  ]);
  const bad = results[3]!;
  assert.ok(bad.type === "rejected" && bad.error instanceof RejectedError);
  assert.equal(bad.error.status, 422);
  assert.equal(bad.error.code, "invalid");
  assert.deepEqual(bad.body, { error: "invalid", message: "title required" });
  const busy = results[4]!;
  assert.ok(busy.type === "retry" && busy.error instanceof ServerError);
  assert.equal(busy.error.status, 503);
});

Deno.test("rest: push() retries a whole-batch 5xx, then reports retry for every op", async () => {
  const sleeps = recordSleeps();
  await using server = startScriptedServer(
    batchHandler(() => new Response("", { status: 502 })),
  );
  await using transport = connect(server, {
    batch: true,
    batchSize: 2,
    sleep: sleeps.sleep,
    retry: { attempts: 3 },
  });
  const results = await transport.push(
    ["a", "b", "c", "d"].map((id) => upsert(id)),
  );
  assert.deepEqual(results.map((result) => result.type), [
    "retry",
    "retry",
    "retry",
    "retry",
  ]);
  assert.ok(
    results.every((result) =>
      result.type === "retry" && result.error instanceof ServerError &&
      result.error.status === 502
    ),
  );
  // The first chunk was tried three times; the second was not sent to a
  // server that is down.
  assert.equal(server.requests.length, 3);
  assert.ok(
    server.requests.every((request) =>
      (request.json as { ops: JsonObject[] }).ops[0]?.id === "a"
    ),
  );
  assert.equal(sleeps.delays.length, 2);
});

Deno.test("rest: push() sends a chunk's ops one by one when the batch is too large (413)", async () => {
  await using server = startScriptedServer(
    batchHandler(() => json({ error: "too_large" }, 413)),
  );
  await using transport = connect(server, { batch: true });
  const results = await transport.push([upsert("a"), remove("b")]);
  assert.deepEqual(
    server.requests.map((request) => `${request.method} ${request.path}`)
      .sort(),
    ["DELETE /todos/b", "POST /batch", "PUT /todos/a"],
  );
  assert.deepEqual(results.map((result) => result.type), ["ok", "ok"]);
});

Deno.test("rest: push() reports retry with ParseError for a malformed batch response", async () => {
  const cases: [string, (ops: JsonObject[]) => Response][] = [
    ["not JSON", () => new Response("nope")],
    ["no results", () => json({})],
    [
      "too few results",
      (ops) => json({ results: [{ opId: ops[0]!.opId, status: 201 }] }),
    ],
    [
      "unknown opId",
      (ops) =>
        json({ results: ops.map((_, i) => ({ opId: `x${i}`, status: 201 })) }),
    ],
    [
      "repeated opId",
      (ops) =>
        json({ results: ops.map(() => ({ opId: ops[0]!.opId, status: 201 })) }),
    ],
  ];
  // A broken result damages its own op only (the other was answered).
  const perOp: [string, (ops: JsonObject[]) => Response][] = [
    [
      "bad status",
      (ops) =>
        json({ results: ops.map((op) => ({ opId: op.opId, status: "201" })) }),
    ],
    [
      "record not an object",
      (ops) =>
        json({
          results: ops.map((op) => ({
            opId: op.opId,
            status: 201,
            record: [1],
          })),
        }),
    ],
  ];
  let index = 0;
  const all = [...cases, ...perOp];
  await using server = startScriptedServer(
    batchHandler((ops) => all[index++]![1](ops)),
  );
  await using transport = connect(server, {
    batch: true,
    retry: { attempts: 1 },
  });
  for (const [name] of all) {
    const results = await transport.push([upsert("a"), upsert("b")]);
    assert.equal(results.length, 2, name);
    for (const [position, result] of results.entries()) {
      assert.equal(result.type, "retry", name);
      assert.ok(
        result.type === "retry" && result.error instanceof ParseError,
        name,
      );
      assert.equal(result.error.retryable, true, name);
      assert.match(
        result.error.message,
        cases.some(([known]) => known === name)
          ? /^Cannot push a batch of 2 ops as .+: current value is /
          : new RegExp(
            `^Cannot push the upsert of 'todos/${
              "ab"[position]
            }' as .+: current value is `,
          ),
        name,
      );
    }
  }
});

Deno.test("rest: push() in batch mode rejects with AuthError on a second 401", async () => {
  const asked: boolean[] = [];
  await using server = startScriptedServer(batchHandler(() => json({}, 401)));
  await using transport = connect(server, {
    batch: true,
    token({ refresh }): string {
      asked.push(refresh);
      return "t";
    },
  });
  await assert.rejects(transport.push([upsert("a"), upsert("b")]), AuthError);
  assert.deepEqual(asked, [false, true]);
  assert.equal(server.requests.length, 2);
});
