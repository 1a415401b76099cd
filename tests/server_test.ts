import assert from "node:assert/strict";
import { z } from "zod";
import { ClosedError } from "../src/errors.ts";
import type { JsonObject, JsonValue } from "../src/json.ts";
import {
  createSyncServer,
  type IdempotencyEntry,
  type LastWrite,
  type ListRecordsOptions,
  type ListRecordsResult,
  type ServerRecord,
  type ServerStore,
  type ServerStorePurgeOptions,
  type ServerStorePurgeResult,
  type ServerWrite,
  type SyncServer,
  type SyncServerOptions,
  type TrimIdempotencyOptions,
  type TrimIdempotencyResult,
} from "../server/mod.ts";
import { createMemoryServerStore } from "../server/memory.ts";
import { testServerStore } from "../server/conformance.ts";
import {
  AWKWARD_IDS,
  serverRecord,
  shuffled,
} from "../server/_conformance_kit.ts";

testServerStore(
  "memory",
  () => Promise.resolve({ store: createMemoryServerStore() }),
);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const ORIGIN = "http://sync.test";
const T0 = Date.UTC(2025, 2, 1, 10, 0, 0);

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** A clock the test moves by hand. */
class TestClock {
  ms: number;
  constructor(ms = T0) {
    this.ms = ms;
  }
  readonly now = (): number => this.ms;
}

interface ErrorBody extends JsonObject {
  error: string;
  message: string;
}

interface ConflictBody extends ErrorBody {
  current: JsonObject;
  serverTimestamp: string;
}

interface PullBody extends JsonObject {
  items: JsonObject[];
  nextPageToken: string | null;
}

interface BatchResult extends JsonObject {
  opId: string;
  status: number;
}

interface BatchBody extends JsonObject {
  results: BatchResult[];
}

interface Answer<T> {
  readonly status: number;
  readonly body: T;
  readonly headers: Headers;
}

interface SendOptions {
  /** A JSON body. */
  readonly json?: JsonValue;
  /** A raw body. */
  readonly raw?: BodyInit;
  readonly headers?: Record<string, string>;
}

function path(kind: string, id?: string): string {
  return id === undefined
    ? `/${encodeURIComponent(kind)}`
    : `/${encodeURIComponent(kind)}/${encodeURIComponent(id)}`;
}

function request(
  method: string,
  target: string,
  options: SendOptions = {},
): Request {
  const body = options.json !== undefined
    ? JSON.stringify(options.json)
    : options.raw;
  return new Request(`${ORIGIN}${target}`, {
    method,
    ...(options.headers === undefined ? {} : { headers: options.headers }),
    ...(body === undefined ? {} : { body }),
  });
}

async function answer<T = JsonObject>(response: Response): Promise<Answer<T>> {
  assert.equal(response.headers.get("content-type"), "application/json");
  return {
    status: response.status,
    body: await response.json() as T,
    headers: response.headers,
  };
}

async function send<T = JsonObject>(
  server: SyncServer,
  method: string,
  target: string,
  options: SendOptions = {},
): Promise<Answer<T>> {
  return await answer<T>(
    await server.fetch(request(method, target, options)),
  );
}

/** PUTs a record and returns the stored one, asserting a 2xx. */
async function putOk(
  server: SyncServer,
  kind: string,
  id: string,
  json: JsonObject,
  headers: Record<string, string> = {},
): Promise<JsonObject> {
  const { status, body } = await send(server, "PUT", path(kind, id), {
    json,
    headers,
  });
  assert.ok(status === 200 || status === 201, JSON.stringify(body));
  return body;
}

async function pull(
  server: SyncServer,
  kind: string,
  query: Record<string, string> = {},
  headers: Record<string, string> = {},
): Promise<Answer<PullBody>> {
  const search = new URLSearchParams(query).toString();
  return await send<PullBody>(
    server,
    "GET",
    `${path(kind)}${search === "" ? "" : `?${search}`}`,
    { headers },
  );
}

/** Pulls a whole table page by page, as the client does. */
async function pullAll(
  server: SyncServer,
  kind: string,
  limit: number,
  extra: Record<string, string> = {},
): Promise<{ items: JsonObject[]; pages: number }> {
  const items: JsonObject[] = [];
  let query: Record<string, string> = { limit: String(limit), ...extra };
  for (let pages = 1;; pages++) {
    const { status, body } = await pull(server, kind, query);
    assert.equal(status, 200, JSON.stringify(body));
    items.push(...body.items);
    const last = body.items.at(-1);
    if (body.nextPageToken === null || last === undefined) {
      assert.ok(body.items.length < limit);
      return { items, pages };
    }
    assert.equal(body.items.length, limit);
    query = {
      limit: String(limit),
      ...extra,
      updatedSince: String(last.updated_at),
      afterId: String(last.id),
      pageToken: body.nextPageToken,
    };
  }
}

/** A store that records each call and can be told to fail commits. */
class SpyStore implements ServerStore {
  readonly calls: string[] = [];
  /** The writes of every commit, in order. */
  readonly commits: (readonly ServerWrite[])[] = [];
  failCommits = false;
  /** Fails only the commits this returns `true` for. */
  failWhen: (writes: readonly ServerWrite[]) => boolean = () => false;
  readonly #inner: ServerStore;

  constructor(inner: ServerStore = createMemoryServerStore()) {
    this.#inner = inner;
  }

  getRecord(
    namespace: string,
    kind: string,
    id: string,
  ): Promise<ServerRecord | null> {
    this.calls.push("getRecord");
    return this.#inner.getRecord(namespace, kind, id);
  }

  listRecords(
    namespace: string,
    kind: string,
    options: ListRecordsOptions,
  ): Promise<ListRecordsResult> {
    this.calls.push("listRecords");
    return this.#inner.listRecords(namespace, kind, options);
  }

  getIdempotency(
    namespace: string,
    key: string,
  ): Promise<IdempotencyEntry | null> {
    this.calls.push("getIdempotency");
    return this.#inner.getIdempotency(namespace, key);
  }

  commit(writes: readonly ServerWrite[]): Promise<void> {
    this.calls.push("commit");
    this.commits.push(writes);
    if (this.failCommits || this.failWhen(writes)) {
      return Promise.reject(new Error("disk on fire"));
    }
    return this.#inner.commit(writes);
  }

  purge(options: ServerStorePurgeOptions): Promise<ServerStorePurgeResult> {
    this.calls.push("purge");
    return this.#inner.purge(options);
  }

  trimIdempotency(
    namespace: string,
    options: TrimIdempotencyOptions,
  ): Promise<TrimIdempotencyResult> {
    this.calls.push("trimIdempotency");
    return this.#inner.trimIdempotency(namespace, options);
  }

  lastWrite(namespace: string): Promise<LastWrite | null> {
    this.calls.push("lastWrite");
    return this.#inner.lastWrite(namespace);
  }

