/**
 * Write-time limits (CONTRACT.md §Limits): a write whose id or nesting the
 * wire contract refuses is refused locally with a `ValidationError`, and
 * nothing is queued; a kind the contract refuses cannot be registered.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type StandardSchemaV1, SyncEngine, ValidationError } from "../mod.ts";
import type { JsonObject, JsonValue } from "../src/json.ts";
import { WIRE_LIMITS } from "../src/limits.ts";
import type { Transport } from "../src/transport.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { createClient, startServer } from "./_harness.ts";
import { withTimeout } from "./_timeout.ts";

/** A transport nothing is sent to: these tests never sync. */
const offline: Transport = {
  pull: () => Promise.reject(new Error("offline")),
  push: () => Promise.reject(new Error("offline")),
  close: () => Promise.resolve(),
  [Symbol.asyncDispose]: () => Promise.resolve(),
};

function open() {
  const storage = createMemoryStorage();
  const engine = new SyncEngine({ storage, transport: offline });
  return {
    storage,
    engine,
    async [Symbol.asyncDispose]() {
      await engine.close();
      await storage.close();
    },
  };
}

function nested(depth: number): JsonValue {
  let value: JsonValue = 1;
  for (let i = 0; i < depth; i++) value = { n: value };
  return value;
}

const BAD_IDS: [string, string, RegExp][] = [
  ["a lone high surrogate", "a\ud800b", /lone surrogate at index 1/],
  ["a lone low surrogate", "\udc00", /lone surrogate at index 0/],
  ["70,000 characters", "x".repeat(70_000), /longer than 256/],
  ["300 characters", "y".repeat(300), /longer than 256 characters \(300\)/],
  ["257 astral characters", "😀".repeat(257), /longer than 256/],
  ["a dot segment", ".", /dot segment/],
  ["two dots", "..", /dot segment/],
  ["the empty string", "", /empty/],
];

async function assertNothingQueued(
  client: ReturnType<typeof open>,
): Promise<void> {
  assert.equal(await client.engine.outbox.count(), 0);
  const records = await client.storage.listRecords("items", {
    includeDeleted: true,
  });
  assert.deepEqual(records, []);
}

Deno.test("table: put() refuses an id the wire limits refuse, with a ValidationError at the id field", async (t) => {
  for (const [name, id, reason] of BAD_IDS) {
    await t.step(name, async () => {
      await using client = open();
      const items = client.engine.table("items");
      await assert.rejects(items.put({ id, v: 1 }), (error: unknown) => {
        assert.ok(error instanceof ValidationError, String(error));
        assert.equal(error.category, "validation");
        assert.match(
          error.message,
          /^Cannot write record into 'items' as its "id" is invalid, /,
        );
        assert.match(error.message, reason);
        assert.ok(error.message.length < 300, "the message stays short");
        assert.deepEqual(error.issues[0]?.path, ["id"]);
        return true;
      });
      await assertNothingQueued(client);
    });
  }
});

Deno.test("table: put() checks the id through the table's id field", async () => {
  await using client = open();
  const people = client.engine.table("items", { fields: { id: "uuid" } });
  await assert.rejects(
    people.put({ uuid: "z".repeat(257), id: "fine" }),
    (error: unknown) => {
      assert.ok(error instanceof ValidationError);
      assert.deepEqual(error.issues[0]?.path, ["uuid"]);
      return true;
    },
  );
  await assertNothingQueued(client);
});

Deno.test("table: the longest id the limits allow, astral characters included, is written and read back", async () => {
  await using client = open();
  const items = client.engine.table("items");
  const ids = [
    "😀".repeat(WIRE_LIMITS.maxIdLength),
    "z".repeat(WIRE_LIMITS.maxIdLength),
    "a/b?c#d %",
    "...",
  ];
  for (const id of ids) await items.put({ id, v: 1 });
  for (const id of ids) assert.equal((await items.get(id))?.id, id);
  assert.equal(await client.engine.outbox.count(), ids.length);
});

Deno.test("table: update() and delete() refuse an id the wire limits refuse", async () => {
  await using client = open();
  const items = client.engine.table("items");
  for (const [name, id] of BAD_IDS) {
    if (id === "") continue; // A TypeError, as before: not a usable id at all.
    await assert.rejects(items.update(id, { v: 2 }), ValidationError, name);
    await assert.rejects(items.delete(id), (error: unknown) => {
      assert.ok(error instanceof ValidationError, `${name}: ${error}`);
      assert.deepEqual(error.issues[0]?.path, ["id"]);
      return true;
    });
  }
  await assert.rejects(items.delete(""), TypeError);
  await assertNothingQueued(client);
});

