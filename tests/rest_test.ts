import assert from "node:assert/strict";
import {
  createRestTransport,
  type RestTransportOptions,
} from "../transport/rest.ts";
import {
  AuthError,
  ClosedError,
  NetworkError,
  ParseError,
  RejectedError,
  ResyncRequiredError,
  ServerError,
} from "../src/errors.ts";
import type {
  PullRequest,
  PushOp,
  PushResult,
  Transport,
} from "../src/transport.ts";
import type { JsonObject } from "../src/json.ts";
import {
  json,
  type RecordedRequest,
  type ScriptedServer,
  sequence,
  startScriptedServer,
} from "./_scripted_server.ts";

const T1 = "2025-03-01T10:00:00.000Z";
const T2 = "2025-03-01T10:00:01.000Z";
const HTTP_DATE = "Sat, 01 Mar 2025 10:00:00 GMT";

function record(id: string, extra: JsonObject = {}): JsonObject {
  return { id, updated_at: T1, ...extra };
}

function upsert(id: string, extra: Partial<PushOp> = {}): PushOp {
  return {
    opId: `op-${id}`,
    key: `key-${id}`,
    kind: "todos",
    id,
    type: "upsert",
    payload: { id, title: `title ${id}` },
    baseUpdatedAt: null,
    force: false,
    ...extra,
  };
}

function remove(id: string, extra: Partial<PushOp> = {}): PushOp {
  return upsert(id, { type: "delete", payload: null, ...extra });
}

function firstPull(kind = "todos", limit = 50): PullRequest {
  return { kind, updatedSince: null, afterId: null, limit, pageToken: null };
}

