/**
 * Single writes: `PUT /{kind}/{id}` (version check, force, body checks,
 * schemas, body limit) and `DELETE /{kind}/{id}` (tombstones, version check).
 *
 * @module
 */

import assert from "node:assert/strict";
import { z } from "zod";
import type { JsonObject } from "../src/json.ts";
import { createSyncServer } from "../server/mod.ts";
import {
  type ConflictBody,
  type ErrorBody,
  iso,
  options,
  ORIGIN,
  pull,
  putOk,
  send,
  T0,
  TestClock,
} from "./_server_http.ts";

Deno.test("server: PUT of an absent record answers 201 with the stored record", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  const { status, body } = await send(server, "PUT", "/todo/1", {
    json: {
      title: "Milk",
      done: false,
      updated_at: "1999-01-01T00:00:00.000Z",
      deleted_at: "1999-01-01T00:00:00.000Z",
    },
  });
  assert.equal(status, 201);
  // The server's fields win: the body's updated_at/deleted_at are ignored.
  assert.deepEqual(body, {
    id: "1",
    title: "Milk",
    done: false,
    updated_at: iso(T0),
  });
  assert.deepEqual((await pull(server, "todo")).body.items, [body]);
});

Deno.test("server: PUT with the current _baseUpdatedAt answers 200 and bumps updated_at", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  const created = await putOk(server, "todo", "1", { title: "a" });
  clock.ms += 5_000;
  const { status, body } = await send(server, "PUT", "/todo/1", {
    json: { id: "1", title: "b", _baseUpdatedAt: created.updated_at! },
  });
  assert.equal(status, 200);
  assert.deepEqual(body, { id: "1", title: "b", updated_at: iso(T0 + 5_000) });
});

Deno.test("server: PUT compares instants, not strings", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  await putOk(server, "todo", "1", { title: "a" });
  clock.ms += 1;
  // 10:00:00.000Z written as 11:00+01:00 is the same instant.
  const { status } = await send(server, "PUT", "/todo/1", {
    json: { title: "b", _baseUpdatedAt: "2025-03-01T11:00:00+01:00" },
  });
  assert.equal(status, 200);
});

Deno.test("server: PUT with a stale _baseUpdatedAt answers 409 with the current record", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  const first = await putOk(server, "todo", "1", { title: "a" });
  clock.ms += 1_000;
  const second = await putOk(server, "todo", "1", {
    title: "b",
    _baseUpdatedAt: first.updated_at!,
  });
  clock.ms += 1_000;
  const { status, body } = await send<ConflictBody>(server, "PUT", "/todo/1", {
    json: { title: "mine", _baseUpdatedAt: first.updated_at! },
  });
  assert.equal(status, 409);
  assert.equal(body.error, "conflict");
  assert.equal(typeof body.message, "string");
  assert.deepEqual(body.current, second);
  assert.equal(body.serverTimestamp, second.updated_at);
  assert.deepEqual((await pull(server, "todo")).body.items, [second]);
});

Deno.test("server: PUT with X-Force-Update: true skips the version check", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  await putOk(server, "todo", "1", { title: "a" });
  clock.ms += 1_000;
  const { status, body } = await send(server, "PUT", "/todo/1", {
    json: { title: "forced", _baseUpdatedAt: "2000-01-01T00:00:00.000Z" },
    headers: { "x-force-update": "true" },
  });
  assert.equal(status, 200);
  assert.deepEqual(body, {
    id: "1",
    title: "forced",
    updated_at: iso(T0 + 1_000),
  });
  const notForced = await send(server, "PUT", "/todo/1", {
    json: { title: "x", _baseUpdatedAt: "2000-01-01T00:00:00.000Z" },
    headers: { "x-force-update": "false" },
  });
  assert.equal(notForced.status, 409);
});

Deno.test("server: PUT without _baseUpdatedAt writes unconditionally and resurrects a tombstone", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  await putOk(server, "todo", "1", { title: "a" });
  clock.ms += 1_000;
  const over = await send(server, "PUT", "/todo/1", {
    json: { title: "b", _baseUpdatedAt: null },
  });
  assert.equal(over.status, 200);
  assert.equal(over.body.title, "b");
  clock.ms += 1_000;
  assert.equal((await send(server, "DELETE", "/todo/1")).status, 200);
  clock.ms += 1_000;
  const back = await send(server, "PUT", "/todo/1", { json: { title: "c" } });
  assert.equal(back.status, 200);
  assert.deepEqual(back.body, {
    id: "1",
    title: "c",
    updated_at: iso(T0 + 3_000),
  });
});

