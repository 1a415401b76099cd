/**
 * The REST transport: a {@linkcode Transport} over `fetch` for any backend
 * that follows the wire contract (pull with `GET {base}/{kind}`, writes with
 * `PUT`/`DELETE {base}/{kind}/{id}` or `POST {base}/batch`).
 *
 * It implements the client side of the contract's status table: it retries
 * what may pass later (network errors, timeouts, 408, 429, 5xx) with capped
 * exponential backoff and full jitter, honours `Retry-After`, refreshes the
 * token once on a 401, and reports every write's outcome as a value.
 *
 * Every byte from the network is treated as hostile: a body is read up to
 * `maxResponseBytes` and no further; a `2xx` answer that is cut short, not
 * UTF-8 JSON or not of the contract's shape is a retryable `ParseError`
 * (retried like a lost response); credentials never follow a redirect to
 * another origin. An op whose id or kind breaks the contract's limits is
 * rejected on its own (a `ValidationError`), and the other ops go on.
 *
 * @example Pulling a page
 * ```ts
 * import { createRestTransport } from "@offline-first/sync/transport/rest";
 * import assert from "node:assert/strict";
 *
 * // A stand-in backend; any server that follows the wire contract works.
 * await using server = Deno.serve(
 *   { port: 0, hostname: "127.0.0.1", onListen() {} },
 *   () =>
 *     Response.json({
 *       items: [{ id: "a", updated_at: "2025-03-01T10:00:00.000Z" }],
 *       nextPageToken: null,
 *     }),
 * );
 * await using transport = createRestTransport({
 *   baseUrl: `http://127.0.0.1:${server.addr.port}/api`,
 * });
 * const page = await transport.pull({
 *   kind: "todos",
 *   updatedSince: null,
 *   afterId: null,
 *   limit: 100,
 *   pageToken: null,
 * });
 * assert.deepEqual(page.items, [
 *   { id: "a", updated_at: "2025-03-01T10:00:00.000Z" },
 * ]);
 * ```
 *
 * @module
 */

import {
  backoffDelay,
  delay,
  MAX_TIMER_MS,
  parseRetryAfter,
} from "../src/backoff.ts";
import {
  AuthError,
  ClosedError,
  NetworkError,
  ParseError,
  RejectedError,
  ResyncRequiredError,
  ServerError,
  type SyncError,
  ValidationError,
} from "../src/errors.ts";
import { isJsonObject, type JsonObject, type JsonValue } from "../src/json.ts";
import {
  exceedsDepth,
  idProblem,
  kindProblem,
  WIRE_LIMITS,
} from "../src/limits.ts";
import type {
  PullPage,
  PullRequest,
  PushOp,
  PushResult,
  Transport,
  TransportCallOptions,
} from "../src/transport.ts";

/** What the token provider is asked for. */
export interface RestTokenContext {
  /**
   * `true` when the server refused the previous token (401) and a fresh one
   * is needed; `false` for the token to use as is.
   */
  readonly refresh: boolean;
}

/**
 * Returns the bearer token to send, or `null`/`undefined`/`""` to send no
 * `Authorization` header.
 */
export type RestTokenProvider = (
  context: RestTokenContext,
) => string | null | undefined | Promise<string | null | undefined>;

/** How the REST transport retries a request that may pass later. */
export interface RestRetryOptions {
  /**
   * The number of tries of one request, the first included. A retry after a
   * token refresh does not count.
   *
   * @default {4}
   */
  attempts?: number;
  /**
   * The upper bound of the delay before the first retry, in ms; it doubles
   * with each retry (full jitter: the delay is random below the bound).
   *
   * @default {250}
   */
  baseDelayMs?: number;
  /**
   * The cap on any delay, in ms. A `Retry-After` longer than this is not
   * waited for: the call reports it (`retryAfterMs`) instead. A
   * `Retry-After` is read as at most one hour, whatever the server sent, so
   * no wait this transport arms or reports leaves the timer's range.
   *
   * @default {30_000}
   */
  maxDelayMs?: number;
}

/** Options for {@linkcode createRestTransport}. */
export interface RestTransportOptions {
  /**
   * The backend's base URL (`B` in the wire contract); a trailing slash is
   * optional. Must be `http:` or `https:`, without query or fragment.
   */
  baseUrl: string | URL;
  /**
   * The `fetch` to send requests with. It receives `redirect: "manual"`:
   * the transport follows redirects itself (see `headers`). A body with a
   * `Content-Length` and no `Content-Encoding` is read in one go, as HTTP
   * framing bounds it; any other is counted as it streams.
   *
   * @default {globalThis.fetch}
   */
  fetch?: typeof fetch;
  /**
   * Provides the bearer token. Called once per call with
   * `{ refresh: false }`, and once with `{ refresh: true }` after a 401, after
   * which the refused request is retried once; a second 401 rejects the whole
   * call with `AuthError`. Without a provider a 401 is an `AuthError` at once.
   * The token is sent only to the base URL's origin (see `headers`).
   *
   * @default {undefined}
   */
  token?: RestTokenProvider;
  /**
   * Extra headers sent with every request. The transport's own headers
   * (`Authorization` when a token is provided, `Idempotency-Key`,
   * `Content-Type`, the force headers) take precedence.
   *
   * These headers and the token go only to the base URL's origin. A
   * redirect to the same origin is followed, at most 5 in a row, and only
   * when it keeps the method and body (any redirect of a read; `307`/`308`
   * of a write); any other redirect, above all one to another origin
   * (another scheme, host or port), is not followed: the request fails with
   * a non-retryable `ServerError` (code `"redirect"`), a pushed op stays
   * queued, and the credentials are never sent there.
   *
   * @default {{}}
   */
  headers?: HeadersInit;
  /**
   * The time one request (response and body) may take, in ms, before it is
   * aborted as a retryable `NetworkError` (within 1% after that: requests
   * that start close together share one timer). `Infinity` disables it.
   *
   * @default {30_000}
   */
  timeoutMs?: number;
  /**
   * The most bytes of one response body the transport reads; the body is
   * read as it arrives and cancelled once it passes this size (or at once
   * when its `Content-Length` does). The default is well above the
   * contract's largest answers: a 4 MiB pull page, a 1,000-op batch answer.
   * A response over the cap is a `ParseError` that is NOT retryable (a
   * server that always sends too much is not asked again at once): a pull
   * rejects with it, a single write is rejected with it (quarantined: the
   * server may have applied it, and a later pull brings its state), and a
   * batch's ops are sent again one by one under their idempotency keys.
   * Raise it when the server's records or pages are larger.
   *
   * @default {33_554_432}
   */
  maxResponseBytes?: number;
  /**
   * How retryable failures are retried.
   *
   * @default {{ attempts: 4, baseDelayMs: 250, maxDelayMs: 30_000 }}
   */
  retry?: RestRetryOptions;
  /**
   * Whether writes go through `POST {base}/batch`. `"auto"` asks
   * `GET {base}/health` once, when first needed, and uses batches when it
   * answers `{"batch": true}`; a failed health check means no batch for that
   * call and is asked again on the next one.
   *
   * @default {"auto"}
   */
  batch?: boolean | "auto";
  /**
   * The most ops sent in one `POST {base}/batch`; larger pushes are sent as
   * several batches, one after the other. At most 1,000, the contract's
   * batch limit.
   *
   * @default {100}
   */
  batchSize?: number;
  /**
   * The most single-op requests in flight at once when not batching.
   *
   * @default {4}
   */
  concurrency?: number;
  /**
   * A random number in [0, 1), for the backoff's jitter.
   *
   * @default {Math.random}
   */
  random?: () => number;
  /**
   * Waits between retries; must reject with the signal's reason when the
   * signal aborts.
   *
   * @default {a setTimeout-based delay}
   */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /**
   * The clock in ms since the epoch, for `Retry-After` dates.
   *
   * @default {Date.now}
   */
  now?: () => number;
}

