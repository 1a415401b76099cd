/**
 * No input makes the reference server answer `5xx` from its own code: every
 * route crossed with malformed bodies, deep nesting, huge ids, bad keys, bad
 * query parameters and prototype keys, on each store, answers a JSON `4xx`
 * (or a `2xx`), and the server keeps working afterwards. A `500` here is what
 * a client retries for ever.
 *
 * @module
 */

import assert from "node:assert/strict";
import { z } from "zod";
import type { JsonObject } from "../src/json.ts";
import {
  createSyncServer,
  type ServerStore,
  type SyncServer,
} from "../server/mod.ts";
import { createMemoryServerStore } from "../server/memory.ts";
import { openSqliteServerStore } from "../server/sqlite.ts";
import { bearerPrincipal, T0 } from "../server/_conformance_kit.ts";

const ORIGIN = "http://sync.test";

function deepArray(depth: number): string {
  return "[".repeat(depth) + "]".repeat(depth);
}

function deepObject(depth: number): string {
  return '{"a":'.repeat(depth) + "{}" + "}".repeat(depth);
}

function base64url(text: string): string {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(
    /=+$/,
    "",
  );
}

const HUGE = "x".repeat(70_000);

/** Bodies for writes: malformed, deep, huge, prototype keys. */
const BODIES: readonly (string | Uint8Array<ArrayBuffer> | null)[] = [
  null,
  "",
  "null",
  "[]",
  "123",
  '"text"',
  "{",
  '{"id": 5}',
  `{"id": "${HUGE}"}`,
  deepArray(100_000),
  deepObject(5_000),
  `{"v": ${deepArray(65)}}`,
  `{"_baseUpdatedAt": ${deepObject(5_000)}}`,
  '{"_baseUpdatedAt": "2025-03-01T10:00:00.000+99:99"}',
  '{"_baseUpdatedAt": 1e400}',
  '{"__proto__": {"polluted": true}, "constructor": {"prototype": {}}}',
  '{"__proto__": null, "hasOwnProperty": 1, "toString": "x"}',
  `{"${"k".repeat(10_000)}": 1}`,
  JSON.stringify(Object.fromEntries(
    Array.from({ length: 20_000 }, (_, index) => [`k${index}`, index]),
  )),
  new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]),
  `{"text": "${"é".repeat(600_000)}"}`,
];

/** Batch envelopes and ops: malformed, deep, huge, prototype keys. */
const BATCHES: readonly string[] = [
  '{"ops": null}',
  `{"ops": ${deepArray(100_000)}}`,
  `{"ops": [${deepObject(5_000)}]}`,
  `{"ops": [{"opId": ${deepObject(5_000)}}]}`,
  `{"ops": [{"opId": "o", "kind": ${
    deepObject(100)
  }, "id": "1", "type": "upsert"}]}`,
  `{"ops": [{"opId": "o", "kind": "todo", "id": ${
    deepArray(5_000)
  }, "type": "delete"}]}`,
  `{"ops": [{"opId": "o", "kind": "todo", "id": "1", "type": "upsert", "payload": ${
    deepObject(5_000)
  }}]}`,
  `{"ops": [{"opId": "o", "kind": "todo", "id": "1", "type": "delete", "baseUpdatedAt": ${
    deepObject(5_000)
  }}]}`,
  `{"ops": [{"opId": "o", "kind": "todo", "id": "1", "type": "upsert", "payload": {}, "baseUpdatedAt": ${
    deepArray(5_000)
  }}]}`,
  `{"ops": [{"opId": "o", "kind": "todo", "id": "1", "type": "upsert", "payload": {}, "force": ${
    deepArray(5_000)
  }}]}`,
  `{"ops": [{"opId": "${HUGE}", "kind": "todo", "id": "1", "type": "upsert"}]}`,
  `{"ops": [{"opId": "o", "kind": "todo", "id": "${HUGE}", "type": "upsert", "payload": {}}]}`,
  `{"ops": [{"opId": "__proto__", "kind": "__proto__", "id": "__proto__", "type": "upsert", "payload": {"__proto__": {"x": 1}}}]}`,
  `{"ops": [{"opId": "o", "kind": "constructor", "id": "toString", "type": "delete"}]}`,
  `{"__proto__": {"ops": []}}`,
  JSON.stringify({
    ops: Array.from({ length: 1_001 }, (_, index) => ({
      opId: `o${index}`,
      kind: "todo",
      id: `${index}`,
      type: "upsert",
      payload: {},
    })),
  }),
  JSON.stringify({
    ops: Array.from({ length: 20 }, (_, index) => ({
      opId: "same",
      kind: "todo",
      id: "1",
      type: index % 2 === 0 ? "upsert" : "delete",
      payload: { index },
    })),
  }),
];

