/**
 * The REST transport's credentials: the bearer token, one refresh on a 401
 * shared by the requests refused together, and `AuthError` after it.
 */

import assert from "node:assert/strict";
import { AuthError } from "../src/errors.ts";
import { json, startScriptedServer } from "./_scripted_server.ts";
import { connect, firstPull, idOf, record, upsert } from "./_rest_fixtures.ts";

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
