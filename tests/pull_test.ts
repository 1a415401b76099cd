import assert from "node:assert/strict";
import {
  ResyncRequiredError,
  ServerError,
  SyncEngine,
  type SyncEvent,
} from "../mod.ts";
import type { Mutation, Storage, WriteResult } from "../src/storage.ts";
import type { PullPage, PullRequest, Transport } from "../src/transport.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { createRestTransport } from "../transport/rest.ts";
import { createClient, eventsOf, startServer } from "./_harness.ts";

/** Wraps a storage so a chosen write throws, as a crash or a full disk would. */
function failingWrites(
  inner: Storage,
  shouldFail: (mutations: readonly Mutation[], index: number) => boolean,
): Storage & { writes: number } {
  let writes = 0;
  return {
    get capabilities() {
      return inner.capabilities;
    },
    get writes() {
      return writes;
    },
    getRecords: (kind, ids, options) => inner.getRecords(kind, ids, options),
    listRecords: (kind, options) => inner.listRecords(kind, options),
    getOps: (ids, options) => inner.getOps(ids, options),
    listOps: (options) => inner.listOps(options),
    getMeta: (keys, options) => inner.getMeta(keys, options),
    write(mutations, options): Promise<WriteResult> {
      const index = writes++;
      if (shouldFail(mutations, index)) {
        return Promise.reject(new Error(`disk full at write ${index}`));
      }
      return inner.write(mutations, options);
    },
    close: () => inner.close(),
    [Symbol.asyncDispose]: () => inner.close(),
  };
}

async function seed(url: string, count: number): Promise<void> {
  await using seeder = createClient(url);
  const items = seeder.engine.table("items");
  for (let i = 0; i < count; i++) {
    await items.put({ id: `i${String(i).padStart(3, "0")}`, i });
  }
  await seeder.engine.sync();
}

Deno.test("pull: a page larger than one storage write is split, the cursor moving with each chunk", async () => {
  await using server = startServer();
  await seed(server.url, 50);
  const storage = createMemoryStorage({ maxMutationsPerWrite: 7 });
  await using reader = createClient(server.url, {
    storage,
    engine: { pageSize: 50 },
  });
  const items = reader.engine.table("items");
  await reader.engine.sync();
  assert.equal((await items.list()).length, 50);
  assert.equal(eventsOf(reader.events, "pullPageApplied").length, 1);
  const [cursor] = await storage.getMeta(["cursor/items"]);
  assert.equal((cursor?.value as { id: string }).id, "i049");
});

Deno.test("pull: a write that fails mid-page resumes after the last chunk that landed", async () => {
  await using server = startServer();
  await seed(server.url, 50);
  let failNext = true;
  const storage = failingWrites(
    createMemoryStorage({ maxMutationsPerWrite: 7 }),
    (mutations) => {
      // The third chunk of the page (records i012..i017) fails once.
      const hit = failNext &&
        mutations.some((m) => m.type === "putRecord" && m.record.id === "i012");
      if (hit) failNext = false;
      return hit;
    },
  );
  await using reader = createClient(server.url, {
    storage,
    engine: { pageSize: 50 },
  });
  const items = reader.engine.table("items");
  await assert.rejects(reader.engine.sync(), /disk full/);
  const [cursor] = await storage.getMeta(["cursor/items"]);
  assert.equal(
    (cursor?.value as { id: string }).id,
    "i011",
    "the cursor stopped after the last chunk that landed",
  );
  assert.equal((await items.list()).length, 12);

  const before = server.requests.length;
  await reader.engine.sync();
  // The failed run's request ahead (from i049), cancelled, may still reach
  // the server after it ended; the resumed pull asks from i011, never from
  // the start.
  const asked = server.requests.slice(before)
    .filter((r) => r.path === "/items")
    .map((r) => r.query.get("afterId"));
  assert.ok(asked.includes("i011"), `asked from ${asked.join(", ")}`);
  assert.ok(!asked.includes(null), `asked from ${asked.join(", ")}`);
  const all = await items.list();
  assert.equal(all.length, 50);
  const changes = eventsOf(reader.events, "change");
  assert.equal(
    new Set(changes.map((c) => c.id)).size,
    changes.length,
    "no record twice",
  );
});

