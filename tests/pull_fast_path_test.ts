/**
 * The pull's fast paths and what keeps them exact: a first pull into an
 * empty table keeps no ids and lists nothing back, writes its pages unread
 * as new records (falling back to reading when a record exists after all),
 * and sizes its chunks by a bound of their JSON before counting it.
 */

import assert from "node:assert/strict";
import { SyncEngine } from "../mod.ts";
import { jsonBound } from "../src/_pull_page.ts";
import type { JsonObject } from "../src/json.ts";
import type { Storage } from "../src/storage.ts";
import type { PullPage, Transport } from "../src/transport.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { keysetPage } from "./_fixtures.ts";
import { withTimeout } from "./_timeout.ts";

const T0 = Date.parse("2025-03-01T10:00:00.000Z");

/** Wraps a storage to record the `limit` of every `listRecords` call. */
function listings(
  inner: Storage,
): Storage & { limits: (number | undefined)[] } {
  const limits: (number | undefined)[] = [];
  return {
    limits,
    get capabilities() {
      return inner.capabilities;
    },
    getRecords: (kind, ids, options) => inner.getRecords(kind, ids, options),
    listRecords(kind, options) {
      limits.push(options?.limit);
      return inner.listRecords(kind, options);
    },
    getOps: (ids, options) => inner.getOps(ids, options),
    listOps: (options) => inner.listOps(options),
    getMeta: (keys, options) => inner.getMeta(keys, options),
    write: (mutations, options) => inner.write(mutations, options),
    close: () => inner.close(),
    [Symbol.asyncDispose]: () => inner.close(),
  };
}

Deno.test(
  "pull: a first pull into an empty table lists nothing back (no sweep, no set of ids growing with the table)",
  withTimeout(10_000, async () => {
    await using storage = listings(createMemoryStorage());
    const transport = rowsTransport(rows(20));
    await using engine = new SyncEngine({ storage, transport, pageSize: 5 });
    const items = engine.table("items");
    const { stats } = await engine.sync();
    assert.equal(stats.pulled, 20);
    // The one listing is the emptiness check.
    assert.deepEqual(storage.limits, [1]);
    assert.equal((await items.list()).length, 20);
  }),
);

Deno.test(
  "pull: a first pull into a table holding a synced record the listing lacks still sweeps it",
  withTimeout(10_000, async () => {
    await using storage = listings(createMemoryStorage());
    const data = { id: "gone", updated_at: new Date(T0 - 1000).toISOString() };
    await storage.write([{
      type: "putRecord",
      record: {
        kind: "items",
        id: "gone",
        data,
        deleted: false,
        base: { data, updatedAt: data.updated_at, deleted: false },
        lastOpId: null,
        localUpdatedAt: null,
      },
      expect: null,
    }]);
    const transport = rowsTransport(rows(20));
    await using engine = new SyncEngine({ storage, transport, pageSize: 5 });
    const items = engine.table("items");
    const { stats } = await engine.sync();
    assert.equal(stats.pulled, 20);
    assert.equal(stats.removed, 1);
    assert.equal(await items.get("gone"), undefined);
    assert.equal((await items.list()).length, 20);
  }),
);

/**
 * A transport serving `rows` in `(updated_at, id)` order after the cursor,
 * calling `before` with the request's index before answering it.
 */
function rowsTransport(
  rows: readonly JsonObject[],
  before: (index: number) => Promise<void> = () => Promise.resolve(),
): Transport {
  let index = 0;
  return {
    async pull(request): Promise<PullPage> {
      await before(index++);
      return keysetPage(rows, request);
    },
    push: () => Promise.resolve([]),
    close: () => Promise.resolve(),
    [Symbol.asyncDispose]: () => Promise.resolve(),
  };
}

/** `count` rows `r00`, `r01`, … a second apart from T0. */
function rows(
  count: number,
): { id: string; updated_at: string; deleted_at?: string }[] {
  return Array.from({ length: count }, (_, i) => ({
    id: `r${String(i).padStart(2, "0")}`,
    updated_at: new Date(T0 + i * 1000).toISOString(),
  }));
}

/** Wraps a storage to record how many ids each `getRecords` call reads. */
function countingReads(inner: Storage): Storage & { reads: number[] } {
  const reads: number[] = [];
  return Object.assign(listings(inner), {
    reads,
    getRecords: ((kind, ids, options) => {
      reads.push(ids.length);
      return inner.getRecords(kind, ids, options);
    }) as Storage["getRecords"],
  });
}

Deno.test(
  "pull: a first pull into an empty table writes its pages unread, as new records",
  withTimeout(10_000, async () => {
    await using storage = countingReads(createMemoryStorage());
    const transport = rowsTransport(rows(20));
    await using engine = new SyncEngine({ storage, transport, pageSize: 5 });
    const items = engine.table("items");
    assert.equal((await engine.sync()).stats.pulled, 20);
    assert.deepEqual(storage.reads, []);
    assert.equal((await items.list()).length, 20);
  }),
);

