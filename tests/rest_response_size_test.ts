/**
 * The REST transport caps what it reads (issue 9, item 2): a body over
 * `maxResponseBytes` is cancelled as it streams (or refused by its
 * `Content-Length`), a compressed one is capped on its decoded size, and
 * hostile headers neither throw nor count.
 */

import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { createRestTransport } from "../transport/rest.ts";
import { ParseError } from "../src/errors.ts";
import { json, startScriptedServer } from "./_scripted_server.ts";
import {
  connect,
  firstPull,
  idOf,
  opsOf,
  record,
  recordSleeps,
  // These cases send ops with hostile ids: their keys must be visible
  // ASCII whatever the id.
  upsertAnyId as upsert,
} from "./_rest_fixtures.ts";

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
