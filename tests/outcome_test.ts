/**
 * Per-write outcomes (ENGINE.md clause 24): every write can be awaited to
 * its end, across coalescing, conflicts, rebases and restarts.
 */

import assert from "node:assert/strict";
import {
  ClosedError,
  type JsonObject,
  type OpOutcome,
  Resolutions,
  type StandardSchemaV1,
  SyncEngine,
  ValidationError,
  type WriteOutcome,
} from "../mod.ts";
import { OutcomeRegistry } from "../src/_outcomes.ts";
import type { Mutation, Storage } from "../src/storage.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { openSqliteStorage } from "../storage/sqlite.ts";
import { createRestTransport } from "../transport/rest.ts";
import { createClient, startServer } from "./_harness.ts";
import { withTimeout } from "./_timeout.ts";

const T = 15_000;

/** A schema that refuses a record titled "bad" (the server answers 422). */
const noBadTitle: StandardSchemaV1 = {
  "~standard": {
    version: 1,
    vendor: "test",
    validate: (value) =>
      (value as JsonObject).title === "bad"
        ? { issues: [{ message: "bad title", path: ["title"] }] }
        : { value },
  },
};

/** Whether a promise settled by now (after queued callbacks ran). */
async function settledYet(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  promise.then(() => done = true, () => done = true);
  for (let i = 0; i < 10; i++) await Promise.resolve();
  return done;
}

function assertStatus<S extends OpOutcome["status"]>(
  outcome: OpOutcome,
  status: S,
): asserts outcome is Extract<OpOutcome, { status: S }> {
  assert.equal(outcome.status, status, JSON.stringify(outcome));
}

Deno.test(
  "outcome: a put resolves accepted with the server's record",
  withTimeout(T, async () => {
    await using server = startServer();
    await using a = createClient(server.url);
    const notes = a.engine.table("notes");
    const write = notes.put({ id: "n1", title: "hello" });
    assert.equal((await write).title, "hello");
    const opId = await write.opId;
    assert.equal(typeof opId, "string");
    assert.equal(await settledYet(write.synced), false, "not before a sync");
    await a.engine.sync();
    const outcome = await write.synced;
    assertStatus(outcome, "accepted");
    assert.equal(outcome.opId, opId);
    assert.equal(outcome.record?.title, "hello");
    assert.equal(typeof outcome.record?.updated_at, "string");
  }),
);

Deno.test(
  "outcome: update and delete resolve accepted; a delete of a missing record is dropped unchanged",
  withTimeout(T, async () => {
    await using server = startServer();
    await using a = createClient(server.url);
    const notes = a.engine.table("notes");
    await notes.put({ id: "n1", title: "a" });
    await a.engine.sync();
    const update = notes.update("n1", { title: "b" });
    await a.engine.sync();
    const updated = await update.synced;
    assertStatus(updated, "accepted");
    assert.equal(updated.record?.title, "b");
    const removal = notes.delete("n1");
    assert.equal(await removal, true);
    await a.engine.sync();
    assertStatus(await removal.synced, "accepted");
    const missing = notes.delete("nope");
    assert.equal(await missing, false);
    assert.deepEqual(await missing.synced, {
      status: "dropped",
      opId: null,
      reason: "unchanged",
      record: null,
    });
    assert.equal(await missing.opId, null);
  }),
);

Deno.test(
  "outcome: coalesced writes share the op that carries them and its outcome",
  withTimeout(T, async () => {
    await using server = startServer();
    await using a = createClient(server.url);
    const notes = a.engine.table("notes");
    const first = notes.put({ id: "n1", title: "one" });
    const second = notes.put({ id: "n1", title: "two" });
    const same = notes.put({ id: "n1", title: "two" }); // changes nothing
    await Promise.all([first, second, same]);
    assert.equal(await first.opId, await second.opId);
    assert.equal(await same.opId, await first.opId);
    assert.equal(await a.engine.outbox.count(), 1);
    await a.engine.sync();
    const outcomes = await Promise.all([
      first.synced,
      second.synced,
      same.synced,
    ]);
    for (const outcome of outcomes) {
      assertStatus(outcome, "accepted");
      assert.equal(outcome.record?.title, "two");
    }
  }),
);

