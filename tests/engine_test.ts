import assert from "node:assert/strict";
import { z } from "zod";
import {
  AuthError,
  ClosedError,
  Resolutions,
  StorageError,
  SyncEngine,
  SyncError,
  type SyncEvent,
  ValidationError,
} from "../mod.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { createRestTransport } from "../transport/rest.ts";
import { until } from "./_faults.ts";
import { createClient, eventsOf, startServer } from "./_harness.ts";

Deno.test("engine: clause 8, a rejected op is quarantined while other records go on", async () => {
  await using server = startServer({
    schemas: { todos: z.object({ id: z.string(), title: z.string().max(10) }) },
  });
  await using a = createClient(server.url);
  const todos = a.engine.table("todos");
  await todos.put({ id: "bad", title: "far too long a title" });
  await todos.put({ id: "good", title: "short" });
  const { stats } = await a.engine.sync();
  assert.equal(stats.pushed, 1);
  assert.equal(stats.quarantined, 1);

  const [quarantined] = await a.engine.outbox.quarantined();
  assert.equal(quarantined?.id, "bad");
  assert.equal(quarantined?.error?.status, 422);
  assert.equal(eventsOf(a.events, "opQuarantined").length, 1);

  // Later ops of the quarantined record wait behind it.
  await todos.update("bad", { title: "still far too long" });
  await a.engine.sync();
  const waiting = await a.engine.outbox.list({ states: ["pending"] });
  assert.equal(waiting.length, 1, "the later op was not sent");
  assert.equal(
    server.requests.filter((r) => JSON.stringify(r.body).includes("still far"))
      .length,
    0,
  );

  // Dropping both ops returns the record to what the server has: nothing.
  await a.engine.outbox.drop(waiting[0]!.opId);
  assert.equal(await a.engine.outbox.drop(quarantined!.opId), true);
  assert.equal(await todos.get("bad"), undefined);
  assert.equal((await a.engine.outbox.list()).length, 0);
});

Deno.test("engine: clause 8, a quarantined record blocks its own kind only: the same id in another table goes on", async () => {
  await using server = startServer({
    schemas: {
      todos: z.object({ id: z.string(), title: z.string().max(10) }),
      notes: z.object({ id: z.string(), title: z.string() }),
    },
  });
  await using a = createClient(server.url);
  const todos = a.engine.table("todos");
  const notes = a.engine.table("notes");
  await todos.put({ id: "same", title: "far too long a title" });
  await a.engine.sync();
  assert.equal((await a.engine.outbox.quarantined()).length, 1);
  // A later edit of the quarantined todo waits; the note of the same id,
  // another record, is pushed in the same run.
  await todos.update("same", { title: "still far too long" });
  await notes.put({ id: "same", title: "a note" });
  const { stats } = await a.engine.sync();
  assert.equal(stats.pushed, 1);
  const pending = await a.engine.outbox.list({ states: ["pending"] });
  assert.deepEqual(pending.map((op) => `${op.kind}/${op.id}`), ["todos/same"]);
});

Deno.test("engine: a quarantined op can be edited and sent again", async () => {
  await using server = startServer({
    schemas: { todos: z.object({ id: z.string(), title: z.string().max(10) }) },
  });
  await using a = createClient(server.url);
  const todos = a.engine.table("todos");
  await todos.put({ id: "t", title: "far too long a title" });
  await a.engine.sync();
  const [op] = await a.engine.outbox.quarantined();
  assert.ok(op);
  await assert.rejects(a.engine.outbox.retry("nope"), SyncError);

  await a.engine.outbox.edit(op.opId, { id: "t", title: "fits" });
  assert.equal((await todos.get("t"))?.title, "fits");
  const { stats } = await a.engine.sync();
  assert.equal(stats.pushed, 1);
  assert.equal((await a.engine.outbox.list()).length, 0);
  const keys = server.requests
    .filter((r) => r.path === "/batch" || r.method === "PUT")
    .flatMap((r) =>
      r.path === "/batch"
        ? JSON.parse(r.body).ops.map((o: { opId: string }) => o.opId)
        : [r.headers.get("idempotency-key")]
    );
  assert.equal(keys.length, 2);
  assert.notEqual(keys[0], keys[1], "the edited op has a fresh key");
});

