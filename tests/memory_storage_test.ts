import assert from "node:assert/strict";
import { createMemoryStorage } from "../storage/memory.ts";
import { testStorage } from "../storage/conformance.ts";
import { ClosedError, StorageError } from "../src/errors.ts";
import type { JsonValue } from "../src/json.ts";
import type { Mutation, StoredOp } from "../src/storage.ts";
import { pendingOp } from "./_fixtures.ts";
import { withTimeout } from "./_timeout.ts";

await testStorage("memory", () => ({ storage: createMemoryStorage() }));

await testStorage("memory (limited)", () => ({
  storage: createMemoryStorage({
    maxMutationsPerWrite: 10,
    maxWriteBytes: 4096,
    maxKeyLength: 300,
  }),
}));

function op(n: number, fields: Partial<StoredOp> = {}): StoredOp {
  return pendingOp(`01J${String(n).padStart(23, "0")}`, {
    id: String(n % 100),
    payload: { n },
    createdAt: n,
    editedAt: n,
    ...fields,
  });
}

Deno.test("createMemoryStorage() declares its capabilities", async () => {
  await using unlimited = createMemoryStorage();
  assert.deepEqual(unlimited.capabilities, {
    persistent: false,
    multiProcess: false,
    maxMutationsPerWrite: Infinity,
    maxWriteBytes: Infinity,
    maxKeyLength: Infinity,
  });
  await using limited = createMemoryStorage({
    maxMutationsPerWrite: 3,
    maxWriteBytes: 100,
    maxKeyLength: 8,
  });
  assert.equal(limited.capabilities.maxMutationsPerWrite, 3);
  assert.equal(limited.capabilities.maxWriteBytes, 100);
  assert.equal(limited.capabilities.maxKeyLength, 8);
  assert.ok(Object.isFrozen(limited.capabilities));
});

Deno.test("createMemoryStorage() rejects limits that are not positive integers", () => {
  for (const value of [0, -1, 1.5, NaN, -Infinity]) {
    assert.throws(
      () => createMemoryStorage({ maxMutationsPerWrite: value }),
      RangeError,
    );
    assert.throws(
      () => createMemoryStorage({ maxWriteBytes: value }),
      RangeError,
    );
  }
  assert.throws(
    () => createMemoryStorage({ maxWriteBytes: 0 }),
    {
      message:
        "Cannot create memory storage as 'maxWriteBytes' is not a positive integer or Infinity: current value is 0",
    },
  );
});

Deno.test("memory storage names the limit in its StorageError messages", async () => {
  await using storage = createMemoryStorage({
    maxMutationsPerWrite: 2,
    maxWriteBytes: 60,
  });
  const meta = (key: string): Mutation => ({ type: "putMeta", key, value: 1 });
  await assert.rejects(storage.write([meta("a"), meta("b"), meta("c")]), {
    name: "StorageError",
    message:
      "Cannot write 3 mutations as the storage accepts at most 2 per write: current value is 3",
  });
  const big: Mutation = { type: "putMeta", key: "a", value: "x".repeat(30) };
  await assert.rejects(storage.write([big]), (error: unknown) => {
    assert.ok(error instanceof StorageError);
    assert.equal(
      error.message,
      "Cannot write 71 bytes as the storage accepts at most 60 per write: current value is 71",
    );
    return true;
  });
});

Deno.test("memory storage counts bytes as UTF-8 of the mutations' JSON", async () => {
  const mutations: Mutation[] = [
    { type: "putMeta", key: "\u{1F600}", value: "\u00FC\uD800\0" },
  ];
  const bytes = new TextEncoder().encode(JSON.stringify(mutations)).byteLength;
  await using exact = createMemoryStorage({ maxWriteBytes: bytes });
  assert.equal((await exact.write(mutations)).ok, true);
  await using under = createMemoryStorage({ maxWriteBytes: bytes - 1 });
  await assert.rejects(under.write(mutations), StorageError);
});

