/**
 * What the reference server's handler tests share: requests against
 * `server.fetch`, typed answers, a hand-moved clock, and a spy store.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { JsonObject, JsonValue } from "../src/json.ts";
import type {
  IdempotencyEntry,
  LastWrite,
  ListServerRecordsOptions,
  ListServerRecordsResult,
  ServerRecord,
  ServerStore,
  ServerStorePurgeOptions,
  ServerStorePurgeResult,
  ServerWrite,
  SyncServer,
  SyncServerOptions,
  TrimIdempotencyOptions,
  TrimIdempotencyResult,
} from "../server/mod.ts";
import { createMemoryServerStore } from "../server/memory.ts";

export const ORIGIN = "http://sync.test";
export const T0 = Date.UTC(2025, 2, 1, 10, 0, 0);

export function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** A clock the test moves by hand. */
export class TestClock {
  ms: number;
  constructor(ms = T0) {
    this.ms = ms;
  }
  readonly now = (): number => this.ms;
}

export interface ErrorBody extends JsonObject {
  error: string;
  message: string;
}

export interface ConflictBody extends ErrorBody {
  current: JsonObject;
  serverTimestamp: string;
}

export interface PullBody extends JsonObject {
  items: JsonObject[];
  nextPageToken: string | null;
}

export interface BatchResult extends JsonObject {
  opId: string;
  status: number;
}

export interface BatchBody extends JsonObject {
  results: BatchResult[];
}

export interface Answer<T> {
  readonly status: number;
  readonly body: T;
  readonly headers: Headers;
}

export interface SendOptions {
  /** A JSON body. */
  readonly json?: JsonValue;
  /** A raw body. */
  readonly raw?: BodyInit;
  readonly headers?: Record<string, string>;
}

export function path(kind: string, id?: string): string {
  return id === undefined
    ? `/${encodeURIComponent(kind)}`
    : `/${encodeURIComponent(kind)}/${encodeURIComponent(id)}`;
}

export function request(
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

export async function answer<T = JsonObject>(
  response: Response,
): Promise<Answer<T>> {
  assert.equal(response.headers.get("content-type"), "application/json");
  return {
    status: response.status,
    body: await response.json() as T,
    headers: response.headers,
  };
}

export async function send<T = JsonObject>(
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
export async function putOk(
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

export async function pull(
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
export async function pullAll(
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
export class SpyStore implements ServerStore {
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
    options: ListServerRecordsOptions,
  ): Promise<ListServerRecordsResult> {
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

export function bearer(request: Request): string | null {
  const match = request.headers.get("authorization")?.match(
    /^Bearer (\w+)$/,
  );
  return match?.[1] ?? null;
}

export function as(principal: string): Record<string, string> {
  return { authorization: `Bearer ${principal}` };
}

export function quiet(): void {}

export function options(extra: SyncServerOptions = {}): SyncServerOptions {
  return { onError: quiet, ...extra };
}

/** The limits `/health` states by default (CONTRACT.md §Limits). */
export const DEFAULT_LIMITS = {
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
