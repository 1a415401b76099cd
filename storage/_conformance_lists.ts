/**
 * The storage conformance suite: Listings: records and ops in UTF-16 order, deleted records hidden,
 * one kind only, `listOps()` filters, and paging with `after` and `limit`
 * that covers every item once.
 *
 * Part of the published suite (`storage/conformance.ts`), not exported
 * from the package on its own; it depends only on the storage contract.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { ListOpsOptions, Storage, StoredOp } from "../src/storage.ts";
import {
  type Case,
  commit,
  deleteOp,
  KIND,
  op,
  opId,
  pages,
  putOp,
  putRecord,
  record,
  succeeds,
} from "./_conformance_kit.ts";

/** Ids whose UTF-16 order differs from their UTF-8 and code point order. */
const ORDER_KEYS: readonly string[] = [
  "\uFF5E",
  "\u{1F600}",
  "a",
  "B",
  "",
  "a\0",
  "aa",
  "\u00E4",
  "\uE000",
  "\u{10000}",
  "10",
  "9",
  "\uFFFF",
  "Z",
  "\u007F",
  "\u0080",
  "a/b",
  "\0",
];

/** Ops by kind, record id and state: the n-th is `opId(n)`, from 1. */
type OpLayout = readonly (readonly [string, string, StoredOp["state"]])[];

/**
 * Commits the ops of a layout and returns a listing that gives each listed
 * op's number in the layout.
 */
async function layOut(
  storage: Storage,
  layout: OpLayout,
): Promise<(options: ListOpsOptions) => Promise<number[]>> {
  await commit(
    storage,
    layout.map(([kind, id, state], index) =>
      putOp(op(opId(index + 1), { kind, id, state }))
    ),
  );
  return async (options) =>
    (await storage.listOps(options)).map((entry) =>
      Number(entry.value.opId.slice(3))
    );
}

