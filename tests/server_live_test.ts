/**
 * `GET /live` (CONTRACT.md §Live hint): an event stream per principal that
 * names the kinds the server committed writes to, coalesced while the
 * reader is behind, with heartbeats, a bound per principal, tenancy, and an
 * end when the server closes.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createSyncServer, type SyncServer } from "../server/mod.ts";
import { as, bearer, options, putOk, request, send } from "./_server_http.ts";
import { withTimeout } from "./_timeout.ts";

const decoder = new TextDecoder();

/** A live stream read chunk by chunk, one SSE block per read. */
class Live {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly response: Response;

  constructor(response: Response) {
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "text/event-stream");
    assert.equal(response.headers.get("cache-control"), "no-store");
    this.response = response;
    this.#reader = response.body!.getReader();
  }

  /** The next block as text, or `null` when the stream ended. */
  async next(): Promise<string | null> {
    const { value, done } = await this.#reader.read();
    return done ? null : decoder.decode(value);
  }

  /** The kinds of the next block, which must be a change event. */
  async change(): Promise<string[]> {
    const block = await this.next();
    const match = block?.match(/^event: change\ndata: (.*)\n\n$/);
    assert.ok(match, `a change event, not ${JSON.stringify(block)}`);
    return (JSON.parse(match[1]!) as { kinds: string[] }).kinds;
  }

  cancel(): Promise<void> {
    return this.#reader.cancel();
  }
}

async function open(server: SyncServer, principal: string): Promise<Live> {
  const live = new Live(
    await server.fetch(request("GET", "/live", { headers: as(principal) })),
  );
  assert.equal(await live.next(), ": live\n\n");
  return live;
}

function liveServer(extra: Parameters<typeof options>[0] = {}): SyncServer {
  return createSyncServer(options({ auth: bearer, ...extra }));
}

Deno.test(
  "live: a committed write sends the principal a change event naming its kind",
  withTimeout(5_000, async () => {
    await using server = liveServer();
    const health = await send(server, "GET", "/health");
    assert.equal(health.body.live, true);
    const live = await open(server, "alice");
    await putOk(server, "todo", "1", { title: "a" }, as("alice"));
    assert.deepEqual(await live.change(), ["todo"]);
    await live.cancel();
  }),
);

Deno.test(
  "live: writes made while the reader is behind come as one event, kinds in order of first change",
  withTimeout(5_000, async () => {
    await using server = liveServer();
    const live = await open(server, "alice");
    await putOk(server, "todo", "1", { title: "a" }, as("alice"));
    await putOk(server, "note", "1", { text: "n" }, as("alice"));
    await putOk(server, "todo", "2", { title: "b" }, as("alice"));
    assert.equal(
      (await send(server, "DELETE", "/todo/1", { headers: as("alice") }))
        .status,
      200,
    );
    assert.deepEqual(await live.change(), ["todo", "note"]);
    // A batch names each kind it wrote, once.
    const batch = await send(server, "POST", "/batch", {
      headers: as("alice"),
      json: {
        ops: [
          { opId: "o1", kind: "tag", id: "1", type: "upsert", payload: {} },
          { opId: "o2", kind: "tag", id: "2", type: "upsert", payload: {} },
          { opId: "o3", kind: "todo", id: "9", type: "upsert", payload: {} },
        ],
      },
    });
    assert.equal(batch.status, 200);
    assert.deepEqual(await live.change(), ["tag", "todo"]);
    await live.cancel();
  }),
);

Deno.test(
  "live: no principal learns of another's writes",
  withTimeout(5_000, async () => {
    await using server = liveServer();
    const alice = await open(server, "alice");
    await putOk(server, "secret", "1", { x: 1 }, as("bob"));
    await putOk(server, "todo", "1", { x: 1 }, as("alice"));
    // Had bob's write reached alice's stream, "secret" would come first.
    assert.deepEqual(await alice.change(), ["todo"]);
    await alice.cancel();
  }),
);