/**
 * Creates a {@linkcode Transport} that talks to a backend over HTTP, as the
 * wire contract describes.
 *
 * Pull: `GET {base}/{kind}?updatedSince=&afterId=&limit=&includeDeleted=true&pageToken=`,
 * parsed strictly. Push: one `PUT`/`DELETE {base}/{kind}/{id}` per op (up to
 * `concurrency` at once), or `POST {base}/batch` in chunks of `batchSize`.
 * Every write carries `Idempotency-Key: <op.key>`, so a retried write is
 * applied once. Path segments are percent-encoded.
 *
 * Retries stop early for the rest of a push once one request has failed
 * after all its tries: the ops not yet sent get the same `retry` result
 * rather than hammering a server that is down (or that asked to wait).
 *
 * @param options The base URL, credentials, retry policy and batching.
 * @returns The transport; close it when done.
 * @throws {TypeError} When an option has the wrong type or `baseUrl` is not
 * an `http:`/`https:` URL without query or fragment.
 * @throws {RangeError} When a number option is out of range.
 *
 * @example Pushing writes with a token
 * ```ts
 * import { createRestTransport } from "@offline-first/sync/transport/rest";
 * import assert from "node:assert/strict";
 *
 * await using server = Deno.serve(
 *   { port: 0, hostname: "127.0.0.1", onListen() {} },
 *   async (request) => {
 *     if (request.headers.get("authorization") !== "Bearer secret") {
 *       return Response.json({ error: "unauthorized" }, { status: 401 });
 *     }
 *     const body = await request.json();
 *     return Response.json(
 *       { ...body, updated_at: "2025-03-01T10:00:00.000Z" },
 *       { status: 201 },
 *     );
 *   },
 * );
 * await using transport = createRestTransport({
 *   baseUrl: `http://127.0.0.1:${server.addr.port}`,
 *   token: () => "secret",
 *   batch: false,
 * });
 * const [result] = await transport.push([{
 *   opId: "01J0000000000000000000000A",
 *   key: "01J0000000000000000000000A",
 *   kind: "todos",
 *   id: "a",
 *   type: "upsert",
 *   payload: { id: "a", title: "Milk" },
 *   baseUpdatedAt: null,
 *   force: false,
 * }]);
 * assert.equal(result?.type, "ok");
 * ```
 *
 * @example Options are checked once, at construction
 * ```ts
 * import { createRestTransport } from "@offline-first/sync/transport/rest";
 * import assert from "node:assert/strict";
 *
 * assert.throws(
 *   () => createRestTransport({ baseUrl: "http://localhost", batchSize: 0 }),
 *   RangeError,
 * );
 * ```
 */
export function createRestTransport(options: RestTransportOptions): Transport {
  return new RestTransport(resolveOptions(options));
}

interface ResolvedOptions {
  readonly base: string;
  /** The base URL's origin: the only one credentials are sent to. */
  readonly origin: string;
  readonly maxResponseBytes: number;
  readonly fetch: typeof fetch;
  readonly token: RestTokenProvider | undefined;
  readonly headers: Headers;
  readonly timeoutMs: number;
  readonly attempts: number;
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  readonly batch: boolean | "auto";
  readonly batchSize: number;
  readonly concurrency: number;
  readonly random: () => number;
  readonly sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  readonly now: () => number;
}

/**
 * The longest `updatedSince` or `pageToken` sent in a URL. A token is the
 * server's opaque hint; one this long is not sent, and the engine goes on
 * from its keyset cursor without it.
 */
const MAX_QUERY_VALUE_LENGTH = 4_096;

/** The default of `maxResponseBytes`: 32 MiB. */
const DEFAULT_MAX_RESPONSE_BYTES = 33_554_432;

/** The most same-origin redirects one request follows in a row. */
const MAX_REDIRECTS = 5;

function optionError(name: string, problem: string, value: unknown): string {
  return `Cannot create REST transport as '${name}' ${problem}: current value is ${
    describe(value)
  }`;
}

function resolveFunction<T>(
  name: string,
  value: T | undefined,
  fallback: T,
): T {
  if (value === undefined) return fallback;
  if (typeof value !== "function") {
    throw new TypeError(optionError(name, "is not a function", value));
  }
  return value;
}

function resolveNumber(
  name: string,
  value: number | undefined,
  fallback: number,
  check: (value: number) => boolean,
  problem: string,
): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number") {
    throw new TypeError(optionError(name, "is not a number", value));
  }
  if (!check(value)) throw new RangeError(optionError(name, problem, value));
  return value;
}

function isPositiveInteger(value: number): boolean {
  return Number.isSafeInteger(value) && value >= 1;
}

function isDelay(value: number): boolean {
  return Number.isFinite(value) && value >= 0 && value <= MAX_TIMER_MS;
}

function resolveBase(value: unknown): string {
  if (typeof value !== "string" && !(value instanceof URL)) {
    throw new TypeError(
      optionError("baseUrl", "is not a string or URL", value),
    );
  }
  let url: URL;
  try {
    url = new URL(value);
  } catch (error) {
    throw new TypeError(optionError("baseUrl", "is not a valid URL", value), {
      cause: error,
    });
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new TypeError(optionError("baseUrl", "is not http(s)", url.href));
  }
  // Paths are appended to the base, so a query or fragment would end up in
  // the middle of every URL.
  if (url.search !== "" || url.hash !== "") {
    throw new TypeError(
      optionError("baseUrl", "has a query or fragment", url.href),
    );
  }
  return url.href.replace(/\/+$/, "");
}

function resolveOptions(options: RestTransportOptions): ResolvedOptions {
  if (!isJsonLikeObject(options)) {
    throw new TypeError(
      `Cannot create REST transport as the options are not an object: current value is ${
        describe(options)
      }`,
    );
  }
  const retry: RestRetryOptions = options.retry ?? {};
  if (typeof retry !== "object" || retry === null) {
    throw new TypeError(optionError("retry", "is not an object", retry));
  }
  let headers: Headers;
  try {
    headers = new Headers(options.headers);
  } catch (error) {
    throw new TypeError(
      optionError("headers", "is not valid", String(error)),
      { cause: error },
    );
  }
  const batch = options.batch ?? "auto";
  if (batch !== true && batch !== false && batch !== "auto") {
    throw new TypeError(
      optionError("batch", 'is not true, false or "auto"', batch),
    );
  }
  const baseDelayMs = resolveNumber(
    "retry.baseDelayMs",
    retry.baseDelayMs,
    250,
    isDelay,
    "is not a delay between 0 and 2^31-1 ms",
  );
  const maxDelayMs = resolveNumber(
    "retry.maxDelayMs",
    retry.maxDelayMs,
    30_000,
    isDelay,
    "is not a delay between 0 and 2^31-1 ms",
  );
  const token = resolveFunction<RestTokenProvider | undefined>(
    "token",
    options.token,
    undefined,
  );
  const base = resolveBase(options.baseUrl);
  return {
    base,
    origin: new URL(base).origin,
    maxResponseBytes: resolveNumber(
      "maxResponseBytes",
      options.maxResponseBytes,
      DEFAULT_MAX_RESPONSE_BYTES,
      isPositiveInteger,
      "is not a positive integer",
    ),
    fetch: resolveFunction("fetch", options.fetch, globalThis.fetch),
    token,
    headers,
    timeoutMs: resolveNumber(
      "timeoutMs",
      options.timeoutMs,
      30_000,
      (value) =>
        value === Infinity ||
        (Number.isFinite(value) && value > 0 && value <= MAX_TIMER_MS),
      "is not a positive number of ms up to 2^31-1 or Infinity",
    ),
    attempts: resolveNumber(
      "retry.attempts",
      retry.attempts,
      4,
      isPositiveInteger,
      "is not a positive integer",
    ),
    baseDelayMs,
    maxDelayMs,
    batch,
    batchSize: resolveNumber(
      "batchSize",
      options.batchSize,
      100,
      (value) => isPositiveInteger(value) && value <= WIRE_LIMITS.maxBatchOps,
      `is not an integer from 1 to ${WIRE_LIMITS.maxBatchOps}`,
    ),
    concurrency: resolveNumber(
      "concurrency",
      options.concurrency,
      4,
      isPositiveInteger,
      "is not a positive integer",
    ),
    random: resolveFunction("random", options.random, Math.random),
    sleep: resolveFunction("sleep", options.sleep, delay),
    now: resolveFunction("now", options.now, Date.now),
  };
}

