/**
 * The server-store conformance cases of the shared capability
 * (`ServerStore.readClock` and the guarded `commit`): what lets several
 * server processes or isolates use one store. Registered as ignored for a
 * store that does not declare `shared`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type ServerStore, StaleClockError } from "./store.ts";
import {
  entry,
  put,
  serverRecord,
  type ServerStoreCase,
} from "./_conformance_kit.ts";

/** The store's `readClock`, which a shared store must have. */
function readClock(store: ServerStore): NonNullable<ServerStore["readClock"]> {
  assert.ok(
    store.readClock !== undefined,
    "a store declared shared implements readClock()",
  );
  return store.readClock.bind(store);
}

/** The cases, in order. */
export const SHARED_CASES: readonly ServerStoreCase[] = [
  {
    title:
      "shared: readClock() is lastWrite() with a version that every commit moves",
    shared: true,
    async run(store) {
      const clockOf = readClock(store);
      const empty = await clockOf("ns");
      assert.equal(empty.last, null);
      await store.commit([put("ns", serverRecord("todo", "b", 5))]);
      const first = await clockOf("ns");
      assert.deepEqual(first.last, { updatedAt: 5, id: "b" });
      assert.deepEqual(first.last, await store.lastWrite("ns"));
      assert.notEqual(first.version, empty.version);
      // A commit of entries only moves the version, not the last write.
      await store.commit(
        [{ type: "idempotency", namespace: "ns", entry: entry("k", 100) }],
        { namespace: "ns", expect: first },
      );
      const second = await clockOf("ns");
      assert.deepEqual(second.last, first.last);
      assert.notEqual(second.version, first.version);
      // Another namespace's commit does not move it.
      await store.commit([put("other", serverRecord("todo", "a", 9))]);
      assert.deepEqual(await clockOf("ns"), second);
    },
  },
  {
    title:
      "shared: a commit guarded by a clock that moved throws StaleClockError and applies nothing",
    shared: true,
    async run(store) {
      const clockOf = readClock(store);
      const before = await clockOf("ns");
      await store.commit([put("ns", serverRecord("todo", "1", 1))], {
        namespace: "ns",
        expect: before,
      });
      const moved = await clockOf("ns");
      // Guarded by the clock before the commit above: stale.
      await assert.rejects(
        store.commit([
          put("ns", serverRecord("todo", "2", 2)),
          { type: "idempotency", namespace: "ns", entry: entry("k", 100) },
        ], { namespace: "ns", expect: before }),
        StaleClockError,
      );
      assert.equal(await store.getRecord("ns", "todo", "2"), null);
      assert.equal(await store.getIdempotency("ns", "k"), null);
      assert.deepEqual(await clockOf("ns"), moved);
      // Of two commits guarded by one clock, exactly one applies.
      const results = await Promise.allSettled([
        store.commit([put("ns", serverRecord("todo", "3", 3))], {
          namespace: "ns",
          expect: moved,
        }),
        store.commit([put("ns", serverRecord("todo", "4", 4))], {
          namespace: "ns",
          expect: moved,
        }),
      ]);
      assert.deepEqual(
        results.map((result) => result.status).sort(),
        ["fulfilled", "rejected"],
      );
      const page = await store.listRecords("ns", "todo", { limit: 10 });
      assert.equal(page.records.length, 2);
    },
  },
];
