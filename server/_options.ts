/**
 * The options of the reference server: {@linkcode SyncServerOptions} as
 * callers write them, and {@linkcode resolveOptions}, which checks them and
 * resolves the defaults once.
 *
 * @module
 */

import { WIRE_LIMITS } from "../src/limits.ts";
import type { StandardSchemaV1 } from "../src/schema.ts";
import { createMemoryServerStore } from "./memory.ts";
import type { ServerStore } from "./store.ts";
import { describe } from "../src/describe.ts";
import { isObject } from "./_util.ts";

/**
 * The share of `maxPageBytes` kept for a page's envelope,
 * `{"items":[…],"nextPageToken":"…","total":…}`, whose token holds an id at
 * the limit.
 */
export const PAGE_ENVELOPE_BYTES = 2048;
/** The smallest `maxPageBytes`: twice the envelope. */
const MIN_PAGE_BYTES = 2 * PAGE_ENVELOPE_BYTES;
/** The contract's longest silence on a live stream (CONTRACT.md §Live hint). */
const MAX_HEARTBEAT_MS = 25_000;

/**
 * Options for `createSyncServer()`.
 *
 * @example Limits, clock and auth
 * ```ts
 * import { createSyncServer, type SyncServerOptions } from "@offline-first/sync/server";
 * import assert from "node:assert/strict";
 *
 * const options: SyncServerOptions = {
 *   maxPageSize: 50,
 *   now: () => Date.UTC(2025, 2, 1),
 *   auth: (request) => request.headers.get("x-user"),
 * };
 * await using server = createSyncServer(options);
 * const health = await server.fetch(new Request("http://localhost/health"));
 * assert.equal((await health.json()).limits.maxPageItems, 50);
 * const pull = await server.fetch(new Request("http://localhost/todo"));
 * assert.equal(pull.status, 401);
 * ```
 */
export interface SyncServerOptions {
  /**
   * Where records and idempotency entries live. The server owns it:
   * {@linkcode SyncServer.close} closes it. One store serves one server
   * process, since the server serialises writes in memory.
   *
   * @default {createMemoryServerStore()}
   */
  readonly store?: ServerStore;
  /**
   * Derives the principal (the namespace of every record and idempotency
   * key) from a request; `null` answers `401` before any data is touched.
   * `GET /health` is not authenticated.
   *
   * @default {every request is the principal "public"}
   */
  readonly auth?: (request: Request) => string | null | Promise<string | null>;
  /**
   * Standard Schemas by kind. A PUT's record, with `id` but without the
   * server's `updated_at` and `deleted_at`, must pass its kind's schema or
   * is answered `422`. The body is stored as sent, not the schema's output.
   *
   * @default {{}}
   */
  readonly schemas?: Readonly<Record<string, StandardSchemaV1>>;
  /**
   * The largest record body, in bytes: a `PUT` body, or one batch op's
   * payload (that op alone is answered `413`); larger ones are answered
   * `413`.
   *
   * @default {1048576}
   */
  readonly maxBodyBytes?: number;
  /**
   * The largest `POST /batch` body, in bytes; a larger batch is answered
   * `413 batch_too_large` and nothing of it is applied.
   *
   * @default {8388608}
   */
  readonly maxBatchBytes?: number;
  /**
   * The most ops in one `POST /batch`, at most the contract's 1,000; more
   * are answered `413 batch_too_large` and nothing is applied. It bounds
   * how long one batch holds its principal's write queue.
   *
   * @default {1000}
   */
  readonly maxBatchOps?: number;
  /**
   * The most items a pull page holds, at most the contract's 1,000; a
   * larger `limit` is clamped.
   *
   * @default {1000}
   */
  readonly maxPageSize?: number;
  /**
   * The largest pull page body, in bytes (at least 4096): a page stops
   * before the item that would pass it and still carries `nextPageToken`;
   * a single record larger than this goes out alone. The store reads no
   * more than the page.
   *
   * @default {4194304}
   */
  readonly maxPageBytes?: number;
  /**
   * The page size of a pull without `limit`; at most `maxPageSize`.
   *
   * @default {100}
   */
  readonly defaultPageSize?: number;
  /**
   * How long a write's response is kept for replays by idempotency key, in
   * ms (a positive integer).
   *
   * @default {604800000}
   */
  readonly idempotencyRetentionMs?: number;
  /**
   * The most idempotency keys stored per principal (at least
   * `maxBatchOps`). Over it, the oldest keys expire first, but never one
   * stored less than 24 hours ago: when none can, the write is answered
   * `429 too_many_keys` with `Retry-After` and nothing is applied.
   *
   * @default {100000}
   */
  readonly maxIdempotencyKeys?: number;
  /**
   * How long tombstones are kept before the server purges them (checked at
   * most once a minute of `now()`); a pull whose cursor, brought from an
   * earlier pull, predates a purged tombstone is answered `410`. The later
   * pages of a pull that began with no cursor are not (their page tokens
   * carry the pull's mark), so a full resync always finishes.
   *
   * @default {Infinity}
   */
  readonly tombstoneRetentionMs?: number;
  /**
   * Whether `POST /batch` is served.
   *
   * @default {true}
   */
  readonly batch?: boolean;
  /**
   * Whether `GET /live` is served: a `text/event-stream` per principal that
   * names the kinds its committed writes changed, through this server or,
   * over a store with a change feed (`changes()`, such as Deno KV), through
   * any other instance (CONTRACT.md §Live hint). `GET /health` says so.
   *
   * @default {true}
   */
  readonly live?: boolean;
  /**
   * The longest a live stream stays silent, in ms: an idle stream gets a
   * `: ping` comment after it. At most 25,000 (the contract's bound).
   *
   * @default {15000}
   */
  readonly liveHeartbeatMs?: number;
  /**
   * The most live streams one principal may hold open; one more is answered
   * `429 too_many_streams`.
   *
   * @default {16}
   */
  readonly maxLiveStreams?: number;
  /**
   * The clock, in ms since epoch: assigns `updated_at`, expires idempotency
   * entries and dates every response.
   *
   * @default {Date.now}
   */
  readonly now?: () => number;
  /**
   * The path the routes live under, such as `"/sync"`; `""` for the root.
   *
   * @default {""}
   */
  readonly basePath?: string;
  /**
   * Receives every unexpected error, answered `500` to the client.
   *
   * @default {console.error}
   */
  readonly onError?: (error: unknown) => void;
}