/** One HTTP request to send (possibly several times). */
interface Outgoing {
  readonly method: "GET" | "PUT" | "DELETE" | "POST";
  readonly url: string;
  readonly headers?: Record<string, string>;
  readonly body?: string;
}

/** A response, with its body read in full (up to `maxResponseBytes`). */
interface Received {
  readonly type: "response";
  readonly status: number;
  readonly headers: Headers;
  /** The body decoded as UTF-8 (a leading BOM dropped). */
  readonly text: string;
  /** Whether the body was not valid UTF-8 (`text` then has U+FFFD). */
  readonly malformed: boolean;
}

/**
 * A request that kept failing in a way that may pass later, or that met a
 * redirect it may not follow: the op stays queued.
 */
interface GaveUp {
  readonly type: "retry";
  readonly error: SyncError;
  readonly retryAfterMs: number | null;
}

/** A request whose answer cannot be taken, and would not be if re-sent. */
interface Refused {
  readonly type: "refused";
  readonly error: SyncError;
}

/**
 * Makes the caller's value of a final answer (not 401, not retryable), or
 * returns a `ParseError` for a damaged one, which is then re-sent like a
 * lost response. Throws for what fails the whole call.
 */
type Interpret<T> = (received: Received) => T | ParseError;

/** The state one pull or push call shares between its requests. */
interface Call {
  /** Aborts on the caller's signal, on close, and on a fatal error. */
  readonly signal: AbortSignal;
  /** The signals and timeouts of the call's requests. */
  readonly requests: RequestSignals;
  /** Aborts the call's other requests once one has failed fatally. */
  readonly abort: AbortController;
  /** The call's token, refreshed at most once. */
  readonly auth: TokenSession;
  /** Set once a request gave up: ops not yet sent get the same outcome. */
  stop: GaveUp | null;
}

/**
 * The requests that started within one window of a {@linkcode RequestSignals}:
 * they share one `AbortController`.
 */
interface Cohort {
  /** Aborted on timeout or when the call's signal aborts. */
  readonly controller: AbortController;
  /** Requests may join until then, on `performance.now()`'s clock. */
  readonly joinUntil: number;
  /** When its requests time out: `joinUntil + timeoutMs`. */
  readonly deadline: number;
  /** Its requests in flight. */
  live: number;
  /** Whether the timeout aborted it. */
  timedOut: boolean;
}

/**
 * The fraction of `timeoutMs` during which starting requests join one
 * cohort: a request times out between `timeoutMs` and `timeoutMs` × 1.01
 * after it started.
 */
const COHORT_WINDOW = 0.01;

/**
 * The abort signals and timeouts of one call's requests.
 *
 * Requests that start within 1% of `timeoutMs` of each other share one
 * `AbortController`, aborted once the last of them may have run `timeoutMs`
 * (or when the call's signal aborts): so no request is cut short, every one
 * times out at most 1% late, and a push does not create a signal per
 * request. A fresh signal per request cost 3 to 5% of a single-op push's
 * throughput against the reference server in Deno, an `AbortSignal.any` and
 * a `setTimeout` per request more. One timer waits for the oldest cohort's
 * deadline; one listener on the call's signal aborts every cohort.
 * {@linkcode RequestSignals.close} at the end of the call clears both.
 */
class RequestSignals {
  readonly #signal: AbortSignal;
  readonly #timeoutMs: number;
  readonly #windowMs: number;
  /** Cohorts from `#head` on, oldest first; the last one takes new requests. */
  #queue: Cohort[] = [];
  #head = 0;
  /** Requests in flight, in every cohort. */
  #live = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #listening = false;
  #closed = false;

  constructor(signal: AbortSignal, timeoutMs: number) {
    this.#signal = signal;
    this.#timeoutMs = timeoutMs;
    this.#windowMs = timeoutMs * COHORT_WINDOW;
  }

  /** The call's signal. */
  get signal(): AbortSignal {
    return this.#signal;
  }

  /**
   * Starts a request. Pass the result to {@linkcode RequestSignals.finish}
   * when the request and its body are done.
   *
   * @returns The request's cohort: abort with its `controller.signal`.
   * @throws The call signal's reason when it aborted.
   */
  start(): Cohort {
    this.#signal.throwIfAborted();
    const now = performance.now();
    let cohort = this.#queue.at(-1);
    if (cohort === undefined || now > cohort.joinUntil) {
      cohort = {
        controller: new AbortController(),
        joinUntil: now + this.#windowMs,
        deadline: now + this.#windowMs + this.#timeoutMs,
        live: 0,
        timedOut: false,
      };
      this.#queue.push(cohort);
      if (this.#timer === undefined) this.#arm(cohort.deadline - now);
      if (!this.#listening) {
        this.#listening = true;
        this.#signal.addEventListener("abort", this.#abortAll);
      }
    }
    cohort.live++;
    this.#live++;
    return cohort;
  }

  /** Ends a request; call once per {@linkcode RequestSignals.start}. */
  finish(cohort: Cohort): void {
    cohort.live--;
    this.#live--;
    const queue = this.#queue;
    // The newest cohort stays: it may take new requests.
    while (this.#head < queue.length - 1 && queue[this.#head]!.live === 0) {
      this.#head++;
    }
    if (this.#head > 64 && this.#head * 2 > queue.length) {
      this.#queue = queue.slice(this.#head);
      this.#head = 0;
    }
    if (this.#live === 0 && this.#closed) this.#release();
  }

  /**
   * Ends the call: clears the timer and the listener once no request is in
   * flight (at once when none is). Idempotent.
   */
  close(): void {
    this.#closed = true;
    if (this.#live === 0) this.#release();
  }

  #release(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#queue = [];
    this.#head = 0;
    if (this.#listening) {
      this.#listening = false;
      this.#signal.removeEventListener("abort", this.#abortAll);
    }
  }

  #arm(delay: number): void {
    // Capped: a longer timer would fire at once; an early one re-arms.
    this.#timer = setTimeout(this.#expire, Math.min(delay, MAX_TIMER_MS));
  }

  /** Aborts the cohorts past their deadline; re-arms for the next one. */
  readonly #expire = (): void => {
    this.#timer = undefined;
    const now = performance.now();
    const queue = this.#queue;
    for (; this.#head < queue.length; this.#head++) {
      const cohort = queue[this.#head]!;
      if (cohort.deadline > now) break;
      if (cohort.live > 0) {
        cohort.timedOut = true;
        cohort.controller.abort();
      }
    }
    const next = queue[this.#head];
    if (next === undefined) {
      this.#queue = [];
      this.#head = 0;
    } else {
      this.#arm(next.deadline - now);
    }
  };

  /** The call's signal aborted: so does every request in flight. */
  readonly #abortAll = (): void => {
    const reason = this.#signal.reason;
    const queue = this.#queue;
    for (let i = this.#head; i < queue.length; i++) {
      const cohort = queue[i]!;
      if (cohort.live > 0) cohort.controller.abort(reason);
    }
  };
}

/**
 * One call's view of the token: fetched once, refreshed at most once and
 * shared by the call's parallel requests, so two requests refused together
 * cause one refresh.
 */
class TokenSession {
  #provider: RestTokenProvider | undefined;
  #generation = 0;
  #token: Promise<string | null> | null = null;

  constructor(provider: RestTokenProvider | undefined) {
    this.#provider = provider;
  }

  /** 0 for the first token, 1 once refreshed. */
  get generation(): number {
    return this.#generation;
  }

  get hasProvider(): boolean {
    return this.#provider !== undefined;
  }

