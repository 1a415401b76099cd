import assert from "node:assert/strict";
import { type Conflict, Resolutions } from "../mod.ts";
import { type ConflictPolicy, decideConflict } from "../src/conflict.ts";
import { DEFAULT_SYSTEM_FIELDS } from "../src/merge.ts";
import {
  createClient,
  eventsOf,
  startServer,
  type TestServer,
} from "./_harness.ts";

/** Client A and B share `docs/d`; B changes `title`, A then changes `body`. */
async function conflictOn(
  server: TestServer,
  engine: Parameters<typeof createClient>[1] = {},
) {
  const a = createClient(server.url, engine);
  const b = createClient(server.url);
  const docsA = a.engine.table("docs");
  const docsB = b.engine.table("docs");
  await docsA.put({ id: "d", title: "v1", body: "b1" });
  await a.engine.sync();
  await b.engine.sync();
  await docsB.update("d", { title: "from B" });
  await b.engine.sync();
  await docsA.update("d", { body: "from A" });
  return { a, b, docsA, docsB };
}

Deno.test("conflict: clause 17, a forced write that conflicts again re-runs the strategy, bounded, then parks", async () => {
  await using server = startServer();
  const { a, b, docsA } = await conflictOn(server, {
    engine: { maxConflictRetries: 2 },
  });
  await using _a = a;
  await using _b = b;
  // A backend that answers 409 to every write, forced or not.
  let conflicts = 0;
  server.intercept(async (request, _seen, next) => {
    if (request.method !== "PUT" && !request.url.endsWith("/batch")) {
      return undefined;
    }
    conflicts++;
    const current = await (await next(new Request(`${server.url}/docs`)))
      .json();
    const record = current.items.find((item: { id: string }) =>
      item.id === "d"
    );
    const body = {
      error: "conflict",
      current: { ...record, title: `server ${conflicts}` },
      serverTimestamp: record.updated_at,
    };
    if (request.url.endsWith("/batch")) {
      const { ops } = await request.json();
      return Response.json({
        results: ops.map((op: { opId: string }) => ({
          opId: op.opId,
          status: 409,
          error: body,
        })),
      });
    }
    return Response.json(body, { status: 409 });
  });
  const { stats } = await a.engine.sync();
  assert.equal(conflicts, 3, "the first form and two resolutions");
  assert.equal(stats.deferred, 1);
  const [deferred] = eventsOf(a.events, "conflictDeferred");
  assert.equal(deferred?.reason, "retries-exhausted");
  const [op] = await a.engine.outbox.list();
  assert.equal(op?.state, "parked");
  assert.equal(op?.revision, 2, "every distinct body had its own form");
  await a.engine.sync();
  assert.equal(conflicts, 3, "a parked op is not sent again");
  assert.equal(
    (await docsA.get("d"))?.body,
    "from A",
    "the local edit is kept",
  );
});

Deno.test("conflict: lastWriteWins lets the later edit win, correcting the client's clock skew", async () => {
  // One controlled timeline: the server's clock, and A's clock an hour ahead.
  let serverNow = Date.parse("2025-03-01T10:00:00.000Z");
  await using server = startServer({ now: () => serverNow });
  const ahead = { now: () => serverNow + 3_600_000 };
  const { a, b, docsA, docsB } = await conflictOn(server, {
    engine: { strategy: "lastWriteWins", clock: ahead },
  });
  await using _a = a;
  await using _b = b;
  // A's edit (made in conflictOn) came after B's write on the server... by
  // A's fast clock. Ten real seconds later, A edits again and syncs.
  serverNow += 10_000;
  await docsA.update("d", { body: "from A, later" });
  await a.engine.sync();
  const [resolved] = eventsOf(a.events, "conflictResolved");
  await b.engine.sync();
  // The Date headers measured the skew, to within their one-second grain.
  assert.ok(
    Math.abs(a.engine.clockSkewMs + 3_600_000) <= 1_500,
    `${a.engine.clockSkewMs}`,
  );
  assert.equal(resolved?.resolution, "acceptClient");
  assert.equal((await docsB.get("d"))?.body, "from A, later");
  assert.equal(
    (await docsB.get("d"))?.title,
    "v1",
    "the whole local record won",
  );
  assert.deepEqual(await docsA.get("d"), await docsB.get("d"));
});

Deno.test("conflict: lastWriteWins does not let a fast client clock win", async () => {
  let serverNow = Date.parse("2025-03-01T10:00:00.000Z");
  await using server = startServer({ now: () => serverNow });
  const ahead = { now: () => serverNow + 3_600_000 };
  await using a = createClient(server.url, {
    engine: { strategy: "lastWriteWins", clock: ahead },
  });
  await using b = createClient(server.url);
  const docsA = a.engine.table("docs");
  const docsB = b.engine.table("docs");
  await docsA.put({ id: "d", title: "v1" });
  await a.engine.sync(); // A measures its skew here
  await b.engine.sync();
  serverNow += 5_000;
  await docsA.update("d", { title: "from A" }); // server time T+5s
  serverNow += 5_000;
  await docsB.update("d", { title: "from B" });
  await b.engine.sync(); // written at T+10s: later than A's edit
  await a.engine.sync();
  const [resolved] = eventsOf(a.events, "conflictResolved");
  assert.equal(
    resolved?.resolution,
    "acceptServer",
    "an hour-fast clock did not win",
  );
  assert.equal((await docsA.get("d"))?.title, "from B");
});

