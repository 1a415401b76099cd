/**
 * A value with a `toJSON` method is refused by every storage's JSON walk
 * (`storage/_json.ts`): `JSON.stringify` would write what the method
 * returns instead, so SQLite and KV, which serialise the value after
 * checking it, stored something never checked (300 levels deep, say),
 * while the memory storage, which copies members, stored the members. A
 * method out of sight of the value's keys (non-enumerable, or an array
 * subclass's) is caught too; a `toJSON` member that is data is data.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Mutation } from "../src/storage.ts";
import { BACKENDS } from "./_harness.ts";
import { withTimeout } from "./_timeout.ts";

class Listed extends Array<number> {
  toJSON(): string {
    return "not the items";
  }
}

/** Values whose JSON is not their members', each at a path. */
function sneaky(): [string, unknown][] {
  const hidden = { a: 1 };
  Object.defineProperty(hidden, "toJSON", {
    value: () => ({ b: 2 }),
    enumerable: false,
  });
  const ownOnArray = [1, 2];
  Object.defineProperty(ownOnArray, "toJSON", {
    value: () => "x",
    enumerable: false,
  });
  const listed = new Listed();
  listed.push(1, 2);
  return [
    ["hidden toJSON at the root", hidden],
    ["hidden toJSON inside", { deep: [{ hidden }] }],
    ["toJSON on an array", { list: ownOnArray }],
    ["an array subclass's toJSON", { list: listed }],
  ];
}

const record = {
  kind: "todo",
  id: "1",
  deleted: false,
  base: null,
  lastOpId: null,
  localUpdatedAt: null,
};

for (const { name, open } of BACKENDS) {
  Deno.test(
    `${name}: write() refuses a value with a toJSON method and commits nothing`,
    withTimeout(10_000, async () => {
      await using storage = await open();
      for (const [what, value] of sneaky()) {
        const writes: Mutation[][] = [
          [{ type: "putMeta", key: "k", value: value as never }],
          [{
            type: "putRecord",
            record: { ...record, data: { v: value } as never },
          }],
        ];
        for (const mutations of writes) {
          await assert.rejects(
            storage.write([
              { type: "putMeta", key: "first", value: 1 },
              ...mutations,
            ]),
            (error: Error) => {
              assert.ok(error instanceof TypeError, `${what}: ${error}`);
              assert.match(error.message, /has a toJSON method/, what);
              return true;
            },
          );
        }
      }
      assert.deepEqual(
        (await storage.getMeta(["first", "k"])).map((entry) => entry?.value),
        [undefined, undefined],
      );
      assert.deepEqual(await storage.getRecords("todo", ["1"]), [undefined]);
    }),
  );

  Deno.test(
    `${name}: a toJSON member that is data is stored as data`,
    withTimeout(10_000, async () => {
      await using storage = await open();
      const value = { toJSON: "a string", nested: { toJSON: [1] } };
      await storage.write([{ type: "putMeta", key: "k", value }]);
      assert.deepEqual((await storage.getMeta(["k"]))[0]?.value, value);
    }),
  );
}

Deno.test(
  "every storage refuses a toJSON method with the same message",
  withTimeout(10_000, async () => {
    const messages: string[][] = [];
    for (const { open } of BACKENDS) {
      await using storage = await open();
      const seen: string[] = [];
      for (const [, value] of sneaky()) {
        try {
          await storage.write([{
            type: "putMeta",
            key: "k",
            value: value as never,
          }]);
          seen.push("accepted");
        } catch (error) {
          seen.push((error as Error).message);
        }
      }
      messages.push(seen);
    }
    assert.deepEqual(messages[1], messages[0]);
    assert.deepEqual(messages[2], messages[0]);
    assert.match(
      messages[0]![2]!,
      /^Cannot write mutation 0 as 'value\.list' has a toJSON method/,
    );
  }),
);
