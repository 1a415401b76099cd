/**
 * ENGINE.md clause 25, poison isolation on pull: an item that breaks the
 * wire limits is skipped and reported with its position, the good items
 * around it are applied, and the cursor moves past it; a page that brings
 * no progress stops the pull (clause 9) instead of being fetched again.
 *
 * @module
 */

import assert from "node:assert/strict";
import { ParseError, SyncEngine, SyncError, type SyncEvent } from "../mod.ts";
import { cursorIdAfter } from "../src/limits.ts";
import type { JsonValue } from "../src/json.ts";
import type { PullPage, PullRequest, Transport } from "../src/transport.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { createRestTransport } from "../transport/rest.ts";
import { json, startScriptedServer } from "./_scripted_server.ts";

const T0 = Date.parse("2025-03-01T10:00:00.000Z");

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** A stored row of the scripted server: its own sort key and the raw body. */
interface Row {
  readonly time: number;
  readonly id: string;
  readonly body: JsonValue;
}

/** A scripted backend that pages with the keyset, as the contract says. */
interface KeysetTransport extends Transport {
  readonly requests: PullRequest[];
}

/**
 * A transport over rows in `(time, id)` order, compared as the contract
 * compares (instants, then UTF-16 units), whatever the rows hold. A token
 * names the page's last row; like the reference server it refuses a token
 * that does not name the cursor sent with it. It throws after `maxRequests`
 * so a loop fails fast instead of hanging.
 */
function keysetTransport(
  rows: readonly Row[],
  maxRequests = 100,
): KeysetTransport {
  const requests: PullRequest[] = [];
  const tokens = new Map<string, { time: number; id: string }>();
  return {
    requests,
    pull(request): Promise<PullPage> {
      requests.push(request);
      if (requests.length > maxRequests) {
        return Promise.reject(new Error(`spinning: ${requests.length}`));
      }
      const since = request.updatedSince === null
        ? null
        : Date.parse(request.updatedSince);
      if (request.pageToken !== null) {
        const named = tokens.get(request.pageToken);
        if (named?.time !== since || named?.id !== request.afterId) {
          return Promise.reject(
            new SyncError("Cannot pull as the token names another cursor", {
              category: "rejected",
              status: 400,
            }),
          );
        }
      }
      const after = rows.filter((row) =>
        since === null ||
        (request.afterId === null ? row.time >= since : row.time > since ||
          (row.time === since && row.id > request.afterId))
      );
      const page = after.slice(0, request.limit);
      let nextPageToken: string | null = null;
      const last = page.at(-1);
      if (last !== undefined && page.length === request.limit) {
        nextPageToken = `t${tokens.size}`;
        tokens.set(nextPageToken, { time: last.time, id: last.id });
      }
      return Promise.resolve({
        items: page.map((row) => row.body),
        nextPageToken,
      });
    },
    push: () => Promise.resolve([]),
    close: () => Promise.resolve(),
    [Symbol.asyncDispose]: () => Promise.resolve(),
  };
}

function nested(depth: number): JsonValue {
  let value: JsonValue = "leaf";
  for (let i = 0; i < depth; i++) value = [value];
  return value;
}

/** A bad row: how it is broken, and where the server keeps it. */
interface Poison {
  readonly name: string;
  /** The row, at the sort key `(time, id)`. */
  row(time: number): Row;
  /** Whether a cursor can move past it (its position is readable). */
  readonly positioned: boolean;
}

const LONG = "x".repeat(70_000);
const OVER = "y".repeat(300);

const POISONS: readonly Poison[] = [
  {
    name: "lone-surrogate id",
    row: (time) => ({
      time,
      id: "m\ud800",
      body: { id: "m\ud800", updated_at: iso(time) },
    }),
    positioned: true,
  },
  {
    name: "70,000-character id",
    row: (time) => ({
      time,
      id: LONG,
      body: { id: LONG, updated_at: iso(time) },
    }),
    positioned: true,
  },
  {
    name: "300-character id",
    row: (time) => ({
      time,
      id: OVER,
      body: { id: OVER, updated_at: iso(time) },
    }),
    positioned: true,
  },
  {
    name: "record 5,000 levels deep",
    row: (time) => ({
      time,
      id: "m",
      body: { id: "m", updated_at: iso(time), deep: nested(5_000) },
    }),
    positioned: true,
  },
  {
    name: "bad deleted_at",
    row: (time) => ({
      time,
      id: "m",
      body: { id: "m", updated_at: iso(time), deleted_at: "soon" },
    }),
    positioned: true,
  },
  {
    name: "not an object",
    row: (time) => ({ time, id: "m", body: ["m", iso(time)] }),
    positioned: false,
  },
  {
    name: "missing updated_at",
    row: (time) => ({ time, id: "m", body: { id: "m" } }),
    positioned: false,
  },
  {
    name: "impossible updated_at",
    row: (time) => ({
      time,
      id: "m",
      body: { id: "m", updated_at: "2025-02-30T00:00:00.000Z" },
    }),
    positioned: false,
  },
  {
    name: "numeric id",
    row: (time) => ({ time, id: "m", body: { id: 7, updated_at: iso(time) } }),
    positioned: false,
  },
];