/** Path segments for kinds and ids. */
const SEGMENTS: readonly string[] = [
  "todo",
  HUGE,
  "%ED%A0%80",
  "%",
  "%2e",
  "%2E%2E",
  "%00",
  encodeURIComponent("😀".repeat(257)),
  "__proto__",
  "constructor",
  "hasOwnProperty",
  "live",
  "health",
  "batch",
];

/** Query strings for pulls. */
const QUERIES: readonly string[] = [
  "",
  `?updatedSince=${HUGE}`,
  `?afterId=${HUGE}&updatedSince=2025-03-01T10:00:00.000Z`,
  "?afterId=%ED%A0%80&updatedSince=2025-03-01T10:00:00.000Z",
  "?afterId=&updatedSince=2025-03-01T10:00:00.000Z",
  `?limit=${"9".repeat(400)}`,
  "?limit=-0",
  "?limit=1&limit=2",
  `?pageToken=${HUGE}`,
  `?pageToken=${base64url(deepArray(50_000))}`,
  `?pageToken=${
    base64url(JSON.stringify([2, 1e300, "a", 1e300]))
  }&updatedSince=2025-03-01T10:00:00.000Z&afterId=a`,
  `?pageToken=${
    base64url(
      JSON.stringify([2, Date.parse("2025-03-01T10:00:00.000Z"), "a", -1e20]),
    )
  }&updatedSince=2025-03-01T10:00:00.000Z&afterId=a`,
  "?updatedSince=+275760-09-13T00:00:00.000Z",
  "?updatedSince=2025-03-01T10:00:00.000Z&afterId=a&includeDeleted=TRUE",
  "?__proto__=1&constructor=2",
];

/** Header sets: credentials, idempotency keys, force flags. */
const HEADERS: readonly Record<string, string>[] = [
  { authorization: "Bearer alice" },
  { authorization: "Bearer __proto__", "idempotency-key": "k-1" },
  { authorization: "Bearer alice", "idempotency-key": "k".repeat(10_000) },
  { authorization: "Bearer alice", "idempotency-key": "caf\u00e9" },
  {
    authorization: "Bearer alice",
    "idempotency-key": "a",
    "x-idempotency-key": "b",
  },
  {
    authorization: "Bearer alice",
    "idempotency-key": "deep",
    "x-force-update": "true",
    "x-force-delete": "\u00ff",
  },
  { authorization: "Basic \u00ff\u00fe" },
  {},
];

