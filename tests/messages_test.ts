/**
 * Error messages read like Deno std's, checked on a sample from every layer:
 * what failed first ("Cannot …"), why (" as …"), and the value at fault last
 * (": current value is …") where there is one; sentence case, no trailing
 * period, bounded in length however large the value.
 *
 * @module
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { SyncEngine } from "../mod.ts";
import { createSyncServer } from "../server/mod.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { createSqliteStorage } from "../storage/sqlite.ts";
import { createRestTransport } from "../transport/rest.ts";

/** The std form: action first, then the reason, the value last. */
function assertStdMessage(message: string, withValue: boolean): void {
  assert.match(message, /^Cannot [a-z]/, message);
  assert.match(message, / as /, `no reason: ${message}`);
  assert.ok(!/[.]$/.test(message), `trailing period: ${message}`);
  assert.ok(message.length < 400, `too long: ${message.length}`);
  if (withValue) {
    assert.match(message, /: current value is .+$/, message);
  }
}

async function messageOf(work: () => unknown): Promise<string> {
  try {
    await work();
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error("Expected an error");
}

Deno.test("messages: a sample of errors from every layer reads like Deno std's", async () => {
  const storage = createMemoryStorage();
  const transport = createRestTransport({ baseUrl: "http://127.0.0.1:65535" });
  const engine = new SyncEngine({ storage, transport });
  const todos = engine.table("todos");
  const huge = "x".repeat(70_000);
  const samples: [string, () => unknown, boolean][] = [
    ["table kind", () => engine.table("a/b"), true],
    ["put id", () => todos.put({ id: huge }), true],
    ["put lone surrogate", () => todos.put({ id: "a\ud800" }), true],
    ["update missing", () => todos.update("nope", { a: 1 }), true],
    ["startAuto interval", () => engine.startAuto({ intervalMs: 0 }), true],
    ["retry not quarantined", () => engine.outbox.retry("nope"), true],
    ["rest baseUrl", () => createRestTransport({ baseUrl: "ftp://x" }), true],
    ["rest timeout", () =>
      createRestTransport({
        baseUrl: "http://127.0.0.1:65535",
        timeoutMs: -1,
      }), true],
    [
      "memory option",
      () => createMemoryStorage({ maxMutationsPerWrite: 0 }),
      true,
    ],
    [
      "storage mutation",
      () => storage.write([{ type: "nope" } as never]),
      true,
    ],
    ["sqlite option", () =>
      createSqliteStorage(new DatabaseSync(":memory:"), {
        durability: "sometimes" as never,
      }), true],
    ["server option", () => createSyncServer({ maxBatchOps: 5_000 }), true],
  ];
  for (const [name, work, withValue] of samples) {
    const message = await messageOf(work);
    assert.ok(!message.includes(huge), `${name}: the whole value is echoed`);
    try {
      assertStdMessage(message, withValue);
    } catch (error) {
      throw new Error(`${name}: ${(error as Error).message}`);
    }
  }
  await engine.close();
  const closed = await messageOf(() => todos.put({ id: "t" }));
  assertStdMessage(closed, false);
  await transport.close();
  await storage.close();
  assertStdMessage(await messageOf(() => storage.getMeta(["a"])), false);
});

Deno.test("messages: the server's refusals read like Deno std's", async () => {
  await using server = createSyncServer();
  const requests: [string, string, string?][] = [
    ["PUT", `/todos/${"x".repeat(300)}`, "{}"],
    ["PUT", "/todos/a", "[1]"],
    ["GET", "/todos?limit=0"],
    ["GET", "/todos?updatedSince=yesterday"],
    ["POST", "/batch", '{"ops": 1}'],
  ];
  for (const [method, path, body] of requests) {
    const response = await server.fetch(
      new Request(`http://s${path}`, {
        method,
        ...(body === undefined ? {} : { body }),
      }),
    );
    assert.ok(response.status >= 400 && response.status < 500, path);
    const { message } = await response.json() as { message: string };
    assertStdMessage(message, true);
  }
});