Deno.test(
  "outcome: a create deleted before the server saw it ends dropped, cancelled",
  withTimeout(T, async () => {
    await using server = startServer();
    await using a = createClient(server.url);
    const notes = a.engine.table("notes");
    const create = notes.put({ id: "n1", title: "one" });
    await create;
    const removal = notes.delete("n1");
    await removal;
    const opId = await create.opId;
    for (const write of [create, removal]) {
      assert.deepEqual(await write.synced, {
        status: "dropped",
        opId,
        reason: "cancelled",
        record: null,
      });
    }
    assert.equal(await a.engine.outbox.count(), 0);
  }),
);

Deno.test(
  "outcome: a 409 merged by autoPreserve resolves merged with the stored result",
  withTimeout(T, async () => {
    await using server = startServer();
    await using a = createClient(server.url);
    await using b = createClient(server.url);
    const notesA = a.engine.table("notes");
    const notesB = b.engine.table("notes");
    await notesA.put({ id: "n", title: "t0", body: "b0" });
    await a.engine.sync();
    await b.engine.sync();
    await notesB.update("n", { title: "server" });
    await b.engine.sync();
    const local = notesA.update("n", { body: "local" });
    await a.engine.sync();
    await a.engine.sync();
    const outcome = await local.synced;
    assertStatus(outcome, "merged");
    assert.equal(outcome.opId, await local.opId);
    assert.equal(outcome.record?.title, "server");
    assert.equal(outcome.record?.body, "local");
    assert.equal(typeof outcome.record?.updated_at, "string");
  }),
);

Deno.test(
  "outcome: serverWins drops the write with the server's record",
  withTimeout(T, async () => {
    await using server = startServer();
    await using a = createClient(server.url, {
      engine: { strategy: "serverWins" },
    });
    await using b = createClient(server.url);
    const notesA = a.engine.table("notes");
    b.engine.table("notes");
    await notesA.put({ id: "n", title: "t0" });
    await a.engine.sync();
    await b.engine.sync();
    await b.engine.table("notes").update("n", { title: "server" });
    await b.engine.sync();
    const local = notesA.update("n", { title: "local" });
    await a.engine.sync();
    const outcome = await local.synced;
    assertStatus(outcome, "dropped");
    assert.equal(outcome.reason, "acceptServer");
    assert.equal(outcome.record?.title, "server");
  }),
);

Deno.test(
  "outcome: a write the server refuses resolves quarantined; after retry, outbox.outcome() awaits it again",
  withTimeout(T, async () => {
    await using server = startServer({ schemas: { notes: noBadTitle } });
    await using a = createClient(server.url);
    const notes = a.engine.table("notes");
    const write = notes.put({ id: "n1", title: "bad" });
    const opId = (await write.opId)!;
    await a.engine.sync();
    const outcome = await write.synced;
    assertStatus(outcome, "quarantined");
    assert.equal(outcome.opId, opId);
    assert.equal(outcome.error.status, 422);
    // Still quarantined: outbox.outcome() answers at once.
    assertStatus(await a.engine.outbox.outcome(opId), "quarantined");
    await a.engine.outbox.edit(opId, { id: "n1", title: "good" });
    const next = a.engine.outbox.outcome(opId);
    assert.equal(await settledYet(next), false);
    await a.engine.sync();
    const accepted = await next;
    assertStatus(accepted, "accepted");
    assert.equal(accepted.record?.title, "good");
  }),
);

Deno.test(
  "outcome: a manual conflict resolves deferred; a later resolution is awaited with outbox.outcome()",
  withTimeout(T, async () => {
    await using server = startServer();
    await using a = createClient(server.url, {
      engine: { strategy: "manual" },
    });
    await using b = createClient(server.url);
    const notesA = a.engine.table("notes");
    b.engine.table("notes");
    await notesA.put({ id: "n", title: "t0", body: "b0" });
    await a.engine.sync();
    await b.engine.sync();
    await b.engine.table("notes").update("n", { title: "server" });
    await b.engine.sync();
    const local = notesA.update("n", { body: "local" });
    await a.engine.sync();
    const outcome = await local.synced;
    assertStatus(outcome, "deferred");
    assert.equal(outcome.conflict.server?.title, "server");
    assert.equal(outcome.conflict.local?.body, "local");
    const opId = outcome.opId;
    assertStatus(await a.engine.outbox.outcome(opId), "deferred");
    await a.engine.conflicts.resolve(
      opId,
      Resolutions.acceptMerged({
        ...outcome.conflict.server,
        body: "local",
      }),
    );
    const next = a.engine.outbox.outcome(opId);
    await a.engine.sync();
    const merged = await next;
    assertStatus(merged, "merged");
    assert.equal(merged.record?.title, "server");
    assert.equal(merged.record?.body, "local");
  }),
);

