/**
 * The REST transport's live hints (CONTRACT.md §Live hint): one
 * `GET {base}/live` read with `fetch` (so the token and the extra headers
 * go with it, unlike `EventSource`), its `text/event-stream` parsed by
 * {@linkcode SseParser} and each `change` event checked before it becomes a
 * {@linkcode LiveHint}. What is wrong in the stream is reported and skipped;
 * what is wrong with the request ends the iteration with a typed error.
 *
 * @module
 */

import { describe } from "../src/describe.ts";
import { parseRetryAfter } from "../src/backoff.ts";
import {
  AuthError,
  NetworkError,
  ParseError,
  ServerError,
  type SyncError,
} from "../src/errors.ts";
import { isJsonObject } from "../src/json.ts";
import { kindProblem } from "../src/limits.ts";
import type { LiveHint } from "../src/transport.ts";
import type { ResolvedOptions } from "./_rest_options.ts";
import { TokenSession } from "./_rest_session.ts";
import { SseParser } from "./_rest_sse.ts";
import { isRetryableStatus } from "./_rest_wire.ts";

/** The most kinds one hint keeps (the reference server sends at most 256). */
export const MAX_HINT_KINDS = 256;

/** The code of the error that says a backend has no live hints. */
export const LIVE_UNSUPPORTED = "live_unsupported";

/** What one stream needs besides the options. */
export interface LiveRead {
  /** Ends the stream; the iteration then finishes quietly. */
  readonly signal: AbortSignal;
  /** Told of what the stream held that was skipped. */
  readonly onProblem: ((error: SyncError) => void) | undefined;
}

const ACTION = "read live hints";

/**
 * Opens `GET {base}/live` and yields its hints: `{ kinds: [] }` once the
 * server accepted the stream, then one per `change` event.
 *
 * @param options The transport's options.
 * @param read The signal and where problems go.
 * @returns The hints, until the server ends the stream or the signal aborts.
 * @throws {ServerError} Code `"live_unsupported"` (404, 405, 501, or a 200
 * that is not an event stream); retryable with `retryAfterMs` for 408, 429
 * and 5xx; not retryable for other statuses and redirects.
 * @throws {AuthError} On a 401 after one token refresh.
 * @throws {NetworkError} When the request fails, the stream breaks, or it
 * stays silent past `liveIdleMs`.
 */
export async function* readLive(
  options: ResolvedOptions,
  read: LiveRead,
): AsyncGenerator<LiveHint> {
  const { signal } = read;
  const auth = new TokenSession(options.token);
  let response: Response | null = null;
  const controller = new AbortController();
  const cancel = (): void => controller.abort(signal.reason);
  signal.addEventListener("abort", cancel, { once: true });
  if (signal.aborted) cancel();
  try {
    while (response === null) {
      const generation = auth.generation;
      const token = await auth.token();
      const got = await request(options, token, controller);
      if (got === null) return; // aborted by the caller
      if (got.status !== 401) {
        response = got;
        break;
      }
      await got.body?.cancel();
      if (!auth.hasProvider || generation > 0) {
        throw new AuthError(
          `Cannot ${ACTION} as the server refused the credentials: current value is 401`,
          { status: 401 },
        );
      }
      await auth.refresh(generation);
    }
    const refusal = refusalOf(response, options.now());
    if (refusal !== null) {
      await response.body?.cancel().catch(() => {});
      throw refusal;
    }
    yield { kinds: [] };
    const body = response.body;
    if (body === null) return;
    yield* hintsOf(body, options.liveIdleMs, controller, read);
  } finally {
    signal.removeEventListener("abort", cancel);
    controller.abort();
  }
}

/**
 * Sends the request; a failure is a `NetworkError`, the caller's abort
 * `null`. The response's headers must come within `timeoutMs`.
 */
async function request(
  options: ResolvedOptions,
  token: string | null,
  controller: AbortController,
): Promise<Response | null> {
  const headers: Record<string, string> = {
    ...options.headers,
    accept: "text/event-stream",
  };
  if (token !== null) headers.authorization = `Bearer ${token}`;
  const timer = options.timeoutMs === Infinity
    ? undefined
    : setTimeout(() => controller.abort(TIMED_OUT), options.timeoutMs);
  try {
    return await options.fetch(`${options.base}/live`, {
      method: "GET",
      headers,
      signal: controller.signal,
      // The credentials go to the base URL's origin only: a redirect ends
      // the stream (see refusalOf).
      redirect: "manual",
    });
  } catch (error) {
    if (controller.signal.aborted && controller.signal.reason !== TIMED_OUT) {
      return null;
    }
    const message = controller.signal.reason === TIMED_OUT
      ? `Cannot ${ACTION} as the request timed out: current value is ${options.timeoutMs} ms`
      : `Cannot ${ACTION} as the request failed: current value is ${
        describe(error)
      }`;
    throw new NetworkError(message, { cause: error });
  } finally {
    clearTimeout(timer);
  }
}

