/**
 * ENGINE.md clause 25 on push: a server answer (a 2xx record, or a 409's
 * current record) for another id than the op's, or one that breaks the wire
 * limits, is a protocol error for that op alone: it is quarantined, nothing
 * of the answer is stored, and the other ops go on.
 *
 * @module
 */

import assert from "node:assert/strict";
import { ParseError, SyncEngine, type SyncEvent } from "../mod.ts";
import type { JsonObject, JsonValue } from "../src/json.ts";
import type { Storage } from "../src/storage.ts";
import type { PushOp, PushResult, Transport } from "../src/transport.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { createRestTransport } from "../transport/rest.ts";
import { json, startScriptedServer } from "./_scripted_server.ts";

const T1 = "2025-03-01T10:00:00.000Z";

/** A transport whose push answers are scripted per op; pulls are empty. */
function scripted(
  answer: (op: PushOp) => PushResult,
): Transport & { sent: PushOp[] } {
  const sent: PushOp[] = [];
  return {
    sent,
    pull: () => Promise.resolve({ items: [], nextPageToken: null }),
    push(ops) {
      sent.push(...ops);
      return Promise.resolve(ops.map(answer));
    },
    close: () => Promise.resolve(),
    [Symbol.asyncDispose]: () => Promise.resolve(),
  };
}

function nested(depth: number): JsonValue {
  let value: JsonValue = 1;
  for (let i = 0; i < depth; i++) value = [value];
  return value;
}

function ok(record: JsonObject | null): PushResult {
  return { type: "ok", status: 200, record };
}

function conflict(
  current: JsonObject | null,
  serverTimestamp: string | null = T1,
): PushResult {
  return { type: "conflict", current, serverTimestamp };
}

/** The answer for the op of record "bad" in each case; "good" is answered well. */
const CASES: [string, string, (op: PushOp) => PushResult][] = [
  [
    "a 2xx record of another id",
    "id_mismatch",
    () => ok({ id: "other", updated_at: T1, v: 9 }),
  ],
  [
    "a 409 current record of another id",
    "id_mismatch",
    () => conflict({ id: "other", updated_at: T1, v: 9 }),
  ],
  [
    "a 2xx record without an id",
    "invalid_id",
    () => ok({ updated_at: T1, v: 9 }),
  ],
  [
    "a 2xx record with a lone-surrogate id",
    "invalid_id",
    () => ok({ id: "bad\ud800", updated_at: T1 }),
  ],
  [
    "a 2xx record with a bad updated_at",
    "invalid_updated_at",
    () => ok({ id: "bad", updated_at: "yesterday" }),
  ],
  [
    "a 2xx record with a bad deleted_at",
    "invalid_deleted_at",
    () => ok({ id: "bad", updated_at: T1, deleted_at: 5 }),
  ],
  [
    "a 2xx record 5,000 levels deep",
    "too_deep",
    () => ok({ id: "bad", updated_at: T1, d: nested(5_000) }),
  ],
  [
    "a 409 current record with a bad updated_at",
    "invalid_updated_at",
    () => conflict({ id: "bad", updated_at: "2025-02-30T00:00:00.000Z" }, null),
  ],
  [
    "a 409 serverTimestamp that is not a timestamp",
    "invalid_updated_at",
    () => conflict({ id: "bad", updated_at: T1 }, "soon"),
  ],
];

function answerFor(bad: (op: PushOp) => PushResult) {
  return (op: PushOp): PushResult =>
    op.id === "bad" ? bad(op) : ok({ id: op.id, updated_at: T1, v: 1 });
}

async function recordOf(storage: Storage, id: string) {
  const [entry] = await storage.getRecords("items", [id]);
  return entry?.value;
}