Deno.test("memory storage rejects malformed mutations with TypeError and commits nothing", async () => {
  await using storage = createMemoryStorage();
  const cyclic: Record<string, unknown> = {};
  cyclic["self"] = cyclic;
  const record = {
    kind: "todo",
    id: "1",
    data: {},
    deleted: false,
    base: null,
    lastOpId: null,
    localUpdatedAt: null,
  };
  const malformed: unknown[] = [
    null,
    { type: "putNothing" },
    { type: "putMeta", key: 1, value: 1 },
    { type: "putMeta", key: "k", value: undefined },
    { type: "putMeta", key: "k", value: NaN },
    { type: "putMeta", key: "k", value: Infinity },
    { type: "putMeta", key: "k", value: 1n },
    { type: "putMeta", key: "k", value: new Date(0) },
    { type: "putMeta", key: "k", value: new Map() },
    { type: "putMeta", key: "k", value: cyclic },
    { type: "putMeta", key: "k", value: [undefined] },
    { type: "putMeta", key: "k", value: 1, expect: 3 },
    { type: "putRecord", record: { ...record, id: 1 } },
    { type: "putRecord", record: { ...record, data: [] } },
    { type: "putRecord", record: { ...record, deleted: "no" } },
    { type: "putRecord", record: { ...record, data: { at: () => 1 } } },
    { type: "putOp", op: { ...op(1), state: "done" } },
    { type: "putOp", op: { ...op(1), opId: undefined } },
    { type: "deleteRecord", kind: "todo" },
    { type: "deleteOp" },
    { type: "deleteMeta", key: null },
  ];
  for (const [index, mutation] of malformed.entries()) {
    await assert.rejects(
      storage.write([
        { type: "putMeta", key: "first", value: 1 },
        mutation as Mutation,
      ]),
      TypeError,
      `malformed mutation ${index}`,
    );
  }
  await assert.rejects(
    storage.write("nope" as unknown as Mutation[]),
    TypeError,
  );
  assert.deepEqual(await storage.getMeta(["first", "k"]), [
    undefined,
    undefined,
  ]);
  await assert.rejects(
    storage.write([{ type: "putMeta", key: "k", value: NaN }]),
    {
      message:
        "Cannot write mutation 0 as 'value' is not a JSON value: current value is NaN",
    },
  );
});

Deno.test("memory storage rejects malformed read options with RangeError or TypeError", async () => {
  await using storage = createMemoryStorage();
  await assert.rejects(storage.listOps({ limit: -1 }), RangeError);
  await assert.rejects(storage.listRecords("todo", { limit: 0.5 }), RangeError);
  await assert.rejects(
    storage.getRecords("todo", [1] as unknown as string[]),
    TypeError,
  );
  await assert.rejects(storage.getMeta("k" as unknown as string[]), TypeError);
});

Deno.test("memory storage rejects reads with an aborted signal", async () => {
  await using storage = createMemoryStorage();
  const reason = new Error("stop");
  const signal = AbortSignal.abort(reason);
  for (
    const promise of [
      storage.getRecords("todo", [], { signal }),
      storage.listRecords("todo", { signal }),
      storage.getOps([], { signal }),
      storage.listOps({ signal }),
      storage.getMeta([], { signal }),
    ]
  ) {
    await assert.rejects(promise, (error: unknown) => error === reason);
  }
});

Deno.test("memory storage names the call in its ClosedError messages", async () => {
  const storage = createMemoryStorage();
  await storage.close();
  await assert.rejects(storage.listRecords("todo"), {
    name: "ClosedError",
    message: "Cannot list records as the storage is closed",
  });
  await assert.rejects(storage.write([]), ClosedError);
});

Deno.test("memory storage drains a 100k-op outbox in order", async () => {
  await using storage = createMemoryStorage({ maxMutationsPerWrite: 1000 });
  const total = 100_000;
  for (let start = 0; start < total; start += 1000) {
    const mutations: Mutation[] = [];
    for (let n = start; n < start + 1000; n++) {
      mutations.push({
        type: "putOp",
        op: op(n, { state: n % 10 === 0 ? "quarantined" : "pending" }),
      });
    }
    assert.equal((await storage.write(mutations)).ok, true);
  }
  // The engine's drain loop: list the first pending ops, push them, delete.
  let drained = 0;
  let previous = "";
  for (;;) {
    const batch = await storage.listOps({ states: ["pending"], limit: 500 });
    if (batch.length === 0) break;
    for (const entry of batch) {
      assert.ok(entry.value.opId > previous);
      previous = entry.value.opId;
    }
    drained += batch.length;
    const result = await storage.write(
      batch.map((entry) => ({
        type: "deleteOp",
        opId: entry.value.opId,
        expect: entry.rev,
      })),
    );
    assert.equal(result.ok, true);
  }
  assert.equal(drained, total * 0.9);
  const left = await storage.listOps();
  assert.equal(left.length, total / 10);
  assert.ok(left.every((entry) => entry.value.state === "quarantined"));
  assert.equal(
    (await storage.listOps({ kinds: ["todo"], id: "10" })).length,
    1000,
  );
});

