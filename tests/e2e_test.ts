import assert from "node:assert/strict";
import { z } from "zod";
import { ParseError, ValidationError } from "../mod.ts";
import { BACKENDS, eventsOf, openClient, startServer } from "./_harness.ts";

for (const backend of BACKENDS) {
  Deno.test(`e2e (${backend.name}): create, update and delete on client A reach client B`, async () => {
    await using server = startServer();
    await using a = await openClient(server.url, backend);
    await using b = await openClient(server.url, backend);
    const todosA = a.engine.table("todos");
    const todosB = b.engine.table("todos");

    await todosA.put({ id: "t1", title: "Buy milk", done: false });
    await a.engine.sync();
    await b.engine.sync();
    assert.equal((await todosB.get("t1"))?.title, "Buy milk");

    await todosA.update("t1", { done: true });
    await a.engine.sync();
    await b.engine.sync();
    assert.equal((await todosB.get("t1"))?.done, true);

    await todosA.delete("t1");
    await a.engine.sync();
    await b.engine.sync();
    assert.equal(await todosB.get("t1"), undefined, "the tombstone hides it");
    const hidden = await todosB.get("t1", { includeDeleted: true });
    assert.equal(hidden?.title, "Buy milk", "kept as a tombstone");
    assert.deepEqual(await todosB.list(), []);
    assert.equal((await todosB.list({ includeDeleted: true })).length, 1);
  });

  Deno.test(`e2e (${backend.name}): clause 3, 50 offline writes to 5 records coalesce into at most 5 pushed ops`, async () => {
    await using server = startServer();
    await using a = await openClient(server.url, backend);
    const notes = a.engine.table("notes");
    for (let i = 0; i < 50; i++) {
      const id = `n${i % 5}`;
      await notes.put({ id, text: `version ${i}`, n: i });
    }
    assert.equal((await a.engine.outbox.list()).length, 5);
    const { stats } = await a.engine.sync();
    assert.equal(stats.pushed, 5);
    const writes = server.requests.filter((r) =>
      r.method === "PUT" || r.path.endsWith("/batch")
    );
    const sentOps = writes.reduce(
      (sum, r) =>
        sum + (r.method === "PUT" ? 1 : JSON.parse(r.body).ops.length),
      0,
    );
    assert.ok(sentOps <= 5, `sent ${sentOps} ops`);

    await using b = await openClient(server.url, backend);
    const notesB = b.engine.table("notes");
    await b.engine.sync();
    for (let r = 0; r < 5; r++) {
      const last = 45 + r;
      assert.equal((await notesB.get(`n${r}`))?.text, `version ${last}`);
    }
  });

  Deno.test(`e2e (${backend.name}): clause 14, the mood/energy/notes conflict keeps every field and reports the merge`, async () => {
    await using server = startServer();
    await using a = await openClient(server.url, backend);
    await using b = await openClient(server.url, backend);
    const logA = a.engine.table("log");
    const logB = b.engine.table("log");

    await logA.put({ id: "day1", mood: "ok", energy: 3, notes: "" });
    await a.engine.sync();
    await b.engine.sync();

    // A goes offline and edits mood and notes; meanwhile B changes energy.
    await logA.update("day1", { mood: "great", notes: "ran 5k" });
    await logB.update("day1", { energy: 5 });
    await b.engine.sync();
    await a.engine.sync();

    const merged = eventsOf(a.events, "dataMerged");
    assert.equal(merged.length, 1);
    assert.deepEqual([...merged[0]!.localFields].sort(), ["mood", "notes"]);
    assert.deepEqual(merged[0]!.serverFields, ["energy"]);
    assert.deepEqual(merged[0]!.conflictingFields, []);

    const fromA = await logA.get("day1");
    assert.equal(fromA?.mood, "great");
    assert.equal(fromA?.notes, "ran 5k");
    assert.equal(fromA?.energy, 5);
    await b.engine.sync();
    const fromB = await logB.get("day1");
    assert.deepEqual(fromB, fromA, "both clients hold the merged record");
    assert.equal((await a.engine.outbox.list()).length, 0);
  });

  Deno.test(`e2e (${backend.name}): clause 10, 1,000 records sharing one updated_at arrive exactly once with page size 7`, async () => {
    await using server = startServer({
      now: () => Date.parse("2025-03-01T10:00:00.000Z"),
    });
    await using seeder = await openClient(server.url, backend, {
      engine: { pushBatchSize: 100 },
    });
    const items = seeder.engine.table("items");
    for (let i = 0; i < 1000; i++) {
      await items.put({ id: `item-${String(i).padStart(4, "0")}`, i });
    }
    await seeder.engine.sync();
    const stamps = new Set(
      (await items.list()).map((item) => item.updated_at as string),
    );
    assert.equal(stamps.size, 1, "every record shares one updated_at");

    await using reader = await openClient(server.url, backend, {
      engine: { pageSize: 7 },
    });
    const readerItems = reader.engine.table("items");
    const { stats } = await reader.engine.sync();
    assert.equal(stats.pulled, 1000);
    const pages = eventsOf(reader.events, "pullPageApplied");
    assert.equal(pages.reduce((sum, p) => sum + p.count, 0), 1000);
    const seenIds = eventsOf(reader.events, "change").map((c) => c.id);
    assert.equal(seenIds.length, 1000);
    assert.equal(new Set(seenIds).size, 1000, "no record twice");
    assert.equal((await readerItems.list()).length, 1000);
  });

  Deno.test(`e2e (${backend.name}): clause 10, a pull that fails on page 4 resumes from page 4 without duplicates`, async () => {
    await using server = startServer();
    await using seeder = await openClient(server.url, backend);
    const items = seeder.engine.table("items");
    for (let i = 0; i < 30; i++) {
      await items.put({ id: `i${String(i).padStart(2, "0")}`, i });
    }
    await seeder.engine.sync();

    await using reader = await openClient(server.url, backend, {
      engine: { pageSize: 5 },
      transport: { retry: { attempts: 1 } },
    });
    reader.engine.table("items");
    let pulls = 0;
    let failedQuery = "";
    server.intercept((request, seen) => {
      if (request.method !== "GET" || seen.path !== "/items") return undefined;
      pulls++;
      if (pulls === 4) {
        failedQuery = seen.query.toString();
        return new Response(JSON.stringify({ error: "internal" }), {
          status: 500,
        });
      }
      return undefined;
    });
    await assert.rejects(reader.engine.sync());
    assert.equal(eventsOf(reader.events, "pullPageApplied").length, 3);

    const before = server.requests.length;
    await reader.engine.sync();
    const resumed = server.requests.slice(before).find((r) =>
      r.path === "/items"
    );
    assert.equal(
      resumed?.query.toString(),
      failedQuery,
      "same cursor as page 4",
    );
    const ids = eventsOf(reader.events, "change").map((c) => c.id);
    assert.equal(ids.length, 30);
    assert.equal(new Set(ids).size, 30, "no duplicates");
  });

  Deno.test(`e2e (${backend.name}): clause 11, a pulled change to a record with a pending edit updates only the base`, async () => {
    await using server = startServer();
    await using a = await openClient(server.url, backend);
    await using b = await openClient(server.url, backend);
    const docsA = a.engine.table("docs");
    const docsB = b.engine.table("docs");
    await docsA.put({ id: "d", title: "v1", body: "x" });
    await a.engine.sync();
    await b.engine.sync();

    await docsB.update("d", { title: "from B" });
    await b.engine.sync();
    await docsA.update("d", { body: "local edit" });
    // Pull only: the pending edit must survive the pulled version.
    await a.engine.sync({ pushKinds: [] });
    const local = await docsA.get("d");
    assert.equal(local?.body, "local edit");
    assert.equal(local?.title, "v1", "the pulled title waits for the push");
    assert.equal((await a.engine.outbox.list()).length, 1);

    await a.engine.sync();
    const after = await docsA.get("d");
    assert.equal(after?.body, "local edit");
    assert.equal(after?.title, "from B");
  });

  Deno.test(`e2e (${backend.name}): ids with / ? # % space and unicode round-trip`, async () => {
    await using server = startServer();
    await using a = await openClient(server.url, backend);
    await using b = await openClient(server.url, backend);
    const ids = [
      "a/b",
      "what?",
      "#hash",
      "100%",
      "with space",
      "ünï😀",
      "../up",
      "%2F",
    ];
    const filesA = a.engine.table("files");
    const filesB = b.engine.table("files");
    for (const id of ids) await filesA.put({ id, name: `name of ${id}` });
    await a.engine.sync();
    await b.engine.sync();
    for (const id of ids) {
      assert.equal((await filesB.get(id))?.name, `name of ${id}`, id);
    }
    await filesA.update("a/b", { name: "renamed" });
    await filesA.delete("what?");
    await a.engine.sync();
    await b.engine.sync();
    assert.equal((await filesB.get("a/b"))?.name, "renamed");
    assert.equal(await filesB.get("what?"), undefined);
  });

  Deno.test(`e2e (${backend.name}): clause 6, a lost response is re-sent with the same key and applied once`, async () => {
    await using server = startServer();
    await using a = await openClient(server.url, backend, {
      transport: { batch: false },
    });
    const todos = a.engine.table("todos");
    await todos.put({ id: "t", title: "once" });
    let puts = 0;
    server.intercept(async (request, _seen, next) => {
      if (request.method !== "PUT") return undefined;
      puts++;
      const response = await next(request);
      if (puts > 1) return response;
      // The server applied the write; the client sees the connection break.
      await response.body?.cancel();
      return new Response(
        new ReadableStream({
          start(controller) {
            controller.enqueue(new TextEncoder().encode('{"id"'));
            controller.error(new Error("connection lost"));
          },
        }),
        { status: 200, headers: { "content-type": "application/json" } },
      );
    });
    await a.engine.sync();
    const keys = server.requests.filter((r) => r.method === "PUT").map((r) =>
      r.headers.get("idempotency-key")
    );
    assert.equal(keys.length, 2, "sent twice");
    assert.equal(keys[0], keys[1], "with the same key");
    assert.ok(keys[0]);
    assert.equal((await a.engine.outbox.list()).length, 0);

    // Applied once: the record's first version is still its only one.
    await using b = await openClient(server.url, backend);
    b.engine.table("todos");
    await b.engine.sync();
    const stored = await b.engine.table("todos").get("t");
    assert.equal(stored?.title, "once");
    assert.equal(stored?.updated_at, (await todos.get("t"))?.updated_at);
  });

  Deno.test(`e2e (${backend.name}): clause 18, three concurrent sync() calls run once`, async () => {
    await using server = startServer();
    await using a = await openClient(server.url, backend);
    await a.engine.table("todos").put({ id: "t", title: "x" });
    const results = await Promise.all([
      a.engine.sync(),
      a.engine.sync(),
      a.engine.sync(),
    ]);
    assert.equal(results[0], results[1]);
    assert.equal(results[1], results[2]);
    assert.equal(eventsOf(a.events, "syncCompleted").length, 1);
    assert.equal(
      server.requests.filter((r) => r.method === "PUT" || r.path === "/batch")
        .length,
      1,
    );
  });

  Deno.test(`e2e (${backend.name}): clause 4, an invalid local write is rejected with a typed error and changes nothing`, async () => {
    await using server = startServer();
    await using a = await openClient(server.url, backend);
    const Todo = z.object({
      id: z.string(),
      title: z.string().min(1),
      done: z.boolean(),
    });
    const todos = a.engine.table("todos", { schema: Todo });
    await todos.put({ id: "t", title: "valid", done: false });
    const before = await a.engine.outbox.list();

    await assert.rejects(
      todos.put({ id: "u", title: "", done: false }),
      (error: unknown) => {
        assert.ok(error instanceof ValidationError);
        assert.equal(error.category, "validation");
        assert.deepEqual(error.issues[0]?.path, ["title"]);
        return true;
      },
    );
    await assert.rejects(
      todos.update("t", { done: "yes" as unknown as boolean }),
      ValidationError,
    );
    assert.equal(await todos.get("u"), undefined);
    assert.equal((await todos.get("t"))?.done, false);
    assert.deepEqual(await a.engine.outbox.list(), before);
  });

  Deno.test(`e2e (${backend.name}): a malformed server response fails the sync, a malformed item is skipped (clause 25), and neither changes anything`, async (t) => {
    const cases: [string, () => Response, "fails" | "skips"][] = [
      [
        "not JSON",
        () => new Response("<html>oops</html>", { status: 200 }),
        "fails",
      ],
      [
        "a page without items",
        () => Response.json({ nextPageToken: null }),
        "fails",
      ],
      [
        "an item without id",
        () =>
          Response.json({
            items: [{ updated_at: "2025-03-01T10:00:00.000Z" }],
          }),
        "skips",
      ],
      [
        "an item without updated_at",
        () => Response.json({ items: [{ id: "x" }] }),
        "skips",
      ],
    ];
    for (const [name, respond, outcome] of cases) {
      await t.step(name, async () => {
        await using server = startServer();
        await using a = await openClient(server.url, backend, {
          transport: { retry: { attempts: 1 } },
        });
        const todos = a.engine.table("todos");
        await todos.put({ id: "seed", title: "seed" });
        await a.engine.sync();
        await todos.put({ id: "pending", title: "waiting" });
        const outboxBefore = await a.engine.outbox.list();
        const recordsBefore = await todos.list({ includeDeleted: true });
        const [cursorBefore] = await a.storage.getMeta(["cursor/todos"]);

        server.intercept((request) =>
          request.method === "GET"
            ? respond()
            : new Response(null, { status: 503 })
        );
        if (outcome === "fails") {
          await assert.rejects(a.engine.sync(), (error: unknown) => {
            assert.ok(error instanceof ParseError, String(error));
            assert.equal(error.category, "parse");
            return true;
          });
        } else {
          const { stats } = await a.engine.sync();
          assert.equal(stats.skipped, 1);
          assert.equal(stats.pulled, 0);
        }
        const [cursorAfter] = await a.storage.getMeta(["cursor/todos"]);
        assert.deepEqual(cursorAfter, cursorBefore, "the cursor did not move");
        assert.deepEqual(
          await todos.list({ includeDeleted: true }),
          recordsBefore,
        );
        const outboxAfter = await a.engine.outbox.list();
        assert.deepEqual(
          outboxAfter.map((op) => [op.opId, op.payload]),
          outboxBefore.map((op) => [op.opId, op.payload]),
        );
      });
    }
  });
}