Deno.test(
  "live: a refused or replayed write sends nothing; an idle stream gets a ping each heartbeat",
  withTimeout(5_000, async () => {
    await using server = liveServer({ liveHeartbeatMs: 30 });
    const live = await open(server, "alice");
    const key = { ...as("alice"), "idempotency-key": "k1" };
    await putOk(server, "todo", "1", { title: "a" }, key);
    assert.deepEqual(await live.change(), ["todo"]);
    await putOk(server, "todo", "1", { title: "a" }, key); // replayed
    const refused = await send(server, "PUT", "/todo/1", {
      headers: as("alice"),
      json: { title: "b", _baseUpdatedAt: "2000-01-01T00:00:00.000Z" },
    });
    assert.equal(refused.status, 409);
    assert.equal(await live.next(), ": ping\n\n");
    await live.cancel();
  }),
);

Deno.test(
  "live: a principal holds at most maxLiveStreams; a cancelled stream frees its place",
  withTimeout(5_000, async () => {
    await using server = liveServer({ maxLiveStreams: 2 });
    const first = await open(server, "alice");
    const second = await open(server, "alice");
    const third = await send(server, "GET", "/live", { headers: as("alice") });
    assert.equal(third.status, 429);
    assert.equal(third.body.error, "too_many_streams");
    assert.equal(third.headers.get("retry-after"), "15");
    // Another principal has its own bound.
    const bob = await open(server, "bob");
    await first.cancel();
    const again = await open(server, "alice");
    for (const live of [second, bob, again]) await live.cancel();
  }),
);

Deno.test(
  "live: auth first, GET only, 404 when turned off, options checked",
  withTimeout(5_000, async () => {
    await using server = liveServer();
    assert.equal((await send(server, "GET", "/live")).status, 401);
    const post = await send(server, "POST", "/live", { headers: as("alice") });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get("allow"), "GET");
    await using off = liveServer({ live: false });
    assert.equal((await send(off, "GET", "/health")).body.live, false);
    assert.equal(
      (await send(off, "GET", "/live", { headers: as("alice") })).status,
      404,
    );
    for (const liveHeartbeatMs of [0, 1.5, 25_001, Infinity]) {
      assert.throws(
        () => createSyncServer({ liveHeartbeatMs }),
        RangeError,
        String(liveHeartbeatMs),
      );
    }
    assert.throws(() => createSyncServer({ maxLiveStreams: 0 }), RangeError);
    assert.throws(
      // @ts-expect-error: a string where a boolean belongs
      () => createSyncServer({ live: "yes" }),
      TypeError,
    );
  }),
);

Deno.test(
  "live: closing the server ends every stream, also one waiting for a change",
  withTimeout(5_000, async () => {
    const server = liveServer();
    const waiting = await open(server, "alice");
    const pending = waiting.next();
    const idle = await open(server, "bob");
    await server.close();
    assert.equal(await pending, null);
    assert.equal(await idle.next(), null);
    assert.equal(
      (await send(server, "GET", "/live", { headers: as("alice") })).status,
      503,
    );
  }),
);

Deno.test(
  "live: over HTTP, a client that goes away frees its place and the server shuts down",
  withTimeout(10_000, async () => {
    await using server = liveServer({ maxLiveStreams: 1 });
    const http = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen(): void {} },
      server.fetch,
    );
    const url = `http://127.0.0.1:${http.addr.port}/live`;
    const abort = new AbortController();
    const first = await fetch(url, {
      headers: as("alice"),
      signal: abort.signal,
    });
    assert.equal(first.status, 200);
    const reader = first.body!.getReader();
    assert.equal(decoder.decode((await reader.read()).value), ": live\n\n");
    const busy = await fetch(url, { headers: as("alice") });
    assert.equal(busy.status, 429);
    await busy.body?.cancel();
    abort.abort();
    await reader.closed.catch(() => {});
    // The server learns of the disconnect asynchronously: poll its answer.
    let status = 429;
    for (let i = 0; i < 200 && status === 429; i++) {
      const again = await fetch(url, { headers: as("alice") });
      status = again.status;
      if (status === 200) {
        const next = again.body!.getReader();
        assert.equal(decoder.decode((await next.read()).value), ": live\n\n");
        await putOk(server, "todo", "1", { title: "a" }, as("alice"));
        assert.match(
          decoder.decode((await next.read()).value),
          /^event: change\ndata: \{"kinds":\["todo"\]\}\n\n$/,
        );
        await next.cancel();
      } else {
        await again.body?.cancel();
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    }
    assert.equal(status, 200);
    await server.close();
    await http.shutdown();
  }),
);