Deno.test("memory storage keeps records in order under random inserts and deletes", async () => {
  await using storage = createMemoryStorage();
  // A deterministic shuffle, so a failure replays.
  let seed = 42;
  const random = (): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  const live = new Set<string>();
  for (let step = 0; step < 5000; step++) {
    const id = String(Math.floor(random() * 3000));
    const mutation: Mutation = live.has(id) && random() < 0.4
      ? { type: "deleteRecord", kind: "todo", id }
      : {
        type: "putRecord",
        record: {
          kind: "todo",
          id,
          data: {},
          deleted: false,
          base: null,
          lastOpId: null,
          localUpdatedAt: null,
        },
      };
    assert.equal((await storage.write([mutation])).ok, true);
    if (mutation.type === "deleteRecord") live.delete(id);
    else live.add(id);
  }
  const ids = (await storage.listRecords("todo")).map((entry) =>
    entry.value.id
  );
  assert.deepEqual(ids, [...live].sort());
  const after = ids[Math.floor(ids.length / 2)]!;
  const rest = await storage.listRecords("todo", { after, limit: 5 });
  assert.deepEqual(
    rest.map((entry) => entry.value.id),
    ids.slice(ids.indexOf(after) + 1, ids.indexOf(after) + 6),
  );
});

Deno.test("memory storage a value nested deeper than 256 levels is refused with a StorageError", async () => {
  await using storage = createMemoryStorage();
  let deep: JsonValue = 1;
  for (let level = 0; level < 100_000; level++) deep = { deep };
  for (
    const [index, mutation] of [
      {
        type: "putRecord",
        record: {
          kind: "todo",
          id: "a",
          data: { deep },
          deleted: false,
          base: null,
          lastOpId: null,
          localUpdatedAt: null,
        },
      },
      { type: "putOp", op: { ...op(1), payload: { deep } } },
      { type: "putMeta", key: "m", value: deep },
    ].entries()
  ) {
    await assert.rejects(
      storage.write([
        { type: "putMeta", key: "before", value: index },
        mutation as Mutation,
      ]),
      {
        name: "StorageError",
        message: `Cannot write mutation 1 as '${
          ["record", "op", "value"][index]
        }' nests more than 256 levels deep: current value is at least 257 levels`,
      },
    );
  }
  assert.deepEqual(await storage.getMeta(["before"]), [undefined]);
});

/** `value` nested in `levels` objects: `levels` levels of JSON. */
function nested(levels: number): JsonValue {
  let value: JsonValue = 1;
  for (let level = 0; level < levels; level++) value = { value };
  return value;
}

Deno.test(
  "memory storage holds 256 levels and refuses 257, whichever way it copies",
  withTimeout(10_000, async () => {
    await using storage = createMemoryStorage();
    assert.ok((await storage.write([putMeta("deepest", nested(256))])).ok);
    const [read] = await storage.getMeta(["deepest"]);
    assert.deepEqual(read?.value, nested(256));
    await assert.rejects(storage.write([putMeta("deeper", nested(257))]), {
      name: "StorageError",
      message:
        "Cannot write mutation 0 as 'value' nests more than 256 levels deep: current value is at least 257 levels",
    });
  }),
);

Deno.test(
  "memory storage copies what JSON keeps: symbol keys are dropped, __proto__ stays data",
  withTimeout(10_000, async () => {
    await using storage = createMemoryStorage();
    const hidden = Symbol("hidden");
    const value = {
      list: [{ [hidden]: 1, kept: true }],
      [hidden]: "gone",
    } as unknown as JsonValue;
    const proto = JSON.parse('{"__proto__":{"polluted":true},"n":1}');
    assert.ok(
      (await storage.write([
        putMeta("symbols", value),
        putMeta("proto", proto),
      ]))
        .ok,
    );
    const [symbols, stored] = await storage.getMeta(["symbols", "proto"]);
    assert.deepEqual(symbols?.value, { list: [{ kept: true }] });
    assert.deepEqual(
      Object.getOwnPropertySymbols(
        (symbols?.value as { list: object[] }).list[0],
      ),
      [],
    );
    assert.ok(Object.hasOwn(stored?.value as object, "__proto__"));
    assert.equal(Object.getPrototypeOf(stored?.value), Object.prototype);
    assert.equal(({} as { polluted?: boolean }).polluted, undefined);
  }),
);

