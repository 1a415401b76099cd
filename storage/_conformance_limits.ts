/**
 * The storage conformance suite: Limits and refusals: values nested 256 levels deep, exactly
 * `maxMutationsPerWrite` and `maxWriteBytes` (and one more), malformed
 * mutations, a 1 MiB record, and an aborted signal.
 *
 * Part of the published suite (`storage/conformance.ts`), not exported
 * from the package on its own; it depends only on the storage contract.
 *
 * @module
 */

import assert from "node:assert/strict";
import { StorageError } from "../src/errors.ts";
import type { JsonValue } from "../src/json.ts";
import type { Mutation, StoredRecord } from "../src/storage.ts";
import {
  call,
  type Case,
  commit,
  finite,
  getMeta,
  getRecord,
  KIND,
  op,
  opId,
  putMeta,
  putRecord,
  record,
  rejectsWith,
  succeeds,
  writeBytes,
} from "./_conformance_kit.ts";

/** Arrays nested `depth` deep: the smallest value of that depth. */
function chain(depth: number): JsonValue {
  let value: JsonValue = "bottom";
  for (let level = 0; level < depth; level++) value = [value];
  return value;
}

/**
 * How deep every storage must let a value nest (contract clause 3): the
 * value itself is level 1.
 */
const MAX_DEPTH = 256;

function oneMiBRecord(): StoredRecord {
  const pattern = "abcdefghijklmnopqrstuvwxyz0123456789\u00FC\u{1F600}\0";
  const text = pattern.repeat(Math.ceil(1024 * 1024 / pattern.length));
  return record(KIND, "big", {
    data: { text, list: Array.from({ length: 1000 }, (_, index) => index) },
  });
}

/** Pads a putMeta so that the whole write is exactly `bytes` long. */
function padded(
  prefix: readonly Mutation[],
  key: string,
  bytes: number,
): Mutation[] {
  const base = writeBytes([...prefix, putMeta(key, "")]);
  if (base > bytes) {
    assert.fail(
      `Cannot build a write of ${bytes} bytes as its smallest form has ${base}`,
    );
  }
  const mutations = [...prefix, putMeta(key, "x".repeat(bytes - base))];
  assert.equal(writeBytes(mutations), bytes);
  return mutations;
}

