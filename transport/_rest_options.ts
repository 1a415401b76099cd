/**
 * The options of the REST transport: {@linkcode RestTransportOptions} as
 * callers write them (re-exported by `rest.ts`), and
 * {@linkcode resolveOptions}, which checks them and resolves the defaults
 * once, at construction.
 *
 * @module
 */

import { describe } from "../src/describe.ts";
import { delay, MAX_TIMER_MS } from "../src/backoff.ts";
import { isJsonObject } from "../src/json.ts";
import { WIRE_LIMITS } from "../src/limits.ts";

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
   * How long a live stream (`GET {base}/live`) may stay silent, in ms,
   * before it is taken for dead and ends with a retryable `NetworkError`
   * (the engine then reconnects). The contract's server pings at least
   * every 25 s. `Infinity` disables it.
   *
   * @default {60_000}
   */
  liveIdleMs?: number;
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

/** The options with every default resolved, checked once. */
export interface ResolvedOptions {
  /** The base URL, without a trailing slash. */
  readonly base: string;
  /** The base URL's origin: the only one credentials are sent to. */
  readonly origin: string;
  /** See {@linkcode RestTransportOptions.maxResponseBytes}. */
  readonly maxResponseBytes: number;
  /** See {@linkcode RestTransportOptions.fetch}. */
  readonly fetch: typeof fetch;
  /** See {@linkcode RestTransportOptions.token}. */
  readonly token: RestTokenProvider | undefined;
  /**
   * Every request's base headers: `headers` with a default `Accept`. A
   * record, not a `Headers`: fetch copies either, and a record is the
   * cheaper copy.
   */
  readonly headers: Readonly<Record<string, string>>;
  /** See {@linkcode RestTransportOptions.timeoutMs}. */
  readonly timeoutMs: number;
  /** See {@linkcode RestTransportOptions.liveIdleMs}. */
  readonly liveIdleMs: number;
  /** See {@linkcode RestRetryOptions.attempts}. */
  readonly attempts: number;
  /** See {@linkcode RestRetryOptions.baseDelayMs}. */
  readonly baseDelayMs: number;
  /** See {@linkcode RestRetryOptions.maxDelayMs}. */
  readonly maxDelayMs: number;
  /** See {@linkcode RestTransportOptions.batch}. */
  readonly batch: boolean | "auto";
  /** See {@linkcode RestTransportOptions.batchSize}. */
  readonly batchSize: number;
  /** See {@linkcode RestTransportOptions.concurrency}. */
  readonly concurrency: number;
  /** See {@linkcode RestTransportOptions.random}. */
  readonly random: () => number;
  /** See {@linkcode RestTransportOptions.sleep}. */
  readonly sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** See {@linkcode RestTransportOptions.now}. */
  readonly now: () => number;
}

/** The default of `maxResponseBytes`: 32 MiB. */
const DEFAULT_MAX_RESPONSE_BYTES = 33_554_432;

/** What a number option must be, and what it is when absent. */
interface NumberRule {
  /** The default. */
  readonly fallback: number;
  /** Whether a number is in range. */
  readonly check: (value: number) => boolean;
  /** What is wrong with a number out of range: a sentence fragment. */
  readonly problem: string;
}

const POSITIVE_INTEGER = {
  check: isPositiveInteger,
  problem: "is not a positive integer",
} as const;

const DELAY = {
  check: isDelay,
  problem: "is not a delay between 0 and 2^31-1 ms",
} as const;

/**
 * Checks the options and resolves their defaults.
 *
 * @throws {TypeError} When an option has the wrong type or `baseUrl` is not
 * an `http:`/`https:` URL without query or fragment.
 * @throws {RangeError} When a number option is out of range.
 */