/** Nine good rows, one second apart, with the poison at `at` instead. */
function rowsWith(poison: Poison, at: number): Row[] {
  const rows: Row[] = [];
  for (let i = 0; i < 9; i++) {
    const time = T0 + i * 1000;
    rows.push(
      i === at ? poison.row(time) : {
        time,
        id: `g${i}`,
        body: { id: `g${i}`, updated_at: iso(time), i },
      },
    );
  }
  return rows;
}

function engineOn(transport: Transport, pageSize: number) {
  const storage = createMemoryStorage();
  const engine = new SyncEngine({ storage, transport, pageSize });
  const events: SyncEvent[] = [];
  engine.on("pullItemSkipped", (event) => events.push(event));
  engine.on("error", (event) => events.push(event));
  return {
    storage,
    engine,
    events,
    table: engine.table("items"),
    async [Symbol.asyncDispose]() {
      await engine.close();
      await storage.close();
    },
  };
}

// Page size 4 over nine rows: pages [0-3] [4-7] [8]. Row 0 starts a page,
// 1 is inside one, 3 ends a page with a token, 8 is the last row.
const MANY = [0, 1, 3, 8];
// Page size 1: every row is a page of its own.
const ONE = [0, 4, 8];

for (const poison of POISONS) {
  for (const [pageSize, spots] of [[4, MANY], [1, ONE]] as const) {
    for (const at of spots) {
      // With pages of one item, a page holding only an item the cursor
      // cannot pass brings no progress: the pull stops with an error.
      const stuck = pageSize === 1 && !poison.positioned;
      const name =
        `pull: clause 25, ${poison.name} at row ${at} of pages of ${pageSize} is ${
          stuck ? "reported and the pull stops without spinning" : "skipped"
        }`;
      Deno.test(name, async () => {
        const rows = rowsWith(poison, at);
        const transport = keysetTransport(rows);
        await using client = engineOn(transport, pageSize);
        const pages = Math.ceil(rows.length / pageSize);
        if (stuck) {
          await assert.rejects(client.engine.sync(), (error: unknown) => {
            assert.ok(error instanceof ParseError, String(error));
            assert.equal(error.code, "no_progress");
            assert.equal(error.retryable, false);
            return true;
          });
          const applied = (await client.table.list()).map((r) => r.id);
          assert.deepEqual(
            applied.sort(),
            rows.slice(0, at).map((r) => r.id).sort(),
            "the good items before it are applied",
          );
          assert.ok(transport.requests.length <= at + 2);
          const before = transport.requests.length;
          await assert.rejects(client.engine.sync(), ParseError);
          assert.equal(transport.requests.length, before + 1, "no refetch");
          return;
        }
        const result = await client.engine.sync();
        const good = rows.filter((_, i) => i !== at).map((r) => r.id);
        const applied = (await client.table.list()).map((r) => r.id);
        assert.deepEqual(applied.sort(), good.sort(), "good items applied");
        const skipped = client.events.filter((e) =>
          e.type === "pullItemSkipped"
        );
        assert.ok(skipped.length >= 1, "reported");
        assert.equal(result.stats.skipped, skipped.length);
        assert.equal(result.stats.pulled, good.length);
        const first = skipped[0]!;
        assert.ok(first.type === "pullItemSkipped");
        assert.equal(first.kind, "items");
        assert.equal(first.index, at % pageSize);
        assert.match(
          first.reason,
          /^Cannot apply pulled item \d+ of 'items' as /,
        );
        assert.ok(first.reason.length < 300, "the reason stays short");
        if (poison.positioned) {
          const row = rows[at]!;
          assert.deepEqual(first.position, {
            updatedAt: iso(row.time),
            id: cursorIdAfter(row.id),
          });
        } else {
          assert.equal(first.position, null);
        }
        assert.ok(
          !client.events.some((e) => e.type === "error"),
          "no error",
        );
        // The cursor ends past every row: the last one, or the one before
        // an unreadable last row.
        const [cursor] = await client.storage.getMeta(["cursor/items"]);
        const last = rows.at(-1)!;
        const end = at === 8 && !poison.positioned ? rows[7]! : last;
        assert.deepEqual(
          [
            (cursor?.value as { updatedAt: string }).updatedAt,
            (cursor?.value as { id: string }).id,
          ],
          [iso(end.time), cursorIdAfter(end.id)],
        );
        // One request per page and the caught-up one: no page is fetched
        // twice, an over-long id's cursor included.
        assert.ok(
          transport.requests.length <= pages + 1,
          `requests: ${transport.requests.length}`,
        );
        // Caught up: the next run asks once and applies nothing.
        const before = transport.requests.length;
        const again = await client.engine.sync();
        assert.equal(again.stats.pulled, 0);
        assert.ok(transport.requests.length - before <= 2);
      });
    }
  }
}