Deno.test("engine: clause 21, a second 401 pauses sync in the auth state with the outbox intact", async () => {
  await using server = startServer({
    auth: (request) =>
      request.headers.get("authorization") === "Bearer good" ? "alice" : null,
  });
  let token = "bad";
  const refreshes: boolean[] = [];
  await using a = createClient(server.url, {
    transport: {
      token: ({ refresh }) => {
        refreshes.push(refresh);
        return token;
      },
    },
  });
  const todos = a.engine.table("todos");
  await todos.put({ id: "t", title: "x" });
  await assert.rejects(a.engine.sync(), AuthError);
  assert.equal(a.engine.status.connection, "auth");
  assert.equal(a.engine.status.lastError?.category, "auth");
  assert.ok(refreshes.includes(true), "the token was refreshed once");
  assert.equal((await a.engine.outbox.list()).length, 1);
  assert.equal(eventsOf(a.events, "error")[0]?.category, "auth");

  token = "good";
  await a.engine.sync();
  assert.equal(a.engine.status.connection, "online");
  assert.equal(a.engine.status.phase, "idle");
  assert.equal(a.engine.status.lastError, null);
  assert.equal((await a.engine.outbox.list()).length, 0);
});

Deno.test("engine: clause 9, a retryable failure leaves the op for the next run without spinning", async () => {
  await using server = startServer();
  await using a = createClient(server.url, {
    transport: { batch: false, retry: { attempts: 2 } },
  });
  const todos = a.engine.table("todos");
  await todos.put({ id: "t", title: "x" });
  server.intercept((request) =>
    request.method === "PUT" ? new Response(null, { status: 503 }) : undefined
  );
  const { stats } = await a.engine.sync();
  assert.equal(stats.retrying, 1);
  assert.equal(stats.pushed, 0);
  const puts = server.requests.filter((r) => r.method === "PUT");
  assert.equal(puts.length, 2, "the transport's two attempts, then stop");
  const [op] = await a.engine.outbox.list();
  assert.equal(op?.state, "pending");
  assert.equal(op?.error?.status, 503);

  server.intercept(undefined);
  await a.engine.sync();
  assert.equal((await a.engine.outbox.list()).length, 0);
  const keys = new Set(
    server.requests.filter((r) => r.method === "PUT").map((r) =>
      r.headers.get("idempotency-key")
    ),
  );
  assert.equal(keys.size, 1, "every attempt of one op uses one key");
});

Deno.test("engine: clauses 5 and 7, ops of one record are delivered in order and the next one is rebased", async () => {
  await using server = startServer();
  await using a = createClient(server.url, { transport: { batch: false } });
  const todos = a.engine.table("todos");
  await todos.put({ id: "t", title: "v1" });
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  let first = true;
  server.intercept(async (request, _seen, next) => {
    if (request.method !== "PUT" || !first) return undefined;
    first = false;
    await gate;
    return next(request);
  });
  const running = a.engine.sync();
  // While the first op is in flight it is frozen: this edit queues behind.
  await until(
    () => server.requests.some((r) => r.method === "PUT"),
    "the first op was sent",
  );
  await todos.update("t", { title: "v2" });
  assert.equal((await a.engine.outbox.list()).length, 2);
  release();
  await running;
  await a.engine.sync();
  const bodies = server.requests.filter((r) => r.method === "PUT").map((r) =>
    JSON.parse(r.body).title
  );
  assert.deepEqual(bodies, ["v1", "v2"]);
  assert.equal(
    eventsOf(a.events, "conflictDetected").length,
    0,
    "no self-conflict",
  );
  assert.equal((await todos.get("t"))?.title, "v2");
});

Deno.test("engine: create then delete while offline sends nothing", async () => {
  await using server = startServer();
  await using a = createClient(server.url);
  const todos = a.engine.table("todos");
  await todos.put({ id: "t", title: "x" });
  assert.equal(await todos.delete("t"), true);
  assert.equal(await todos.delete("t"), false);
  assert.equal((await a.engine.outbox.list()).length, 0);
  await a.engine.sync();
  assert.equal(
    server.requests.filter((r) => r.method !== "GET").length,
    0,
  );
});

Deno.test("engine: update of a missing record is a typed error", async () => {
  await using server = startServer();
  await using a = createClient(server.url);
  const todos = a.engine.table("todos");
  await assert.rejects(
    todos.update("nope", { title: "x" }),
    (error: unknown) => {
      assert.ok(error instanceof SyncError);
      assert.equal(error.category, "validation");
      assert.match(error.message, /does not exist/);
      return true;
    },
  );
  await assert.rejects(todos.put({ title: "no id" }), SyncError);
  assert.equal((await a.engine.outbox.list()).length, 0);
});

