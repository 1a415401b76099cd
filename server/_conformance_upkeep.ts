/**
 * The server-store conformance cases about what the server keeps besides
 * records: idempotency entries, purges and horizons, the per-namespace
 * clock, trimming, close, and survival across a reopen.
 *
 * @module
 */

import assert from "node:assert/strict";
import { ClosedError } from "../src/errors.ts";
import {
  entry,
  ids,
  plain,
  put,
  serverRecord,
  type ServerStoreCase,
} from "./_conformance_kit.ts";
import type { ServerWrite } from "./store.ts";

/** The cases, in the order they are registered. */
export const UPKEEP_CASES: readonly ServerStoreCase[] = [
  {
    title:
      "getIdempotency() returns the committed entry, replaced by a later one",
    async run(store) {
      assert.equal(await store.getIdempotency("ns", "k"), null);
      await store.commit([
        { type: "idempotency", namespace: "ns", entry: entry("k", 100, 422) },
      ]);
      assert.deepEqual(
        await store.getIdempotency("ns", "k"),
        entry("k", 100, 422),
      );
      const replacement = { ...entry("k", 200, 200), fingerprint: "other" };
      await store.commit([
        { type: "idempotency", namespace: "ns", entry: replacement },
      ]);
      assert.deepEqual(await store.getIdempotency("ns", "k"), replacement);
    },
  },
  {
    title: "purge() removes idempotency entries expired at the given instant",
    async run(store) {
      await store.commit([
        { type: "idempotency", namespace: "ns", entry: entry("a", 100) },
        { type: "idempotency", namespace: "ns", entry: entry("b", 200) },
        { type: "idempotency", namespace: "other", entry: entry("c", 300) },
      ]);
      assert.deepEqual(await store.purge({ idempotencyExpiredAt: 150 }), {
        idempotency: 1,
        tombstones: 0,
      });
      assert.equal(await store.getIdempotency("ns", "a"), null);
      assert.notEqual(await store.getIdempotency("ns", "b"), null);
      assert.deepEqual(await store.purge({ idempotencyExpiredAt: 200 }), {
        idempotency: 1,
        tombstones: 0,
      });
      assert.equal(await store.getIdempotency("ns", "b"), null);
      assert.notEqual(await store.getIdempotency("other", "c"), null);
      assert.deepEqual(await store.purge({}), {
        idempotency: 0,
        tombstones: 0,
      });
    },
  },
  {
    title:
      "purge() removes old tombstones and raises the horizon past the newest",
    async run(store) {
      await store.commit([
        put("ns", serverRecord("todo", "live", 5)),
        put("ns", serverRecord("todo", "t10", 10, { deleted: true })),
        put("ns", serverRecord("todo", "t20", 20, { deleted: true })),
        put("ns", serverRecord("todo", "t30", 30, { deleted: true })),
        put("ns", serverRecord("note", "t40", 40, { deleted: true })),
      ]);
      const horizon = async (kind: string): Promise<number | null> =>
        (await store.listRecords("ns", kind, { limit: 1 })).horizon;
      assert.equal(await horizon("todo"), null);
      assert.deepEqual(await store.purge({ tombstonesUpdatedBefore: 25 }), {
        idempotency: 0,
        tombstones: 2,
      });
      assert.equal(await horizon("todo"), 21);
      assert.equal(await horizon("note"), null);
      assert.deepEqual(
        ids((await store.listRecords("ns", "todo", { limit: 10 })).records),
        ["live", "t30"],
      );
      // Nothing older is left: the horizon is never lowered.
      assert.equal(
        (await store.purge({ tombstonesUpdatedBefore: 15 })).tombstones,
        0,
      );
      assert.equal(await horizon("todo"), 21);
      assert.equal(
        (await store.purge({ tombstonesUpdatedBefore: 100 })).tombstones,
        2,
      );
      assert.equal(await horizon("todo"), 31);
      assert.equal(await horizon("note"), 41);
      assert.notEqual(await store.getRecord("ns", "todo", "live"), null);
    },
  },
  {
    title:
      "purge() with a limit removes the oldest first, in bounded slices, with an exact horizon",
    async run(store) {
      await store.commit([
        { type: "idempotency", namespace: "ns", entry: entry("c", 300) },
        { type: "idempotency", namespace: "other", entry: entry("a", 100) },
        { type: "idempotency", namespace: "ns", entry: entry("b", 200) },
        put("ns", serverRecord("todo", "t30", 30, { deleted: true })),
        put("ns", serverRecord("todo", "t10", 10, { deleted: true })),
        put("other", serverRecord("todo", "o20", 20, { deleted: true })),
        put("ns", serverRecord("note", "n20", 20, { deleted: true })),
        put("ns", serverRecord("todo", "t40", 40, { deleted: true })),
      ]);
      const horizon = async (ns: string, kind: string) =>
        (await store.listRecords(ns, kind, { limit: 1 })).horizon;
      const bounds = {
        idempotencyExpiredAt: 1000,
        tombstonesUpdatedBefore: 35,
      };
      // Two entries of three; tombstones up to the second one's millisecond
      // (20, which three share) of four.
      assert.deepEqual(await store.purge({ ...bounds, limit: 2 }), {
        idempotency: 2,
        tombstones: 3,
      });
      assert.equal(await store.getIdempotency("other", "a"), null);
      assert.equal(await store.getIdempotency("ns", "b"), null);
      assert.notEqual(await store.getIdempotency("ns", "c"), null);
      assert.equal(await horizon("ns", "todo"), 11);
      assert.equal(await horizon("ns", "note"), 21);
      assert.equal(await horizon("other", "todo"), 21);
      assert.notEqual(await store.getRecord("ns", "todo", "t30"), null);
      assert.deepEqual(await store.purge({ ...bounds, limit: 2 }), {
        idempotency: 1,
        tombstones: 1,
      });
      assert.equal(await horizon("ns", "todo"), 31);
      assert.notEqual(await store.getRecord("ns", "todo", "t40"), null);
      assert.deepEqual(await store.purge({ ...bounds, limit: 2 }), {
        idempotency: 0,
        tombstones: 0,
      });
    },
  },
  {
    title:
      "lastWrite() is the greatest (updatedAt, id) of its namespace and is not lowered by purge",
    async run(store) {
      assert.equal(await store.lastWrite("a"), null);
      await store.commit([
        put("a", serverRecord("todo", "1", 5)),
        put("a", serverRecord("note", "0", 5)),
        put("a", serverRecord("todo", "z", 4)),
        put("b", serverRecord("todo", "2", 3)),
      ]);
      assert.deepEqual(await store.lastWrite("a"), { updatedAt: 5, id: "1" });
      // The clock is per namespace: "a" never moves "b".
      assert.deepEqual(await store.lastWrite("b"), { updatedAt: 3, id: "2" });
      assert.equal(await store.lastWrite("c"), null);
      // A later commit of an older instant or smaller id lowers nothing.
      await store.commit([
        put("a", serverRecord("todo", "0", 5)),
        put("a", serverRecord("todo", "y", 1)),
      ]);
      assert.deepEqual(await store.lastWrite("a"), { updatedAt: 5, id: "1" });
      await store.commit([
        put("a", serverRecord("todo", "3", 9, { deleted: true })),
      ]);
      await store.purge({ tombstonesUpdatedBefore: 100 });
      assert.equal(await store.getRecord("a", "todo", "3"), null);
      assert.deepEqual(await store.lastWrite("a"), { updatedAt: 9, id: "3" });
      assert.deepEqual(await store.lastWrite("b"), { updatedAt: 3, id: "2" });
    },
  },
  {
    title:
      "trimIdempotency() removes the oldest entries that may go and counts the rest",
    async run(store) {
      await store.commit([
        ...[30, 10, 50, 20, 40].map((expiresAt): ServerWrite => ({
          type: "idempotency",
          namespace: "ns",
          entry: entry(`k${expiresAt}`, expiresAt),
        })),
        { type: "idempotency", namespace: "other", entry: entry("k10", 10) },
      ]);
      const count = { keep: Infinity, expiresAtOrBefore: -Infinity };
      assert.deepEqual(await store.trimIdempotency("ns", count), {
        count: 5,
        oldestExpiresAt: 10,
      });
      assert.deepEqual(
        await store.trimIdempotency("ns", { keep: 3, expiresAtOrBefore: 100 }),
        { count: 3, oldestExpiresAt: 30 },
      );
      assert.equal(await store.getIdempotency("ns", "k10"), null);
      assert.equal(await store.getIdempotency("ns", "k20"), null);
      assert.deepEqual(
        await store.getIdempotency("ns", "k30"),
        entry("k30", 30),
      );
      // Only entries old enough may go: here one, though three are asked for.
      assert.deepEqual(
        await store.trimIdempotency("ns", { keep: 0, expiresAtOrBefore: 35 }),
        { count: 2, oldestExpiresAt: 40 },
      );
      assert.deepEqual(
        await store.trimIdempotency("ns", { keep: 5, expiresAtOrBefore: 100 }),
        { count: 2, oldestExpiresAt: 40 },
      );
      // Another namespace is untouched, an unknown one empty.
      assert.deepEqual(await store.trimIdempotency("other", count), {
        count: 1,
        oldestExpiresAt: 10,
      });
      assert.deepEqual(await store.trimIdempotency("nobody", count), {
        count: 0,
        oldestExpiresAt: null,
      });
    },
  },
  {
    title:
      "close() is idempotent and every later call rejects with ClosedError",
    async run(store) {
      await store.commit([put("ns", serverRecord("todo", "1", 1))]);
      await store.close();
      await store.close();
      await assert.rejects(store.getRecord("ns", "todo", "1"), ClosedError);
      await assert.rejects(
        store.listRecords("ns", "todo", { limit: 1 }),
        ClosedError,
      );
      await assert.rejects(store.getIdempotency("ns", "k"), ClosedError);
      await assert.rejects(
        store.commit([put("ns", serverRecord("todo", "2", 2))]),
        ClosedError,
      );
      await assert.rejects(store.purge({}), ClosedError);
      await assert.rejects(store.lastWrite("ns"), ClosedError);
      await assert.rejects(
        store.trimIdempotency("ns", { keep: 0, expiresAtOrBefore: 0 }),
        ClosedError,
      );
    },
  },
  {
    title: "records, entries, horizons and the clock survive a reopen",
    persistent: true,
    async run(store, context) {
      const record = serverRecord("todo", "nul\0😀", 7, { fields: { n: 1 } });
      await store.commit([
        put("ns", record),
        put("ns", serverRecord("todo", "gone", 8, { deleted: true })),
        { type: "idempotency", namespace: "ns", entry: entry("k", 100) },
      ]);
      await store.purge({ tombstonesUpdatedBefore: 100 });
      await store.close();
      assert.ok(context.reopen !== undefined);
      await using reopened = await context.reopen();
      assert.deepEqual(
        await reopened.getRecord("ns", "todo", "nul\0😀"),
        record,
      );
      assert.deepEqual(
        await reopened.getIdempotency("ns", "k"),
        entry("k", 100),
      );
      const page = await reopened.listRecords("ns", "todo", { limit: 10 });
      assert.deepEqual(plain(page.records), [record]);
      assert.equal(page.horizon, 9);
      assert.deepEqual(await reopened.lastWrite("ns"), {
        updatedAt: 8,
        id: "gone",
      });
    },
  },
];