Deno.test(
  "pull: a record written locally during a first pull keeps its pending edit: the unread write fails and the rest of the pull reads first",
  withTimeout(10_000, async () => {
    await using storage = countingReads(createMemoryStorage());
    const transport = rowsTransport(rows(20), async (index) => {
      // Before page 2 (r05..r09): a local edit of r07, not yet pushed.
      if (index === 1) {
        await engine.table("items").put({ id: "r07", mine: true });
      }
    });
    await using engine = new SyncEngine({ storage, transport, pageSize: 5 });
    const items = engine.table("items");
    // The push phase ran before the edit: it stays pending.
    await engine.sync();
    assert.deepEqual(await items.get("r07"), { id: "r07", mine: true });
    const [stored] = await storage.getRecords("items", ["r07"]);
    assert.equal(stored?.value.base?.updatedAt, rows(20)[7]!.updated_at);
    assert.equal((await items.list()).length, 20);
    // Pages 2, 3 and 4 were read before their writes (the put read r07).
    assert.deepEqual(storage.reads.filter((count) => count > 1), [5, 5, 5]);
  }),
);

Deno.test(
  "pull: a tombstone is never written unread: a synced record that appeared during a first pull is deleted by it",
  withTimeout(10_000, async () => {
    await using storage = countingReads(createMemoryStorage());
    const served = rows(20);
    const gone = served[7]!;
    served[7] = { ...gone, deleted_at: gone.updated_at };
    const transport = rowsTransport(served, async (index) => {
      // Before page 2: another tab's copy of r07, synced.
      if (index !== 1) return;
      const data = { id: "r07", updated_at: new Date(T0 - 1000).toISOString() };
      await storage.write([{
        type: "putRecord",
        record: {
          kind: "items",
          id: "r07",
          data,
          deleted: false,
          base: { data, updatedAt: data.updated_at, deleted: false },
          lastOpId: null,
          localUpdatedAt: null,
        },
        expect: null,
      }]);
    });
    await using engine = new SyncEngine({ storage, transport, pageSize: 5 });
    const items = engine.table("items");
    await engine.sync();
    assert.equal(await items.get("r07"), undefined);
    assert.equal((await items.list()).length, 19);
  }),
);

Deno.test(
  "pull: jsonBound() is never below the UTF-8 length of the JSON",
  withTimeout(10_000, () => {
    const values: unknown[] = [
      null,
      true,
      false,
      0,
      -0.0000012345678901234567,
      -1.7976931348623157e308,
      123456789012345680000,
      "",
      '\u0001\u001f"\\',
      "\ud800",
      "😀é€x",
      [],
      [null, [[]], {}],
      { "": "", __proto__: null, "\u0000": ["\ud83d"] },
      JSON.parse('{"__proto__": {"a": 1}}'),
      { a: undefined, b: [undefined] },
    ];
    const utf8 = (value: unknown) =>
      new TextEncoder().encode(JSON.stringify(value)).length;
    for (const value of values) {
      const bound = jsonBound(value, Infinity);
      assert.ok(bound >= utf8(value), `${JSON.stringify(value)}: ${bound}`);
    }
    // Past the limit, it stops early but still says so.
    assert.ok(jsonBound(["x".repeat(100), "y".repeat(1e6)], 50) > 50);
  }),
);

Deno.test(
  "pull: every byte limit that one record fits pulls the page, the chunks sized by a bound or counted (escapes, multi-byte text)",
  withTimeout(20_000, async () => {
    const text = "\u0001".repeat(40) + "😀".repeat(20) + "é".repeat(20) + "x";
    const served = rows(6).map((row, i) => ({ ...row, d: text.repeat(i + 1) }));
    let smallest: number | null = null;
    for (let max = 1_000; max <= 24_000; max += 50) {
      await using storage = createMemoryStorage({ maxWriteBytes: max });
      await using engine = new SyncEngine({
        storage,
        transport: rowsTransport(served),
        pageSize: 6,
      });
      const table = engine.table("items");
      try {
        await engine.sync();
        smallest ??= max;
        assert.equal((await table.list()).length, 6, `limit ${max}`);
      } catch (error) {
        assert.equal(
          smallest,
          null,
          `limit ${max} failed after ${smallest} worked: ${error}`,
        );
      }
    }
    assert.ok(smallest !== null);
    // The largest record alone decides (4,800 here), not the whole page,
    // whose records alone (each written twice, data and base) take more.
    const page = new TextEncoder().encode(JSON.stringify(served)).length;
    assert.ok(smallest < page, `${smallest} vs ${page}`);
  }),
);
