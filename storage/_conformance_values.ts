/**
 * The storage conformance suite: Values round-trip: absent items read as `undefined`, falsy values,
 * every JSON value, NUL, emoji, lone surrogates, extreme numbers, `-0`,
 * `__proto__` keys, and no value shared with the caller.
 *
 * Part of the published suite (`storage/conformance.ts`), not exported
 * from the package on its own; it depends only on the storage contract.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { JsonObject, JsonValue } from "../src/json.ts";
import {
  type Case,
  commit,
  getMeta,
  getOp,
  getRecord,
  KIND,
  op,
  opId,
  putMeta,
  putOp,
  putRecord,
  record,
  revOf,
  trickyData,
} from "./_conformance_kit.ts";

/** JSON text with keys that must stay data, never reach a prototype. */
const PROTO_JSON = '{"__proto__":{"polluted":true},"constructor":' +
  '{"prototype":{"polluted":true}},"prototype":1,"toString":"x",' +
  '"hasOwnProperty":0,"nested":[{"__proto__":null},{"__proto__":[1]}]}';

/** Asserts that a number read back is zero, of either sign. */
function assertZero(value: unknown): void {
  assert.ok(
    Object.is(value, 0) || Object.is(value, -0),
    `Expected 0 or -0: current value is ${Deno.inspect(value)}`,
  );
}

