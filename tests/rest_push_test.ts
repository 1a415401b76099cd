/**
 * The REST transport's push, one request per op: the headers and bodies it
 * sends, every status mapped to its result, order and concurrency, and the
 * ops it refuses before sending.
 */

import assert from "node:assert/strict";
import { ParseError, RejectedError, ServerError } from "../src/errors.ts";
import type { PushResult } from "../src/transport.ts";
import { json, sequence, startScriptedServer } from "./_scripted_server.ts";
import {
  connect,
  firstPull,
  HTTP_DATE,
  idOf,
  record,
  recordSleeps,
  remove,
  T1,
  T2,
  upsert,
} from "./_rest_fixtures.ts";

Deno.test("rest: push() sends Idempotency-Key, Content-Type and the extra headers", async () => {
  await using server = startScriptedServer((request) =>
    request.method === "PUT"
      ? json(record("a"), 201)
      : new Response(null, { status: 204 })
  );
  await using transport = connect(server, {
    headers: { "x-app": "demo", "idempotency-key": "overridden" },
    token: () => "secret",
  });
  await transport.push([upsert("a", { key: "key-a.r1" }), remove("b")]);
  const [put, del] = server.requests;
  assert.equal(put?.headers.get("idempotency-key"), "key-a.r1");
  assert.equal(put?.headers.get("content-type"), "application/json");
  assert.equal(put?.headers.get("x-app"), "demo");
  assert.equal(put?.headers.get("authorization"), "Bearer secret");
  assert.equal(del?.method, "DELETE");
  assert.equal(del?.headers.get("idempotency-key"), "key-b");
  assert.equal(del?.headers.get("x-app"), "demo");
  assert.equal(del?.body, "");
});

Deno.test("rest: push() sends the same Idempotency-Key when it retries", async () => {
  const sleeps = recordSleeps();
  await using server = startScriptedServer(
    sequence(
      () => json({ error: "unavailable" }, 503),
      () => new Response("", { status: 500 }),
      () => json(record("a", { title: "stored" }), 201),
    ),
  );
  await using transport = connect(server, { sleep: sleeps.sleep });
  const [result] = await transport.push([upsert("a", { key: "the-key" })]);
  assert.deepEqual(result, {
    type: "ok",
    status: 201,
    record: record("a", { title: "stored" }),
    serverDate: result?.type === "ok" ? result.serverDate : undefined,
  });
  assert.equal(typeof (result as { serverDate?: number }).serverDate, "number");
  assert.deepEqual(
    server.requests.map((request) => request.headers.get("idempotency-key")),
    ["the-key", "the-key", "the-key"],
  );
  assert.deepEqual(
    server.requests.map((request) => request.body),
    Array(3).fill(JSON.stringify({ id: "a", title: "title a" })),
  );
  assert.equal(sleeps.delays.length, 2);
});

Deno.test("rest: push() sends _baseUpdatedAt only when the write is not forced, and the force headers", async () => {
  await using server = startScriptedServer(() => json(record("x")));
  await using transport = connect(server, { concurrency: 1 });
  await transport.push([
    upsert("based", { baseUpdatedAt: T1 }),
    upsert("forced", {
      baseUpdatedAt: T1,
      force: true,
      payload: { id: "forced", _baseUpdatedAt: "stale" },
    }),
    upsert("new"),
    remove("del-based", { baseUpdatedAt: T1 }),
    remove("del-forced", { baseUpdatedAt: T1, force: true }),
    remove("del-new"),
  ]);
  const byId = new Map(
    server.requests.map((request) => [idOf(request), request]),
  );
  const based = byId.get("based")!;
  assert.deepEqual(based.json, {
    id: "based",
    title: "title based",
    _baseUpdatedAt: T1,
  });
  assert.equal(based.headers.get("x-force-update"), null);
  const forced = byId.get("forced")!;
  assert.deepEqual(forced.json, { id: "forced" });
  assert.equal(forced.headers.get("x-force-update"), "true");
  assert.deepEqual(byId.get("new")!.json, { id: "new", title: "title new" });
  const delBased = byId.get("del-based")!;
  assert.equal(delBased.search, "?_baseUpdatedAt=2025-03-01T10%3A00%3A00.000Z");
  assert.equal(delBased.headers.get("x-force-delete"), null);
  const delForced = byId.get("del-forced")!;
  assert.equal(delForced.search, "");
  assert.equal(delForced.headers.get("x-force-delete"), "true");
  assert.equal(byId.get("del-new")!.search, "");
});