  token(): Promise<string | null> {
    this.#token ??= this.#ask(false);
    return this.#token;
  }

  async refresh(from: number): Promise<void> {
    if (from === this.#generation) {
      this.#generation++;
      this.#token = this.#ask(true);
    }
    await this.#token;
  }

  async #ask(refresh: boolean): Promise<string | null> {
    if (this.#provider === undefined) return null;
    let value: unknown;
    try {
      value = await this.#provider({ refresh });
    } catch (error) {
      throw new AuthError(
        `Cannot get a token as the token provider threw: current value is ${
          describe(error)
        }`,
        { cause: error },
      );
    }
    if (value === null || value === undefined || value === "") return null;
    // A header value must be visible ASCII; anything else would make
    // `Headers` throw mid-call.
    if (typeof value !== "string" || !/^[\x20-\x7e]+$/.test(value)) {
      throw new TypeError(
        `Cannot get a token as the token provider returned a non-string or non-ASCII value: current value is ${
          describe(value)
        }`,
      );
    }
    return value;
  }
}

class RestTransport implements Transport {
  #options: ResolvedOptions;
  /** Every request's base headers: `options.headers` with a default `Accept`. */
  #headers: Readonly<Record<string, string>>;
  #closed = false;
  #closing = new AbortController();
  #inflight = new Set<Promise<unknown>>();
  /** The health check's definitive answer, once there is one. */
  #batchSupported: boolean | undefined;
  /** The last `Date` header parsed, and its value. */
  #date: { value: string | null; ms: number | undefined } = {
    value: null,
    ms: undefined,
  };
  /** The health check under way, shared by concurrent calls. */
  #health: Promise<boolean> | undefined;