  close(): Promise<void> {
    this.calls.push("close");
    return this.#inner.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

function bearer(request: Request): string | null {
  const match = request.headers.get("authorization")?.match(
    /^Bearer (\w+)$/,
  );
  return match?.[1] ?? null;
}

function as(principal: string): Record<string, string> {
  return { authorization: `Bearer ${principal}` };
}

function quiet(): void {}

function options(extra: SyncServerOptions = {}): SyncServerOptions {
  return { onError: quiet, ...extra };
}

// ---------------------------------------------------------------------------
// Health, envelope, routes
// ---------------------------------------------------------------------------

/** The limits `/health` states by default (CONTRACT.md §Limits). */
const DEFAULT_LIMITS = {
  maxIdLength: 256,
  maxKindLength: 64,
  maxDepth: 64,
  maxRecordBytes: 1_048_576,
  maxBatchOps: 1_000,
  maxBatchBytes: 8_388_608,
  maxPageItems: 1_000,
  maxPageBytes: 4_194_304,
  maxIdempotencyKeyLength: 255,
  maxIdempotencyKeys: 100_000,
};

Deno.test("server: GET /health answers ok with the batch flag and the limits, without auth", async () => {
  await using server = createSyncServer(options({ auth: () => null }));
  const health = await send(server, "GET", "/health");
  assert.equal(health.status, 200);
  assert.deepEqual(health.body, {
    status: "ok",
    batch: true,
    live: false,
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
    live: false,
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

// ---------------------------------------------------------------------------
// PUT
// ---------------------------------------------------------------------------

Deno.test("server: PUT of an absent record answers 201 with the stored record", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  const { status, body } = await send(server, "PUT", "/todo/1", {
    json: {
      title: "Milk",
      done: false,
      updated_at: "1999-01-01T00:00:00.000Z",
      deleted_at: "1999-01-01T00:00:00.000Z",
    },
  });
  assert.equal(status, 201);
  // The server's fields win: the body's updated_at/deleted_at are ignored.
  assert.deepEqual(body, {
    id: "1",
    title: "Milk",
    done: false,
    updated_at: iso(T0),
  });
  assert.deepEqual((await pull(server, "todo")).body.items, [body]);
});

Deno.test("server: PUT with the current _baseUpdatedAt answers 200 and bumps updated_at", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  const created = await putOk(server, "todo", "1", { title: "a" });
  clock.ms += 5_000;
  const { status, body } = await send(server, "PUT", "/todo/1", {
    json: { id: "1", title: "b", _baseUpdatedAt: created.updated_at! },
  });
  assert.equal(status, 200);
  assert.deepEqual(body, { id: "1", title: "b", updated_at: iso(T0 + 5_000) });
});

Deno.test("server: PUT compares instants, not strings", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  await putOk(server, "todo", "1", { title: "a" });
  clock.ms += 1;
  // 10:00:00.000Z written as 11:00+01:00 is the same instant.
  const { status } = await send(server, "PUT", "/todo/1", {
    json: { title: "b", _baseUpdatedAt: "2025-03-01T11:00:00+01:00" },
  });
  assert.equal(status, 200);
});

Deno.test("server: PUT with a stale _baseUpdatedAt answers 409 with the current record", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  const first = await putOk(server, "todo", "1", { title: "a" });
  clock.ms += 1_000;
  const second = await putOk(server, "todo", "1", {
    title: "b",
    _baseUpdatedAt: first.updated_at!,
  });
  clock.ms += 1_000;
  const { status, body } = await send<ConflictBody>(server, "PUT", "/todo/1", {
    json: { title: "mine", _baseUpdatedAt: first.updated_at! },
  });
  assert.equal(status, 409);
  assert.equal(body.error, "conflict");
  assert.equal(typeof body.message, "string");
  assert.deepEqual(body.current, second);
  assert.equal(body.serverTimestamp, second.updated_at);
  assert.deepEqual((await pull(server, "todo")).body.items, [second]);
});

Deno.test("server: PUT with X-Force-Update: true skips the version check", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  await putOk(server, "todo", "1", { title: "a" });
  clock.ms += 1_000;
  const { status, body } = await send(server, "PUT", "/todo/1", {
    json: { title: "forced", _baseUpdatedAt: "2000-01-01T00:00:00.000Z" },
    headers: { "x-force-update": "true" },
  });
  assert.equal(status, 200);
  assert.deepEqual(body, {
    id: "1",
    title: "forced",
    updated_at: iso(T0 + 1_000),
  });
  const notForced = await send(server, "PUT", "/todo/1", {
    json: { title: "x", _baseUpdatedAt: "2000-01-01T00:00:00.000Z" },
    headers: { "x-force-update": "false" },
  });
  assert.equal(notForced.status, 409);
});

Deno.test("server: PUT without _baseUpdatedAt writes unconditionally and resurrects a tombstone", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  await putOk(server, "todo", "1", { title: "a" });
  clock.ms += 1_000;
  const over = await send(server, "PUT", "/todo/1", {
    json: { title: "b", _baseUpdatedAt: null },
  });
  assert.equal(over.status, 200);
  assert.equal(over.body.title, "b");
  clock.ms += 1_000;
  assert.equal((await send(server, "DELETE", "/todo/1")).status, 200);
  clock.ms += 1_000;
  const back = await send(server, "PUT", "/todo/1", { json: { title: "c" } });
  assert.equal(back.status, 200);
  assert.deepEqual(back.body, {
    id: "1",
    title: "c",
    updated_at: iso(T0 + 3_000),
  });
});

Deno.test("server: PUT with a base onto a tombstone answers 409", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  await putOk(server, "todo", "1", { title: "a" });
  clock.ms += 1_000;
  const tombstone = (await send(server, "DELETE", "/todo/1")).body;
  clock.ms += 1_000;
  // Even the tombstone's own updated_at as base: a tombstone is no base.
  const { status, body } = await send<ConflictBody>(server, "PUT", "/todo/1", {
    json: { title: "b", _baseUpdatedAt: tombstone.updated_at! },
  });
  assert.equal(status, 409);
  assert.deepEqual(body.current, tombstone);
  assert.equal(body.serverTimestamp, tombstone.updated_at);
  assert.equal(typeof body.current.deleted_at, "string");
});

Deno.test("server: PUT with a base onto an absent record creates it", async () => {
  await using server = createSyncServer(options());
  const { status } = await send(server, "PUT", "/todo/new", {
    json: { _baseUpdatedAt: "2020-01-01T00:00:00.000Z" },
  });
  assert.equal(status, 201);
});

Deno.test("server: PUT answers 400 invalid_body for a body that is not a JSON object", async () => {
  await using server = createSyncServer(options());
  for (const raw of ["[1]", "null", '"text"', "{not json", "", "42"]) {
    const { status, body } = await send<ErrorBody>(server, "PUT", "/todo/1", {
      raw,
    });
    assert.equal(status, 400, raw);
    assert.equal(body.error, "invalid_body");
  }
  const invalidUtf8 = await send<ErrorBody>(server, "PUT", "/todo/1", {
    raw: new Uint8Array([0x7b, 0xff, 0x7d]),
  });
  assert.equal(invalidUtf8.status, 400);
  assert.deepEqual((await pull(server, "todo")).body.items, []);
});

Deno.test("server: PUT answers 400 id_mismatch when the body's id differs from the path", async () => {
  await using server = createSyncServer(options());
  for (const id of ["2", 1, null]) {
    const { status, body } = await send<ErrorBody>(server, "PUT", "/todo/1", {
      json: { id, title: "x" },
    });
    assert.equal(status, 400);
    assert.equal(body.error, "id_mismatch");
  }
  assert.equal(
    (await send(server, "PUT", "/todo/1", { json: { id: "1" } })).status,
    201,
  );
});

Deno.test("server: PUT answers 400 invalid_timestamp for a malformed _baseUpdatedAt", async () => {
  await using server = createSyncServer(options());
  await putOk(server, "todo", "1", {});
  for (
    const base of [
      "yesterday",
      "2025-03-01T10:00:00", // no timezone: the server's zone would decide
      "2025-13-45T10:00:00Z",
      "",
      12345,
      true,
    ]
  ) {
    const { status, body } = await send<ErrorBody>(server, "PUT", "/todo/1", {
      json: { _baseUpdatedAt: base },
    });
    assert.equal(status, 400, JSON.stringify(base));
    assert.equal(body.error, "invalid_timestamp");
  }
});

