import assert from "node:assert/strict";
import { Resolutions, SyncEngine } from "../mod.ts";
import type { Storage } from "../src/storage.ts";
import { openKvStorage } from "../storage/kv.ts";
import { openSqliteStorage } from "../storage/sqlite.ts";
import { createRestTransport } from "../transport/rest.ts";
import { createClient, eventsOf, startServer } from "./_harness.ts";

const DURABLE: [string, (path: string) => Promise<Storage>][] = [
  ["sqlite", (path) => openSqliteStorage(`${path}.sqlite`)],
  ["kv", (path) => openKvStorage(`${path}.kv`)],
];

for (const [name, open] of DURABLE) {
  Deno.test(`inbox (${name}): a deferred conflict survives a restart and resolves later`, async () => {
    const dir = await Deno.makeTempDir();
    const path = `${dir}/client`;
    try {
      await using server = startServer();
      await using b = createClient(server.url);
      const notesB = b.engine.table("notes");
      {
        await using storage = await open(path);
        await using transport = createRestTransport({ baseUrl: server.url });
        await using engine = new SyncEngine({
          storage,
          transport,
          strategy: "manual",
        });
        const notes = engine.table("notes");
        await notes.put({ id: "n", title: "t0", body: "b0" });
        await notes.put({ id: "other", title: "o" });
        await engine.sync();
        await b.engine.sync();
        await notesB.update("n", { title: "server" });
        await b.engine.sync();
        await notes.update("n", { body: "local" });
        await notes.update("n", { body: "local, again" }); // queued behind? no: folded
        const { stats } = await engine.sync();
        assert.equal(stats.deferred, 1);
        assert.equal((await engine.conflicts.list()).length, 1);
      }
      // The app restarts: a new process, the same file.
      await using storage = await open(path);
      await using transport = createRestTransport({ baseUrl: server.url });
      await using engine = new SyncEngine({
        storage,
        transport,
        strategy: "manual",
      });
      const notes = engine.table("notes");
      const [conflict] = await engine.conflicts.list();
      assert.equal(conflict?.id, "n");
      assert.equal(conflict?.server?.title, "server");
      assert.equal(conflict?.local?.body, "local, again");
      assert.equal(conflict?.base?.body, "b0", "the base it edited");
      assert.deepEqual(conflict?.changedFields, ["body"]);
      assert.equal(
        (await notes.get("n"))?.body,
        "local, again",
        "the local edit is kept",
      );

      // Still parked after a sync: nothing loops.
      const before = server.requests.length;
      await engine.sync();
      assert.equal(
        server.requests.slice(before).filter((r) => r.method !== "GET").length,
        0,
      );
      await engine.conflicts.resolve(
        conflict!.opId,
        Resolutions.acceptMerged({
          ...conflict!.server!,
          body: conflict!.local!.body!,
        }),
      );
      const events: string[] = [];
      engine.on("opPushed", (event) => events.push(event.id));
      await engine.sync();
      assert.deepEqual(events, ["n"]);
      await b.engine.sync();
      const final = await notesB.get("n");
      assert.equal(final?.title, "server");
      assert.equal(final?.body, "local, again");
      assert.equal((await engine.conflicts.list()).length, 0);
      assert.equal(eventsOf(b.events, "error").length, 0);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("inbox: a parked op blocks only its record; later edits of it wait behind", async () => {
  await using server = startServer();
  await using a = createClient(server.url, { engine: { strategy: "manual" } });
  await using b = createClient(server.url);
  const notesA = a.engine.table("notes");
  const notesB = b.engine.table("notes");
  await notesA.put({ id: "n", v: 0 });
  await a.engine.sync();
  await b.engine.sync();
  await notesB.update("n", { v: "server" });
  await b.engine.sync();
  await notesA.update("n", { v: "local" });
  await a.engine.sync(); // parked
  await notesA.update("n", { w: "later edit" }); // queues behind the parked op
  await notesA.put({ id: "free", v: 1 });
  const { stats } = await a.engine.sync();
  assert.equal(stats.pushed, 1, "only the free record went out");
  const pending = await a.engine.outbox.list({ states: ["pending"] });
  assert.deepEqual(pending.map((op) => op.id), ["n"]);
  const [parked] = await a.engine.conflicts.list();
  await a.engine.conflicts.resolve(parked!.opId, Resolutions.discard());
  // The later op is rebuilt on the server's record: the discarded value is
  // gone from it, its own change stays.
  const [later] = await a.engine.outbox.list();
  assert.equal(later?.payload?.v, "server");
  assert.equal(later?.payload?.w, "later edit");
  assert.equal((await notesA.get("n"))?.v, "server");
  // It was made on a stale copy too: under `manual` it meets its own
  // conflict, which the app accepts.
  await a.engine.sync();
  const [second] = await a.engine.conflicts.list();
  assert.deepEqual(second?.changedFields, ["w"]);
  await a.engine.conflicts.resolve(second!.opId, Resolutions.acceptClient());
  await a.engine.sync();
  await b.engine.sync();
  const final = await notesB.get("n");
  assert.equal(final?.v, "server", "the discarded edit never came back");
  assert.equal(final?.w, "later edit", "the later edit went through on top");
});

Deno.test("inbox: under autoPreserve an edit queued behind a discarded one merges by its own fields", async () => {
  await using server = startServer();
  await using a = createClient(server.url, {
    engine: { strategy: "serverWins" },
    transport: { batch: false, retry: { attempts: 1 } },
  });
  await using b = createClient(server.url);
  const notesA = a.engine.table("notes", { strategy: "autoPreserve" });
  const notesB = b.engine.table("notes");
  await notesA.put({ id: "n", v: 0, w: 0 });
  await a.engine.sync();
  await b.engine.sync();
  await notesB.update("n", { v: "server" });
  await b.engine.sync();
  await notesA.update("n", { v: "local" });
  let fail = true;
  server.intercept((request) => {
    if (request.method === "PUT" && fail) {
      fail = false;
      return new Response(null, { status: 503 });
    }
    return undefined;
  });
  await a.engine.sync(); // sent once: frozen
  await notesA.update("n", { w: "later" }); // a second op behind it
  await a.engine.sync();
  await b.engine.sync();
  const final = await notesB.get("n");
  assert.equal(final?.v, "local", "autoPreserve kept the local v");
  assert.equal(final?.w, "later");
  assert.deepEqual(await notesA.get("n"), final);
});
