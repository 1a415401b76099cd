/**
 * The `410` rule (CONTRACT.md, Pull): `410` only for a cursor the client
 * brought from an earlier pull; the later pages of a pull that began with no
 * cursor never get it, so a full resync always finishes. End to end with the
 * real engine and REST transport, and on the handler.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { JsonObject } from "../src/json.ts";
import {
  createSyncServer,
  type ServerStore,
  type SyncServer,
} from "../server/mod.ts";
import { createMemoryServerStore } from "../server/memory.ts";
import { createClient, startServer } from "./_harness.ts";
import { iso, T0 } from "../server/_conformance_kit.ts";

const ORIGIN = "http://sync.test";

async function call(
  server: SyncServer,
  method: string,
  target: string,
  json?: JsonObject,
): Promise<{ status: number; body: JsonObject }> {
  const response = await server.fetch(
    new Request(`${ORIGIN}${target}`, {
      method,
      ...(json === undefined ? {} : { body: JSON.stringify(json) }),
    }),
  );
  return { status: response.status, body: await response.json() };
}

/** The query of the page after `page`, as the client builds it. */
function after(
  page: JsonObject,
  limit: number,
  token = true,
): string {
  const last = (page.items as JsonObject[]).at(-1)!;
  const query: Record<string, string> = {
    limit: String(limit),
    updatedSince: String(last.updated_at),
    afterId: String(last.id),
  };
  if (token) query.pageToken = String(page.nextPageToken);
  return `/todo?${new URLSearchParams(query)}`;
}

// ---------------------------------------------------------------------------
// End to end: the engine's full resync finishes after a purge
// ---------------------------------------------------------------------------

for (
  const [live, pageSize] of [[101, undefined], [2, 1]] as const
) {
  Deno.test(
    `resync: a fresh client pulls ${live} live records past a purged tombstone (page size ${
      pageSize ?? "default"
    })`,
    async () => {
      let now = T0;
      await using server = startServer({ now: () => now });
      for (let index = 0; index < live; index++) {
        if (index === live - 1) {
          // The purged tombstone sits before the last page's records.
          now += 1_000;
          await call(server.server, "PUT", "/todo/gone", {});
          assert.equal(
            (await call(server.server, "DELETE", "/todo/gone")).status,
            200,
          );
          now += 1_000;
        }
        const id = `r${String(index).padStart(3, "0")}`;
        assert.equal(
          (await call(server.server, "PUT", `/todo/${id}`, {})).status,
          201,
        );
      }
      now += 60_000;
      assert.equal(await server.server.purgeTombstones({ olderThan: now }), 1);

      await using client = createClient(server.url, {
        engine: pageSize === undefined ? {} : { pageSize },
      });
      const todos = client.engine.table("todo");
      const result = await client.engine.sync();
      assert.equal(result.stats.pulled, live);
      assert.equal((await todos.list()).length, live);
      const pulls = server.requests.filter((request) =>
        request.method === "GET" && request.path === "/todo"
      );
      // Page 2 and later carried the server's token, and none was refused.
      assert.ok(pulls.length >= 2);
      assert.ok(
        pulls.slice(1).every((request) => request.query.has("pageToken")),
      );
      // A second run resumes from its cursor: nothing new, no 410.
      const again = await client.engine.sync();
      assert.equal(again.stats.pulled, 0);
    },
  );
}

Deno.test("resync: a cursor from an earlier pull older than a purged tombstone still gets 410, and the resync drops the record", async () => {
  let now = T0;
  await using server = startServer({ now: () => now });
  await call(server.server, "PUT", "/todo/kept", {});
  await call(server.server, "PUT", "/todo/doomed", {});
  await using client = createClient(server.url);
  const todos = client.engine.table("todo");
  await client.engine.sync();
  assert.equal((await todos.list()).length, 2);
  now += 1_000;
  await call(server.server, "DELETE", "/todo/doomed");
  now += 60_000;
  assert.equal(await server.server.purgeTombstones({ olderThan: now }), 1);
  const before = server.requests.length;
  await client.engine.sync();
  assert.deepEqual((await todos.list()).map((record) => record.id), ["kept"]);
  // The first pull of that run brought the old cursor: it was refused.
  const first = server.requests.slice(before).find((request) =>
    request.method === "GET"
  );
  assert.ok(first?.query.has("updatedSince"));
});

