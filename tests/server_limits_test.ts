/**
 * The reference server keeps CONTRACT.md §Limits on every route, before it
 * touches data: ids, kinds, depth, record and batch size, idempotency keys,
 * query parameters; pull pages capped by bytes; one principal's writes never
 * wait for another's; stored idempotency keys bounded per principal.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { JsonObject, JsonValue } from "../src/json.ts";
import { cursorIdAfter } from "../src/limits.ts";
import {
  createSyncServer,
  type ListServerRecordsOptions,
  type ListServerRecordsResult,
  type ServerStore,
  type ServerWrite,
  type SyncServer,
} from "../server/mod.ts";
import { createMemoryServerStore } from "../server/memory.ts";
import { openSqliteServerStore } from "../server/sqlite.ts";
import { bearerPrincipal, iso, T0 } from "../server/_conformance_kit.ts";

const ORIGIN = "http://sync.test";

interface Answer {
  readonly status: number;
  readonly body: JsonObject;
  readonly headers: Headers;
  readonly text: string;
}

async function send(
  server: SyncServer,
  method: string,
  target: string,
  init: { json?: JsonValue; raw?: BodyInit; headers?: HeadersInit } = {},
): Promise<Answer> {
  const body = init.json !== undefined ? JSON.stringify(init.json) : init.raw;
  const response = await server.fetch(
    new Request(`${ORIGIN}${target}`, {
      method,
      headers: init.headers ?? {},
      ...(body === undefined ? {} : { body }),
    }),
  );
  const text = await response.text();
  return {
    status: response.status,
    body: JSON.parse(text) as JsonObject,
    headers: response.headers,
    text,
  };
}

/** Asserts a JSON 4xx refusal with a std-style message. */
function assertRefused(answer: Answer, status: number, code: string): void {
  assert.equal(answer.status, status, answer.text.slice(0, 300));
  assert.equal(answer.body.error, code, answer.text.slice(0, 300));
  assert.match(String(answer.body.message), /^Cannot [a-z]/);
  assert.ok(!String(answer.body.message).endsWith("."));
}

/** Counts what a store is asked and what it returns. */
function spy(inner: ServerStore): ServerStore & {
  writes: number;
  listed: number[];
} {
  const store = {
    writes: 0,
    listed: [] as number[],
    getRecord: (ns: string, kind: string, id: string) =>
      inner.getRecord(ns, kind, id),
    async listRecords(
      ns: string,
      kind: string,
      options: ListServerRecordsOptions,
    ): Promise<ListServerRecordsResult> {
      const page = await inner.listRecords(ns, kind, options);
      store.listed.push(page.records.length);
      return page;
    },
    getIdempotency: (ns: string, key: string) => inner.getIdempotency(ns, key),
    commit(writes: readonly ServerWrite[]): Promise<void> {
      store.writes += writes.length;
      return inner.commit(writes);
    },
    purge: inner.purge.bind(inner),
    trimIdempotency: inner.trimIdempotency.bind(inner),
    lastWrite: inner.lastWrite.bind(inner),
    close: () => inner.close(),
    [Symbol.asyncDispose]: () => inner.close(),
  };
  return store;
}

function nested(depth: number): JsonObject {
  let value: JsonObject = { leaf: true };
  for (let level = 1; level < depth; level++) value = { a: value };
  return value;
}

const STORES: readonly [string, () => ServerStore | Promise<ServerStore>][] = [
  ["memory", createMemoryServerStore],
  ["sqlite", () => openSqliteServerStore(":memory:")],
];

// ---------------------------------------------------------------------------
// Ids, kinds, depth, keys
// ---------------------------------------------------------------------------

