import assert from "node:assert/strict";
import { ParseError } from "../mod.ts";
import type { Mutation, Storage, WriteResult } from "../src/storage.ts";
import { createMemoryStorage } from "../storage/memory.ts";
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
  const resumed = server.requests.slice(before).find((r) =>
    r.path === "/items"
  );
  assert.equal(resumed?.query.get("afterId"), "i011");
  const all = await items.list();
  assert.equal(all.length, 50);
  const changes = eventsOf(reader.events, "change");
  assert.equal(
    new Set(changes.map((c) => c.id)).size,
    changes.length,
    "no record twice",
  );
});

Deno.test("pull: a page out of (updated_at, id) order is refused whole", async () => {
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
  await assert.rejects(reader.engine.sync(), /order/);
  assert.deepEqual(await items.list(), []);
  const [cursor] = await reader.storage.getMeta(["cursor/items"]);
  assert.equal(cursor, undefined);
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

Deno.test("pull: a malformed record fails the sync with a ParseError and applies nothing", async (t) => {
  const T1 = "2025-03-01T10:00:00.000Z";
  const cases: [string, unknown[]][] = [
    ["item without id", [{ updated_at: T1 }]],
    ["item with empty id", [{ id: "", updated_at: T1 }]],
    ["item with numeric id", [{ id: "a", updated_at: T1 }, {
      id: 1,
      updated_at: T1,
    }]],
    ["item without updated_at", [{ id: "a" }]],
    ["bad timestamp", [{ id: "a", updated_at: "yesterday" }]],
    ["impossible date", [{ id: "a", updated_at: "2025-02-30T00:00:00.000Z" }]],
    ["timestamp without zone", [{
      id: "a",
      updated_at: "2025-03-01T10:00:00",
    }]],
    ["numeric timestamp", [{ id: "a", updated_at: 1740823200000 }]],
    ["item not an object", [{ id: "a", updated_at: T1 }, 5]],
  ];
  for (const [name, items] of cases) {
    await t.step(name, async () => {
      await using server = startServer();
      await using reader = createClient(server.url);
      const table = reader.engine.table("items");
      server.intercept((request) =>
        request.method === "GET"
          ? Response.json({ items, nextPageToken: null })
          : undefined
      );
      await assert.rejects(reader.engine.sync(), (error: unknown) => {
        assert.ok(error instanceof ParseError, `${name}: ${error}`);
        assert.match(error.message, /^Cannot pull 'items' as /);
        return true;
      });
      assert.deepEqual(await table.list(), []);
      const [cursor] = await reader.storage.getMeta(["cursor/items"]);
      assert.equal(cursor, undefined);
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
