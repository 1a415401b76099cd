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

import { backoffDelay, delay, parseRetryAfter } from "../src/_backoff.ts";
import {
  AuthError,
  ClosedError,
  NetworkError,
  ParseError,
  RejectedError,
  ResyncRequiredError,
  ServerError,
  type SyncError,
} from "../src/errors.ts";
import { isJsonObject, type JsonObject, type JsonValue } from "../src/json.ts";
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
   * waited for: the call reports it (`retryAfterMs`) instead.
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
   * The `fetch` to send requests with.
   *
   * @default {globalThis.fetch}
   */
  fetch?: typeof fetch;
  /**
   * Provides the bearer token. Called once per call with
   * `{ refresh: false }`, and once with `{ refresh: true }` after a 401, after
   * which the refused request is retried once; a second 401 rejects the whole
   * call with `AuthError`. Without a provider a 401 is an `AuthError` at once.
   *
   * @default {undefined}
   */
  token?: RestTokenProvider;
  /**
   * Extra headers sent with every request. The transport's own headers
   * (`Authorization` when a token is provided, `Idempotency-Key`,
   * `Content-Type`, the force headers) take precedence.
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
   * several batches, one after the other.
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

const MAX_TIMER_MS = 2_147_483_647;

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
  return {
    base: resolveBase(options.baseUrl),
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
      isPositiveInteger,
      "is not a positive integer",
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

/** A response, with its body read in full. */
interface Received {
  readonly type: "response";
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
}

