/**
 * The storage conformance suite: Writes: all-or-nothing, expects (`null`, a revision, checked against
 * the state before the write), revisions that change and never repeat, the
 * last mutation of an item winning, empty writes and absent deletes, and
 * the revisions a write returns.
 *
 * Part of the published suite (`storage/conformance.ts`), not exported
 * from the package on its own; it depends only on the storage contract.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  absent,
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
  revOf,
  type Space,
  SPACES,
  succeeds,
} from "./_conformance_kit.ts";

/** The cases on writes, in order. */
export const WRITE_CASES: readonly Case[] = [
  {
    clause: "write() is all-or-nothing",
    async run({ storage }): Promise<void> {
      await commit(storage, [
        putMeta("x", 1),
        putRecord(record(KIND, "a", { data: { version: 1 } })),
      ]);
      const stale = revOf(await getMeta(storage, "x"));
      await commit(storage, [putMeta("x", 2)]);
      const x = await getMeta(storage, "x");
      const a = await getRecord(storage, KIND, "a");
      // The last mutation's expect fails.
      await refused(storage, [
        putRecord(record(KIND, "b")),
        putRecord(record(KIND, "a", { data: { version: 2 } }), revOf(a)),
        putOp(op(opId(1))),
        putMeta("y", true),
        deleteRecord(KIND, "a"),
        putMeta("x", 3, stale),
      ]);
      // The first mutation's expect fails.
      await refused(storage, [
        putRecord(record(KIND, "a", { data: { version: 3 } }), null),
        putRecord(record(KIND, "b")),
        deleteMeta("x"),
      ]);
      assert.deepEqual(await getMeta(storage, "x"), x);
      assert.deepEqual(await getRecord(storage, KIND, "a"), a);
      assert.equal(await getRecord(storage, KIND, "b"), undefined);
      assert.equal(await getOp(storage, opId(1)), undefined);
      assert.equal(await getMeta(storage, "y"), undefined);
      assert.deepEqual(await storage.listOps(), []);
      assert.equal((await storage.listRecords(KIND)).length, 1);
    },
  },
  {
    clause: "expect null requires the item to be absent",
    async run({ storage }): Promise<void> {
      for (const space of SPACES) {
        const key = `${space.name}-1`;
        await succeeds(storage, [space.put(key, 1, null)]);
        const rev = await holds(storage, {
          space: space,
          key: key,
          version: 1,
        });
        await refused(storage, [space.put(key, 2, null)]);
        await refused(storage, [space.remove(key, null)]);
        assert.equal(
          await holds(storage, { space: space, key: key, version: 1 }),
          rev,
        );
        await succeeds(storage, [space.remove(key)]);
        await succeeds(storage, [space.remove(key, null)]);
        await absent(storage, space, key);
        await succeeds(storage, [space.put(key, 3, null)]);
        await holds(storage, { space: space, key: key, version: 3 });
      }
    },
  },
  {
    clause: "expect rev requires the current revision",
    async run({ storage }): Promise<void> {
      for (const space of SPACES) {
        const key = `${space.name}-1`;
        await commit(storage, [space.put(key, 1)]);
        const first = await holds(storage, {
          space: space,
          key: key,
          version: 1,
        });
        await succeeds(storage, [space.put(key, 2, first)]);
        const second = await holds(storage, {
          space: space,
          key: key,
          version: 2,
        });
        assert.notEqual(second, first);
        await refused(storage, [space.put(key, 3, first)]);
        await refused(storage, [space.remove(key, first)]);
        assert.equal(
          await holds(storage, { space: space, key: key, version: 2 }),
          second,
        );
        await succeeds(storage, [space.remove(key, second)]);
        await absent(storage, space, key);
        await refused(storage, [space.put(key, 4, second)]);
        await refused(storage, [space.remove(key, second)]);
        await absent(storage, space, key);
      }
    },
  },
  {
    clause:
      "a write of many items, each expecting its revision, fails whole when any one expect fails",
    async run({ storage }): Promise<void> {
      // Sizes past an adapter's batching (a push claims and settles up to a
      // thousand ops in one write): the stale expect sits first, last, and
      // at the edges of a batch of 32.
      const { maxMutationsPerWrite: max } = storage.capabilities;
      const count = Math.min(70, Math.floor(max / 2));
      const stalePositions = [0, 31, 32, count - 1].filter((at) => at < count);
      for (const space of SPACES) {
        const keys = Array.from(
          { length: count },
          (_, i) => `${space.name}-${String(i).padStart(3, "0")}`,
        );
        await commit(storage, keys.map((key) => space.put(key, 1)));
        const stale = await Promise.all(
          keys.map((key) => holds(storage, { space, key, version: 1 })),
        );
        await commit(storage, keys.map((key) => space.put(key, 2)));
        const revs = await Promise.all(
          keys.map((key) => holds(storage, { space, key, version: 2 })),
        );
        const expectFor = (at: number) => (i: number) =>
          i === at ? stale[i]! : revs[i]!;
        for (const at of stalePositions) {
          const expect = expectFor(at);
          await refused(
            storage,
            keys.map((key, i) => space.put(key, 3, expect(i))),
            `a put of ${count} ${space.name}s resolved { ok: true } with item ${at}'s expect stale`,
          );
          await refused(
            storage,
            keys.map((key, i) => space.remove(key, expect(i))),
            `a delete of ${count} ${space.name}s resolved { ok: true } with item ${at}'s expect stale`,
          );
          // Puts and deletes of distinct items interleaved, as a push's
          // settle writes them.
          await refused(
            storage,
            keys.map((key, i) =>
              i % 2 === 0
                ? space.remove(key, expect(i))
                : space.put(key, 3, expect(i))
            ),
            `a mixed write of ${count} ${space.name}s resolved { ok: true } with item ${at}'s expect stale`,
          );
        }
        for (const [i, key] of keys.entries()) {
          assert.equal(
            await holds(storage, { space, key, version: 2 }),
            revs[i],
            `${space.name} ${key} changed by a refused write`,
          );
        }
        await succeeds(
          storage,
          keys.map((key, i) =>
            i % 2 === 0
              ? space.remove(key, revs[i])
              : space.put(key, 3, revs[i])
          ),
        );
        for (const [i, key] of keys.entries()) {
          if (i % 2 === 0) await absent(storage, space, key);
          else await holds(storage, { space, key, version: 3 });
        }
        // An expect of an item that is gone fails too.
        await refused(
          storage,
          keys.map((key, i) => space.put(key, 4, revs[i])),
          `a put of ${count} ${space.name}s resolved { ok: true } though half of them are gone`,
        );
      }
    },
  },
  {
    clause: "a revision changes on every write of an item",
    async run({ storage }): Promise<void> {
      for (const space of SPACES) {
        const key = `${space.name}-1`;
        const revs = new Set<string>();
        for (let write = 0; write < 5; write++) {
          // The same value each time: the revision still changes.
          await commit(storage, [space.put(key, 1)]);
          revs.add(
            await holds(storage, { space: space, key: key, version: 1 }),
          );
        }
        await succeeds(storage, [space.put(key, 1), space.put(key, 1)]);
        revs.add(await holds(storage, { space: space, key: key, version: 1 }));
        assert.equal(revs.size, 6, `Expected 6 distinct ${space.name} revs`);
      }
    },
  },
  {
    clause: "a revision never repeats after delete and re-create",
    async run({ storage }): Promise<void> {
      for (const space of SPACES) {
        const key = `${space.name}-1`;
        const revs: string[] = [];
        for (let cycle = 0; cycle < 5; cycle++) {
          await succeeds(storage, [space.put(key, cycle, null)]);
          revs.push(
            await holds(storage, { space: space, key: key, version: cycle }),
          );
          await succeeds(storage, [space.remove(key, revs.at(-1))]);
          await absent(storage, space, key);
        }
        await succeeds(storage, [space.put(key, 9, null)]);
        revs.push(await holds(storage, { space: space, key: key, version: 9 }));
        assert.equal(
          new Set(revs).size,
          revs.length,
          `Expected distinct ${space.name} revs: ${revs.join(", ")}`,
        );
        for (const stale of revs.slice(0, -1)) {
          await refused(storage, [space.put(key, 10, stale)]);
        }
        await holds(storage, { space: space, key: key, version: 9 });
      }
    },
  },
  {
    clause: "expects are checked against the state before the write",
    async run({ storage }): Promise<void> {
      const [records, ops, meta] = SPACES as [Space, Space, Space];
      await commit(storage, [records.put("x", 0), meta.put("w", 0)]);
      const x = await holds(storage, { space: records, key: "x", version: 0 });
      // Both mutations expect the revision the item has before the write.
      await succeeds(storage, [records.put("x", 1, x), records.put("x", 2, x)]);
      await holds(storage, { space: records, key: "x", version: 2 });
      // Both expect the item to be absent, as it is before the write.
      await succeeds(storage, [ops.put("y", 1, null), ops.put("y", 2, null)]);
      await holds(storage, { space: ops, key: "y", version: 2 });
      await succeeds(storage, [meta.put("z", 1, null), meta.remove("z", null)]);
      await absent(storage, meta, "z");
      // The item exists before the write, so expecting absence fails even
      // after an earlier mutation of the same write deleted it.
      const w = await holds(storage, { space: meta, key: "w", version: 0 });
      await refused(storage, [meta.remove("w", w), meta.put("w", 1, null)]);
      assert.equal(
        await holds(storage, { space: meta, key: "w", version: 0 }),
        w,
      );
      // Mutations of one item that expect different states cannot all
      // hold, whichever of them names the state before the write.
      const now = await holds(storage, {
        space: records,
        key: "x",
        version: 2,
      });
      await refused(storage, [
        records.put("x", 3, x),
        records.put("x", 4, now),
      ]);
      await refused(storage, [
        records.put("x", 3, now),
        records.put("x", 4, x),
      ]);
      await refused(storage, [
        records.put("x", 3, null),
        records.put("x", 4, now),
      ]);
      await refused(storage, [
        records.put("x", 3, now),
        records.remove("x", null),
      ]);
      assert.equal(
        await holds(storage, { space: records, key: "x", version: 2 }),
        now,
      );
    },
  },
  {
    clause: "a later mutation of the same item in one write wins",
    async run({ storage }): Promise<void> {
      const [records, ops, meta] = SPACES as [Space, Space, Space];
      await commit(storage, [ops.put(opId(1), 0)]);
      await succeeds(storage, [records.put("a", 1), records.put("a", 2)]);
      await holds(storage, { space: records, key: "a", version: 2 });
      await succeeds(storage, [meta.put("m", 1), meta.remove("m")]);
      await absent(storage, meta, "m");
      await succeeds(storage, [ops.remove(opId(1)), ops.put(opId(1), 3)]);
      await holds(storage, { space: ops, key: opId(1), version: 3 });
      await succeeds(storage, [
        putOp(op(opId(2), { state: "pending" })),
        putOp(op(opId(2), { state: "parked" })),
      ]);
      const parked = await storage.listOps({ states: ["parked"] });
      assert.deepEqual(parked.map((entry) => entry.value.opId), [opId(2)]);
      const pending = await storage.listOps({ states: ["pending"] });
      assert.deepEqual(pending.map((entry) => entry.value.opId), [opId(1)]);
      // One id in two kinds, and one name in each space, are distinct items.
      await succeeds(storage, [
        putRecord(record(KIND, "same", { data: { v: 1 } }), null),
        putRecord(record("other", "same", { data: { v: 2 } }), null),
        putMeta("same", 3, null),
      ]);
      assert.deepEqual((await getRecord(storage, KIND, "same"))?.value.data, {
        v: 1,
      });
      assert.deepEqual(
        (await getRecord(storage, "other", "same"))?.value.data,
        { v: 2 },
      );
    },
  },
  {
    clause: "an empty write resolves ok and changes nothing",
    async run({ storage }): Promise<void> {
      await commit(storage, [putMeta("x", 1)]);
      const before = await getMeta(storage, "x");
      await succeeds(storage, []);
      assert.deepEqual(await getMeta(storage, "x"), before);
    },
  },
  {
    clause: "deleting an absent item resolves ok and changes nothing",
    async run({ storage }): Promise<void> {
      await commit(storage, [putMeta("other", 1)]);
      const other = await getMeta(storage, "other");
      await succeeds(storage, [
        deleteRecord(KIND, "absent"),
        deleteOp(opId(1)),
        deleteMeta("absent"),
      ]);
      for (const space of SPACES) {
        await absent(storage, space, space.name === "op" ? opId(1) : "absent");
      }
      assert.deepEqual(
        await storage.listRecords(KIND, { includeDeleted: true }),
        [],
      );
      assert.deepEqual(await storage.listOps(), []);
      assert.deepEqual(await getMeta(storage, "other"), other);
    },
  },
  {
    clause: "write() returns each item's new revision, null for removed items",
    async run({ storage }): Promise<void> {
      await commit(storage, [
        putRecord(record(KIND, "gone")),
        putMeta("gone", 1),
      ]);
      const result = await storage.write([
        putRecord(record(KIND, "a", { data: { n: 1 } })),
        putOp(op(opId(1))),
        putMeta("m", 1),
        { type: "deleteRecord", kind: KIND, id: "gone" },
        { type: "deleteMeta", key: "gone" },
        { type: "deleteMeta", key: "never-there" },
        putMeta("m", 2),
      ]);
      assert.ok(
        result.ok,
        "write() resolved { ok: false } where it should commit",
      );
      assert.equal(result.revs.length, 7);
      const [recordEntry] = await storage.getRecords(KIND, ["a"]);
      const [opEntry] = await storage.getOps([opId(1)]);
      const [metaEntry] = await storage.getMeta(["m"]);
      assert.equal(result.revs[0], recordEntry?.rev);
      assert.equal(result.revs[1], opEntry?.rev);
      assert.equal(
        result.revs[2],
        metaEntry?.rev,
        "the item's rev after the write",
      );
      assert.equal(result.revs[6], metaEntry?.rev);
      assert.deepEqual(result.revs.slice(3, 6), [null, null, null]);
      // A returned revision is good for the next expect.
      await succeeds(storage, [{
        ...putMeta("m", 3),
        expect: result.revs[2]!,
      }]);
    },
  },
  {
    clause:
      "write() of two mutations of one item returns its revision after both",
    async run({ storage }): Promise<void> {
      const removed = await storage.write([
        putMeta("pair", 1),
        { type: "deleteMeta", key: "pair" },
      ]);
      assert.deepEqual(removed, { ok: true, revs: [null, null] });
      const put = await storage.write([
        putRecord(record(KIND, "pair")),
        putRecord(record(KIND, "pair", { data: { n: 2 } })),
      ]);
      assert.ok(
        put.ok,
        "write() resolved { ok: false } where it should commit",
      );
      const [entry] = await storage.getRecords(KIND, ["pair"]);
      assert.deepEqual(put.revs, [entry?.rev, entry?.rev]);
    },
  },
];