  constructor(options: ResolvedOptions) {
    this.#options = options;
    // Entries, not assignments: a header named `__proto__` stays a header.
    this.#headers = {
      accept: "application/json",
      ...Object.fromEntries(options.headers),
    };
  }

  async pull(
    request: PullRequest,
    options: TransportCallOptions = {},
  ): Promise<PullPage> {
    const kind = isJsonLikeObject(request) && typeof request.kind === "string"
      ? shorten(request.kind)
      : "";
    const action = `pull '${kind}'`;
    return await this.#run(action, options.signal, async (call) => {
      checkPullRequest(request);
      const outcome = await this.#send(call, action, {
        method: "GET",
        url: this.#pullUrl(action, request),
      }, (received) => this.#readPage(action, request, received));
      if ("type" in outcome) throw outcome.error;
      return outcome;
    });
  }

  async push(
    ops: readonly PushOp[],
    options: TransportCallOptions = {},
  ): Promise<PushResult[]> {
    const count = Array.isArray(ops) ? ops.length : 0;
    const action = `push ${count} ops`;
    return await this.#run(action, options.signal, async (call) => {
      checkPushOps(ops);
      const results: PushResult[] = new Array(ops.length);
      // An op that breaks the contract's limits is refused here, alone: it
      // could not be encoded, or the server would refuse it anyway.
      const sendable: number[] = [];
      for (const [index, op] of ops.entries()) {
        const error = opProblem(op);
        if (error === null) sendable.push(index);
        else results[index] = { type: "rejected", error, body: null };
      }
      if (sendable.length === 0) return results;
      if (await this.#useBatch(call)) {
        await this.#pushBatches(call, ops, sendable, results);
      } else {
        await this.#pushEach(call, ops, sendable, results);
      }
      return results;
    });
  }

  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#closing.abort(
        new ClosedError("Cannot continue the request as the transport closed"),
      );
    }
    await Promise.allSettled([...this.#inflight]);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * Runs one call: rejects after close, links the caller's signal, and turns
   * what an abort left behind into the caller's reason or a `ClosedError`.
   */
  async #run<T>(
    action: string,
    signal: AbortSignal | undefined,
    body: (call: Call) => Promise<T>,
  ): Promise<T> {
    if (this.#closed) {
      throw new ClosedError(`Cannot ${action} as the transport is closed`);
    }
    signal?.throwIfAborted();
    const abort = new AbortController();
    const signals = [this.#closing.signal, abort.signal];
    if (signal !== undefined) signals.push(signal);
    const callSignal = AbortSignal.any(signals);
    const call: Call = {
      signal: callSignal,
      requests: new RequestSignals(callSignal, this.#options.timeoutMs),
      abort,
      auth: new TokenSession(this.#options.token),
      stop: null,
    };
    const task = body(call);
    this.#inflight.add(task);
    try {
      return await task;
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      if (this.#closed) {
        throw new ClosedError(`Cannot ${action} as the transport was closed`);
      }
      throw error;
    } finally {
      // Every request of the call has ended: the call's body awaits them.
      call.requests.close();
      this.#inflight.delete(task);
    }
  }

  /**
   * The URL of a pull page.
   *
   * @throws {ValidationError} When the kind or the cursor cannot travel in a
   * URL (the engine moves its cursor past a bad id with `cursorIdAfter`, so
   * a valid cursor is the normal case).
   */
  #pullUrl(action: string, request: PullRequest): string {
    const problem = kindProblem(request.kind);
    if (problem !== null) {
      throw invalid(action, {
        field: "kind",
        problem,
        value: request.kind,
      });
    }
    const { afterId } = request;
    // A query carries `.` and `..` (only a path segment drops them).
    if (afterId !== null && !isDotSegment(afterId)) {
      const problem = idProblem(afterId);
      if (problem !== null) {
        throw invalid(action, {
          field: "afterId",
          problem,
          value: afterId,
        });
      }
    }
    for (const field of ["updatedSince", "pageToken"] as const) {
      const value = request[field];
      if (value !== null && !value.isWellFormed()) {
        throw invalid(action, {
          field,
          problem: "it has a lone surrogate",
          value,
        });
      }
      // Past a few KiB a URL is refused by servers and proxies alike.
      if (value !== null && value.length > MAX_QUERY_VALUE_LENGTH) {
        throw invalid(action, {
          field,
          problem:
            `it is longer than ${MAX_QUERY_VALUE_LENGTH} characters (${value.length})`,
          value,
        });
      }
    }
    const query: string[] = [];
    if (request.updatedSince !== null) {
      query.push(`updatedSince=${encodeURIComponent(request.updatedSince)}`);
    }
    if (afterId !== null) query.push(`afterId=${encodeURIComponent(afterId)}`);
    query.push(`limit=${request.limit}`, "includeDeleted=true");
    if (request.pageToken !== null) {
      query.push(`pageToken=${encodeURIComponent(request.pageToken)}`);
    }
    return `${this.#options.base}/${encodeURIComponent(request.kind)}?${
      query.join("&")
    }`;
  }

  /** A pull's answer: the page, a damaged body, or a thrown refusal. */
  #readPage(
    action: string,
    request: PullRequest,
    received: Received,
  ): PullPage | ParseError {
    const { status, text } = received;
    if (status === 410) {
      throw new ResyncRequiredError(
        `Cannot ${action} as the cursor is older than the server's tombstone retention: current value is ${
          describe(request.updatedSince)
        }`,
      );
    }
    if (!isSuccess(status)) throw rejection(action, status, bodyOf(text));
    const page = parsePullPage(action, received);
    if (page instanceof ParseError) return page;
    const serverDate = this.#dateOf(received.headers);
    return serverDate === undefined ? page : { ...page, serverDate };
  }

  /**
   * Sends one request until it gets an answer to act on: retries network
   * errors, timeouts, damaged answers, 408, 429 and 5xx; refreshes the token
   * once on a 401.
   *
   * @param interpret Makes the caller's value of a final answer.
   * @returns That value, or how the request gave up or was refused.
   * @throws {AuthError} On a 401 after the refresh (or without a provider).
   */
  async #send<T>(
    call: Call,
    action: string,
    request: Outgoing,
    interpret: Interpret<T>,
  ): Promise<T | GaveUp | Refused> {
    const options = this.#options;
    let attempt = 1;
    while (true) {
      const generation = call.auth.generation;
      const token = await call.auth.token();
      const outcome = await this.#attempt(
        call.requests,
        action,
        request,
        token,
      );
      if (outcome.type === "retry" || outcome.type === "refused") {
        return outcome;
      }
      let error: SyncError;
      let retryAfterMs: number | null = null;
      if (outcome.type === "response") {
        const { status } = outcome;
        if (status === 401) {
          if (!call.auth.hasProvider || generation > 0) {
            throw new AuthError(
              `Cannot ${action} as the server refused the credentials: current value is ${status}`,
              { status },
            );
          }
          // The retry after a refresh is not one of the `attempts`: it is
          // bounded by the single refresh instead.
          await call.auth.refresh(generation);
          continue;
        }
        if (isRetryableStatus(status)) {
          retryAfterMs = retryAfterOf(outcome.headers, options.now());
          const code = codeOf(bodyOf(outcome.text));
          error = new ServerError(
            `Cannot ${action} as the server answered with a retryable status: current value is ${status}`,
            {
              status,
              ...(code === undefined ? {} : { code }),
              ...(retryAfterMs === null ? {} : { retryAfterMs }),
            },
          );
        } else {
          const value = interpret(outcome);
          // A damaged answer is a lost one: the same request (same
          // idempotency key) may bring a whole one.
          if (!(value instanceof ParseError)) return value;
          error = value;
        }
      } else {
        error = outcome.error;
      }
      if (
        attempt >= options.attempts ||
        (retryAfterMs !== null && retryAfterMs > options.maxDelayMs)
      ) {
        return { type: "retry", error, retryAfterMs };
      }
      const wait = retryAfterMs ?? backoffDelay(attempt, {
        baseMs: options.baseDelayMs,
        maxMs: options.maxDelayMs,
        random: options.random,
      });
      attempt++;
      await options.sleep(wait, call.signal);
      call.signal.throwIfAborted();
    }
  }

  /**
   * Sends a request once, follows its same-origin redirects, and reads its
   * body up to `maxResponseBytes`, all under the timeout.
   *
   * @returns The response; a network failure (retried); a redirect not
   * followed (given up at once); a body over the cap (refused).
   * @throws The signal's reason when the call's signal aborts.
   */
  async #attempt(
    requests: RequestSignals,
    action: string,
    request: Outgoing,
    token: string | null,
  ): Promise<
    Received | { type: "failed"; error: NetworkError } | GaveUp | Refused
  > {
    const options = this.#options;
    // A record, not a `Headers`: fetch copies either, and a record is the
    // cheaper copy.
    const headers: Record<string, string> = request.headers === undefined
      ? { ...this.#headers }
      : { ...this.#headers, ...request.headers };
    if (token !== null) headers.authorization = `Bearer ${token}`;
    const signal = requests.signal;
    const cohort = options.timeoutMs === Infinity ? null : requests.start();
    const init: RequestInit = {
      method: request.method,
      headers,
      signal: cohort === null ? signal : cohort.controller.signal,
      // fetch would follow a redirect anywhere with every header (custom
      // ones such as `x-api-key` included): redirects are followed below,
      // to the base URL's origin only.
      redirect: "manual",
    };
    if (request.body !== undefined) init.body = request.body;
    let stage = "the request failed";
    try {
      let url = request.url;
      let response = await options.fetch(url, init);
      for (let hops = 0; isRedirect(response); hops++) {
        await response.body?.cancel();
        const next = redirectTarget(response, {
          from: url,
          method: request.method,
          origin: options.origin,
          hops,
        });
        if (typeof next !== "string") {
          return {
            type: "retry",
            error: new ServerError(
              `Cannot ${action} as ${next.problem}: current value is ${
                describe(next.value)
              }`,
              { status: response.status, code: "redirect", retryable: false },
            ),
            retryAfterMs: null,
          };
        }
        url = next;
        response = await options.fetch(url, init);
      }
      stage = "the response body could not be read";
      const bytes = await readBody(response, options.maxResponseBytes);
      if (!(bytes instanceof Uint8Array)) {
        return {
          type: "refused",
          error: new ParseError(
            `Cannot ${action} as the response is larger than 'maxResponseBytes' allows (raise the option to read it): current value is ${bytes.size} bytes`,
            { status: response.status },
          ),
        };
      }
      return {
        type: "response",
        status: response.status,
        headers: response.headers,
        ...decodeUtf8(bytes),
      };
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      const message = cohort?.timedOut
        ? `Cannot ${action} as the request timed out: current value is ${options.timeoutMs} ms`
        : `Cannot ${action} as ${stage}: current value is ${describe(error)}`;
      return {
        type: "failed",
        error: new NetworkError(message, { cause: error }),
      };
    } finally {
      if (cohort !== null) requests.finish(cohort);
    }
  }

  /**
   * The server's clock from a response's `Date` header (ms), if it sent a
   * valid one. The header changes once a second, so the last one parsed is
   * kept.
   */
  #dateOf(headers: Headers): number | undefined {
    const value = headers.get("date");
    if (value !== this.#date.value) {
      this.#date = { value, ms: parseDate(value) };
    }
    return this.#date.ms;
  }

  async #useBatch(call: Call): Promise<boolean> {
    const mode = this.#options.batch;
    if (mode !== "auto") return mode;
    if (this.#batchSupported !== undefined) return this.#batchSupported;
    this.#health ??= this.#checkHealth(call.auth).finally(() => {
      this.#health = undefined;
    });
    return await raceSignal(this.#health, call.signal);
  }

  /**
   * Asks `GET {base}/health` once, without retries: a failure means no batch
   * for now, and the next call asks again. Never rejects.
   */
  async #checkHealth(auth: TokenSession): Promise<boolean> {
    const requests = new RequestSignals(
      this.#closing.signal,
      this.#options.timeoutMs,
    );
    try {
      const outcome = await this.#attempt(
        requests,
        "check the server's health",
        { method: "GET", url: `${this.#options.base}/health` },
        await auth.token(),
      );
      if (outcome.type !== "response" || !isSuccess(outcome.status)) {
        return false;
      }
      const body = bodyOf(outcome.text);
      if (!isJsonObject(body)) return false;
      this.#batchSupported = body.batch === true;
      return this.#batchSupported;
    } catch {
      return false;
    } finally {
      requests.close();
    }
  }

  /**
   * Sends the given ops one request each, up to `concurrency` at once;
   * results land at their op's index, so order never depends on timing.
   */
  async #pushEach(
    call: Call,
    ops: readonly PushOp[],
    indices: readonly number[],
    results: PushResult[],
  ): Promise<void> {
    let next = 0;
    let failure: { error: unknown } | null = null;
    const worker = async (): Promise<void> => {
      while (next < indices.length && failure === null) {
        const index = indices[next++]!;
        if (call.stop !== null) {
          results[index] = call.stop;
          continue;
        }
        try {
          const result = await this.#pushOne(call, ops[index]!);
          if (result.type === "retry" && stopsCall(result)) {
            call.stop ??= result;
          }
          results[index] = result;
        } catch (error) {
          // Only whole-call failures throw (AuthError, abort, close): stop
          // the other requests of the call too.
          failure ??= { error };
          call.abort.abort(error);
        }
      }
    };
    const workers = Math.min(this.#options.concurrency, indices.length);
    await Promise.all(Array.from({ length: workers }, worker));
    if (failure !== null) throw (failure as { error: unknown }).error;
  }

  async #pushOne(call: Call, op: PushOp): Promise<PushResult> {
    const action = actionOf(op);
    if (isDotSegment(op.id)) {
      const error = invalid(action, {
        field: "id",
        problem:
          "it is a dot segment, which a URL path cannot carry and only POST /batch can",
        value: op.id,
      });
      return { type: "rejected", error, body: null };
    }
    const headers: Record<string, string> = { "idempotency-key": op.key };
    let body: string | undefined;
    if (op.type === "upsert") {
      body = serializeUpsert(op);
      if (body === undefined) {
        const error = invalid(action, {
          field: "payload",
          problem: "it cannot be serialized as JSON",
          value: op.payload,
        });
        return { type: "rejected", error, body: null };
      }
      headers["content-type"] = "application/json";
      if (op.force) headers["x-force-update"] = "true";
    } else if (op.force) {
      headers["x-force-delete"] = "true";
    }
    const outcome = await this.#send(call, action, {
      method: op.type === "upsert" ? "PUT" : "DELETE",
      url: this.#recordUrl(op),
      headers,
      ...(body === undefined ? {} : { body }),
    }, (received) => this.#readWrite(action, op, received));
    if (outcome.type === "refused") {
      return { type: "rejected", error: outcome.error, body: null };
    }
    return outcome;
  }

  /** The URL of one op's record; only for an op with a valid, non-dot id. */
  #recordUrl(op: PushOp): string {
    const url = `${this.#options.base}/${encodeURIComponent(op.kind)}/${
      encodeURIComponent(op.id)
    }`;
    if (op.type === "delete" && op.baseUpdatedAt !== null && !op.force) {
      return `${url}?_baseUpdatedAt=${encodeURIComponent(op.baseUpdatedAt)}`;
    }
    return url;
  }

  /** A single write's answer: its result, or a damaged body. */
  #readWrite(
    action: string,
    op: PushOp,
    received: Received,
  ): PushResult | ParseError {
    const { status, text } = received;
    const serverDate = this.#dateOf(received.headers);
    // A 2xx means the write was applied, and a 409 carries the record to
    // resolve against: a body that cannot be the contract's (a proxy's or
    // captive portal's page, a cut-off body) is damaged. Re-sending with
    // the same Idempotency-Key is safe: the server answers from its
    // idempotency store without applying the write again.
    if ((isSuccess(status) || status === 409) && text.trim() !== "") {
      const body = parseJson(text);
      if (received.malformed || body === undefined) {
        return damaged(action, {
          status,
          problem: `the response is not ${
            received.malformed ? "UTF-8" : "JSON"
          }`,
          value: text,
        });
      }
      return toPushResult(action, op, { status, body, serverDate });
    }
    return toPushResult(action, op, { status, body: bodyOf(text), serverDate });
  }

  /** Sends the ops in chunks of `batchSize`, one chunk after the other. */
  async #pushBatches(
    call: Call,
    ops: readonly PushOp[],
    indices: readonly number[],
    results: PushResult[],
  ): Promise<void> {
    const size = this.#options.batchSize;
    for (let start = 0; start < indices.length; start += size) {
      const chunk = indices.slice(start, start + size);
      if (call.stop !== null) {
        for (const index of chunk) results[index] = call.stop;
        continue;
      }
      await this.#pushChunk(call, ops, chunk, results);
    }
  }

  async #pushChunk(
    call: Call,
    ops: readonly PushOp[],
    indices: readonly number[],
    results: PushResult[],
  ): Promise<void> {
    const chunk = indices.map((index) => ops[index]!);
    const action = `push a batch of ${chunk.length} ops`;
    let body: string;
    try {
      body = JSON.stringify({ ops: chunk.map(toWireOp) });
    } catch {
      // One payload cannot be serialized: one by one, it alone is refused.
      await this.#pushEach(call, ops, indices, results);
      return;
    }
    const outcome = await this.#send(
      call,
      action,
      {
        method: "POST",
        url: `${this.#options.base}/batch`,
        headers: { "content-type": "application/json" },
        body,
      },
      (received) =>
        isSuccess(received.status)
          ? parseBatchResults(action, received, chunk)
          : { type: "refused" as const },
    );
    if (outcome.type === "retry") {
      if (stopsCall(outcome)) call.stop ??= outcome;
      for (const index of indices) results[index] = outcome;
      return;
    }
    if (outcome.type === "refused") {
      // A refused batch applied nothing (contract), so sending its ops one
      // by one is safe: 413 is the case the contract names; any other
      // refusal (404/405 from a server without batch support, 400/403/422)
      // is better reported per op than by quarantining every op at once.
      // An answer over `maxResponseBytes` lands here too: one by one, each
      // op's answer is smaller, and its idempotency key makes the server
      // answer from its store without applying the op again.
      await this.#pushEach(call, ops, indices, results);
      return;
    }
    const serverDate = this.#dateOf(outcome.headers);
    outcome.results.forEach((result, position) => {
      const op = chunk[position]!;
      if (!(result instanceof ParseError) && result.status === 401) {
        throw new AuthError(
          `Cannot ${
            actionOf(op)
          } as the server refused the credentials: current value is 401`,
          { status: 401 },
        );
      }
      const value = result instanceof ParseError
        ? result
        : toPushResult(actionOf(op), op, { ...result, serverDate });
      // One damaged result is that op's alone: the others were answered.
      results[indices[position]!] = value instanceof ParseError
        ? { type: "retry", error: value, retryAfterMs: null }
        : value;
    });
  }
}

