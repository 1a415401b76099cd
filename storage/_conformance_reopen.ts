/**
 * The storage conformance suite: Lifecycle: `close()` is idempotent and every method rejects after it;
 * records, ops, meta and revisions survive reopen, and a refused write
 * leaves nothing behind.
 *
 * Part of the published suite (`storage/conformance.ts`), not exported
 * from the package on its own; it depends only on the storage contract.
 *
 * @module
 */

import assert from "node:assert/strict";
import { ClosedError } from "../src/errors.ts";
import type { Storage } from "../src/storage.ts";
import {
  absent,
  call,
  type Case,
  commit,
  deleteMeta,
  deleteOp,
  deleteRecord,
  getMeta,
  getOp,
  getRecord,
  holds,
  KIND,
  op,
  opId,
  putMeta,
  putOp,
  putRecord,
  record,
  refused,
  rejectsWith,
  type Space,
  SPACES,
  succeeds,
  trickyData,
} from "./_conformance_kit.ts";

/** Reads everything a case wrote, to compare before and after a reopen. */
async function snapshot(
  storage: Storage,
  kinds: readonly string[],
  metaKeys: readonly string[],
): Promise<unknown> {
  const records = [];
  for (const kind of kinds) {
    records.push(await storage.listRecords(kind, { includeDeleted: true }));
  }
  return {
    records,
    ops: await storage.listOps(),
    meta: await storage.getMeta(metaKeys),
  };
}

/** The cases on reopen, in order. */
export const REOPEN_CASES: readonly Case[] = [
  {
    clause: "close() is idempotent",
    async run({ storage }): Promise<void> {
      await commit(storage, [putMeta("x", 1)]);
      await call("close()", () => storage.close());
      await call("close()", () => storage.close());
      await Promise.all([storage.close(), storage.close()]);
      await call(
        "[Symbol.asyncDispose]()",
        () => storage[Symbol.asyncDispose](),
      );
    },
  },
  {
    clause: "every method rejects with a ClosedError after close()",
    async run({ storage }): Promise<void> {
      await commit(storage, [
        putRecord(record(KIND, "a")),
        putOp(op(opId(1))),
        putMeta("x", 1),
      ]);
      await storage.close();
      const calls: [string, () => Promise<unknown>][] = [
        ["getRecords()", () => storage.getRecords(KIND, ["a"])],
        ["listRecords()", () => storage.listRecords(KIND)],
        ["getOps()", () => storage.getOps([opId(1)])],
        ["listOps()", () => storage.listOps()],
        ["getMeta()", () => storage.getMeta(["x"])],
        ["write()", () => storage.write([putMeta("x", 2)])],
        ["write() of nothing", () => storage.write([])],
      ];
      for (const [method, invoke] of calls) {
        await rejectsWith(call(method, invoke), ClosedError);
      }
    },
  },
  {
    clause: "records, ops and meta survive reopen",
    needs: ({ capabilities, reopen }) => reopen && capabilities.persistent,
    async run(harness): Promise<void> {
      const metaKeys = ["", "0", "false", "null", "tricky", "absent"];
      await commit(harness.storage, [
        putRecord(record(KIND, "a", { data: trickyData() })),
        putRecord(record(KIND, "\u{1F600}", { deleted: true })),
        putRecord(record(KIND, "\uFF5E", { lastOpId: opId(2) })),
        putRecord(record("note", "a/b\0c")),
        putOp(op(opId(1), { state: "quarantined" })),
        putOp(op(opId(2), { payload: trickyData() })),
        putOp(op(opId(3), { state: "parked", kind: "note", id: "a/b\0c" })),
        putMeta("", ""),
        putMeta("0", 0),
        putMeta("false", false),
        putMeta("null", null),
        putMeta("tricky", trickyData()),
      ]);
      // Deleted items stay deleted.
      await commit(harness.storage, [
        putRecord(record(KIND, "gone")),
        putOp(op(opId(4))),
        putMeta("gone", 1),
      ]);
      await commit(harness.storage, [
        deleteRecord(KIND, "gone"),
        deleteOp(opId(4)),
        deleteMeta("gone"),
      ]);
      const kinds = [KIND, "note"];
      const before = await snapshot(harness.storage, kinds, metaKeys);
      const storage = await harness.reopen();
      assert.deepEqual(await snapshot(storage, kinds, metaKeys), before);
      assert.equal(await getRecord(storage, KIND, "gone"), undefined);
      assert.equal(await getOp(storage, opId(4)), undefined);
      assert.equal(await getMeta(storage, "gone"), undefined);
      assert.deepEqual(
        (await storage.listOps({ states: ["parked"], kinds: ["note"] })).map((
          entry,
        ) => entry.value.opId),
        [opId(3)],
      );
    },
  },
  {
    clause: "revisions stay valid across reopen and never repeat after it",
    needs: ({ capabilities, reopen }) => reopen && capabilities.persistent,
    async run(harness): Promise<void> {
      const seen = new Map<string, string[]>();
      const remember = (space: Space, rev: string): string => {
        const revs = seen.get(space.name) ?? [];
        assert.ok(!revs.includes(rev), `Expected a new ${space.name} rev`);
        revs.push(rev);
        seen.set(space.name, revs);
        return rev;
      };
      for (const space of SPACES) {
        await commit(harness.storage, [space.put("k", 1)]);
        remember(
          space,
          await holds(harness.storage, { space: space, key: "k", version: 1 }),
        );
        await commit(harness.storage, [space.put("k", 2)]);
        remember(
          space,
          await holds(harness.storage, { space: space, key: "k", version: 2 }),
        );
      }
      let storage = await harness.reopen();
      for (const space of SPACES) {
        const [stale, current] = seen.get(space.name) as [string, string];
        await refused(storage, [space.put("k", 3, stale)]);
        await succeeds(storage, [space.put("k", 3, current)]);
        const third = remember(
          space,
          await holds(storage, { space: space, key: "k", version: 3 }),
        );
        await succeeds(storage, [space.remove("k", third)]);
      }
      storage = await harness.reopen();
      for (const space of SPACES) {
        await absent(storage, space, "k");
        for (const stale of seen.get(space.name)!) {
          await refused(storage, [space.put("k", 4, stale)]);
        }
        await succeeds(storage, [space.put("k", 4, null)]);
        remember(
          space,
          await holds(storage, { space: space, key: "k", version: 4 }),
        );
      }
    },
  },
  {
    clause: "a refused write leaves nothing behind after reopen",
    needs: ({ capabilities, reopen }) => reopen && capabilities.persistent,
    async run(harness): Promise<void> {
      await commit(harness.storage, [putMeta("x", 1)]);
      const x = await getMeta(harness.storage, "x");
      await refused(harness.storage, [
        putRecord(record(KIND, "a")),
        putOp(op(opId(1))),
        putMeta("x", 2),
        putMeta("y", 1, "no such revision"),
      ]);
      const storage = await harness.reopen();
      assert.deepEqual(await getMeta(storage, "x"), x);
      assert.equal(await getMeta(storage, "y"), undefined);
      assert.deepEqual(
        await storage.listRecords(KIND, { includeDeleted: true }),
        [],
      );
      assert.deepEqual(await storage.listOps(), []);
    },
  },
];
