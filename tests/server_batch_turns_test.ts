/**
 * `POST /batch` between its slices: queued callbacks run at every slice, a
 * timer (the only way the event loop polls sockets) once per `HOLD_MS` of
 * work, so a short batch never sleeps and a long one lets another
 * principal's HTTP request in.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createSyncServer, type ServerWrite } from "../server/mod.ts";
import { HOLD_MS, Turns } from "../server/_batch.ts";
import { as, bearer, options, SpyStore } from "./_server_http.ts";

/** Counts `setTimeout` calls of 0 ms while `work` runs. */
async function countSleeps(work: () => Promise<void>): Promise<number> {
  const original = globalThis.setTimeout;
  let sleeps = 0;
  globalThis.setTimeout = ((handler: () => void, ms?: number) => {
    if ((ms ?? 0) === 0) sleeps++;
    return original(handler, ms);
  }) as typeof setTimeout;
  try {
    await work();
  } finally {
    globalThis.setTimeout = original;
  }
  return sleeps;
}

Deno.test("batch turns: under HOLD_MS of work a turn never sleeps; past it, it sleeps once and starts over", async () => {
  let now = 1_000;
  const turns = new Turns(() => now);
  assert.equal(await countSleeps(() => turns.next()), 0);
  now += HOLD_MS - 1;
  assert.equal(await countSleeps(() => turns.next()), 0);
  now += 1;
  assert.equal(await countSleeps(() => turns.next()), 1);
  // The sleep starts the budget again.
  now += HOLD_MS - 1;
  assert.equal(await countSleeps(() => turns.next()), 0);
});

Deno.test("batch turns: a batch of 1,000 small ops on the memory store sleeps at most once per HOLD_MS", async () => {
  await using server = createSyncServer(options());
  const ops = Array.from({ length: 1_000 }, (_, index) => ({
    opId: `o${index}`,
    kind: "todo",
    id: `r${index}`,
    type: "upsert",
    payload: { n: index },
  }));
  let ms = 0;
  const sleeps = await countSleeps(async () => {
    const started = performance.now();
    const response = await server.fetch(
      new Request("http://sync.test/batch", {
        method: "POST",
        body: JSON.stringify({ ops }),
      }),
    );
    assert.equal(response.status, 200);
    await response.body?.cancel();
    ms = performance.now() - started;
  });
  // 6 turns (3 in checking, 3 between the 4 slices); the old code slept at
  // each.
  assert.ok(
    sleeps <= Math.floor(ms / HOLD_MS) + 1,
    `${sleeps} sleeps in ${ms.toFixed(1)} ms`,
  );
});

Deno.test("batch turns: over HTTP, another principal's write lands while a long batch holds the event loop", async () => {
  const order: string[] = [];
  const store = new SpyStore();
  const inner = store.commit.bind(store);
  let base = "";
  let bob: Promise<Response> | null = null;
  store.commit = (writes: readonly ServerWrite[]) => {
    const namespace = writes[0]!.namespace;
    order.push(namespace);
    if (namespace === "alice" && order.length > 1) {
      // Bob writes, over HTTP, once Alice's first slice is committed.
      bob ??= fetch(`${base}/todo/b`, {
        method: "PUT",
        headers: as("bob"),
        body: "{}",
      });
      // Alice's slices hold the event loop past HOLD_MS, as a synchronous
      // SQLite commit of a big slice does.
      const until = performance.now() + HOLD_MS + 5;
      while (performance.now() < until) { /* busy */ }
    }
    return inner(writes);
  };
  await using server = createSyncServer(options({ store, auth: bearer }));
  await using http = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    server.fetch,
  );
  base = `http://127.0.0.1:${http.addr.port}`;
  // Bob's connection is open before Alice's batch starts.
  const warm = await fetch(`${base}/todo/warm`, {
    method: "PUT",
    headers: as("bob"),
    body: "{}",
  });
  await warm.body?.cancel();
  const ops = Array.from({ length: 1_000 }, (_, index) => ({
    opId: `o${index}`,
    kind: "todo",
    id: `r${index}`,
    type: "upsert",
    payload: {},
  }));
  const batch = fetch(`${base}/batch`, {
    method: "POST",
    headers: as("alice"),
    body: JSON.stringify({ ops }),
  });
  const response = await batch;
  assert.equal(response.status, 200);
  await response.body?.cancel();
  const answer = await bob!;
  assert.equal(answer.status, 201);
  await answer.body?.cancel();
  order.shift();
  const bobAt = order.indexOf("bob");
  assert.equal(order.filter((ns) => ns === "alice").length, 4);
  assert.ok(
    bobAt > 0 && bobAt < order.length - 1,
    `Bob's write waited for the whole batch: ${order.join(" ")}`,
  );
});
