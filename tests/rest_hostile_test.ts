/**
 * The REST transport against hostile values and a hostile or broken peer
 * (issue 9): ops that break the contract's limits, damaged answers,
 * oversized bodies, redirects to another origin, huge `Retry-After`s.
 */
import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import {
  createRestTransport,
  type RestTransportOptions,
} from "../transport/rest.ts";
import {
  NetworkError,
  ParseError,
  ServerError,
  ValidationError,
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
  type ScriptedHandler,
  type ScriptedServer,
  sequence,
  startScriptedServer,
} from "./_scripted_server.ts";

const T1 = "2025-03-01T10:00:00.000Z";
const MAX_TIMER_MS = 2_147_483_647;
const HOUR_MS = 3_600_000;

function record(id: string, extra: JsonObject = {}): JsonObject {
  return { id, updated_at: T1, ...extra };
}

function upsert(id: string, extra: Partial<PushOp> = {}): PushOp {
  return {
    opId: `op-${extra.key ?? id}`,
    key: `key-${id.length > 32 ? id.length : encodeURIComponentSafe(id)}`,
    kind: "todos",
    id,
    type: "upsert",
    payload: { id, title: `title` },
    baseUpdatedAt: null,
    force: false,
    ...extra,
  };
}

/** A visible-ASCII key for any id (the key is a header). */
function encodeURIComponentSafe(id: string): string {
  return [...id].map((c) => c.codePointAt(0)!.toString(16)).join("-");
}

function firstPull(extra: Partial<PullRequest> = {}): PullRequest {
  return {
    kind: "todos",
    updatedSince: null,
    afterId: null,
    limit: 50,
    pageToken: null,
    ...extra,
  };
}