// ---------------------------------------------------------------------------
// The rule on the handler
// ---------------------------------------------------------------------------

Deno.test("resync: later pages of a pull that began with no cursor are served after a purge; a bare or foreign cursor is not", async () => {
  let now = T0;
  await using server = createSyncServer({ now: () => now });
  await call(server, "PUT", "/todo/a", {});
  now += 1_000;
  await call(server, "PUT", "/todo/gone", {});
  await call(server, "DELETE", "/todo/gone");
  now += 1_000;
  await call(server, "PUT", "/todo/b", {});
  now += 60_000;
  assert.equal(await server.purgeTombstones({ olderThan: now }), 1);

  const first = await call(server, "GET", "/todo?limit=1");
  assert.equal(first.status, 200);
  const next = await call(server, "GET", after(first.body, 1));
  assert.equal(next.status, 200);
  assert.deepEqual(
    (next.body.items as JsonObject[]).map((item) => item.id),
    ["b"],
  );
  // The same position without the token, or with a token for another
  // position or one that does not decode, is a cursor on its own: 410.
  assert.equal(
    (await call(server, "GET", after(first.body, 1, false))).status,
    410,
  );
  const foreign = new URLSearchParams({
    limit: "1",
    updatedSince: iso(T0),
    afterId: "0",
    pageToken: String(first.body.nextPageToken),
  });
  assert.equal((await call(server, "GET", `/todo?${foreign}`)).status, 410);
  const garbage = after(first.body, 1, false) + "&pageToken=WzIsMSwiYSIsOV0";
  assert.equal((await call(server, "GET", garbage)).status, 410);
  // The token survives a later run: the client's stored cursor keeps it.
  now += 3_600_000;
  assert.equal((await call(server, "GET", after(first.body, 1))).status, 200);
});

Deno.test("resync: a tombstone written after the pull began and purged before its next page still gets 410", async () => {
  let now = T0;
  await using server = createSyncServer({ now: () => now });
  await call(server, "PUT", "/todo/a", {});
  await call(server, "PUT", "/todo/b", {});
  now += 1_000;
  const first = await call(server, "GET", "/todo?limit=1");
  assert.deepEqual(
    (first.body.items as JsonObject[]).map((item) => item.id),
    ["a"],
  );
  // The client holds "a"; it is deleted and its tombstone purged meanwhile.
  now += 1_000;
  await call(server, "DELETE", "/todo/a");
  now += 60_000;
  assert.equal(await server.purgeTombstones({ olderThan: now }), 1);
  assert.equal((await call(server, "GET", after(first.body, 1))).status, 410);
});

Deno.test("resync: a pull that began with a cursor keeps the cursor as its bound, not the time it began", async () => {
  let now = T0;
  await using server = createSyncServer({ now: () => now });
  // An earlier pull left the client holding "d" (live) and "x1".
  await call(server, "PUT", "/todo/d", {});
  now += 1_000;
  await call(server, "PUT", "/todo/x1", {});
  const earlier = await call(server, "GET", "/todo?limit=10");
  now += 1_000;
  await call(server, "PUT", "/todo/x2", {});
  now += 1_000;
  await call(server, "DELETE", "/todo/d");
  now += 1_000;
  await call(server, "PUT", "/todo/x4", {});
  now += 60_000;
  // The next run starts from its cursor (x1): x2 comes first.
  const page = await call(server, "GET", after(earlier.body, 1, false));
  assert.equal(page.status, 200);
  assert.deepEqual(
    (page.body.items as JsonObject[]).map((item) => item.id),
    ["x2"],
  );
  // Then d's tombstone, still ahead of the cursor, is purged: the client
  // would never learn of the deletion, so the next page is 410.
  assert.equal(await server.purgeTombstones({ olderThan: now }), 1);
  assert.equal((await call(server, "GET", after(page.body, 1))).status, 410);
});

