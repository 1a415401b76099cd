/**
 * `POST /batch` over a store with batch reads (`getRecords`,
 * `getIdempotencies`): one call of each per slice instead of two reads per
 * op, the staged writes of the slice still winning over what was read
 * ahead, and the op-by-op reads of a store without them.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { JsonObject } from "../src/json.ts";
import { createSyncServer, type ServerStore } from "../server/mod.ts";
import { createMemoryServerStore } from "../server/memory.ts";
import {
  type BatchBody,
  options,
  send,
  SpyStore,
  TestClock,
} from "./_server_http.ts";

/** A memory store that counts its reads, by method. */
function countingStore(
  overrides: Partial<ServerStore> = {},
): { store: ServerStore; calls: Map<string, number> } {
  const inner = createMemoryServerStore();
  const calls = new Map<string, number>();
  const count = (name: string) => calls.set(name, (calls.get(name) ?? 0) + 1);
  const store: ServerStore = {
    getRecord(ns, kind, id) {
      count("getRecord");
      return inner.getRecord(ns, kind, id);
    },
    getRecords(ns, refs) {
      count("getRecords");
      return inner.getRecords!(ns, refs);
    },
    getIdempotency(ns, key) {
      count("getIdempotency");
      return inner.getIdempotency(ns, key);
    },
    getIdempotencies(ns, keys) {
      count("getIdempotencies");
      return inner.getIdempotencies!(ns, keys);
    },
    listRecords: (ns, kind, options) => inner.listRecords(ns, kind, options),
    commit: (writes) => inner.commit(writes),
    purge: (options) => inner.purge(options),
    trimIdempotency: (ns, options) => inner.trimIdempotency(ns, options),
    lastWrite: (ns) => inner.lastWrite(ns),
    close: () => inner.close(),
    [Symbol.asyncDispose]: () => inner.close(),
    ...overrides,
  };
  return { store, calls };
}

function upserts(count: number, prefix = "o"): JsonObject[] {
  return Array.from({ length: count }, (_, index) => ({
    opId: `${prefix}${index}`,
    kind: "todo",
    id: `r${index}`,
    type: "upsert",
    payload: { n: index },
  }));
}

Deno.test("batch reads: each slice reads its records and keys in one call each, not per op", async () => {
  const { store, calls } = countingStore();
  await using server = createSyncServer(options({ store }));
  const { status, body } = await send<BatchBody>(server, "POST", "/batch", {
    json: { ops: upserts(600) },
  });
  assert.equal(status, 200);
  assert.ok(body.results.every((result) => result.status === 201));
  // Slices of 250, 250 and 100 ops.
  assert.equal(calls.get("getRecords"), 3);
  assert.equal(calls.get("getIdempotencies"), 3);
  assert.equal(calls.get("getRecord"), undefined);
  assert.equal(calls.get("getIdempotency"), undefined);
  // Replayed from what the batch reads found.
  const again = await send<BatchBody>(server, "POST", "/batch", {
    json: { ops: upserts(600) },
  });
  assert.ok(again.body.results.every((result) => result.replayed === true));
  assert.equal(calls.get("getIdempotency"), undefined);
});

Deno.test("batch reads: a write staged earlier in the slice wins over what was read ahead", async () => {
  const clock = new TestClock();
  const { store } = countingStore();
  await using server = createSyncServer(
    options({ store, now: clock.now, idempotencyRetentionMs: 1_000 }),
  );
  // Stored before the batch: record "a", and key "k", soon expired.
  const first = await send<BatchBody>(server, "POST", "/batch", {
    json: {
      ops: [
        { opId: "k", kind: "todo", id: "a", type: "upsert", payload: {} },
      ],
    },
  });
  const base = (first.body.results[0]!.record as JsonObject).updated_at!;
  clock.ms += 2_000;
  const ops: JsonObject[] = [
    // Both read "a" at `base`: the second must see the first's write.
    { opId: "b1", kind: "todo", id: "a", type: "upsert", payload: { v: 1 } },
    {
      opId: "b2",
      kind: "todo",
      id: "a",
      type: "upsert",
      payload: { v: 2 },
      baseUpdatedAt: base,
    },
    // "k" expired: used again, then reused for another body.
    { opId: "k", kind: "todo", id: "x", type: "upsert", payload: { v: 1 } },
    { opId: "k", kind: "todo", id: "x", type: "upsert", payload: { v: 2 } },
  ];
  const { body } = await send<BatchBody>(server, "POST", "/batch", {
    json: { ops },
  });
  assert.deepEqual(
    body.results.map((result) => result.status),
    [200, 409, 201, 422],
  );
});

Deno.test("batch reads: a store without them is read op by op", async () => {
  const store = new SpyStore();
  await using server = createSyncServer(options({ store }));
  const { body } = await send<BatchBody>(server, "POST", "/batch", {
    json: { ops: upserts(150) },
  });
  assert.ok(body.results.every((result) => result.status === 201));
  const reads = store.calls.filter((call) => call === "getRecord").length;
  const keys = store.calls.filter((call) => call === "getIdempotency").length;
  assert.deepEqual([reads, keys], [150, 150]);
});

Deno.test("batch reads: a batch read of another length than asked fails the batch, nothing applied", async () => {
  const errors: unknown[] = [];
  const { store } = countingStore({
    getRecords: () => Promise.resolve([null]),
  });
  await using server = createSyncServer(
    options({ store, onError: (error) => errors.push(error) }),
  );
  const { status } = await send(server, "POST", "/batch", {
    json: { ops: upserts(3) },
  });
  assert.equal(status, 500);
  assert.ok(errors[0] instanceof TypeError);
  assert.match(String(errors[0]), /another length than 3: current value is 1/);
  assert.equal(await store.getRecord("public", "todo", "r0"), null);
});

Deno.test("batch writes: each record write carries its data's JSON text, which the answer holds as is", async () => {
  const store = new SpyStore();
  await using server = createSyncServer(options({ store }));
  const response = await server.fetch(
    new Request("http://sync.test/batch", {
      method: "POST",
      body: JSON.stringify({
        ops: [
          ...upserts(3),
          { opId: "d", kind: "todo", id: "r0", type: "delete" },
          { opId: "bad", kind: "todo", id: "r9", type: "upsert", payload: 1 },
        ],
      }),
    }),
  );
  const text = await response.text();
  // The answer is plain JSON, as JSON.stringify would write it.
  assert.equal(text, JSON.stringify(JSON.parse(text)));
  const records = store.commits.flat().filter((write) =>
    write.type === "record"
  );
  assert.equal(records.length, 4);
  for (const write of records) {
    assert.equal(write.text, JSON.stringify(write.record.data));
    assert.ok(text.includes(`"record":${write.text}`), write.text);
  }
});

Deno.test("batch writes: the memory store writes a record write's text, not its data again", async () => {
  await using store = createMemoryServerStore();
  const data = { id: "a", updated_at: "2025-03-01T10:00:00.000Z" };
  await store.commit([{
    type: "record",
    namespace: "ns",
    record: { kind: "todo", id: "a", updatedAt: 1, deletedAt: null, data },
    // Not the data's text: only the server makes `text`, and it never lies.
    text: JSON.stringify({ ...data, marker: 1 }),
  }]);
  assert.equal((await store.getRecord("ns", "todo", "a"))!.data.marker, 1);
});