Deno.test("limits: ids of 1 to 256 well-formed code points pass, others are 400 invalid_id on every route", async () => {
  const store = spy(createMemoryServerStore());
  await using server = createSyncServer({ store });
  const longest = "😀".repeat(256);
  const put = await send(
    server,
    "PUT",
    `/todo/${encodeURIComponent(longest)}`,
    {
      json: { v: 1 },
    },
  );
  assert.equal(put.status, 201);
  assert.equal(put.body.id, longest);
  const writes = store.writes;
  const tooLong = encodeURIComponent("😀".repeat(257));
  const huge = "x".repeat(70_000);
  for (const method of ["PUT", "DELETE"]) {
    for (const id of [tooLong, huge]) {
      assertRefused(
        await send(server, method, `/todo/${id}`, {
          json: {},
          headers: { "idempotency-key": "k" },
        }),
        400,
        "invalid_id",
      );
    }
  }
  const batch = await send(server, "POST", "/batch", {
    json: {
      ops: [
        { opId: "o1", kind: "todo", id: ".", type: "upsert", payload: {} },
        { opId: "o2", kind: "todo", id: "..", type: "delete" },
        {
          opId: "o3",
          kind: "todo",
          id: "a\ud800",
          type: "upsert",
          payload: {},
        },
        { opId: "o4", kind: "todo", id: huge, type: "upsert", payload: {} },
        { opId: "o5", kind: "todo", id: longest, type: "delete" },
      ],
    },
  });
  assert.equal(batch.status, 200);
  const results = batch.body.results as JsonObject[];
  assert.deepEqual(
    results.map((result) => [
      result.status,
      (result.error as JsonObject | undefined)?.error ?? null,
    ]),
    [
      [400, "invalid_id"],
      [400, "invalid_id"],
      [400, "invalid_id"],
      [400, "invalid_id"],
      [200, null],
    ],
  );
  // Only the valid delete wrote (a record and its key); no refusal did.
  assert.equal(store.writes, writes + 2);
  // A 70,000-character id is quoted in 64 characters at most.
  assert.ok(String((results[3]!.error as JsonObject).message).length < 300);
});

Deno.test("limits: kinds of 1 to 64 characters of [A-Za-z0-9_-] pass, others are 400 invalid_kind", async () => {
  await using server = createSyncServer();
  const widest = "K".repeat(64);
  assert.equal(
    (await send(server, "PUT", `/${widest}/1`, { json: {} })).status,
    201,
  );
  for (const kind of ["K".repeat(65), "a.b", "to%20do", "%C3%BC", "a%2Fb"]) {
    assertRefused(
      await send(server, "PUT", `/${kind}/1`, { json: {} }),
      400,
      "invalid_kind",
    );
    assertRefused(await send(server, "GET", `/${kind}`), 400, "invalid_kind");
    assertRefused(
      await send(server, "DELETE", `/${kind}/1`),
      400,
      "invalid_kind",
    );
  }
  // A reserved route name is no kind: under it, a record route is refused.
  await using offline = createSyncServer({ live: false });
  assert.equal((await send(offline, "GET", "/live")).status, 404);
  for (const target of ["/live/1", "/health/1", "/batch/1"]) {
    for (const method of ["GET", "PUT", "DELETE"]) {
      assertRefused(await send(server, method, target), 400, "invalid_kind");
    }
  }
  // A lone surrogate in the path: the kind's or the id's code, by position.
  assertRefused(await send(server, "GET", "/%ED%A0%80"), 400, "invalid_kind");
  assertRefused(
    await send(server, "PUT", "/todo/%ED%A0%80", { json: {} }),
    400,
    "invalid_id",
  );
  assertRefused(
    await send(server, "DELETE", "/todo/a%ED%A0%80"),
    400,
    "invalid_id",
  );
  const batch = await send(server, "POST", "/batch", {
    json: {
      ops: [
        { opId: "o1", kind: "a.b", id: "1", type: "upsert", payload: {} },
        { opId: "o2", kind: "live", id: "1", type: "upsert", payload: {} },
        { opId: "o3", kind: widest, id: "2", type: "upsert", payload: {} },
      ],
    },
  });
  assert.deepEqual(
    (batch.body.results as JsonObject[]).map((result) => [
      result.status,
      (result.error as JsonObject | undefined)?.error ?? null,
    ]),
    [[400, "invalid_kind"], [400, "invalid_kind"], [201, null]],
  );
});