Deno.test("server: PUT validates with the kind's zod schema and answers 422 with issues", async () => {
  const Todo = z.object({ id: z.string(), title: z.string().min(1) });
  await using server = createSyncServer(options({ schemas: { todo: Todo } }));
  const { status, body } = await send<ErrorBody & { issues: JsonObject[] }>(
    server,
    "PUT",
    "/todo/1",
    { json: { title: 5 } },
  );
  assert.equal(status, 422);
  assert.equal(body.error, "validation");
  assert.deepEqual(body.issues[0]?.path, ["title"]);
  assert.equal(typeof body.issues[0]?.message, "string");
  assert.deepEqual((await pull(server, "todo")).body.items, []);
  // Server fields are not validated and extra fields are stored as sent.
  const ok = await send(server, "PUT", "/todo/1", {
    json: { title: "a", extra: 1, updated_at: 5 },
  });
  assert.equal(ok.status, 201);
  assert.equal(ok.body.extra, 1);
  // Other kinds have no schema.
  assert.equal(
    (await send(server, "PUT", "/note/1", { json: { title: 5 } })).status,
    201,
  );
});

Deno.test("server: a body over maxBodyBytes answers 413, by Content-Length and by bytes read", async () => {
  await using server = createSyncServer(options({ maxBodyBytes: 64 }));
  const big = JSON.stringify({ text: "x".repeat(100) });
  const declared = await send<ErrorBody>(server, "PUT", "/todo/1", {
    raw: big,
  });
  assert.equal(declared.status, 413);
  assert.equal(declared.body.error, "payload_too_large");
  // A streamed body has no Content-Length: the bytes read count.
  const chunks = [
    new TextEncoder().encode(big.slice(0, 50)),
    new TextEncoder().encode(big.slice(50)),
  ];
  const stream = ReadableStream.from(chunks);
  const streamed = await server.fetch(
    new Request(`${ORIGIN}/todo/1`, { method: "PUT", body: stream }),
  );
  assert.equal(streamed.headers.get("content-length"), null);
  assert.equal(streamed.status, 413);
  await streamed.body?.cancel();
  assert.deepEqual((await pull(server, "todo")).body.items, []);
  const fits = JSON.stringify({ text: "x".repeat(40) });
  assert.equal(
    (await send(server, "PUT", "/todo/1", { raw: fits })).status,
    201,
  );
});

// ---------------------------------------------------------------------------
// DELETE
// ---------------------------------------------------------------------------

Deno.test("server: DELETE soft-deletes: 200 with a tombstone that pulls deliver", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  await putOk(server, "todo", "1", { title: "a" });
  clock.ms += 2_000;
  const { status, body } = await send(server, "DELETE", "/todo/1");
  assert.equal(status, 200);
  assert.deepEqual(body, {
    id: "1",
    title: "a",
    updated_at: iso(T0 + 2_000),
    deleted_at: iso(T0 + 2_000),
  });
  assert.deepEqual((await pull(server, "todo")).body.items, [body]);
  assert.deepEqual(
    (await pull(server, "todo", { includeDeleted: "true" })).body.items,
    [body],
  );
});

Deno.test("server: DELETE of an id that never existed answers 404", async () => {
  await using server = createSyncServer(options());
  const { status, body } = await send<ErrorBody>(server, "DELETE", "/todo/1");
  assert.equal(status, 404);
  assert.equal(body.error, "not_found");
  assert.deepEqual((await pull(server, "todo")).body.items, []);
});

Deno.test("server: DELETE of a tombstone without a base answers 200 with it unchanged", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  await putOk(server, "todo", "1", {});
  const tombstone = (await send(server, "DELETE", "/todo/1")).body;
  clock.ms += 5_000;
  const again = await send(server, "DELETE", "/todo/1");
  assert.equal(again.status, 200);
  assert.deepEqual(again.body, tombstone);
  const withOwnBase = await send(
    server,
    "DELETE",
    `/todo/1?_baseUpdatedAt=${
      encodeURIComponent(String(tombstone.updated_at))
    }`,
  );
  assert.equal(withOwnBase.status, 200);
  assert.deepEqual(withOwnBase.body, tombstone);
  assert.deepEqual((await pull(server, "todo")).body.items, [tombstone]);
});

Deno.test("server: DELETE with a stale _baseUpdatedAt answers 409; X-Force-Delete skips the check", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  const first = await putOk(server, "todo", "1", { v: 1 });
  clock.ms += 1_000;
  const second = await putOk(server, "todo", "1", { v: 2 });
  clock.ms += 1_000;
  const stale = `/todo/1?_baseUpdatedAt=${
    encodeURIComponent(String(first.updated_at))
  }`;
  const conflict = await send<ConflictBody>(server, "DELETE", stale);
  assert.equal(conflict.status, 409);
  assert.deepEqual(conflict.body.current, second);
  assert.equal(conflict.body.serverTimestamp, second.updated_at);
  const forced = await send(server, "DELETE", stale, {
    headers: { "x-force-delete": "true" },
  });
  assert.equal(forced.status, 200);
  assert.equal(forced.body.deleted_at, iso(T0 + 2_000));
});

Deno.test("server: DELETE with the current _baseUpdatedAt deletes", async () => {
  await using server = createSyncServer(options());
  const created = await putOk(server, "todo", "1", {});
  const { status, body } = await send(
    server,
    "DELETE",
    `/todo/1?_baseUpdatedAt=${encodeURIComponent(String(created.updated_at))}`,
  );
  assert.equal(status, 200);
  assert.equal(typeof body.deleted_at, "string");
});

Deno.test("server: DELETE answers 400 invalid_timestamp for a malformed _baseUpdatedAt", async () => {
  await using server = createSyncServer(options());
  await putOk(server, "todo", "1", {});
  for (const base of ["soon", "2025-03-01", "2025-03-01T10:00:00"]) {
    const { status, body } = await send<ErrorBody>(
      server,
      "DELETE",
      `/todo/1?_baseUpdatedAt=${encodeURIComponent(base)}`,
    );
    assert.equal(status, 400, base);
    assert.equal(body.error, "invalid_timestamp");
  }
  assert.equal(
    (await pull(server, "todo")).body.items[0]?.deleted_at,
    undefined,
  );
});

// ---------------------------------------------------------------------------
// Timestamps
// ---------------------------------------------------------------------------

Deno.test("server: updated_at strictly increases with each write of a record under a frozen clock", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  const stamps: string[] = [];
  let base: string | null = null;
  for (let index = 0; index < 5; index++) {
    const record = await putOk(server, "todo", "1", {
      v: index,
      ...(base === null ? {} : { _baseUpdatedAt: base }),
    });
    base = String(record.updated_at);
    stamps.push(base);
  }
  const tombstone = await send(server, "DELETE", "/todo/1");
  stamps.push(String(tombstone.body.updated_at));
  assert.deepEqual(stamps, [0, 1, 2, 3, 4, 5].map((ms) => iso(T0 + ms)));
});

Deno.test("server: the clock never goes back when now() does", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  const a = await putOk(server, "todo", "a", {});
  clock.ms -= 60_000;
  const b = await putOk(server, "todo", "b", {});
  assert.ok(
    Date.parse(String(b.updated_at)) >= Date.parse(String(a.updated_at)),
  );
  // The same holds across a restart on the same store.
  const store = createMemoryServerStore();
  await using first = createSyncServer(options({ store, now: clock.now }));
  const c = await putOk(first, "todo", "c", {});
  const restarted = createSyncServer(
    options({ store, now: () => clock.ms - 3_600_000 }),
  );
  const d = await putOk(restarted, "todo", "a", {});
  assert.ok(
    Date.parse(String(d.updated_at)) > Date.parse(String(c.updated_at)),
  );
});