Deno.test("pull: a page out of (updated_at, id) order is applied, the cursor never moving back", async () => {
  await using server = startServer();
  await using reader = createClient(server.url);
  const items = reader.engine.table("items");
  server.intercept((request) =>
    request.method === "GET"
      ? Response.json({
        items: [
          { id: "b", updated_at: "2025-03-01T10:00:00.000Z" },
          { id: "a", updated_at: "2025-03-01T10:00:00.000Z" },
        ],
        nextPageToken: null,
      })
      : undefined
  );
  await reader.engine.sync();
  assert.deepEqual((await items.list()).map((r) => r.id), ["a", "b"]);
  const [cursor] = await reader.storage.getMeta(["cursor/items"]);
  assert.equal((cursor?.value as { id: string }).id, "b");
});

Deno.test("pull: a table maps other field spellings (uuid, updatedAt, deletedAt)", async () => {
  await using server = startServer();
  // A backend that spells its fields differently: translate the reference
  // server's answers on the way out.
  server.intercept(async (request, _seen, next) => {
    if (request.method !== "GET" || !request.url.includes("/people")) {
      return undefined;
    }
    const page = await (await next(request)).json();
    return Response.json({
      nextPageToken: page.nextPageToken,
      items: page.items.map((item: Record<string, unknown>) => {
        const { id, updated_at, deleted_at, ...rest } = item;
        return {
          ...rest,
          uuid: id,
          updatedAt: updated_at,
          ...(deleted_at === undefined ? {} : { deletedAt: deleted_at }),
        };
      }),
    });
  });
  await using writer = createClient(server.url);
  const people = writer.engine.table("people");
  await people.put({ id: "p1", name: "Ada" });
  await people.put({ id: "p2", name: "Grace" });
  await writer.engine.sync({ pullKinds: [] });
  await people.delete("p2");
  await writer.engine.sync({ pullKinds: [] });

  await using reader = createClient(server.url);
  const mapped = reader.engine.table("people", {
    fields: { id: "uuid", updatedAt: "updatedAt", deletedAt: "deletedAt" },
  });
  await reader.engine.sync();
  assert.equal((await mapped.get("p1"))?.name, "Ada");
  assert.equal(
    await mapped.get("p2"),
    undefined,
    "the tombstone is recognised",
  );
});

Deno.test("pull: clause 25, a malformed record is skipped and reported, the good ones around it applied", async (t) => {
  const T1 = "2025-03-01T10:00:00.000Z";
  const T2 = "2025-03-01T10:00:01.000Z";
  const before = { id: "a", updated_at: T1 };
  const after = { id: "z", updated_at: T2 };
  const cases: [string, unknown][] = [
    ["item without id", { updated_at: T1 }],
    ["item with empty id", { id: "", updated_at: T1 }],
    ["item with numeric id", { id: 1, updated_at: T1 }],
    ["item without updated_at", { id: "b" }],
    ["bad timestamp", { id: "b", updated_at: "yesterday" }],
    ["impossible date", { id: "b", updated_at: "2025-02-30T00:00:00.000Z" }],
    ["timestamp without zone", { id: "b", updated_at: "2025-03-01T10:00:00" }],
    ["numeric timestamp", { id: "b", updated_at: 1740823200000 }],
  ];
  for (const [name, bad] of cases) {
    await t.step(name, async () => {
      await using server = startServer();
      await using reader = createClient(server.url);
      const skipped: SyncEvent[] = [];
      reader.engine.on("pullItemSkipped", (event) => skipped.push(event));
      const table = reader.engine.table("items");
      server.intercept((request) =>
        request.method === "GET"
          ? Response.json({ items: [before, bad, after], nextPageToken: null })
          : undefined
      );
      const result = await reader.engine.sync();
      assert.equal(result.stats.skipped, 1, name);
      assert.equal(result.stats.pulled, 2);
      assert.deepEqual(
        skipped.map((e) => e.type === "pullItemSkipped" && e.index),
        [1],
      );
      assert.deepEqual((await table.list()).map((r) => r.id), ["a", "z"]);
      const [cursor] = await reader.storage.getMeta(["cursor/items"]);
      assert.equal((cursor?.value as { id: string }).id, "z");
    });
  }
});

