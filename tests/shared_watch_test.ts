/**
 * The fast path of engines sharing a store (ENGINE.md clause 26): where the
 * store tells of changes (`Storage.watchMeta`: Deno KV's `watch`, inside one
 * process and on Deno Deploy), a follower hears the syncer's pulls at once,
 * not at its next poll. Two KV storage handles on one KV file in this
 * process stand in for two isolates on one Deploy KV database.
 *
 * @module
 */

import assert from "node:assert/strict";
import { SyncEngine } from "../mod.ts";
import type { Storage } from "../src/storage.ts";
import { openKvStorage } from "../storage/kv.ts";
import { createRestTransport } from "../transport/rest.ts";
import { createSyncServer } from "../server/mod.ts";
import { withTimeout } from "./_timeout.ts";

/** The poll is far slower than any wait below: only a hint can win. */
const POLL_MS = 10_000;

/** The storage without its optional `watchMeta`: the poll alone. */
function withoutWatch(storage: Storage): Storage {
  return new Proxy(storage, {
    get(target, name, receiver) {
      if (name === "watchMeta") return undefined;
      const value = Reflect.get(target, name, receiver);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

async function pair(watch: boolean) {
  const dir = await Deno.makeTempDir({ prefix: "shared_watch_" });
  const server = createSyncServer();
  const transport = createRestTransport({
    baseUrl: "http://sync.test",
    fetch: (input, init) => server.fetch(new Request(input, init)),
  });
  const stores = [
    await openKvStorage(`${dir}/store.kv`),
    await openKvStorage(`${dir}/store.kv`),
  ];
  const open = (i: number) => {
    const engine = new SyncEngine({
      storage: watch ? stores[i]! : withoutWatch(stores[i]!),
      transport,
      shared: { leaseMs: 30_000, pollMs: POLL_MS, holder: `engine-${i}` },
    });
    engine.table("todos");
    return engine;
  };
  // The first takes the lease at its first poll, before the second starts.
  const engines = [open(0)];
  await engines[0]!.sync();
  engines.push(open(1));
  return {
    server,
    syncer: engines[0]!,
    follower: engines[1]!,
    async [Symbol.asyncDispose]() {
      for (const engine of engines) await engine.close();
      await transport.close();
      await server.close();
      for (const storage of stores) await storage.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Waits for the follower's watch() to see `id`, up to `ms`; true if it did. */
async function seen(
  follower: SyncEngine,
  id: string,
  ms: number,
  start: () => Promise<unknown>,
): Promise<boolean> {
  const signal = AbortSignal.timeout(ms);
  const changes = follower.table("todos").watch({ signal });
  await start();
  for await (const item of changes) {
    if (item.type === "change" && item.id === id) return true;
  }
  return false;
}

async function serverPut(server: { fetch(r: Request): Promise<Response> }) {
  const response = await server.fetch(
    new Request("http://sync.test/todos/t1", {
      method: "PUT",
      body: JSON.stringify({ id: "t1", title: "from another device" }),
    }),
  );
  assert.equal(response.status, 201);
  await response.body?.cancel();
}

Deno.test(
  "shared watch: a follower on Deno KV hears the syncer's pull at once, not at its next poll",
  withTimeout(20_000, async () => {
    await using g = await pair(true);
    assert.equal(g.syncer.role, "syncer");
    assert.equal(g.follower.role, "follower");
    await serverPut(g.server);
    assert.equal(
      await seen(g.follower, "t1", 3_000, () => g.syncer.sync()),
      true,
      `the follower saw nothing within 3 s (it polls every ${POLL_MS} ms)`,
    );
  }),
);

Deno.test(
  "shared watch: without the store's hints the follower waits for its poll",
  withTimeout(20_000, async () => {
    await using g = await pair(false);
    assert.equal(g.follower.role, "follower");
    await serverPut(g.server);
    assert.equal(
      await seen(g.follower, "t1", 1_500, () => g.syncer.sync()),
      false,
    );
  }),
);
