/**
 * The memory storage's reads copy what it holds without re-checking it
 * (`copyStoredJson` in storage/_json.ts): the copy must still share no
 * object with the store, at any depth and inside arrays, and must not pick
 * up members a polluted prototype shows to `for...in`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createMemoryStorage } from "../storage/memory.ts";
import type { JsonObject } from "../src/json.ts";
import { withTimeout } from "./_timeout.ts";

Deno.test(
  "memory: a read's copy shares nothing with the store, inside arrays too",
  withTimeout(5_000, async () => {
    await using storage = createMemoryStorage();
    const value = { rows: [{ cells: [{ v: 1 }] }, [{ w: 2 }]], o: { p: {} } };
    await storage.write([{ type: "putMeta", key: "k", value }]);
    const [first] = await storage.getMeta(["k"]);
    const read = first!.value as {
      rows: [{ cells: [{ v: number }] }, [{ w: number }]];
      o: { p: Record<string, number> };
    };
    read.rows[0].cells[0].v = 9;
    read.rows[1][0].w = 9;
    read.o.p["x"] = 9;
    const [second] = await storage.getMeta(["k"]);
    assert.deepEqual(second!.value, value);
  }),
);

Deno.test(
  "memory: a read's copy holds only the stored members under a polluted prototype",
  withTimeout(5_000, async () => {
    await using storage = createMemoryStorage();
    const value: JsonObject = { a: { b: 1 } };
    Object.defineProperty(value, "__proto__", {
      value: { own: true },
      enumerable: true,
      writable: true,
      configurable: true,
    });
    await storage.write([{ type: "putMeta", key: "k", value }]);
    let read: Promise<unknown>;
    Object.defineProperty(Object.prototype, "polluted", {
      value: { evil: true },
      enumerable: true,
      configurable: true,
    });
    try {
      // The memory storage copies inside the call, before it returns.
      read = storage.getMeta(["k"]);
    } finally {
      delete (Object.prototype as Record<string, unknown>)["polluted"];
    }
    const [entry] = (await read) as [{ value: JsonObject }];
    assert.deepEqual(Object.keys(entry.value), ["a", "__proto__"]);
    assert.ok(Object.hasOwn(entry.value, "__proto__"));
    assert.deepEqual(entry.value["__proto__"], { own: true });
    assert.equal(Object.getPrototypeOf(entry.value), Object.prototype);
  }),
);
