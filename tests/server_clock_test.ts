/**
 * The server's timestamps: `updated_at` strictly increases, never goes
 * back, and a write in the same millisecond never lands behind a cursor.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createSyncServer } from "../server/mod.ts";
import { createMemoryServerStore } from "../server/memory.ts";
import {
  iso,
  options,
  pull,
  pullAll,
  putOk,
  send,
  T0,
  TestClock,
} from "./_server_http.ts";

Deno.test("server: updated_at strictly increases with each write of a record under a frozen clock", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  const stamps: string[] = [];
  let base: string | null = null;
  for (let index = 0; index < 5; index++) {
    const record = await putOk(server, "todo", "1", {
      v: index,
      ...(base === null ? {} : { _baseUpdatedAt: base }),
    });
    base = String(record.updated_at);
    stamps.push(base);
  }
  const tombstone = await send(server, "DELETE", "/todo/1");
  stamps.push(String(tombstone.body.updated_at));
  assert.deepEqual(stamps, [0, 1, 2, 3, 4, 5].map((ms) => iso(T0 + ms)));
});

Deno.test("server: the clock never goes back when now() does", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  const a = await putOk(server, "todo", "a", {});
  clock.ms -= 60_000;
  const b = await putOk(server, "todo", "b", {});
  assert.ok(
    Date.parse(String(b.updated_at)) >= Date.parse(String(a.updated_at)),
  );
  // The same holds across a restart on the same store.
  const store = createMemoryServerStore();
  await using first = createSyncServer(options({ store, now: clock.now }));
  const c = await putOk(first, "todo", "c", {});
  const restarted = createSyncServer(
    options({ store, now: () => clock.ms - 3_600_000 }),
  );
  const d = await putOk(restarted, "todo", "a", {});
  assert.ok(
    Date.parse(String(d.updated_at)) > Date.parse(String(c.updated_at)),
  );
});

Deno.test("server: records written in one millisecond share updated_at and page exactly", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  const idList = Array.from(
    { length: 20 },
    (_, i) => `r${String(i).padStart(2, "0")}`,
  );
  for (const id of idList) await putOk(server, "todo", id, {});
  const { items, pages } = await pullAll(server, "todo", 3);
  assert.deepEqual(items.map((item) => item.id), idList);
  assert.equal(new Set(items.map((item) => item.updated_at)).size, 1);
  assert.equal(pages, 7);
});

Deno.test("server: a write in the same millisecond never lands behind a client's cursor", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  await putOk(server, "todo", "m", {});
  const first = await pull(server, "todo");
  const last = first.body.items.at(-1)!;
  // "a" sorts before the cursor's id "m": at the same instant a client
  // holding (t, "m") would skip it, so the server moves it 1 ms later.
  const a = await putOk(server, "todo", "a", {});
  assert.equal(a.updated_at, iso(T0 + 1));
  const next = await pull(server, "todo", {
    updatedSince: String(last.updated_at),
    afterId: String(last.id),
  });
  assert.deepEqual(next.body.items.map((item) => item.id), ["a"]);
});