Deno.test(
  "outcome: outbox.drop() ends a waiting write dropped, removed",
  withTimeout(T, async () => {
    await using server = startServer();
    await using a = createClient(server.url);
    const write = a.engine.table("notes").put({ id: "n1", title: "x" });
    const opId = (await write.opId)!;
    assert.equal(await a.engine.outbox.drop(opId), true);
    assert.deepEqual(await write.synced, {
      status: "dropped",
      opId,
      reason: "removed",
      record: null,
    });
    assert.deepEqual(await a.engine.outbox.outcome(opId), {
      status: "unknown",
      opId,
    });
  }),
);

Deno.test(
  "outcome: a write queued behind a sent op is rebased and resolves accepted",
  withTimeout(T, async () => {
    await using server = startServer();
    await using a = createClient(server.url);
    const notes = a.engine.table("notes");
    await notes.put({ id: "n", title: "t0", body: "b0" });
    await a.engine.sync();
    const first = notes.update("n", { title: "t1" });
    await first;
    let second: ReturnType<typeof notes.update> | undefined;
    server.intercept(async (request, seen, next) => {
      if (seen.method === "GET" || second !== undefined) return undefined;
      // While the first op is on the wire: it is sent, so this queues behind.
      second = notes.update("n", { body: "b1" });
      await second;
      return await next(request);
    });
    await a.engine.sync();
    server.intercept(undefined);
    assert.ok(second !== undefined);
    assert.notEqual(await second.opId, await first.opId);
    await a.engine.sync();
    const [one, two] = await Promise.all([first.synced, second.synced]);
    assertStatus(one, "accepted");
    assertStatus(two, "accepted");
    assert.equal(one.record?.title, "t1");
    assert.equal(one.record?.body, "b0");
    assert.equal(two.record?.title, "t1");
    assert.equal(two.record?.body, "b1");
  }),
);

Deno.test(
  "outcome: putMany resolves one outcome per record, in input order",
  withTimeout(T, async () => {
    await using server = startServer({ schemas: { notes: noBadTitle } });
    await using a = createClient(server.url);
    const notes = a.engine.table("notes");
    await notes.put({ id: "same", title: "s" });
    await a.engine.sync();
    // Queued, not sent: an unchanged record shares its pending op.
    const q = notes.put({ id: "q", title: "Q" });
    const p = notes.put({ id: "p", title: "P" });
    const write = notes.putMany([
      { id: "a", title: "A" },
      { id: "same", title: "s" },
      { id: "b", title: "bad" },
      { id: "q", title: "Q" },
      { id: "p", title: "P" },
    ]);
    assert.equal((await write).length, 5);
    const opIds = await write.opIds;
    assert.equal(opIds.length, 5);
    assert.equal(opIds[1], null, "an unchanged record queues nothing");
    assert.equal(opIds[3], await q.opId);
    assert.equal(opIds[4], await p.opId);
    await a.engine.sync();
    const [first, same, bad, qOutcome, pOutcome] = await write.synced;
    assert.deepEqual(qOutcome, await q.synced);
    assertStatus(pOutcome!, "accepted");
    assert.equal(pOutcome.record?.title, "P");
    assertStatus(first!, "accepted");
    assert.equal(first.opId, opIds[0]);
    assert.equal(first.record?.title, "A");
    assertStatus(same!, "dropped");
    assert.equal(same.reason, "unchanged");
    assertStatus(bad!, "quarantined");
    // Repeated ids take the one-by-one path: they fold, and share.
    const repeated = notes.putMany([
      { id: "r", title: "1" },
      { id: "r", title: "2" },
    ]);
    const [r1, r2] = await repeated.opIds;
    assert.equal(r1, r2);
    await a.engine.sync();
    for (const outcome of await repeated.synced) {
      assertStatus(outcome, "accepted");
      assert.equal(outcome.record?.title, "2");
    }
  }),
);