const TIMED_OUT = Symbol("timed out");
const IDLE = Symbol("idle");

/** The error a response that opens no stream ends the iteration with. */
function refusalOf(response: Response, now: number): SyncError | null {
  const { status } = response;
  const type = response.headers.get("content-type") ?? "";
  if (status === 200 && /^text\/event-stream\b/i.test(type.trim())) return null;
  if (status === 404 || status === 405 || status === 501 || status === 200) {
    return new ServerError(
      `Cannot ${ACTION} as the server has no live hints: current value is ${
        status === 200 ? `200 ${describe(type)}` : status
      }`,
      { status, code: LIVE_UNSUPPORTED, retryable: false },
    );
  }
  if (isRetryableStatus(status)) {
    const retryAfterMs = parseRetryAfter(
      response.headers.get("retry-after"),
      now,
    );
    return new ServerError(
      `Cannot ${ACTION} as the server answered with a retryable status: current value is ${status}`,
      { status, ...(retryAfterMs === null ? {} : { retryAfterMs }) },
    );
  }
  return new ServerError(
    `Cannot ${ACTION} as the server answered with a status that opens no stream: current value is ${status}`,
    { status, retryable: false },
  );
}

/** Reads the body's events into hints, under the idle timeout. */
async function* hintsOf(
  body: ReadableStream<Uint8Array>,
  idleMs: number,
  controller: AbortController,
  read: LiveRead,
): AsyncGenerator<LiveHint> {
  const report = (problem: string, value: unknown): void => {
    try {
      read.onProblem?.(
        new ParseError(
          `Cannot ${ACTION} as ${problem}: current value is ${describe(value)}`,
          { code: "live_hint" },
        ),
      );
    } catch {
      // A failing reporter must not end the stream.
    }
  };
  const parser = new SseParser((problem) => report(problem, "(skipped)"));
  const decoder = new TextDecoder("utf-8");
  const reader = body.getReader();
  const onAbort = (): void => {
    reader.cancel().catch(() => {});
  };
  controller.signal.addEventListener("abort", onAbort, { once: true });
  try {
    while (true) {
      const timer = idleMs === Infinity
        ? undefined
        : setTimeout(() => controller.abort(IDLE), idleMs);
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (error) {
        if (controller.signal.aborted && controller.signal.reason !== IDLE) {
          return;
        }
        throw broken(error);
      } finally {
        clearTimeout(timer);
      }
      if (controller.signal.reason === IDLE) {
        throw new NetworkError(
          `Cannot ${ACTION} as the stream stayed silent too long: current value is ${idleMs} ms`,
        );
      }
      if (controller.signal.aborted) return;
      if (chunk.done) return;
      // Invalid UTF-8 becomes U+FFFD, which no kind may contain: the
      // checks below skip it.
      const text = decoder.decode(chunk.value, { stream: true });
      for (const event of parser.push(text)) {
        if (event.type !== "change") continue;
        const hint = hintOf(event.data, report);
        if (hint !== null) yield hint;
      }
    }
  } finally {
    controller.signal.removeEventListener("abort", onAbort);
    reader.cancel().catch(() => {});
  }
}

function broken(error: unknown): NetworkError {
  return new NetworkError(
    `Cannot ${ACTION} as the stream broke: current value is ${describe(error)}`,
    { cause: error },
  );
}

/**
 * The hint of one `change` event's data, or `null` (reported) when it names
 * no valid kind. Kinds the limits refuse are dropped one by one.
 */
function hintOf(
  data: string,
  report: (problem: string, value: unknown) => void,
): LiveHint | null {
  let value: unknown;
  try {
    value = JSON.parse(data);
  } catch {
    report("an event's data is not JSON", cut(data));
    return null;
  }
  const kinds = isJsonObject(value) ? value.kinds : undefined;
  if (!Array.isArray(kinds)) {
    report("an event has no 'kinds' array", cut(data));
    return null;
  }
  const valid = new Set<string>();
  for (const kind of kinds) {
    const problem = kindProblem(kind);
    if (problem !== null) {
      report(`an event names an invalid kind, ${problem}`, kind);
      continue;
    }
    if (valid.size >= MAX_HINT_KINDS) {
      report(`an event names more than ${MAX_HINT_KINDS} kinds`, kinds.length);
      break;
    }
    valid.add(kind as string);
  }
  return valid.size === 0 ? null : { kinds: [...valid] };
}

/** A value for a message: at most 64 characters of text. */
function cut(text: string): string {
  return text.length <= 64 ? text : `${text.slice(0, 64)}…`;
}