Deno.test("server: records written in one millisecond share updated_at and page exactly", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  const idList = Array.from(
    { length: 20 },
    (_, i) => `r${String(i).padStart(2, "0")}`,
  );
  for (const id of idList) await putOk(server, "todo", id, {});
  const { items, pages } = await pullAll(server, "todo", 3);
  assert.deepEqual(items.map((item) => item.id), idList);
  assert.equal(new Set(items.map((item) => item.updated_at)).size, 1);
  assert.equal(pages, 7);
});

Deno.test("server: a write in the same millisecond never lands behind a client's cursor", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  await putOk(server, "todo", "m", {});
  const first = await pull(server, "todo");
  const last = first.body.items.at(-1)!;
  // "a" sorts before the cursor's id "m": at the same instant a client
  // holding (t, "m") would skip it, so the server moves it 1 ms later.
  const a = await putOk(server, "todo", "a", {});
  assert.equal(a.updated_at, iso(T0 + 1));
  const next = await pull(server, "todo", {
    updatedSince: String(last.updated_at),
    afterId: String(last.id),
  });
  assert.deepEqual(next.body.items.map((item) => item.id), ["a"]);
});

// ---------------------------------------------------------------------------
// Ids and pulls
// ---------------------------------------------------------------------------

Deno.test("server: ids with / ? # % space unicode and NUL round-trip through the path", async () => {
  await using server = createSyncServer(options());
  const idList = AWKWARD_IDS.filter((id) => id.isWellFormed());
  for (const id of idList) {
    const { status, body } = await send(server, "PUT", path("todo", id), {
      json: { id, label: id },
    });
    assert.equal(status, 201, JSON.stringify(id));
    assert.equal(body.id, id);
  }
  // Every later commit sorts after every earlier one, so pulls list the ids
  // in the order they were written.
  const { items } = await pullAll(server, "todo", 3);
  assert.deepEqual(items.map((item) => item.id), idList);
  // A kind is a decoded segment too, held to [A-Za-z0-9_-] (§Limits).
  const kind = await send<ErrorBody>(server, "PUT", path("to do/ü", "x"), {
    json: {},
  });
  assert.equal(kind.status, 400);
  assert.equal(kind.body.error, "invalid_kind");
  assert.equal((await pull(server, "to do/ü")).status, 400);
  assert.equal(
    (await send(server, "PUT", path("to_do-2", "x"), { json: {} })).status,
    201,
  );
  assert.equal((await pull(server, "to_do-2")).body.items.length, 1);
  for (const id of idList) {
    const { status, body } = await send(server, "DELETE", path("todo", id));
    assert.equal(status, 200);
    assert.equal(body.label, id);
  }
  assert.equal((await send(server, "DELETE", path("todo", "nul"))).status, 404);
});

Deno.test("server: pull pages exactly through 1,000 records sharing one updated_at with limit 7", async () => {
  const store = createMemoryServerStore();
  const all = Array.from(
    { length: 1000 },
    (_, index) => serverRecord("todo", `id-${(index * 7919) % 1000}`, T0),
  );
  // Inserted out of order, so only the server's ordering can pass.
  await store.commit(
    shuffled(all).map((record) => ({
      type: "record" as const,
      namespace: "public",
      record,
    })),
  );
  await using server = createSyncServer(options({ store }));
  const { items, pages } = await pullAll(server, "todo", 7);
  const expected = all.map((record) => record.id).sort();
  assert.equal(pages, 143);
  assert.equal(items.length, 1000);
  assert.equal(new Set(items.map((item) => item.id)).size, 1000);
  assert.deepEqual(items.map((item) => item.id), expected);
});

Deno.test("server: pull selects by keyset: >= updatedSince, or > (updatedSince, afterId)", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  await putOk(server, "todo", "a", {});
  await putOk(server, "todo", "b", {});
  clock.ms += 10;
  await putOk(server, "todo", "c", {});
  const ids = async (query: Record<string, string>): Promise<JsonValue[]> =>
    (await pull(server, "todo", query)).body.items.map((item) => item.id!);
  assert.deepEqual(await ids({}), ["a", "b", "c"]);
  assert.deepEqual(await ids({ updatedSince: iso(T0) }), ["a", "b", "c"]);
  assert.deepEqual(
    await ids({ updatedSince: iso(T0), afterId: "a" }),
    ["b", "c"],
  );
  assert.deepEqual(await ids({ updatedSince: iso(T0 + 1) }), ["c"]);
  assert.deepEqual(
    await ids({ updatedSince: "2025-03-01T11:00:00.000+01:00", afterId: "b" }),
    ["c"],
  );
  assert.deepEqual(await ids({ updatedSince: iso(T0 + 11) }), []);
});

Deno.test("server: pull omits tombstones only with includeDeleted=false", async () => {
  await using server = createSyncServer(options());
  await putOk(server, "todo", "a", {});
  await putOk(server, "todo", "b", {});
  await send(server, "DELETE", "/todo/a");
  const all = await pull(server, "todo");
  assert.deepEqual(all.body.items.map((item) => item.id), ["b", "a"]);
  const live = await pull(server, "todo", { includeDeleted: "false" });
  assert.deepEqual(live.body.items.map((item) => item.id), ["b"]);
});

Deno.test("server: pull clamps limit to maxPageSize and gives a token only for a full page", async () => {
  await using server = createSyncServer(
    options({ maxPageSize: 3, defaultPageSize: 2 }),
  );
  for (const id of ["a", "b", "c", "d"]) await putOk(server, "todo", id, {});
  const clamped = await pull(server, "todo", { limit: "50" });
  assert.equal(clamped.body.items.length, 3);
  assert.equal(typeof clamped.body.nextPageToken, "string");
  const byDefault = await pull(server, "todo");
  assert.equal(byDefault.body.items.length, 2);
  const short = await pull(server, "todo", {
    limit: "5",
    updatedSince: iso(0),
  });
  assert.equal(short.body.items.length, 3);
  assert.equal(typeof short.body.nextPageToken, "string");
  const rest = await pull(server, "todo", {
    limit: "3",
    updatedSince: String(clamped.body.items[2]!.updated_at),
    afterId: "c",
    pageToken: clamped.body.nextPageToken!,
  });
  assert.deepEqual(rest.body.items.map((item) => item.id), ["d"]);
  assert.equal(rest.body.nextPageToken, null);
});

Deno.test("server: pull answers 400 for malformed timestamps, limits and flags", async () => {
  await using server = createSyncServer(options());
  const cases: [Record<string, string>, string][] = [
    [{ updatedSince: "yesterday" }, "invalid_timestamp"],
    [{ updatedSince: "2025-03-01T10:00:00" }, "invalid_timestamp"],
    [{ updatedSince: "" }, "invalid_timestamp"],
    [{ limit: "0" }, "invalid_limit"],
    [{ limit: "-1" }, "invalid_limit"],
    [{ limit: "1.5" }, "invalid_limit"],
    [{ limit: "ten" }, "invalid_limit"],
    [{ limit: "" }, "invalid_limit"],
    [{ includeDeleted: "yes" }, "invalid_query"],
    [{ afterId: "a" }, "invalid_query"],
  ];
  for (const [query, code] of cases) {
    const { status, body } = await pull(server, "todo", query);
    assert.equal(status, 400, JSON.stringify(query));
    assert.equal(body.error, code, JSON.stringify(query));
  }
  const twice = await send<ErrorBody>(server, "GET", "/todo?limit=1&limit=2");
  assert.equal(twice.status, 400);
});

