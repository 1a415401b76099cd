/**
 * Live mode end to end (ENGINE.md clause 27): two clients of the reference
 * server over real HTTP. Client B polls only every 24 days, so what reaches
 * it came through `GET /live`: a write on A arrives, a burst is one pull, a
 * dropped stream is reopened, a server without live hints leaves B polling,
 * and hostile stream bytes are reported as events without a crash.
 *
 * @module
 */

import assert from "node:assert/strict";
import { ParseError, SyncEngine, type SyncEvent } from "../mod.ts";
import { MAX_TIMER_MS } from "../src/backoff.ts";
import {
  createSyncServer,
  type SyncServer,
  type SyncServerOptions,
} from "../server/mod.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { createRestTransport } from "../transport/rest.ts";
import { until } from "./_faults.ts";
import { json, startScriptedServer } from "./_scripted_server.ts";
import { quiet } from "./_server_http.ts";
import { withTimeout } from "./_timeout.ts";

/** The reference server over HTTP, with a hook that breaks live streams. */
function serve(options: SyncServerOptions = {}) {
  const server: SyncServer = createSyncServer({ onError: quiet, ...options });
  const drops: AbortController[] = [];
  const http = Deno.serve(
    {
      port: 0,
      hostname: "127.0.0.1",
      onListen() {},
      onError: () => new Response(null, { status: 500 }),
    },
    async (request) => {
      const response = await server.fetch(request);
      if (new URL(request.url).pathname !== "/live" || response.body === null) {
        return response;
      }
      const pipe = new TransformStream<Uint8Array, Uint8Array>();
      const drop = new AbortController();
      drops.push(drop);
      response.body.pipeTo(pipe.writable, { signal: drop.signal }).catch(
        () => {},
      );
      return new Response(pipe.readable, {
        status: response.status,
        headers: response.headers,
      });
    },
  );
  return {
    url: `http://127.0.0.1:${http.addr.port}`,
    /** Breaks every live stream open now. */
    dropStreams(): void {
      for (const drop of drops.splice(0)) drop.abort();
    },
    async [Symbol.asyncDispose]() {
      this.dropStreams();
      await server.close();
      await http.shutdown();
    },
  };
}

/** A client whose requests are counted as `METHOD /path`. */
function client(url: string) {
  const requests: string[] = [];
  const storage = createMemoryStorage();
  const transport = createRestTransport({
    baseUrl: url,
    fetch: (input, init) => {
      const path = new URL(input instanceof Request ? input.url : input)
        .pathname;
      requests.push(`${init?.method ?? "GET"} ${path}`);
      return fetch(input, init);
    },
  });
  const engine = new SyncEngine({ storage, transport });
  const events: SyncEvent[] = [];
  let completed = 0;
  engine.on("syncCompleted", () => completed++);
  engine.on("error", (event) => events.push(event));
  engine.on("live", (event) => events.push(event));
  return {
    engine,
    requests,
    events,
    todos: engine.table("todos"),
    notes: engine.table("notes"),
    completed: () => completed,
    count: (request: string) => requests.filter((r) => r === request).length,
    async [Symbol.asyncDispose]() {
      await engine.close();
      await transport.close();
      await storage.close();
    },
  };
}

type Client = ReturnType<typeof client>;

/** Starts B in live mode, polling almost never, and waits until it is open and idle. */
async function goLive(
  b: Client,
  live: { debounceMs?: number; retryBaseMs?: number } = {},
): Promise<void> {
  b.engine.startAuto({
    intervalMs: MAX_TIMER_MS,
    afterWriteMs: null,
    live: { debounceMs: 20, retryBaseMs: 50, ...live },
  });
  await until(() => b.engine.live === "open", "B's stream opened");
  // The first interval run and the catch-up run after the stream opened.
  await until(() => b.completed() >= 2, "B's first runs ended");
  await until(() => b.engine.status.phase === "idle", "B is idle");
}