Deno.test("pull: once one record fits a write, every larger byte limit pulls the page too", async () => {
  await using server = startServer();
  await using writer = createClient(server.url);
  const items = writer.engine.table("items");
  // Ids and sizes that differ, so where a chunk ends changes its cursor's size.
  await items.put({ id: "c", d: "s".repeat(300) });
  await writer.engine.sync();
  await items.put({ id: "a".repeat(200), d: "s".repeat(100) });
  await writer.engine.sync();
  await items.put({ id: "b", d: "y".repeat(400) });
  await writer.engine.sync();
  let smallest: number | null = null;
  for (let max = 600; max <= 3000; max += 10) {
    await using client = createClient(server.url, {
      storage: createMemoryStorage({ maxWriteBytes: max }),
    });
    const table = client.engine.table("items");
    try {
      await client.engine.sync();
      smallest ??= max;
      assert.equal((await table.list()).length, 3, `limit ${max}`);
    } catch (error) {
      assert.equal(
        smallest,
        null,
        `limit ${max} failed after ${smallest} worked: ${error}`,
      );
    }
  }
  assert.ok(smallest !== null);
});

Deno.test("pull: every next page carries the token the previous page returned, pages applied in several writes too", async () => {
  await using server = startServer();
  await seed(server.url, 35);
  const seeded = server.requests.length;
  const returned: (string | null)[] = [];
  server.intercept(async (request, _seen, next) => {
    const response = await next(request);
    if (request.method !== "GET" || !request.url.includes("/items")) {
      return response;
    }
    const body = await response.json();
    returned.push(body.nextPageToken);
    return Response.json(body, { status: response.status });
  });
  const storage = createMemoryStorage({ maxMutationsPerWrite: 4 });
  await using reader = createClient(server.url, {
    storage,
    engine: { pageSize: 10 },
  });
  reader.engine.table("items");
  await reader.engine.sync();
  const sent = server.requests.slice(seeded).filter((r) => r.path === "/items")
    .map((r) => r.query.get("pageToken"));
  assert.equal(sent.length, 4);
  assert.equal(sent[0], null);
  for (let i = 1; i < sent.length; i++) {
    assert.ok(returned[i - 1] !== null, `page ${i} returned a token`);
    assert.equal(sent[i], returned[i - 1], `page ${i + 1} sends it`);
  }
  const [cursor] = await storage.getMeta(["cursor/items"]);
  assert.deepEqual(Object.keys(cursor?.value as object).sort(), [
    "id",
    "pageToken",
    "updatedAt",
  ]);
});

const T0 = Date.parse("2025-03-01T10:00:00.000Z");

/**
 * A scripted backend whose tombstone horizon is past every record: as the
 * contract says, it answers 410 to a cursor the client brings, and serves
 * the pages of a pull it began itself, recognised by the token it issued
 * for exactly that cursor (its mark); with `marks: false`, it answers 410
 * to every cursor. It throws after 60 requests, so a loop fails fast.
 */
function horizonTransport(
  count: number,
  options: { marks: boolean },
): Transport & { requests: PullRequest[] } {
  const requests: PullRequest[] = [];
  const tokens = new Map<string, { since: string; afterId: string }>();
  const rows = Array.from({ length: count }, (_, i) => ({
    id: `r${String(i).padStart(2, "0")}`,
    updated_at: new Date(T0 + i * 1000).toISOString(),
  }));
  return {
    requests,
    pull(request): Promise<PullPage> {
      requests.push(request);
      if (requests.length > 60) {
        return Promise.reject(new Error("spinning"));
      }
      if (request.updatedSince !== null) {
        const named = request.pageToken === null
          ? undefined
          : tokens.get(request.pageToken);
        const marked = options.marks &&
          named?.since === request.updatedSince &&
          named?.afterId === request.afterId;
        if (!marked) {
          return Promise.reject(
            new ResyncRequiredError("Cannot pull as the cursor is too old"),
          );
        }
      }
      const since = request.updatedSince;
      const after = rows.filter((row) =>
        since === null || row.updated_at > since ||
        (row.updated_at === since && row.id > request.afterId!)
      );
      const page = after.slice(0, request.limit);
      const last = page.at(-1);
      let nextPageToken: string | null = null;
      if (last !== undefined && page.length === request.limit) {
        nextPageToken = `m${tokens.size}`;
        tokens.set(nextPageToken, { since: last.updated_at, afterId: last.id });
      }
      return Promise.resolve({ items: page, nextPageToken });
    },
    push: () => Promise.resolve([]),
    close: () => Promise.resolve(),
    [Symbol.asyncDispose]: () => Promise.resolve(),
  };
}