Deno.test("server: PUT with a base onto a tombstone answers 409", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  await putOk(server, "todo", "1", { title: "a" });
  clock.ms += 1_000;
  const tombstone = (await send(server, "DELETE", "/todo/1")).body;
  clock.ms += 1_000;
  // Even the tombstone's own updated_at as base: a tombstone is no base.
  const { status, body } = await send<ConflictBody>(server, "PUT", "/todo/1", {
    json: { title: "b", _baseUpdatedAt: tombstone.updated_at! },
  });
  assert.equal(status, 409);
  assert.deepEqual(body.current, tombstone);
  assert.equal(body.serverTimestamp, tombstone.updated_at);
  assert.equal(typeof body.current.deleted_at, "string");
});

Deno.test("server: PUT with a base onto an absent record creates it", async () => {
  await using server = createSyncServer(options());
  const { status } = await send(server, "PUT", "/todo/new", {
    json: { _baseUpdatedAt: "2020-01-01T00:00:00.000Z" },
  });
  assert.equal(status, 201);
});

Deno.test("server: PUT answers 400 invalid_body for a body that is not a JSON object", async () => {
  await using server = createSyncServer(options());
  for (const raw of ["[1]", "null", '"text"', "{not json", "", "42"]) {
    const { status, body } = await send<ErrorBody>(server, "PUT", "/todo/1", {
      raw,
    });
    assert.equal(status, 400, raw);
    assert.equal(body.error, "invalid_body");
  }
  const invalidUtf8 = await send<ErrorBody>(server, "PUT", "/todo/1", {
    raw: new Uint8Array([0x7b, 0xff, 0x7d]),
  });
  assert.equal(invalidUtf8.status, 400);
  assert.deepEqual((await pull(server, "todo")).body.items, []);
});

Deno.test("server: PUT answers 400 id_mismatch when the body's id differs from the path", async () => {
  await using server = createSyncServer(options());
  for (const id of ["2", 1, null]) {
    const { status, body } = await send<ErrorBody>(server, "PUT", "/todo/1", {
      json: { id, title: "x" },
    });
    assert.equal(status, 400);
    assert.equal(body.error, "id_mismatch");
  }
  assert.equal(
    (await send(server, "PUT", "/todo/1", { json: { id: "1" } })).status,
    201,
  );
});

Deno.test("server: PUT answers 400 invalid_timestamp for a malformed _baseUpdatedAt", async () => {
  await using server = createSyncServer(options());
  await putOk(server, "todo", "1", {});
  for (
    const base of [
      "yesterday",
      "2025-03-01T10:00:00", // no timezone: the server's zone would decide
      "2025-13-45T10:00:00Z",
      "",
      12345,
      true,
    ]
  ) {
    const { status, body } = await send<ErrorBody>(server, "PUT", "/todo/1", {
      json: { _baseUpdatedAt: base },
    });
    assert.equal(status, 400, JSON.stringify(base));
    assert.equal(body.error, "invalid_timestamp");
  }
});

Deno.test("server: PUT validates with the kind's zod schema and answers 422 with issues", async () => {
  const Todo = z.object({ id: z.string(), title: z.string().min(1) });
  await using server = createSyncServer(options({ schemas: { todo: Todo } }));
  const { status, body } = await send<ErrorBody & { issues: JsonObject[] }>(
    server,
    "PUT",
    "/todo/1",
    { json: { title: 5 } },
  );
  assert.equal(status, 422);
  assert.equal(body.error, "validation");
  assert.deepEqual(body.issues[0]?.path, ["title"]);
  assert.equal(typeof body.issues[0]?.message, "string");
  assert.deepEqual((await pull(server, "todo")).body.items, []);
  // Server fields are not validated and extra fields are stored as sent.
  const ok = await send(server, "PUT", "/todo/1", {
    json: { title: "a", extra: 1, updated_at: 5 },
  });
  assert.equal(ok.status, 201);
  assert.equal(ok.body.extra, 1);
  // Other kinds have no schema.
  assert.equal(
    (await send(server, "PUT", "/note/1", { json: { title: 5 } })).status,
    201,
  );
});

