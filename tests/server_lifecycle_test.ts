/**
 * Failures and lifecycle: an unexpected error answers `500` and applies
 * nothing; `close()` is idempotent, waits for writes and answers `503` after.
 *
 * @module
 */

import assert from "node:assert/strict";
import { ClosedError } from "../src/errors.ts";
import { createSyncServer } from "../server/mod.ts";
import {
  type ErrorBody,
  options,
  pull,
  putOk,
  quiet,
  send,
  SpyStore,
} from "./_server_http.ts";

Deno.test("server: an unexpected error answers 500 internal and applies nothing", async () => {
  const store = new SpyStore();
  const errors: unknown[] = [];
  await using server = createSyncServer({
    store,
    onError: (error) => errors.push(error),
  });
  store.failCommits = true;
  const { status, body } = await send(server, "PUT", "/todo/1", {
    json: {},
    headers: { "idempotency-key": "k" },
  });
  assert.equal(status, 500);
  assert.deepEqual(body, {
    error: "internal",
    message: "Cannot answer request as the server failed",
  });
  assert.equal((errors[0] as Error).message, "disk on fire");
  store.failCommits = false;
  assert.deepEqual((await pull(server, "todo")).body.items, []);
  assert.equal(
    (await send(server, "PUT", "/todo/1", {
      json: {},
      headers: { "idempotency-key": "k" },
    })).status,
    201,
  );

  await using throwingAuth = createSyncServer({
    onError: quiet,
    auth() {
      throw new Error("auth backend down");
    },
  });
  assert.equal((await send(throwingAuth, "GET", "/todo")).status, 500);
  await using badClock = createSyncServer({
    onError: quiet,
    now: () => NaN,
  });
  const clockFailure = await send(badClock, "PUT", "/todo/1", { json: {} });
  assert.equal(clockFailure.status, 500);
});

Deno.test("server: close() is idempotent, closes the store and later requests answer 503", async () => {
  const store = new SpyStore();
  const server = createSyncServer(options({ store }));
  await putOk(server, "todo", "1", {});
  await Promise.all([server.close(), server.close()]);
  await server.close();
  assert.equal(store.calls.filter((call) => call === "close").length, 1);
  await assert.rejects(store.getRecord("public", "todo", "1"), ClosedError);
  for (
    const [method, target] of [["GET", "/todo"], ["GET", "/health"], [
      "PUT",
      "/todo/2",
    ]]
  ) {
    const { status, body } = await send<ErrorBody>(server, method!, target!, {
      ...(method === "PUT" ? { json: {} } : {}),
    });
    assert.equal(status, 503);
    assert.equal(body.error, "closed");
  }
});

Deno.test("server: close() waits for the write in progress", async () => {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  const Slow = {
    "~standard": {
      version: 1 as const,
      vendor: "test",
      async validate(value: unknown): Promise<{ value: unknown }> {
        await gate;
        return { value };
      },
    },
  };
  const store = new SpyStore();
  const server = createSyncServer(options({ store, schemas: { todo: Slow } }));
  const write = send(server, "PUT", "/todo/1", { json: {} });
  await new Promise((resolve) => setTimeout(resolve, 10));
  const closing = server.close();
  assert.equal(
    (await send(server, "PUT", "/todo/2", { json: {} })).status,
    503,
  );
  release();
  assert.equal((await write).status, 201);
  await closing;
  assert.deepEqual(store.calls.slice(-2), ["commit", "close"]);
});
