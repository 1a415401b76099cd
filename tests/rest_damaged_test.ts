/**
 * The REST transport against damaged answers (issue 9, item 14): a `2xx`
 * or `409` that is cut short, not UTF-8 JSON or not of the contract's shape
 * is a retryable `ParseError`, re-sent with the same key like a lost one.
 */

import assert from "node:assert/strict";
import { ParseError } from "../src/errors.ts";
import { json, sequence, startScriptedServer } from "./_scripted_server.ts";
import {
  connect,
  firstPull,
  idOf,
  opsOf,
  record,
  recordSleeps,
  T1,
  // These cases send ops with hostile ids: their keys must be visible
  // ASCII whatever the id.
  upsertAnyId as upsert,
} from "./_rest_fixtures.ts";

/** A JSON body whose `\xff` characters become bytes 0xff (not UTF-8). */
function notUtf8(value: unknown): Uint8Array<ArrayBuffer> {
  const text = JSON.stringify(value);
  const parts = text.split("\xff").map((part) =>
    new TextEncoder().encode(part)
  );
  const bytes: number[] = [];
  parts.forEach((part, i) => bytes.push(...(i === 0 ? [] : [0xff]), ...part));
  return new Uint8Array(bytes);
}

Deno.test("rest: pull() retries a damaged 2xx page and returns the whole one", async () => {
  const damaged: [string, () => Response][] = [
    ["cut short", () => new Response('{"items": [{"id": "a"')],
    ["not JSON", () => new Response("<html>portal</html>")],
    // Still JSON once the bad byte becomes U+FFFD: never stored like that.
    ["not UTF-8", () => new Response(notUtf8({ items: [record("a\xff")] }))],
    ["wrong shape", () => json({ items: "nope", nextPageToken: null })],
    ["bad token", () => json({ items: [], nextPageToken: 7 })],
  ];
  for (const [name, answer] of damaged) {
    const sleeps = recordSleeps();
    await using server = startScriptedServer(
      sequence(answer, () => json({ items: [record("a")] })),
    );
    await using transport = connect(server, { sleep: sleeps.sleep });
    const page = await transport.pull(firstPull());
    assert.deepEqual(page.items, [record("a")], name);
    assert.equal(server.requests.length, 2, name);
    assert.equal(sleeps.delays.length, 1, name);
  }
});

Deno.test("rest: pull() passes items through raw: checking each is the engine's job", async () => {
  const items = [record("a"), 5, null, "x", [1], { id: 3 }];
  await using server = startScriptedServer(() =>
    json({ items, nextPageToken: null })
  );
  await using transport = connect(server);
  const page = await transport.pull(firstPull());
  assert.deepEqual(page.items, items);
  assert.equal(server.requests.length, 1);
});

Deno.test("rest: a valid UTF-8 body carrying U+FFFD itself is taken as it is, a body with bad bytes beside it is not", async () => {
  // The replacement character is data like any other: only bytes that are
  // not UTF-8 make an answer damaged, wherever the character also appears.
  const title = "a\uFFFDb";
  await using server = startScriptedServer(
    sequence(
      () => json({ items: [record(title)], nextPageToken: null }),
      () => new Response(notUtf8({ items: [record("\uFFFD\xff")] })),
      () => json({ items: [record("c")], nextPageToken: null }),
    ),
  );
  const sleeps = recordSleeps();
  await using transport = connect(server, { sleep: sleeps.sleep });
  const page = await transport.pull(firstPull());
  assert.deepEqual(page.items, [record(title)]);
  assert.equal(server.requests.length, 1);
  const next = await transport.pull(firstPull());
  assert.deepEqual(next.items, [record("c")]);
  assert.equal(server.requests.length, 3);
  assert.equal(sleeps.delays.length, 1);
});

Deno.test("rest: a body with a UTF-8 BOM is read as JSON", async () => {
  const bom = new Uint8Array([0xef, 0xbb, 0xbf]);
  function withBom(value: unknown, status = 200): Response {
    const text = new TextEncoder().encode(JSON.stringify(value));
    return new Response(new Uint8Array([...bom, ...text]), { status });
  }
  await using server = startScriptedServer((request) =>
    request.method === "GET"
      ? withBom({ items: [record("a")], nextPageToken: null })
      : withBom(record("b"), 201)
  );
  await using transport = connect(server, { retry: { attempts: 1 } });
  const page = await transport.pull(firstPull());
  assert.deepEqual(page.items, [record("a")]);
  const [result] = await transport.push([upsert("b")]);
  assert.ok(result?.type === "ok");
  assert.deepEqual(result.record, record("b"));
});

