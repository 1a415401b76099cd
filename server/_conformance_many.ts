/**
 * The server-store conformance cases of the batch reads
 * (`ServerStore.getRecords` and `getIdempotencies`): each item read as the
 * single read would, in order, with `null` for an absent one, repeats
 * allowed, namespaces apart, copies returned. A case checks a method only
 * when the store has it.
 *
 * @module
 */

import assert from "node:assert/strict";
import { ClosedError } from "../src/errors.ts";
import {
  AWKWARD_IDS,
  entry,
  put,
  serverRecord,
  type ServerStoreCase,
} from "./_conformance_kit.ts";
import type { ServerStore, ServerWrite } from "./store.ts";

/** Stores a few records and entries in `ns`, one of them a tombstone. */
async function fill(store: ServerStore): Promise<void> {
  await store.commit([
    put("ns", serverRecord("todo", "a", 1, { fields: { v: 1 } })),
    put("ns", serverRecord("todo", "b", 2, { deleted: true })),
    put("ns", serverRecord("note", "a", 3, { fields: { text: "x" } })),
    put("other", serverRecord("todo", "c", 4)),
    ...AWKWARD_IDS.map((id, index) =>
      put("ns", serverRecord("todo", id, 10 + index))
    ),
    { type: "idempotency", namespace: "ns", entry: entry("k1", 100) },
    // Expired: a batch read may return it, as the single read may.
    { type: "idempotency", namespace: "ns", entry: entry("k2", 1) },
    { type: "idempotency", namespace: "other", entry: entry("k3", 100) },
    ...AWKWARD_IDS.map((key): ServerWrite => ({
      type: "idempotency",
      namespace: "ns",
      entry: entry(`key:${key}`, 100),
    })),
  ]);
}

/** The cases, in order. */
export const MANY_CASES: readonly ServerStoreCase[] = [
  {
    title:
      "getRecords(), when present, reads each record as getRecord() does, in order, null when absent",
    async run(store) {
      if (store.getRecords === undefined) return;
      await fill(store);
      assert.deepEqual(await store.getRecords("ns", []), []);
      const refs = [
        { kind: "todo", id: "b" },
        { kind: "todo", id: "missing" },
        { kind: "note", id: "a" },
        { kind: "todo", id: "c" },
        { kind: "todo", id: "a" },
        { kind: "todo", id: "b" },
        ...AWKWARD_IDS.map((id) => ({ kind: "todo", id })),
      ];
      const many = await store.getRecords("ns", refs);
      const one = await Promise.all(
        refs.map(({ kind, id }) => store.getRecord("ns", kind, id)),
      );
      assert.deepEqual(many, one);
      assert.equal(many[1], null);
      // Another namespace's record is not this one's.
      assert.equal(many[3], null);
      assert.equal(many[0]!.deletedAt, 2);
      // A copy: changing it changes nothing stored.
      many[4]!.data.v = 99;
      assert.equal(many[4] === many[5], false);
      assert.deepEqual((await store.getRecord("ns", "todo", "a"))!.data.v, 1);
    },
  },
  {
    title:
      "getIdempotencies(), when present, reads each entry as getIdempotency() does, in order, null when absent",
    async run(store) {
      if (store.getIdempotencies === undefined) return;
      await fill(store);
      assert.deepEqual(await store.getIdempotencies("ns", []), []);
      const keys = [
        "k2",
        "missing",
        "k1",
        "k3",
        "k1",
        ...AWKWARD_IDS.map((key) => `key:${key}`),
      ];
      const many = await store.getIdempotencies("ns", keys);
      const one = await Promise.all(
        keys.map((key) => store.getIdempotency("ns", key)),
      );
      assert.equal(many.length, keys.length);
      // An expired entry may be returned or not, as by the single read.
      assert.ok(many[0] === null || many[0]!.expiresAt === 1);
      assert.deepEqual(many.slice(1), one.slice(1));
      assert.equal(many[1], null);
      assert.equal(many[3], null);
      assert.equal(many[2]!.key, "k1");
      assert.equal(many[2] === many[4], false);
    },
  },
  {
    title:
      "commit() keeps the last write of a key, one record per namespace, and a record's data apart from its key's body",
    async run(store) {
      const record = serverRecord("todo", "a", 5, { fields: { v: 1 } });
      const later = serverRecord("todo", "a", 6, { fields: { v: 2 } });
      await store.commit([
        put("ns", record),
        // The server stores the record itself as its key's response.
        {
          type: "idempotency",
          namespace: "ns",
          entry: { ...entry("k", 100), body: record.data },
        },
        put("other", later),
        put("ns", later),
        { type: "idempotency", namespace: "ns", entry: entry("k", 200, 200) },
        { type: "idempotency", namespace: "other", entry: entry("k", 300) },
      ]);
      assert.deepEqual(await store.getRecord("ns", "todo", "a"), later);
      assert.deepEqual(await store.getRecord("other", "todo", "a"), later);
      assert.deepEqual(
        await store.getIdempotency("ns", "k"),
        entry("k", 200, 200),
      );
      assert.deepEqual(
        await store.getIdempotency("other", "k"),
        entry("k", 300),
      );
      // One object as a record's data and a key's body, stored as both.
      const shared = serverRecord("todo", "b", 7, { fields: { v: 3 } });
      await store.commit([
        put("ns", shared),
        {
          type: "idempotency",
          namespace: "ns",
          entry: { ...entry("j", 100), body: shared.data },
        },
      ]);
      assert.deepEqual(await store.getRecord("ns", "todo", "b"), shared);
      assert.deepEqual(
        (await store.getIdempotency("ns", "j"))!.body,
        shared.data,
      );
    },
  },
  {
    title:
      "getRecords() and getIdempotencies(), when present, reject after close",
    async run(store) {
      await store.close();
      if (store.getRecords !== undefined) {
        await assert.rejects(
          store.getRecords("ns", [{ kind: "todo", id: "a" }]),
          ClosedError,
        );
      }
      if (store.getIdempotencies !== undefined) {
        await assert.rejects(
          store.getIdempotencies("ns", ["k1"]),
          ClosedError,
        );
      }
    },
  },
];