Deno.test("table: a record nested deeper than the limit is refused before it is copied or validated", async () => {
  await using client = open();
  let validated = 0;
  const schema: StandardSchemaV1<unknown, JsonObject> = {
    "~standard": {
      version: 1,
      vendor: "test",
      validate(value) {
        validated++;
        return { value: value as JsonObject };
      },
    },
  };
  const plain = client.engine.table("items");
  const checked = client.engine.table("checked", { schema });
  for (const table of [plain, checked]) {
    await assert.rejects(
      table.put({ id: "deep", d: nested(5_000) }),
      (error: unknown) => {
        assert.ok(error instanceof ValidationError, String(error));
        assert.match(error.message, /nests deeper than 64 levels at "d\.n\.n/);
        const path = error.issues[0]!.path;
        assert.equal(path.length, WIRE_LIMITS.maxDepth);
        assert.deepEqual(path.slice(0, 3), ["d", "n", "n"]);
        return true;
      },
    );
  }
  assert.equal(validated, 0, "the schema never saw the deep record");
  // The deepest record allowed: 64 levels, the record itself the first.
  await plain.put({ id: "ok", d: nested(WIRE_LIMITS.maxDepth - 1) });
  await assert.rejects(
    plain.put({ id: "over", d: nested(WIRE_LIMITS.maxDepth) }),
    ValidationError,
  );
  assert.equal(await client.engine.outbox.count(), 1);
});

Deno.test("table: a schema whose output nests too deep is refused too", async () => {
  await using client = open();
  const schema: StandardSchemaV1<unknown, JsonObject> = {
    "~standard": {
      version: 1,
      vendor: "test",
      validate: (value) => ({
        value: { ...(value as JsonObject), d: nested(100) },
      }),
    },
  };
  const items = client.engine.table("items", { schema });
  await assert.rejects(items.put({ id: "a" }), ValidationError);
  assert.equal(await client.engine.outbox.count(), 0);
});

Deno.test("table: a cyclic record is refused as too deep, not a stack overflow", async () => {
  await using client = open();
  const items = client.engine.table("items");
  const record: Record<string, unknown> = { id: "c" };
  record.self = record;
  await assert.rejects(items.put(record as JsonObject), ValidationError);
  assert.equal(await client.engine.outbox.count(), 0);
});

Deno.test("table: update() refuses a patch that nests the record too deep and leaves it as it was", async () => {
  await using client = open();
  const items = client.engine.table("items");
  await items.put({ id: "r", v: 1 });
  await assert.rejects(
    items.update("r", { v: nested(5_000) } as Partial<JsonObject>),
    ValidationError,
  );
  assert.deepEqual(await items.get("r"), { id: "r", v: 1 });
  assert.equal(await client.engine.outbox.count(), 1);
});

Deno.test("table: putMany() refuses the whole batch when one record breaks the limits", async () => {
  await using client = open();
  const items = client.engine.table("items");
  const batch: JsonObject[] = Array.from(
    { length: 20 },
    (_, i) => ({ id: `ok${i}` }),
  );
  for (
    const bad of [{ id: "\ud800" }, { id: "q", d: nested(1_000) }]
  ) {
    await assert.rejects(
      items.putMany([...batch.slice(0, 10), bad, ...batch.slice(10)]),
      ValidationError,
    );
    await assertNothingQueued(client);
  }
});

Deno.test("engine: table() refuses a kind the wire limits refuse with a TypeError", () => {
  const storage = createMemoryStorage();
  const engine = new SyncEngine({ storage, transport: offline });
  const bad: [unknown, RegExp][] = [
    ["", /empty/],
    ["a/b", /outside \[A-Za-z0-9_-\]/],
    ["with space", /outside/],
    ["ünï", /outside/],
    ["k".repeat(65), /longer than 64/],
    ["health", /reserved route name/],
    ["batch", /reserved/],
    ["live", /reserved/],
    [42, /not a string/],
  ];
  for (const [kind, reason] of bad) {
    assert.throws(
      () => engine.table(kind as string),
      (error: unknown) => {
        assert.ok(error instanceof TypeError, String(kind));
        assert.match(
          error.message,
          /^Cannot register table as its kind is invalid, /,
        );
        assert.match(error.message, reason);
        return true;
      },
    );
  }
  assert.equal(engine.table("k".repeat(64)).kind, "k".repeat(64));
  assert.equal(engine.table("todo_items-v2").kind, "todo_items-v2");
});

Deno.test("table: a typed table's records carry the server's updated_at in their type", async () => {
  await using server = startServer();
  await using client = createClient(server.url);
  type Todo = { id: string; title: string };
  const todos = client.engine.table<Todo>("todos");
  const written = await todos.put({ id: "t1", title: "write" });
  // Before the server has it, the server's fields are absent (and typed so).
  const before: string | undefined = written.updated_at;
  assert.equal(before, undefined);
  await client.engine.sync();
  const read = await todos.get("t1");
  const after: string | undefined = read?.updated_at;
  assert.equal(typeof after, "string");
  assert.equal(read?.deleted_at, undefined);
});

Deno.test(
  "table: put() and putMany() store what JSON keeps of a record, sharing nothing with it",
  withTimeout(10_000, async () => {
    await using client = open();
    const items = client.engine.table("items");
    const hidden = Symbol("hidden");
    const proto = JSON.parse('{"__proto__":{"polluted":true}}').__proto__;
    // Each with one unusual part only, so that none hides another (a record
    // with an `undefined` member is copied the careful way as a whole).
    const make = (id: string, part: number) =>
      ({
        id,
        list: [part === 0 ? { [hidden]: 1, kept: true } : { kept: true }],
        ...(part === 1 ? { [hidden]: "dropped" } : {}),
        ...(part === 2 ? { gone: undefined } : {}),
        nested: part === 3
          ? JSON.parse(`{"__proto__":{"n":1},"m":2}`)
          : JSON.parse(`{"m":2}`),
        proto,
      }) as unknown as JsonObject;
    const singles = [0, 1, 2, 3, 4].map((part) => make(`a${part}`, part));
    const many = [0, 1, 2, 3, 4].map((part) => make(`b${part}`, part));
    const written = [];
    for (const single of singles) written.push(await items.put(single));
    written.push(...await items.putMany(many));
    // The caller changes its objects afterwards: nothing written changes.
    for (const input of [...singles, ...many]) {
      (input["list"] as JsonObject[])[0]!["kept"] = false;
      (input["nested"] as JsonObject)["m"] = 3;
    }
    const stored = await items.list();
    assert.equal(stored.length, 10);
    for (const record of [...written, ...stored]) {
      const data = record as unknown as JsonObject;
      assert.deepEqual(Object.keys(data), ["id", "list", "nested", "proto"]);
      assert.deepEqual(Object.getOwnPropertySymbols(data), []);
      const list = data["list"] as JsonObject[];
      assert.deepEqual(Object.getOwnPropertySymbols(list[0]), []);
      assert.equal(list[0]!["kept"], true);
      const nested = data["nested"] as JsonObject;
      if (String(data["id"]).endsWith("3")) {
        assert.ok(Object.hasOwn(nested, "__proto__"), "__proto__ stays a key");
        assert.deepEqual(nested["__proto__"], { n: 1 });
      }
      assert.equal(Object.getPrototypeOf(nested), Object.prototype);
      assert.equal(nested["m"], 2);
      assert.deepEqual(data["proto"], { polluted: true });
    }
    assert.equal(({} as { polluted?: boolean }).polluted, undefined);
  }),
);

Deno.test(
  "table: putMany() gives each create the changed fields of its own keys, whatever the records around it",
  withTimeout(10_000, async () => {
    await using client = open();
    const items = client.engine.table("items");
    await items.putMany([
      { id: "a", y: 1, x: 1 },
      { id: "b", y: 1, x: 1 },
      { id: "c", x: 1, y: 1 },
      { id: "d", x: 1 },
      { id: "e", x: 1, y: undefined } as unknown as JsonObject,
      { id: "f", x: 1, y: 1, updated_at: "2025-01-01T00:00:00.000Z" },
      { id: "g", x: 1, z: 1 },
    ]);
    await items.put({ id: "h", x: 1, z: 1 });
    await items.put({ id: "i", x: 1, w: 1 });
    const ops = await client.engine.outbox.list();
    assert.deepEqual(
      Object.fromEntries(ops.map((op) => [op.id, op.changedFields])),
      {
        a: ["x", "y"],
        b: ["x", "y"],
        c: ["x", "y"],
        d: ["x"],
        e: ["x"],
        f: ["x", "y"],
        g: ["x", "z"],
        h: ["x", "z"],
        i: ["w", "x"],
      },
    );
  }),
);
