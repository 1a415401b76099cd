import assert from "node:assert/strict";
import { type JsonObject, Resolutions } from "../mod.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import {
  createClient,
  eventsOf,
  startServer,
  type TestServer,
} from "./_harness.ts";

/** Makes the next write request fail once with 503. */
function failNextWrite(server: TestServer): void {
  let failed = false;
  server.intercept((_request, seen) => {
    if (!failed && (seen.method === "PUT" || seen.path === "/batch")) {
      failed = true;
      return Response.json({ error: "unavailable" }, { status: 503 });
    }
    return undefined;
  });
}

for (const strategy of ["autoPreserve", "serverWins"] as const) {
  Deno.test(`push: ${strategy}, an op queued behind a conflicting one never overwrites the server's concurrent edit`, async () => {
    await using server = startServer();
    await using a = createClient(server.url, {
      engine: { strategy },
      transport: { retry: { attempts: 1 } },
    });
    await using b = createClient(server.url);
    const notesA = a.engine.table("notes");
    const notesB = b.engine.table("notes");
    await notesA.put({ id: "r", title: "t0", body: "b0", done: false });
    await a.engine.sync();
    await b.engine.sync();
    await notesB.update("r", { body: "B-edit" });
    await b.engine.sync();

    await notesA.update("r", { title: "A-title" });
    failNextWrite(server);
    await a.engine.sync(); // the op is sent once (frozen), fails, stays
    server.intercept(undefined);
    await notesA.update("r", { done: true }); // queues behind it
    assert.equal((await a.engine.outbox.list()).length, 2);
    await a.engine.sync();
    await b.engine.sync();
    const final = await notesB.get("r");
    assert.equal(final?.body, "B-edit", "the concurrent edit survived");
    if (strategy === "autoPreserve") {
      assert.equal(final?.title, "A-title");
      assert.equal(final?.done, true);
    }
    assert.deepEqual(await notesA.get("r"), final);
  });
}

Deno.test("push: a pull while an op waits does not become the op's merge base", async () => {
  await using server = startServer();
  await using a = createClient(server.url, {
    transport: { batch: false, retry: { attempts: 1 } },
  });
  await using b = createClient(server.url);
  const notesA = a.engine.table("notes");
  const notesB = b.engine.table("notes");
  await notesA.put({ id: "r", tags: ["a"] });
  await a.engine.sync();
  await b.engine.sync();
  await notesB.update("r", { tags: ["a", "S"] });
  await b.engine.sync();
  await notesA.update("r", { tags: ["a", "L"] });
  failNextWrite(server);
  await a.engine.sync(); // push fails; the pull moves the record's base
  server.intercept(undefined);
  await a.engine.sync(); // 409: the three-way merge uses the op's own base
  await b.engine.sync();
  assert.deepEqual((await notesB.get("r"))?.tags, ["a", "S", "L"]);
  const [merged] = eventsOf(a.events, "dataMerged");
  assert.deepEqual(merged?.localFields, ["tags"]);
});

for (const how of ["acceptServer", "discard"] as const) {
  Deno.test(`push: resolving a parked conflict with ${how} after a later pull keeps the newer version`, async () => {
    await using server = startServer();
    await using a = createClient(server.url, {
      engine: { strategy: "manual" },
    });
    await using b = createClient(server.url);
    const notesA = a.engine.table("notes");
    const notesB = b.engine.table("notes");
    await notesA.put({ id: "r", v: 1 });
    await a.engine.sync();
    await b.engine.sync();
    await notesB.update("r", { v: 2 });
    await b.engine.sync();
    await notesA.update("r", { v: 100 });
    await a.engine.sync(); // parked, seeing v2
    await notesB.update("r", { v: 3 });
    await b.engine.sync();
    await a.engine.sync(); // the pull brings v3 (base only: the op is parked)
    const [parked] = await a.engine.conflicts.list();
    await a.engine.conflicts.resolve(parked!.opId, Resolutions[how]());
    await a.engine.sync();
    assert.equal((await notesA.get("r"))?.v, 3);
  });
}