Deno.test("limits: a record nested deeper than 64 levels is 400 too_deep, never a 500, with or without a key", async () => {
  const store = spy(createMemoryServerStore());
  const errors: unknown[] = [];
  await using server = createSyncServer({
    store,
    onError: (error) => errors.push(error),
  });
  assert.equal(
    (await send(server, "PUT", "/todo/ok", { json: nested(64) })).status,
    201,
  );
  for (const depth of [65, 5_000, 100_000]) {
    for (const headers of [{}, { "idempotency-key": `deep-${depth}` }]) {
      assertRefused(
        await send(server, "PUT", "/todo/deep", {
          json: nested(depth),
          headers,
        }),
        400,
        "too_deep",
      );
    }
  }
  // A 400 is a definitive answer: its key replays it.
  const replay = await send(server, "PUT", "/todo/deep", {
    json: nested(5_000),
    headers: { "idempotency-key": "deep-5000" },
  });
  assert.equal(replay.headers.get("idempotent-replayed"), "true");
  const batch = await send(server, "POST", "/batch", {
    json: {
      ops: [
        {
          opId: "b1",
          kind: "todo",
          id: "deep",
          type: "upsert",
          payload: nested(5_000),
        },
        {
          opId: "b2",
          kind: "todo",
          id: "deep",
          type: "delete",
          baseUpdatedAt: nested(5_000),
        },
        { opId: "b3", kind: "todo", id: "fine", type: "upsert", payload: {} },
      ],
    },
  });
  assert.deepEqual(
    (batch.body.results as JsonObject[]).map((result) => [
      result.status,
      (result.error as JsonObject | undefined)?.error ?? null,
    ]),
    [[400, "too_deep"], [400, "invalid_timestamp"], [201, null]],
  );
  assert.deepEqual(errors, []);
  assert.equal(
    (await send(server, "GET", "/todo")).body.items instanceof Array,
    true,
  );
});

Deno.test("limits: a record body over maxBodyBytes is 413, alone in a batch", async () => {
  await using server = createSyncServer({ maxBodyBytes: 100 });
  assertRefused(
    await send(server, "PUT", "/todo/1", { json: { text: "é".repeat(60) } }),
    413,
    "payload_too_large",
  );
  const batch = await send(server, "POST", "/batch", {
    json: {
      ops: [
        {
          opId: "o1",
          kind: "todo",
          id: "big",
          type: "upsert",
          // 60 "é" are 120 UTF-8 bytes in 60 UTF-16 units.
          payload: { text: "é".repeat(60) },
        },
        { opId: "o2", kind: "todo", id: "small", type: "upsert", payload: {} },
      ],
    },
  });
  assert.deepEqual(
    (batch.body.results as JsonObject[]).map((result) => result.status),
    [413, 201],
  );
});

Deno.test("limits: a batch of more than maxBatchOps ops or maxBatchBytes is 413 batch_too_large and applies nothing", async () => {
  const store = spy(createMemoryServerStore());
  await using server = createSyncServer({
    store,
    maxBatchOps: 3,
    maxIdempotencyKeys: 10,
    maxBatchBytes: 1000,
  });
  const ops = (count: number, pad = 0) =>
    Array.from({ length: count }, (_, index) => ({
      opId: `o${index}`,
      kind: "todo",
      id: `r${index}`,
      type: "upsert",
      payload: { pad: "x".repeat(pad) },
    }));
  assertRefused(
    await send(server, "POST", "/batch", { json: { ops: ops(4) } }),
    413,
    "batch_too_large",
  );
  assertRefused(
    await send(server, "POST", "/batch", { json: { ops: ops(2, 600) } }),
    413,
    "batch_too_large",
  );
  // Streamed, without Content-Length: the bytes read count.
  const streamed = await server.fetch(
    new Request(`${ORIGIN}/batch`, {
      method: "POST",
      body: ReadableStream.from([
        new TextEncoder().encode(JSON.stringify({ ops: ops(2, 600) })),
      ]),
    }),
  );
  assert.equal(streamed.status, 413);
  assert.equal((await streamed.json()).error, "batch_too_large");
  assert.equal(store.writes, 0);
  const fits = await send(server, "POST", "/batch", { json: { ops: ops(3) } });
  assert.deepEqual(
    (fits.body.results as JsonObject[]).map((result) => result.status),
    [201, 201, 201],
  );
  // The contract's defaults: 1,000 ops pass, 1,001 do not.
  await using defaults = createSyncServer();
  assertRefused(
    await send(defaults, "POST", "/batch", { json: { ops: ops(1_001) } }),
    413,
    "batch_too_large",
  );
  const thousand = await send(defaults, "POST", "/batch", {
    json: { ops: ops(1_000) },
  });
  assert.equal((thousand.body.results as JsonObject[]).length, 1_000);
});

