/**
 * Idempotency keys: replays, mismatches, which answers are stored, expiry
 * and key checks.
 *
 * @module
 */

import assert from "node:assert/strict";
import { z } from "zod";
import { createSyncServer } from "../server/mod.ts";
import {
  type ConflictBody,
  type ErrorBody,
  iso,
  options,
  pull,
  putOk,
  send,
  type SendOptions,
  SpyStore,
  T0,
  TestClock,
} from "./_server_http.ts";

Deno.test("server: a repeated write with one Idempotency-Key is applied once and replayed", async () => {
  const clock = new TestClock();
  const store = new SpyStore();
  await using server = createSyncServer(options({ store, now: clock.now }));
  const first = await send(server, "PUT", "/todo/1", {
    json: { title: "a" },
    headers: { "idempotency-key": "op-1" },
  });
  assert.equal(first.status, 201);
  assert.equal(first.headers.get("idempotent-replayed"), null);
  const commits = store.calls.filter((call) => call === "commit").length;
  clock.ms += 10_000;
  const again = await send(server, "PUT", "/todo/1", {
    // Same request with keys in another order: still the same request.
    raw: '{ "title": "a" }',
    headers: { "idempotency-key": "op-1" },
  });
  assert.equal(again.status, 201);
  assert.equal(again.headers.get("idempotent-replayed"), "true");
  assert.deepEqual(again.body, first.body);
  assert.equal(store.calls.filter((call) => call === "commit").length, commits);
  assert.deepEqual((await pull(server, "todo")).body.items, [first.body]);

  const deleted = await send(server, "DELETE", "/todo/1", {
    headers: { "x-idempotency-key": "op-2" },
  });
  clock.ms += 10_000;
  const deletedAgain = await send(server, "DELETE", "/todo/1", {
    headers: { "x-idempotency-key": "op-2" },
  });
  assert.equal(deletedAgain.headers.get("idempotent-replayed"), "true");
  assert.deepEqual(deletedAgain.body, deleted.body);
});

Deno.test("server: one Idempotency-Key for another request answers 422 idempotency_mismatch", async () => {
  await using server = createSyncServer(options());
  const key = { "idempotency-key": "op-1" };
  await putOk(server, "todo", "1", { title: "a" }, key);
  const others: [string, string, SendOptions][] = [
    ["PUT", "/todo/1", { json: { title: "b" }, headers: key }],
    ["PUT", "/todo/2", { json: { title: "a" }, headers: key }],
    ["PUT", "/note/1", { json: { title: "a" }, headers: key }],
    ["DELETE", "/todo/1", { headers: key }],
    [
      "PUT",
      "/todo/1",
      { json: { title: "a" }, headers: { ...key, "x-force-update": "true" } },
    ],
    [
      "PUT",
      "/todo/1",
      { json: { title: "a", _baseUpdatedAt: iso(T0) }, headers: key },
    ],
    ["PUT", "/todo/1?x=1", { json: { title: "a" }, headers: key }],
  ];
  for (const [method, target, init] of others) {
    const { status, body } = await send<ErrorBody>(
      server,
      method,
      target,
      init,
    );
    assert.equal(status, 422, `${method} ${target}`);
    assert.equal(body.error, "idempotency_mismatch");
  }
  const items = (await pull(server, "todo")).body.items;
  assert.deepEqual(items.map((item) => item.title), ["a"]);
  assert.deepEqual((await pull(server, "note")).body.items, []);
});

Deno.test("server: 400, 404, 413 and 422 answers are stored by idempotency key", async () => {
  const Todo = z.object({ title: z.string() });
  await using server = createSyncServer(
    options({ schemas: { todo: Todo }, maxBodyBytes: 100 }),
  );
  const cases: [string, SendOptions, number][] = [
    ["PUT", { raw: "{oops" }, 400],
    ["DELETE", {}, 404],
    ["PUT", { raw: "x".repeat(200) }, 413],
    ["PUT", { json: { title: 1 } }, 422],
  ];
  for (const [index, [method, init, expected]] of cases.entries()) {
    const id = `c${index}`;
    const headers = { "idempotency-key": `k${index}` };
    const first = await send(server, method, `/todo/${id}`, {
      ...init,
      headers,
    });
    assert.equal(first.status, expected);
    // Once the record exists, the DELETE would succeed if evaluated again.
    await putOk(server, "todo", id, { title: "valid" });
    const again = await send(server, method, `/todo/${id}`, {
      ...init,
      headers,
    });
    assert.equal(again.status, expected, `${method} ${index}`);
    assert.equal(again.headers.get("idempotent-replayed"), "true");
    assert.deepEqual(again.body, first.body);
  }
  const items = (await pull(server, "todo")).body.items;
  assert.deepEqual(items.map((item) => item.deleted_at), [
    undefined,
    undefined,
    undefined,
    undefined,
  ]);
});

Deno.test("server: a 409 is not stored: a forced write with a new key succeeds and the 409 key is re-evaluated", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  await putOk(server, "todo", "1", { v: 1 });
  clock.ms += 1_000;
  const current = await putOk(server, "todo", "1", { v: 2 });
  clock.ms += 1_000;
  const stale = { v: 3, _baseUpdatedAt: iso(T0) };
  const conflict = await send<ConflictBody>(server, "PUT", "/todo/1", {
    json: stale,
    headers: { "idempotency-key": "op-1" },
  });
  assert.equal(conflict.status, 409);
  assert.equal(conflict.body.serverTimestamp, current.updated_at);
  const forced = await send(server, "PUT", "/todo/1", {
    json: { v: 3 },
    headers: { "idempotency-key": "op-1.r1", "x-force-update": "true" },
  });
  assert.equal(forced.status, 200);
  const retried = await send<ConflictBody>(server, "PUT", "/todo/1", {
    json: stale,
    headers: { "idempotency-key": "op-1" },
  });
  assert.equal(retried.status, 409);
  assert.equal(retried.headers.get("idempotent-replayed"), null);
  // Re-evaluated: the conflict now names the forced version.
  assert.equal(retried.body.serverTimestamp, forced.body.updated_at);
});

Deno.test("server: an idempotency entry expires after idempotencyRetentionMs", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(
    options({ now: clock.now, idempotencyRetentionMs: 60_000 }),
  );
  const key = { "idempotency-key": "op-1" };
  const first = await putOk(server, "todo", "1", { v: 1 }, key);
  clock.ms += 59_999;
  const replay = await send(server, "PUT", "/todo/1", {
    json: { v: 1 },
    headers: key,
  });
  assert.deepEqual(replay.body, first);
  clock.ms += 1;
  const applied = await send(server, "PUT", "/todo/1", {
    json: { v: 1 },
    headers: key,
  });
  assert.equal(applied.status, 200);
  assert.equal(applied.headers.get("idempotent-replayed"), null);
  assert.notEqual(applied.body.updated_at, first.updated_at);
});

Deno.test("server: an empty, overlong or ambiguous idempotency key answers 400", async () => {
  await using server = createSyncServer(options());
  for (
    const headers of [
      { "idempotency-key": "" },
      { "idempotency-key": "k".repeat(256) },
      { "idempotency-key": "a", "x-idempotency-key": "b" },
    ]
  ) {
    const { status, body } = await send<ErrorBody>(server, "PUT", "/todo/1", {
      json: {},
      headers,
    });
    assert.equal(status, 400);
    assert.equal(body.error, "invalid_idempotency_key");
  }
  assert.deepEqual((await pull(server, "todo")).body.items, []);
});