export function resolveOptions(options: RestTransportOptions): ResolvedOptions {
  if (!isJsonObject(options)) {
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
  const headers = resolveHeaders(options.headers);
  const batch = options.batch ?? "auto";
  if (batch !== true && batch !== false && batch !== "auto") {
    throw new TypeError(
      optionError("batch", 'is not true, false or "auto"', batch),
    );
  }
  const baseDelayMs = resolveNumber("retry.baseDelayMs", retry.baseDelayMs, {
    fallback: 250,
    ...DELAY,
  });
  const maxDelayMs = resolveNumber("retry.maxDelayMs", retry.maxDelayMs, {
    fallback: 30_000,
    ...DELAY,
  });
  const token = resolveFunction("token", options.token);
  const base = resolveBase(options.baseUrl);
  return {
    base,
    origin: new URL(base).origin,
    maxResponseBytes: resolveNumber(
      "maxResponseBytes",
      options.maxResponseBytes,
      { fallback: DEFAULT_MAX_RESPONSE_BYTES, ...POSITIVE_INTEGER },
    ),
    // Called as a plain function, not as `globalThis.fetch`: browsers throw
    // "Illegal invocation" when `fetch` runs with another `this`. Looked up
    // per call, so a `fetch` patched later is the one used.
    fetch: resolveFunction("fetch", options.fetch) ??
      ((input, init) => globalThis.fetch(input, init)),
    token,
    headers,
    timeoutMs: resolveNumber("timeoutMs", options.timeoutMs, {
      fallback: 30_000,
      check: (value) =>
        value === Infinity ||
        (Number.isFinite(value) && value > 0 && value <= MAX_TIMER_MS),
      problem: "is not a positive number of ms up to 2^31-1 or Infinity",
    }),
    liveIdleMs: resolveNumber("liveIdleMs", options.liveIdleMs, {
      fallback: 60_000,
      check: (value) =>
        value === Infinity ||
        (Number.isFinite(value) && value > 0 && value <= MAX_TIMER_MS),
      problem: "is not a positive number of ms up to 2^31-1 or Infinity",
    }),
    attempts: resolveNumber("retry.attempts", retry.attempts, {
      fallback: 4,
      ...POSITIVE_INTEGER,
    }),
    baseDelayMs,
    maxDelayMs,
    batch,
    batchSize: resolveNumber("batchSize", options.batchSize, {
      fallback: 100,
      check: (value) =>
        isPositiveInteger(value) && value <= WIRE_LIMITS.maxBatchOps,
      problem: `is not an integer from 1 to ${WIRE_LIMITS.maxBatchOps}`,
    }),
    concurrency: resolveNumber("concurrency", options.concurrency, {
      fallback: 4,
      ...POSITIVE_INTEGER,
    }),
    random: resolveFunction("random", options.random) ?? Math.random,
    sleep: resolveFunction("sleep", options.sleep) ?? delay,
    now: resolveFunction("now", options.now) ?? Date.now,
  };
}

function optionError(name: string, problem: string, value: unknown): string {
  return `Cannot create REST transport as '${name}' ${problem}: current value is ${
    describe(value)
  }`;
}

/** The function given, or `undefined` when none is. */
function resolveFunction<T>(name: string, value: T | undefined): T | undefined {
  if (value !== undefined && typeof value !== "function") {
    throw new TypeError(optionError(name, "is not a function", value));
  }
  return value;
}

function resolveNumber(
  name: string,
  value: number | undefined,
  rule: NumberRule,
): number {
  if (value === undefined) return rule.fallback;
  if (typeof value !== "number") {
    throw new TypeError(optionError(name, "is not a number", value));
  }
  if (!rule.check(value)) {
    throw new RangeError(optionError(name, rule.problem, value));
  }
  return value;
}

function isPositiveInteger(value: number): boolean {
  return Number.isSafeInteger(value) && value >= 1;
}

function isDelay(value: number): boolean {
  return Number.isFinite(value) && value >= 0 && value <= MAX_TIMER_MS;
}

/** The extra headers as a record, with a default `Accept`. */
function resolveHeaders(
  value: HeadersInit | undefined,
): Readonly<Record<string, string>> {
  let headers: Headers;
  try {
    headers = new Headers(value);
  } catch (error) {
    throw new TypeError(
      optionError("headers", "is not valid", String(error)),
      { cause: error },
    );
  }
  // Entries, not assignments: a header named `__proto__` stays a header.
  return { accept: "application/json", ...Object.fromEntries(headers) };
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