/** A request that kept failing in a way that may pass later. */
interface GaveUp {
  readonly type: "retry";
  readonly error: SyncError;
  readonly retryAfterMs: number | null;
}

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
      ? request.kind
      : "";
    const action = `pull '${kind}'`;
    return await this.#run(action, options.signal, async (call) => {
      checkPullRequest(request);
      const outcome = await this.#send(call, action, {
        method: "GET",
        url: this.#pullUrl(request),
      });
      if (outcome.type === "retry") throw outcome.error;
      const { status, text } = outcome;
      if (status === 410) {
        throw new ResyncRequiredError(
          `Cannot ${action} as the cursor is older than the server's tombstone retention: current value is ${
            describe(request.updatedSince)
          }`,
        );
      }
      if (!isSuccess(status)) throw rejection(action, status, bodyOf(text));
      const page = parsePullPage(action, status, text);
      const serverDate = this.#dateOf(outcome.headers);
      return serverDate === undefined ? page : { ...page, serverDate };
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
      if (ops.length === 0) return results;
      if (await this.#useBatch(call)) {
        await this.#pushBatches(call, ops, results);
      } else {
        await this.#pushEach(call, ops, ops.map((_, index) => index), results);
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

  #pullUrl(request: PullRequest): string {
    const query: string[] = [];
    if (request.updatedSince !== null) {
      query.push(`updatedSince=${encodeURIComponent(request.updatedSince)}`);
    }
    if (request.afterId !== null) {
      query.push(`afterId=${encodeURIComponent(request.afterId)}`);
    }
    query.push(`limit=${request.limit}`, "includeDeleted=true");
    if (request.pageToken !== null) {
      query.push(`pageToken=${encodeURIComponent(request.pageToken)}`);
    }
    return `${this.#options.base}/${encodeURIComponent(request.kind)}?${
      query.join("&")
    }`;
  }

  #recordUrl(op: PushOp): string {
    const url = `${this.#options.base}/${encodeURIComponent(op.kind)}/${
      encodeURIComponent(op.id)
    }`;
    if (op.type === "delete" && op.baseUpdatedAt !== null && !op.force) {
      return `${url}?_baseUpdatedAt=${encodeURIComponent(op.baseUpdatedAt)}`;
    }
    return url;
  }

  /**
   * Sends one request until it gets an answer to act on: retries network
   * errors, timeouts, unreadable bodies, 408, 429 and 5xx; refreshes the
   * token once on a 401.
   *
   * @returns The final response, or how the request gave up.
   * @throws {AuthError} On a 401 after the refresh (or without a provider).
   */
  async #send(call: Call, action: string, request: Outgoing): Promise<
    Received | GaveUp
  > {
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
        if (!isRetryableStatus(status)) return outcome;
        retryAfterMs = parseRetryAfter(
          outcome.headers.get("retry-after"),
          options.now(),
        );
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
   * Sends a request once and reads its body in full, under the timeout.
   *
   * @throws The signal's reason when the call's signal aborts.
   */
  async #attempt(
    requests: RequestSignals,
    action: string,
    request: Outgoing,
    token: string | null,
  ): Promise<Received | { type: "failed"; error: NetworkError }> {
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
    };
    if (request.body !== undefined) init.body = request.body;
    let stage = "the request failed";
    try {
      const response = await options.fetch(request.url, init);
      stage = "the response body could not be read";
      const text = await response.text();
      return {
        type: "response",
        status: response.status,
        headers: response.headers,
        text,
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
          if (result.type === "retry") call.stop ??= result;
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
    const action = `push the ${op.type} of '${op.kind}/${op.id}'`;
    const headers: Record<string, string> = { "idempotency-key": op.key };
    let body: string | undefined;
    if (op.type === "upsert") {
      const payload = op.payload!;
      const base = op.baseUpdatedAt !== null && !op.force
        ? op.baseUpdatedAt
        : null;
      if (base === null && !Object.hasOwn(payload, "_baseUpdatedAt")) {
        // The common create: the payload is the body, no copy needed.
        body = JSON.stringify(payload);
      } else {
        const record: JsonObject = { ...payload };
        delete record._baseUpdatedAt;
        if (base !== null) record._baseUpdatedAt = base;
        body = JSON.stringify(record);
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
    });
    if (outcome.type === "retry") return outcome;
    const { status, text } = outcome;
    const serverDate = this.#dateOf(outcome.headers);
    if (isSuccess(status) && text.trim() !== "") {
      const parsed = parseJson(text);
      if (parsed === undefined) {
        // A 2xx means the write was applied, but this body cannot be the
        // contract's record (a proxy's or captive portal's page, a cut-off
        // body). Re-sending with the same Idempotency-Key is safe: the
        // server answers from its idempotency store without applying the
        // write again, and a real backend's answer replaces this one.
        return {
          type: "retry",
          error: new ParseError(
            `Cannot ${action} as the response is not JSON: current value is ${
              preview(text)
            }`,
            { status },
          ),
          retryAfterMs: null,
        };
      }
      return toPushResult(action, op, status, parsed, serverDate);
    }
    return toPushResult(action, op, status, bodyOf(text), serverDate);
  }

  /** Sends the ops in chunks of `batchSize`, one chunk after the other. */
  async #pushBatches(
    call: Call,
    ops: readonly PushOp[],
    results: PushResult[],
  ): Promise<void> {
    const size = this.#options.batchSize;
    for (let start = 0; start < ops.length; start += size) {
      const indices: number[] = [];
      for (let i = start; i < Math.min(ops.length, start + size); i++) {
        indices.push(i);
      }
      if (call.stop !== null) {
        for (const index of indices) results[index] = call.stop;
        continue;
      }
      await this.#pushChunk(call, ops, indices, results);
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
    const outcome = await this.#send(call, action, {
      method: "POST",
      url: `${this.#options.base}/batch`,
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ops: chunk.map(toWireOp) }),
    });
    if (outcome.type === "retry") {
      call.stop ??= outcome;
      for (const index of indices) results[index] = outcome;
      return;
    }
    if (!isSuccess(outcome.status)) {
      // A refused batch applied nothing (contract), so sending its ops one
      // by one is safe: 413 is the case the contract names; any other
      // refusal (404/405 from a server without batch support, 400/403/422)
      // is better reported per op than by quarantining every op at once.
      await this.#pushEach(call, ops, indices, results);
      return;
    }
    const parsed = parseBatchResults(
      action,
      outcome.status,
      outcome.text,
      chunk,
    );
    if (parsed instanceof ParseError) {
      // Safe to re-send: every op carries its idempotency key.
      for (const index of indices) {
        results[index] = { type: "retry", error: parsed, retryAfterMs: null };
      }
      return;
    }
    const serverDate = this.#dateOf(outcome.headers);
    parsed.forEach((result, position) => {
      const op = chunk[position]!;
      const opAction = `push the ${op.type} of '${op.kind}/${op.id}'`;
      if (result.status === 401) {
        throw new AuthError(
          `Cannot ${opAction} as the server refused the credentials: current value is 401`,
          { status: 401 },
        );
      }
      const body = isSuccess(result.status)
        ? result.record ?? null
        : result.error ?? null;
      results[indices[position]!] = toPushResult(
        opAction,
        op,
        result.status,
        body,
        serverDate,
      );
    });
  }
}

