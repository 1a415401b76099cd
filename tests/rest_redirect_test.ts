/**
 * The REST transport's redirects (issue 9, item 10): credentials never
 * follow a redirect to another origin; a same-origin one is followed within
 * limits, and a network error on the way is retried like any other.
 */

import assert from "node:assert/strict";
import { NetworkError, ServerError } from "../src/errors.ts";
import { json, startScriptedServer } from "./_scripted_server.ts";
import {
  connect,
  firstPull,
  idOf,
  record,
  recordSleeps,
  // These cases send ops with hostile ids: their keys must be visible
  // ASCII whatever the id.
  upsertAnyId as upsert,
} from "./_rest_fixtures.ts";

Deno.test("rest: credentials never follow a redirect to another origin", async () => {
  // Two servers on two ports: two origins.
  await using other = startScriptedServer(() => json({ items: [] }));
  await using server = startScriptedServer((request) =>
    new Response(null, {
      status: request.method === "GET" ? 302 : 307,
      headers: { location: `${other.url}${request.path}` },
    })
  );
  const sleeps = recordSleeps();
  await using transport = connect(server, {
    batch: "auto",
    headers: { "x-api-key": "k-123" },
    token: () => "secret",
    sleep: sleeps.sleep,
    concurrency: 1,
  });
  await assert.rejects(transport.pull(firstPull()), (error: unknown) => {
    assert.ok(error instanceof ServerError);
    assert.equal(error.code, "redirect");
    assert.equal(error.status, 302);
    assert.equal(error.retryable, false);
    assert.equal(
      error.message,
      `Cannot pull 'todos' as the server redirected it to another origin: current value is "${other.url}"`,
    );
    return true;
  });
  const results = await transport.push([upsert("a"), upsert("b")]);
  for (const result of results) {
    // Kept queued: the server may be fixed; nothing was sent elsewhere.
    assert.ok(result.type === "retry" && result.error instanceof ServerError);
    assert.equal(result.error.code, "redirect");
  }
  // The health check, the pull, one write: then the call stopped.
  assert.deepEqual(
    server.requests.map((request) => `${request.method} ${request.path}`),
    ["GET /todos", "GET /health", "PUT /todos/a"],
  );
  assert.equal(other.requests.length, 0);
  assert.deepEqual(sleeps.delays, []);
});

Deno.test("rest: a same-origin redirect is followed with the credentials, within limits", async () => {
  await using server = startScriptedServer((request) => {
    const { path, method } = request;
    if (path === "/old/todos") {
      return new Response(null, {
        status: 301,
        headers: { location: "/todos" },
      });
    }
    if (path === "/loop/todos") {
      return new Response(null, { status: 302, headers: { location: path } });
    }
    if (path === "/nowhere/todos") return new Response(null, { status: 302 });
    if (path.startsWith("/old/") && method === "PUT") {
      const status = idOf(request) === "see-other" ? 303 : 308;
      return new Response(null, {
        status,
        headers: { location: path.slice(4) },
      });
    }
    if (method === "GET") return json({ items: [record("a")] });
    return json(record(idOf(request), { echo: request.body }), 201);
  });
  const options = {
    headers: { "x-api-key": "k-123" },
    token: () => "secret",
    retry: { attempts: 1 },
  };
  await using moved = connect(server, {
    ...options,
    baseUrl: `${server.url}/old`,
  });
  const page = await moved.pull(firstPull());
  assert.deepEqual(page.items, [record("a")]);
  const [put, seeOther] = await moved.push([
    upsert("a"),
    upsert("see-other"),
  ]);
  // 308 keeps the method and body.
  assert.ok(put?.type === "ok");
  assert.equal(put.record?.echo, JSON.stringify({ id: "a", title: "title" }));
  // 303 would make the PUT a GET: not followed.
  assert.ok(
    seeOther?.type === "retry" && seeOther.error instanceof ServerError &&
      seeOther.error.code === "redirect",
  );
  const followed = server.requests.filter((request) =>
    !request.path.startsWith("/old/")
  );
  assert.deepEqual(
    followed.map((request) => `${request.method} ${request.path}`),
    ["GET /todos", "PUT /todos/a"],
  );
  for (const request of followed) {
    assert.equal(request.headers.get("x-api-key"), "k-123");
    assert.equal(request.headers.get("authorization"), "Bearer secret");
  }

  await using looping = connect(server, {
    ...options,
    baseUrl: `${server.url}/loop`,
  });
  await assert.rejects(
    looping.pull(firstPull()),
    /redirected it more than 5 times/,
  );
  assert.equal(
    server.requests.filter((request) => request.path === "/loop/todos").length,
    6,
  );
  await using nowhere = connect(server, {
    ...options,
    baseUrl: `${server.url}/nowhere`,
  });
  await assert.rejects(
    nowhere.pull(firstPull()),
    /redirected it without a valid Location: current value is null$/,
  );
});

Deno.test("rest: a network error while following a redirect is retried like any other", async () => {
  const gone = startScriptedServer(() => json({}));
  const url = gone.url;
  await gone.close();
  await using server = startScriptedServer(() =>
    new Response(null, { status: 307, headers: { location: "/dead/todos" } })
  );
  // Same origin, but the injected fetch fails the second hop.
  await using transport = connect(server, {
    retry: { attempts: 2 },
    fetch(input, init): Promise<Response> {
      return String(input).includes("/dead/")
        ? fetch(`${url}/todos`, init)
        : fetch(input, init);
    },
  });
  await assert.rejects(transport.pull(firstPull()), NetworkError);
  assert.equal(server.requests.length, 2);
});