Deno.test(
  "memory storage refuses a cycle and a hole with the path, committing nothing",
  withTimeout(10_000, async () => {
    await using storage = createMemoryStorage();
    const cycle: Record<string, unknown> = { n: 1 };
    cycle["self"] = { back: cycle };
    await assert.rejects(
      storage.write([
        putMeta("before", 1),
        putMeta("cycle", cycle as JsonValue),
      ]),
      { name: "TypeError", message: /'value\.self\.back' is not a JSON value/ },
    );
    // deno-lint-ignore no-sparse-arrays
    const holes = [1, , 3] as JsonValue;
    await assert.rejects(storage.write([putMeta("holes", { holes })]), {
      name: "TypeError",
      message: /'value\.holes\.1' is not a JSON value/,
    });
    assert.deepEqual(await storage.getMeta(["before", "cycle"]), [
      undefined,
      undefined,
    ]);
  }),
);

function putMeta(key: string, value: JsonValue): Mutation {
  return { type: "putMeta", key, value };
}

Deno.test(
  "memory storage returns each item's revision after the write, when an item is removed and written again in it",
  withTimeout(10_000, async () => {
    await using storage = createMemoryStorage();
    const record = (id: string, n: number) => ({
      kind: "k",
      id,
      data: { n },
      deleted: false,
      base: null,
      lastOpId: null,
      localUpdatedAt: null,
    });
    const first = await storage.write([
      { type: "putRecord", record: record("a", 1) },
      { type: "putOp", op: op(1) },
      { type: "putMeta", key: "m", value: 1 },
    ]);
    assert.ok(first.ok);
    // One space per write: each must notice its own removal.
    const records = await storage.write([
      { type: "deleteRecord", kind: "k", id: "a" },
      { type: "putRecord", record: record("a", 2) },
      { type: "putRecord", record: record("b", 3) },
    ]);
    const ops = await storage.write([
      { type: "deleteOp", opId: op(1).opId },
      { type: "putOp", op: op(1, { payload: { n: 2 } }) },
      { type: "putOp", op: op(2) },
    ]);
    const meta = await storage.write([
      { type: "deleteMeta", key: "m" },
      { type: "putMeta", key: "m", value: 2 },
      { type: "putMeta", key: "n", value: 3 },
    ]);
    assert.ok(records.ok && ops.ok && meta.ok);
    const [a, b] = await storage.getRecords("k", ["a", "b"]);
    const [o1, o2] = await storage.getOps([op(1).opId, op(2).opId]);
    const [m, n] = await storage.getMeta(["m", "n"]);
    assert.deepEqual(records.revs, [a?.rev, a?.rev, b?.rev]);
    assert.deepEqual(ops.revs, [o1?.rev, o1?.rev, o2?.rev]);
    assert.deepEqual(meta.revs, [m?.rev, m?.rev, n?.rev]);
    assert.notEqual(first.revs[0], a?.rev);
  }),
);

Deno.test(
  "memory storage keeps ops in id order whether they arrive in order or not",
  withTimeout(10_000, async () => {
    await using storage = createMemoryStorage();
    const ascending = Array.from({ length: 2100 }, (_, i) => op(2 * i + 10));
    assert.ok(
      (await storage.write(ascending.map((o) => ({
        type: "putOp" as const,
        op: o,
      })))).ok,
    );
    // Below the last, between two, and below all.
    for (const n of [4001, 2001, 11, 3, 4300]) {
      assert.ok((await storage.write([{ type: "putOp", op: op(n) }])).ok);
    }
    const ids = (await storage.listOps()).map((entry) => entry.value.opId);
    assert.equal(ids.length, 2105);
    assert.deepEqual(ids, [...ids].sort());
    const after = await storage.listOps({ after: op(2001).opId, limit: 2 });
    assert.deepEqual(after.map((entry) => entry.value.opId), [
      op(2002).opId,
      op(2004).opId,
    ]);
  }),
);