for (const [name, code, bad] of CASES) {
  Deno.test(`push: clause 25, ${name} quarantines that op alone and stores nothing of it`, async () => {
    await using storage = createMemoryStorage();
    const transport = scripted(answerFor(bad));
    await using engine = new SyncEngine({ storage, transport });
    const events: SyncEvent[] = [];
    for (
      const type of ["opQuarantined", "conflictDetected", "opPushed"] as const
    ) {
      engine.on(type, (event) => events.push(event));
    }
    const items = engine.table("items");
    await items.put({ id: "bad", v: 1 });
    await items.put({ id: "good", v: 1 });

    const result = await engine.sync();
    assert.equal(result.stats.quarantined, 1);
    assert.equal(result.stats.pushed, 1, "the other op went on");
    const [quarantined] = events.filter((e) => e.type === "opQuarantined");
    assert.ok(quarantined?.type === "opQuarantined");
    assert.equal(quarantined.id, "bad");
    assert.ok(quarantined.error instanceof ParseError);
    assert.equal(quarantined.error.code, code);
    assert.equal(quarantined.error.retryable, false);
    assert.match(
      quarantined.error.message,
      /^Cannot accept the server's answer to op "[0-9A-Z]{26}" of 'items' as /,
    );
    assert.ok(quarantined.error.message.length < 400, "a short message");
    assert.ok(
      !events.some((e) => e.type === "conflictDetected"),
      "no conflict was resolved against the wrong record",
    );
    // Nothing stored under either id: the local record is as written.
    const local = await recordOf(storage, "bad");
    assert.deepEqual(local?.data, { id: "bad", v: 1 });
    assert.equal(local?.base, null);
    assert.equal(await recordOf(storage, "other"), undefined);
    assert.equal((await recordOf(storage, "good"))?.base?.updatedAt, T1);
    const [op] = await engine.outbox.quarantined();
    assert.equal(op?.id, "bad");
    assert.equal(op?.error?.code, code);

    // The server would replay the same stored answer: the op is not re-sent.
    const before = transport.sent.length;
    await engine.sync();
    assert.equal(transport.sent.length, before);
  });
}

Deno.test("push: an acknowledgement body that is no record is a 2xx without a record", async () => {
  await using storage = createMemoryStorage();
  const transport = scripted(() => ok({ ok: true }));
  await using engine = new SyncEngine({ storage, transport });
  const items = engine.table("items");
  await items.put({ id: "a", v: 1 });
  const result = await engine.sync();
  assert.equal(result.stats.pushed, 1);
  assert.equal(await engine.outbox.count(), 0);
  assert.deepEqual((await recordOf(storage, "a"))?.data, { id: "a", v: 1 });
});

Deno.test("push: a returned record is matched through the table's id field", async () => {
  await using storage = createMemoryStorage();
  const transport = scripted((op) =>
    ok({ uuid: op.id === "a" ? "a" : "not-b", updated_at: T1 })
  );
  await using engine = new SyncEngine({ storage, transport });
  const people = engine.table("items", { fields: { id: "uuid" } });
  await people.put({ uuid: "a" });
  await people.put({ uuid: "b" });
  const result = await engine.sync();
  assert.equal(result.stats.pushed, 1);
  assert.equal(result.stats.quarantined, 1);
  const [op] = await engine.outbox.quarantined();
  assert.equal(op?.id, "b");
});

Deno.test("push: over HTTP, a PUT answered with another id's record is quarantined, the next op goes on", async () => {
  await using server = startScriptedServer((request) => {
    if (request.method !== "PUT") {
      return json({ items: [], nextPageToken: null });
    }
    const id = decodeURIComponent(request.path.split("/").at(-1)!);
    return json({ id: id === "a" ? "someone-else" : id, updated_at: T1 }, 200);
  });
  await using storage = createMemoryStorage();
  await using transport = createRestTransport({
    baseUrl: server.url,
    batch: false,
  });
  await using engine = new SyncEngine({ storage, transport });
  const items = engine.table("items");
  await items.put({ id: "a", v: 1 });
  await items.put({ id: "b", v: 1 });
  const result = await engine.sync();
  assert.equal(result.stats.quarantined, 1);
  assert.equal(result.stats.pushed, 1);
  assert.equal(await recordOf(storage, "someone-else"), undefined);
  assert.equal((await recordOf(storage, "a"))?.base, null);
  const puts = () => server.requests.filter((r) => r.method === "PUT").length;
  const before = puts();
  await engine.sync();
  assert.equal(puts(), before, "the quarantined op is not re-sent");
});