/** The cases on limits, in order. */
export const LIMIT_CASES: readonly Case[] = [
  {
    clause:
      "values nested 256 levels deep round-trip; a deeper one is refused with a StorageError or round-trips, never a crash",
    async run({ storage }): Promise<void> {
      // The record is level 1, its data level 2.
      const deepRecord = record(KIND, "deep", {
        data: { value: chain(MAX_DEPTH - 2) },
      });
      await commit(storage, [
        putRecord(deepRecord),
        putMeta("deep", chain(MAX_DEPTH)),
      ]);
      assert.equal(
        JSON.stringify((await getRecord(storage, KIND, "deep"))?.value),
        JSON.stringify(deepRecord),
      );
      assert.equal(
        JSON.stringify((await getMeta(storage, "deep"))?.value),
        JSON.stringify(chain(MAX_DEPTH)),
      );
      // A valid mutation first, when the limits allow two: a refused write
      // must not commit it either.
      const lead = (key: string): Mutation[] =>
        storage.capabilities.maxMutationsPerWrite >= 2 ? [putMeta(key, 1)] : [];
      for (const depth of [5_000, 100_000]) {
        const value = record(KIND, `d${depth}`, {
          data: { value: chain(depth) },
        });
        const writes = [
          [...lead(`r${depth}`), putRecord(value)],
          [...lead(`m${depth}`), putMeta(`d${depth}`, chain(depth))],
        ];
        for (const mutations of writes) {
          let refused = false;
          try {
            await call("write()", () => storage.write(mutations));
          } catch (error) {
            assert.ok(
              error instanceof StorageError,
              `Expected a StorageError for a value ${depth} levels deep, got ${error}`,
            );
            refused = true;
          }
          const stored = mutations.at(-1)!.type === "putRecord"
            ? (await getRecord(storage, KIND, `d${depth}`))?.value
            : (await getMeta(storage, `d${depth}`))?.value;
          if (refused) {
            assert.equal(stored, undefined, "Expected nothing committed");
            if (mutations.length === 2) {
              const key = (mutations[0] as { key: string }).key;
              assert.equal(await getMeta(storage, key), undefined);
            }
          } else {
            const written = mutations.at(-1) as { record?: unknown };
            assert.equal(
              JSON.stringify(stored),
              JSON.stringify(written.record ?? chain(depth)),
            );
          }
        }
      }
    },
  },
  {
    clause: "write() accepts exactly maxMutationsPerWrite mutations",
    needs: ({ capabilities }) => finite(capabilities.maxMutationsPerWrite),
    async run({ storage }): Promise<void> {
      const max = storage.capabilities.maxMutationsPerWrite;
      const mutations = Array.from(
        { length: max },
        (_, index) => putMeta(`m${index}`, index),
      );
      assert.ok(
        writeBytes(mutations) <= storage.capabilities.maxWriteBytes,
        "Cannot test maxMutationsPerWrite as such a write exceeds maxWriteBytes",
      );
      await succeeds(storage, mutations);
      const entries = await storage.getMeta(mutations.map((_, i) => `m${i}`));
      assert.deepEqual(
        entries.map((entry) => entry?.value),
        mutations.map((_, index) => index),
      );
    },
  },
  {
    clause:
      "write() rejects maxMutationsPerWrite + 1 mutations with a StorageError and commits nothing",
    needs: ({ capabilities }) => finite(capabilities.maxMutationsPerWrite),
    async run({ storage }): Promise<void> {
      const max = storage.capabilities.maxMutationsPerWrite;
      await commit(storage, [putMeta("m0", "before")]);
      const before = await getMeta(storage, "m0");
      const mutations = Array.from(
        { length: max + 1 },
        (_, index) => putMeta(`m${index}`, index),
      );
      await rejectsWith(storage.write(mutations), StorageError, max);
      assert.deepEqual(await getMeta(storage, "m0"), before);
      const entries = await storage.getMeta(mutations.map((_, i) => `m${i}`));
      assert.ok(entries.slice(1).every((entry) => entry === undefined));
    },
  },
  {
    clause: "write() accepts exactly maxWriteBytes bytes",
    needs: ({ capabilities }) => finite(capabilities.maxWriteBytes),
    async run({ storage }): Promise<void> {
      const max = storage.capabilities.maxWriteBytes;
      const mutations = padded([], "big", max);
      await succeeds(storage, mutations);
      const mutation = mutations[0] as { value: JsonValue };
      assert.equal((await getMeta(storage, "big"))?.value, mutation.value);
    },
  },
  {
    clause:
      "write() rejects maxWriteBytes + 1 bytes with a StorageError and commits nothing",
    needs: ({ capabilities }) => finite(capabilities.maxWriteBytes),
    async run({ storage }): Promise<void> {
      const { maxWriteBytes, maxMutationsPerWrite } = storage.capabilities;
      await commit(storage, [putMeta("small", "before")]);
      const before = await getMeta(storage, "small");
      const prefix = maxMutationsPerWrite >= 2
        ? [putMeta("small", "after")]
        : [];
      const mutations = padded(prefix, "big", maxWriteBytes + 1);
      await rejectsWith(storage.write(mutations), StorageError, maxWriteBytes);
      assert.deepEqual(await getMeta(storage, "small"), before);
      assert.equal(await getMeta(storage, "big"), undefined);
    },
  },
  {
    clause:
      "write() rejects a malformed mutation with a TypeError and commits nothing",
    async run({ storage }): Promise<void> {
      await commit(storage, [
        putMeta("before", "old"),
        putRecord(record(KIND, "a")),
      ]);
      const meta = await getMeta(storage, "before");
      const existing = await getRecord(storage, KIND, "a");
      const malformed: unknown[] = [
        { type: "bogus" },
        { type: "putRecord", record: "not an object" },
        { type: "putRecord", record: null },
        { type: "putRecord", record: record(KIND, "b"), expect: 1 },
        { type: "deleteRecord", kind: KIND, id: "a", expect: false },
        { type: "putOp", op: { ...op(opId(1)), state: "bogus" } },
        { type: "putMeta", key: "x", value: undefined },
        null,
      ];
      // A valid mutation first, when the limits allow two: it must not
      // commit either.
      const lead = storage.capabilities.maxMutationsPerWrite >= 2
        ? [putMeta("before", "new")]
        : [];
      for (const mutation of malformed) {
        await assert.rejects(
          call(
            "write()",
            () => storage.write([...lead, mutation as Mutation]),
          ),
          TypeError,
          `Expected a TypeError for ${Deno.inspect(mutation)}`,
        );
      }
      assert.deepEqual(await getMeta(storage, "before"), meta);
      assert.deepEqual(await getRecord(storage, KIND, "a"), existing);
      assert.equal(await getRecord(storage, KIND, "b"), undefined);
      assert.deepEqual(await storage.listOps(), []);
      assert.equal(await getMeta(storage, "x"), undefined);
    },
  },
  {
    clause: "a 1 MiB record round-trips",
    needs: ({ capabilities }) =>
      writeBytes([putRecord(oneMiBRecord())]) <= capabilities.maxWriteBytes,
    async run({ storage }): Promise<void> {
      const big = oneMiBRecord();
      await succeeds(storage, [putRecord(big, null)]);
      assert.deepEqual((await getRecord(storage, KIND, "big"))?.value, big);
      const [listed] = await storage.listRecords(KIND);
      assert.deepEqual(listed?.value, big);
    },
  },
  {
    clause:
      "write() with an aborted signal rejects with its reason and commits nothing",
    async run({ storage }): Promise<void> {
      await commit(storage, [putMeta("x", 1)]);
      const before = await getMeta(storage, "x");
      const controller = new AbortController();
      const reason = new Error("Stopped by the suite");
      controller.abort(reason);
      await assert.rejects(
        call("write()", () =>
          storage.write([
            putMeta("x", 2),
            putRecord(record(KIND, "a")),
          ], { signal: controller.signal })),
        (error: unknown) => error === reason,
      );
      assert.deepEqual(await getMeta(storage, "x"), before);
      assert.equal(await getRecord(storage, KIND, "a"), undefined);
    },
  },
];
