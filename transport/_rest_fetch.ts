/**
 * One HTTP exchange of the REST transport, sent once: the base headers and
 * the token, the request's timeout, the redirects it may follow (the
 * credentials go to the base URL's origin only), and its body read up to
 * `maxResponseBytes`, decoded as UTF-8.
 *
 * @module
 */

import { describe } from "../src/describe.ts";
import { decodeUtf8 } from "../src/_utf8.ts";
import {
  NetworkError,
  ParseError,
  ServerError,
  type SyncError,
} from "../src/errors.ts";
import { cannot, type Problem, shorten } from "./_rest_messages.ts";
import type { ResolvedOptions } from "./_rest_options.ts";
import type { RequestSignals } from "./_rest_signals.ts";

/** One HTTP request to send (possibly several times). */
export interface Outgoing {
  /** The HTTP method. */
  readonly method: "GET" | "PUT" | "DELETE" | "POST";
  /** The absolute URL, its path segments percent-encoded. */
  readonly url: string;
  /** The request's own headers, over the base headers. */
  readonly headers?: Record<string, string>;
  /** The body, JSON text. */
  readonly body?: string;
}

/** A response, with its body read in full (up to `maxResponseBytes`). */
export interface Received {
  /** Discriminates the outcome. */
  readonly type: "response";
  /** The HTTP status. */
  readonly status: number;
  /** The response headers. */
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
export interface GaveUp {
  /** Discriminates the outcome: the op stays queued. */
  readonly type: "retry";
  /** What the last try met. */
  readonly error: SyncError;
  /** The server's `Retry-After` in ms, if it sent one. */
  readonly retryAfterMs: number | null;
}

/** A request whose answer cannot be taken, and would not be if re-sent. */
export interface Refused {
  /** Discriminates the outcome. */
  readonly type: "refused";
  /** Why the answer cannot be taken. */
  readonly error: SyncError;
}

/** A request that failed on the way (network, timeout): retried. */
export interface Failed {
  /** Discriminates the outcome. */
  readonly type: "failed";
  /** The network failure or the timeout. */
  readonly error: NetworkError;
}

/** What one send of a request needs besides the options. */
export interface Attempt {
  /** What the call does, for messages: `pull 'todos'`. */
  readonly action: string;
  /** The request to send. */
  readonly request: Outgoing;
  /** The bearer token, or `null` to send none. */
  readonly token: string | null;
  /** The signals and timeouts of the call's requests. */
  readonly requests: RequestSignals;
}

/** The most same-origin redirects one request follows in a row. */
const MAX_REDIRECTS = 5;

/**
 * Sends a request once, follows its same-origin redirects, and reads its
 * body up to `maxResponseBytes`, all under the timeout.
 *
 * @returns The response; a network failure (retried); a redirect not
 * followed (given up at once); a body over the cap (refused).
 * @throws The signal's reason when the call's signal aborts.
 */
export async function fetchOnce(
  options: ResolvedOptions,
  attempt: Attempt,
): Promise<Received | Failed | GaveUp | Refused> {
  const { action, request, token, requests } = attempt;
  const headers: Record<string, string> = request.headers === undefined
    ? { ...options.headers }
    : { ...options.headers, ...request.headers };
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
          error: new ServerError(cannot(action, next), {
            status: response.status,
            code: "redirect",
            retryable: false,
          }),
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
): string | Problem {
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