/** A batch answer whose shape holds: one result (or damage) per op. */
interface BatchAnswer {
  readonly type: "results";
  readonly headers: Headers;
  readonly results: readonly (BatchResult | ParseError)[];
}

/** One result of a batch response: its status and body (record or error). */
interface BatchResult {
  readonly status: number;
  readonly body: JsonValue | null;
}

/**
 * Whether a given-up request stops the rest of its call. A damaged answer
 * does not: the server answers, so the other ops are worth sending.
 */
function stopsCall(result: GaveUp): boolean {
  return !(result.error instanceof ParseError);
}

function toWireOp(op: PushOp): JsonObject {
  const wire: JsonObject = {
    opId: op.key,
    kind: op.kind,
    id: op.id,
    type: op.type,
  };
  if (op.type === "upsert" && op.payload !== null) wire.payload = op.payload;
  if (op.baseUpdatedAt !== null && !op.force) {
    wire.baseUpdatedAt = op.baseUpdatedAt;
  }
  if (op.force) wire.force = true;
  return wire;
}

/** An upsert's PUT body, or `undefined` when it cannot be serialized. */
function serializeUpsert(op: PushOp): string | undefined {
  const payload = op.payload!;
  const base = op.baseUpdatedAt !== null && !op.force ? op.baseUpdatedAt : null;
  try {
    // The common create: the payload is the body, no copy needed.
    if (base === null && !Object.hasOwn(payload, "_baseUpdatedAt")) {
      return JSON.stringify(payload);
    }
    const record: JsonObject = { ...payload };
    delete record._baseUpdatedAt;
    if (base !== null) record._baseUpdatedAt = base;
    return JSON.stringify(record);
  } catch {
    return undefined;
  }
}

/**
 * Validates a batch response and orders its results like `chunk` (matched by
 * `opId`, one result per op). A broken shape damages the whole answer; a
 * broken result (status, record, conflict) damages only its op.
 */
function parseBatchResults(
  action: string,
  received: Received,
  chunk: readonly PushOp[],
): BatchAnswer | ParseError {
  const { status, text } = received;
  function fail(problem: string, value: unknown): ParseError {
    return damaged(action, { status, problem, value });
  }
  if (received.malformed) return fail("the response is not UTF-8", text);
  const body = parseJson(text);
  if (body === undefined) return fail("the response is not JSON", text);
  if (!isJsonObject(body)) return fail("the response is not an object", body);
  const list = body.results;
  if (!Array.isArray(list)) return fail("'results' is not an array", list);
  if (list.length !== chunk.length) {
    return fail(
      `'results' does not hold one result per op (${chunk.length})`,
      list.length,
    );
  }
  const positions = new Map<string, number>();
  chunk.forEach((op, position) => positions.set(op.key, position));
  const ordered: (BatchResult | ParseError | undefined)[] = new Array(
    chunk.length,
  );
  for (const [i, result] of list.entries()) {
    if (!isJsonObject(result)) {
      return fail(`result ${i} is not an object`, result);
    }
    const position = typeof result.opId === "string"
      ? positions.get(result.opId)
      : undefined;
    if (position === undefined) {
      return fail(`result ${i} has an unknown 'opId'`, result.opId);
    }
    if (ordered[position] !== undefined) {
      return fail(`result ${i} repeats an 'opId'`, result.opId);
    }
    const code = result.status;
    // A batch result carries a final status: no 1xx, no redirect.
    if (
      typeof code !== "number" || !Number.isInteger(code) || code < 200 ||
      code > 599 || (code >= 300 && code < 400)
    ) {
      ordered[position] = damaged(actionOf(chunk[position]!), {
        status,
        problem: "its batch result has no valid 'status'",
        value: code,
      });
      continue;
    }
    const body = isSuccess(code) ? result.record : result.error;
    ordered[position] = { status: code, body: body ?? null };
  }
  return {
    type: "results",
    headers: received.headers,
    results: ordered as (BatchResult | ParseError)[],
  };
}