Deno.test("engine: serverWins takes the server's record and drops the op", async () => {
  await using server = startServer();
  await using a = createClient(server.url, {
    engine: { strategy: "serverWins" },
  });
  await using b = createClient(server.url);
  const docsA = a.engine.table("docs");
  const docsB = b.engine.table("docs");
  await docsA.put({ id: "d", title: "v1", body: "b1" });
  await a.engine.sync();
  await b.engine.sync();
  await docsB.update("d", { title: "from B" });
  await b.engine.sync();
  await docsA.update("d", { body: "from A" });
  await a.engine.sync();
  const local = await docsA.get("d");
  assert.equal(local?.title, "from B");
  assert.equal(local?.body, "b1", "the local edit lost");
  const [resolved] = eventsOf(a.events, "conflictResolved");
  assert.equal(resolved?.resolution, "acceptServer");
  assert.equal((await a.engine.outbox.list()).length, 0);
});

Deno.test("engine: clientWins forces the local record onto the server", async () => {
  await using server = startServer();
  await using a = createClient(server.url);
  await using b = createClient(server.url);
  const docsA = a.engine.table("docs", { strategy: "clientWins" });
  const docsB = b.engine.table("docs");
  await docsA.put({ id: "d", title: "v1", body: "b1" });
  await a.engine.sync();
  await b.engine.sync();
  await docsB.update("d", { title: "from B" });
  await b.engine.sync();
  await docsA.update("d", { body: "from A" });
  await a.engine.sync();
  await b.engine.sync();
  const fromB = await docsB.get("d");
  assert.equal(fromB?.title, "v1", "the client's whole record won");
  assert.equal(fromB?.body, "from A");
  assert.deepEqual(await docsA.get("d"), fromB);
  const forced = server.requests.filter((r) =>
    r.headers.get("x-force-update") === "true" ||
    (r.path === "/batch" && r.body.includes('"force":true'))
  );
  assert.equal(forced.length, 1);
});

Deno.test("engine: clause 15, manual without a resolver defers to the inbox, then resolves", async () => {
  await using server = startServer();
  await using a = createClient(server.url, { engine: { strategy: "manual" } });
  await using b = createClient(server.url);
  const docsA = a.engine.table("docs");
  const docsB = b.engine.table("docs");
  await docsA.put({ id: "d", title: "v1" });
  await docsA.put({ id: "other", title: "o1" });
  await a.engine.sync();
  await b.engine.sync();
  await docsB.update("d", { title: "from B" });
  await b.engine.sync();
  await docsA.update("d", { title: "from A" });
  await docsA.update("other", { title: "o2" });
  const { stats } = await a.engine.sync();
  assert.equal(stats.deferred, 1);
  assert.equal(stats.pushed, 1, "the other record synced");
  const before = server.requests.length;
  await a.engine.sync();
  assert.equal(
    server.requests.slice(before).filter((r) => r.method !== "GET").length,
    0,
    "a parked op is not re-sent: no loop",
  );

  const [conflict] = await a.engine.conflicts.list();
  assert.equal(conflict?.id, "d");
  assert.equal(conflict?.server?.title, "from B");
  assert.equal(conflict?.local?.title, "from A");
  await a.engine.conflicts.resolve(
    conflict!.opId,
    Resolutions.acceptMerged({ id: "d", title: "from A and B" }),
  );
  await a.engine.sync();
  await b.engine.sync();
  assert.equal((await docsB.get("d"))?.title, "from A and B");
  assert.equal((await a.engine.conflicts.list()).length, 0);
});

Deno.test("engine: clause 13, fullResync removes records the server no longer has, except pending ones", async () => {
  await using server = startServer();
  await using a = createClient(server.url);
  const todos = a.engine.table("todos");
  await todos.put({ id: "kept", title: "k" });
  await todos.put({ id: "gone", title: "g" });
  await a.engine.sync();
  // The server forgot "gone" entirely (say, its tombstone was purged).
  await a.storage.write([{
    type: "putRecord",
    record: {
      kind: "todos",
      id: "ghost",
      data: { id: "ghost", title: "never on the server" },
      deleted: false,
      base: {
        data: { id: "ghost" },
        updatedAt: "2020-01-01T00:00:00.000Z",
        deleted: false,
      },
      lastOpId: null,
      localUpdatedAt: null,
    },
  }]);
  await todos.put({ id: "draft", title: "pending" });
  await a.engine.fullResync({ pushKinds: [] });
  assert.equal(await todos.get("ghost"), undefined);
  assert.equal(
    (await todos.get("draft"))?.title,
    "pending",
    "pending edits stay",
  );
  assert.equal((await todos.get("kept"))?.title, "k");
});