Deno.test("pull: a crash between the writes of a page does not lose the server's mark: the resumed pull goes back to the page's request, not to a full resync", async () => {
  const transport = horizonTransport(20, { marks: true });
  let failNext = true;
  const storage = failingWrites(
    createMemoryStorage({ maxMutationsPerWrite: 3 }),
    (mutations) => {
      // Page 2 (r05..r09) lands in writes of two records: the one holding
      // r07 fails once, after r05 and r06 landed with a mid-page cursor.
      const hit = failNext &&
        mutations.some((m) => m.type === "putRecord" && m.record.id === "r07");
      if (hit) failNext = false;
      return hit;
    },
  );
  await using engine = new SyncEngine({ storage, transport, pageSize: 5 });
  const items = engine.table("items");
  const changes: string[] = [];
  engine.on("change", (event) => changes.push(event.id));
  await assert.rejects(engine.sync(), /disk full/);
  const [mid] = await storage.getMeta(["cursor/items"]);
  assert.equal((mid?.value as { id: string }).id, "r06");
  assert.equal((mid?.value as { pageToken: unknown }).pageToken, null);

  const crashAt = transport.requests.length;
  await engine.sync();
  const resumed = transport.requests.slice(crashAt);
  assert.deepEqual(
    resumed.slice(0, 2).map((r) => [r.afterId, r.pageToken]),
    [["r06", null], ["r04", "m0"]],
    "410 for the mid-page cursor, then the page's own marked request",
  );
  assert.ok(
    resumed.every((r) => r.updatedSince !== null),
    "no full resync from an empty cursor",
  );
  assert.equal((await items.list()).length, 20);
  assert.equal(new Set(changes).size, changes.length, "no record twice");
  assert.equal(changes.length, 20);
  const [end] = await storage.getMeta(["cursor/items"]);
  assert.equal((end?.value as { id: string }).id, "r19");
  assert.equal(Object.hasOwn(end?.value as object, "pageStart"), false);
});

Deno.test("pull: a 410 during a full resync is a non-retryable error, not a loop", async () => {
  const transport = horizonTransport(20, { marks: false });
  await using storage = createMemoryStorage();
  await using engine = new SyncEngine({ storage, transport, pageSize: 5 });
  engine.table("items");
  const check = (error: unknown): boolean => {
    assert.ok(error instanceof ServerError, String(error));
    assert.equal(error.status, 410);
    assert.equal(error.retryable, false);
    assert.match(
      error.message,
      /^Cannot resync 'items' as the server answered 410 to a pull that began with no cursor/,
    );
    return true;
  };
  await assert.rejects(engine.fullResync(), check);
  assert.equal(transport.requests.length, 2, "page 1, then the 410");
  // A sync from a cursor the client brings: 410, one resync, 410 again.
  await storage.write([{
    type: "putMeta",
    key: "cursor/items",
    value: {
      updatedAt: new Date(T0).toISOString(),
      id: "r00",
      pageToken: null,
    },
  }]);
  await storage.write([{ type: "deleteMeta", key: "resync/items" }]);
  await assert.rejects(engine.sync(), check);
  assert.equal(transport.requests.length, 5);
});

for (
  const [name, token] of [
    ["a lone surrogate", "tok\ud800"],
    ["100,000 characters", "t".repeat(100_000)],
  ] as const
) {
  Deno.test(`pull: a page token that cannot travel (${name}) is dropped, and the keyset cursor goes on without it`, async () => {
    const seen: URLSearchParams[] = [];
    const items = ["a", "b", "c"].map((id, i) => ({
      id,
      updated_at: new Date(Date.UTC(2025, 2, 1, 10, 0, i)).toISOString(),
    }));
    await using http = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen() {} },
      (request) => {
        const query = new URL(request.url).searchParams;
        seen.push(query);
        const afterId = query.get("afterId");
        const rest = items.filter((item) =>
          afterId === null || item.id > afterId
        );
        // The first page hands out the token; later pages none.
        return Response.json({
          items: rest.slice(0, 1),
          nextPageToken: afterId === null ? token : null,
        });
      },
    );
    await using storage = createMemoryStorage();
    await using transport = createRestTransport({
      baseUrl: `http://127.0.0.1:${http.addr.port}`,
    });
    await using engine = new SyncEngine({ storage, transport, pageSize: 1 });
    const table = engine.table("todos");
    const first = await engine.sync();
    assert.equal(first.stats.pulled, 3);
    assert.deepEqual((await table.list()).map((r) => r.id), ["a", "b", "c"]);
    assert.ok(seen.every((query) => query.get("pageToken") === null));
    // Later runs are not stuck on the token either.
    for (let run = 0; run < 2; run++) await engine.sync();
    assert.ok(seen.length <= 6, `requests: ${seen.length}`);
  });
}