Deno.test("pull: clause 25, a full page of over-long ids sharing their first 256 characters and one millisecond is passed", async () => {
  const prefix = "p".repeat(256);
  const rows: Row[] = Array.from({ length: 100 }, (_, i) => {
    const id = `${prefix}${String(i).padStart(3, "0")}`;
    return { time: T0, id, body: { id, updated_at: iso(T0) } };
  });
  rows.push({ time: T0, id: "q", body: { id: "q", updated_at: iso(T0) } });
  const transport = keysetTransport(rows);
  await using client = engineOn(transport, 100);
  const result = await client.engine.sync();
  assert.equal(result.stats.skipped, 100);
  assert.deepEqual((await client.table.list()).map((r) => r.id), ["q"]);
  assert.ok(transport.requests.length <= 3, `${transport.requests.length}`);
});

Deno.test("pull: clause 25, several bad items in one page are each reported, the good ones applied", async () => {
  const rows: Row[] = [
    ...POISONS.map((poison, i) => poison.row(T0 + i * 1000)),
    {
      time: T0 + 99_000,
      id: "ok",
      body: { id: "ok", updated_at: iso(T0 + 99_000) },
    },
  ];
  const transport = keysetTransport(rows);
  await using client = engineOn(transport, 100);
  const result = await client.engine.sync();
  assert.equal(result.stats.skipped, POISONS.length);
  const problems = client.events.flatMap((e) =>
    e.type === "pullItemSkipped" ? [e.problem] : []
  );
  assert.deepEqual(problems, [
    "invalid_id",
    "invalid_id",
    "invalid_id",
    "too_deep",
    "invalid_deleted_at",
    "not_object",
    "invalid_updated_at",
    "invalid_updated_at",
    "invalid_id",
  ]);
  assert.deepEqual((await client.table.list()).map((r) => r.id), ["ok"]);
  assert.equal(transport.requests.length, 1);
});

Deno.test("pull: clause 25, a page whose items are all skipped still moves the cursor past them", async () => {
  const rows: Row[] = [0, 1, 2, 3].map((i) => POISONS[3]!.row(T0 + i * 1000))
    .map((row, i) => ({
      ...row,
      id: `m${i}`,
      body: { ...row.body as object, id: `m${i}` },
    }));
  rows.push({
    time: T0 + 9000,
    id: "z",
    body: { id: "z", updated_at: iso(T0 + 9000) },
  });
  const transport = keysetTransport(rows);
  await using client = engineOn(transport, 4);
  const result = await client.engine.sync();
  assert.equal(result.stats.skipped, 4);
  assert.deepEqual((await client.table.list()).map((r) => r.id), ["z"]);
  assert.equal(transport.requests.length, 2);
  assert.equal(transport.requests[1]?.afterId, "m3");
  assert.equal(transport.requests[1]?.pageToken, "t0", "the token follows");
});

Deno.test("pull: clause 25, an item behind the cursor is applied but never moves the cursor back", async () => {
  // A server that sorts ids by UTF-8 bytes puts "\uff01" before "😀"; the
  // contract's UTF-16 order puts it after.
  const time = iso(T0);
  const items: JsonValue[] = [
    { id: "a", updated_at: time },
    { id: "\uff01", updated_at: time },
    { id: "😀", updated_at: time },
  ];
  const transport: KeysetTransport = {
    ...keysetTransport([]),
    requests: [],
    pull(request) {
      this.requests.push(request);
      return Promise.resolve({
        items: this.requests.length === 1 ? items : [],
        nextPageToken: null,
      });
    },
  };
  await using client = engineOn(transport, 100);
  await client.engine.sync();
  assert.deepEqual(
    (await client.table.list()).map((r) => r.id).sort(),
    ["a", "\uff01", "😀"].sort(),
  );
  const [cursor] = await client.storage.getMeta(["cursor/items"]);
  assert.equal((cursor?.value as { id: string }).id, "\uff01");
});