Deno.test("server: pull ignores a page token that disagrees with the cursor: the keyset is authoritative", async () => {
  await using server = createSyncServer(options({ now: () => T0 }));
  for (const id of ["a", "b", "c"]) await putOk(server, "todo", id, {});
  const page = await pull(server, "todo", { limit: "1" });
  const token = page.body.nextPageToken!;
  const since = String(page.body.items[0]!.updated_at);
  const good = await pull(server, "todo", {
    limit: "1",
    updatedSince: since,
    afterId: "a",
    pageToken: token,
  });
  assert.equal(good.status, 200);
  assert.deepEqual(good.body.items.map((item) => item.id), ["b"]);
  for (
    const [query, expected] of [
      [{ updatedSince: since, afterId: "a", pageToken: "%%%garbage" }, ["b"]],
      [{ updatedSince: since, afterId: "a", pageToken: "eyJ4IjoxfQ" }, ["b"]],
      [{ updatedSince: since, afterId: "a", pageToken: "x".repeat(9000) }, [
        "b",
      ]],
      [{ updatedSince: since, afterId: "b", pageToken: token }, ["c"]],
      [{ updatedSince: iso(0), afterId: "a", pageToken: token }, ["a"]],
      [{ pageToken: token }, ["a"]],
    ] as const
  ) {
    const { status, body } = await pull(server, "todo", {
      limit: "1",
      ...query,
    });
    assert.equal(status, 200, JSON.stringify(query));
    assert.deepEqual(
      body.items.map((item) => item.id),
      expected,
      JSON.stringify(query),
    );
  }
});

// ---------------------------------------------------------------------------
// Tombstone retention
// ---------------------------------------------------------------------------

Deno.test("server: pull answers 410 after purgeTombstones() when the cursor predates a purged tombstone", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  await putOk(server, "todo", "a", {});
  await putOk(server, "note", "n", {});
  clock.ms += 1_000;
  await putOk(server, "todo", "b", {});
  const tombstone = (await send(server, "DELETE", "/todo/b")).body;
  clock.ms += 1_000;
  await putOk(server, "todo", "c", {});
  const before = await pull(server, "todo", { updatedSince: iso(T0) });
  assert.equal(before.status, 200);

  assert.equal(await server.purgeTombstones({ olderThan: clock.ms }), 1);
  const gone = await pull(server, "todo", { updatedSince: iso(T0) });
  assert.equal(gone.status, 410);
  assert.equal(gone.body.error, "gone");
  const atTombstone = await pull(server, "todo", {
    updatedSince: String(tombstone.updated_at),
  });
  assert.equal(atTombstone.status, 410);
  // A cursor past the purged tombstone missed nothing.
  const after = await pull(server, "todo", {
    updatedSince: iso(Date.parse(String(tombstone.updated_at)) + 1),
  });
  assert.equal(after.status, 200);
  assert.deepEqual(after.body.items.map((item) => item.id), ["c"]);
  // A first pull (full resync) is never gone; nor is a kind without purges.
  const full = await pull(server, "todo");
  assert.deepEqual(full.body.items.map((item) => item.id), ["a", "c"]);
  assert.equal(
    (await pull(server, "note", { updatedSince: iso(0) })).status,
    200,
  );
  assert.equal(await server.purgeTombstones(), 0);
});

Deno.test("server: tombstoneRetentionMs purges old tombstones automatically", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(
    options({ now: clock.now, tombstoneRetentionMs: 10_000 }),
  );
  await putOk(server, "todo", "a", {});
  await send(server, "DELETE", "/todo/a");
  clock.ms += 5_000;
  assert.equal(
    (await pull(server, "todo", { updatedSince: iso(0) })).status,
    200,
  );
  clock.ms += 120_000;
  const gone = await pull(server, "todo", { updatedSince: iso(0) });
  assert.equal(gone.status, 410);
  assert.deepEqual((await pull(server, "todo")).body.items, []);
});

Deno.test("server: purgeTombstones() validates its options and rejects after close", async () => {
  const server = createSyncServer(options());
  await assert.rejects(
    server.purgeTombstones({ olderThan: "soon" as unknown as number }),
    TypeError,
  );
  await assert.rejects(server.purgeTombstones({ olderThan: NaN }), RangeError);
  await server.close();
  await assert.rejects(server.purgeTombstones(), ClosedError);
});

// ---------------------------------------------------------------------------
// Idempotency
// ---------------------------------------------------------------------------

Deno.test("server: a repeated write with one Idempotency-Key is applied once and replayed", async () => {
  const clock = new TestClock();
  const store = new SpyStore();
  await using server = createSyncServer(options({ store, now: clock.now }));
  const first = await send(server, "PUT", "/todo/1", {
    json: { title: "a" },
    headers: { "idempotency-key": "op-1" },
  });
  assert.equal(first.status, 201);
  assert.equal(first.headers.get("idempotent-replayed"), null);
  const commits = store.calls.filter((call) => call === "commit").length;
  clock.ms += 10_000;
  const again = await send(server, "PUT", "/todo/1", {
    // Same request with keys in another order: still the same request.
    raw: '{ "title": "a" }',
    headers: { "idempotency-key": "op-1" },
  });
  assert.equal(again.status, 201);
  assert.equal(again.headers.get("idempotent-replayed"), "true");
  assert.deepEqual(again.body, first.body);
  assert.equal(store.calls.filter((call) => call === "commit").length, commits);
  assert.deepEqual((await pull(server, "todo")).body.items, [first.body]);

  const deleted = await send(server, "DELETE", "/todo/1", {
    headers: { "x-idempotency-key": "op-2" },
  });
  clock.ms += 10_000;
  const deletedAgain = await send(server, "DELETE", "/todo/1", {
    headers: { "x-idempotency-key": "op-2" },
  });
  assert.equal(deletedAgain.headers.get("idempotent-replayed"), "true");
  assert.deepEqual(deletedAgain.body, deleted.body);
});

Deno.test("server: one Idempotency-Key for another request answers 422 idempotency_mismatch", async () => {
  await using server = createSyncServer(options());
  const key = { "idempotency-key": "op-1" };
  await putOk(server, "todo", "1", { title: "a" }, key);
  const others: [string, string, SendOptions][] = [
    ["PUT", "/todo/1", { json: { title: "b" }, headers: key }],
    ["PUT", "/todo/2", { json: { title: "a" }, headers: key }],
    ["PUT", "/note/1", { json: { title: "a" }, headers: key }],
    ["DELETE", "/todo/1", { headers: key }],
    [
      "PUT",
      "/todo/1",
      { json: { title: "a" }, headers: { ...key, "x-force-update": "true" } },
    ],
    [
      "PUT",
      "/todo/1",
      { json: { title: "a", _baseUpdatedAt: iso(T0) }, headers: key },
    ],
    ["PUT", "/todo/1?x=1", { json: { title: "a" }, headers: key }],
  ];
  for (const [method, target, init] of others) {
    const { status, body } = await send<ErrorBody>(
      server,
      method,
      target,
      init,
    );
    assert.equal(status, 422, `${method} ${target}`);
    assert.equal(body.error, "idempotency_mismatch");
  }
  const items = (await pull(server, "todo")).body.items;
  assert.deepEqual(items.map((item) => item.title), ["a"]);
  assert.deepEqual((await pull(server, "note")).body.items, []);
});

