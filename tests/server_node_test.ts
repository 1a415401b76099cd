/**
 * The `node:http` adapter (`server/node.ts`), run here on Deno's
 * `node:http` (tests/node_test.ts runs it on Node 22 itself): the whole
 * backend kit passes through it, bodies are bounded, a client that goes
 * away aborts the request's signal, and headers and errors come through.
 *
 * @module
 */

import assert from "node:assert/strict";
import { bearerAuth, createSyncServer } from "../server/mod.ts";
import { serveNode, toNodeListener } from "../server/node.ts";
import { testBackend } from "../testing/backend.ts";
import { withTimeout } from "./_timeout.ts";
import { Hono } from "hono";

Deno.test(
  "node adapter: the backend kit passes on the reference server served by node:http",
  withTimeout(60_000, async () => {
    await using server = createSyncServer({
      auth: bearerAuth({
        "node-token-alice-01": "alice",
        "node-token-bob-002": "bob",
      }),
    });
    await using http = await serveNode(server.fetch, { port: 0 });
    const result = await testBackend(`http://127.0.0.1:${http.port}`, {
      credentials: [
        { authorization: "Bearer node-token-alice-01" },
        { authorization: "Bearer node-token-bob-002" },
      ],
      purgeTombstones: async () => {
        await server.purgeTombstones({ olderThan: Number.MAX_SAFE_INTEGER });
      },
    });
    assert.equal(
      result.ok,
      true,
      result.checks.map((c) => `${c.status} ${c.name}: ${c.message}`).join(
        "\n",
      ),
    );
    assert.ok(result.checks.every((check) => check.status === "pass"));
  }),
);

Deno.test("node adapter: a body over maxBodyBytes is 413 and never reaches the handler", async () => {
  let calls = 0;
  await using http = await serveNode((request) => {
    calls++;
    return new Response(request.body);
  }, { port: 0, maxBodyBytes: 10 });
  const base = `http://127.0.0.1:${http.port}`;
  const small = await fetch(base, { method: "POST", body: "0123456789" });
  assert.equal(small.status, 200);
  assert.equal(await small.text(), "0123456789");
  const large = await fetch(base, { method: "POST", body: "01234567890" });
  assert.equal(large.status, 413);
  assert.equal((await large.json()).error, "payload_too_large");
  // Without a content-length, the bound holds while reading.
  const chunked = await fetch(base, {
    method: "POST",
    body: ReadableStream.from(["01234", "56789", "0"]).pipeThrough(
      new TextEncoderStream(),
    ),
  });
  assert.equal(chunked.status, 413);
  await chunked.body?.cancel();
  assert.equal(calls, 1);
});

Deno.test(
  "node adapter: a client that goes away aborts the request's signal and cancels the body",
  withTimeout(10_000, async () => {
    const { promise: aborted, resolve: onAbort } = Promise.withResolvers<
      void
    >();
    const { promise: cancelled, resolve: onCancel } = Promise.withResolvers<
      void
    >();
    await using http = await serveNode((request) => {
      request.signal.addEventListener("abort", () => onAbort());
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode(": live\n\n"));
        },
        cancel() {
          onCancel();
        },
      });
      return new Response(body, {
        headers: { "content-type": "text/event-stream" },
      });
    }, { port: 0 });
    const client = new AbortController();
    const response = await fetch(`http://127.0.0.1:${http.port}/live`, {
      signal: client.signal,
    });
    const reader = response.body!.getReader();
    const first = await reader.read();
    assert.equal(new TextDecoder().decode(first.value), ": live\n\n");
    client.abort();
    await reader.cancel().catch(() => {});
    await aborted;
    await cancelled;
  }),
);

Deno.test("node adapter: status, headers, HEAD and a throwing handler", async () => {
  const errors: unknown[] = [];
  await using http = await serveNode((request) => {
    if (request.url.endsWith("/throw")) throw new Error("boom");
    const headers = new Headers({ "x-path": new URL(request.url).pathname });
    headers.append("set-cookie", "a=1");
    headers.append("set-cookie", "b=2");
    return new Response(`hello ${request.headers.get("x-name")}`, {
      status: 202,
      headers,
    });
  }, { port: 0, onError: (error) => errors.push(error) });
  const base = `http://127.0.0.1:${http.port}`;
  const answer = await fetch(`${base}/a%2Fb?q=1`, {
    headers: { "x-name": "node" },
  });
  assert.equal(answer.status, 202);
  assert.equal(answer.headers.get("x-path"), "/a%2Fb");
  assert.deepEqual(answer.headers.getSetCookie(), ["a=1", "b=2"]);
  assert.equal(await answer.text(), "hello node");
  const head = await fetch(base, { method: "HEAD" });
  assert.equal(head.status, 202);
  assert.equal(await head.text(), "");
  const thrown = await fetch(`${base}/throw`);
  assert.equal(thrown.status, 500);
  assert.equal((await thrown.json()).error, "internal");
  assert.equal(errors.length, 1);
  assert.throws(
    () => toNodeListener(() => new Response(), { maxBodyBytes: 0 }),
    RangeError,
  );
});

Deno.test(
  "node adapter: close() ends open event streams and is idempotent",
  withTimeout(10_000, async () => {
    await using server = createSyncServer();
    const http = await serveNode(server.fetch, { port: 0 });
    const response = await fetch(`http://127.0.0.1:${http.port}/live`);
    assert.equal(response.status, 200);
    const reader = response.body!.getReader();
    await reader.read();
    await Promise.all([http.close(), http.close()]);
    // The stream ends (or errors) instead of hanging.
    await reader.read().then(() => {}, () => {});
    await reader.cancel().catch(() => {});
  }),
);

Deno.test(
  "node adapter: a Hono app mounts the sync server under /sync and serveNode serves it; the kit passes there",
  withTimeout(60_000, async () => {
    await using sync = createSyncServer({ basePath: "/sync" });
    const app = new Hono();
    app.get("/", (c) => c.text("my app"));
    app.all("/sync/*", (c) => sync.fetch(c.req.raw));
    await using http = await serveNode(app.fetch, { port: 0 });
    const base = `http://127.0.0.1:${http.port}`;
    assert.equal(await (await fetch(base)).text(), "my app");
    const result = await testBackend(`${base}/sync`);
    assert.equal(
      result.ok,
      true,
      result.checks.map((c) => `${c.status} ${c.name}: ${c.message}`).join(
        "\n",
      ),
    );
  }),
);
