/**
 * The reference server over real HTTP on `127.0.0.1:0`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createSyncServer } from "../server/mod.ts";
import { AWKWARD_IDS } from "../server/_conformance_kit.ts";
import {
  as,
  type BatchBody,
  bearer,
  type ConflictBody,
  DEFAULT_LIMITS,
  iso,
  options,
  path,
  type PullBody,
  T0,
  TestClock,
} from "./_server_http.ts";

Deno.test("http: a client writes, conflicts and pulls over a real HTTP server", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(
    options({ now: clock.now, auth: bearer }),
  );
  await using http = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen(): void {} },
    server.fetch,
  );
  const base = `http://127.0.0.1:${http.addr.port}`;
  const headers = { ...as("alice"), "content-type": "application/json" };

  const health = await fetch(`${base}/health`);
  assert.deepEqual(await health.json(), {
    status: "ok",
    batch: true,
    live: true,
    contract: 1,
    limits: DEFAULT_LIMITS,
  });
  assert.equal(health.headers.get("date"), new Date(T0).toUTCString());

  const ids = AWKWARD_IDS.filter((id) => id.isWellFormed());
  for (const [index, id] of ids.entries()) {
    const response = await fetch(`${base}${path("todo", id)}`, {
      method: "PUT",
      headers: { ...headers, "idempotency-key": `put-${index}` },
      body: JSON.stringify({ id, v: 1 }),
    });
    assert.equal(response.status, 201, id);
    assert.equal((await response.json()).id, id);
  }
  const pulled = await fetch(`${base}/todo?limit=100`, { headers });
  assert.equal(pulled.status, 200);
  const page = await pulled.json() as PullBody;
  assert.deepEqual(page.items.map((item) => item.id), ids);

  clock.ms += 1_000;
  const target = `${base}${path("todo", "a/b")}`;
  const updated = await fetch(target, {
    method: "PUT",
    headers,
    body: JSON.stringify({ v: 2, _baseUpdatedAt: iso(T0) }),
  });
  assert.equal(updated.status, 200);
  const stale = await fetch(target, {
    method: "PUT",
    headers,
    body: JSON.stringify({ v: 3, _baseUpdatedAt: iso(T0) }),
  });
  assert.equal(stale.status, 409);
  const conflict = await stale.json() as ConflictBody;
  assert.equal(conflict.current.v, 2);
  assert.equal(conflict.serverTimestamp, iso(T0 + 1_000));

  const unauthorized = await fetch(`${base}/todo`);
  assert.equal(unauthorized.status, 401);
  await unauthorized.body?.cancel();
  const deleted = await fetch(
    `${target}?_baseUpdatedAt=${encodeURIComponent(iso(T0 + 1_000))}`,
    {
      method: "DELETE",
      headers,
    },
  );
  assert.equal(deleted.status, 200);
  assert.equal((await deleted.json()).deleted_at, iso(T0 + 1_000 + 1));
});

Deno.test("http: an oversized body answers 413 and a batch applies over HTTP", async () => {
  await using server = createSyncServer(options({ maxBodyBytes: 1024 }));
  await using http = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen(): void {} },
    server.fetch,
  );
  const base = `http://127.0.0.1:${http.addr.port}`;
  const big = await fetch(`${base}/todo/1`, {
    method: "PUT",
    body: JSON.stringify({ text: "x".repeat(4096) }),
  });
  assert.equal(big.status, 413);
  assert.equal((await big.json()).error, "payload_too_large");
  const batch = await fetch(`${base}/batch`, {
    method: "POST",
    body: JSON.stringify({
      ops: [
        { opId: "1", kind: "todo", id: "a", type: "upsert", payload: {} },
        { opId: "2", kind: "todo", id: "a", type: "delete" },
      ],
    }),
  });
  const results = (await batch.json() as BatchBody).results;
  assert.deepEqual(results.map((result) => result.status), [201, 200]);
});