/** What one write's answer says: status, body, the server's clock. */
interface WriteAnswer {
  readonly status: number;
  readonly body: JsonValue | null;
  readonly serverDate: number | undefined;
}

/**
 * Maps a final status (not 401) and its body to the op's outcome, or to a
 * retryable `ParseError` when the body cannot be what that status carries:
 * a 2xx record or a 409 `current` that is not an object.
 */
function toPushResult(
  action: string,
  op: PushOp,
  answer: WriteAnswer,
): PushResult | ParseError {
  const { status, body, serverDate } = answer;
  const date = serverDate === undefined ? {} : { serverDate };
  if (isSuccess(status)) {
    if (body !== null && !isJsonObject(body)) {
      return damaged(action, {
        status,
        problem: "the record is not an object",
        value: body,
      });
    }
    return { type: "ok", status, record: body, ...date };
  }
  if (status === 404 && op.type === "delete") {
    return { type: "ok", status, record: null, ...date };
  }
  if (status === 409) return toConflict(action, answer);
  if (isRetryableStatus(status)) {
    const code = codeOf(body);
    return {
      type: "retry",
      error: new ServerError(
        `Cannot ${action} as the server answered with a retryable status: current value is ${status}`,
        { status, ...(code === undefined ? {} : { code }) },
      ),
      retryAfterMs: null,
    };
  }
  return { type: "rejected", error: rejection(action, status, body), body };
}

/**
 * A 409's conflict. An empty body is a conflict without the server's record
 * (the engine then relies on a pull); a body whose record or timestamp is
 * of the wrong type is damaged, never a conflict against nothing.
 */
function toConflict(
  action: string,
  answer: WriteAnswer,
): PushResult | ParseError {
  const { status, body, serverDate } = answer;
  const date = serverDate === undefined ? {} : { serverDate };
  if (body === null) {
    return { type: "conflict", current: null, serverTimestamp: null, ...date };
  }
  if (!isJsonObject(body)) {
    return damaged(action, {
      status,
      problem: "the conflict is not an object",
      value: body,
    });
  }
  const current = body.current ?? body.serverData ?? null;
  if (current !== null && !isJsonObject(current)) {
    return damaged(action, {
      status,
      problem: "'current' is not an object",
      value: current,
    });
  }
  let serverTimestamp = body.serverTimestamp ?? null;
  if (serverTimestamp !== null && typeof serverTimestamp !== "string") {
    return damaged(action, {
      status,
      problem: "'serverTimestamp' is not a string",
      value: serverTimestamp,
    });
  }
  if (serverTimestamp === null && current !== null) {
    // The record's own fields are the engine's to check.
    const own = current.updated_at ?? current.updatedAt;
    if (typeof own === "string") serverTimestamp = own;
  }
  return { type: "conflict", current, serverTimestamp, ...date };
}

/** A damaged answer: retryable, like a lost response. */
function damaged(
  action: string,
  found: Problem & { readonly status: number },
): ParseError {
  const { status, problem, value } = found;
  return new ParseError(
    `Cannot ${action} as ${problem}: current value is ${describe(value)}`,
    { status, retryable: true },
  );
}

function rejection(
  action: string,
  status: number,
  body: JsonValue | null,
): RejectedError {
  const code = codeOf(body);
  const detail = isJsonObject(body) && typeof body.message === "string"
    ? body.message
    : code ?? body;
  return new RejectedError(
    `Cannot ${action} as the server rejected it with status ${status}: current value is ${
      describe(detail)
    }`,
    {
      status,
      ...(code === undefined ? {} : { code }),
      ...(body === null ? {} : { body }),
    },
  );
}

/**
 * Parses a pull page. Its items travel raw: checking each one is the
 * engine's job (clause 25), which skips a bad item rather than the page.
 */
function parsePullPage(
  action: string,
  received: Received,
): PullPage | ParseError {
  const { status, text } = received;
  function fail(problem: string, value: unknown): ParseError {
    return damaged(action, { status, problem, value });
  }
  if (received.malformed) return fail("the response is not UTF-8", text);
  const body = parseJson(text);
  if (body === undefined) return fail("the response is not JSON", text);
  if (!isJsonObject(body)) return fail("the response is not an object", body);
  const { items, nextPageToken } = body;
  if (!Array.isArray(items)) return fail("'items' is not an array", items);
  if (
    nextPageToken !== undefined && nextPageToken !== null &&
    typeof nextPageToken !== "string"
  ) {
    return fail("'nextPageToken' is not a string or null", nextPageToken);
  }
  return { items, nextPageToken: nextPageToken ?? null };
}

function checkPullRequest(request: PullRequest): void {
  function fail(field: string, problem: string, value: unknown): never {
    throw new TypeError(
      `Cannot pull as '${field}' ${problem}: current value is ${
        describe(value)
      }`,
    );
  }
  if (!isJsonLikeObject(request)) fail("request", "is not an object", request);
  if (typeof request.kind !== "string" || request.kind === "") {
    fail("kind", "is not a non-empty string", request.kind);
  }
  for (const field of ["updatedSince", "afterId", "pageToken"] as const) {
    const value = request[field];
    if (value !== null && typeof value !== "string") {
      fail(field, "is not a string or null", value);
    }
  }
  if (!Number.isSafeInteger(request.limit) || request.limit < 1) {
    throw new RangeError(
      `Cannot pull as 'limit' is not a positive integer: current value is ${
        describe(request.limit)
      }`,
    );
  }
}

/**
 * The fields of a {@linkcode PushOp} that must be non-empty strings. Its
 * kind and id are checked per op instead ({@linkcode opProblem}).
 */
const OP_STRING_FIELDS = ["opId", "key"] as const;

function checkPushOps(ops: readonly PushOp[]): void {
  function fail(index: number, problem: string, value: unknown): never {
    throw new TypeError(
      `Cannot push op ${index} as ${problem}: current value is ${
        describe(value)
      }`,
    );
  }
  if (!Array.isArray(ops)) {
    throw new TypeError(
      `Cannot push ops as they are not an array: current value is ${
        describe(ops)
      }`,
    );
  }
  const keys = new Set<string>();
  for (const [index, op] of ops.entries()) {
    if (typeof op !== "object" || op === null) {
      fail(index, "it is not an object", op);
    }
    for (const field of OP_STRING_FIELDS) {
      if (typeof op[field] !== "string" || op[field] === "") {
        fail(index, `'${field}' is not a non-empty string`, op[field]);
      }
    }
    // The key travels as a header, which only carries visible ASCII (a
    // ULID, or a ULID with a suffix, always does).
    if (!/^[\x21-\x7e]+$/.test(op.key)) {
      fail(index, "'key' is not visible ASCII", op.key);
    }
    if (op.type !== "upsert" && op.type !== "delete") {
      fail(index, '\'type\' is not "upsert" or "delete"', op.type);
    }
    if (op.type === "upsert" && !isJsonObject(op.payload)) {
      fail(index, "an upsert's 'payload' is not an object", op.payload);
    }
    if (op.baseUpdatedAt !== null && typeof op.baseUpdatedAt !== "string") {
      fail(index, "'baseUpdatedAt' is not a string or null", op.baseUpdatedAt);
    }
    if (typeof op.force !== "boolean") {
      fail(index, "'force' is not a boolean", op.force);
    }
    // Two ops with one key would be one write to the server (or a 422
    // idempotency mismatch), and batch results are matched by key.
    if (keys.has(op.key)) fail(index, "its 'key' repeats another op's", op.key);
    keys.add(op.key);
  }
}

