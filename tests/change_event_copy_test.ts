/**
 * A local write's `change` event carries data of its own: changing the
 * record `put()` or `putMany()` returned does not change what `watch()`
 * or an `engine.on("change")` listener is told.
 *
 * @module
 */

import assert from "node:assert/strict";
import { SyncEngine } from "../mod.ts";
import type { Transport } from "../src/transport.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { withTimeout } from "./_timeout.ts";

const offline: Transport = {
  pull: () => Promise.reject(new Error("offline")),
  push: () => Promise.reject(new Error("offline")),
  close: () => Promise.resolve(),
  [Symbol.asyncDispose]: () => Promise.resolve(),
};

for (const how of ["put", "putMany"] as const) {
  Deno.test(
    `change events: changing the record ${how}() returned changes nothing a watcher is told`,
    withTimeout(5_000, async () => {
      await using storage = createMemoryStorage();
      await using engine = new SyncEngine({ storage, transport: offline });
      const items = engine.table("items");
      const controller = new AbortController();
      const watch = items.watch({ signal: controller.signal });
      const heard: unknown[] = [];
      engine.on("change", (event) => heard.push(event.data));
      const input = { id: "a", n: 1, list: [1] };
      const written = how === "put"
        ? await items.put(input)
        : (await items.putMany([input]))[0]!;
      (written as Record<string, unknown>)["n"] = 2;
      ((written as Record<string, unknown>)["list"] as number[]).push(9);
      const item = await watch.next();
      controller.abort();
      assert.equal(item.done, false);
      const data = (item.value as { data: Record<string, unknown> }).data;
      assert.deepEqual(data, { id: "a", n: 1, list: [1] });
      assert.deepEqual(heard, [{ id: "a", n: 1, list: [1] }]);
    }),
  );
}