/** Options for `SyncServer.purgeTombstones`. */
export interface PurgeTombstonesOptions {
  /**
   * Removes tombstones whose `updated_at` is before this instant (ms since
   * epoch).
   *
   * @default {now() - tombstoneRetentionMs, or every tombstone when the retention is unlimited}
   */
  readonly olderThan?: number;
}

/** Every option of {@linkcode SyncServerOptions}, checked, defaults filled in. */
export type ResolvedOptions = Required<SyncServerOptions>;

function publicPrincipal(): string {
  return "public";
}

function logError(error: unknown): void {
  console.error(error);
}

/**
 * Checks the options of `createSyncServer()` and fills in the defaults, once.
 *
 * @param options The options as the caller gave them.
 * @returns The resolved options.
 * @throws {TypeError} When an option has the wrong type.
 * @throws {RangeError} When a limit is out of range.
 */
export function resolveOptions(options: SyncServerOptions): ResolvedOptions {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(
      `Cannot create sync server as options is not an object: current value is ${
        describe(options)
      }`,
    );
  }
  const store = options.store ?? createMemoryServerStore();
  for (
    const method of [
      "getRecord",
      "listRecords",
      "getIdempotency",
      "commit",
      "purge",
      "trimIdempotency",
      "lastWrite",
      "close",
    ] as const
  ) {
    const member: unknown = store[method];
    if (typeof member !== "function") {
      throw new TypeError(
        `Cannot create sync server as 'store' lacks ${method}(): current value is ${
          describe(member)
        }`,
      );
    }
  }
  const schemas = options.schemas ?? {};
  if (typeof schemas !== "object" || schemas === null) {
    throw new TypeError(
      `Cannot create sync server as 'schemas' is not an object: current value is ${
        describe(schemas)
      }`,
    );
  }
  for (const [kind, schema] of Object.entries(schemas)) {
    const props: unknown = isObject(schema) ? schema["~standard"] : undefined;
    if (!isObject(props) || typeof props.validate !== "function") {
      throw new TypeError(
        `Cannot create sync server as the schema of kind "${kind}" is not a Standard Schema: current value is ${
          describe(schema)
        }`,
      );
    }
  }
  const maxPageSize = positiveOption(
    options.maxPageSize,
    WIRE_LIMITS.maxPageItems,
    "maxPageSize",
    "integer",
  );
  const defaultPageSize = positiveOption(
    options.defaultPageSize,
    Math.min(100, maxPageSize),
    "defaultPageSize",
    "integer",
  );
  if (defaultPageSize > maxPageSize) {
    throw new RangeError(
      `Cannot create sync server as 'defaultPageSize' exceeds 'maxPageSize' (${maxPageSize}): current value is ${defaultPageSize}`,
    );
  }
  atMostContract(maxPageSize, WIRE_LIMITS.maxPageItems, "maxPageSize");
  const basePath = options.basePath ?? "";
  if (
    typeof basePath !== "string" ||
    (basePath !== "" && (!basePath.startsWith("/") || basePath.endsWith("/")))
  ) {
    throw new TypeError(
      `Cannot create sync server as 'basePath' must be "" or start with "/" and not end with "/": current value is ${
        describe(basePath)
      }`,
    );
  }
  const maxBatchOps = positiveOption(
    options.maxBatchOps,
    WIRE_LIMITS.maxBatchOps,
    "maxBatchOps",
    "integer",
  );
  atMostContract(maxBatchOps, WIRE_LIMITS.maxBatchOps, "maxBatchOps");
  const maxIdempotencyKeys = positiveOption(
    options.maxIdempotencyKeys,
    100_000,
    "maxIdempotencyKeys",
    "integer",
  );
  // A batch stores a key per op: a bound below one batch could never be met.
  if (maxIdempotencyKeys < maxBatchOps) {
    throw new RangeError(
      `Cannot create sync server as 'maxIdempotencyKeys' is below 'maxBatchOps' (${maxBatchOps}): current value is ${maxIdempotencyKeys}`,
    );
  }
  const maxPageBytes = positiveOption(
    options.maxPageBytes,
    WIRE_LIMITS.maxPageBytes,
    "maxPageBytes",
    "integer",
  );
  if (maxPageBytes < MIN_PAGE_BYTES) {
    throw new RangeError(
      `Cannot create sync server as 'maxPageBytes' is below ${MIN_PAGE_BYTES}: current value is ${maxPageBytes}`,
    );
  }
  const liveHeartbeatMs = positiveOption(
    options.liveHeartbeatMs,
    15_000,
    "liveHeartbeatMs",
    "integer",
  );
  atMostContract(liveHeartbeatMs, MAX_HEARTBEAT_MS, "liveHeartbeatMs");
  return {
    store,
    auth: functionOption(options.auth, publicPrincipal, "auth"),
    schemas,
    maxBodyBytes: positiveOption(
      options.maxBodyBytes,
      WIRE_LIMITS.maxRecordBytes,
      "maxBodyBytes",
      "integer",
    ),
    maxBatchBytes: positiveOption(
      options.maxBatchBytes,
      WIRE_LIMITS.maxBatchBytes,
      "maxBatchBytes",
      "integer",
    ),
    maxBatchOps,
    maxPageSize,
    maxPageBytes,
    defaultPageSize,
    // An integer: entries' ages are derived from it (`expiresAt - retention`).
    idempotencyRetentionMs: positiveOption(
      options.idempotencyRetentionMs,
      7 * 24 * 60 * 60 * 1000,
      "idempotencyRetentionMs",
      "integer",
    ),
    maxIdempotencyKeys,
    tombstoneRetentionMs: positiveOption(
      options.tombstoneRetentionMs,
      Infinity,
      "tombstoneRetentionMs",
      "duration",
    ),
    batch: booleanOption(options.batch, true, "batch"),
    live: booleanOption(options.live, true, "live"),
    liveHeartbeatMs,
    maxLiveStreams: positiveOption(
      options.maxLiveStreams,
      16,
      "maxLiveStreams",
      "integer",
    ),
    now: functionOption(options.now, Date.now, "now"),
    basePath,
    onError: functionOption(options.onError, logError, "onError"),
  };
}