async function probe(
  server: SyncServer,
  method: string,
  target: string,
  init: {
    body?: string | Uint8Array<ArrayBuffer> | null;
    headers: Record<string, string>;
  },
): Promise<void> {
  const label = `${method} ${target.slice(0, 80)} ${
    JSON.stringify(init.headers).slice(0, 80)
  } ${String(init.body ?? "").slice(0, 60)}`;
  const withBody = method !== "GET" && method !== "HEAD" &&
    init.body !== undefined && init.body !== null;
  const response = await server.fetch(
    new Request(`${ORIGIN}${target}`, {
      method,
      headers: init.headers,
      ...(withBody ? { body: init.body! } : {}),
    }),
  );
  assert.ok(response.status < 500, `${response.status} for ${label}`);
  if (response.headers.get("content-type") === "text/event-stream") {
    // `GET /live` opens a hint stream: the only route that answers so.
    assert.equal(method, "GET", label);
    assert.equal(new URL(`${ORIGIN}${target}`).pathname, "/live", label);
    await response.body?.cancel();
    return;
  }
  assert.equal(response.headers.get("content-type"), "application/json");
  const body = JSON.parse(await response.text()) as JsonObject;
  if (response.status >= 400) {
    assert.equal(typeof body.error, "string", label);
    assert.match(String(body.message), /^Cannot /, label);
    assert.ok(String(body.message).length < 1_000, label);
  }
}

const STORES: readonly [string, () => ServerStore | Promise<ServerStore>][] = [
  ["memory", createMemoryServerStore],
  ["sqlite", () => openSqliteServerStore(":memory:")],
];

for (const [name, open] of STORES) {
  Deno.test(`hostile (${name}): no route answers 5xx to malformed, deep, huge or prototype input`, async () => {
    const errors: unknown[] = [];
    await using server = createSyncServer({
      store: await open(),
      auth: bearerPrincipal,
      now: () => T0,
      schemas: { todo: z.object({ title: z.string().optional() }) },
      maxBodyBytes: 1_048_576,
      onError: (error) => errors.push(error),
    });
    // Each dimension in full, crossed with a few representatives of the
    // others: every body and header set on valid and invalid paths, every
    // path with every method, every query on every kind.
    const paths = ["/todo/1", `/todo/${HUGE}`, `/${HUGE}/1`, "/__proto__/x"];
    for (const headers of HEADERS) {
      for (const target of paths) {
        for (const body of BODIES) {
          await probe(server, "PUT", target, { body, headers });
        }
        await probe(server, "DELETE", `${target}?_baseUpdatedAt=${HUGE}`, {
          headers,
        });
      }
      for (const body of [...BATCHES, ...BODIES]) {
        await probe(server, "POST", "/batch", { body, headers });
      }
    }
    const keyed = HEADERS[1]!;
    for (const kind of SEGMENTS) {
      for (const id of SEGMENTS) {
        for (const method of ["PUT", "DELETE", "GET", "POST", "PATCH"]) {
          await probe(server, method, `/${kind}/${id}`, {
            body: method === "PUT" ? '{"title": "t"}' : null,
            headers: keyed,
          });
        }
        await probe(
          server,
          "DELETE",
          `/${kind}/${id}?_baseUpdatedAt=x&_baseUpdatedAt=y`,
          { headers: HEADERS[0]! },
        );
      }
      for (const query of QUERIES) {
        await probe(server, "GET", `/${kind}${query}`, { headers: keyed });
      }
      await probe(server, "PUT", `/${kind}`, { body: "{}", headers: keyed });
    }
    for (const target of ["/", "/health", "/health/x", "//", "/a/b/c/d"]) {
      for (const method of ["GET", "PUT", "POST", "DELETE", "OPTIONS"]) {
        await probe(server, method, target, { headers: keyed });
      }
    }
    assert.deepEqual(errors, []);
    // Still serving, and nothing polluted.
    const alice = { authorization: "Bearer alice" };
    const put = await server.fetch(
      new Request(`${ORIGIN}/todo/after`, {
        method: "PUT",
        headers: alice,
        body: JSON.stringify({ title: "fine" }),
      }),
    );
    assert.ok(put.status === 201 || put.status === 200);
    await put.body?.cancel();
    const pulled = await server.fetch(
      new Request(`${ORIGIN}/todo?limit=1000`, { headers: alice }),
    );
    assert.equal(pulled.status, 200);
    await pulled.body?.cancel();
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });
}