/** Waits until B's table holds the record. */
async function arrives(b: Client, table: "todos" | "notes", id: string) {
  let found = false;
  const check = async (): Promise<void> => {
    found = (await b[table].get(id)) !== undefined;
  };
  const deadline = Date.now() + 5_000;
  while (!found) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out waiting for ${table}/${id} on B`);
    }
    await check();
    if (!found) await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

Deno.test(
  "live: a write on A reaches B through GET /live, without polling",
  withTimeout(15_000, async () => {
    await using server = serve();
    await using a = client(server.url);
    await using b = client(server.url);
    await goLive(b);
    const seen = b.todos.watch();
    await a.todos.put({ id: "t1", title: "Buy milk" });
    await a.engine.sync();
    for await (const item of seen) {
      if (item.type === "change" && item.origin === "pulled") {
        assert.equal(item.id, "t1");
        break;
      }
    }
    assert.equal((await b.todos.get("t1"))?.title, "Buy milk");
    assert.equal(b.count("GET /live"), 1);
    assert.ok(!b.events.some((event) => event.type === "error"));
  }),
);

Deno.test(
  "live: a burst of writes on A is one pull on B",
  withTimeout(15_000, async () => {
    await using server = serve();
    await using a = client(server.url);
    await using b = client(server.url);
    await goLive(b, { debounceMs: 200 });
    const before = b.count("GET /todos");
    await a.todos.putMany(
      Array.from({ length: 10 }, (_, i) => ({ id: `t${i}`, n: i })),
    );
    await a.engine.sync();
    await arrives(b, "todos", "t9");
    // A later hint of another kind: once B has it, every todos hint before
    // it has been answered.
    await a.notes.put({ id: "n1" });
    await a.engine.sync();
    await arrives(b, "notes", "n1");
    await until(() => b.engine.status.phase === "idle", "B is idle");
    assert.equal(b.count("GET /todos") - before, 1, b.requests.join("\n"));
    assert.equal((await b.todos.list()).length, 10);
  }),
);

Deno.test(
  "live: B reopens a stream the server dropped, and catches up",
  withTimeout(15_000, async () => {
    await using server = serve();
    await using a = client(server.url);
    await using b = client(server.url);
    await goLive(b);
    server.dropStreams();
    // A write while B has no stream: the reopened stream's catch-up pull
    // brings it even though its hint was never sent to B.
    await a.todos.put({ id: "while-down" });
    await a.engine.sync();
    await until(() => b.count("GET /live") === 2, "B reconnected");
    await until(() => b.engine.live === "open", "B's stream is open again");
    await arrives(b, "todos", "while-down");
    await a.todos.put({ id: "after" });
    await a.engine.sync();
    await arrives(b, "todos", "after");
    const states = b.events.flatMap((event) =>
      event.type === "live" ? [event.state] : []
    );
    assert.deepEqual(states, ["connecting", "open", "connecting", "open"]);
  }),
);

Deno.test(
  "live: a server without live hints (404) leaves B polling, asked once",
  withTimeout(15_000, async () => {
    await using server = serve({ live: false });
    await using a = client(server.url);
    await using b = client(server.url);
    b.engine.startAuto({ intervalMs: 50, afterWriteMs: null, live: true });
    await until(() => b.engine.live === "unsupported", "B gave up on live");
    await a.todos.put({ id: "polled" });
    await a.engine.sync();
    await arrives(b, "todos", "polled");
    assert.equal(b.count("GET /live"), 1);
    assert.ok(!b.events.some((event) => event.type === "error"));
  }),
);

Deno.test(
  "live: hostile stream bytes become error events; the valid hint is pulled",
  withTimeout(15_000, async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (event: PromiseRejectionEvent): void => {
      unhandled.push(event.reason);
      event.preventDefault();
    };
    globalThis.addEventListener("unhandledrejection", onUnhandled);
    try {
      const encoder = new TextEncoder();
      // The valid hint waits until the test has seen B settle.
      const gate = Promise.withResolvers<string>();
      const chunks: (string | Promise<string>)[] = [
        ": live\n\n",
        "data: " + "x".repeat(200_000) + "\n\n",
        "event: change\ndata: [[[[\n\n",
        'event: change\ndata: {"kinds": {"todos": true}}\n\n',
        'event: change\ndata: {"kinds": ["../etc", "todos\\u0000"]}\n\n',
        gate.promise,
        'event: change\ndata: {"kinds": ["notes"]}\n\n',
      ];
      let served = 0;
      await using server = startScriptedServer((request) => {
        if (request.path === "/live" && served++ === 0) {
          let index = 0;
          return new Response(
            new ReadableStream<Uint8Array>({
              async pull(controller): Promise<void> {
                const chunk = chunks[index++];
                if (chunk === undefined) return await new Promise(() => {});
                controller.enqueue(encoder.encode(await chunk));
              },
            }, { highWaterMark: 0 }),
            { headers: { "content-type": "text/event-stream" } },
          );
        }
        if (request.path === "/live") return json({ error: "busy" }, 503);
        if (request.path === "/health") return json({ batch: false });
        return json({ items: [], nextPageToken: null });
      });
      await using b = client(server.url);
      b.engine.startAuto({
        intervalMs: MAX_TIMER_MS,
        afterWriteMs: null,
        live: { debounceMs: 20 },
      });
      await until(
        () => b.events.filter((event) => event.type === "error").length >= 5,
        "the problems were reported",
      );
      // The first run, and the catch-up after the stream opened.
      await until(() => b.completed() >= 2, "B's first runs ended");
      await until(() => b.engine.status.phase === "idle", "B is idle");
      const notes = b.count("GET /notes");
      gate.resolve("");
      await until(() => b.count("GET /notes") > notes, "the hint was pulled");
      const errors = b.events.flatMap((event) =>
        event.type === "error" ? [event.error] : []
      );
      assert.ok(errors.every((error) => error instanceof ParseError));
      assert.equal(b.engine.live, "open");
      b.engine.stopAuto();
      await until(() => b.engine.live === "off", "stopped");
    } finally {
      globalThis.removeEventListener("unhandledrejection", onUnhandled);
    }
    assert.deepEqual(unhandled, []);
  }),
);