Deno.test("push: re-creating a record the client itself deleted is not a conflict", async () => {
  await using server = startServer();
  await using a = createClient(server.url, {
    engine: { strategy: "serverWins" },
  });
  const notes = a.engine.table("notes");
  await notes.put({ id: "r", v: 1 });
  await a.engine.sync();
  await notes.delete("r");
  await a.engine.sync(); // the base is now the tombstone
  await notes.put({ id: "r", v: 2 });
  await a.engine.sync();
  assert.equal(eventsOf(a.events, "conflictDetected").length, 0);
  assert.equal((await notes.get("r"))?.v, 2);
  await using b = createClient(server.url);
  const notesB = b.engine.table("notes");
  await b.engine.sync();
  assert.equal(
    (await notesB.get("r"))?.v,
    2,
    "the server holds the re-created record",
  );
});

Deno.test("push: re-creating over a tombstone someone else resurrected is a real conflict", async () => {
  await using server = startServer();
  await using a = createClient(server.url, {
    engine: { strategy: "serverWins" },
  });
  await using b = createClient(server.url);
  const notesA = a.engine.table("notes");
  const notesB = b.engine.table("notes");
  await notesA.put({ id: "r", v: 1 });
  await a.engine.sync();
  await notesA.delete("r");
  await a.engine.sync();
  await b.engine.sync();
  await notesB.put({ id: "r", v: "B" }); // B re-creates first
  await b.engine.sync();
  await notesA.put({ id: "r", v: "A" });
  await a.engine.sync();
  assert.equal(eventsOf(a.events, "conflictDetected").length, 1);
  assert.equal((await notesA.get("r"))?.v, "B", "serverWins kept B's record");
});

Deno.test("push: quarantine retries do not use up the conflict budget (clause 17)", async () => {
  await using server = startServer();
  await using a = createClient(server.url, { transport: { batch: false } });
  await using b = createClient(server.url);
  const notesA = a.engine.table("notes");
  const notesB = b.engine.table("notes");
  await notesA.put({ id: "r", x: 1, y: 1 });
  await a.engine.sync();
  await b.engine.sync();
  await notesB.update("r", { y: 2 });
  await b.engine.sync();
  await notesA.update("r", { x: 2 });
  let rejections = 3;
  server.intercept((_request, seen) => {
    if (seen.method === "PUT" && rejections > 0) {
      rejections--;
      return Response.json({ error: "validation" }, { status: 422 });
    }
    return undefined;
  });
  for (let i = 0; i < 3; i++) {
    await a.engine.sync();
    const [quarantined] = await a.engine.outbox.quarantined();
    await a.engine.outbox.retry(quarantined!.opId);
  }
  await a.engine.sync(); // the op's first real conflict
  assert.equal(eventsOf(a.events, "conflictDeferred").length, 0);
  assert.equal(eventsOf(a.events, "dataMerged").length, 1);
  await b.engine.sync();
  assert.deepEqual(await notesB.get("r").then((r) => [r?.x, r?.y]), [2, 2]);
});

Deno.test("push: a record with more queued ops than one storage write holds still drains", async () => {
  await using server = startServer();
  const storage = createMemoryStorage({ maxMutationsPerWrite: 10 });
  await using a = createClient(server.url, {
    storage,
    transport: { batch: false },
  });
  const log = a.engine.table("log", { coalesce: false });
  await log.put({ id: "r", n: 0 });
  for (let i = 1; i <= 12; i++) await log.update("r", { n: i });
  assert.equal((await a.engine.outbox.list()).length, 13);
  const { stats } = await a.engine.sync();
  assert.equal(stats.pushed, 13);
  assert.equal(stats.conflicts, 0, "every op was rebased onto the one before");
  assert.equal(await a.engine.outbox.count(), 0);
  const bodies = server.requests.filter((r) => r.method === "PUT").map((r) =>
    JSON.parse(r.body).n
  );
  assert.deepEqual(bodies, Array.from({ length: 13 }, (_, i) => i), "in order");
});

Deno.test("push: a put after a pull marks as changed only what the user changed", async () => {
  await using server = startServer();
  await using a = createClient(server.url);
  await using b = createClient(server.url);
  const notesA = a.engine.table("notes");
  const notesB = b.engine.table("notes");
  await notesA.put({ id: "r", x: 1, y: 1 });
  await a.engine.sync();
  await b.engine.sync();
  await notesA.put({ id: "r", x: 1, y: 2 }); // A edits y (op pending)
  await notesB.update("r", { x: 5 }); // B edits x
  await b.engine.sync();
  await a.engine.sync({ pushKinds: [] }); // the pull moves A's base, keeps its data
  await notesA.put({ ...(await notesA.get("r"))!, y: 3 }); // from what A shows
  const [op] = await a.engine.outbox.list();
  assert.deepEqual(op?.changedFields, ["y"], "x was never A's change");
  await a.engine.sync();
  await b.engine.sync();
  assert.deepEqual(
    await notesB.get("r").then((r) => [r?.x, r?.y]),
    [5, 3],
    "B's x survived",
  );
});