Deno.test("engine: clause 12, a 410 on pull runs a full resync of that table", async () => {
  await using server = startServer();
  await using a = createClient(server.url);
  const todos = a.engine.table("todos");
  await todos.put({ id: "t", title: "x" });
  await a.engine.sync();
  let gone = true;
  server.intercept((request, seen) => {
    if (request.method === "GET" && seen.query.has("updatedSince") && gone) {
      gone = false;
      return Response.json({ error: "gone" }, { status: 410 });
    }
    return undefined;
  });
  await a.engine.sync();
  const pulls = server.requests.filter((r) =>
    r.method === "GET" && r.path === "/todos"
  );
  const last = pulls.at(-1);
  assert.equal(
    last?.query.has("updatedSince"),
    false,
    "re-pulled from the start",
  );
  assert.equal((await todos.get("t"))?.title, "x");
  const [marker] = await a.storage.getMeta(["resync/todos"]);
  assert.equal(marker, undefined, "the resync finished");
});

Deno.test("engine: watch() streams local, pushed and pulled changes, each with its origin", async () => {
  await using server = startServer();
  await using a = createClient(server.url);
  await using b = createClient(server.url);
  const todosA = a.engine.table("todos");
  const todosB = b.engine.table("todos");
  const controller = new AbortController();
  // A change that never comes ends the watch in seconds: the test fails on
  // its assertions instead of hanging.
  const timer = setTimeout(() => controller.abort(), 5_000);
  const seen: string[] = [];
  const watching = (async () => {
    for await (const item of todosB.watch({ signal: controller.signal })) {
      if (item.type === "change") seen.push(`${item.origin}:${item.id}`);
      if (seen.includes("pulled:theirs")) controller.abort();
    }
  })();
  try {
    await todosB.put({ id: "mine", title: "local" });
    await todosA.put({ id: "theirs", title: "remote" });
    await a.engine.sync();
    await b.engine.sync();
    await watching;
  } finally {
    clearTimeout(timer);
  }
  // B's own write comes back from its push as "pushed" (with the server's
  // updated_at), never as a change from elsewhere.
  assert.deepEqual(seen, ["local:mine", "pushed:mine", "pulled:theirs"]);
});

Deno.test("engine: clause 20, a throwing listener never breaks a sync", async () => {
  await using server = startServer();
  const reported: unknown[] = [];
  await using a = createClient(server.url, {
    engine: { onListenerError: (error) => reported.push(error) },
  });
  a.engine.on("opPushed", () => {
    throw new Error("listener bug");
  });
  await a.engine.table("todos").put({ id: "t", title: "x" });
  const { stats } = await a.engine.sync();
  assert.equal(stats.pushed, 1);
  assert.equal(reported.length, 1);
  assert.equal((reported[0] as Error).message, "listener bug");
});

Deno.test("engine: clause 19, auto sync turns failures into events and backs off", async () => {
  const scheduled: number[] = [];
  const callbacks: (() => void)[] = [];
  const timers = {
    setTimeout(callback: () => void, ms: number) {
      scheduled.push(ms);
      callbacks.push(callback);
      return callbacks.length;
    },
    clearTimeout() {},
  };
  const unhandled: unknown[] = [];
  const onUnhandled = (event: PromiseRejectionEvent): void => {
    unhandled.push(event.reason);
    event.preventDefault();
  };
  globalThis.addEventListener("unhandledrejection", onUnhandled);
  try {
    await using storage = createMemoryStorage();
    // Nothing listens on this port: every run fails on the network.
    await using transport = createRestTransport({
      baseUrl: "http://127.0.0.1:9",
      retry: { attempts: 1 },
    });
    await using engine = new SyncEngine({
      storage,
      transport,
      timers,
      random: () => 0.5,
    });
    engine.table("todos");
    const errors: SyncEvent[] = [];
    engine.on("error", (event) => errors.push(event));
    engine.startAuto({ intervalMs: 60_000 });
    for (let run = 0; run < 3; run++) {
      const next = callbacks.at(-1)!;
      const count = callbacks.length;
      next();
      await until(() => callbacks.length > count, "the next run was armed");
    }
    assert.equal(errors.length, 3);
    assert.equal(scheduled[0], 0, "the first run starts at once");
    const backoffs = scheduled.slice(1);
    assert.ok(backoffs.every((ms) => ms < 60_000), `backoff ${backoffs}`);
    assert.ok(backoffs[2]! > backoffs[0]!, `grows: ${backoffs}`);
    engine.stopAuto();
  } finally {
    globalThis.removeEventListener("unhandledrejection", onUnhandled);
  }
  assert.deepEqual(unhandled, []);
});

