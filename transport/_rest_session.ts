/**
 * The session of one pull or push call ({@linkcode Call}): its token,
 * fetched once and refreshed at most once on a 401 ({@linkcode TokenSession}),
 * and {@linkcode send}, which retries what may pass later (network errors,
 * timeouts, damaged answers, 408, 429, 5xx) with capped exponential backoff
 * and full jitter, honouring a `Retry-After` up to `maxDelayMs`.
 *
 * @module
 */

import { describe } from "../src/describe.ts";
import { backoffDelay, parseRetryAfter } from "../src/backoff.ts";
import {
  AuthError,
  ParseError,
  ServerError,
  type SyncError,
} from "../src/errors.ts";
import {
  fetchOnce,
  type GaveUp,
  type Outgoing,
  type Received,
  type Refused,
} from "./_rest_fetch.ts";
import type { ResolvedOptions, RestTokenProvider } from "./_rest_options.ts";
import type { RequestSignals } from "./_rest_signals.ts";
import {
  bodyOf,
  codeOf,
  isRetryableStatus,
  type ServerDates,
} from "./_rest_wire.ts";

/** The state one pull or push call shares between its requests. */
export interface Call {
  /** What the call does, for messages: `pull 'todos'`, `push 3 ops`. */
  readonly action: string;
  /** The transport's options. */
  readonly options: ResolvedOptions;
  /** The server's clock, shared by the transport's calls. */
  readonly dates: ServerDates;
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
 * Makes the caller's value of a final answer (not 401, not retryable), or
 * returns a `ParseError` for a damaged one, which is then re-sent like a
 * lost response. Throws for what fails the whole call.
 */
export type Interpret<T> = (received: Received) => T | ParseError;

/** One request to send until it gets an answer to act on. */
export interface Exchange<T> {
  /** What the request does, for messages: `push the upsert of 'todos/a'`. */
  readonly action: string;
  /** The request, sent again as it is on a retry. */
  readonly request: Outgoing;
  /** Makes the caller's value of a final answer. */
  readonly interpret: Interpret<T>;
}

/**
 * Sends one request until it gets an answer to act on: retries network
 * errors, timeouts, damaged answers, 408, 429 and 5xx; refreshes the token
 * once on a 401.
 *
 * @returns The exchange's value of the final answer, or how the request
 * gave up or was refused.
 * @throws {AuthError} On a 401 after the refresh (or without a provider).
 */
export async function send<T>(
  call: Call,
  exchange: Exchange<T>,
): Promise<T | GaveUp | Refused> {
  const { options, auth } = call;
  const { action, request, interpret } = exchange;
  let attempt = 1;
  while (true) {
    const generation = auth.generation;
    const token = await auth.token();
    const outcome = await fetchOnce(options, {
      action,
      request,
      token,
      requests: call.requests,
    });
    if (outcome.type === "retry" || outcome.type === "refused") {
      return outcome;
    }
    let error: SyncError;
    let retryAfterMs: number | null = null;
    if (outcome.type === "response") {
      const { status } = outcome;
      if (status === 401) {
        if (!auth.hasProvider || generation > 0) {
          throw new AuthError(
            `Cannot ${action} as the server refused the credentials: current value is ${status}`,
            { status },
          );
        }
        // The retry after a refresh is not one of the `attempts`: it is
        // bounded by the single refresh instead.
        await auth.refresh(generation);
        continue;
      }
      if (isRetryableStatus(status)) {
        // At most one hour (`MAX_RETRY_AFTER_MS`), whatever the server sent.
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
 * Whether a given-up request stops the rest of its call. A damaged answer
 * does not: the server answers, so the other ops are worth sending.
 */
export function stopsCall(result: GaveUp): boolean {
  return !(result.error instanceof ParseError);
}

/**
 * One call's view of the token: fetched once, refreshed at most once and
 * shared by the call's parallel requests, so two requests refused together
 * cause one refresh.
 */
export class TokenSession {
  #provider: RestTokenProvider | undefined;
  #generation = 0;
  #token: Promise<string | null> | null = null;

  /** A session asking `provider`, or sending no token without one. */
  constructor(provider: RestTokenProvider | undefined) {
    this.#provider = provider;
  }

  /** 0 for the first token, 1 once refreshed. */
  get generation(): number {
    return this.#generation;
  }

  /** Whether there is a provider to ask for a fresh token. */
  get hasProvider(): boolean {
    return this.#provider !== undefined;
  }

  /** The current token (asked once), or `null` to send none. */
  token(): Promise<string | null> {
    this.#token ??= this.#ask(false);
    return this.#token;
  }

  /**
   * Asks for a fresh token, unless a request refused together with this
   * one already did: `from` is the generation that request was sent with.
   */
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