Deno.test("server: 400, 404, 413 and 422 answers are stored by idempotency key", async () => {
  const Todo = z.object({ title: z.string() });
  await using server = createSyncServer(
    options({ schemas: { todo: Todo }, maxBodyBytes: 100 }),
  );
  const cases: [string, SendOptions, number][] = [
    ["PUT", { raw: "{oops" }, 400],
    ["DELETE", {}, 404],
    ["PUT", { raw: "x".repeat(200) }, 413],
    ["PUT", { json: { title: 1 } }, 422],
  ];
  for (const [index, [method, init, expected]] of cases.entries()) {
    const id = `c${index}`;
    const headers = { "idempotency-key": `k${index}` };
    const first = await send(server, method, `/todo/${id}`, {
      ...init,
      headers,
    });
    assert.equal(first.status, expected);
    // Once the record exists, the DELETE would succeed if evaluated again.
    await putOk(server, "todo", id, { title: "valid" });
    const again = await send(server, method, `/todo/${id}`, {
      ...init,
      headers,
    });
    assert.equal(again.status, expected, `${method} ${index}`);
    assert.equal(again.headers.get("idempotent-replayed"), "true");
    assert.deepEqual(again.body, first.body);
  }
  const items = (await pull(server, "todo")).body.items;
  assert.deepEqual(items.map((item) => item.deleted_at), [
    undefined,
    undefined,
    undefined,
    undefined,
  ]);
});

Deno.test("server: a 409 is not stored: a forced write with a new key succeeds and the 409 key is re-evaluated", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  await putOk(server, "todo", "1", { v: 1 });
  clock.ms += 1_000;
  const current = await putOk(server, "todo", "1", { v: 2 });
  clock.ms += 1_000;
  const stale = { v: 3, _baseUpdatedAt: iso(T0) };
  const conflict = await send<ConflictBody>(server, "PUT", "/todo/1", {
    json: stale,
    headers: { "idempotency-key": "op-1" },
  });
  assert.equal(conflict.status, 409);
  assert.equal(conflict.body.serverTimestamp, current.updated_at);
  const forced = await send(server, "PUT", "/todo/1", {
    json: { v: 3 },
    headers: { "idempotency-key": "op-1.r1", "x-force-update": "true" },
  });
  assert.equal(forced.status, 200);
  const retried = await send<ConflictBody>(server, "PUT", "/todo/1", {
    json: stale,
    headers: { "idempotency-key": "op-1" },
  });
  assert.equal(retried.status, 409);
  assert.equal(retried.headers.get("idempotent-replayed"), null);
  // Re-evaluated: the conflict now names the forced version.
  assert.equal(retried.body.serverTimestamp, forced.body.updated_at);
});

Deno.test("server: an idempotency entry expires after idempotencyRetentionMs", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(
    options({ now: clock.now, idempotencyRetentionMs: 60_000 }),
  );
  const key = { "idempotency-key": "op-1" };
  const first = await putOk(server, "todo", "1", { v: 1 }, key);
  clock.ms += 59_999;
  const replay = await send(server, "PUT", "/todo/1", {
    json: { v: 1 },
    headers: key,
  });
  assert.deepEqual(replay.body, first);
  clock.ms += 1;
  const applied = await send(server, "PUT", "/todo/1", {
    json: { v: 1 },
    headers: key,
  });
  assert.equal(applied.status, 200);
  assert.equal(applied.headers.get("idempotent-replayed"), null);
  assert.notEqual(applied.body.updated_at, first.updated_at);
});

Deno.test("server: an empty, overlong or ambiguous idempotency key answers 400", async () => {
  await using server = createSyncServer(options());
  for (
    const headers of [
      { "idempotency-key": "" },
      { "idempotency-key": "k".repeat(256) },
      { "idempotency-key": "a", "x-idempotency-key": "b" },
    ]
  ) {
    const { status, body } = await send<ErrorBody>(server, "PUT", "/todo/1", {
      json: {},
      headers,
    });
    assert.equal(status, 400);
    assert.equal(body.error, "invalid_idempotency_key");
  }
  assert.deepEqual((await pull(server, "todo")).body.items, []);
});

// ---------------------------------------------------------------------------
// Tenancy and auth
// ---------------------------------------------------------------------------

Deno.test("server: a missing credential answers 401 before the store is touched", async () => {
  const store = new SpyStore();
  await using server = createSyncServer(options({ store, auth: bearer }));
  const requests: [string, string, SendOptions][] = [
    ["GET", "/todo", {}],
    ["PUT", "/todo/1", { json: {}, headers: { "idempotency-key": "k" } }],
    ["DELETE", "/todo/1", {}],
    ["POST", "/batch", { json: { ops: [] } }],
  ];
  for (const [method, target, init] of requests) {
    const response = await send<ErrorBody>(server, method, target, init);
    assert.equal(response.status, 401);
    assert.equal(response.body.error, "unauthorized");
    assert.equal(response.headers.get("www-authenticate"), "Bearer");
  }
  assert.deepEqual(store.calls, []);
  // The same key works once authorized: a 401 was not stored.
  const ok = await send(server, "PUT", "/todo/1", {
    json: {},
    headers: { ...as("alice"), "idempotency-key": "k" },
  });
  assert.equal(ok.status, 201);
});

Deno.test("server: a principal cannot read, overwrite, delete or learn of another's records", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(
    options({ auth: bearer, now: clock.now }),
  );
  const alice = as("alice");
  const bob = as("bob");
  const secret = await putOk(server, "todo", "1", { secret: "a" }, {
    ...alice,
    "idempotency-key": "k",
  });
  await putOk(server, "todo", "2", { secret: "a2" }, alice);
  clock.ms += 1_000;

  // Read: nothing of Alice's in Bob's pulls.
  assert.deepEqual((await pull(server, "todo", {}, bob)).body.items, []);
  // Delete: Alice's id is unknown to Bob.
  assert.equal(
    (await send(server, "DELETE", "/todo/2", { headers: bob })).status,
    404,
  );
  // Conflict: a base on Alice's version does not reveal it; Bob creates his own.
  const own = await send(server, "PUT", "/todo/1", {
    json: { secret: "b", _baseUpdatedAt: String(secret.updated_at) },
    headers: bob,
  });
  assert.equal(own.status, 201);
  // Idempotency: Bob's "k" is his own key, not a mismatch with Alice's.
  const key = await send(server, "PUT", "/todo/3", {
    json: { secret: "b3" },
    headers: { ...bob, "idempotency-key": "k" },
  });
  assert.equal(key.status, 201);
  assert.equal(key.headers.get("idempotent-replayed"), null);
  // Batch goes through the same namespaces.
  const batch = await send<BatchBody>(server, "POST", "/batch", {
    json: {
      ops: [{ opId: "b1", kind: "todo", id: "2", type: "delete" }],
    },
    headers: bob,
  });
  assert.equal(batch.body.results[0]?.status, 404);

  const aliceItems = (await pull(server, "todo", {}, alice)).body.items;
  assert.deepEqual(aliceItems.map((item) => item.secret), ["a", "a2"]);
  const bobItems = (await pull(server, "todo", {}, bob)).body.items;
  assert.deepEqual(bobItems.map((item) => item.secret), ["b", "b3"]);
});

// ---------------------------------------------------------------------------
// Batch
// ---------------------------------------------------------------------------

