/**
 * The REST transport's pull: the query it sends, the path encoding, the page
 * it returns, and how it maps a damaged answer, 410, another 4xx and 5xx.
 */

import assert from "node:assert/strict";
import {
  ParseError,
  RejectedError,
  ResyncRequiredError,
  ServerError,
} from "../src/errors.ts";
import { json, sequence, startScriptedServer } from "./_scripted_server.ts";
import {
  connect,
  firstPull,
  HTTP_DATE,
  record,
  recordSleeps,
  remove,
  T1,
  T2,
  upsert,
} from "./_rest_fixtures.ts";
import { withTimeout } from "./_timeout.ts";
import { createSyncServer, type ServerStore } from "../server/mod.ts";
import { createMemoryServerStore } from "../server/memory.ts";

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

Deno.test(
  "rest: the reference server fills a page up to maxPageBytes counted in UTF-8 bytes, also where a store ignores maxBytes",
  withTimeout(10_000, async () => {
    const inner = createMemoryServerStore();
    // Ignoring maxBytes, the store leaves the count to the handler alone.
    const store: ServerStore = {
      getRecord: (ns, kind, id) => inner.getRecord(ns, kind, id),
      listRecords(ns, kind, options) {
        const { maxBytes: _ignored, ...rest } = options;
        return inner.listRecords(ns, kind, rest);
      },
      getIdempotency: (ns, key) => inner.getIdempotency(ns, key),
      commit: (writes) => inner.commit(writes),
      purge: (options) => inner.purge(options),
      trimIdempotency: (ns, options) => inner.trimIdempotency(ns, options),
      lastWrite: (ns) => inner.lastWrite(ns),
      close: () => inner.close(),
      [Symbol.asyncDispose]: () => inner.close(),
    };
    const maxPageBytes = 8192;
    await using server = createSyncServer({ store, maxPageBytes });
    const t0 = Date.parse(T1);
    // ASCII (1 byte a unit), é (2), € (3), 😀 (4 bytes for 2 units); the
    // last page fits whole even at 3 bytes a unit: serialised at once.
    const cases = [
      ["a", "x", 700],
      ["b", "é", 700],
      ["c", "€", 700],
      ["d", "😀", 700],
      ["e", "€", 150],
      ["f", "x", 100],
    ] as const;
    for (const [kind, char, length] of cases) {
      const data = Array.from({ length: 12 }, (_, i) => ({
        id: `r${i}`,
        updated_at: new Date(t0 + i).toISOString(),
        text: char.repeat(length),
      }));
      await store.commit(data.map((item, i) => ({
        type: "record",
        namespace: "public",
        record: {
          kind,
          id: item.id,
          updatedAt: t0 + i,
          deletedAt: null,
          data: item,
        },
      })));
      // What fits: each item's UTF-8 bytes and a comma, within the page less
      // its envelope (2,048 bytes).
      let bytes = 0;
      let fits = 0;
      for (const item of data) {
        bytes += new TextEncoder().encode(JSON.stringify(item)).length + 1;
        if (fits > 0 && bytes > maxPageBytes - 2048) break;
        fits++;
      }
      const response = await server.fetch(
        new Request(`http://server/${kind}?limit=100`),
      );
      const text = await response.text();
      const page = JSON.parse(text) as {
        items: unknown[];
        nextPageToken: unknown;
      };
      assert.equal(page.items.length, fits, `${kind}: ${char}`);
      assert.equal(
        typeof page.nextPageToken,
        fits < data.length ? "string" : "object",
      );
      assert.ok(new TextEncoder().encode(text).length <= maxPageBytes);
    }
  }),
);
