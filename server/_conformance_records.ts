/**
 * The server-store conformance cases about records: commits, the keyset
 * order and selection, paging, tombstones, awkward ids, namespaces, copies,
 * concurrent commits and the page's byte limit.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { JsonObject } from "../src/json.ts";
import {
  AWKWARD_IDS,
  entry,
  ids,
  keysetSort,
  plain,
  put,
  selects,
  serverRecord,
  type ServerStoreCase,
  shuffled,
} from "./_conformance_kit.ts";
import type {
  ListServerRecordsOptions,
  ServerRecord,
  ServerWrite,
} from "./store.ts";

/** The cases, in the order they are registered. */
export const RECORD_CASES: readonly ServerStoreCase[] = [
  {
    title: "getRecord() returns null when absent and the record once committed",
    async run(store) {
      assert.equal(await store.getRecord("ns", "todo", "1"), null);
      const record = serverRecord("todo", "1", 1_000, {
        fields: { empty: "", zero: 0, no: false, nil: null, list: [] },
      });
      await store.commit([put("ns", record)]);
      assert.deepEqual(await store.getRecord("ns", "todo", "1"), record);
      assert.equal(await store.getRecord("ns", "todo", "2"), null);
      assert.equal(await store.getRecord("ns", "note", "1"), null);
    },
  },
  {
    title: "commit() replaces a record, the last write of one commit winning",
    async run(store) {
      await store.commit([put("ns", serverRecord("todo", "1", 1))]);
      const second = serverRecord("todo", "1", 2, { fields: { v: 2 } });
      const third = serverRecord("todo", "1", 3, { deleted: true });
      await store.commit([put("ns", second), put("ns", third)]);
      assert.deepEqual(await store.getRecord("ns", "todo", "1"), third);
      const page = await store.listRecords("ns", "todo", { limit: 10 });
      assert.deepEqual(plain(page.records), [third]);
    },
  },
  {
    title: "commit() is all-or-nothing",
    async run(store) {
      const record = serverRecord("todo", "1", 5);
      const bogus = {
        type: "bogus",
        namespace: "ns",
      } as unknown as ServerWrite;
      await assert.rejects(
        store.commit([
          put("ns", record),
          { type: "idempotency", namespace: "ns", entry: entry("k", 100) },
          bogus,
        ]),
        TypeError,
      );
      assert.equal(await store.getRecord("ns", "todo", "1"), null);
      assert.equal(await store.getIdempotency("ns", "k"), null);
      assert.equal(await store.lastWrite("ns"), null);
      // The store still works after the refused commit.
      await store.commit([put("ns", record)]);
      assert.deepEqual(await store.getRecord("ns", "todo", "1"), record);
    },
  },
  {
    title: "listRecords() orders by updatedAt, then id by UTF-16 code units",
    async run(store) {
      const idList = [
        "b",
        "a",
        "a\0",
        "ab",
        "\uFFFF",
        "😀", // U+1F600 is \uD83D\uDE00: before \uFFFF in UTF-16, after in UTF-8
        "Z",
        "",
        "é",
      ];
      const records = idList.flatMap((id) => [
        serverRecord("todo", id, 20),
        serverRecord("todo", `${id}-early`, 10),
      ]);
      await store.commit(shuffled(records).map((record) => put("ns", record)));
      const page = await store.listRecords("ns", "todo", { limit: 100 });
      assert.deepEqual(ids(page.records), ids(keysetSort(records)));
      const late = ids(page.records).slice(idList.length);
      assert.ok(late.indexOf("😀") < late.indexOf("\uFFFF"));
      assert.deepEqual(late.slice(0, 4), ["", "Z", "a", "a\0"]);
    },
  },
  {
    title: "listRecords() selects by keyset: >= since, or > (since, afterId)",
    async run(store) {
      const records = [
        serverRecord("todo", "a", 10),
        serverRecord("todo", "b", 10),
        serverRecord("todo", "c", 10),
        serverRecord("todo", "d", 20),
        serverRecord("todo", "e", 20),
      ];
      await store.commit(records.map((record) => put("ns", record)));
      const list = async (
        query: { since?: number; afterId?: string; limit?: number },
      ): Promise<string[]> =>
        ids(
          (await store.listRecords("ns", "todo", { limit: 100, ...query }))
            .records,
        );
      assert.deepEqual(await list({}), ["a", "b", "c", "d", "e"]);
      assert.deepEqual(await list({ since: 10 }), ["a", "b", "c", "d", "e"]);
      assert.deepEqual(await list({ since: 10, afterId: "b" }), [
        "c",
        "d",
        "e",
      ]);
      assert.deepEqual(await list({ since: 10, afterId: "c" }), ["d", "e"]);
      assert.deepEqual(await list({ since: 20, afterId: "d" }), ["e"]);
      assert.deepEqual(await list({ since: 15 }), ["d", "e"]);
      assert.deepEqual(await list({ since: 21 }), []);
      assert.deepEqual(await list({ since: 20, afterId: "e" }), []);
      assert.deepEqual(await list({ limit: 2 }), ["a", "b"]);
      assert.deepEqual(await list({ since: 10, afterId: "a", limit: 1 }), [
        "b",
      ]);
    },
  },
  {
    title:
      "listRecords() pages exactly through 1,000 records sharing one updatedAt",
    async run(store) {
      const all = Array.from(
        { length: 1000 },
        (_, index) => serverRecord("todo", `r${(index * 7919) % 1000}`, 500),
      );
      await store.commit(shuffled(all).map((record) => put("ns", record)));
      const seen: string[] = [];
      let cursor: { since: number; afterId: string } | null = null;
      let pages = 0;
      for (;;) {
        const { records } = await store.listRecords("ns", "todo", {
          limit: 7,
          ...(cursor ?? {}),
        });
        pages++;
        seen.push(...ids(records));
        const last = records.at(-1);
        if (records.length < 7 || last === undefined) break;
        cursor = { since: last.updatedAt, afterId: last.id };
      }
      assert.equal(pages, 143);
      assert.equal(seen.length, 1000);
      assert.equal(new Set(seen).size, 1000);
      assert.deepEqual(seen, ids(keysetSort(all)));
    },
  },
  {
    title: "listRecords() skips tombstones only when includeDeleted is false",
    async run(store) {
      await store.commit([
        put("ns", serverRecord("todo", "a", 1, { deleted: true })),
        put("ns", serverRecord("todo", "b", 2)),
        put("ns", serverRecord("todo", "c", 3, { deleted: true })),
        put("ns", serverRecord("todo", "d", 4)),
        put("ns", serverRecord("todo", "e", 5)),
      ]);
      const all = await store.listRecords("ns", "todo", { limit: 10 });
      assert.deepEqual(ids(all.records), ["a", "b", "c", "d", "e"]);
      const explicit = await store.listRecords("ns", "todo", {
        limit: 10,
        includeDeleted: true,
      });
      assert.deepEqual(ids(explicit.records), ["a", "b", "c", "d", "e"]);
      const live = await store.listRecords("ns", "todo", {
        limit: 2,
        includeDeleted: false,
      });
      assert.deepEqual(ids(live.records), ["b", "d"]);
      const rest = await store.listRecords("ns", "todo", {
        limit: 2,
        includeDeleted: false,
        since: 4,
        afterId: "d",
      });
      assert.deepEqual(ids(rest.records), ["e"]);
    },
  },
  {
    title:
      "ids, kinds, namespaces and keys with /, NUL, unicode and lone surrogates round-trip",
    async run(store) {
      const writes: ServerWrite[] = [];
      for (const [index, id] of AWKWARD_IDS.entries()) {
        writes.push(
          put(
            id,
            serverRecord(id, id, index, { fields: { text: `v\0${id}` } }),
          ),
          { type: "idempotency", namespace: id, entry: entry(id, 1e12) },
        );
      }
      await store.commit(writes);
      for (const [index, id] of AWKWARD_IDS.entries()) {
        const record = await store.getRecord(id, id, id);
        assert.deepEqual(
          record,
          serverRecord(id, id, index, { fields: { text: `v\0${id}` } }),
        );
        const page = await store.listRecords(id, id, { limit: 10 });
        assert.deepEqual(ids(page.records), [id]);
        assert.deepEqual(await store.getIdempotency(id, id), entry(id, 1e12));
      }
      // A prefix is another key: "nul" must not find "nul\0byte".
      assert.equal(
        await store.getRecord("nul\0byte", "nul\0byte", "nul"),
        null,
      );
    },
  },
  {
    title: "namespaces are isolated",
    async run(store) {
      await store.commit([
        put("alice", serverRecord("todo", "1", 1, { fields: { owner: "a" } })),
        put("bob", serverRecord("todo", "1", 2, { fields: { owner: "b" } })),
        put("bob", serverRecord("todo", "2", 3, { deleted: true })),
        { type: "idempotency", namespace: "alice", entry: entry("k", 100) },
      ]);
      const alice = await store.getRecord("alice", "todo", "1");
      assert.equal(alice?.data.owner, "a");
      assert.deepEqual(
        ids((await store.listRecords("alice", "todo", { limit: 10 })).records),
        ["1"],
      );
      assert.equal(await store.getIdempotency("bob", "k"), null);
      assert.equal(await store.getRecord("alice", "todo", "2"), null);
      await store.purge({ tombstonesUpdatedBefore: 100 });
      const alicePage = await store.listRecords("alice", "todo", { limit: 10 });
      assert.equal(alicePage.horizon, null);
      const bobPage = await store.listRecords("bob", "todo", { limit: 10 });
      assert.equal(bobPage.horizon, 4);
      assert.equal(
        (await store.getRecord("bob", "todo", "1"))?.data.owner,
        "b",
      );
    },
  },
  {
    title: "returned records and entries are copies",
    async run(store) {
      await store.commit([
        put("ns", serverRecord("todo", "1", 1, { fields: { list: [1] } })),
        { type: "idempotency", namespace: "ns", entry: entry("k", 100) },
      ]);
      const record = await store.getRecord("ns", "todo", "1");
      assert.ok(record !== null);
      (record.data.list as number[]).push(2);
      (record.data as JsonObject).extra = true;
      const page = await store.listRecords("ns", "todo", { limit: 1 });
      (page.records[0]!.data as JsonObject).extra = true;
      const stored = await store.getIdempotency("ns", "k");
      ((stored?.body as JsonObject).nested as unknown[]).push("mutated");
      assert.deepEqual(
        await store.getRecord("ns", "todo", "1"),
        serverRecord("todo", "1", 1, { fields: { list: [1] } }),
      );
      assert.deepEqual(await store.getIdempotency("ns", "k"), entry("k", 100));
    },
  },
  {
    title: "two concurrent commits both apply",
    async run(store) {
      await Promise.all([
        store.commit([put("ns", serverRecord("todo", "1", 1))]),
        store.commit([put("ns", serverRecord("todo", "2", 2))]),
      ]);
      const page = await store.listRecords("ns", "todo", { limit: 10 });
      assert.deepEqual(ids(page.records), ["1", "2"]);
    },
  },
  {
    title:
      "listRecords() stops at maxBytes with at least one record, and says so",
    async run(store) {
      const records = ["é😀", "a", "bb", "ccc", "dddd"].map((pad, index) =>
        serverRecord("todo", `r${index}`, 10 + index, {
          fields: { pad: pad.repeat(50) },
          deleted: index === 2,
        })
      );
      await store.commit(records.map((record) => put("ns", record)));
      const size = (record: ServerRecord): number =>
        new TextEncoder().encode(JSON.stringify(record.data)).length;
      const [r0, r1, r2, r3] = records.map(size) as [
        number,
        number,
        number,
        number,
      ];
      const list = async (
        options: Partial<ListServerRecordsOptions>,
      ): Promise<[string[], boolean]> => {
        const page = await store.listRecords("ns", "todo", {
          limit: 100,
          ...options,
        });
        return [ids(page.records), page.truncated];
      };
      assert.deepEqual(await list({ maxBytes: r0 + r1 }), [["r0", "r1"], true]);
      assert.deepEqual(await list({ maxBytes: r0 + r1 - 1 }), [["r0"], true]);
      // A record larger than the budget still goes out, alone.
      assert.deepEqual(await list({ maxBytes: 1 }), [["r0"], true]);
      assert.deepEqual(await list({ maxBytes: 1e9 }), [
        ["r0", "r1", "r2", "r3", "r4"],
        false,
      ]);
      assert.deepEqual(await list({}), [["r0", "r1", "r2", "r3", "r4"], false]);
      // Stopped by limit, not by bytes.
      assert.deepEqual(await list({ limit: 2, maxBytes: 1e9 }), [
        ["r0", "r1"],
        false,
      ]);
      // Skipped tombstones cost nothing; the keyset applies first.
      assert.deepEqual(
        await list({
          since: 11,
          afterId: "r1",
          includeDeleted: false,
          maxBytes: r3,
        }),
        [["r3"], true],
      );
      assert.deepEqual(
        await list({ since: 12, maxBytes: r2 + r3 }),
        [["r2", "r3"], true],
      );
      assert.deepEqual(await list({ since: 14, maxBytes: 1 }), [["r4"], false]);
    },
  },
  {
    title:
      "tenancy: listRecords() returns only its namespace, in every keyset shape",
    async run(store) {
      // Bob's records share the kind, the ids and the instants of Alice's, and
      // interleave them in keyset order; Mallory's have other ids.
      const owned = new Map<string, ServerRecord[]>();
      const writes: ServerWrite[] = [];
      for (const owner of ["alice", "bob", "mallory"]) {
        const records: ServerRecord[] = [];
        for (let index = 0; index < 24; index++) {
          const id = owner === "mallory" ? `m${index}` : `r${index}`;
          records.push(
            serverRecord("todo", id, 100 + 10 * Math.floor(index / 8), {
              deleted: index % 5 === (owner === "bob" ? 1 : 0),
              fields: { owner },
            }),
          );
        }
        if (owner === "bob") {
          records.push(serverRecord("todo", "r3b", 100, { fields: { owner } }));
        }
        owned.set(owner, records);
        writes.push(...records.map((record) => put(owner, record)));
      }
      await store.commit(shuffled(writes));
      await store.purge({ tombstonesUpdatedBefore: 0 });
      for (const owner of ["alice", "bob"]) {
        const mine = keysetSort(owned.get(owner)!);
        for (
          const shape of [
            {},
            { since: 110 },
            { since: 100, afterId: "r3" },
            { since: 110, afterId: "r1" },
            { since: 110, afterId: "" },
            { since: 120, afterId: "r17" },
            { since: 100, afterId: "r3", includeDeleted: false },
            { includeDeleted: false },
            { since: 110, includeDeleted: false },
            { maxBytes: 1 },
            { since: 100, afterId: "r3", maxBytes: 300 },
          ] as Partial<ListServerRecordsOptions>[]
        ) {
          const page = await store.listRecords(owner, "todo", {
            limit: 100,
            ...shape,
          });
          const expected = mine.filter((record) =>
            selects(record, shape) &&
            (shape.includeDeleted !== false || record.deletedAt === null)
          );
          const got = shape.maxBytes === undefined
            ? expected
            : expected.slice(0, page.records.length);
          assert.ok(page.records.length > 0, JSON.stringify(shape));
          assert.deepEqual(
            plain(page.records),
            got,
            `${owner} ${JSON.stringify(shape)}`,
          );
        }
        // Paged three at a time through the shared instants, cursor by cursor.
        const seen: ServerRecord[] = [];
        let cursor: { since: number; afterId: string } | null = null;
        for (;;) {
          const { records }: { records: ServerRecord[] } = await store
            .listRecords(owner, "todo", { limit: 3, ...(cursor ?? {}) });
          seen.push(...records);
          const last = records.at(-1);
          if (records.length < 3 || last === undefined) break;
          cursor = { since: last.updatedAt, afterId: last.id };
        }
        assert.deepEqual(plain(seen), mine);
        assert.ok(seen.every((record) => record.data.owner === owner));
      }
    },
  },
];
