/**
 * Pulls: ids through the path, keyset paging, tombstones, limits, page
 * tokens, and the `410` of tombstone retention.
 *
 * @module
 */

import assert from "node:assert/strict";
import { ClosedError } from "../src/errors.ts";
import type { JsonValue } from "../src/json.ts";
import { createSyncServer } from "../server/mod.ts";
import { createMemoryServerStore } from "../server/memory.ts";
import {
  AWKWARD_IDS,
  serverRecord,
  shuffled,
} from "../server/_conformance_kit.ts";
import {
  type ErrorBody,
  iso,
  options,
  path,
  pull,
  pullAll,
  putOk,
  send,
  T0,
  TestClock,
} from "./_server_http.ts";

Deno.test("server: ids with / ? # % space unicode and NUL round-trip through the path", async () => {
  await using server = createSyncServer(options());
  const idList = AWKWARD_IDS.filter((id) => id.isWellFormed());
  for (const id of idList) {
    const { status, body } = await send(server, "PUT", path("todo", id), {
      json: { id, label: id },
    });
    assert.equal(status, 201, JSON.stringify(id));
    assert.equal(body.id, id);
  }
  // Every later commit sorts after every earlier one, so pulls list the ids
  // in the order they were written.
  const { items } = await pullAll(server, "todo", 3);
  assert.deepEqual(items.map((item) => item.id), idList);
  // A kind is a decoded segment too, held to [A-Za-z0-9_-] (§Limits).
  const kind = await send<ErrorBody>(server, "PUT", path("to do/ü", "x"), {
    json: {},
  });
  assert.equal(kind.status, 400);
  assert.equal(kind.body.error, "invalid_kind");
  assert.equal((await pull(server, "to do/ü")).status, 400);
  assert.equal(
    (await send(server, "PUT", path("to_do-2", "x"), { json: {} })).status,
    201,
  );
  assert.equal((await pull(server, "to_do-2")).body.items.length, 1);
  for (const id of idList) {
    const { status, body } = await send(server, "DELETE", path("todo", id));
    assert.equal(status, 200);
    assert.equal(body.label, id);
  }
  assert.equal((await send(server, "DELETE", path("todo", "nul"))).status, 404);
});

Deno.test("server: pull pages exactly through 1,000 records sharing one updated_at with limit 7", async () => {
  const store = createMemoryServerStore();
  const all = Array.from(
    { length: 1000 },
    (_, index) => serverRecord("todo", `id-${(index * 7919) % 1000}`, T0),
  );
  // Inserted out of order, so only the server's ordering can pass.
  await store.commit(
    shuffled(all).map((record) => ({
      type: "record" as const,
      namespace: "public",
      record,
    })),
  );
  await using server = createSyncServer(options({ store }));
  const { items, pages } = await pullAll(server, "todo", 7);
  const expected = all.map((record) => record.id).sort();
  assert.equal(pages, 143);
  assert.equal(items.length, 1000);
  assert.equal(new Set(items.map((item) => item.id)).size, 1000);
  assert.deepEqual(items.map((item) => item.id), expected);
});

Deno.test("server: pull selects by keyset: >= updatedSince, or > (updatedSince, afterId)", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  await putOk(server, "todo", "a", {});
  await putOk(server, "todo", "b", {});
  clock.ms += 10;
  await putOk(server, "todo", "c", {});
  const ids = async (query: Record<string, string>): Promise<JsonValue[]> =>
    (await pull(server, "todo", query)).body.items.map((item) => item.id!);
  assert.deepEqual(await ids({}), ["a", "b", "c"]);
  assert.deepEqual(await ids({ updatedSince: iso(T0) }), ["a", "b", "c"]);
  assert.deepEqual(
    await ids({ updatedSince: iso(T0), afterId: "a" }),
    ["b", "c"],
  );
  assert.deepEqual(await ids({ updatedSince: iso(T0 + 1) }), ["c"]);
  assert.deepEqual(
    await ids({ updatedSince: "2025-03-01T11:00:00.000+01:00", afterId: "b" }),
    ["c"],
  );
  assert.deepEqual(await ids({ updatedSince: iso(T0 + 11) }), []);
});

Deno.test("server: pull omits tombstones only with includeDeleted=false", async () => {
  await using server = createSyncServer(options());
  await putOk(server, "todo", "a", {});
  await putOk(server, "todo", "b", {});
  await send(server, "DELETE", "/todo/a");
  const all = await pull(server, "todo");
  assert.deepEqual(all.body.items.map((item) => item.id), ["b", "a"]);
  const live = await pull(server, "todo", { includeDeleted: "false" });
  assert.deepEqual(live.body.items.map((item) => item.id), ["b"]);
});

Deno.test("server: pull clamps limit to maxPageSize and gives a token only for a full page", async () => {
  await using server = createSyncServer(
    options({ maxPageSize: 3, defaultPageSize: 2 }),
  );
  for (const id of ["a", "b", "c", "d"]) await putOk(server, "todo", id, {});
  const clamped = await pull(server, "todo", { limit: "50" });
  assert.equal(clamped.body.items.length, 3);
  assert.equal(typeof clamped.body.nextPageToken, "string");
  const byDefault = await pull(server, "todo");
  assert.equal(byDefault.body.items.length, 2);
  const short = await pull(server, "todo", {
    limit: "5",
    updatedSince: iso(0),
  });
  assert.equal(short.body.items.length, 3);
  assert.equal(typeof short.body.nextPageToken, "string");
  const rest = await pull(server, "todo", {
    limit: "3",
    updatedSince: String(clamped.body.items[2]!.updated_at),
    afterId: "c",
    pageToken: clamped.body.nextPageToken!,
  });
  assert.deepEqual(rest.body.items.map((item) => item.id), ["d"]);
  assert.equal(rest.body.nextPageToken, null);
});

