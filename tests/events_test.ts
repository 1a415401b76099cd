/**
 * Clauses 19 and 20 from the app's side: background failures arrive as
 * `error` events, never as unhandled rejections, and a listener that throws
 * keeps neither the engine nor the other listeners from their work.
 *
 * @module
 */

import assert from "node:assert/strict";
import { until } from "./_faults.ts";
import { createClient, eventsOf, startServer } from "./_harness.ts";

Deno.test("events: clause 19, auto sync turns a non-retryable failure into an error event, never an unhandled rejection, and waits an interval", async () => {
  await using server = startServer();
  server.intercept((_request, seen) =>
    seen.method === "GET" && seen.path === "/todos"
      ? Response.json({ error: "bad_request" }, { status: 400 })
      : undefined
  );
  const pending = new Map<number, { callback: () => void; ms: number }>();
  let handle = 0;
  const timers = {
    setTimeout(callback: () => void, ms: number) {
      pending.set(++handle, { callback, ms });
      return handle;
    },
    clearTimeout(id: unknown) {
      pending.delete(id as number);
    },
  };
  const unhandled: unknown[] = [];
  const onUnhandled = (event: PromiseRejectionEvent): void => {
    unhandled.push(event.reason);
    event.preventDefault();
  };
  globalThis.addEventListener("unhandledrejection", onUnhandled);
  try {
    await using a = createClient(server.url, {
      engine: { timers },
      transport: { retry: { attempts: 1 } },
    });
    a.engine.table("todos");
    const ran = new Promise<void>((resolve) =>
      a.engine.on("syncCompleted", () => resolve())
    );
    a.engine.startAuto({ intervalMs: 60_000 });
    const [id, first] = [...pending][0]!;
    pending.delete(id);
    first.callback();
    await ran;
    // The tick settles: it arms the next timer, or its rejection escapes.
    await until(
      () => pending.size > 0 || unhandled.length > 0,
      "the tick settled",
    );
    // A rejection event is dispatched a task later: give it that task.
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.deepEqual(unhandled, [], "no unhandled rejection");
    const [error] = eventsOf(a.events, "error");
    assert.equal(error?.retryable, false, "reported as an event");
    assert.deepEqual(
      [...pending.values()].map((timer) => timer.ms),
      [60_000],
      "the next run waits an interval",
    );
    a.engine.stopAuto();
  } finally {
    globalThis.removeEventListener("unhandledrejection", onUnhandled);
  }
});

Deno.test("events: clause 20, a throwing listener does not keep the listeners after it from their events", async () => {
  await using server = startServer();
  const reported: unknown[] = [];
  await using a = createClient(server.url, {
    engine: { onListenerError: (error) => reported.push(error) },
  });
  const todos = a.engine.table("todos");
  const before: string[] = [];
  const after: string[] = [];
  a.engine.on("change", (event) => before.push(event.id));
  a.engine.on("change", () => {
    throw new Error("listener bug");
  });
  a.engine.on("change", (event) => after.push(event.id));
  await todos.put({ id: "t1", title: "x" });
  await todos.put({ id: "t2", title: "y" });
  await a.engine.sync();
  assert.deepEqual(before.slice(0, 2), ["t1", "t2"], "the local writes");
  assert.ok(before.length > 2, "and the acknowledged versions");
  assert.deepEqual(after, before, "the later listener saw every event");
  assert.equal(reported.length, before.length);
});