Deno.test("resync: a delete in progress during a first page bounds its mark", async () => {
  let now = T0;
  const inner = createMemoryServerStore();
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  let deleting!: () => void;
  const committing = new Promise<void>((resolve) => deleting = resolve);
  const store: ServerStore = {
    getRecord: (ns, kind, id) => inner.getRecord(ns, kind, id),
    listRecords: (ns, kind, options) => inner.listRecords(ns, kind, options),
    getIdempotency: (ns, key) => inner.getIdempotency(ns, key),
    async commit(writes) {
      if (
        writes.some((write) =>
          write.type === "record" && write.record.deletedAt !== null
        )
      ) {
        deleting();
        await gate;
      }
      await inner.commit(writes);
    },
    purge: (options) => inner.purge(options),
    trimIdempotency: (ns, options) => inner.trimIdempotency(ns, options),
    lastWrite: (ns) => inner.lastWrite(ns),
    close: () => inner.close(),
    [Symbol.asyncDispose]: () => inner.close(),
  };
  await using server = createSyncServer({ store, now: () => now });
  await call(server, "PUT", "/todo/a", {});
  await call(server, "PUT", "/todo/b", {});
  // The delete of "a" gets its updated_at (T0 + 1 ms) and waits to commit.
  const deletion = call(server, "DELETE", "/todo/a");
  await committing;
  now += 10_000;
  // A first page read meanwhile still shows "a" alive.
  const first = await call(server, "GET", "/todo?limit=1");
  assert.deepEqual(first.body.items, [{ id: "a", updated_at: iso(T0) }]);
  release();
  assert.equal((await deletion).status, 200);
  now += 60_000;
  assert.equal(await server.purgeTombstones({ olderThan: now }), 1);
  // The tombstone is older than the page's time but was invisible to it:
  // the mark counted the write in progress, so this is still 410.
  assert.equal((await call(server, "GET", after(first.body, 1))).status, 410);
});

Deno.test("resync: under a frozen clock a fresh pull is served past a purged tombstone that was the newest write", async () => {
  await using server = createSyncServer({ now: () => T0 });
  await call(server, "PUT", "/todo/a", {});
  await call(server, "PUT", "/todo/z", {});
  // "gone" sorts before "z": T0 + 1 ms, then its tombstone T0 + 2 ms.
  await call(server, "PUT", "/todo/gone", {});
  await call(server, "DELETE", "/todo/gone");
  assert.equal(await server.purgeTombstones({ olderThan: T0 + 10 }), 1);
  const first = await call(server, "GET", "/todo?limit=1");
  const next = await call(server, "GET", after(first.body, 1));
  assert.equal(next.status, 200);
  assert.deepEqual(
    (next.body.items as JsonObject[]).map((item) => item.id),
    ["z"],
  );
});

Deno.test("resync: no write after a first page lands below its mark, not in its millisecond nor with a clock that steps back", async () => {
  // Same millisecond: "b" sorts after the last id, so without the floor its
  // deletion would share the clock's instant, below the mark.
  {
    await using server = createSyncServer({ now: () => T0 });
    await call(server, "PUT", "/todo/b", {});
    await call(server, "PUT", "/todo/a", {});
    const first = await call(server, "GET", "/todo?limit=1");
    assert.deepEqual(
      (first.body.items as JsonObject[]).map((item) => item.id),
      ["b"],
    );
    const deleted = await call(server, "DELETE", "/todo/b");
    assert.equal(deleted.body.updated_at, iso(T0 + 2));
    assert.equal(await server.purgeTombstones({ olderThan: T0 + 100 }), 1);
    assert.equal((await call(server, "GET", after(first.body, 1))).status, 410);
  }
  // A clock that steps back after the first page.
  {
    let now = T0;
    await using server = createSyncServer({ now: () => now });
    await call(server, "PUT", "/todo/a", {});
    await call(server, "PUT", "/todo/b", {});
    now = T0 + 10_000;
    const first = await call(server, "GET", "/todo?limit=1");
    now = T0 + 5_000;
    const deleted = await call(server, "DELETE", "/todo/a");
    assert.equal(deleted.body.updated_at, iso(T0 + 10_000));
    now = T0 + 100_000;
    assert.equal(await server.purgeTombstones({ olderThan: now }), 1);
    assert.equal((await call(server, "GET", after(first.body, 1))).status, 410);
  }
});
