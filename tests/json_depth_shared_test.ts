/**
 * The nesting limit of the storages' JSON walk (`storage/_json.ts`,
 * `MAX_DEPTH`) holds for an object a write passes twice: the walk remembers
 * objects it already checked (with how many levels they nest) or copied,
 * and one met again deeper than it was first met is held to the limit
 * there, not taken as checked (a value one level past the limit was once
 * accepted that way). Memory storage copies (`copyJson`); SQLite and KV
 * check in place (`checkJson`).
 *
 * @module
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { createMemoryStorage } from "../storage/memory.ts";
import { createSqliteStorage } from "../storage/sqlite.ts";
import { openKvStorage } from "../storage/kv.ts";
import { MAX_DEPTH } from "../storage/_json.ts";
import { StorageError } from "../src/errors.ts";
import type { JsonValue } from "../src/json.ts";
import type { Mutation, Storage } from "../src/storage.ts";
import { withTimeout } from "./_timeout.ts";

/** Objects nested `depth` levels deep, the value itself level 1. */
function nest(depth: number): JsonValue {
  let value: JsonValue = { n: 0 };
  for (let level = 1; level < depth; level++) value = { n: value };
  return value;
}

const storages: [string, () => Promise<Storage>][] = [
  ["memory", () => Promise.resolve(createMemoryStorage())],
  [
    "SQLite",
    () =>
      Promise.resolve(
        createSqliteStorage(new DatabaseSync(":memory:"), {
          closeDatabase: true,
        }),
      ),
  ],
  ["KV", () => openKvStorage(":memory:")],
];

for (const [name, open] of storages) {
  Deno.test(
    `json depth (${name}): an object met first near the root and again deeper is still held to the limit`,
    withTimeout(10_000, async () => {
      await using storage = await open();
      // The record is level 1, its data level 2: `deep` fits there,
      const deep = nest(MAX_DEPTH - 1);
      const record = {
        kind: "k",
        id: "a",
        data: deep,
        deleted: false,
        base: null,
        lastOpId: null,
        localUpdatedAt: null,
      } as unknown as Mutation & { type: "putRecord" };
      // ...but not two levels further down in a meta value.
      const tooDeep: JsonValue = { a: { b: deep } };
      for (
        const mutations of [
          [{ type: "putMeta", key: "m", value: tooDeep }],
          [{ type: "putRecord", record }, {
            type: "putMeta",
            key: "m",
            value: tooDeep,
          }],
        ] as Mutation[][]
      ) {
        await assert.rejects(
          () => storage.write(mutations),
          (error: unknown) =>
            error instanceof StorageError && /deep/.test(error.message),
        );
        assert.equal((await storage.getMeta(["m"]))[0], undefined);
      }
      // The same object at the same depth twice is fine.
      const ok = await storage.write([
        { type: "putRecord", record } as unknown as Mutation,
        { type: "putMeta", key: "m", value: { a: deep } },
      ]);
      assert.equal(ok.ok, true);
    }),
  );
}

for (const [name, open] of storages) {
  Deno.test(
    `json depth (${name}): a record's data shared with its base's data is held to the limit at the base's level, and accepted right at it`,
    withTimeout(10_000, async () => {
      await using storage = await open();
      // The record is level 1, its data and its base level 2, the base's
      // data level 3: `data` reaches the limit exactly there.
      const record = (data: JsonValue) => ({
        type: "putRecord",
        record: {
          kind: "k",
          id: "a",
          data,
          deleted: false,
          base: { data, updatedAt: "2025-01-01T00:00:00.000Z", deleted: false },
          lastOpId: null,
          localUpdatedAt: null,
        },
      } as unknown as Mutation);
      // Objects only, and the levels passing through an array.
      const shapes: ((levels: number) => JsonValue)[] = [
        nest,
        (levels) => ({ list: [nest(levels - 2)] }),
      ];
      for (const shape of shapes) {
        const fits = shape(MAX_DEPTH - 2);
        assert.equal((await storage.write([record(fits)])).ok, true);
        // One level more still fits as the data, not as the base's data.
        await assert.rejects(
          () => storage.write([record(shape(MAX_DEPTH - 1))]),
          (error: unknown) =>
            error instanceof StorageError && /deep/.test(error.message),
        );
        const [stored] = await storage.getRecords("k", ["a"]);
        assert.deepEqual(stored?.value.data, fits);
      }
    }),
  );
}

for (const [name, open] of storages) {
  Deno.test(
    `json depth (${name}): an object whose deep member comes before a shallow shared one is still held to the limit deeper`,
    withTimeout(10_000, async () => {
      await using storage = await open();
      // As a record's data (level 2), `shared` reaches the limit through
      // `deep`; its member `flat` after it is an object the walk may share.
      const shared: JsonValue = { deep: nest(MAX_DEPTH - 2), flat: { n: 0 } };
      const record = {
        type: "putRecord",
        record: {
          kind: "k",
          id: "a",
          data: shared,
          deleted: false,
          base: null,
          lastOpId: null,
          localUpdatedAt: null,
        },
      } as unknown as Mutation;
      assert.equal((await storage.write([record])).ok, true);
      // One level further down, in the same write, it nests past it.
      await assert.rejects(
        () =>
          storage.write([record, {
            type: "putMeta",
            key: "m",
            value: { a: { b: shared } },
          }]),
        (error: unknown) =>
          error instanceof StorageError && /deep/.test(error.message),
      );
      assert.equal((await storage.getMeta(["m"]))[0], undefined);
    }),
  );
}
