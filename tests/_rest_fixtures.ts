/**
 * What the REST transport's tests share (`tests/rest_*_test.ts`): records,
 * ops and pull requests, a transport connected to a scripted server with
 * sleeps that return at once, and readers of what the server received.
 *
 * @module
 */

import {
  createRestTransport,
  type RestTransportOptions,
} from "../transport/rest.ts";
import type { PullRequest, PushOp, Transport } from "../src/transport.ts";
import type { JsonObject } from "../src/json.ts";
import type { RecordedRequest, ScriptedServer } from "./_scripted_server.ts";

/** A record timestamp. */
export const T1 = "2025-03-01T10:00:00.000Z";
/** A record timestamp one second after {@linkcode T1}. */
export const T2 = "2025-03-01T10:00:01.000Z";
/** An HTTP `Date` at {@linkcode T1}. */
export const HTTP_DATE = "Sat, 01 Mar 2025 10:00:00 GMT";
/** The longest delay a timer takes: 2^31-1 ms. */
export const MAX_TIMER_MS = 2_147_483_647;
/** One hour in ms: the longest `Retry-After` the transport reads. */
export const HOUR_MS = 3_600_000;

/** A server record stamped {@linkcode T1}. */
export function record(id: string, extra: JsonObject = {}): JsonObject {
  return { id, updated_at: T1, ...extra };
}

/** An upsert of a todo whose key is `key-<id>`. */
export function upsert(id: string, extra: Partial<PushOp> = {}): PushOp {
  return {
    opId: `op-${id}`,
    key: `key-${id}`,
    kind: "todos",
    id,
    type: "upsert",
    payload: { id, title: `title ${id}` },
    baseUpdatedAt: null,
    force: false,
    ...extra,
  };
}

/** A delete of a todo whose key is `key-<id>`. */
export function remove(id: string, extra: Partial<PushOp> = {}): PushOp {
  return upsert(id, { type: "delete", payload: null, ...extra });
}

/**
 * An upsert of a todo whose key is visible ASCII for any id (the key is a
 * header), for ops with hostile ids.
 */
export function upsertAnyId(id: string, extra: Partial<PushOp> = {}): PushOp {
  return {
    opId: `op-${extra.key ?? id}`,
    key: `key-${id.length > 32 ? id.length : encodeURIComponentSafe(id)}`,
    kind: "todos",
    id,
    type: "upsert",
    payload: { id, title: `title` },
    baseUpdatedAt: null,
    force: false,
    ...extra,
  };
}

/** A visible-ASCII key for any id (the key is a header). */
function encodeURIComponentSafe(id: string): string {
  return [...id].map((c) => c.codePointAt(0)!.toString(16)).join("-");
}

/** The first pull of a kind. */
export function firstPull(kind = "todos", limit = 50): PullRequest {
  return { kind, updatedSince: null, afterId: null, limit, pageToken: null };
}

/** The first pull of todos, with `extra` fields. */
export function pullRequest(extra: Partial<PullRequest> = {}): PullRequest {
  return {
    kind: "todos",
    updatedSince: null,
    afterId: null,
    limit: 50,
    pageToken: null,
    ...extra,
  };
}

/** The delays an injected sleep was asked for. */
export interface Sleeps {
  /** Each delay, in ms, in order. */
  readonly delays: number[];
  /** The sleep to inject. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** An injected sleep that records each delay and returns at once. */
export function recordSleeps(): Sleeps {
  const delays: number[] = [];
  return {
    delays,
    sleep(ms, signal): Promise<void> {
      delays.push(ms);
      return signal?.aborted
        ? Promise.reject(signal.reason)
        : Promise.resolve();
    },
  };
}

/**
 * A transport to the server: single requests, sleeps that return at once,
 * a fixed jitter, unless `options` say otherwise.
 */
export function connect(
  server: ScriptedServer,
  options: Partial<RestTransportOptions> = {},
): Transport {
  return createRestTransport({
    baseUrl: server.url,
    batch: false,
    sleep: recordSleeps().sleep,
    random: () => 0.5,
    ...options,
  });
}

/** The record id of a single write's path. */
export function idOf(request: RecordedRequest): string {
  return decodeURIComponent(request.path.split("/").at(-1)!);
}

/** The ops of a `POST /batch`. */
export function opsOf(request: RecordedRequest): JsonObject[] {
  return (request.json as { ops: JsonObject[] }).ops;
}