Deno.test("server: pull answers 400 for malformed timestamps, limits and flags", async () => {
  await using server = createSyncServer(options());
  const cases: [Record<string, string>, string][] = [
    [{ updatedSince: "yesterday" }, "invalid_timestamp"],
    [{ updatedSince: "2025-03-01T10:00:00" }, "invalid_timestamp"],
    [{ updatedSince: "" }, "invalid_timestamp"],
    [{ limit: "0" }, "invalid_limit"],
    [{ limit: "-1" }, "invalid_limit"],
    [{ limit: "1.5" }, "invalid_limit"],
    [{ limit: "ten" }, "invalid_limit"],
    [{ limit: "" }, "invalid_limit"],
    [{ includeDeleted: "yes" }, "invalid_query"],
    [{ afterId: "a" }, "invalid_query"],
  ];
  for (const [query, code] of cases) {
    const { status, body } = await pull(server, "todo", query);
    assert.equal(status, 400, JSON.stringify(query));
    assert.equal(body.error, code, JSON.stringify(query));
  }
  const twice = await send<ErrorBody>(server, "GET", "/todo?limit=1&limit=2");
  assert.equal(twice.status, 400);
});

Deno.test("server: pull ignores a page token that disagrees with the cursor: the keyset is authoritative", async () => {
  await using server = createSyncServer(options({ now: () => T0 }));
  for (const id of ["a", "b", "c"]) await putOk(server, "todo", id, {});
  const page = await pull(server, "todo", { limit: "1" });
  const token = page.body.nextPageToken!;
  const since = String(page.body.items[0]!.updated_at);
  const good = await pull(server, "todo", {
    limit: "1",
    updatedSince: since,
    afterId: "a",
    pageToken: token,
  });
  assert.equal(good.status, 200);
  assert.deepEqual(good.body.items.map((item) => item.id), ["b"]);
  for (
    const [query, expected] of [
      [{ updatedSince: since, afterId: "a", pageToken: "%%%garbage" }, ["b"]],
      [{ updatedSince: since, afterId: "a", pageToken: "eyJ4IjoxfQ" }, ["b"]],
      [{ updatedSince: since, afterId: "a", pageToken: "x".repeat(9000) }, [
        "b",
      ]],
      [{ updatedSince: since, afterId: "b", pageToken: token }, ["c"]],
      [{ updatedSince: iso(0), afterId: "a", pageToken: token }, ["a"]],
      [{ pageToken: token }, ["a"]],
    ] as const
  ) {
    const { status, body } = await pull(server, "todo", {
      limit: "1",
      ...query,
    });
    assert.equal(status, 200, JSON.stringify(query));
    assert.deepEqual(
      body.items.map((item) => item.id),
      expected,
      JSON.stringify(query),
    );
  }
});

// ---------------------------------------------------------------------------
// Tombstone retention
// ---------------------------------------------------------------------------

Deno.test("server: pull answers 410 after purgeTombstones() when the cursor predates a purged tombstone", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  await putOk(server, "todo", "a", {});
  await putOk(server, "note", "n", {});
  clock.ms += 1_000;
  await putOk(server, "todo", "b", {});
  const tombstone = (await send(server, "DELETE", "/todo/b")).body;
  clock.ms += 1_000;
  await putOk(server, "todo", "c", {});
  const before = await pull(server, "todo", { updatedSince: iso(T0) });
  assert.equal(before.status, 200);

  assert.equal(await server.purgeTombstones({ olderThan: clock.ms }), 1);
  const gone = await pull(server, "todo", { updatedSince: iso(T0) });
  assert.equal(gone.status, 410);
  assert.equal(gone.body.error, "gone");
  const atTombstone = await pull(server, "todo", {
    updatedSince: String(tombstone.updated_at),
  });
  assert.equal(atTombstone.status, 410);
  // A cursor past the purged tombstone missed nothing.
  const after = await pull(server, "todo", {
    updatedSince: iso(Date.parse(String(tombstone.updated_at)) + 1),
  });
  assert.equal(after.status, 200);
  assert.deepEqual(after.body.items.map((item) => item.id), ["c"]);
  // A first pull (full resync) is never gone; nor is a kind without purges.
  const full = await pull(server, "todo");
  assert.deepEqual(full.body.items.map((item) => item.id), ["a", "c"]);
  assert.equal(
    (await pull(server, "note", { updatedSince: iso(0) })).status,
    200,
  );
  assert.equal(await server.purgeTombstones(), 0);
});

Deno.test("server: tombstoneRetentionMs purges old tombstones automatically", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(
    options({ now: clock.now, tombstoneRetentionMs: 10_000 }),
  );
  await putOk(server, "todo", "a", {});
  await send(server, "DELETE", "/todo/a");
  clock.ms += 5_000;
  assert.equal(
    (await pull(server, "todo", { updatedSince: iso(0) })).status,
    200,
  );
  clock.ms += 120_000;
  const gone = await pull(server, "todo", { updatedSince: iso(0) });
  assert.equal(gone.status, 410);
  assert.deepEqual((await pull(server, "todo")).body.items, []);
});

Deno.test("server: purgeTombstones() validates its options and rejects after close", async () => {
  const server = createSyncServer(options());
  await assert.rejects(
    server.purgeTombstones({ olderThan: "soon" as unknown as number }),
    TypeError,
  );
  await assert.rejects(server.purgeTombstones({ olderThan: NaN }), RangeError);
  await server.close();
  await assert.rejects(server.purgeTombstones(), ClosedError);
});