Deno.test(
  "outcome: a failed local write rejects synced and opId with its error, and leaves no unhandled rejection",
  withTimeout(T, async () => {
    await using server = startServer();
    await using a = createClient(server.url);
    const notes = a.engine.table("notes");
    // Never reading synced or opId: an unhandled rejection fails the test.
    await assert.rejects(notes.put({ id: "" }), ValidationError);
    await assert.rejects(notes.update("missing", { title: "x" }));
    const write = notes.put({ id: "." });
    const error = await write.then(() => null, (e: unknown) => e);
    assert.ok(error instanceof ValidationError);
    await assert.rejects(write.synced, (e) => e === error);
    await assert.rejects(write.opId, (e) => e === error);
    const many = notes.putMany([{ id: "ok" }, { id: "" }]);
    await assert.rejects(many, ValidationError);
    await assert.rejects(many.synced, ValidationError);
  }),
);

Deno.test(
  "outcome: close rejects every unsettled wait with ClosedError",
  withTimeout(T, async () => {
    await using server = startServer();
    await using a = createClient(server.url);
    const notes = a.engine.table("notes");
    const write = notes.put({ id: "n1" });
    const opId = (await write.opId)!;
    const waiting = a.engine.outbox.outcome(opId);
    assert.equal(await settledYet(waiting), false);
    await a.engine.close();
    await assert.rejects(write.synced, ClosedError);
    await assert.rejects(waiting, ClosedError);
    await assert.rejects(a.engine.outbox.outcome(opId), ClosedError);
    const late = notes.put({ id: "n2" });
    await assert.rejects(late, ClosedError);
    await assert.rejects(late.synced, ClosedError);
  }),
);

for (
  const [name, open] of [
    ["memory", () => Promise.resolve(createMemoryStorage())],
    ["sqlite", () => openSqliteStorage(":memory:")],
  ] as const
) {
  Deno.test(
    `outcome (${name}): after a reopen, outbox.outcome() awaits the ops that survived`,
    withTimeout(T, async () => {
      await using server = startServer({ schemas: { notes: noBadTitle } });
      // The storage outlives the engines: a restart of the app.
      await using storage = await open();
      await using transport = createRestTransport({ baseUrl: server.url });
      let good: string;
      let bad: string;
      {
        await using engine = new SyncEngine({ storage, transport });
        const notes = engine.table("notes");
        bad = (await notes.put({ id: "b", title: "bad" }).opId)!;
        await engine.sync();
        good = (await notes.put({ id: "g", title: "good" }).opId)!;
      }
      await using engine = new SyncEngine({ storage, transport });
      engine.table("notes");
      const pending = engine.outbox.outcome(good);
      assert.equal(await settledYet(pending), false);
      assertStatus(await engine.outbox.outcome(bad), "quarantined");
      await engine.sync();
      const outcome = await pending;
      assertStatus(outcome, "accepted");
      assert.equal(outcome.record?.title, "good");
      assert.deepEqual(await engine.outbox.outcome(good), {
        status: "unknown",
        opId: good,
      });
      await assert.rejects(engine.outbox.outcome(""), TypeError);
    }),
  );
}