interface Sleeps {
  readonly delays: number[];
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

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

function opsOf(request: RecordedRequest): JsonObject[] {
  return (request.json as { ops: JsonObject[] }).ops;
}

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

// --- Item 1 and 12: an op that breaks the limits is refused alone ---------

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

// --- Item 14: a damaged answer is retryable, retried like a lost one ------

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

// --- Item 2: the client caps what it reads --------------------------------

/** A fetch answering with a body of `chunks` chunks of 64 KiB, counting reads. */
function streamingFetch(
  chunks: number,
  headers: HeadersInit = {},
): { fetch: typeof fetch; pulled: () => number; cancelled: Promise<void> } {
  let pulled = 0;
  const cancelled = Promise.withResolvers<void>();
  function fetchBody(): Promise<Response> {
    const body = new ReadableStream<Uint8Array>({
      pull(controller): void {
        if (pulled === chunks) return controller.close();
        pulled++;
        controller.enqueue(new Uint8Array(65_536).fill(0x20));
      },
      cancel(): void {
        cancelled.resolve();
      },
    }, { highWaterMark: 0 });
    return Promise.resolve(new Response(body, { headers }));
  }
  return {
    fetch: fetchBody,
    pulled: () => pulled,
    cancelled: cancelled.promise,
  };
}

Deno.test("rest: a body over maxResponseBytes is cancelled as it streams, with a non-retryable ParseError naming the option", async () => {
  const body = streamingFetch(1_000);
  await using transport = createRestTransport({
    baseUrl: "http://127.0.0.1:1",
    fetch: body.fetch,
    maxResponseBytes: 1_048_576,
    sleep: recordSleeps().sleep,
  });
  await assert.rejects(transport.pull(firstPull()), (error: unknown) => {
    assert.ok(error instanceof ParseError);
    assert.equal(error.retryable, false);
    assert.match(
      error.message,
      /^Cannot pull 'todos' as the response is larger than 'maxResponseBytes' allows \(raise the option to read it\): current value is at least 1114112 bytes$/,
    );
    return true;
  });
  await body.cancelled;
  // The cap (16 chunks) and the one chunk that passed it: nothing more.
  assert.equal(body.pulled(), 17);
});

Deno.test("rest: a chunked body over maxResponseBytes from a real server is cut off", async () => {
  const cancelled = Promise.withResolvers<void>();
  let sent = 0;
  await using server = startScriptedServer(() =>
    new Response(
      new ReadableStream<Uint8Array>({
        pull(controller): void {
          if (sent === 256) return controller.close();
          sent++;
          controller.enqueue(new Uint8Array(65_536).fill(0x20));
        },
        cancel(): void {
          cancelled.resolve();
        },
      }),
    )
  );
  await using transport = connect(server, { maxResponseBytes: 1_048_576 });
  // 16 MiB offered: the client stops after 1 MiB and hangs up.
  await assert.rejects(
    transport.pull(firstPull()),
    /'maxResponseBytes'.+current value is at least \d+ bytes$/,
  );
  await cancelled.promise;
  assert.ok(sent < 256, `${sent} chunks sent`);
  assert.equal(server.requests.length, 1);
});

Deno.test("rest: a compressed body is capped on its decoded size, not its Content-Length", async () => {
  // 10 MB of spaces in about 10 KB of gzip (a "gzip bomb").
  const bomb = new Uint8Array(gzipSync(new Uint8Array(10_000_000).fill(0x20)));
  await using server = startScriptedServer(() =>
    new Response(bomb, {
      headers: {
        "content-encoding": "gzip",
        "content-length": String(bomb.byteLength),
      },
    })
  );
  await using transport = connect(server, { maxResponseBytes: 1_048_576 });
  await assert.rejects(transport.pull(firstPull()), (error: unknown) => {
    assert.ok(error instanceof ParseError);
    assert.equal(error.retryable, false);
    assert.match(error.message, /'maxResponseBytes'/);
    return true;
  });
});

Deno.test("rest: a Content-Length over maxResponseBytes is refused before reading", async () => {
  const body = streamingFetch(1_000, { "content-length": "65536000" });
  await using transport = createRestTransport({
    baseUrl: "http://127.0.0.1:1",
    fetch: body.fetch,
    maxResponseBytes: 1_048_576,
  });
  await assert.rejects(
    transport.pull(firstPull()),
    /current value is 65536000 bytes$/,
  );
  await body.cancelled;
  assert.equal(body.pulled(), 0);
});

Deno.test("rest: an answer over maxResponseBytes rejects a single write alone, and sends a batch's ops one by one", async () => {
  const big = "x".repeat(4_096);
  await using server = startScriptedServer((request) => {
    if (request.path === "/batch") {
      return json({
        results: opsOf(request).map((op) => ({
          opId: op.opId,
          status: 201,
          record: record(String(op.id), { big }),
        })),
      });
    }
    const id = idOf(request);
    return json(record(id, id === "huge" ? { big: big.repeat(2) } : {}), 201);
  });
  const options = { maxResponseBytes: 6_000, concurrency: 1 };
  await using single = connect(server, options);
  const results = await single.push([upsert("huge"), upsert("a")]);
  assert.ok(results[0]?.type === "rejected");
  assert.ok(results[0].error instanceof ParseError);
  assert.equal(results[0].error.retryable, false);
  assert.match(results[0].error.message, /'maxResponseBytes'/);
  assert.equal(results[1]?.type, "ok");
  // Not retried: a server that sends too much is not asked again at once.
  assert.deepEqual(server.requests.map(idOf), ["huge", "a"]);

  await using batched = connect(server, { ...options, batch: true });
  const again = await batched.push([upsert("b"), upsert("c")]);
  assert.deepEqual(again.map((result) => result.type), ["ok", "ok"]);
  assert.deepEqual(
    server.requests.slice(2).map((request) => request.path),
    ["/batch", "/todos/b", "/todos/c"],
  );
});

Deno.test("rest: the default maxResponseBytes reads a page above the contract's 4 MiB", async () => {
  const items = Array.from(
    { length: 5 },
    (_, i) => record(`r${i}`, { blob: "y".repeat(1_048_576) }),
  );
  await using server = startScriptedServer(() =>
    json({ items, nextPageToken: null })
  );
  await using transport = connect(server);
  const page = await transport.pull(firstPull());
  assert.equal(page.items.length, 5);
});

Deno.test("rest: createRestTransport() validates maxResponseBytes, batchSize and every delay", () => {
  const bad: [Partial<RestTransportOptions>, ErrorConstructor][] = [
    [{ maxResponseBytes: 0 }, RangeError],
    [{ maxResponseBytes: 1.5 }, RangeError],
    [{ maxResponseBytes: Infinity }, RangeError],
    [{ maxResponseBytes: "1" as unknown as number }, TypeError],
    [{ batchSize: 1_001 }, RangeError],
    [{ timeoutMs: MAX_TIMER_MS + 1 }, RangeError],
    [{ timeoutMs: NaN }, RangeError],
    [{ retry: { baseDelayMs: MAX_TIMER_MS + 1 } }, RangeError],
    [{ retry: { maxDelayMs: MAX_TIMER_MS + 1 } }, RangeError],
    [{ retry: { maxDelayMs: NaN } }, RangeError],
    [{ retry: { baseDelayMs: "5" as unknown as number } }, TypeError],
  ];
  for (const [options, type] of bad) {
    assert.throws(
      () => createRestTransport({ baseUrl: "http://127.0.0.1:1", ...options }),
      (error: unknown) => {
        assert.ok(error instanceof type, JSON.stringify(options));
        assert.match(
          (error as Error).message,
          /^Cannot create REST transport as '.+' .+: current value is /,
        );
        return true;
      },
    );
  }
  createRestTransport({
    baseUrl: "http://127.0.0.1:1",
    maxResponseBytes: 1,
    batchSize: 1_000,
    timeoutMs: MAX_TIMER_MS,
    retry: { baseDelayMs: MAX_TIMER_MS, maxDelayMs: MAX_TIMER_MS },
  });
});

// --- Item 9: every wait stays within the timer and a documented maximum ---

/** Answers 503 then 429 with the given `Retry-After`, then an empty page. */
function retryAfterTwice(value: string): ScriptedHandler {
  return sequence(
    () => new Response("", { status: 503, headers: { "retry-after": value } }),
    () => new Response("", { status: 429, headers: { "retry-after": value } }),
    () => json({ items: [] }),
  );
}

Deno.test("rest: a huge Retry-After is read as one hour: never a near-zero wait, never past the timer", async () => {
  const huge = [
    "99999999999999999999",
    "9".repeat(1_000),
    "Fri, 31 Dec 9999 23:59:59 GMT",
  ];
  for (const value of huge) {
    const sleeps = recordSleeps();
    await using server = startScriptedServer(retryAfterTwice(value));
    // Reported, not waited, under the default cap on waits.
    await using capped = connect(server, { sleep: sleeps.sleep });
    const [result] = await capped.push([upsert("a")]);
    assert.ok(result?.type === "retry", value.slice(0, 20));
    assert.equal(result.retryAfterMs, HOUR_MS, value.slice(0, 20));
    await assert.rejects(capped.pull(firstPull()), (error: unknown) => {
      assert.ok(error instanceof ServerError);
      assert.equal(error.retryAfterMs, HOUR_MS);
      return true;
    });
    assert.deepEqual(sleeps.delays, []);
    // Waited, when the cap on waits allows it: one hour, within the timer.
    await using fresh = startScriptedServer(retryAfterTwice(value));
    await using patient = connect(fresh, {
      sleep: sleeps.sleep,
      retry: { maxDelayMs: MAX_TIMER_MS },
    });
    await patient.pull(firstPull());
    assert.deepEqual(sleeps.delays, [HOUR_MS, HOUR_MS], value.slice(0, 20));
  }
});

Deno.test("rest: a timeoutMs at the timer's maximum arms no timer past it", async () => {
  await using server = startScriptedServer(async () => {
    await new Promise((resolve) => setTimeout(resolve, 20));
    return json({ items: [record("a")] });
  });
  await using transport = connect(server, {
    timeoutMs: MAX_TIMER_MS,
    retry: { attempts: 1 },
  });
  // A longer timer would fire after 1 ms, and again, and again.
  const armed: number[] = [];
  const original = globalThis.setTimeout;
  globalThis.setTimeout = ((fn: () => void, ms?: number) => {
    armed.push(ms ?? 0);
    return original(fn, ms);
  }) as typeof setTimeout;
  try {
    const page = await transport.pull(firstPull());
    assert.deepEqual(page.items, [record("a")]);
  } finally {
    globalThis.setTimeout = original;
  }
  assert.ok(armed.length > 0);
  assert.ok(armed.every((ms) => ms <= MAX_TIMER_MS), `${armed}`);
});

Deno.test("rest: hostile headers (a huge Date, a bad Content-Length) neither throw nor count", async () => {
  await using server = startScriptedServer(() =>
    json({ items: [record("a")] }, 200, {
      date: "x".repeat(60_000),
      "x-junk": "y".repeat(60_000),
    })
  );
  await using transport = connect(server);
  const page = await transport.pull(firstPull());
  assert.deepEqual(page.items, [record("a")]);
  assert.equal(page.serverDate, undefined);
  const lying = streamingFetch(1, { "content-length": "not a number" });
  await using other = createRestTransport({
    baseUrl: "http://127.0.0.1:1",
    fetch: lying.fetch,
    retry: { attempts: 1 },
  });
  // 64 KiB of spaces: read in full, then found not to be JSON.
  await assert.rejects(other.pull(firstPull()), (error: unknown) => {
    assert.ok(error instanceof ParseError);
    assert.equal(error.retryable, true);
    return true;
  });
});

// --- Item 10: credentials never follow a redirect to another origin -------

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