/** A pull answer of the scripted HTTP server. */
function page(items: unknown[], nextPageToken: string | null): Response {
  return json({ items, nextPageToken });
}

Deno.test("pull: clause 9, empty pages with a token stop the pull at once, whatever the token", async (t) => {
  const scripts: [string, (index: number) => string][] = [
    ["a new token every time", (i) => `token-${i}`],
    ["alternating tokens", (i) => (i % 2 === 0 ? "even" : "odd")],
    ["the same token", () => "same"],
  ];
  for (const [name, token] of scripts) {
    await t.step(name, async () => {
      await using server = startScriptedServer((request, index) =>
        // Past 20 requests the pull spins: end it with an error of its own.
        index >= 20
          ? json({ error: "spinning" }, 400)
          : request.path === "/items"
          ? page([], token(index))
          : new Response(null, { status: 404 })
      );
      await using storage = createMemoryStorage();
      await using transport = createRestTransport({
        baseUrl: server.url,
        sleep: () => Promise.resolve(),
      });
      await using engine = new SyncEngine({ storage, transport });
      engine.table("items");
      const errors: SyncEvent[] = [];
      engine.on("error", (event) => errors.push(event));
      for (let run = 0; run < 3; run++) {
        await assert.rejects(engine.sync(), (error: unknown) => {
          assert.ok(error instanceof ParseError, String(error));
          assert.equal(error.code, "no_progress");
          assert.equal(error.retryable, false);
          assert.match(
            error.message,
            /^Cannot pull 'items' as the server's page brings no progress past the cursor: current value is 0 items and token "/,
          );
          return true;
        });
      }
      assert.equal(server.requests.length, 3, "one request per run");
      assert.equal(errors.length, 3, "reported as an error event each run");
    });
  }
});

Deno.test("pull: clause 9, a full page of items already passed brings no progress", async () => {
  const time = iso(T0);
  await using server = startScriptedServer((request) =>
    request.path === "/items"
      ? page(
        [{ id: "a", updated_at: time }, { id: "b", updated_at: time }],
        "more",
      )
      : new Response(null, { status: 404 })
  );
  await using storage = createMemoryStorage();
  await using transport = createRestTransport({ baseUrl: server.url });
  await using engine = new SyncEngine({ storage, transport, pageSize: 2 });
  const items = engine.table("items");
  await assert.rejects(engine.sync(), /brings no progress/);
  // The first page moved the cursor to b; the same page again cannot.
  assert.equal(server.requests.length, 2);
  assert.equal(server.requests[1]?.query.get("afterId"), "b");
  assert.equal(server.requests[1]?.query.get("pageToken"), "more");
  assert.equal((await items.list()).length, 2);
});

Deno.test("pull: a short page without a token that brings nothing new is the end, not an error", async () => {
  const time = iso(T0);
  // A server that answers `>=` instead of `>` sends the cursor's item again.
  await using server = startScriptedServer((request) =>
    request.path === "/items"
      ? page([{ id: "a", updated_at: time }], null)
      : new Response(null, { status: 404 })
  );
  await using storage = createMemoryStorage();
  await using transport = createRestTransport({ baseUrl: server.url });
  await using engine = new SyncEngine({ storage, transport });
  engine.table("items");
  await engine.sync();
  await engine.sync();
  assert.equal(server.requests.length, 2);
});

Deno.test("pull: a table whose server brings no progress does not stop the other tables", async () => {
  const time = iso(T0);
  await using server = startScriptedServer((request) =>
    request.path === "/broken"
      ? page([], "again")
      : page([{ id: "fine", updated_at: time }], null)
  );
  await using storage = createMemoryStorage();
  await using transport = createRestTransport({ baseUrl: server.url });
  await using engine = new SyncEngine({ storage, transport });
  engine.table("broken");
  const other = engine.table("other");
  await assert.rejects(engine.sync(), /brings no progress/);
  assert.equal((await other.get("fine"))?.id, "fine");
});

Deno.test("pull: clause 25, a full resync keeps a local record the server now sends broken", async () => {
  const good: Row = {
    time: T0,
    id: "m",
    body: { id: "m", updated_at: iso(T0), v: 1 },
  };
  const rows: Row[] = [good];
  const transport = keysetTransport(rows);
  await using client = engineOn(transport, 10);
  await client.engine.sync();
  assert.equal((await client.table.get("m"))?.v, 1);
  rows[0] = POISONS[3]!.row(T0 + 1000);
  const result = await client.engine.fullResync();
  assert.equal(result.stats.skipped, 1);
  assert.equal(result.stats.removed, 0);
  assert.equal((await client.table.get("m"))?.v, 1, "kept as it was");
});