Deno.test(
  "outcome: outbox.outcome() of an op whose settlement committed but is not yet announced waits for it",
  withTimeout(T, async () => {
    await using server = startServer();
    const inner = createMemoryStorage();
    let target: string | null = null;
    const app: { engine?: SyncEngine } = {};
    let during: Promise<OpOutcome> | undefined;
    // A fault point: right after the commit that removes the op, before the
    // engine announces it, the app asks for the op's outcome and reads it
    // as gone.
    const write = async (mutations: Mutation[]) => {
      const result = await inner.write(mutations);
      const removes = mutations.some((m) =>
        m.type === "deleteOp" && m.opId === target
      );
      if (result.ok && removes && during === undefined) {
        during = app.engine!.outbox.outcome(target!);
        for (let i = 0; i < 50; i++) await Promise.resolve();
      }
      return result;
    };
    const storage = new Proxy(inner, {
      get(target, key) {
        if (key === "write") return write;
        const value = Reflect.get(target, key);
        return typeof value === "function" ? value.bind(target) : value;
      },
    }) as Storage;
    await using a = createClient(server.url, { storage });
    app.engine = a.engine;
    const put = a.engine.table("notes").put({ id: "n1", title: "x" });
    target = await put.opId;
    await a.engine.sync();
    assert.ok(during !== undefined, "the fault point ran");
    const outcome = await during;
    assertStatus(outcome, "accepted");
    assert.equal(outcome.record?.title, "x");
  }),
);

Deno.test("OutcomeRegistry: settle resolves and forgets every wait of an op", async () => {
  const registry = new OutcomeRegistry();
  const one = registry.wait("a");
  const two = registry.wait("a");
  registry.wait("b").promise.catch(() => {});
  assert.equal(registry.size, 2);
  const outcome: WriteOutcome = { status: "accepted", opId: "a", record: null };
  registry.settle("a", outcome);
  assert.equal(await one.promise, outcome);
  assert.equal(await two.promise, outcome);
  assert.equal(registry.size, 1);
  registry.close(new ClosedError("closed"));
  assert.equal(registry.size, 0);
  await assert.rejects(registry.wait("c").promise, ClosedError);
});

Deno.test("OutcomeRegistry: follow moves waits onto the op that carries the change", async () => {
  const registry = new OutcomeRegistry();
  const moved = registry.wait("old");
  const target = registry.wait("new");
  registry.follow("old", "new");
  assert.equal(registry.size, 1);
  registry.settle("old", { status: "accepted", opId: "old", record: null });
  assert.equal(await settledYet(moved.promise), false);
  const outcome: WriteOutcome = { status: "accepted", opId: "new", record: {} };
  registry.settle("new", outcome);
  assert.equal(await moved.promise, outcome);
  assert.equal(await target.promise, outcome);
  assert.equal(registry.size, 0);
  const cancelled = registry.wait("x");
  cancelled.cancel();
  assert.equal(registry.size, 0);
});

Deno.test(
  "outcome: synced first read after the ops settled still resolves, for put and putMany",
  withTimeout(T, async () => {
    await using server = startServer();
    await using a = createClient(server.url);
    const notes = a.engine.table("notes");
    const one = notes.put({ id: "n0", title: "zero" });
    const many = notes.putMany([
      { id: "n1", title: "one" },
      { id: "n2", title: "two" },
    ]);
    await one;
    await many;
    await a.engine.sync();
    // Nothing read `synced` before the sync settled the ops.
    const outcome = await one.synced;
    assertStatus(outcome, "accepted");
    assert.equal(outcome.record?.title, "zero");
    const outcomes = await many.synced;
    assert.deepEqual(outcomes.map((o) => o.status), ["accepted", "accepted"]);
    assert.deepEqual(
      outcomes.map((o) => o.status === "accepted" ? o.record?.title : null),
      ["one", "two"],
    );
    assert.equal(many.synced, many.synced, "one promise, read twice");
    assert.deepEqual(await many.opIds, outcomes.map((o) => o.opId));
  }),
);

Deno.test(
  "outcome: a putMany's synced waits for its last op, and a failed putMany rejects it",
  withTimeout(T, async () => {
    await using server = startServer();
    await using a = createClient(server.url);
    const notes = a.engine.table("notes");
    const many = notes.putMany([{ id: "m1", t: 1 }, { id: "m2", t: 2 }]);
    const synced = many.synced;
    await many;
    assert.equal(await settledYet(synced), false, "not before a sync");
    await a.engine.sync();
    assert.equal((await synced).length, 2);
    const bad = notes.putMany([{ id: "ok" }, { id: "" }]);
    await assert.rejects(bad, ValidationError);
    await assert.rejects(bad.synced, ValidationError);
    await assert.rejects(bad.opIds, ValidationError);
  }),
);
