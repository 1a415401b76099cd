/**
 * The REST transport's lifecycle: `close()` is idempotent and aborts the
 * calls in flight; later calls, and calls with malformed arguments, reject
 * and never throw synchronously.
 */

import assert from "node:assert/strict";
import { createRestTransport } from "../transport/rest.ts";
import { ClosedError } from "../src/errors.ts";
import type { PullRequest, PushOp } from "../src/transport.ts";
import { json, startScriptedServer } from "./_scripted_server.ts";
import { connect, firstPull, upsert } from "./_rest_fixtures.ts";

Deno.test("rest: close() is idempotent, aborts in-flight calls and rejects later ones with ClosedError", async () => {
  const gate = Promise.withResolvers<void>();
  const arrived = Promise.withResolvers<void>();
  const server = startScriptedServer(async () => {
    arrived.resolve();
    await gate.promise;
    return json({ items: [] });
  });
  try {
    const transport = connect(server);
    const pending = transport.pull(firstPull());
    await arrived.promise;
    await Promise.all([transport.close(), transport.close()]);
    await assert.rejects(pending, ClosedError);
    await transport.close();
    await transport[Symbol.asyncDispose]();
    await assert.rejects(transport.pull(firstPull()), (error: unknown) => {
      assert.ok(error instanceof ClosedError);
      assert.equal(
        error.message,
        "Cannot pull 'todos' as the transport is closed",
      );
      return true;
    });
    await assert.rejects(transport.push([upsert("a")]), ClosedError);
    await assert.rejects(transport.push([]), ClosedError);
    assert.equal(server.requests.length, 1);
  } finally {
    gate.resolve();
    await server.close();
  }
});

Deno.test("rest: pull() and push() never throw synchronously", async () => {
  const transport = createRestTransport({
    baseUrl: "http://127.0.0.1:1",
    batch: false,
  });
  await transport.close();
  const pull = transport.pull(null as unknown as PullRequest);
  const push = transport.push(null as unknown as PushOp[]);
  assert.ok(pull instanceof Promise);
  assert.ok(push instanceof Promise);
  await assert.rejects(pull, ClosedError);
  await assert.rejects(push, ClosedError);
});
