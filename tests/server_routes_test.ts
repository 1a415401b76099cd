/**
 * GET /health, the response envelope, routing (404, 405, basePath) and
 * the checks of `createSyncServer()`'s options.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { z } from "zod";
import { createSyncServer, type ServerStore } from "../server/mod.ts";
import {
  as,
  bearer,
  DEFAULT_LIMITS,
  type ErrorBody,
  options,
  send,
  TestClock,
} from "./_server_http.ts";

Deno.test("server: GET /health answers ok with the batch flag and the limits, without auth", async () => {
  await using server = createSyncServer(options({ auth: () => null }));
  const health = await send(server, "GET", "/health");
  assert.equal(health.status, 200);
  assert.deepEqual(health.body, {
    status: "ok",
    batch: true,
    live: true,
    contract: 1,
    limits: DEFAULT_LIMITS,
  });
  assert.equal((await send(server, "GET", "/todo")).status, 401);

  await using noBatch = createSyncServer(
    options({
      batch: false,
      maxBodyBytes: 1000,
      maxBatchBytes: 2000,
      maxBatchOps: 10,
      maxPageSize: 50,
      maxPageBytes: 8192,
      maxIdempotencyKeys: 20,
    }),
  );
  assert.deepEqual((await send(noBatch, "GET", "/health")).body, {
    status: "ok",
    batch: false,
    live: true,
    contract: 1,
    limits: {
      ...DEFAULT_LIMITS,
      maxRecordBytes: 1000,
      maxBatchOps: 10,
      maxBatchBytes: 2000,
      maxPageItems: 50,
      maxPageBytes: 8192,
      maxIdempotencyKeys: 20,
    },
  });
});

Deno.test("server: every response is JSON with a Date header from the injected clock", async () => {
  const clock = new TestClock(Date.UTC(2031, 0, 2, 3, 4, 5));
  await using server = createSyncServer(
    options({ now: clock.now, auth: bearer }),
  );
  for (
    const [method, target, headers] of [
      ["GET", "/health", {}],
      ["GET", "/todo", as("a")],
      ["GET", "/todo", {}],
      ["GET", "/a/b/c", as("a")],
      ["PATCH", "/todo/1", as("a")],
    ] as const
  ) {
    const response = await send(server, method, target, { headers });
    assert.equal(
      response.headers.get("date"),
      "Thu, 02 Jan 2031 03:04:05 GMT",
    );
    assert.equal(response.headers.get("cache-control"), "no-store");
  }
});

Deno.test("server: unknown routes answer 404 and wrong methods 405 with a JSON error", async () => {
  await using server = createSyncServer(options());
  for (
    const target of ["/", "/todo/1/extra", "/todo/"]
  ) {
    const { status, body } = await send<ErrorBody>(server, "GET", target);
    assert.equal(status, 404, target);
    assert.equal(body.error, "not_found");
    assert.equal(typeof body.message, "string");
  }
  // Under a reserved route name, a record route names an invalid kind.
  for (const target of ["/health/x", "/batch/x"]) {
    const { status, body } = await send<ErrorBody>(server, "GET", target);
    assert.equal(status, 400, target);
    assert.equal(body.error, "invalid_kind");
  }
  for (
    const [method, target, allow] of [
      ["POST", "/todo", "GET"],
      ["PUT", "/todo", "GET"],
      ["GET", "/todo/1", "PUT, DELETE"],
      ["PATCH", "/todo/1", "PUT, DELETE"],
      ["GET", "/batch", "POST"],
      ["POST", "/health", "GET"],
    ] as const
  ) {
    const response = await send<ErrorBody>(server, method, target);
    assert.equal(response.status, 405, `${method} ${target}`);
    assert.equal(response.body.error, "method_not_allowed");
    assert.equal(response.headers.get("allow"), allow);
  }
  const bad = await send<ErrorBody>(server, "PUT", "/todo/%E0%A4%A", {
    json: {},
  });
  assert.equal(bad.status, 400);
  assert.equal(bad.body.error, "invalid_id");
});

Deno.test("server: basePath mounts the routes under a prefix", async () => {
  await using server = createSyncServer(options({ basePath: "/sync/v1" }));
  assert.equal((await send(server, "GET", "/sync/v1/health")).status, 200);
  assert.equal(
    (await send(server, "PUT", "/sync/v1/todo/1", { json: {} })).status,
    201,
  );
  assert.equal((await send(server, "GET", "/sync/v1/todo")).status, 200);
  assert.equal((await send(server, "GET", "/todo")).status, 404);
  assert.equal((await send(server, "GET", "/sync/v1x/todo")).status, 404);
});

Deno.test("server: createSyncServer() validates its options", () => {
  assert.throws(() => createSyncServer({ maxBodyBytes: 0 }), RangeError);
  assert.throws(() => createSyncServer({ maxPageSize: 1.5 }), RangeError);
  assert.throws(
    () => createSyncServer({ maxPageSize: 10, defaultPageSize: 11 }),
    RangeError,
  );
  assert.throws(
    () => createSyncServer({ idempotencyRetentionMs: -1 }),
    RangeError,
  );
  assert.throws(
    () => createSyncServer({ batch: "yes" as unknown as boolean }),
    TypeError,
  );
  assert.throws(
    () => createSyncServer({ now: 5 as unknown as () => number }),
    TypeError,
  );
  assert.throws(
    () =>
      createSyncServer({
        schemas: { todo: {} as unknown as z.ZodType },
      }),
    TypeError,
  );
  assert.throws(() => createSyncServer({ basePath: "/sync/" }), TypeError);
  assert.throws(
    () => createSyncServer({ store: {} as unknown as ServerStore }),
    TypeError,
  );
  // A small maxPageSize is enough on its own: the default page follows it.
  assert.doesNotThrow(() => createSyncServer({ maxPageSize: 10 }).close());
});
