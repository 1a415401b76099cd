/**
 * The REST transport's live hints (`transport.live()`, CONTRACT.md §Live
 * hint): the stream is read with fetch and the transport's headers, each
 * status has its error, and hostile bytes are skipped and reported without
 * ending the stream or growing a buffer.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  AuthError,
  ClosedError,
  NetworkError,
  ParseError,
  ServerError,
  type SyncError,
} from "../mod.ts";
import { createSyncServer } from "../server/mod.ts";
import type { LiveHint, Transport } from "../src/transport.ts";
import { createRestTransport } from "../transport/rest.ts";
import { MAX_SSE_LINE, SseParser } from "../transport/_rest_sse.ts";
import { json, startScriptedServer } from "./_scripted_server.ts";
import { bearer, options } from "./_server_http.ts";
import { withTimeout } from "./_timeout.ts";

const encoder = new TextEncoder();

/** A response whose body streams `chunks`, then stays open until cancelled. */
function eventStream(
  chunks: readonly (string | Uint8Array)[],
  { end = false } = {},
): Response {
  let index = 0;
  return new Response(
    new ReadableStream<Uint8Array>({
      pull(controller): Promise<void> | void {
        const chunk = chunks[index++];
        if (chunk === undefined) {
          if (end) controller.close();
          return new Promise(() => {}); // open until the reader cancels
        }
        controller.enqueue(
          typeof chunk === "string" ? encoder.encode(chunk) : chunk,
        );
        return undefined;
      },
    }, { highWaterMark: 0 }),
    { headers: { "content-type": "text/event-stream" } },
  );
}

/** Reads `count` hints (or until the stream ends), then stops. */
async function take(
  transport: Transport,
  count: number,
  problems: SyncError[] = [],
): Promise<LiveHint[]> {
  const controller = new AbortController();
  const hints: LiveHint[] = [];
  try {
    for await (
      const hint of transport.live!({
        signal: controller.signal,
        onProblem: (error) => problems.push(error),
      })
    ) {
      hints.push(hint);
      if (hints.length >= count) break;
    }
  } finally {
    controller.abort();
  }
  return hints;
}

Deno.test(
  "rest live: hints from the reference server, with the token, after an open hint",
  withTimeout(10_000, async () => {
    await using server = createSyncServer(options({ auth: bearer }));
    await using http = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen() {} },
      server.fetch,
    );
    const baseUrl = `http://127.0.0.1:${http.addr.port}`;
    await using transport = createRestTransport({
      baseUrl,
      token: () => "alice",
    });
    const controller = new AbortController();
    const iterator = transport.live!({ signal: controller.signal })
      [Symbol.asyncIterator]();
    assert.deepEqual((await iterator.next()).value, { kinds: [] });
    const put = await fetch(`${baseUrl}/todos/1`, {
      method: "PUT",
      headers: { authorization: "Bearer alice", "idempotency-key": "k1" },
      body: JSON.stringify({ id: "1" }),
    });
    assert.equal(put.status, 201, await put.text());
    assert.deepEqual((await iterator.next()).value, { kinds: ["todos"] });
    controller.abort();
    assert.equal((await iterator.next()).done, true, "ends quietly on abort");
  }),
);

Deno.test("rest live: statuses end the iteration with typed errors", async (t) => {
  const cases: [string, () => Response, (error: unknown) => void][] = [
    ["404", () => json({ error: "not_found" }, 404), (error) => {
      assert.ok(error instanceof ServerError);
      assert.equal(error.code, "live_unsupported");
      assert.equal(error.retryable, false);
    }],
    ["200 JSON", () => json({ items: [] }), (error) => {
      assert.ok(error instanceof ServerError);
      assert.equal(error.code, "live_unsupported");
    }],
    ["401", () => json({ error: "unauthorized" }, 401), (error) => {
      assert.ok(error instanceof AuthError, String(error));
    }],
    [
      "429",
      () => json({ error: "too_many_streams" }, 429, { "retry-after": "7" }),
      (error) => {
        assert.ok(error instanceof ServerError);
        assert.equal(error.retryable, true);
        assert.equal(error.retryAfterMs, 7000);
      },
    ],
    ["503", () => json({ error: "busy" }, 503), (error) => {
      assert.ok(error instanceof ServerError);
      assert.equal(error.retryable, true);
    }],
    ["403", () => json({ error: "forbidden" }, 403), (error) => {
      assert.ok(error instanceof ServerError);
      assert.equal(error.retryable, false);
      assert.notEqual(error.code, "live_unsupported");
    }],
  ];
  for (const [name, answer, check] of cases) {
    await t.step(name, async () => {
      await using server = startScriptedServer(answer);
      await using transport = createRestTransport({ baseUrl: server.url });
      await assert.rejects(take(transport, 5), (error) => {
        check(error);
        assert.match((error as Error).message, /^Cannot read live hints as /);
        return true;
      });
      assert.equal(server.requests.length, 1);
    });
  }
});