Deno.test("conflict: lastWriteWins gives the server the win when its version is later", async () => {
  await using server = startServer();
  // A's edit happened an hour before B's write, by a correct clock.
  let offset = 0;
  const clock = { now: () => Date.now() + offset };
  const { a, b, docsA, docsB } = await conflictOn(server, {
    engine: { strategy: "lastWriteWins", clock },
  });
  await using _a = a;
  await using _b = b;
  offset = -3_600_000;
  await docsA.update("d", { body: "from A, an hour ago" });
  offset = 0;
  await a.engine.sync();
  const [resolved] = eventsOf(a.events, "conflictResolved");
  assert.equal(resolved?.resolution, "acceptServer");
  assert.deepEqual(await docsA.get("d"), await docsB.get("d"));
  assert.equal((await docsA.get("d"))?.body, "b1");
});

Deno.test("conflict: merge forces mergeFn(local, server) onto the server", async () => {
  await using server = startServer();
  const { a, b, docsB } = await conflictOn(server, {
    engine: {
      strategy: "merge",
      mergeFn: (local, server) => ({
        ...server,
        body: `${local.body} + ${server.title}`,
      }),
    },
  });
  await using _a = a;
  await using _b = b;
  await a.engine.sync();
  await b.engine.sync();
  const merged = await docsB.get("d");
  assert.equal(merged?.body, "from A + from B");
  assert.equal(merged?.title, "from B");
});

Deno.test("conflict: manual with a resolver applies its resolution", async () => {
  await using server = startServer();
  const seen: string[] = [];
  const { a, b, docsA, docsB } = await conflictOn(server, {
    engine: {
      strategy: "manual",
      resolver: (conflict) => {
        seen.push(`${conflict.kind}/${conflict.id}:${conflict.changedFields}`);
        return Resolutions.acceptServer();
      },
    },
  });
  await using _a = a;
  await using _b = b;
  await a.engine.sync();
  assert.deepEqual(seen, ["docs/d:body"]);
  assert.deepEqual(await docsA.get("d"), await docsB.get("d"));
  assert.equal((await docsA.get("d"))?.title, "from B");
});

Deno.test("conflict: a throwing resolver parks the op and reports the error", async () => {
  await using server = startServer();
  const { a, b } = await conflictOn(server, {
    engine: {
      strategy: "manual",
      resolver: () => {
        throw new Error("resolver bug");
      },
    },
  });
  await using _a = a;
  await using _b = b;
  const { stats } = await a.engine.sync();
  assert.equal(stats.deferred, 1);
  assert.match(
    String(eventsOf(a.events, "error")[0]?.error.message),
    /resolver bug/,
  );
  assert.equal((await a.engine.conflicts.list()).length, 1);
});

Deno.test("conflict: autoPreserve re-creates a record the server deleted while it was edited", async () => {
  await using server = startServer();
  const { a, b, docsA, docsB } = await conflictOn(server);
  await using _a = a;
  await using _b = b;
  await docsB.delete("d");
  await b.engine.sync();
  await a.engine.sync();
  await b.engine.sync();
  assert.equal(
    (await docsB.get("d"))?.body,
    "from A",
    "the edit survived the delete",
  );
  assert.deepEqual(await docsA.get("d"), await docsB.get("d"));
});

Deno.test("conflict: autoPreserve keeps a server edit over a stale local delete", async () => {
  await using server = startServer();
  await using a = createClient(server.url);
  await using b = createClient(server.url);
  const docsA = a.engine.table("docs");
  const docsB = b.engine.table("docs");
  await docsA.put({ id: "d", title: "v1" });
  await a.engine.sync();
  await b.engine.sync();
  await docsB.update("d", { title: "edited" });
  await b.engine.sync();
  await docsA.delete("d");
  await a.engine.sync();
  assert.equal((await docsA.get("d"))?.title, "edited");
  assert.equal((await a.engine.outbox.list()).length, 0);
});

Deno.test("conflict: lastWriteWins gives a tie to the server, and a millisecond later edit to the client", async () => {
  const serverUpdatedAt = "2025-03-01T10:00:00.000Z";
  const at = Date.parse(serverUpdatedAt);
  const policy: ConflictPolicy = {
    strategy: "lastWriteWins",
    resolver: undefined,
    mergeFn: undefined,
    systemFields: DEFAULT_SYSTEM_FIELDS,
  };
  // The client's clock is 5 s behind the server's: its edit time plus the
  // skew is the instant that is compared.
  const skew = 5_000;
  const decide = (localUpdatedAt: number) => {
    const conflict: Conflict = {
      kind: "docs",
      id: "d",
      opId: "01JNB000000000000000000000",
      opType: "upsert",
      local: { id: "d", title: "mine" },
      server: { id: "d", title: "theirs", updated_at: serverUpdatedAt },
      serverDeleted: false,
      base: null,
      changedFields: ["title"],
      localUpdatedAt,
      serverUpdatedAt,
    };
    return decideConflict(conflict, policy, { clockSkewMs: skew });
  };
  assert.equal((await decide(at - skew)).type, "acceptServer", "a tie");
  assert.equal((await decide(at - skew - 1)).type, "acceptServer");
  const later = await decide(at - skew + 1);
  assert.ok(later.type === "write", later.type);
  assert.equal(later.resolution, "acceptClient");
  assert.deepEqual(later.data, { id: "d", title: "mine" });
});
