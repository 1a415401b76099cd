/**
 * The storage conformance suite: Concurrency: two writers racing with one expect (exactly one wins),
 * concurrent writes of different items, optimistic increments, through one
 * handle and through two open handles.
 *
 * Part of the published suite (`storage/conformance.ts`), not exported
 * from the package on its own; it depends only on the storage contract.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Storage, WritePrecondition } from "../src/storage.ts";
import {
  type Case,
  deleteMeta,
  getMeta,
  getRecord,
  KIND,
  op,
  opId,
  putMeta,
  putOp,
  putRecord,
  record,
  revOf,
  succeeds,
} from "./_conformance_kit.ts";

/** Increments a meta counter, retrying while another writer wins. */
async function increment(storage: Storage, key: string): Promise<void> {
  for (let attempt = 0; attempt < 1000; attempt++) {
    const entry = await getMeta(storage, key);
    const value = typeof entry?.value === "number" ? entry.value : 0;
    const result = await storage.write([
      putMeta(key, value + 1, entry === undefined ? null : entry.rev),
    ]);
    if (result.ok) return;
  }
  assert.fail("Expected an optimistic increment to succeed within 1000 tries");
}

async function raceOnce(
  [first, second]: readonly [Storage, Storage],
  write: { readonly key: string; readonly expect: WritePrecondition },
): Promise<void> {
  const { key, expect } = write;
  const [a, b] = await Promise.all([
    first.write([putRecord(record(KIND, key, { data: { by: "a" } }), expect)]),
    second.write([putRecord(record(KIND, key, { data: { by: "b" } }), expect)]),
  ]);
  assert.equal(
    Number(a.ok) + Number(b.ok),
    1,
    `Expected exactly one of two racing writes to win, got ${a.ok} and ${b.ok}`,
  );
  const stored = await getRecord(first, KIND, key);
  assert.deepEqual(stored?.value.data, { by: a.ok ? "a" : "b" });
  assert.deepEqual(await getRecord(second, KIND, key), stored);
}

async function race(first: Storage, second: Storage): Promise<void> {
  for (let round = 0; round < 10; round++) {
    const key = `race-${round}`;
    // Both create the record.
    await raceOnce([first, second], { key, expect: null });
    // Both update the version they read.
    await raceOnce([first, second], {
      key,
      expect: revOf(await getRecord(first, KIND, key)),
    });
  }
}

/** The cases on concurrency, in order. */
export const CONCURRENCY_CASES: readonly Case[] = [
  {
    clause: "two writers racing with the same expect: exactly one wins",
    async run({ storage }): Promise<void> {
      await race(storage, storage);
    },
  },
  {
    clause: "concurrent writes of different items all land",
    async run({ storage }): Promise<void> {
      const count = 50;
      const results = await Promise.all(
        Array.from({ length: count }, (_, index) =>
          storage.write([
            putRecord(record(KIND, `r${index}`), null),
            putOp(op(opId(index), { id: `r${index}` }), null),
            putMeta(`m${index}`, index, null),
          ])),
      );
      assert.ok(results.every((result) => result.ok));
      assert.equal((await storage.listRecords(KIND)).length, count);
      assert.equal((await storage.listOps()).length, count);
      const meta = await storage.getMeta(results.map((_, i) => `m${i}`));
      assert.deepEqual(
        meta.map((entry) => entry?.value),
        results.map((_, index) => index),
      );
    },
  },
  {
    clause: "concurrent optimistic increments lose no update",
    async run({ storage }): Promise<void> {
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          for (let step = 0; step < 5; step++) {
            await increment(storage, "counter");
          }
        }),
      );
      assert.equal((await getMeta(storage, "counter"))?.value, 40);
    },
  },
  {
    clause: "two open handles see each other's writes",
    needs: ({ capabilities, reopen }) => reopen && capabilities.multiProcess,
    async run(harness): Promise<void> {
      const first = harness.storage;
      const second = await harness.another();
      await succeeds(first, [
        putRecord(record(KIND, "a")),
        putOp(op(opId(1))),
        putMeta("x", 1),
      ]);
      assert.deepEqual(
        await getRecord(second, KIND, "a"),
        await getRecord(first, KIND, "a"),
      );
      assert.deepEqual(await second.listOps(), await first.listOps());
      assert.deepEqual(await getMeta(second, "x"), await getMeta(first, "x"));
      await succeeds(second, [deleteMeta("x"), putMeta("y", 2)]);
      assert.equal(await getMeta(first, "x"), undefined);
      assert.deepEqual(await getMeta(first, "y"), await getMeta(second, "y"));
    },
  },
  {
    clause: "two open handles racing with the same expect: exactly one wins",
    needs: ({ capabilities, reopen }) => reopen && capabilities.multiProcess,
    async run(harness): Promise<void> {
      await race(harness.storage, await harness.another());
    },
  },
  {
    clause: "optimistic increments through two open handles lose no update",
    needs: ({ capabilities, reopen }) => reopen && capabilities.multiProcess,
    async run(harness): Promise<void> {
      const handles = [harness.storage, await harness.another()];
      await Promise.all(
        Array.from({ length: 8 }, async (_, worker) => {
          for (let step = 0; step < 5; step++) {
            await increment(handles[worker % 2]!, "counter");
          }
        }),
      );
      assert.equal((await getMeta(harness.storage, "counter"))?.value, 40);
    },
  },
];