Deno.test("rest live: a 401 refreshes the token once, and sends the extra headers", async () => {
  await using server = startScriptedServer((request) =>
    request.headers.get("authorization") === "Bearer fresh"
      ? eventStream([": live\n\n"])
      : json({ error: "unauthorized" }, 401)
  );
  const asked: boolean[] = [];
  await using transport = createRestTransport({
    baseUrl: server.url,
    headers: { "x-app": "demo" },
    token: ({ refresh }) => {
      asked.push(refresh);
      return refresh ? "fresh" : "stale";
    },
  });
  assert.deepEqual(await take(transport, 1), [{ kinds: [] }]);
  assert.deepEqual(asked, [false, true]);
  const last = server.requests.at(-1)!;
  assert.equal(last.path, "/live");
  assert.equal(last.headers.get("x-app"), "demo");
  assert.equal(last.headers.get("accept"), "text/event-stream");
});

Deno.test(
  "rest live: hostile bytes are skipped and reported, and the stream goes on",
  withTimeout(10_000, async () => {
    const huge = "x".repeat(MAX_SSE_LINE * 3);
    await using server = startScriptedServer(() =>
      eventStream([
        ": live\n\n",
        `data: ${huge}`, // a line past the bound, in pieces
        huge,
        "\n\n",
        "event: change\ndata: {not json\n\n",
        'event: change\ndata: {"kinds": "todos"}\n\n',
        'event: change\ndata: {"kinds": ["", "a/b", 7, "live"]}\n\n',
        encoder.encode('event: change\ndata: {"kinds": ["bad\xff'),
        new Uint8Array([0xff, 0xfe]),
        encoder.encode('"]}\n\n'),
        'event: other\ndata: {"kinds": ["ignored"]}\n\n',
        'data: {"kinds": ["no-event-field"]}\n\n',
        // CRLF split across chunks, and two data lines joined with \n.
        'event: change\r\ndata: {"kinds":\r',
        '\ndata: ["todos", "todos", "notes"]}\r\n\r\n',
      ])
    );
    await using transport = createRestTransport({ baseUrl: server.url });
    const problems: SyncError[] = [];
    const hints = await take(transport, 2, problems);
    assert.deepEqual(hints, [{ kinds: [] }, { kinds: ["todos", "notes"] }]);
    assert.ok(problems.every((error) => error instanceof ParseError));
    const messages = problems.map((error) => error.message);
    assert.ok(
      messages.some((m) => m.includes("a line is longer than")),
      messages.join("\n"),
    );
    assert.ok(messages.some((m) => m.includes("is not JSON")));
    assert.ok(messages.some((m) => m.includes("no 'kinds' array")));
    assert.ok(
      messages.filter((m) => m.includes("invalid kind")).length >= 4,
      messages.join("\n"),
    );
  }),
);

Deno.test("rest live: a silent stream ends with a NetworkError after liveIdleMs", async () => {
  await using server = startScriptedServer(() => eventStream([": live\n\n"]));
  await using transport = createRestTransport({
    baseUrl: server.url,
    liveIdleMs: 50,
  });
  await assert.rejects(
    take(transport, 5),
    (error) =>
      error instanceof NetworkError && /stayed silent/.test(error.message),
  );
});

Deno.test("rest live: a stream the server ends ends the iteration", async () => {
  await using server = startScriptedServer(() =>
    eventStream([
      ": live\n\n",
      'event: change\ndata: {"kinds":["todos"]}\n\n',
    ], { end: true })
  );
  await using transport = createRestTransport({ baseUrl: server.url });
  assert.deepEqual(await take(transport, 5), [
    { kinds: [] },
    { kinds: ["todos"] },
  ]);
});

Deno.test("rest live: close() ends an open stream with ClosedError, and later calls reject", async () => {
  await using server = startScriptedServer(() => eventStream([": live\n\n"]));
  const transport = createRestTransport({ baseUrl: server.url });
  const controller = new AbortController();
  const iterator = transport.live!({ signal: controller.signal })
    [Symbol.asyncIterator]();
  assert.deepEqual((await iterator.next()).value, { kinds: [] });
  const next = iterator.next();
  await transport.close();
  await assert.rejects(next, ClosedError);
  await assert.rejects(take(transport, 1), ClosedError);
});

Deno.test("sse parser: comments, fields without a space, CR line ends, data joined", () => {
  const problems: string[] = [];
  const parser = new SseParser((problem) => problems.push(problem));
  const events = [
    ...parser.push(": ping\n\nevent:change\rdata:a\r"),
    ...parser.push("\ndata: b\n"),
    ...parser.push("id: 1\nretry: 5\n\n"),
    ...parser.push("event: change\n\n"), // no data: nothing
  ];
  assert.deepEqual(events, [{ type: "change", data: "a\nb" }]);
  assert.deepEqual(problems, []);
});
