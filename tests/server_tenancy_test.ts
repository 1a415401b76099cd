/**
 * Auth and tenancy: `401` before the store is touched, and no principal
 * reads, overwrites, deletes or learns of another's records.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createSyncServer } from "../server/mod.ts";
import {
  as,
  type BatchBody,
  bearer,
  type ErrorBody,
  options,
  pull,
  putOk,
  send,
  type SendOptions,
  SpyStore,
  TestClock,
} from "./_server_http.ts";

Deno.test("server: a missing credential answers 401 before the store is touched", async () => {
  const store = new SpyStore();
  await using server = createSyncServer(options({ store, auth: bearer }));
  const requests: [string, string, SendOptions][] = [
    ["GET", "/todo", {}],
    ["PUT", "/todo/1", { json: {}, headers: { "idempotency-key": "k" } }],
    ["DELETE", "/todo/1", {}],
    ["POST", "/batch", { json: { ops: [] } }],
  ];
  for (const [method, target, init] of requests) {
    const response = await send<ErrorBody>(server, method, target, init);
    assert.equal(response.status, 401);
    assert.equal(response.body.error, "unauthorized");
    assert.equal(response.headers.get("www-authenticate"), "Bearer");
  }
  assert.deepEqual(store.calls, []);
  // The same key works once authorized: a 401 was not stored.
  const ok = await send(server, "PUT", "/todo/1", {
    json: {},
    headers: { ...as("alice"), "idempotency-key": "k" },
  });
  assert.equal(ok.status, 201);
});

Deno.test("server: a principal cannot read, overwrite, delete or learn of another's records", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(
    options({ auth: bearer, now: clock.now }),
  );
  const alice = as("alice");
  const bob = as("bob");
  const secret = await putOk(server, "todo", "1", { secret: "a" }, {
    ...alice,
    "idempotency-key": "k",
  });
  await putOk(server, "todo", "2", { secret: "a2" }, alice);
  clock.ms += 1_000;

  // Read: nothing of Alice's in Bob's pulls.
  assert.deepEqual((await pull(server, "todo", {}, bob)).body.items, []);
  // Delete: Alice's id is unknown to Bob.
  assert.equal(
    (await send(server, "DELETE", "/todo/2", { headers: bob })).status,
    404,
  );
  // Conflict: a base on Alice's version does not reveal it; Bob creates his own.
  const own = await send(server, "PUT", "/todo/1", {
    json: { secret: "b", _baseUpdatedAt: String(secret.updated_at) },
    headers: bob,
  });
  assert.equal(own.status, 201);
  // Idempotency: Bob's "k" is his own key, not a mismatch with Alice's.
  const key = await send(server, "PUT", "/todo/3", {
    json: { secret: "b3" },
    headers: { ...bob, "idempotency-key": "k" },
  });
  assert.equal(key.status, 201);
  assert.equal(key.headers.get("idempotent-replayed"), null);
  // Batch goes through the same namespaces.
  const batch = await send<BatchBody>(server, "POST", "/batch", {
    json: {
      ops: [{ opId: "b1", kind: "todo", id: "2", type: "delete" }],
    },
    headers: bob,
  });
  assert.equal(batch.body.results[0]?.status, 404);

  const aliceItems = (await pull(server, "todo", {}, alice)).body.items;
  assert.deepEqual(aliceItems.map((item) => item.secret), ["a", "a2"]);
  const bobItems = (await pull(server, "todo", {}, bob)).body.items;
  assert.deepEqual(bobItems.map((item) => item.secret), ["b", "b3"]);
});