Deno.test("engine: clause 22, close() is idempotent and later calls reject with ClosedError", async () => {
  await using server = startServer();
  const a = createClient(server.url);
  const todos = a.engine.table("todos");
  await todos.put({ id: "t", title: "x" });
  await Promise.all([a.engine.close(), a.engine.close()]);
  await a.engine.close();
  assert.equal(a.engine.status.phase, "closed");
  await assert.rejects(a.engine.sync(), ClosedError);
  await assert.rejects(todos.get("t"), ClosedError);
  await assert.rejects(todos.put({ id: "u" }), ClosedError);
  await assert.rejects(a.engine.outbox.list(), ClosedError);
  await assert.rejects(a.engine.conflicts.list(), ClosedError);
  assert.throws(() => a.engine.table("more"), ClosedError);
  await a[Symbol.asyncDispose]();
  // The storage the caller owns kept the queued op.
});

Deno.test("engine: rejects bad options with RangeError and TypeError", () => {
  const storage = createMemoryStorage();
  const transport = createRestTransport({ baseUrl: "http://127.0.0.1:9" });
  assert.throws(
    () => new SyncEngine({ storage, transport, pageSize: 0 }),
    RangeError,
  );
  assert.throws(
    () => new SyncEngine({ storage, transport, strategy: "nope" as never }),
    TypeError,
  );
  const engine = new SyncEngine({ storage, transport });
  assert.throws(() => engine.table(""), TypeError);
  assert.throws(() => engine.table("batch"), TypeError);
  assert.throws(() => engine.table("x", { strategy: "merge" }), TypeError);
  engine.table("todos");
  assert.throws(() => engine.table("todos", { coalesce: false }), TypeError);
  assert.equal(engine.table("todos"), engine.table("todos"));
});

Deno.test("engine: dropping a quarantined op removes its change from the record and the ops behind it", async () => {
  await using server = startServer();
  await using a = createClient(server.url, { transport: { batch: false } });
  const notes = a.engine.table("notes");
  await notes.put({ id: "r", title: "ok", done: false });
  await a.engine.sync();
  await notes.update("r", { title: "REJECTED" });
  server.intercept((_request, seen) =>
    seen.method === "PUT" && seen.body.includes("REJECTED")
      ? Response.json({ error: "forbidden" }, { status: 403 })
      : undefined
  );
  await a.engine.sync();
  await notes.update("r", { done: true }); // queued behind the rejected op
  const [quarantined] = await a.engine.outbox.quarantined();
  assert.equal(await a.engine.outbox.drop(quarantined!.opId), true);
  const local = await notes.get("r");
  assert.equal(local?.title, "ok", "the dropped change left the record");
  assert.equal(local?.done, true, "the later change stayed");
  await a.engine.sync();
  const sent = server.requests.filter((r) => r.method === "PUT").at(-1)!;
  assert.equal(JSON.parse(sent.body).title, "ok");
  assert.equal(JSON.parse(sent.body).done, true);
  assert.equal(await a.engine.outbox.count(), 0);
});

Deno.test("engine: an op that may have reached the server cannot be dropped", async () => {
  await using server = startServer();
  await using a = createClient(server.url, {
    transport: { batch: false, retry: { attempts: 1 } },
  });
  const notes = a.engine.table("notes");
  await notes.put({ id: "r", v: 1 });
  server.intercept((request) =>
    request.method === "PUT" ? new Response(null, { status: 503 }) : undefined
  );
  await a.engine.sync();
  const [sent] = await a.engine.outbox.list();
  assert.equal(sent?.attempts, 1);
  await assert.rejects(
    a.engine.outbox.drop(sent!.opId),
    /may have reached the server/,
  );
  assert.equal(await a.engine.outbox.count(), 1);
});