/**
 * Checks a numeric option: a positive safe integer (`"integer"`), or any
 * positive number, `Infinity` included (`"duration"`).
 */
function positiveOption(
  value: number | undefined,
  fallback: number,
  name: string,
  kind: "integer" | "duration",
): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number") {
    throw new TypeError(
      `Cannot create sync server as '${name}' is not a number: current value is ${
        describe(value)
      }`,
    );
  }
  const valid = kind === "integer"
    ? Number.isSafeInteger(value) && value >= 1
    : value > 0;
  if (!valid) {
    throw new RangeError(
      `Cannot create sync server as '${name}' is not a positive ${
        kind === "integer" ? "integer" : "duration"
      }: current value is ${value}`,
    );
  }
  return value;
}

/**
 * Refuses a count above the contract's maximum: clients size their batches
 * and read caps by it, so a server may state less, never more.
 */
function atMostContract(value: number, max: number, name: string): void {
  if (value > max) {
    throw new RangeError(
      `Cannot create sync server as '${name}' exceeds the contract's ${max}: current value is ${value}`,
    );
  }
}

function booleanOption(
  value: boolean | undefined,
  fallback: boolean,
  name: string,
): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== "boolean") {
    throw new TypeError(
      `Cannot create sync server as '${name}' is not a boolean: current value is ${
        describe(value)
      }`,
    );
  }
  return value;
}

function functionOption<F>(value: F | undefined, fallback: F, name: string): F {
  if (value === undefined) return fallback;
  if (typeof value !== "function") {
    throw new TypeError(
      `Cannot create sync server as '${name}' is not a function: current value is ${
        describe(value)
      }`,
    );
  }
  return value;
}
