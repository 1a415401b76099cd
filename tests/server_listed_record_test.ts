/**
 * A record a server store lists keeps its data as the stored JSON text and
 * parses it only when read, once; `data` still behaves as a plain member:
 * spreading, serialising or listing the keys of the record reads it.
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import type { ServerStore } from "../server/mod.ts";
import { createMemoryServerStore } from "../server/memory.ts";
import { createSqliteServerStore } from "../server/sqlite.ts";
import { withTimeout } from "./_timeout.ts";

const STORES: readonly {
  readonly name: string;
  readonly open: () => ServerStore;
}[] = [
  { name: "memory", open: createMemoryServerStore },
  {
    name: "SQLite",
    open: () =>
      createSqliteServerStore(new DatabaseSync(":memory:"), {
        closeDatabase: true,
      }),
  },
];

for (const { name, open } of STORES) {
  Deno.test(
    `server store (${name}): a listed record's data is read like a member, and parsed once`,
    withTimeout(10_000, async () => {
      await using store = open();
      const data = { id: "a", updated_at: "x", tags: ["t"] };
      await store.commit([{
        type: "record",
        namespace: "ns",
        record: { kind: "todo", id: "a", updatedAt: 1, deletedAt: null, data },
      }]);
      const { records: [listed] } = await store.listRecords("ns", "todo", {
        limit: 10,
      });
      assert.ok(listed !== undefined);
      // A plain object whose members come in the literal's order.
      assert.equal(Object.getPrototypeOf(listed), Object.prototype);
      assert.deepEqual(Object.keys(listed), [
        "kind",
        "id",
        "updatedAt",
        "deletedAt",
        "data",
        "text",
      ]);
      assert.deepEqual({ ...listed }.data, data);
      assert.deepEqual(JSON.parse(JSON.stringify(listed)).data, data);
      assert.deepEqual(structuredClone(listed).data, data);
      assert.equal(listed.data, listed.data);
      // Copies of its members, and objects made from it, read it too.
      const copy = Object.defineProperties(
        {},
        Object.getOwnPropertyDescriptors(listed),
      ) as typeof listed;
      assert.deepEqual(copy.data, data);
      assert.deepEqual((Object.create(listed) as typeof listed).data, data);
      // It can be removed, as a literal's member can.
      assert.equal(delete (listed as { data?: unknown }).data, true);
      assert.equal("data" in listed, false);
      const got = await store.getRecord("ns", "todo", "a");
      assert.deepEqual(got?.data, data);
    }),
  );
}
