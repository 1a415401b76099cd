/**
 * `putMany()` writes the records its array held when it was called: a
 * caller that shortens or grows the array while a schema runs changes
 * neither the writes nor the outcomes `synced` waits for (it once waited
 * for the array's first length and never settled).
 *
 * @module
 */

import assert from "node:assert/strict";
import type { JsonObject, StandardSchemaV1 } from "../mod.ts";
import { createClient, startServer } from "./_harness.ts";
import { withTimeout } from "./_timeout.ts";

/** A schema that accepts anything: its check is what makes putMany wait. */
const schema: StandardSchemaV1<unknown, JsonObject> = {
  "~standard": {
    version: 1,
    vendor: "test",
    validate: (value) => ({ value: value as JsonObject }),
  },
};

/** Whether a promise settles within a few turns of the event loop. */
async function settlesSoon(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  promise.then(() => done = true, () => done = true);
  for (let turn = 0; turn < 50 && !done; turn++) {
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  return done;
}

for (
  const [how, change] of [
    ["shortens", (records: JsonObject[]) => void records.pop()],
    ["grows", (records: JsonObject[]) => void records.push({ id: "c", x: 1 })],
  ] as const
) {
  Deno.test(
    `putMany: a caller that ${how} its array during the call changes neither the writes nor synced`,
    withTimeout(10_000, async () => {
      await using server = startServer();
      await using client = createClient(server.url);
      const items = client.engine.table("items", { schema });
      const records: JsonObject[] = [{ id: "a", x: 1 }, { id: "b", x: 1 }];
      const write = items.putMany(records);
      change(records);
      const written = await write;
      assert.deepEqual(written.map((record) => record.id), ["a", "b"]);
      assert.equal(await client.engine.outbox.count(), 2);
      await client.engine.sync();
      assert.ok(await settlesSoon(write.synced), "synced never settled");
      const outcomes = await write.synced;
      assert.equal(outcomes.length, 2);
      assert.equal(await items.get("c"), undefined);
    }),
  );
}