Deno.test("server: a body over maxBodyBytes answers 413, by Content-Length and by bytes read", async () => {
  await using server = createSyncServer(options({ maxBodyBytes: 64 }));
  const big = JSON.stringify({ text: "x".repeat(100) });
  const declared = await send<ErrorBody>(server, "PUT", "/todo/1", {
    raw: big,
  });
  assert.equal(declared.status, 413);
  assert.equal(declared.body.error, "payload_too_large");
  // A streamed body has no Content-Length: the bytes read count.
  const chunks = [
    new TextEncoder().encode(big.slice(0, 50)),
    new TextEncoder().encode(big.slice(50)),
  ];
  const stream = ReadableStream.from(chunks);
  const streamed = await server.fetch(
    new Request(`${ORIGIN}/todo/1`, { method: "PUT", body: stream }),
  );
  assert.equal(streamed.headers.get("content-length"), null);
  assert.equal(streamed.status, 413);
  await streamed.body?.cancel();
  assert.deepEqual((await pull(server, "todo")).body.items, []);
  const fits = JSON.stringify({ text: "x".repeat(40) });
  assert.equal(
    (await send(server, "PUT", "/todo/1", { raw: fits })).status,
    201,
  );
});

// ---------------------------------------------------------------------------
// DELETE
// ---------------------------------------------------------------------------

Deno.test("server: DELETE soft-deletes: 200 with a tombstone that pulls deliver", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  await putOk(server, "todo", "1", { title: "a" });
  clock.ms += 2_000;
  const { status, body } = await send(server, "DELETE", "/todo/1");
  assert.equal(status, 200);
  assert.deepEqual(body, {
    id: "1",
    title: "a",
    updated_at: iso(T0 + 2_000),
    deleted_at: iso(T0 + 2_000),
  });
  assert.deepEqual((await pull(server, "todo")).body.items, [body]);
  assert.deepEqual(
    (await pull(server, "todo", { includeDeleted: "true" })).body.items,
    [body],
  );
});

Deno.test("server: DELETE of an id that never existed answers 404", async () => {
  await using server = createSyncServer(options());
  const { status, body } = await send<ErrorBody>(server, "DELETE", "/todo/1");
  assert.equal(status, 404);
  assert.equal(body.error, "not_found");
  assert.deepEqual((await pull(server, "todo")).body.items, []);
});

Deno.test("server: DELETE of a tombstone without a base answers 200 with it unchanged", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  await putOk(server, "todo", "1", {});
  const tombstone = (await send(server, "DELETE", "/todo/1")).body;
  clock.ms += 5_000;
  const again = await send(server, "DELETE", "/todo/1");
  assert.equal(again.status, 200);
  assert.deepEqual(again.body, tombstone);
  const withOwnBase = await send(
    server,
    "DELETE",
    `/todo/1?_baseUpdatedAt=${
      encodeURIComponent(String(tombstone.updated_at))
    }`,
  );
  assert.equal(withOwnBase.status, 200);
  assert.deepEqual(withOwnBase.body, tombstone);
  assert.deepEqual((await pull(server, "todo")).body.items, [tombstone]);
});

Deno.test("server: DELETE with a stale _baseUpdatedAt answers 409; X-Force-Delete skips the check", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  const first = await putOk(server, "todo", "1", { v: 1 });
  clock.ms += 1_000;
  const second = await putOk(server, "todo", "1", { v: 2 });
  clock.ms += 1_000;
  const stale = `/todo/1?_baseUpdatedAt=${
    encodeURIComponent(String(first.updated_at))
  }`;
  const conflict = await send<ConflictBody>(server, "DELETE", stale);
  assert.equal(conflict.status, 409);
  assert.deepEqual(conflict.body.current, second);
  assert.equal(conflict.body.serverTimestamp, second.updated_at);
  const forced = await send(server, "DELETE", stale, {
    headers: { "x-force-delete": "true" },
  });
  assert.equal(forced.status, 200);
  assert.equal(forced.body.deleted_at, iso(T0 + 2_000));
});

Deno.test("server: DELETE with the current _baseUpdatedAt deletes", async () => {
  await using server = createSyncServer(options());
  const created = await putOk(server, "todo", "1", {});
  const { status, body } = await send(
    server,
    "DELETE",
    `/todo/1?_baseUpdatedAt=${encodeURIComponent(String(created.updated_at))}`,
  );
  assert.equal(status, 200);
  assert.equal(typeof body.deleted_at, "string");
});

Deno.test("server: DELETE answers 400 invalid_timestamp for a malformed _baseUpdatedAt", async () => {
  await using server = createSyncServer(options());
  await putOk(server, "todo", "1", {});
  for (const base of ["soon", "2025-03-01", "2025-03-01T10:00:00"]) {
    const { status, body } = await send<ErrorBody>(
      server,
      "DELETE",
      `/todo/1?_baseUpdatedAt=${encodeURIComponent(base)}`,
    );
    assert.equal(status, 400, base);
    assert.equal(body.error, "invalid_timestamp");
  }
  assert.equal(
    (await pull(server, "todo")).body.items[0]?.deleted_at,
    undefined,
  );
});