for (
  const [name, max, count] of [["a small store", 5, 5], [
    "the default",
    undefined,
    67,
  ]] as const
) {
  Deno.test(`push: every op queued behind our own accepted writes follows them (${name})`, async () => {
    await using server = startServer();
    await using a = createClient(server.url, {
      storage: createMemoryStorage(
        max === undefined ? {} : { maxMutationsPerWrite: max },
      ),
    });
    const log = a.engine.table("log", {
      coalesce: false,
      strategy: "serverWins",
    });
    await log.put({ id: "r", n: 0 });
    await a.engine.sync();
    for (let i = 1; i <= count; i++) await log.update("r", { n: i });
    await a.engine.sync();
    assert.equal(eventsOf(a.events, "conflictDetected").length, 0);
    assert.equal((await log.get("r"))?.n, count, "the last edit is kept");
  });
}

Deno.test("push: taking the server's version keeps the record's newest op, however many are queued", async () => {
  await using server = startServer();
  await using b = createClient(server.url);
  let first = true;
  await using a = createClient(server.url, {
    storage: createMemoryStorage({ maxMutationsPerWrite: 5 }),
    engine: {
      strategy: "manual",
      resolver: () => {
        if (first) {
          first = false;
          return Resolutions.discard();
        }
        return Resolutions.acceptClient();
      },
    },
  });
  const log = a.engine.table("log", { coalesce: false });
  const logB = b.engine.table("log");
  await log.put({ id: "r", n: 0, m: 0 });
  await a.engine.sync();
  await b.engine.sync();
  for (let i = 1; i <= 5; i++) await log.update("r", { n: i });
  await logB.update("r", { m: 9 });
  await b.engine.sync();
  await a.engine.sync();
  await a.engine.sync();
  await b.engine.sync();
  assert.deepEqual(
    await log.get("r"),
    await logB.get("r"),
    "client and server agree",
  );
  assert.equal(await a.engine.outbox.count(), 0);
});

/**
 * Answers every write of `id` with the 409 a broken server sends: the
 * record is the tombstone the client's op builds on. Aborts `controller`
 * once `budget` writes came, so an engine that loops fails instead of
 * hanging.
 */
function tombstoneForever(
  server: TestServer,
  id: string,
  tombstone: JsonObject,
  options: { readonly budget: number; readonly controller: AbortController },
): { readonly writes: () => number } {
  let writes = 0;
  const body = {
    error: "conflict",
    current: tombstone,
    serverTimestamp: tombstone.updated_at,
  };
  server.intercept(async (request, seen) => {
    if (seen.method === "GET") return undefined;
    const ops: { opId: string; id: string }[] = seen.path === "/batch"
      ? (await request.json()).ops
      : [{ opId: "", id: decodeURIComponent(seen.path.split("/")[2] ?? "") }];
    writes += ops.filter((op) => op.id === id).length;
    if (writes > options.budget) {
      options.controller.abort(new Error("the engine kept re-sending"));
      return Response.json({ error: "unavailable" }, { status: 503 });
    }
    if (seen.path !== "/batch") return Response.json(body, { status: 409 });
    return Response.json({
      results: ops.map((op) => ({ opId: op.opId, status: 409, error: body })),
    });
  });
  return { writes: () => writes };
}

for (const batch of [false, true]) {
  Deno.test(`push: clause 9, a 409 that keeps answering with the op's own tombstone is tried a bounded number of times per run (batch ${batch})`, async () => {
    await using server = startServer();
    await using a = createClient(server.url, {
      transport: { batch, retry: { attempts: 1 } },
    });
    const notes = a.engine.table("notes");
    await notes.put({ id: "r", v: 1 });
    await a.engine.sync();
    await notes.delete("r");
    await a.engine.sync(); // the base is now the tombstone
    const tombstone = await notes.get("r", { includeDeleted: true });
    assert.ok(tombstone?.deleted_at, "the client holds the tombstone");
    await notes.put({ id: "r", v: 2 }); // a re-create: not a conflict...
    // ...but this server refuses every write with that same tombstone.
    const controller = new AbortController();
    const counter = tombstoneForever(server, "r", tombstone, {
      budget: 50,
      controller,
    });
    const { stats } = await a.engine.sync({ signal: controller.signal });
    const first = counter.writes();
    assert.ok(first >= 1 && first <= 10, `one run sent ${first} writes`);
    assert.equal(stats.pushed, 0);
    const [op] = await a.engine.outbox.list();
    assert.equal(op?.id, "r", "the op waits for a later run");
    await a.engine.sync({ signal: controller.signal });
    assert.ok(
      counter.writes() - first <= 10,
      `the next run sent ${counter.writes() - first} writes`,
    );
    assert.equal((await notes.get("r"))?.v, 2, "the local re-create is kept");
  });
}