/** The cases on values, in order. */
export const VALUE_CASES: readonly Case[] = [
  {
    clause: "getRecords() returns undefined for absent records, in input order",
    async run({ storage }): Promise<void> {
      const a = record(KIND, "a", { data: { name: "a" } });
      const b = record(KIND, "b", { data: { name: "b" } });
      const c = record("other", "c", { data: { name: "c" } });
      await commit(storage, [putRecord(a), putRecord(b), putRecord(c)]);
      const entries = await storage.getRecords(KIND, ["b", "x", "a", "b", "c"]);
      assert.deepEqual(entries.map((entry) => entry?.value), [
        b,
        undefined,
        a,
        b,
        undefined,
      ]);
      assert.equal(entries[0]?.rev, entries[3]?.rev);
      assert.deepEqual(await storage.getRecords(KIND, []), []);
      assert.deepEqual(await storage.getRecords("missing", ["a"]), [undefined]);
    },
  },
  {
    clause:
      "getOps() and getMeta() return undefined for absent items, in input order",
    async run({ storage }): Promise<void> {
      await commit(storage, [
        putOp(op(opId(1))),
        putOp(op(opId(2))),
        putMeta("a", "A"),
        putMeta("b", "B"),
      ]);
      const ops = await storage.getOps([opId(2), opId(3), opId(1), opId(2)]);
      assert.deepEqual(ops.map((entry) => entry?.value), [
        op(opId(2)),
        undefined,
        op(opId(1)),
        op(opId(2)),
      ]);
      const meta = await storage.getMeta(["b", "c", "a", "b"]);
      assert.deepEqual(meta.map((entry) => entry?.value), [
        "B",
        undefined,
        "A",
        "B",
      ]);
      assert.deepEqual(await storage.getOps([]), []);
      assert.deepEqual(await storage.getMeta([]), []);
    },
  },
  {
    clause: "records round-trip with falsy values",
    async run({ storage }): Promise<void> {
      const records = [
        record(KIND, "", {
          data: {
            "": "",
            zero: 0,
            no: false,
            nil: null,
            list: [],
            object: {},
            nested: ["", 0, false, null, [], {}],
          },
        }),
        record(KIND, "0", {
          deleted: true,
          base: { data: {}, updatedAt: "", deleted: false },
          lastOpId: "",
          localUpdatedAt: 0,
        }),
        record("", "false", {
          data: { id: "false" },
          base: {
            data: { n: 0 },
            updatedAt: "1970-01-01T00:00:00.000Z",
            deleted: true,
          },
          lastOpId: opId(0),
          localUpdatedAt: 0,
        }),
      ];
      await commit(storage, records.map((value) => putRecord(value, null)));
      for (const value of records) {
        const entry = await getRecord(storage, value.kind, value.id);
        assert.deepEqual(entry?.value, value);
        revOf(entry);
      }
      assert.deepEqual(
        (await storage.listRecords(KIND, { includeDeleted: true })).map((
          entry,
        ) => entry.value),
        [records[0], records[1]],
      );
    },
  },
  {
    clause: "ops round-trip with falsy values",
    async run({ storage }): Promise<void> {
      const ops = [
        op(opId(1), {
          kind: "",
          id: "",
          type: "delete",
          payload: null,
          baseUpdatedAt: null,
          changedFields: null,
        }),
        op(opId(2), {
          payload: { "": "", n: 0, f: false, z: null },
          baseUpdatedAt: "",
          changedFields: [],
          state: "parked",
          error: {
            category: "",
            message: "",
            status: null,
            code: null,
            body: null,
            at: 0,
          },
          conflict: {
            server: null,
            serverUpdatedAt: null,
            local: null,
            base: null,
            detectedAt: 0,
          },
        }),
        op(opId(3), {
          changedFields: ["", "0"],
          state: "quarantined",
          force: true,
          attempts: 3,
          revision: 2,
          error: {
            category: "rejected",
            message: "x",
            status: 0,
            code: "",
            body: false,
            at: 1,
          },
          conflict: {
            server: {},
            serverUpdatedAt: "",
            local: {},
            base: {},
            detectedAt: 0,
          },
        }),
      ];
      await commit(storage, ops.map((value) => putOp(value, null)));
      const entries = await storage.getOps(ops.map((value) => value.opId));
      assert.deepEqual(entries.map((entry) => entry?.value), ops);
      entries.forEach(revOf);
      assert.deepEqual(
        (await storage.listOps()).map((entry) => entry.value),
        ops,
      );
    },
  },
  {
    clause: "meta round-trips every JSON value, falsy ones included",
    async run({ storage }): Promise<void> {
      const entries: [string, JsonValue][] = [
        ["", ""],
        ["0", 0],
        ["false", false],
        ["null", null],
        ["[]", []],
        ["{}", {}],
        ["true", true],
        ["number", -1.5],
        ["string", "x"],
        ["nested", { a: [0, "", false, null, {}, []] }],
      ];
      await commit(
        storage,
        entries.map(([key, value]) => putMeta(key, value, null)),
      );
      const keys = entries.map(([key]) => key);
      const read = await storage.getMeta([...keys, "absent"]);
      assert.deepEqual(read.map((entry) => entry?.value), [
        ...entries.map(([, value]) => value),
        undefined,
      ]);
      read.slice(0, -1).forEach(revOf);
    },
  },
  {
    clause:
      "values with NUL, emoji, lone surrogates and extreme numbers round-trip",
    async run({ storage }): Promise<void> {
      const data = trickyData();
      const value = record(KIND, "tricky", { data });
      const tricky = op(opId(1), { payload: data });
      await commit(storage, [
        putRecord(value),
        putOp(tricky),
        putMeta("tricky", data),
      ]);
      assert.deepEqual(
        (await getRecord(storage, KIND, "tricky"))?.value,
        value,
      );
      assert.deepEqual(
        (await storage.listRecords(KIND)).map((entry) => entry.value),
        [value],
      );
      assert.deepEqual((await getOp(storage, opId(1)))?.value, tricky);
      assert.deepEqual((await getMeta(storage, "tricky"))?.value, data);
    },
  },
  {
    clause: "numbers round-trip exactly, -0 as 0 or -0",
    async run({ storage }): Promise<void> {
      // Values are equal as JSON: JSON.stringify writes -0 as 0.
      const exact = {
        maxSafe: Number.MAX_SAFE_INTEGER,
        tiny: 1e-300,
        negative: -1.5,
      };
      const data: JsonObject = {
        negativeZero: -0,
        ...exact,
        list: [-0, ...Object.values(exact)],
      };
      await commit(storage, [
        putRecord(record(KIND, "numbers", { data })),
        putOp(op(opId(1), { payload: data })),
        putMeta("numbers", data),
        putMeta("negativeZero", -0),
      ]);
      const reads: unknown[] = [
        (await getRecord(storage, KIND, "numbers"))?.value.data,
        (await storage.listRecords(KIND))[0]?.value.data,
        (await getOp(storage, opId(1)))?.value.payload,
        (await storage.listOps())[0]?.value.payload,
        (await getMeta(storage, "numbers"))?.value,
      ];
      for (const read of reads) {
        const { negativeZero, list, ...rest } = read as {
          negativeZero: unknown;
          list: unknown[];
        };
        assertZero(negativeZero);
        // Strict deep equality compares numbers with Object.is.
        assert.deepEqual(rest, exact);
        assert.equal(list.length, 4);
        assertZero(list[0]);
        assert.deepEqual(list.slice(1), Object.values(exact));
      }
      assertZero((await getMeta(storage, "negativeZero"))?.value);
    },
  },
  {
    clause: "__proto__ and constructor keys survive as data",
    async run({ storage }): Promise<void> {
      const data = JSON.parse(PROTO_JSON) as JsonObject;
      const value = record(KIND, "__proto__", { data });
      const proto = op("__proto__", { id: "__proto__", payload: data });
      await commit(storage, [
        putRecord(value),
        putOp(proto),
        putMeta("__proto__", data),
        putMeta("constructor", [data]),
      ]);
      const reads: unknown[] = [
        (await getRecord(storage, KIND, "__proto__"))?.value.data,
        (await storage.listRecords(KIND))[0]?.value.data,
        (await getOp(storage, "__proto__"))?.value.payload,
        (await storage.listOps({ kinds: [KIND], id: "__proto__" }))[0]?.value
          .payload,
        (await getMeta(storage, "__proto__"))?.value,
        ((await getMeta(storage, "constructor"))?.value as JsonValue[])[0],
      ];
      for (const read of reads) {
        assert.deepEqual(read, data);
        assert.ok(Object.hasOwn(read as object, "__proto__"));
        assert.equal(Object.getPrototypeOf(read), Object.prototype);
        const nestedItem = (read as { nested: object[] }).nested[0];
        assert.ok(Object.hasOwn(nestedItem as object, "__proto__"));
      }
      assert.equal(({} as Record<string, unknown>)["polluted"], undefined);
    },
  },
  {
    clause: "returned values are not shared with the caller",
    async run({ storage }): Promise<void> {
      const value = record(KIND, "1", { data: { tags: ["a"], n: 1 } });
      const shared = op(opId(1), { payload: { tags: ["a"] } });
      const meta: JsonObject = { tags: ["a"] };
      await commit(storage, [
        putRecord(value),
        putOp(shared),
        putMeta("m", meta),
      ]);
      // Changing what was written does not reach the store.
      (value.data["tags"] as JsonValue[]).push("written");
      (shared.payload!["tags"] as JsonValue[]).push("written");
      (meta["tags"] as JsonValue[]).push("written");
      const reads = async (): Promise<unknown[]> => [
        (await getRecord(storage, KIND, "1"))?.value.data,
        (await storage.listRecords(KIND))[0]?.value.data,
        (await getOp(storage, opId(1)))?.value.payload,
        (await storage.listOps())[0]?.value.payload,
        (await getMeta(storage, "m"))?.value,
      ];
      const first = await reads();
      for (const read of first) {
        assert.deepEqual((read as { tags: unknown }).tags, ["a"]);
        // Changing what was read does not reach the store either.
        (read as { tags: string[] }).tags.push("read");
        (read as Record<string, unknown>)["added"] = true;
      }
      const second = await reads();
      for (const [index, read] of second.entries()) {
        assert.deepEqual((read as { tags: unknown }).tags, ["a"]);
        assert.equal((read as Record<string, unknown>)["added"], undefined);
        assert.notEqual(read, first[index]);
      }
    },
  },
];
