/**
 * `POST /batch`: order, one result per op, idempotency by `opId`, refusals
 * of the whole batch, per-op `400`s, store failures, one commit per write,
 * fingerprints, and the batch switch.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { JsonObject, JsonValue } from "../src/json.ts";
import { createSyncServer } from "../server/mod.ts";
import {
  as,
  type BatchBody,
  bearer,
  type ConflictBody,
  type ErrorBody,
  iso,
  options,
  pull,
  putOk,
  send,
  SpyStore,
  T0,
  TestClock,
} from "./_server_http.ts";

Deno.test("server: POST /batch applies ops in order with one result per op", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  const existing = await putOk(server, "todo", "x", { v: 1 });
  clock.ms += 1_000;
  const { status, body } = await send<BatchBody>(server, "POST", "/batch", {
    json: {
      ops: [
        {
          opId: "o1",
          kind: "todo",
          id: "a",
          type: "upsert",
          payload: { v: 1 },
        },
        {
          opId: "o2",
          kind: "todo",
          id: "a",
          type: "upsert",
          payload: { v: 2 },
        },
        { opId: "o3", kind: "todo", id: "a", type: "delete" },
        { opId: "o4", kind: "todo", id: "never", type: "delete" },
        {
          opId: "o5",
          kind: "todo",
          id: "x",
          type: "upsert",
          payload: { v: 9 },
          baseUpdatedAt: "2000-01-01T00:00:00.000Z",
        },
        {
          opId: "o6",
          kind: "todo",
          id: "x",
          type: "upsert",
          payload: { v: 10 },
          baseUpdatedAt: "2000-01-01T00:00:00.000Z",
          force: true,
        },
      ],
    },
  });
  assert.equal(status, 200);
  const results = body.results;
  assert.deepEqual(results.map((result) => [result.opId, result.status]), [
    ["o1", 201],
    ["o2", 200],
    ["o3", 200],
    ["o4", 404],
    ["o5", 409],
    ["o6", 200],
  ]);
  assert.deepEqual(results[0]?.record, {
    id: "a",
    v: 1,
    updated_at: iso(T0 + 1_000),
  });
  assert.equal((results[1]?.record as JsonObject).updated_at, iso(T0 + 1_001));
  assert.equal((results[2]?.record as JsonObject).deleted_at, iso(T0 + 1_002));
  assert.equal((results[3]?.error as ErrorBody).error, "not_found");
  const conflict = results[4]?.error as ConflictBody;
  assert.equal(conflict.error, "conflict");
  assert.deepEqual(conflict.current, existing);
  assert.equal(conflict.serverTimestamp, existing.updated_at);
  assert.equal((results[5]?.record as JsonObject).v, 10);
  assert.equal(results[4]?.record, undefined);
});

Deno.test("server: batch ops are idempotent by opId, like single requests with that key", async () => {
  const clock = new TestClock();
  const store = new SpyStore();
  await using server = createSyncServer(options({ store, now: clock.now }));
  const batch = {
    ops: [
      { opId: "o1", kind: "todo", id: "a", type: "upsert", payload: { v: 1 } },
      {
        opId: "o2",
        kind: "todo",
        id: "a",
        type: "upsert",
        payload: { v: 2 },
        baseUpdatedAt: iso(T0),
      },
    ],
  };
  const first = await send<BatchBody>(server, "POST", "/batch", {
    json: batch,
  });
  assert.deepEqual(first.body.results.map((result) => result.status), [
    201,
    200,
  ]);
  const commits = store.calls.filter((call) => call === "commit").length;
  clock.ms += 1_000;
  const again = await send<BatchBody>(server, "POST", "/batch", {
    json: batch,
  });
  assert.deepEqual(
    again.body.results.map(({ replayed: _, ...result }) => result),
    first.body.results,
  );
  assert.ok(again.body.results.every((result) => result.replayed === true));
  assert.equal(store.calls.filter((call) => call === "commit").length, commits);
  // The single request with the op's key and the same content is a replay.
  const single = await send(server, "PUT", "/todo/a", {
    json: { v: 2, _baseUpdatedAt: iso(T0) },
    headers: { "idempotency-key": "o2" },
  });
  assert.equal(single.headers.get("idempotent-replayed"), "true");
  assert.deepEqual(single.body, first.body.results[1]?.record);
  // A reused opId with other content is a mismatch, in or out of a batch.
  const reused = await send<BatchBody>(server, "POST", "/batch", {
    json: {
      ops: [{ opId: "o1", kind: "todo", id: "a", type: "delete" }],
    },
  });
  assert.equal(reused.body.results[0]?.status, 422);
  assert.equal(
    (reused.body.results[0]?.error as ErrorBody).error,
    "idempotency_mismatch",
  );
  // The same opId twice in one batch: the second is a replay of the first.
  const twice = await send<BatchBody>(server, "POST", "/batch", {
    json: {
      ops: [
        { opId: "t", kind: "todo", id: "t", type: "upsert", payload: {} },
        { opId: "t", kind: "todo", id: "t", type: "upsert", payload: {} },
      ],
    },
  });
  assert.deepEqual(twice.body.results.map((result) => result.status), [
    201,
    201,
  ]);
  assert.equal(twice.body.results[1]?.replayed, true);
});

Deno.test("server: a batch refused as a whole (401, 413, 400) applies nothing", async () => {
  const store = new SpyStore();
  await using server = createSyncServer(
    options({ store, auth: bearer, maxBatchBytes: 400 }),
  );
  const good = {
    opId: "o1",
    kind: "todo",
    id: "a",
    type: "upsert",
    payload: {},
  };
  const unauthorized = await send(server, "POST", "/batch", {
    json: { ops: [good] },
  });
  assert.equal(unauthorized.status, 401);
  assert.deepEqual(store.calls, []);
  const alice = as("alice");
  const tooLarge = await send<ErrorBody>(server, "POST", "/batch", {
    json: {
      ops: [good, { ...good, opId: "o2", payload: { text: "x".repeat(400) } }],
    },
    headers: alice,
  });
  assert.equal(tooLarge.status, 413);
  assert.equal(tooLarge.body.error, "batch_too_large");
  for (
    const [json, code] of [
      [[good], "invalid_body"],
      [{ ops: good }, "invalid_body"],
      [
        {
          ops: [good, { kind: "todo", id: "b", type: "upsert", payload: {} }],
        },
        "invalid_body",
      ],
      // An opId is an idempotency key: §Limits holds it to 1 to 255 visible
      // ASCII characters.
      [{ ops: [good, { ...good, opId: "" }] }, "invalid_idempotency_key"],
      [{ ops: [good, { ...good, opId: "o 2" }] }, "invalid_idempotency_key"],
      [{ ops: [good, "op"] }, "invalid_body"],
    ] as [JsonValue, string][]
  ) {
    const { status, body } = await send<ErrorBody>(server, "POST", "/batch", {
      json,
      headers: alice,
    });
    assert.equal(status, 400, JSON.stringify(json));
    assert.equal(body.error, code);
  }
  const raw = await send(server, "POST", "/batch", {
    raw: "{not json",
    headers: alice,
  });
  assert.equal(raw.status, 400);
  assert.deepEqual((await pull(server, "todo", {}, alice)).body.items, []);
});

Deno.test("server: a batch op that is not a valid request gets its own 400, the others apply", async () => {
  await using server = createSyncServer(options());
  const { status, body } = await send<BatchBody>(server, "POST", "/batch", {
    json: {
      ops: [
        { opId: "o1", kind: "todo", id: "a", type: "upsert", payload: {} },
        { opId: "o2", kind: "todo", id: "b", type: "frobnicate" },
        { opId: "o3", kind: "health", id: "c", type: "upsert", payload: {} },
        { opId: "o4", kind: "todo", id: "d", type: "upsert", payload: [1] },
        {
          opId: "o5",
          kind: "todo",
          id: "e",
          type: "upsert",
          payload: {},
          baseUpdatedAt: "not a time",
        },
        { opId: "o6", kind: "todo", id: "f", type: "upsert" },
        { opId: "o7", kind: "todo", id: "g", type: "upsert", payload: {} },
      ],
    },
  });
  assert.equal(status, 200);
  assert.deepEqual(
    body.results.map((result) => [
      result.status,
      (result.error as ErrorBody | undefined)?.error ?? null,
    ]),
    [
      [201, null],
      [400, "invalid_op"],
      [400, "invalid_kind"],
      [400, "invalid_body"],
      [400, "invalid_timestamp"],
      [400, "invalid_body"],
      [201, null],
    ],
  );
  const items = (await pull(server, "todo")).body.items;
  assert.deepEqual(items.map((item) => item.id), ["a", "g"]);
});

Deno.test("server: a store failure during a batch answers 500 and applies nothing", async () => {
  const store = new SpyStore();
  const errors: unknown[] = [];
  await using server = createSyncServer({
    store,
    onError: (error) => errors.push(error),
  });
  store.failCommits = true;
  const { status, body } = await send(server, "POST", "/batch", {
    json: {
      ops: [
        { opId: "o1", kind: "todo", id: "a", type: "upsert", payload: {} },
        { opId: "o2", kind: "todo", id: "b", type: "upsert", payload: {} },
      ],
    },
  });
  assert.equal(status, 500);
  assert.equal(body.error, "internal");
  assert.equal(errors.length, 1);
  store.failCommits = false;
  assert.deepEqual((await pull(server, "todo")).body.items, []);
  // The same ops apply afterwards: their keys were not stored.
  const retry = await send<BatchBody>(server, "POST", "/batch", {
    json: {
      ops: [{ opId: "o1", kind: "todo", id: "a", type: "upsert", payload: {} }],
    },
  });
  assert.equal(retry.body.results[0]?.status, 201);
});

Deno.test("server: a store failure after a batch's first slice answers the unapplied ops 500 each; the applied slice stands", async () => {
  const store = new SpyStore();
  const errors: unknown[] = [];
  await using server = createSyncServer({
    store,
    onError: (error) => errors.push(error),
  });
  // Every commit after the first (slice) fails.
  store.failWhen = () => store.commits.length > 1;
  const ops = Array.from({ length: 400 }, (_, index) => ({
    opId: `o${index}`,
    kind: "todo",
    id: `r${String(index).padStart(3, "0")}`,
    type: "upsert",
    payload: {},
  }));
  const { status, body } = await send<BatchBody>(server, "POST", "/batch", {
    json: { ops },
  });
  assert.equal(status, 200);
  const statuses = body.results.map((result) => result.status);
  assert.deepEqual(statuses.slice(0, 250), ops.slice(0, 250).map(() => 201));
  assert.deepEqual(statuses.slice(250), ops.slice(250).map(() => 500));
  assert.equal((body.results[320]?.error as ErrorBody).error, "internal");
  assert.deepEqual(
    body.results.map((result) => result.opId),
    ops.map((op) => op.opId),
  );
  assert.equal(errors.length, 1);
  store.failWhen = () => false;
  const items = (await pull(server, "todo", { limit: "1000" })).body.items;
  assert.equal(items.length, 250);
  // Sent again, the applied ops replay and the others apply.
  const again = await send<BatchBody>(server, "POST", "/batch", {
    json: { ops },
  });
  assert.deepEqual(
    again.body.results.map((
      result,
    ) => [result.status, result.replayed ?? false]),
    ops.map((_, index) => index < 250 ? [201, true] : [201, false]),
  );
});

Deno.test("server: a write and its idempotency entry commit in one store call", async () => {
  const store = new SpyStore();
  await using server = createSyncServer(options({ store }));
  await putOk(server, "todo", "1", {}, { "idempotency-key": "k1" });
  assert.deepEqual(store.commits.at(-1)?.map((write) => write.type), [
    "record",
    "idempotency",
  ]);
  await send(server, "POST", "/batch", {
    json: {
      ops: [
        { opId: "o1", kind: "todo", id: "a", type: "upsert", payload: {} },
        { opId: "o2", kind: "todo", id: "b", type: "upsert", payload: {} },
      ],
    },
  });
  assert.equal(store.commits.at(-1)?.length, 4);
  // A store that refuses the idempotency entry: the record is not applied.
  store.failWhen = (writes) =>
    writes.some((write) => write.type === "idempotency");
  const failed = await send(server, "PUT", "/todo/2", {
    json: {},
    headers: { "idempotency-key": "k2" },
  });
  assert.equal(failed.status, 500);
  store.failWhen = () => false;
  const items = (await pull(server, "todo")).body.items;
  assert.deepEqual(items.map((item) => item.id), ["1", "a", "b"]);
});

Deno.test("server: an idempotency fingerprint is the SHA-256 of the request's canonical JSON", async () => {
  // Stores keep fingerprints across restarts: their input and output must
  // never change, whatever computes them.
  async function sha256(text: string): Promise<string> {
    const digest = await crypto.subtle.digest(
      "SHA-256",
      new TextEncoder().encode(text),
    );
    return Array.from(
      new Uint8Array(digest),
      (byte) => byte.toString(16).padStart(2, "0"),
    ).join("");
  }
  const store = new SpyStore();
  await using server = createSyncServer(options({ store }));
  const fingerprint = () => {
    const write = store.commits.at(-1)?.find((w) => w.type === "idempotency");
    assert.ok(write?.type === "idempotency");
    return write.entry.fingerprint;
  };
  // Keys out of order, nested, a digit key, `__proto__`, unicode; every
  // padding length of the last SHA-256 block; one body past 16 KiB.
  const lengths = [...Array.from({ length: 70 }, (_, n) => n), 20_000];
  for (const n of lengths) {
    const body = JSON.parse(
      `{"z":[{"b":1,"a":"é€😀"}],"10":null,"2":true,"__proto__":{"y":0,"x":-1.5},"pad":"${
        "a".repeat(n)
      }","_baseUpdatedAt":null}`,
    );
    await putOk(server, "todo", `id-${n}`, body, {
      "idempotency-key": `k${n}`,
    });
    const canonical =
      `["PUT","json",null,{"10":null,"2":true,"__proto__":{"x":-1.5,"y":0},"pad":"${
        "a".repeat(n)
      }","z":[{"a":"é€😀","b":1}]},"todo","id-${n}",false,[]]`;
    assert.equal(fingerprint(), await sha256(canonical), `length ${n}`);
  }
  await send(server, "DELETE", "/todo/id-0?b=2&a=1&_baseUpdatedAt=x", {
    headers: { "idempotency-key": "d", "x-force-delete": "true" },
  });
  assert.equal(
    fingerprint(),
    await sha256('["DELETE","x","todo","id-0",true,[["a","1"],["b","2"]]]'),
  );
});

Deno.test("server: POST /batch answers 404 when batch is disabled", async () => {
  await using server = createSyncServer(options({ batch: false }));
  const { status } = await send(server, "POST", "/batch", {
    json: { ops: [] },
  });
  assert.equal(status, 404);
  const enabled = createSyncServer(options());
  const empty = await send<BatchBody>(enabled, "POST", "/batch", {
    json: { ops: [] },
  });
  assert.deepEqual(empty.body, { results: [] });
  await enabled.close();
});