Deno.test("server: POST /batch applies ops in order with one result per op", async () => {
  const clock = new TestClock();
  await using server = createSyncServer(options({ now: clock.now }));
  const existing = await putOk(server, "todo", "x", { v: 1 });
  clock.ms += 1_000;
  const { status, body } = await send<BatchBody>(server, "POST", "/batch", {
    json: {
      ops: [
        {
          opId: "o1",
          kind: "todo",
          id: "a",
          type: "upsert",
          payload: { v: 1 },
        },
        {
          opId: "o2",
          kind: "todo",
          id: "a",
          type: "upsert",
          payload: { v: 2 },
        },
        { opId: "o3", kind: "todo", id: "a", type: "delete" },
        { opId: "o4", kind: "todo", id: "never", type: "delete" },
        {
          opId: "o5",
          kind: "todo",
          id: "x",
          type: "upsert",
          payload: { v: 9 },
          baseUpdatedAt: "2000-01-01T00:00:00.000Z",
        },
        {
          opId: "o6",
          kind: "todo",
          id: "x",
          type: "upsert",
          payload: { v: 10 },
          baseUpdatedAt: "2000-01-01T00:00:00.000Z",
          force: true,
        },
      ],
    },
  });
  assert.equal(status, 200);
  const results = body.results;
  assert.deepEqual(results.map((result) => [result.opId, result.status]), [
    ["o1", 201],
    ["o2", 200],
    ["o3", 200],
    ["o4", 404],
    ["o5", 409],
    ["o6", 200],
  ]);
  assert.deepEqual(results[0]?.record, {
    id: "a",
    v: 1,
    updated_at: iso(T0 + 1_000),
  });
  assert.equal((results[1]?.record as JsonObject).updated_at, iso(T0 + 1_001));
  assert.equal((results[2]?.record as JsonObject).deleted_at, iso(T0 + 1_002));
  assert.equal((results[3]?.error as ErrorBody).error, "not_found");
  const conflict = results[4]?.error as ConflictBody;
  assert.equal(conflict.error, "conflict");
  assert.deepEqual(conflict.current, existing);
  assert.equal(conflict.serverTimestamp, existing.updated_at);
  assert.equal((results[5]?.record as JsonObject).v, 10);
  assert.equal(results[4]?.record, undefined);
});

Deno.test("server: batch ops are idempotent by opId, like single requests with that key", async () => {
  const clock = new TestClock();
  const store = new SpyStore();
  await using server = createSyncServer(options({ store, now: clock.now }));
  const batch = {
    ops: [
      { opId: "o1", kind: "todo", id: "a", type: "upsert", payload: { v: 1 } },
      {
        opId: "o2",
        kind: "todo",
        id: "a",
        type: "upsert",
        payload: { v: 2 },
        baseUpdatedAt: iso(T0),
      },
    ],
  };
  const first = await send<BatchBody>(server, "POST", "/batch", {
    json: batch,
  });
  assert.deepEqual(first.body.results.map((result) => result.status), [
    201,
    200,
  ]);
  const commits = store.calls.filter((call) => call === "commit").length;
  clock.ms += 1_000;
  const again = await send<BatchBody>(server, "POST", "/batch", {
    json: batch,
  });
  assert.deepEqual(
    again.body.results.map(({ replayed: _, ...result }) => result),
    first.body.results,
  );
  assert.ok(again.body.results.every((result) => result.replayed === true));
  assert.equal(store.calls.filter((call) => call === "commit").length, commits);
  // The single request with the op's key and the same content is a replay.
  const single = await send(server, "PUT", "/todo/a", {
    json: { v: 2, _baseUpdatedAt: iso(T0) },
    headers: { "idempotency-key": "o2" },
  });
  assert.equal(single.headers.get("idempotent-replayed"), "true");
  assert.deepEqual(single.body, first.body.results[1]?.record);
  // A reused opId with other content is a mismatch, in or out of a batch.
  const reused = await send<BatchBody>(server, "POST", "/batch", {
    json: {
      ops: [{ opId: "o1", kind: "todo", id: "a", type: "delete" }],
    },
  });
  assert.equal(reused.body.results[0]?.status, 422);
  assert.equal(
    (reused.body.results[0]?.error as ErrorBody).error,
    "idempotency_mismatch",
  );
  // The same opId twice in one batch: the second is a replay of the first.
  const twice = await send<BatchBody>(server, "POST", "/batch", {
    json: {
      ops: [
        { opId: "t", kind: "todo", id: "t", type: "upsert", payload: {} },
        { opId: "t", kind: "todo", id: "t", type: "upsert", payload: {} },
      ],
    },
  });
  assert.deepEqual(twice.body.results.map((result) => result.status), [
    201,
    201,
  ]);
  assert.equal(twice.body.results[1]?.replayed, true);
});

Deno.test("server: a batch refused as a whole (401, 413, 400) applies nothing", async () => {
  const store = new SpyStore();
  await using server = createSyncServer(
    options({ store, auth: bearer, maxBatchBytes: 400 }),
  );
  const good = {
    opId: "o1",
    kind: "todo",
    id: "a",
    type: "upsert",
    payload: {},
  };
  const unauthorized = await send(server, "POST", "/batch", {
    json: { ops: [good] },
  });
  assert.equal(unauthorized.status, 401);
  assert.deepEqual(store.calls, []);
  const alice = as("alice");
  const tooLarge = await send<ErrorBody>(server, "POST", "/batch", {
    json: {
      ops: [good, { ...good, opId: "o2", payload: { text: "x".repeat(400) } }],
    },
    headers: alice,
  });
  assert.equal(tooLarge.status, 413);
  assert.equal(tooLarge.body.error, "batch_too_large");
  for (
    const [json, code] of [
      [[good], "invalid_body"],
      [{ ops: good }, "invalid_body"],
      [
        {
          ops: [good, { kind: "todo", id: "b", type: "upsert", payload: {} }],
        },
        "invalid_body",
      ],
      // An opId is an idempotency key: §Limits holds it to 1 to 255 visible
      // ASCII characters.
      [{ ops: [good, { ...good, opId: "" }] }, "invalid_idempotency_key"],
      [{ ops: [good, { ...good, opId: "o 2" }] }, "invalid_idempotency_key"],
      [{ ops: [good, "op"] }, "invalid_body"],
    ] as [JsonValue, string][]
  ) {
    const { status, body } = await send<ErrorBody>(server, "POST", "/batch", {
      json,
      headers: alice,
    });
    assert.equal(status, 400, JSON.stringify(json));
    assert.equal(body.error, code);
  }
  const raw = await send(server, "POST", "/batch", {
    raw: "{not json",
    headers: alice,
  });
  assert.equal(raw.status, 400);
  assert.deepEqual((await pull(server, "todo", {}, alice)).body.items, []);
});

Deno.test("server: a batch op that is not a valid request gets its own 400, the others apply", async () => {
  await using server = createSyncServer(options());
  const { status, body } = await send<BatchBody>(server, "POST", "/batch", {
    json: {
      ops: [
        { opId: "o1", kind: "todo", id: "a", type: "upsert", payload: {} },
        { opId: "o2", kind: "todo", id: "b", type: "frobnicate" },
        { opId: "o3", kind: "health", id: "c", type: "upsert", payload: {} },
        { opId: "o4", kind: "todo", id: "d", type: "upsert", payload: [1] },
        {
          opId: "o5",
          kind: "todo",
          id: "e",
          type: "upsert",
          payload: {},
          baseUpdatedAt: "not a time",
        },
        { opId: "o6", kind: "todo", id: "f", type: "upsert" },
        { opId: "o7", kind: "todo", id: "g", type: "upsert", payload: {} },
      ],
    },
  });
  assert.equal(status, 200);
  assert.deepEqual(
    body.results.map((result) => [
      result.status,
      (result.error as ErrorBody | undefined)?.error ?? null,
    ]),
    [
      [201, null],
      [400, "invalid_op"],
      [400, "invalid_kind"],
      [400, "invalid_body"],
      [400, "invalid_timestamp"],
      [400, "invalid_body"],
      [201, null],
    ],
  );
  const items = (await pull(server, "todo")).body.items;
  assert.deepEqual(items.map((item) => item.id), ["a", "g"]);
});