Deno.test("limits: idempotency keys are 1 to 255 visible ASCII characters", async () => {
  await using server = createSyncServer();
  const longest = "k".repeat(255);
  assert.equal(
    (await send(server, "PUT", "/todo/1", {
      json: {},
      headers: { "idempotency-key": longest },
    })).status,
    201,
  );
  for (
    const key of ["k".repeat(256), "has space", "tab\tkey", "ünï", "a\u007f"]
  ) {
    const headers = new Headers();
    // Headers refuse non-Latin-1: send those through the batch only.
    try {
      headers.set("idempotency-key", key);
    } catch {
      continue;
    }
    assertRefused(
      await send(server, "PUT", "/todo/2", { json: {}, headers }),
      400,
      "invalid_idempotency_key",
    );
    assertRefused(
      await send(server, "DELETE", "/todo/1", { headers }),
      400,
      "invalid_idempotency_key",
    );
  }
  for (const opId of ["ünï", "k".repeat(256), "a b"]) {
    assertRefused(
      await send(server, "POST", "/batch", {
        json: {
          ops: [{ opId, kind: "todo", id: "3", type: "upsert", payload: {} }],
        },
      }),
      400,
      "invalid_idempotency_key",
    );
  }
  assert.deepEqual(
    ((await send(server, "GET", "/todo")).body.items as JsonObject[]).map((
      item,
    ) => item.id),
    ["1"],
  );
});

Deno.test("limits: pull query parameters: afterId is a cursor, updatedSince a timestamp, limit 1 to the page size", async () => {
  await using server = createSyncServer({ now: () => T0 });
  for (const id of ["a", "😀".repeat(256)]) {
    await send(server, "PUT", `/todo/${encodeURIComponent(id)}`, { json: {} });
  }
  const since = iso(T0);
  const pull = (query: Record<string, string>) =>
    send(server, "GET", `/todo?${new URLSearchParams(query)}`);
  // A cursor may be "." or "..", or what cursorIdAfter() makes of a long id.
  const cut = cursorIdAfter("😀".repeat(300))!;
  for (const afterId of [".", "..", "a", cut, "\ue000"]) {
    assert.equal(
      (await pull({ updatedSince: since, afterId })).status,
      200,
      afterId,
    );
  }
  for (const afterId of ["", "😀".repeat(257), "x".repeat(70_000)]) {
    assertRefused(
      await pull({ updatedSince: since, afterId }),
      400,
      "invalid_cursor",
    );
  }
  for (
    const updatedSince of [
      "x".repeat(70_000),
      "2025-13-01T00:00:00Z",
      // Dates the calendar does not have: the client's rule, shared.
      "2025-02-30T00:00:00.000Z",
      "2025-02-29T00:00:00.000Z",
      "2025-04-31T10:00:00.000Z",
    ]
  ) {
    assertRefused(await pull({ updatedSince }), 400, "invalid_timestamp");
  }
  for (const limit of ["0", "1".repeat(16), "-5", "1e3"]) {
    assertRefused(await pull({ limit }), 400, "invalid_limit");
  }
  const clamped = await pull({ limit: "999999" });
  assert.equal(clamped.status, 200);
});

// ---------------------------------------------------------------------------
// Pull pages capped by bytes
// ---------------------------------------------------------------------------