/**
 * Why an op cannot be sent, if it cannot: an id or kind that breaks the
 * contract's limits (CONTRACT.md §Limits), a base that no URL can carry, a
 * payload nested too deep to serialize safely. Ids `.` and `..` pass here:
 * they travel in a batch, and only a single request refuses them.
 */
function opProblem(op: PushOp): ValidationError | null {
  const action = actionOf(op);
  const kind = kindProblem(op.kind);
  if (kind !== null) {
    return invalid(action, { field: "kind", problem: kind, value: op.kind });
  }
  const id = isDotSegment(op.id) ? null : idProblem(op.id);
  if (id !== null) {
    return invalid(action, { field: "id", problem: id, value: op.id });
  }
  if (op.baseUpdatedAt !== null && !op.baseUpdatedAt.isWellFormed()) {
    return invalid(action, {
      field: "baseUpdatedAt",
      problem: "it has a lone surrogate",
      value: op.baseUpdatedAt,
    });
  }
  if (op.type === "upsert" && exceedsDepth(op.payload, WIRE_LIMITS.maxDepth)) {
    return invalid(action, {
      field: "payload",
      problem: `it nests deeper than ${WIRE_LIMITS.maxDepth} levels`,
      value: op.payload,
    });
  }
  return null;
}

/** What is wrong, and with which value. */
interface Problem {
  /** What is wrong: a sentence fragment. */
  readonly problem: string;
  /** The current value. */
  readonly value: unknown;
}

/** A request field the contract's limits refuse. */
function invalid(
  action: string,
  found: Problem & { readonly field: string },
): ValidationError {
  const { field, problem, value } = found;
  return new ValidationError(
    `Cannot ${action} as '${field}' is invalid (${problem}): current value is ${
      describe(value)
    }`,
    [{ message: problem, path: [field] }],
  );
}

/** The action of an op's messages, with its kind and id cut short. */
function actionOf(op: PushOp): string {
  return `push the ${op.type} of '${shorten(op.kind)}/${shorten(op.id)}'`;
}

/** A value for a message: a string cut at 64 code units, else described. */
function shorten(value: unknown): string {
  if (typeof value !== "string") return describe(value);
  if (value.length <= 64) return value;
  // Not in the middle of a surrogate pair.
  const end = /[\ud800-\udbff]/.test(value[63]!) ? 63 : 64;
  return `${value.slice(0, end)}…`;
}

function isDotSegment(id: unknown): boolean {
  return id === "." || id === "..";
}

function isRedirect(response: Response): boolean {
  const { status } = response;
  // A browser hides a manual redirect behind an opaque response.
  return response.type === "opaqueredirect" || status === 301 ||
    status === 302 || status === 303 || status === 307 || status === 308;
}

/** Where a redirect comes from, and how far the request has come. */
interface RedirectContext {
  readonly from: string;
  readonly method: Outgoing["method"];
  /** The base URL's origin. */
  readonly origin: string;
  /** The redirects already followed. */
  readonly hops: number;
}

/**
 * Where a redirect may be followed: a URL on the base URL's origin (the
 * credentials go nowhere else), reached with the same method and body
 * (301, 302 and 303 make a write a GET, so only a read follows them), within
 * {@linkcode MAX_REDIRECTS} hops. Otherwise why not.
 */
function redirectTarget(
  response: Response,
  context: RedirectContext,
): string | { problem: string; value: unknown } {
  const { status } = response;
  const location = response.headers.get("location");
  const target = location === null ? null : URL.parse(location, context.from);
  if (target === null) {
    return {
      problem: "the server redirected it without a valid Location",
      value: location,
    };
  }
  if (target.origin !== context.origin) {
    return {
      problem: "the server redirected it to another origin",
      value: target.origin,
    };
  }
  if (context.method !== "GET" && status !== 307 && status !== 308) {
    return {
      problem:
        `the server redirected a ${context.method} with a status that turns it into a GET`,
      value: status,
    };
  }
  if (context.hops >= MAX_REDIRECTS) {
    return {
      problem: `the server redirected it more than ${MAX_REDIRECTS} times`,
      value: target.href,
    };
  }
  return target.href;
}

/**
 * Reads a body up to `cap` bytes: past that (or when its `Content-Length`
 * says so) the rest is cancelled, never buffered.
 *
 * @returns The bytes, or the size that passed the cap.
 */
async function readBody(
  response: Response,
  cap: number,
): Promise<Uint8Array | { size: string }> {
  const declared = response.headers.get("content-length");
  const length = declared === null ? NaN : Number(declared);
  if (length > cap) {
    await response.body?.cancel();
    return { size: shorten(declared) };
  }
  // HTTP framing holds an identity body to its Content-Length, and the
  // native read is several times faster than a reader loop. A compressed
  // body is not held to it: fetch decodes it, and Content-Length is the
  // compressed size (10 KB of gzip can be 10 GB of text).
  const encoding = response.headers.get("content-encoding");
  if (
    Number.isSafeInteger(length) &&
    (encoding === null || encoding.trim().toLowerCase() === "identity")
  ) {
    return await response.bytes();
  }
  const body = response.body;
  if (body === null) return new Uint8Array(0);
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  while (true) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > cap) {
      await reader.cancel();
      return { size: `at least ${size}` };
    }
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0]!;
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return bytes;
}

const UTF8 = new TextDecoder("utf-8", { fatal: true });
const UTF8_LENIENT = new TextDecoder("utf-8");

/**
 * Decodes a body as UTF-8 (a leading BOM dropped, as `Response.text()`
 * does). Invalid bytes are flagged, not silently replaced: a record with
 * U+FFFD in place of its text would be stored as if it were the server's.
 */
function decodeUtf8(bytes: Uint8Array): { text: string; malformed: boolean } {
  try {
    return { text: UTF8.decode(bytes), malformed: false };
  } catch {
    return { text: UTF8_LENIENT.decode(bytes), malformed: true };
  }
}

/**
 * A response's `Retry-After` in ms, at most `MAX_RETRY_AFTER_MS` (one
 * hour), or `null` when absent or unreadable.
 */
function retryAfterOf(headers: Headers, now: number): number | null {
  return parseRetryAfter(headers.get("retry-after"), now);
}

function raceSignal<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    function onAbort(): void {
      reject(signal.reason);
    }
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (error) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}

function isSuccess(status: number): boolean {
  return status >= 200 && status < 300;
}

function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || (status >= 500 && status < 600);
}

function isJsonLikeObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function codeOf(body: JsonValue | null): string | undefined {
  return isJsonObject(body) && typeof body.error === "string"
    ? body.error
    : undefined;
}

/** Parses JSON; `undefined` when the text is not JSON. */
function parseJson(text: string): JsonValue | undefined {
  try {
    return JSON.parse(text) as JsonValue;
  } catch {
    return undefined;
  }
}

/** An error body: its JSON, else its text, else `null` when empty. */
function bodyOf(text: string): JsonValue | null {
  if (text.trim() === "") return null;
  return parseJson(text) ?? text;
}

function parseDate(value: string | null): number | undefined {
  if (value === null) return undefined;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? undefined : ms;
}

function preview(text: string): string {
  return JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}…` : text);
}

function describe(value: unknown): string {
  if (typeof value === "string") return preview(value);
  if (value instanceof Error) return preview(`${value.name}: ${value.message}`);
  if (typeof value === "function") return `[function ${value.name}]`;
  try {
    const text = JSON.stringify(value);
    if (text === undefined) return String(value);
    return text.length > 80 ? `${text.slice(0, 80)}…` : text;
  } catch {
    return String(value);
  }
}