/** The cases on lists, in order. */
export const LIST_CASES: readonly Case[] = [
  {
    clause: "listRecords() orders ids by UTF-16 code units",
    async run({ storage }): Promise<void> {
      // One write per record, so the order cannot come from one batch.
      for (const id of ORDER_KEYS) {
        await succeeds(storage, [putRecord(record(KIND, id))]);
      }
      const ids = (await storage.listRecords(KIND)).map((entry) =>
        entry.value.id
      );
      assert.deepEqual(ids, [...ORDER_KEYS].sort());
      assert.ok(ids.indexOf("\u{1F600}") < ids.indexOf("\uFF5E"));
      assert.ok(ids.indexOf("\u{10000}") < ids.indexOf("\uE000"));
    },
  },
  {
    clause: "listOps() orders op ids by UTF-16 code units",
    async run({ storage }): Promise<void> {
      for (const id of ORDER_KEYS) {
        await succeeds(storage, [putOp(op(id))]);
      }
      const ids = (await storage.listOps()).map((entry) => entry.value.opId);
      assert.deepEqual(ids, [...ORDER_KEYS].sort());
      assert.ok(ids.indexOf("\u{1F600}") < ids.indexOf("\uFF5E"));
    },
  },
  {
    clause: "listRecords() hides deleted records unless includeDeleted is set",
    async run({ storage }): Promise<void> {
      await commit(storage, [
        putRecord(record(KIND, "a")),
        putRecord(record(KIND, "b", { deleted: true })),
        putRecord(record(KIND, "c")),
        putRecord(record(KIND, "d", { deleted: true })),
      ]);
      const ids = async (
        options: Parameters<Storage["listRecords"]>[1],
      ): Promise<string[]> =>
        (await storage.listRecords(KIND, options)).map((entry) =>
          entry.value.id
        );
      assert.deepEqual(await ids(undefined), ["a", "c"]);
      assert.deepEqual(await ids({ includeDeleted: false }), ["a", "c"]);
      assert.deepEqual(await ids({ includeDeleted: true }), [
        "a",
        "b",
        "c",
        "d",
      ]);
      assert.deepEqual(await ids({ limit: 2 }), ["a", "c"]);
      assert.deepEqual(await ids({ after: "a", limit: 1 }), ["c"]);
      // getRecords() reads by id, deleted or not.
      const [b] = await storage.getRecords(KIND, ["b"]);
      assert.equal(b?.value.deleted, true);
    },
  },
  {
    clause: "listRecords() lists only the given kind",
    async run({ storage }): Promise<void> {
      const kinds = ["a", "ab", "a/b", "b", "", "A"];
      await commit(
        storage,
        kinds.map((kind) => putRecord(record(kind, `${kind}-1`))),
      );
      for (const kind of kinds) {
        assert.deepEqual(
          (await storage.listRecords(kind)).map((entry) => entry.value.id),
          [`${kind}-1`],
        );
      }
      assert.deepEqual(await storage.listRecords("missing"), []);
    },
  },
  {
    clause:
      "listRecords() pages with after and limit, covering every record once",
    async run({ storage }): Promise<void> {
      const ids = Array.from(
        { length: 30 },
        (_, index) => `r${String(index).padStart(2, "0")}`,
      ).concat(["\u{1F600}", "\uFF5E", "r05\0"]);
      await commit(
        storage,
        ids.map((id, index) =>
          putRecord(record(KIND, id, { deleted: index % 3 === 0 }))
        ),
      );
      for (const includeDeleted of [false, true]) {
        const all = await storage.listRecords(KIND, { includeDeleted });
        assert.equal(all.length, includeDeleted ? 33 : 22);
        for (const limit of [1, 2, 7, 33, 34]) {
          const paged = await pages(
            (after) =>
              storage.listRecords(
                KIND,
                after === undefined
                  ? { includeDeleted, limit }
                  : { includeDeleted, limit, after },
              ),
            (entry) => entry.value.id,
            limit,
          );
          assert.deepEqual(paged, all, `limit ${limit}`);
        }
      }
      const ids2 = async (after: string, limit?: number): Promise<string[]> =>
        (await storage.listRecords(
          KIND,
          limit === undefined
            ? { after, includeDeleted: true }
            : { after, limit, includeDeleted: true },
        )).map((entry) => entry.value.id);
      // A cursor need not name a stored record.
      assert.deepEqual(await ids2("r05\0\0", 2), ["r06", "r07"]);
      assert.deepEqual(await ids2("\uFFFF"), []);
      assert.deepEqual(await ids2("", 0), []);
      assert.deepEqual(
        await storage.listRecords(KIND, { limit: 0, includeDeleted: true }),
        [],
      );
    },
  },
  {
    clause: "listOps() filters by states, kinds and id",
    async run({ storage }): Promise<void> {
      const layout: OpLayout = [
        ["todo", "a", "pending"],
        ["todo", "b", "quarantined"],
        ["note", "a", "parked"],
        ["todo", "a", "parked"],
        ["note", "b", "pending"],
        ["todo", "a", "pending"],
        ["todo2", "a", "pending"],
      ];
      const list = await layOut(storage, layout);
      assert.deepEqual(await list({}), [1, 2, 3, 4, 5, 6, 7]);
      assert.deepEqual(await list({ states: ["pending"] }), [1, 5, 6, 7]);
      assert.deepEqual(await list({ states: ["quarantined", "parked"] }), [
        2,
        3,
        4,
      ]);
      assert.deepEqual(await list({ states: [] }), []);
      assert.deepEqual(await list({ kinds: ["todo"] }), [1, 2, 4, 6]);
      assert.deepEqual(await list({ kinds: ["todo", "note"] }), [
        1,
        2,
        3,
        4,
        5,
        6,
      ]);
      assert.deepEqual(await list({ kinds: [] }), []);
      assert.deepEqual(await list({ kinds: ["missing"] }), []);
      assert.deepEqual(await list({ kinds: ["todo"], id: "a" }), [1, 4, 6]);
      assert.deepEqual(await list({ kinds: ["note"], id: "a" }), [3]);
      assert.deepEqual(await list({ kinds: ["todo"], id: "zzz" }), []);
      assert.deepEqual(
        await list({ kinds: ["todo"], id: "a", states: ["pending"] }),
        [1, 6],
      );
      assert.deepEqual(
        await list({
          kinds: ["todo"],
          id: "a",
          states: ["pending"],
          after: opId(1),
        }),
        [6],
      );
      assert.deepEqual(await list({ kinds: ["todo"], id: "a", limit: 2 }), [
        1,
        4,
      ]);
      assert.deepEqual(await list({ states: ["pending"], limit: 2 }), [1, 5]);
      assert.deepEqual(
        await list({ states: ["pending"], limit: 2, after: opId(5) }),
        [6, 7],
      );
      assert.deepEqual(await list({ after: opId(3) }), [4, 5, 6, 7]);
      assert.deepEqual(await list({ limit: 0 }), []);
    },
  },
  {
    clause: "listOps() with id and no kinds matches that id in every kind",
    async run({ storage }): Promise<void> {
      const layout: OpLayout = [
        ["todo", "a", "pending"],
        ["note", "a", "parked"],
        ["todo", "ab", "pending"],
        ["a", "b", "pending"],
        ["", "a", "quarantined"],
        ["todo", "", "pending"],
        ["note", "A", "pending"],
        ["x", "a", "pending"],
      ];
      const list = await layOut(storage, layout);
      assert.deepEqual(await list({ id: "a" }), [1, 2, 5, 8]);
      assert.deepEqual(await list({ id: "a", states: ["pending"] }), [1, 8]);
      assert.deepEqual(await list({ id: "a", after: opId(2) }), [5, 8]);
      assert.deepEqual(await list({ id: "a", limit: 2 }), [1, 2]);
      assert.deepEqual(await list({ id: "" }), [6]);
      assert.deepEqual(await list({ id: "b" }), [4]);
      assert.deepEqual(await list({ id: "ab" }), [3]);
      assert.deepEqual(await list({ id: "zzz" }), []);
      assert.deepEqual(await list({ id: "a", kinds: [] }), []);
      // Moving an op to another record moves it between the matches.
      await succeeds(storage, [
        putOp(op(opId(2), { kind: "note", id: "b", state: "parked" })),
      ]);
      assert.deepEqual(await list({ id: "a" }), [1, 5, 8]);
      assert.deepEqual(await list({ id: "b" }), [2, 4]);
    },
  },
  {
    clause: "listOps() reflects an op's latest state, kind and id",
    async run({ storage }): Promise<void> {
      await commit(storage, [putOp(op(opId(1), { kind: "todo", id: "a" }))]);
      const list = async (options: ListOpsOptions): Promise<string[]> =>
        (await storage.listOps(options)).map((entry) => entry.value.opId);
      assert.deepEqual(await list({ states: ["pending"] }), [opId(1)]);
      await succeeds(storage, [
        putOp(op(opId(1), { kind: "todo", id: "a", state: "quarantined" })),
      ]);
      assert.deepEqual(await list({ states: ["pending"] }), []);
      assert.deepEqual(await list({ states: ["quarantined"] }), [opId(1)]);
      await succeeds(storage, [
        putOp(op(opId(1), { kind: "note", id: "b", state: "quarantined" })),
      ]);
      assert.deepEqual(await list({ kinds: ["todo"], id: "a" }), []);
      assert.deepEqual(await list({ kinds: ["todo"] }), []);
      assert.deepEqual(await list({ kinds: ["note"], id: "b" }), [opId(1)]);
      await succeeds(storage, [deleteOp(opId(1))]);
      assert.deepEqual(await list({}), []);
      assert.deepEqual(await list({ kinds: ["note"], id: "b" }), []);
      assert.deepEqual(await list({ states: ["quarantined"] }), []);
    },
  },
  {
    clause: "listOps() pages with after and limit, covering every op once",
    async run({ storage }): Promise<void> {
      const states = ["pending", "quarantined", "parked"] as const;
      await commit(
        storage,
        Array.from({ length: 40 }, (_, index) =>
          putOp(op(opId(index), {
            state: states[index % 3]!,
            id: String(index % 4),
          }))),
      );
      const filters: ListOpsOptions[] = [
        {},
        { states: ["pending"] },
        { kinds: [KIND], id: "1" },
        { states: ["parked", "quarantined"], kinds: [KIND] },
      ];
      for (const filter of filters) {
        const all = await storage.listOps(filter);
        assert.ok(all.length > 0);
        for (const limit of [1, 3, 40, 41]) {
          const paged = await pages(
            (after) =>
              storage.listOps(
                after === undefined
                  ? { ...filter, limit }
                  : { ...filter, limit, after },
              ),
            (entry) => entry.value.opId,
            limit,
          );
          assert.deepEqual(paged, all, `${JSON.stringify(filter)} ${limit}`);
        }
      }
    },
  },
];