Deno.test("engine: a local write never brings auto sync before the server's Retry-After", async () => {
  await using server = startServer();
  server.intercept(() =>
    Response.json({ error: "busy" }, {
      status: 503,
      headers: { "retry-after": "120" },
    })
  );
  const pending = new Map<number, { callback: () => void; ms: number }>();
  let handle = 0;
  const timers = {
    setTimeout(callback: () => void, ms: number) {
      pending.set(++handle, { callback, ms });
      return handle;
    },
    clearTimeout(id: unknown) {
      pending.delete(id as number);
    },
  };
  await using a = createClient(server.url, {
    engine: { timers },
    transport: { retry: { attempts: 1 } },
  });
  const notes = a.engine.table("notes");
  await notes.put({ id: "r", v: 1 });
  const ran = new Promise<void>((resolve) =>
    a.engine.on("syncCompleted", () => resolve())
  );
  a.engine.startAuto({ intervalMs: 30_000, afterWriteMs: 500 });
  [...pending.values()][0]!.callback();
  await ran;
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.ok([...pending.values()].every((t) => t.ms >= 119_000), "backs off");
  await notes.put({ id: "r", v: 2 });
  assert.ok(
    [...pending.values()].every((t) => t.ms >= 119_000),
    `the write did not cut the Retry-After short: ${
      [...pending.values()].map((t) => t.ms)
    }`,
  );
  a.engine.stopAuto();
  assert.equal(pending.size, 0);
});

Deno.test("engine: the conflict inbox lists ops of tables not registered yet", async () => {
  await using server = startServer();
  await using storage = createMemoryStorage();
  {
    await using transport = createRestTransport({ baseUrl: server.url });
    await using a = new SyncEngine({ storage, transport, strategy: "manual" });
    await using b = createClient(server.url);
    const notesA = a.table("notes");
    const notesB = b.engine.table("notes");
    await notesA.put({ id: "r", v: 1 });
    await a.sync();
    await b.engine.sync();
    await notesB.update("r", { v: 2 });
    await b.engine.sync();
    await notesA.update("r", { v: 3 });
    await a.sync();
  }
  await using transport = createRestTransport({ baseUrl: server.url });
  await using engine = new SyncEngine({ storage, transport });
  engine.table("other");
  const [conflict] = await engine.conflicts.list();
  assert.equal(conflict?.kind, "notes");
  assert.equal(conflict?.server?.v, 2);
});

Deno.test("engine: editing a quarantined op rebuilds the ops queued behind it on the edit", async () => {
  await using server = startServer();
  await using a = createClient(server.url, { transport: { batch: false } });
  const notes = a.engine.table("notes");
  await notes.put({ id: "r", title: "ok", done: false });
  await a.engine.sync();
  await notes.update("r", { title: "REJECTED" });
  server.intercept((_request, seen) =>
    seen.method === "PUT" && seen.body.includes("REJECTED")
      ? Response.json({ error: "forbidden" }, { status: 403 })
      : undefined
  );
  await a.engine.sync();
  await notes.update("r", { done: true }); // queued behind, carrying REJECTED
  const [quarantined] = await a.engine.outbox.quarantined();
  await a.engine.outbox.edit(quarantined!.opId, {
    id: "r",
    title: "fixed",
    done: false,
  });
  const local = await notes.get("r");
  assert.equal(local?.title, "fixed");
  assert.equal(local?.done, true);
  await a.engine.sync();
  const bodies = server.requests.filter((r) => r.method === "PUT").slice(-2)
    .map((r) => JSON.parse(r.body));
  assert.equal(bodies[0]?.title, "fixed");
  assert.equal(
    bodies[1]?.title,
    "fixed",
    "the later op no longer carries REJECTED",
  );
  assert.equal(bodies[1]?.done, true);
  assert.equal(eventsOf(a.events, "conflictDetected").length, 0);
});