for (const [name, open] of STORES) {
  Deno.test(`limits (${name}): a pull page holds at most maxPageBytes and the store reads no more than the page`, async () => {
    const store = spy(await open());
    const maxPageBytes = 40_000;
    await using server = createSyncServer({ store, maxPageBytes });
    // 60 records of ~10 KB: a page of limit=1000 would be ~600 KB.
    const ids: string[] = [];
    for (let index = 0; index < 60; index++) {
      const id = `r${String(index).padStart(2, "0")}`;
      ids.push(id);
      await send(server, "PUT", `/todo/${id}`, {
        json: { text: "é".repeat(5_000) },
      });
    }
    store.listed.length = 0;
    const seen: string[] = [];
    let query: Record<string, string> = { limit: "1000" };
    for (let pages = 1;; pages++) {
      const page = await send(
        server,
        "GET",
        `/todo?${new URLSearchParams(query)}`,
      );
      assert.equal(page.status, 200);
      assert.ok(
        new TextEncoder().encode(page.text).length <= maxPageBytes,
        `page ${pages}: ${page.text.length}`,
      );
      const items = page.body.items as JsonObject[];
      // The store materialised exactly the page, never the next records.
      assert.equal(store.listed.at(-1), items.length);
      seen.push(...items.map((item) => String(item.id)));
      const last = items.at(-1);
      if (page.body.nextPageToken === null || last === undefined) {
        assert.ok(pages >= 15, `${pages} pages`);
        break;
      }
      // Cut short by bytes, yet it carries a token.
      assert.ok(items.length < 1000);
      query = {
        limit: "1000",
        updatedSince: String(last.updated_at),
        afterId: String(last.id),
        pageToken: String(page.body.nextPageToken),
      };
    }
    assert.deepEqual(seen, ids);
  });

  Deno.test(`limits (${name}): a record larger than maxPageBytes goes out alone and the pull goes on`, async () => {
    await using server = createSyncServer({
      store: await open(),
      maxPageBytes: 4096,
      now: () => T0,
    });
    await send(server, "PUT", "/todo/a", { json: {} });
    await send(server, "PUT", "/todo/b", { json: { text: "x".repeat(9000) } });
    await send(server, "PUT", "/todo/c", { json: {} });
    const first = await send(server, "GET", "/todo?limit=10");
    assert.deepEqual(
      (first.body.items as JsonObject[]).map((item) => item.id),
      ["a"],
    );
    assert.equal(typeof first.body.nextPageToken, "string");
    const second = await send(
      server,
      "GET",
      `/todo?limit=10&updatedSince=${
        iso(T0)
      }&afterId=a&pageToken=${first.body.nextPageToken}`,
    );
    assert.deepEqual(
      (second.body.items as JsonObject[]).map((item) => item.id),
      ["b"],
    );
    assert.equal(typeof second.body.nextPageToken, "string");
    // The cursor is the last item's: over a shared store (SQLite) each
    // write moves past the stored clock, so "b" is not at T0.
    const b = (second.body.items as JsonObject[])[0]!;
    const third = await send(
      server,
      "GET",
      `/todo?limit=10&updatedSince=${b.updated_at}&afterId=b`,
    );
    assert.deepEqual(
      (third.body.items as JsonObject[]).map((item) => item.id),
      ["c"],
    );
    assert.equal(third.body.nextPageToken, null);
  });
}

Deno.test("limits: a store that ignores maxBytes still cannot make a page larger than maxPageBytes", async () => {
  const inner = createMemoryServerStore();
  const careless: ServerStore = {
    ...spy(inner),
    listRecords(ns, kind, options) {
      const { maxBytes: _ignored, ...rest } = options;
      return inner.listRecords(ns, kind, rest);
    },
  };
  await using server = createSyncServer({
    store: careless,
    maxPageBytes: 8192,
  });
  for (let index = 0; index < 10; index++) {
    await send(server, "PUT", `/todo/r${index}`, {
      json: { text: "x".repeat(2000) },
    });
  }
  const page = await send(server, "GET", "/todo?limit=1000");
  assert.ok(page.text.length <= 8192, String(page.text.length));
  assert.equal((page.body.items as JsonObject[]).length, 2);
  assert.equal(typeof page.body.nextPageToken, "string");
});

Deno.test("limits: createSyncServer() validates the new limits", () => {
  assert.throws(() => createSyncServer({ maxPageBytes: 4095 }), RangeError);
  assert.throws(() => createSyncServer({ maxBatchOps: 0 }), RangeError);
  // Never more than the contract: clients size batches and caps by it.
  assert.throws(() => createSyncServer({ maxBatchOps: 1_001 }), {
    name: "RangeError",
    message: /'maxBatchOps' exceeds the contract's 1000: current value is 1001/,
  });
  assert.throws(() => createSyncServer({ maxPageSize: 1_001 }), {
    name: "RangeError",
    message: /'maxPageSize' exceeds the contract's 1000: current value is 1001/,
  });
  createSyncServer({ maxBatchOps: 1_000, maxPageSize: 1_000 }).close();
  assert.throws(() => createSyncServer({ maxBatchBytes: 1.5 }), RangeError);
  assert.throws(
    () => createSyncServer({ maxBatchOps: 10, maxIdempotencyKeys: 9 }),
    RangeError,
  );
  assert.throws(
    () => createSyncServer({ idempotencyRetentionMs: Infinity }),
    RangeError,
  );
});