Deno.test("rest: push() maps every status class to its result", async () => {
  const answers: Record<string, () => Response> = {
    "ok-200": () => json(record("ok-200"), 200, { date: HTTP_DATE }),
    "ok-201": () => json(record("ok-201"), 201),
    "ok-empty": () => new Response("", { status: 200 }),
    "ok-array": () => json([1, 2]),
    "del-204": () => new Response(null, { status: 204 }),
    "del-404": () => json({ error: "not_found" }, 404),
    "put-404": () => json({ error: "not_found" }, 404),
    "bad-400": () => json({ error: "bad_request", message: "no" }, 400),
    "denied-403": () => json({ error: "forbidden" }, 403),
    "large-413": () => new Response("too large", { status: 413 }),
    "invalid-422": () => json({ error: "invalid", fields: ["title"] }, 422),
    "teapot-418": () => new Response("", { status: 418 }),
    "timeout-408": () => new Response("", { status: 408 }),
    "busy-429": () => json({ error: "rate_limited" }, 429),
    "error-500": () => new Response("boom", { status: 500 }),
    "down-503": () => new Response("", { status: 503 }),
    "html-200": () => new Response("<html>portal</html>", { status: 200 }),
  };
  await using server = startScriptedServer((request) =>
    answers[idOf(request)]!()
  );
  await using transport = connect(server, {
    concurrency: 100,
    retry: { attempts: 1 },
  });
  const ids = Object.keys(answers);
  const results = await transport.push(
    ids.map((id) => id.startsWith("del-") ? remove(id) : upsert(id)),
  );
  const byId = new Map(ids.map((id, index) => [id, results[index]!]));
  function ok(id: string): Extract<PushResult, { type: "ok" }> {
    const result = byId.get(id)!;
    assert.equal(result.type, "ok", id);
    return result as Extract<PushResult, { type: "ok" }>;
  }
  assert.deepEqual(ok("ok-200").record, record("ok-200"));
  assert.equal(ok("ok-200").status, 200);
  assert.equal(ok("ok-200").serverDate, Date.parse(HTTP_DATE));
  assert.equal(ok("ok-201").status, 201);
  assert.equal(ok("ok-empty").record, null);
  assert.equal(ok("del-204").status, 204);
  assert.equal(ok("del-204").record, null);
  assert.equal(ok("del-404").status, 404);
  assert.equal(ok("del-404").record, null);
  const rejected: [string, number, string | undefined, unknown][] = [
    ["put-404", 404, "not_found", { error: "not_found" }],
    ["bad-400", 400, "bad_request", { error: "bad_request", message: "no" }],
    ["denied-403", 403, "forbidden", { error: "forbidden" }],
    ["large-413", 413, undefined, "too large"],
    ["invalid-422", 422, "invalid", { error: "invalid", fields: ["title"] }],
    ["teapot-418", 418, undefined, null],
  ];
  for (const [id, status, code, body] of rejected) {
    const result = byId.get(id)!;
    assert.equal(result.type, "rejected", id);
    if (result.type !== "rejected") continue;
    assert.ok(result.error instanceof RejectedError, id);
    assert.equal(result.error.status, status, id);
    assert.equal(result.error.code, code, id);
    assert.equal(result.error.retryable, false, id);
    assert.deepEqual(result.body, body, id);
    assert.match(
      result.error.message,
      new RegExp(
        `^Cannot push the upsert of 'todos/${id}' as the server rejected it with status ${status}: current value is `,
      ),
    );
  }
  for (
    const [id, status] of [["timeout-408", 408], ["busy-429", 429], [
      "error-500",
      500,
    ], ["down-503", 503]] as const
  ) {
    const result = byId.get(id)!;
    assert.equal(result.type, "retry", id);
    if (result.type !== "retry") continue;
    assert.ok(result.error instanceof ServerError, id);
    assert.equal(result.error.status, status, id);
    assert.equal(result.error.retryable, true, id);
    assert.equal(result.retryAfterMs, null, id);
  }
  // A 2xx JSON answer that is not a record is damaged, not a success.
  const array = byId.get("ok-array")!;
  assert.ok(array.type === "retry" && array.error instanceof ParseError);
  assert.equal(array.error.retryable, true);
  const html = byId.get("html-200")!;
  assert.equal(html.type, "retry");
  assert.ok(html.type === "retry" && html.error instanceof ParseError);
  assert.match(
    html.error.message,
    /as the response is not JSON: current value is "<html>portal<\/html>"$/,
  );
});