Deno.test("engine: putMany() writes every record with its op, and invalid input writes nothing", async () => {
  await using server = startServer();
  await using a = createClient(server.url);
  const Item = z.object({ id: z.string(), n: z.number() });
  const items = a.engine.table("items", { schema: Item });
  await items.put({ id: "i0", n: -1 });
  const batch = Array.from({ length: 120 }, (_, n) => ({ id: `i${n}`, n }));
  const stored = await items.putMany(batch);
  assert.deepEqual(stored.map((item) => item.n), batch.map((item) => item.n));
  assert.equal(await a.engine.outbox.count(), 120, "i0 folded into its op");
  await assert.rejects(
    items.putMany([{ id: "x1", n: 1 }, {
      id: "x2",
      n: "two" as unknown as number,
    }]),
    ValidationError,
  );
  assert.equal(
    await items.get("x1"),
    undefined,
    "nothing of the invalid batch",
  );
  const { stats } = await a.engine.sync();
  assert.equal(stats.pushed, 120);
  await using b = createClient(server.url);
  const itemsB = b.engine.table("items");
  await b.engine.sync();
  assert.equal((await itemsB.list()).length, 120);
  assert.equal((await itemsB.get("i0"))?.n, 0);
});

Deno.test("engine: put() that guesses a record is new still replaces an existing one correctly", async () => {
  await using server = startServer();
  await using a = createClient(server.url);
  const notes = a.engine.table("notes");
  // Creates teach the table to guess "new" and skip the read.
  for (let i = 0; i < 5; i++) await notes.put({ id: `n${i}`, v: 0 });
  await a.engine.sync();
  // A replacement: the guess fails, the write is retried with a read.
  await notes.put({ id: "n0", v: 1 });
  const [op] = await a.engine.outbox.list();
  assert.equal(op?.id, "n0");
  assert.ok(op?.baseUpdatedAt !== null, "the op knows the version it replaces");
  assert.deepEqual(op?.changedFields, ["v"]);
  assert.equal((await notes.get("n0"))?.v, 1);
  assert.equal(await a.engine.outbox.count(), 1);
  const { stats } = await a.engine.sync();
  assert.equal(stats.conflicts, 0);
});

Deno.test("engine: a refused create guess does not use up a write retry", async () => {
  await using storage = createMemoryStorage();
  await using transport = createRestTransport({
    baseUrl: "http://127.0.0.1:9",
  });
  await using engine = new SyncEngine({ storage, transport, writeRetries: 1 });
  const notes = engine.table("notes");
  await notes.put({ id: "a", v: 1 });
  await notes.put({ id: "a", v: 2 });
  assert.equal((await notes.get("a"))?.v, 2);
});

Deno.test("engine: putMany() announces every record that landed, even when a later write fails", async () => {
  await using storage = createMemoryStorage({ maxWriteBytes: 3000 });
  await using transport = createRestTransport({
    baseUrl: "http://127.0.0.1:9",
  });
  await using engine = new SyncEngine({ storage, transport });
  const notes = engine.table("notes");
  const changes: string[] = [];
  engine.on("change", (event) => changes.push(event.id));
  const batch = Array.from({ length: 5 }, (_, i) => ({ id: `r${i}`, s: "x" }));
  batch.push({ id: "big", s: "y".repeat(5000) });
  await assert.rejects(notes.putMany(batch), StorageError);
  const stored = (await notes.list()).map((note) => note.id);
  assert.ok(stored.length > 0, "the first write landed");
  assert.deepEqual(changes, stored);
  assert.equal(await engine.outbox.count(), stored.length, "each with its op");
});

Deno.test("engine: what put() returns and announces shares nothing with the caller's object", async () => {
  await using storage = createMemoryStorage();
  await using transport = createRestTransport({
    baseUrl: "http://127.0.0.1:9",
  });
  await using engine = new SyncEngine({ storage, transport });
  const notes = engine.table("notes");
  const seen: unknown[] = [];
  engine.on("change", (event) => seen.push(event.data));
  const input = { id: "a", tags: ["x"] };
  const out = await notes.put(input);
  input.tags.push("changed after the put");
  assert.deepEqual(out.tags, ["x"]);
  assert.deepEqual((seen[0] as { tags: string[] }).tags, ["x"]);
  assert.deepEqual((await notes.get("a"))?.tags, ["x"]);
});