// ---------------------------------------------------------------------------
// Locks and idempotency keys per principal
// ---------------------------------------------------------------------------

Deno.test("limits: one principal's write in progress never holds up another's", async () => {
  const inner = createMemoryServerStore();
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  let aliceWaiting!: () => void;
  const aliceCommitting = new Promise<void>((resolve) =>
    aliceWaiting = resolve
  );
  const store: ServerStore = {
    ...spy(inner),
    async commit(writes) {
      if (writes.some((write) => write.namespace === "alice")) {
        aliceWaiting();
        await gate;
      }
      return await inner.commit(writes);
    },
  };
  await using server = createSyncServer({ store, auth: bearerPrincipal });
  // Released in any case: close() waits for Alice's write.
  try {
    const alice = send(server, "POST", "/batch", {
      headers: { authorization: "Bearer alice" },
      json: {
        ops: [{
          opId: "a",
          kind: "todo",
          id: "1",
          type: "upsert",
          payload: {},
        }],
      },
    });
    await aliceCommitting;
    // Bob writes while Alice's batch holds her queue. The timer only turns a
    // shared lock (Bob waiting for ever) into a failure instead of a hang.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const bob = await Promise.race([
      send(server, "PUT", "/todo/1", {
        headers: { authorization: "Bearer bob" },
        json: {},
      }),
      new Promise<null>((resolve) => timer = setTimeout(resolve, 5_000, null)),
    ]);
    clearTimeout(timer);
    assert.ok(bob !== null, "Bob's write waited for Alice's");
    assert.equal(bob.status, 201);
    // Alice's next write does wait for her first.
    let second = false;
    const next = send(server, "PUT", "/todo/2", {
      headers: { authorization: "Bearer alice" },
      json: {},
    }).then((answer) => {
      second = true;
      return answer;
    });
    await send(server, "GET", "/todo", {
      headers: { authorization: "Bearer bob" },
    });
    assert.equal(second, false);
    release();
    assert.equal((await alice).status, 200);
    assert.equal((await next).status, 201);
  } finally {
    release();
  }
});

Deno.test("limits: stored keys per principal are bounded: the oldest expire after 24 h, else 429 with Retry-After", async () => {
  let now = T0;
  const store = spy(createMemoryServerStore());
  await using server = createSyncServer({
    store,
    auth: bearerPrincipal,
    now: () => now,
    maxIdempotencyKeys: 3,
    maxBatchOps: 2,
  });
  const put = (principal: string, id: string, key?: string) =>
    send(server, "PUT", `/todo/${id}`, {
      json: { id },
      headers: {
        authorization: `Bearer ${principal}`,
        ...(key === undefined ? {} : { "idempotency-key": key }),
      },
    });
  for (const index of [1, 2, 3]) {
    assert.equal((await put("alice", `r${index}`, `k${index}`)).status, 201);
    now += 60_000;
  }
  now = T0 + 3_600_000;
  const writes = store.writes;
  const refused = await put("alice", "r4", "k4");
  assertRefused(refused, 429, "too_many_keys");
  // The oldest key (stored at T0) may go at T0 + 24 h: in 23 hours.
  assert.equal(refused.headers.get("retry-after"), String(23 * 3600));
  assert.equal(store.writes, writes, "a 429 applies nothing");
  const batch = await send(server, "POST", "/batch", {
    headers: { authorization: "Bearer alice" },
    json: {
      ops: [
        { opId: "b1", kind: "todo", id: "b1", type: "upsert", payload: {} },
        {
          opId: "k1",
          kind: "todo",
          id: "r1",
          type: "upsert",
          payload: { id: "r1" },
        },
      ],
    },
  });
  assertRefused(batch, 429, "too_many_keys");
  // Replays, writes without a key and other principals are not held.
  assert.equal(
    (await put("alice", "r1", "k1")).headers.get("idempotent-replayed"),
    "true",
  );
  assert.equal((await put("alice", "r5")).status, 201);
  assert.equal((await put("bob", "r1", "k1")).status, 201);
  // Not stored: the same key is evaluated again once there is room.
  now = T0 + 24 * 3_600_000;
  assert.equal((await put("alice", "r4", "k4")).status, 201);
  // k1 went first; k2 is the oldest now, and not 24 h old yet.
  const k1 = await put("alice", "r1", "k1");
  assert.equal(k1.status, 429, "k1 is gone, and k2 is not 24 h old yet");
  now += 60_000;
  assert.equal(
    (await put("alice", "r2", "k2")).headers.get("idempotent-replayed"),
    "true",
  );
  const again = await put("alice", "r1", "k1");
  assert.equal(again.status, 200);
  assert.equal(again.headers.get("idempotent-replayed"), null);
  assert.equal(
    (await put("alice", "r3", "k3")).headers.get("idempotent-replayed"),
    "true",
  );
});