Deno.test("rest: push() reports a 409's current record (or serverData) and serverTimestamp", async () => {
  const server409: Record<string, () => Response> = {
    current: () =>
      json(
        {
          error: "conflict",
          current: record("current", { title: "server" }),
          serverTimestamp: T2,
        },
        409,
        { date: HTTP_DATE },
      ),
    serverData: () =>
      json({
        error: "conflict",
        serverData: { id: "serverData", updatedAt: T2 },
      }, 409),
    empty: () => new Response("", { status: 409 }),
  };
  await using server = startScriptedServer((request) =>
    server409[idOf(request)]!()
  );
  await using transport = connect(server);
  const results = await transport.push([
    upsert("current", { baseUpdatedAt: T1 }),
    upsert("serverData", { baseUpdatedAt: T1 }),
    remove("empty", { baseUpdatedAt: T1 }),
  ]);
  assert.deepEqual(results, [
    {
      type: "conflict",
      current: record("current", { title: "server" }),
      serverTimestamp: T2,
      serverDate: Date.parse(HTTP_DATE),
    },
    {
      type: "conflict",
      current: { id: "serverData", updatedAt: T2 },
      serverTimestamp: T2,
      serverDate: (results[1] as { serverDate: number }).serverDate,
    },
    {
      type: "conflict",
      current: null,
      serverTimestamp: null,
      serverDate: (results[2] as { serverDate: number }).serverDate,
    },
  ]);
});

Deno.test("rest: push() keeps results in input order when the server answers out of order", async () => {
  const arrived = Promise.withResolvers<void>();
  let inFlight = 0;
  let maxInFlight = 0;
  const finished: string[] = [];
  await using server = startScriptedServer(async (request) => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    if (inFlight === 3) arrived.resolve();
    await arrived.promise;
    const id = idOf(request);
    // "a" answers last, "c" first.
    await new Promise((resolve) =>
      setTimeout(resolve, { a: 60, b: 30, c: 0 }[id])
    );
    finished.push(id);
    inFlight--;
    return json(record(id), 201);
  });
  await using transport = connect(server, { concurrency: 3 });
  const results = await transport.push([upsert("a"), upsert("b"), upsert("c")]);
  assert.deepEqual(finished, ["c", "b", "a"]);
  assert.deepEqual(
    results.map((result) => result.type === "ok" ? result.record?.id : null),
    ["a", "b", "c"],
  );
  assert.equal(maxInFlight, 3);
});

Deno.test("rest: push() keeps at most `concurrency` requests in flight", async () => {
  let inFlight = 0;
  let maxInFlight = 0;
  await using server = startScriptedServer(async (request) => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    await new Promise((resolve) => setTimeout(resolve, 5));
    inFlight--;
    return json(record(idOf(request)));
  });
  await using transport = connect(server, { concurrency: 2 });
  const ids = ["a", "b", "c", "d", "e", "f"];
  const results = await transport.push(ids.map((id) => upsert(id)));
  assert.deepEqual(
    results.map((result) => result.type === "ok" && result.record?.id),
    ids,
  );
  assert.equal(maxInFlight, 2);
});

Deno.test("rest: push() stops sending once a request gave up, and reports retry for the rest", async () => {
  await using server = startScriptedServer(() =>
    new Response("", { status: 503 })
  );
  await using transport = connect(server, {
    concurrency: 1,
    retry: { attempts: 2 },
  });
  const results = await transport.push([upsert("a"), upsert("b"), upsert("c")]);
  assert.deepEqual(results.map((result) => result.type), [
    "retry",
    "retry",
    "retry",
  ]);
  assert.equal(server.requests.length, 2);
  assert.ok(
    results.every((result) =>
      result.type === "retry" && result.error instanceof ServerError
    ),
  );
});

Deno.test("rest: push() of no ops sends nothing", async () => {
  await using server = startScriptedServer(() => json({ batch: true }));
  await using transport = connect(server, { batch: "auto" });
  assert.deepEqual(await transport.push([]), []);
  assert.equal(server.requests.length, 0);
});

Deno.test("rest: push() rejects malformed ops and a repeated key with TypeError", async () => {
  await using server = startScriptedServer(() => json({}));
  await using transport = connect(server);
  await assert.rejects(
    transport.push([upsert("a"), upsert("b", { key: "key-a" })]),
    TypeError,
  );
  await assert.rejects(
    transport.push([upsert("a", { payload: null })]),
    TypeError,
  );
  await assert.rejects(
    transport.push([upsert("a", { key: "schlüssel" })]),
    TypeError,
  );
  await assert.rejects(
    transport.pull({ ...firstPull(), limit: 0 }),
    RangeError,
  );
  await assert.rejects(transport.pull({ ...firstPull(), kind: "" }), TypeError);
  assert.equal(server.requests.length, 0);
});