Deno.test("engine: clause 13, a full resync asked for during a sync runs after it instead of sharing its result", async () => {
  await using server = startServer();
  await using a = createClient(server.url);
  const todos = a.engine.table("todos");
  await todos.put({ id: "kept", title: "k" });
  await a.engine.sync();
  // A record the server never had: only a full resync removes it.
  await a.storage.write([{
    type: "putRecord",
    record: {
      kind: "todos",
      id: "ghost",
      data: { id: "ghost", title: "never on the server" },
      deleted: false,
      base: {
        data: { id: "ghost" },
        updatedAt: "2020-01-01T00:00:00.000Z",
        deleted: false,
      },
      lastOpId: null,
      localUpdatedAt: null,
    },
  }]);
  const arrived = Promise.withResolvers<void>();
  const gate = Promise.withResolvers<void>();
  let held = false;
  server.intercept(async (request, seen, next) => {
    if (seen.method !== "GET" || held) return undefined;
    held = true;
    arrived.resolve();
    await gate.promise;
    return next(request);
  });
  const syncing = a.engine.sync();
  await arrived.promise; // the sync is pulling
  const resyncing = a.engine.fullResync();
  gate.resolve();
  const [synced, resynced] = await Promise.all([syncing, resyncing]);
  assert.notEqual(resynced.runId, synced.runId, "a run of its own");
  assert.deepEqual(
    eventsOf(a.events, "syncCompleted").map((event) => event.mode),
    ["sync", "sync", "fullResync"],
  );
  assert.equal(await todos.get("ghost"), undefined, "the resync ran");
  assert.equal((await todos.get("kept"))?.title, "k");
});

Deno.test("engine: clause 22, every call that writes rejects after close() and changes nothing", async () => {
  await using server = startServer({
    schemas: { todos: z.object({ id: z.string(), title: z.string().max(10) }) },
  });
  await using storage = createMemoryStorage();
  const a = createClient(server.url, { storage });
  const todos = a.engine.table("todos");
  await todos.put({ id: "rejected", title: "far too long a title" });
  await a.engine.sync();
  const [quarantined] = await a.engine.outbox.quarantined();
  assert.ok(quarantined);
  await todos.put({ id: "t", title: "x" });
  const [pending] = await a.engine.outbox.list({ states: ["pending"] });
  assert.ok(pending);
  const state = async () => ({
    records: await storage.listRecords("todos", { includeDeleted: true }),
    ops: await storage.listOps(),
  });
  const before = await state();
  await a.engine.close();

  const calls: [string, () => Promise<unknown>][] = [
    ["table.delete", () => todos.delete("t")],
    ["table.update", () => todos.update("t", { title: "y" })],
    ["table.put", () => todos.put({ id: "t", title: "y" })],
    ["table.putMany", () => todos.putMany([{ id: "u", title: "y" }])],
    ["outbox.drop", () => a.engine.outbox.drop(pending.opId)],
    ["outbox.retry", () => a.engine.outbox.retry(quarantined.opId)],
    [
      "outbox.edit",
      () => a.engine.outbox.edit(quarantined.opId, { id: "rejected" }),
    ],
    ["outbox.count", () => a.engine.outbox.count()],
    [
      "conflicts.resolve",
      () => a.engine.conflicts.resolve(pending.opId, Resolutions.discard()),
    ],
    ["fullResync", () => a.engine.fullResync()],
  ];
  for (const [name, call] of calls) {
    await assert.rejects(call(), ClosedError, name);
  }
  assert.throws(() => todos.watch(), ClosedError);
  assert.deepEqual(await state(), before, "the store is untouched");
  await a[Symbol.asyncDispose]();
});

Deno.test("engine: clause 4, editing a quarantined op validates the new payload with the table's schema", async () => {
  await using server = startServer({
    schemas: { todos: z.object({ id: z.string(), title: z.string().max(10) }) },
  });
  await using a = createClient(server.url);
  const Todo = z.object({ id: z.string(), title: z.string() });
  const todos = a.engine.table("todos", { schema: Todo });
  await todos.put({ id: "t", title: "far too long a title" });
  await a.engine.sync();
  const [op] = await a.engine.outbox.quarantined();
  assert.ok(op);
  await assert.rejects(
    a.engine.outbox.edit(op.opId, {
      id: "t",
      title: 42 as unknown as string,
    }),
    (error: unknown) => {
      assert.ok(error instanceof ValidationError, String(error));
      assert.deepEqual(error.issues[0]?.path, ["title"]);
      return true;
    },
  );
  assert.deepEqual(await a.engine.outbox.list(), [op], "the op is unchanged");
  assert.equal((await todos.get("t"))?.title, "far too long a title");
  const writes = server.requests.filter((r) => r.method !== "GET").length;
  await a.engine.sync();
  assert.equal(
    server.requests.filter((r) => r.method !== "GET").length,
    writes,
    "nothing was queued to send",
  );
});
