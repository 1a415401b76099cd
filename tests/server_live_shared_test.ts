/**
 * Live hints from a shared store's change feed (`ServerStore.changes`,
 * `server/_live_feed.ts`): the server reads the feed only while a live
 * stream is open, tells its streams of other instances' commits (not of
 * its own twice), reports a failing feed to `onError` and reads it again,
 * and ends the feed on close. Over Deno KV, two servers in one process on
 * one file: a write through one is hinted on the other's stream.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  createSyncServer,
  type ServerStore,
  type StoreChange,
  type SyncServer,
} from "../server/mod.ts";
import { createMemoryServerStore } from "../server/memory.ts";
import { openKvServerStore } from "../server/kv.ts";
import { as, bearer, options, putOk, request } from "./_server_http.ts";
import { withTimeout } from "./_timeout.ts";

const decoder = new TextDecoder();

/** A live stream read one SSE block at a time. */
class Live {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;

  constructor(response: Response) {
    assert.equal(response.status, 200);
    this.#reader = response.body!.getReader();
  }

  async next(): Promise<string | null> {
    const { value, done } = await this.#reader.read();
    return done ? null : decoder.decode(value);
  }

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

/** A memory store with a change feed the test drives. */
class FedStore {
  readonly inner = createMemoryServerStore();
  /** Each call of changes(): its signal and what it was given to yield. */
  readonly feeds: { signal: AbortSignal; push: (c: StoreChange) => void }[] =
    [];
  /** How many of the next calls throw. */
  failures = 0;

  store(): ServerStore {
    const inner = this.inner;
    return {
      getRecord: (ns, kind, id) => inner.getRecord(ns, kind, id),
      listRecords: (ns, kind, o) => inner.listRecords(ns, kind, o),
      getIdempotency: (ns, key) => inner.getIdempotency(ns, key),
      commit: (writes) => inner.commit(writes),
      purge: (o) => inner.purge(o),
      trimIdempotency: (ns, o) => inner.trimIdempotency(ns, o),
      lastWrite: (ns) => inner.lastWrite(ns),
      changes: (signal) => this.#feed(signal),
      close: () => inner.close(),
      [Symbol.asyncDispose]: () => inner.close(),
    };
  }

  async *#feed(signal: AbortSignal): AsyncGenerator<StoreChange> {
    const queue: StoreChange[] = [];
    let wake: (() => void) | null = null;
    const onAbort = () => wake?.();
    signal.addEventListener("abort", onAbort);
    this.feeds.push({
      signal,
      push: (change) => {
        queue.push(change);
        wake?.();
      },
    });
    try {
      if (this.failures > 0) {
        this.failures--;
        throw new Error("feed broke");
      }
      while (!signal.aborted) {
        const next = queue.shift();
        if (next !== undefined) {
          yield next;
          continue;
        }
        await new Promise<void>((resolve) => wake = resolve);
        wake = null;
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }
}

Deno.test(
  "live feed: read only while a stream is open; other instances' changes told, local ones not twice",
  withTimeout(5_000, async () => {
    const fed = new FedStore();
    await using server = createSyncServer(
      options({ auth: bearer, store: fed.store() }),
    );
    assert.equal(fed.feeds.length, 0);
    const live = await open(server, "alice");
    assert.equal(fed.feeds.length, 1);
    const feed = fed.feeds[0]!;
    feed.push({ namespace: "alice", kinds: ["remote"] });
    assert.deepEqual(await live.change(), ["remote"]);
    // The server's own commit is told at once, its echo from the feed not.
    await putOk(server, "own", "1", {}, as("alice"));
    assert.deepEqual(await live.change(), ["own"]);
    feed.push({ namespace: "alice", kinds: ["own"], local: true });
    feed.push({ namespace: "bob", kinds: ["theirs"] });
    feed.push({ namespace: "alice", kinds: ["later"] });
    assert.deepEqual(await live.change(), ["later"]);
    // The last stream ends: the feed is no longer read.
    await live.cancel();
    assert.equal(feed.signal.aborted, true);
    const again = await open(server, "alice");
    assert.equal(fed.feeds.length, 2);
    await server.close();
    assert.equal(fed.feeds[1]!.signal.aborted, true);
    assert.equal(await again.next(), null);
  }),
);

Deno.test(
  "live feed: a failing feed is reported to onError and read again",
  withTimeout(5_000, async () => {
    const fed = new FedStore();
    fed.failures = 2;
    const errors: unknown[] = [];
    await using server = createSyncServer(
      options({
        auth: bearer,
        store: fed.store(),
        onError: (error) => {
          errors.push(error);
          throw new Error("a failing hook changes nothing");
        },
      }),
    );
    const live = await open(server, "alice");
    while (fed.feeds.length < 3) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.deepEqual(errors.map((e) => (e as Error).message), [
      "feed broke",
      "feed broke",
    ]);
    fed.feeds[2]!.push({ namespace: "alice", kinds: ["after"] });
    assert.deepEqual(await live.change(), ["after"]);
    await live.cancel();
  }),
);

Deno.test(
  "live feed: two servers on one KV file, a write through one is hinted on the other's stream",
  withTimeout(10_000, async () => {
    const dir = await Deno.makeTempDir({ prefix: "live-shared-" });
    try {
      const path = `${dir}/store.kv`;
      await using a = createSyncServer(
        options({ auth: bearer, store: await openKvServerStore(path) }),
      );
      await using b = createSyncServer(
        options({ auth: bearer, store: await openKvServerStore(path) }),
      );
      const live = await open(b, "alice");
      await putOk(a, "todo", "1", { title: "a" }, as("alice"));
      assert.deepEqual(await live.change(), ["todo"]);
      await putOk(a, "note", "1", { title: "n" }, as("bob"));
      await putOk(a, "todo", "2", { title: "b" }, as("alice"));
      assert.deepEqual(await live.change(), ["todo"]);
      // Close ends the stream and the feed (the sanitizers check no timer
      // or watch is left).
      await b.close();
      assert.equal(await live.next(), null);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }),
);