Deno.test("hostile: deep nesting with an Idempotency-Key over real HTTP is a 400, stored, never a 500", async () => {
  const errors: unknown[] = [];
  await using server = createSyncServer({
    onError: (error) => errors.push(error),
  });
  await using http = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen(): void {} },
    server.fetch,
  );
  const url = `http://127.0.0.1:${http.addr.port}`;
  for (let attempt = 0; attempt < 2; attempt++) {
    const response = await fetch(`${url}/todo/1`, {
      method: "PUT",
      headers: { "idempotency-key": "op-deep" },
      body: deepObject(5_000),
    });
    assert.equal(response.status, 400);
    assert.equal((await response.json()).error, "too_deep");
    assert.equal(
      response.headers.get("idempotent-replayed"),
      attempt === 0 ? null : "true",
    );
  }
  const batch = await fetch(`${url}/batch`, {
    method: "POST",
    body:
      `{"ops": [{"opId": "o", "kind": "todo", "id": "1", "type": "upsert", "payload": ${
        deepArray(100_000)
      }}]}`,
  });
  assert.equal(batch.status, 200);
  const [result] = (await batch.json()).results;
  assert.equal(result.status, 400);
  assert.equal(result.error.error, "too_deep");
  assert.deepEqual(errors, []);
});

Deno.test("hostile: a reply that cannot be serialised is still a JSON 500, and fetch never rejects", async () => {
  const inner = createMemoryServerStore();
  const errors: unknown[] = [];
  // A broken store hands back a stored answer that JSON cannot write.
  const store: ServerStore = {
    getRecord: (ns, kind, id) => inner.getRecord(ns, kind, id),
    listRecords: (ns, kind, options) => inner.listRecords(ns, kind, options),
    async getIdempotency(ns, key) {
      const entry = await inner.getIdempotency(ns, key);
      return entry === null
        ? null
        : { ...entry, body: { n: 1n } as unknown as JsonObject };
    },
    commit: (writes) => inner.commit(writes),
    purge: (options) => inner.purge(options),
    trimIdempotency: (ns, options) => inner.trimIdempotency(ns, options),
    lastWrite: (ns) => inner.lastWrite(ns),
    close: () => inner.close(),
    [Symbol.asyncDispose]: () => inner.close(),
  };
  await using server = createSyncServer({
    store,
    onError: (error) => errors.push(error),
  });
  const put = () =>
    server.fetch(
      new Request(`${ORIGIN}/todo/1`, {
        method: "PUT",
        headers: { "idempotency-key": "k" },
        body: "{}",
      }),
    );
  assert.equal((await put()).status, 201);
  const replay = await put();
  assert.equal(replay.status, 500);
  assert.deepEqual(await replay.json(), {
    error: "internal",
    message: "Cannot answer request as the server failed",
  });
  assert.equal(errors.length, 1);
});

Deno.test("hostile: a body with bytes that are not UTF-8 is refused, a valid one carrying U+FFFD is stored as it is", async () => {
  await using server = createSyncServer();
  const put = (id: string, body: Uint8Array<ArrayBuffer>) =>
    server.fetch(
      new Request(`${ORIGIN}/todo/${id}`, {
        method: "PUT",
        headers: { "content-type": "application/json" },
        body,
      }),
    );
  const encode = (text: string) => new TextEncoder().encode(text);
  // `{"title": "x<0xff>"}`: JSON once the byte becomes U+FFFD, never
  // stored like that.
  const bad = new Uint8Array([
    ...encode('{"title": "x'),
    0xff,
    ...encode('"}'),
  ]);
  const refused = await put("a", bad);
  assert.equal(refused.status, 400);
  await refused.body?.cancel();
  const title = "a\uFFFDb";
  const taken = await put("b", encode(JSON.stringify({ title })));
  assert.equal(taken.status, 201);
  assert.equal((await taken.json()).title, title);
  const page = await server.fetch(new Request(`${ORIGIN}/todo`));
  const { items } = await page.json();
  assert.deepEqual(
    items.map((item: JsonObject) => [item.id, item.title]),
    [["b", title]],
  );
});