Deno.test("rest: push() retries a damaged answer, single or batch, with the same key", async () => {
  const single = startScriptedServer(
    sequence(
      () => new Response("<html>portal</html>", { status: 200 }),
      () => new Response(new Uint8Array([0xc3]), { status: 201 }),
      () => json(["not", "a", "record"], 201),
      () => json(record("a"), 201),
    ),
  );
  const batch = startScriptedServer(
    sequence(
      () => json({ results: [] }),
      (request) =>
        json({
          results: opsOf(request).map((op) => ({
            opId: op.opId,
            status: 201,
            record: record(String(op.id)),
          })),
        }),
    ),
  );
  try {
    await using one = connect(single);
    const [result] = await one.push([upsert("a")]);
    assert.equal(result?.type, "ok");
    assert.deepEqual(
      single.requests.map((request) => request.headers.get("idempotency-key")),
      Array(4).fill(upsert("a").key),
    );
    await using many = connect(batch, { batch: true });
    const results = await many.push([upsert("a"), upsert("b")]);
    assert.deepEqual(results.map((r) => r.type), ["ok", "ok"]);
    assert.equal(batch.requests.length, 2);
    assert.deepEqual(opsOf(batch.requests[0]!), opsOf(batch.requests[1]!));
  } finally {
    await single.close();
    await batch.close();
  }
});

Deno.test("rest: push() reports a damaged answer as a retryable ParseError for its op alone, and the others go on", async () => {
  await using server = startScriptedServer((request) =>
    idOf(request) === "a"
      ? new Response("<html>portal</html>")
      : json(record(idOf(request)), 201)
  );
  await using transport = connect(server, {
    concurrency: 1,
    retry: { attempts: 2 },
  });
  const results = await transport.push([upsert("a"), upsert("b")]);
  const [first, second] = results;
  assert.ok(first?.type === "retry" && first.error instanceof ParseError);
  assert.equal(first.error.retryable, true);
  assert.equal(first.error.status, 200);
  assert.equal(second?.type, "ok");
  assert.deepEqual(server.requests.map(idOf), ["a", "a", "b"]);
});

Deno.test("rest: push() reports a 409 whose record is not an object as damaged, never as a conflict", async () => {
  const answers: Record<string, unknown> = {
    "current-string": { error: "conflict", current: "x" },
    "current-array": { error: "conflict", current: [record("a")] },
    "serverData-number": { error: "conflict", serverData: 5 },
    "stamp-number": {
      error: "conflict",
      current: record("a"),
      serverTimestamp: 5,
    },
    "body-array": [1],
  };
  await using server = startScriptedServer((request) => {
    const id = idOf(request);
    if (id === "html") return new Response("<html>", { status: 409 });
    if (id === "not-utf8") {
      return new Response(notUtf8({ current: record("a\xff") }), {
        status: 409,
      });
    }
    if (id === "null-current") {
      return json({ current: null, serverData: record(id) }, 409);
    }
    return json(answers[id], 409);
  });
  await using transport = connect(server, { retry: { attempts: 1 } });
  const ids = [...Object.keys(answers), "html", "not-utf8"];
  const results = await transport.push(
    [...ids, "null-current"].map((id) => upsert(id, { baseUpdatedAt: T1 })),
  );
  ids.forEach((id, i) => {
    const result = results[i];
    assert.equal(result?.type, "retry", id);
    assert.ok(result?.type === "retry" && result.error instanceof ParseError);
    assert.equal(result.error.retryable, true, id);
    assert.equal(result.error.status, 409, id);
  });
  assert.deepEqual(results.at(-1), {
    type: "conflict",
    current: record("null-current"),
    serverTimestamp: T1,
    serverDate: (results.at(-1) as { serverDate: number }).serverDate,
  });
});

Deno.test("rest: push() isolates a damaged batch result to its op", async () => {
  await using server = startScriptedServer((request) => {
    const [a, b, c, d] = opsOf(request);
    return json({
      // Out of order on purpose: results are matched by opId.
      results: [
        { opId: b!.opId, status: 409, error: { current: "not a record" } },
        { opId: a!.opId, status: 201, record: record("a") },
        { opId: d!.opId, status: 302 },
        { opId: c!.opId, status: 409, error: { current: record("c") } },
      ],
    });
  });
  await using transport = connect(server, { batch: true });
  const results = await transport.push(
    ["a", "b", "c", "d"].map((id) => upsert(id, { baseUpdatedAt: T1 })),
  );
  assert.equal(results[0]?.type, "ok");
  for (const index of [1, 3]) {
    const result = results[index];
    assert.ok(result?.type === "retry" && result.error instanceof ParseError);
    assert.equal(result.error.retryable, true);
    assert.match(
      result.error.message,
      new RegExp(`^Cannot push the upsert of 'todos/${"abcd"[index]}' as `),
    );
  }
  assert.equal(results[2]?.type, "conflict");
  assert.equal(server.requests.length, 1);
});