interface Sleeps {
  readonly delays: number[];
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** An injected sleep that records each delay and returns at once. */
function recordSleeps(): Sleeps {
  const delays: number[] = [];
  return {
    delays,
    sleep(ms, signal): Promise<void> {
      delays.push(ms);
      return signal?.aborted
        ? Promise.reject(signal.reason)
        : Promise.resolve();
    },
  };
}

function connect(
  server: ScriptedServer,
  options: Partial<RestTransportOptions> = {},
): Transport {
  return createRestTransport({
    baseUrl: server.url,
    batch: false,
    sleep: recordSleeps().sleep,
    random: () => 0.5,
    ...options,
  });
}

function idOf(request: RecordedRequest): string {
  return decodeURIComponent(request.path.split("/").at(-1)!);
}

Deno.test("rest: createRestTransport() validates its options once", () => {
  const base = "http://127.0.0.1:1";
  const bad: [Partial<RestTransportOptions>, ErrorConstructor][] = [
    [{ baseUrl: "not a url" }, TypeError],
    [{ baseUrl: "ftp://example.com" }, TypeError],
    [{ baseUrl: "http://example.com/api?x=1" }, TypeError],
    [{ baseUrl: 42 as unknown as string }, TypeError],
    [{ fetch: "fetch" as unknown as typeof fetch }, TypeError],
    [{ token: "secret" as unknown as () => string }, TypeError],
    [{ batch: "yes" as unknown as boolean }, TypeError],
    [{ timeoutMs: 0 }, RangeError],
    [{ timeoutMs: "5" as unknown as number }, TypeError],
    [{ retry: { attempts: 0 } }, RangeError],
    [{ retry: { attempts: 1.5 } }, RangeError],
    [{ retry: { baseDelayMs: -1 } }, RangeError],
    [{ retry: { maxDelayMs: Infinity } }, RangeError],
    [{ batchSize: 0 }, RangeError],
    [{ concurrency: 0 }, RangeError],
    [{ random: 0.5 as unknown as () => number }, TypeError],
    [{ headers: [["bad header", "x"]] }, TypeError],
  ];
  for (const [options, type] of bad) {
    assert.throws(
      () => createRestTransport({ baseUrl: base, ...options }),
      (error: unknown) => {
        assert.ok(error instanceof type, `${JSON.stringify(options)}`);
        assert.match(
          (error as Error).message,
          /^Cannot create REST transport as '.+' .+: current value is /,
        );
        return true;
      },
    );
  }
  const transport = createRestTransport({
    baseUrl: new URL("http://127.0.0.1:1/api/"),
    timeoutMs: Infinity,
    retry: { attempts: 1, baseDelayMs: 0, maxDelayMs: 0 },
  });
  assert.equal(typeof transport.pull, "function");
});

Deno.test("rest: pull() sends the cursor as query parameters and omits absent ones", async () => {
  await using server = startScriptedServer(() => json({ items: [] }));
  await using transport = connect(server, { baseUrl: `${server.url}/api/` });
  await transport.pull(firstPull("todos", 50));
  await transport.pull({
    kind: "todos",
    updatedSince: T1,
    afterId: "a&b=c d+e",
    limit: 2,
    pageToken: "tok/en?=",
  });
  const [first, second] = server.requests;
  assert.equal(first?.method, "GET");
  assert.equal(first?.path, "/api/todos");
  assert.equal(first?.search, "?limit=50&includeDeleted=true");
  assert.equal(
    second?.search,
    "?updatedSince=2025-03-01T10%3A00%3A00.000Z&afterId=a%26b%3Dc%20d%2Be" +
      "&limit=2&includeDeleted=true&pageToken=tok%2Fen%3F%3D",
  );
  assert.equal(second?.query.get("afterId"), "a&b=c d+e");
  assert.equal(second?.query.get("pageToken"), "tok/en?=");
  assert.equal(second?.query.get("updatedSince"), T1);
});

Deno.test("rest: pull() and push() percent-encode every path segment", async () => {
  const id = "a/b?c#d%e f ü😀";
  // Kinds are [A-Za-z0-9_-] (CONTRACT.md §Limits): only ids need encoding.
  const kind = "to_do-x";
  await using server = startScriptedServer((request) =>
    request.method === "GET" ? json({ items: [] }) : json(record(id))
  );
  await using transport = connect(server);
  await transport.pull(firstPull(kind));
  await transport.push([upsert(id, { kind, key: "k1" })]);
  await transport.push([remove(id, { kind, key: "k2" })]);
  const encodedKind = "to_do-x";
  const encodedId = "a%2Fb%3Fc%23d%25e%20f%20%C3%BC%F0%9F%98%80";
  assert.deepEqual(
    server.requests.map((request) => `${request.method} ${request.path}`),
    [
      `GET /${encodedKind}`,
      `PUT /${encodedKind}/${encodedId}`,
      `DELETE /${encodedKind}/${encodedId}`,
    ],
  );
  assert.equal(server.requests[1]?.search, "");
});

Deno.test("rest: pull() returns the items, the nextPageToken and the server's Date", async () => {
  const items = [record("a"), { id: "b", updatedAt: T2, deleted_at: T2 }];
  await using server = startScriptedServer(
    sequence(
      () => json({ items, nextPageToken: "next" }, 200, { date: HTTP_DATE }),
      () => json({ items: [] }),
    ),
  );
  await using transport = connect(server);
  const page = await transport.pull(firstPull());
  assert.deepEqual(page.items, items);
  assert.equal(page.nextPageToken, "next");
  assert.equal(page.serverDate, Date.parse(HTTP_DATE));
  const last = await transport.pull(firstPull());
  assert.deepEqual(last.items, []);
  assert.equal(last.nextPageToken, null);
});

Deno.test("rest: pull() rejects a malformed response with a retryable ParseError and returns no items", async () => {
  const cases: [string, string][] = [
    ["not JSON", "<html>oops</html>"],
    ["empty", ""],
    ["not an object", JSON.stringify([record("a")])],
    ["no items", JSON.stringify({ nextPageToken: null })],
    ["items not an array", JSON.stringify({ items: { a: 1 } })],
    ["bad nextPageToken", JSON.stringify({ items: [], nextPageToken: 2 })],
  ];
  let index = 0;
  await using server = startScriptedServer(() =>
    new Response(cases[index++]![1], {
      headers: { "content-type": "application/json" },
    })
  );
  await using transport = connect(server, { retry: { attempts: 1 } });
  for (const [name] of cases) {
    await assert.rejects(transport.pull(firstPull()), (error: unknown) => {
      assert.ok(error instanceof ParseError, name);
      // A damaged body is a lost response (CONTRACT.md, Pull).
      assert.equal(error.retryable, true, name);
      assert.match(
        error.message,
        /^Cannot pull 'todos' as .+: current value is /,
        name,
      );
      return true;
    });
  }
  assert.equal(server.requests.length, cases.length);
});

Deno.test("rest: pull() maps 410 to ResyncRequiredError", async () => {
  await using server = startScriptedServer(() =>
    json({ error: "gone", message: "cursor too old" }, 410)
  );
  await using transport = connect(server);
  await assert.rejects(
    transport.pull({ ...firstPull(), updatedSince: T1, afterId: "a" }),
    ResyncRequiredError,
  );
  assert.equal(server.requests.length, 1);
});

Deno.test("rest: pull() maps another 4xx to RejectedError and does not retry it", async () => {
  await using server = startScriptedServer(() =>
    json({ error: "forbidden", message: "not yours" }, 403)
  );
  await using transport = connect(server);
  await assert.rejects(transport.pull(firstPull()), (error: unknown) => {
    assert.ok(error instanceof RejectedError);
    assert.equal(error.status, 403);
    assert.equal(error.code, "forbidden");
    assert.deepEqual(error.body, { error: "forbidden", message: "not yours" });
    assert.match(
      error.message,
      /^Cannot pull 'todos' as the server rejected it with status 403: current value is "not yours"$/,
    );
    return true;
  });
  assert.equal(server.requests.length, 1);
});

Deno.test("rest: pull() retries 5xx and then rejects with a retryable ServerError", async () => {
  const sleeps = recordSleeps();
  await using server = startScriptedServer(() =>
    json({ error: "unavailable" }, 503)
  );
  await using transport = connect(server, {
    sleep: sleeps.sleep,
    retry: { attempts: 3 },
  });
  await assert.rejects(transport.pull(firstPull()), (error: unknown) => {
    assert.ok(error instanceof ServerError);
    assert.equal(error.status, 503);
    assert.equal(error.code, "unavailable");
    assert.equal(error.retryable, true);
    assert.equal(error.retryAfterMs, undefined);
    return true;
  });
  assert.equal(server.requests.length, 3);
  assert.equal(sleeps.delays.length, 2);
});

Deno.test("rest: pull() sends the bearer token and refreshes it once on a 401", async () => {
  const asked: boolean[] = [];
  await using server = startScriptedServer((request) =>
    request.headers.get("authorization") === "Bearer fresh"
      ? json({ items: [] })
      : json({ error: "unauthorized" }, 401)
  );
  await using transport = connect(server, {
    token({ refresh }): Promise<string> {
      asked.push(refresh);
      return Promise.resolve(refresh ? "fresh" : "stale");
    },
  });
  const page = await transport.pull(firstPull());
  assert.deepEqual(page.items, []);
  assert.deepEqual(asked, [false, true]);
  assert.deepEqual(
    server.requests.map((request) => request.headers.get("authorization")),
    ["Bearer stale", "Bearer fresh"],
  );
});

Deno.test("rest: pull() rejects with AuthError on a second 401", async () => {
  const asked: boolean[] = [];
  await using server = startScriptedServer(() =>
    json({ error: "unauthorized" }, 401)
  );
  await using transport = connect(server, {
    token({ refresh }): string {
      asked.push(refresh);
      return `token-${asked.length}`;
    },
  });
  await assert.rejects(transport.pull(firstPull()), (error: unknown) => {
    assert.ok(error instanceof AuthError);
    assert.equal(error.status, 401);
    assert.equal(error.retryable, false);
    return true;
  });
  assert.deepEqual(asked, [false, true]);
  assert.equal(server.requests.length, 2);
});

Deno.test("rest: a 401 without a token provider is an AuthError at once", async () => {
  await using server = startScriptedServer(() => json({}, 401));
  await using transport = connect(server);
  await assert.rejects(transport.pull(firstPull()), AuthError);
  assert.equal(server.requests.length, 1);
  assert.equal(server.requests[0]?.headers.get("authorization"), null);
});

Deno.test("rest: push() rejects the whole call with AuthError on a second 401 and refreshes once", async () => {
  const asked: boolean[] = [];
  await using server = startScriptedServer(() => json({}, 401));
  await using transport = connect(server, {
    concurrency: 3,
    token({ refresh }): string {
      asked.push(refresh);
      return refresh ? "fresh" : "stale";
    },
  });
  await assert.rejects(
    transport.push([upsert("a"), upsert("b"), upsert("c")]),
    AuthError,
  );
  // Three requests refused together cause one refresh.
  assert.deepEqual(asked, [false, true]);
});

Deno.test("rest: push() retries every request refused together with the one refreshed token", async () => {
  const asked: boolean[] = [];
  await using server = startScriptedServer((request) =>
    request.headers.get("authorization") === "Bearer fresh"
      ? json(record(idOf(request)), 201)
      : json({}, 401)
  );
  await using transport = connect(server, {
    concurrency: 3,
    token({ refresh }): string {
      asked.push(refresh);
      return refresh ? "fresh" : "stale";
    },
  });
  const results = await transport.push([upsert("a"), upsert("b"), upsert("c")]);
  assert.deepEqual(results.map((result) => result.type), ["ok", "ok", "ok"]);
  assert.deepEqual(asked, [false, true]);
  assert.equal(server.requests.length, 6);
});

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

Deno.test("rest: retries back off exponentially with a cap and full jitter", async () => {
  for (
    const [random, expected] of [
      [0.999, [100, 200, 400, 500, 500]],
      [0.5, [50, 100, 200, 250, 250]],
      [0, [0, 0, 0, 0, 0]],
    ] as const
  ) {
    const sleeps = recordSleeps();
    await using server = startScriptedServer(() =>
      new Response("", { status: 503 })
    );
    await using transport = connect(server, {
      sleep: sleeps.sleep,
      random: () => random,
      retry: { attempts: 6, baseDelayMs: 100, maxDelayMs: 500 },
    });
    await assert.rejects(transport.pull(firstPull()), ServerError);
    assert.deepEqual(sleeps.delays, expected, `random ${random}`);
    assert.equal(server.requests.length, 6);
  }
});

Deno.test("rest: retries honour Retry-After in seconds and as an HTTP date", async () => {
  const now = Date.parse(HTTP_DATE);
  const sleeps = recordSleeps();
  await using server = startScriptedServer(
    sequence(
      () => new Response("", { status: 503, headers: { "retry-after": "2" } }),
      () =>
        new Response("", {
          status: 429,
          headers: { "retry-after": new Date(now + 5000).toUTCString() },
        }),
      () => json({ items: [] }),
    ),
  );
  await using transport = connect(server, {
    sleep: sleeps.sleep,
    now: () => now,
    random: () => 0.999,
  });
  await transport.pull(firstPull());
  assert.deepEqual(sleeps.delays, [2000, 5000]);
});

Deno.test("rest: a Retry-After beyond maxDelayMs is reported without waiting", async () => {
  const sleeps = recordSleeps();
  await using server = startScriptedServer(() =>
    new Response("", { status: 429, headers: { "retry-after": "120" } })
  );
  await using transport = connect(server, {
    sleep: sleeps.sleep,
    retry: { maxDelayMs: 30_000 },
  });
  const [result] = await transport.push([upsert("a")]);
  assert.equal(result?.type, "retry");
  assert.equal(result?.type === "retry" && result.retryAfterMs, 120_000);
  await assert.rejects(transport.pull(firstPull()), (error: unknown) => {
    assert.ok(error instanceof ServerError);
    assert.equal(error.status, 429);
    assert.equal(error.retryAfterMs, 120_000);
    return true;
  });
  assert.equal(server.requests.length, 2);
  assert.deepEqual(sleeps.delays, []);
});

Deno.test("rest: a timeout is a retryable NetworkError", async () => {
  const gate = Promise.withResolvers<void>();
  const sleeps = recordSleeps();
  const server = startScriptedServer(async (request, index) => {
    if (index === 0 || idOf(request) === "slow") await gate.promise;
    return json({ items: [] });
  });
  try {
    const transport = connect(server, {
      sleep: sleeps.sleep,
      timeoutMs: 50,
      retry: { attempts: 2 },
    });
    // The first try times out, the second passes.
    const page = await transport.pull(firstPull());
    assert.deepEqual(page.items, []);
    assert.equal(sleeps.delays.length, 1);
    const [result] = await transport.push([upsert("slow")], {});
    assert.equal(result?.type, "retry");
    if (result?.type === "retry") {
      assert.ok(result.error instanceof NetworkError);
      assert.equal(result.error.retryable, true);
      assert.match(
        result.error.message,
        /^Cannot push the upsert of 'todos\/slow' as the request timed out: current value is 50 ms$/,
      );
    }
    await transport.close();
  } finally {
    gate.resolve();
    await server.close();
  }
});

Deno.test("rest: each request times out after timeoutMs from its own start", async () => {
  const gate = Promise.withResolvers<void>();
  const started = new Map<string, number>();
  const server = startScriptedServer(async (request) => {
    const id = idOf(request);
    started.set(id, performance.now());
    // "quick" answers before the timeout; the others hang.
    if (id === "quick") {
      await new Promise((resolve) => setTimeout(resolve, 60));
      return json(record(id), 201);
    }
    await gate.promise;
    return json(record(id), 201);
  });
  try {
    const transport = connect(server, {
      timeoutMs: 100,
      retry: { attempts: 1 },
      concurrency: 2,
    });
    // Two in flight: "hang-a" and "quick" start together; "hang-b" starts
    // when "quick" is answered, so its deadline is 60 ms after "hang-a"'s.
    const results = await transport.push(
      [upsert("hang-a"), upsert("quick"), upsert("hang-b")],
    );
    const ended = performance.now();
    assert.equal(results[1]?.type, "ok");
    for (const index of [0, 2]) {
      const result = results[index];
      assert.equal(result?.type, "retry");
      if (result?.type === "retry") {
        assert.match(
          result.error.message,
          /as the request timed out: current value is 100 ms$/,
        );
      }
    }
    // "hang-b" was not cut short at "hang-a"'s deadline.
    assert.ok(started.get("hang-b")! - started.get("hang-a")! >= 50);
    assert.ok(ended - started.get("hang-b")! >= 95);
    await transport.close();
  } finally {
    gate.resolve();
    await server.close();
  }
});

Deno.test("rest: a network error is retried, then a retryable NetworkError", async () => {
  const gone = startScriptedServer(() => json({}));
  const url = gone.url;
  await gone.close();
  const sleeps = recordSleeps();
  await using transport = createRestTransport({
    baseUrl: url,
    batch: false,
    sleep: sleeps.sleep,
    retry: { attempts: 2 },
  });
  await assert.rejects(transport.pull(firstPull()), (error: unknown) => {
    assert.ok(error instanceof NetworkError);
    assert.equal(error.retryable, true);
    assert.equal(error.category, "network");
    return true;
  });
  const [result] = await transport.push([upsert("a")]);
  assert.ok(result?.type === "retry" && result.error instanceof NetworkError);
  assert.equal(sleeps.delays.length, 2);
});

Deno.test("rest: pull() retries when the response body breaks off", async () => {
  const sleeps = recordSleeps();
  await using server = startScriptedServer(
    sequence(
      () =>
        new Response(
          new ReadableStream({
            start(controller): void {
              controller.enqueue(new TextEncoder().encode('{"items": ['));
              controller.error(new Error("cut off"));
            },
          }),
        ),
      () => json({ items: [record("a")] }),
    ),
  );
  await using transport = connect(server, { sleep: sleeps.sleep });
  const page = await transport.pull(firstPull());
  assert.deepEqual(page.items, [record("a")]);
  assert.equal(server.requests.length, 2);
});

Deno.test("rest: a caller abort rejects with its reason and is not retried", async () => {
  const gate = Promise.withResolvers<void>();
  const controller = new AbortController();
  const reason = new Error("user left");
  const sleeps = recordSleeps();
  const server = startScriptedServer(async () => {
    controller.abort(reason);
    await gate.promise;
    return json({ items: [] });
  });
  try {
    await using transport = connect(server, { sleep: sleeps.sleep });
    await assert.rejects(
      transport.pull(firstPull(), { signal: controller.signal }),
      (error: unknown) => error === reason,
    );
    await assert.rejects(
      transport.push([upsert("a")], { signal: controller.signal }),
      (error: unknown) => error === reason,
    );
    assert.equal(server.requests.length, 1);
    assert.deepEqual(sleeps.delays, []);
  } finally {
    gate.resolve();
    await server.close();
  }
});

Deno.test("rest: a caller abort during a backoff wait is not retried", async () => {
  const controller = new AbortController();
  const reason = new Error("stop");
  await using server = startScriptedServer(() =>
    new Response("", { status: 503 })
  );
  await using transport = connect(server, {
    sleep(_ms, signal): Promise<void> {
      controller.abort(reason);
      return signal?.aborted
        ? Promise.reject(signal.reason)
        : Promise.resolve();
    },
  });
  const results = transport.push([upsert("a")], { signal: controller.signal });
  await assert.rejects(results, (error: unknown) => error === reason);
  assert.equal(server.requests.length, 1);
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

Deno.test("rest: the injected fetch sends every request", async () => {
  const seen: string[] = [];
  await using server = startScriptedServer(() => json({ items: [] }));
  await using transport = connect(server, {
    fetch(input, init): Promise<Response> {
      seen.push(`${init?.method} ${String(input)}`);
      return fetch(input, init);
    },
  });
  await transport.pull(firstPull());
  assert.deepEqual(seen, [
    `GET ${server.url}/todos?limit=50&includeDeleted=true`,
  ]);
});

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

Deno.test("rest: close() is idempotent, aborts in-flight calls and rejects later ones with ClosedError", async () => {
  const gate = Promise.withResolvers<void>();
  const arrived = Promise.withResolvers<void>();
  const server = startScriptedServer(async () => {
    arrived.resolve();
    await gate.promise;
    return json({ items: [] });
  });
  try {
    const transport = connect(server);
    const pending = transport.pull(firstPull());
    await arrived.promise;
    await Promise.all([transport.close(), transport.close()]);
    await assert.rejects(pending, ClosedError);
    await transport.close();
    await transport[Symbol.asyncDispose]();
    await assert.rejects(transport.pull(firstPull()), (error: unknown) => {
      assert.ok(error instanceof ClosedError);
      assert.equal(
        error.message,
        "Cannot pull 'todos' as the transport is closed",
      );
      return true;
    });
    await assert.rejects(transport.push([upsert("a")]), ClosedError);
    await assert.rejects(transport.push([]), ClosedError);
    assert.equal(server.requests.length, 1);
  } finally {
    gate.resolve();
    await server.close();
  }
});

Deno.test("rest: pull() and push() never throw synchronously", async () => {
  const transport = createRestTransport({
    baseUrl: "http://127.0.0.1:1",
    batch: false,
  });
  await transport.close();
  const pull = transport.pull(null as unknown as PullRequest);
  const push = transport.push(null as unknown as PushOp[]);
  assert.ok(pull instanceof Promise);
  assert.ok(push instanceof Promise);
  await assert.rejects(pull, ClosedError);
  await assert.rejects(push, ClosedError);
});