Deno.test("limits: maintenance removes expired keys and tombstones in bounded slices, one per request that finds it due", async () => {
  let now = T0;
  const inner = createMemoryServerStore();
  const limits: (number | undefined)[] = [];
  const store: ServerStore = {
    ...spy(inner),
    purge(options) {
      limits.push(options.limit);
      return inner.purge(options);
    },
  };
  await using server = createSyncServer({
    store,
    now: () => now,
    idempotencyRetentionMs: 1_000,
  });
  const entries = Array.from({ length: 2_500 }, (_, index) => ({
    type: "idempotency" as const,
    namespace: "public",
    entry: {
      key: `k${index}`,
      fingerprint: "f",
      status: 200,
      body: "{}",
      expiresAt: T0 + 10,
    },
  }));
  await inner.commit(entries);
  const get = () => send(server, "GET", "/todo");
  now = T0 + 60_000;
  assert.equal((await get()).status, 200);
  assert.deepEqual(limits, [1_000], "one bounded slice");
  // Slices left: the next requests each run one, at once.
  assert.equal((await get()).status, 200);
  assert.equal((await get()).status, 200);
  assert.deepEqual(limits, [1_000, 1_000, 1_000]);
  assert.equal(await inner.getIdempotency("public", "k2499"), null);
  // Done: the next slice waits for the interval.
  assert.equal((await get()).status, 200);
  assert.equal(limits.length, 3);
});

Deno.test("limits: a batch's answer is bounded: past twice maxBatchBytes of records, ops are answered 503 unapplied and apply when sent again", async () => {
  await using server = createSyncServer({ maxBatchBytes: 65_536 });
  const big = "x".repeat(30_000);
  for (let index = 0; index < 10; index++) {
    const put = await send(server, "PUT", `/todo/r${index}`, {
      json: { id: `r${index}`, big },
    });
    assert.equal(put.status, 201);
  }
  const ops = Array.from({ length: 10 }, (_, index) => ({
    opId: `d${index}`,
    kind: "todo",
    id: `r${index}`,
    type: "delete",
  }));
  const first = await send(server, "POST", "/batch", { json: { ops } });
  assert.equal(first.status, 200);
  const results = first.body.results as JsonObject[];
  const statuses = results.map((result) => result.status);
  // 131,072 bytes of budget: five tombstones of ~30 KB pass it.
  assert.deepEqual(statuses, [
    200,
    200,
    200,
    200,
    200,
    503,
    503,
    503,
    503,
    503,
  ]);
  assert.equal(
    (results[5]!.error as JsonObject).error,
    "batch_answer_full",
  );
  assert.ok(first.text.length < 2 * 131_072, "the answer stays bounded");
  const pulled = await send(server, "GET", "/todo?includeDeleted=true");
  const deleted = (pulled.body.items as JsonObject[])
    .filter((item) => item.deleted_at !== undefined).map((item) => item.id);
  assert.deepEqual(deleted, ["r0", "r1", "r2", "r3", "r4"]);
  const again = await send(server, "POST", "/batch", {
    json: { ops: ops.slice(5) },
  });
  assert.deepEqual(
    (again.body.results as JsonObject[]).map((result) => result.status),
    [200, 200, 200, 200, 200],
  );
});