for (
  const [how, blockedStatus] of [
    ["quarantined (422)", 422],
    ["left for the next run (503)", 503],
    ["deferred to the inbox (409, manual)", 409],
  ] as const
) {
  Deno.test(`push: clause 8, a record ${how} does not end the push phase: records after it are pushed in the same run`, async () => {
    await using server = startServer();
    // One record per round: the blocked record's round comes first.
    await using a = createClient(server.url, {
      engine: { pushBatchSize: 1, strategy: "manual" },
      transport: { batch: false, retry: { attempts: 1 } },
    });
    await using b = createClient(server.url);
    const notes = a.engine.table("notes");
    const notesB = b.engine.table("notes");
    for (const id of ["blocked", "x", "y"]) await notes.put({ id, v: 0 });
    await a.engine.sync();
    if (blockedStatus === 409) {
      await b.engine.sync();
      await notesB.update("blocked", { v: "B" });
      await b.engine.sync();
    } else {
      server.intercept((_request, seen) =>
        seen.method === "PUT" && seen.path === "/notes/blocked"
          ? Response.json({ error: "nope" }, { status: blockedStatus })
          : undefined
      );
    }
    for (const id of ["blocked", "x", "y"]) await notes.update(id, { v: 1 });
    const [head] = await a.engine.outbox.list();
    assert.equal(head?.id, "blocked", "the blocked record's op goes first");

    const { stats } = await a.engine.sync();
    assert.equal(stats.pushed, 2, "x and y were pushed");
    assert.equal(
      stats.quarantined + stats.retrying + stats.deferred,
      1,
      "blocked waits",
    );
    const sent = server.requests.filter((r) => r.method === "PUT").map((r) =>
      r.path
    );
    assert.deepEqual(sent.slice(-3), [
      "/notes/blocked",
      "/notes/x",
      "/notes/y",
    ]);
    server.intercept(undefined);
    await b.engine.sync();
    assert.equal((await notesB.get("x"))?.v, 1);
    assert.equal((await notesB.get("y"))?.v, 1);
  });
}

Deno.test("push: clause 7, an op queued behind an accepted one is rebased onto the server's record, data and all", async () => {
  await using server = startServer();
  await using a = createClient(server.url, {
    transport: { batch: false, retry: { attempts: 1 } },
  });
  await using b = createClient(server.url);
  const notesA = a.engine.table("notes");
  const notesB = b.engine.table("notes");
  await notesA.put({ id: "r", tags: ["a"] });
  await a.engine.sync();
  await notesA.update("r", { tags: ["a", "x"] }); // op 1
  failNextWrite(server);
  await a.engine.sync(); // op 1 was sent once: frozen
  await notesA.update("r", { tags: ["a", "x", "y"] }); // op 2, queued behind
  assert.equal(await a.engine.outbox.count(), 2);
  // Op 1 is accepted; before op 2 goes, B removes "x" on the server.
  let edited = false;
  server.intercept(async (request, seen, next) => {
    if (seen.method !== "PUT" || !seen.body.includes('"y"') || edited) {
      return undefined;
    }
    edited = true;
    await b.engine.sync();
    await notesB.update("r", { tags: ["a"] });
    await b.engine.sync();
    return next(request);
  });
  await a.engine.sync();
  assert.ok(edited, "op 2 met B's edit");
  // Op 2 was built on op 1's record ["a","x"]: it added only "y", and B's
  // removal of "x" stands. Merged against the stale base ["a"], "x" would
  // count as op 2's own addition and come back.
  assert.equal(eventsOf(a.events, "dataMerged").length, 1);
  await b.engine.sync();
  assert.deepEqual((await notesB.get("r"))?.tags, ["a", "y"]);
  assert.deepEqual(await notesA.get("r"), await notesB.get("r"));
});