/** One result of a batch response, validated. */
interface BatchResult {
  readonly status: number;
  readonly record?: JsonObject | null;
  readonly error?: JsonObject | null;
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

/**
 * Validates a batch response and orders its results like `chunk` (matched by
 * `opId`, one result per op).
 */
function parseBatchResults(
  action: string,
  status: number,
  text: string,
  chunk: readonly PushOp[],
): BatchResult[] | ParseError {
  function fail(problem: string, value: unknown): ParseError {
    return new ParseError(
      `Cannot ${action} as ${problem}: current value is ${describe(value)}`,
      { status },
    );
  }
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
  const ordered: (BatchResult | undefined)[] = new Array(chunk.length);
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
    if (
      typeof code !== "number" || !Number.isInteger(code) || code < 100 ||
      code > 599
    ) {
      return fail(`result ${i} has no valid 'status'`, code);
    }
    const { record, error } = result;
    if (record !== undefined && record !== null && !isJsonObject(record)) {
      return fail(`result ${i} has a 'record' that is not an object`, record);
    }
    if (error !== undefined && error !== null && !isJsonObject(error)) {
      return fail(`result ${i} has an 'error' that is not an object`, error);
    }
    ordered[position] = {
      status: code,
      ...(record === undefined ? {} : { record }),
      ...(error === undefined ? {} : { error }),
    };
  }
  return ordered as BatchResult[];
}

/** Maps a final status (not 401) and its body to the op's outcome. */
function toPushResult(
  action: string,
  op: PushOp,
  status: number,
  body: JsonValue | null,
  serverDate: number | undefined,
): PushResult {
  const date = serverDate === undefined ? {} : { serverDate };
  if (isSuccess(status)) {
    return {
      type: "ok",
      status,
      record: isJsonObject(body) ? body : null,
      ...date,
    };
  }
  if (status === 404 && op.type === "delete") {
    return { type: "ok", status, record: null, ...date };
  }
  if (status === 409) {
    const current = isJsonObject(body)
      ? pickObject(body.current) ?? pickObject(body.serverData)
      : null;
    let serverTimestamp: string | null = null;
    if (isJsonObject(body) && typeof body.serverTimestamp === "string") {
      serverTimestamp = body.serverTimestamp;
    } else if (current !== null) {
      const stamp = current.updated_at ?? current.updatedAt;
      if (typeof stamp === "string") serverTimestamp = stamp;
    }
    return { type: "conflict", current, serverTimestamp, ...date };
  }
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

function parsePullPage(action: string, status: number, text: string): PullPage {
  function fail(problem: string, value: unknown): ParseError {
    return new ParseError(
      `Cannot ${action} as ${problem}: current value is ${describe(value)}`,
      { status },
    );
  }
  const body = parseJson(text);
  if (body === undefined) throw fail("the response is not JSON", text);
  if (!isJsonObject(body)) throw fail("the response is not an object", body);
  const { items, nextPageToken } = body;
  if (!Array.isArray(items)) throw fail("'items' is not an array", items);
  for (const [i, item] of items.entries()) {
    // The record's own fields (id, timestamp, tombstone) are checked by the
    // engine, which knows each table's field names.
    if (!isJsonObject(item)) throw fail(`item ${i} is not an object`, item);
  }
  if (
    nextPageToken !== undefined && nextPageToken !== null &&
    typeof nextPageToken !== "string"
  ) {
    throw fail("'nextPageToken' is not a string or null", nextPageToken);
  }
  return {
    items: items as JsonObject[],
    nextPageToken: nextPageToken ?? null,
  };
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

/** The fields of a {@linkcode PushOp} that must be non-empty strings. */
const OP_STRING_FIELDS = ["opId", "key", "kind", "id"] as const;

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

function pickObject(value: JsonValue | undefined): JsonObject | null {
  return isJsonObject(value) ? value : null;
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