Deno.test("server: a store failure during a batch answers 500 and applies nothing", async () => {
  const store = new SpyStore();
  const errors: unknown[] = [];
  await using server = createSyncServer({
    store,
    onError: (error) => errors.push(error),
  });
  store.failCommits = true;
  const { status, body } = await send(server, "POST", "/batch", {
    json: {
      ops: [
        { opId: "o1", kind: "todo", id: "a", type: "upsert", payload: {} },
        { opId: "o2", kind: "todo", id: "b", type: "upsert", payload: {} },
      ],
    },
  });
  assert.equal(status, 500);
  assert.equal(body.error, "internal");
  assert.equal(errors.length, 1);
  store.failCommits = false;
  assert.deepEqual((await pull(server, "todo")).body.items, []);
  // The same ops apply afterwards: their keys were not stored.
  const retry = await send<BatchBody>(server, "POST", "/batch", {
    json: {
      ops: [{ opId: "o1", kind: "todo", id: "a", type: "upsert", payload: {} }],
    },
  });
  assert.equal(retry.body.results[0]?.status, 201);
});

Deno.test("server: a store failure after a batch's first slice answers the unapplied ops 500 each; the applied slice stands", async () => {
  const store = new SpyStore();
  const errors: unknown[] = [];
  await using server = createSyncServer({
    store,
    onError: (error) => errors.push(error),
  });
  // Every commit after the first (slice) fails.
  store.failWhen = () => store.commits.length > 1;
  const ops = Array.from({ length: 150 }, (_, index) => ({
    opId: `o${index}`,
    kind: "todo",
    id: `r${String(index).padStart(3, "0")}`,
    type: "upsert",
    payload: {},
  }));
  const { status, body } = await send<BatchBody>(server, "POST", "/batch", {
    json: { ops },
  });
  assert.equal(status, 200);
  const statuses = body.results.map((result) => result.status);
  assert.deepEqual(statuses.slice(0, 100), ops.slice(0, 100).map(() => 201));
  assert.deepEqual(statuses.slice(100), ops.slice(100).map(() => 500));
  assert.equal((body.results[120]?.error as ErrorBody).error, "internal");
  assert.deepEqual(
    body.results.map((result) => result.opId),
    ops.map((op) => op.opId),
  );
  assert.equal(errors.length, 1);
  store.failWhen = () => false;
  const items = (await pull(server, "todo", { limit: "1000" })).body.items;
  assert.equal(items.length, 100);
  // Sent again, the applied ops replay and the others apply.
  const again = await send<BatchBody>(server, "POST", "/batch", {
    json: { ops },
  });
  assert.deepEqual(
    again.body.results.map((
      result,
    ) => [result.status, result.replayed ?? false]),
    ops.map((_, index) => index < 100 ? [201, true] : [201, false]),
  );
});

Deno.test("server: a write and its idempotency entry commit in one store call", async () => {
  const store = new SpyStore();
  await using server = createSyncServer(options({ store }));
  await putOk(server, "todo", "1", {}, { "idempotency-key": "k1" });
  assert.deepEqual(store.commits.at(-1)?.map((write) => write.type), [
    "record",
    "idempotency",
  ]);
  await send(server, "POST", "/batch", {
    json: {
      ops: [
        { opId: "o1", kind: "todo", id: "a", type: "upsert", payload: {} },
        { opId: "o2", kind: "todo", id: "b", type: "upsert", payload: {} },
      ],
    },
  });
  assert.equal(store.commits.at(-1)?.length, 4);
  // A store that refuses the idempotency entry: the record is not applied.
  store.failWhen = (writes) =>
    writes.some((write) => write.type === "idempotency");
  const failed = await send(server, "PUT", "/todo/2", {
    json: {},
    headers: { "idempotency-key": "k2" },
  });
  assert.equal(failed.status, 500);
  store.failWhen = () => false;
  const items = (await pull(server, "todo")).body.items;
  assert.deepEqual(items.map((item) => item.id), ["1", "a", "b"]);
});

Deno.test("server: an idempotency fingerprint is the SHA-256 of the request's canonical JSON", async () => {
  // Stores keep fingerprints across restarts: their input and output must
  // never change, whatever computes them.
  async function sha256(text: string): Promise<string> {
    const digest = await crypto.subtle.digest(
      "SHA-256",
      new TextEncoder().encode(text),
    );
    return Array.from(
      new Uint8Array(digest),
      (byte) => byte.toString(16).padStart(2, "0"),
    ).join("");
  }
  const store = new SpyStore();
  await using server = createSyncServer(options({ store }));
  const fingerprint = () => {
    const write = store.commits.at(-1)?.find((w) => w.type === "idempotency");
    assert.ok(write?.type === "idempotency");
    return write.entry.fingerprint;
  };
  // Keys out of order, nested, a digit key, `__proto__`, unicode; every
  // padding length of the last SHA-256 block; one body past 16 KiB.
  const lengths = [...Array.from({ length: 70 }, (_, n) => n), 20_000];
  for (const n of lengths) {
    const body = JSON.parse(
      `{"z":[{"b":1,"a":"é€😀"}],"10":null,"2":true,"__proto__":{"y":0,"x":-1.5},"pad":"${
        "a".repeat(n)
      }","_baseUpdatedAt":null}`,
    );
    await putOk(server, "todo", `id-${n}`, body, {
      "idempotency-key": `k${n}`,
    });
    const canonical =
      `["PUT","json",null,{"10":null,"2":true,"__proto__":{"x":-1.5,"y":0},"pad":"${
        "a".repeat(n)
      }","z":[{"a":"é€😀","b":1}]},"todo","id-${n}",false,[]]`;
    assert.equal(fingerprint(), await sha256(canonical), `length ${n}`);
  }
  await send(server, "DELETE", "/todo/id-0?b=2&a=1&_baseUpdatedAt=x", {
    headers: { "idempotency-key": "d", "x-force-delete": "true" },
  });
  assert.equal(
    fingerprint(),
    await sha256('["DELETE","x","todo","id-0",true,[["a","1"],["b","2"]]]'),
  );
});

Deno.test("server: POST /batch answers 404 when batch is disabled", async () => {
  await using server = createSyncServer(options({ batch: false }));
  const { status } = await send(server, "POST", "/batch", {
    json: { ops: [] },
  });
  assert.equal(status, 404);
  const enabled = createSyncServer(options());
  const empty = await send<BatchBody>(enabled, "POST", "/batch", {
    json: { ops: [] },
  });
  assert.deepEqual(empty.body, { results: [] });
  await enabled.close();
});

// ---------------------------------------------------------------------------
// Failures and lifecycle
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Over real HTTP
// ---------------------------------------------------------------------------

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
    live: false,
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

// ---------------------------------------------------------------------------
// The CLI
// ---------------------------------------------------------------------------

const SERVE = new URL("../server/serve.ts", import.meta.url).href;

Deno.test("serve.ts: invalid flags print a message and exit with code 2", async () => {
  for (
    const args of [["--port", "abc"], ["--port", "70000"], ["--bogus"], [
      "extra",
    ]]
  ) {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", SERVE, ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(output.code, 2, args.join(" "));
    assert.match(new TextDecoder().decode(output.stderr), /Usage: /);
  }
});

Deno.test("serve.ts: prints its URL, serves the contract and stops on SIGINT", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SERVE, "--port", "0", "--db", ":memory:"],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let printed = "";
  while (!printed.includes("\n")) {
    const { done, value } = await lines.read();
    if (done) break;
    printed += value;
  }
  const url = printed.match(/Listening on (http:\/\/127\.0\.0\.1:\d+\/)/)?.[1];
  assert.ok(url !== undefined, printed);
  const health = await fetch(`${url}health`);
  assert.equal((await health.json()).status, "ok");
  const put = await fetch(`${url}todo/1`, { method: "PUT", body: "{}" });
  assert.equal(put.status, 201);
  await put.body?.cancel();
  child.kill("SIGINT");
  const status = await child.status;
  await lines.cancel();
  assert.equal(status.code, 0);
});
