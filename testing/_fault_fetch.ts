/**
 * The fault layer: a `fetch` for one client's REST transport that sits in
 * front of the backend and, driven by the client's own seeded stream,
 * loses requests and answers, duplicates, delays and reorders them, answers
 * `5xx`, `429`/`503` with `Retry-After`, expires the client's token, cuts
 * or garbles bodies and refuses connections for stretches. It reports the
 * server's real answers to the {@linkcode Ledger} before it damages them.
 * Private.
 *
 * @module
 */

import type { Ledger } from "./_ledger.ts";
import type { Prng } from "./_prng.ts";
import type { FaultRates, FaultType } from "./_types.ts";

/** The backend as the fault layer calls it. */
export type Target = (request: Request) => Promise<Response>;

/** One client's link to the backend, through the fault layer. */
export interface FaultLink {
  /** The `fetch` to give the client's transport. */
  readonly fetch: typeof fetch;
  /** The token provider to give the client's transport. */
  readonly token: (context: { refresh: boolean }) => string;
  /** HTTP requests the client made. */
  readonly requests: () => number;
}

/** What a fault link shares with the run. */
export interface FaultLinkOptions {
  /** The client's fault stream. */
  readonly random: Prng;
  /** The rates. */
  readonly rates: FaultRates;
  /** Whether faults are injected now (off while healing). */
  readonly enabled: () => boolean;
  /** The backend, or `null` while it is down (connection refused). */
  readonly target: () => Target | null;
  /** The run's ledger. */
  readonly ledger: Ledger;
  /** Counts one injected fault. */
  readonly count: (type: FaultType) => void;
}

function refused(what: string): TypeError {
  return new TypeError(`error sending request: ${what}`);
}

function synthetic(status: number, retryAfter: number | null): Response {
  const headers: Record<string, string> = {
    "content-type": "application/json",
  };
  if (retryAfter !== null) headers["retry-after"] = String(retryAfter);
  return new Response(
    JSON.stringify({ error: "injected", message: `Injected ${status}` }),
    { status, headers },
  );
}

function delay(
  ms: number,
  signal: AbortSignal | null | undefined,
): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    function onAbort(): void {
      clearTimeout(timer);
      reject(signal?.reason);
    }
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Makes one client's link to the backend.
 *
 * @param options The client's stream, the rates and the run's shared parts.
 * @returns The link.
 */
export function createFaultLink(options: FaultLinkOptions): FaultLink {
  const { random, rates, ledger, count } = options;
  let requests = 0;
  let offlineLeft = 0;
  let tokenGiven = 0;
  let tokenValid = 0;

  async function send(target: Target, request: Request, body: string | null) {
    const response = await target(request);
    const text = await response.text();
    ledger.observe(request, body, response.status, text);
    return { status: response.status, headers: response.headers, text };
  }

  async function faultyFetch(
    input: string | URL | Request,
    init?: RequestInit,
  ): Promise<Response> {
    requests++;
    const request = new Request(input, init);
    const body = request.body === null ? null : await request.clone().text();
    const target = options.target();
    if (target === null) throw refused("connection refused (server down)");
    const on = options.enabled();
    if (on) {
      if (offlineLeft > 0) {
        offlineLeft--;
        throw refused("connection refused (offline)");
      }
      if (random.chance(rates.offline)) {
        count("offline");
        offlineLeft = random.int(2, 11);
        throw refused("connection refused (offline)");
      }
    }
    // The token check stands for the server's: an expired token is refused
    // until the client refreshes it, faults or not.
    if (request.headers.get("authorization") !== `Bearer t${tokenValid}`) {
      return synthetic(401, null);
    }
    if (on) {
      if (random.chance(rates.expireToken)) {
        count("expireToken");
        tokenValid++;
        return synthetic(401, null);
      }
      if (random.chance(rates.dropRequest)) {
        count("dropRequest");
        throw refused("connection reset before the request was sent");
      }
      if (random.chance(rates.rateLimit)) {
        count("rateLimit");
        return synthetic(429, random.int(1, 2));
      }
      if (random.chance(rates.unavailable)) {
        count("unavailable");
        return synthetic(503, random.int(1, 2));
      }
      if (random.chance(rates.serverError / 2)) {
        count("serverError");
        return synthetic(random.chance(0.5) ? 500 : 502, null);
      }
      if (random.chance(rates.delay)) {
        count("delay");
        await delay(random.int(1, 4), init?.signal);
      }
    }
    let answer;
    if (on && random.chance(rates.duplicate)) {
      count("duplicate");
      const copy = request.clone();
      const [first] = await Promise.all([
        send(target, request, body),
        send(target, copy, body),
      ]);
      answer = first;
    } else {
      answer = await send(target, request, body);
    }
    if (on) {
      if (random.chance(rates.dropResponse)) {
        count("dropResponse");
        throw refused("connection reset while reading the response");
      }
      if (random.chance(rates.serverError / 2)) {
        count("serverError");
        return synthetic(502, null);
      }
      if (answer.text.length > 1 && random.chance(rates.truncate)) {
        count("truncate");
        const cut = random.int(0, answer.text.length - 1);
        return new Response(answer.text.slice(0, cut), {
          status: answer.status,
          headers: { "content-type": "application/json" },
        });
      }
      if (random.chance(rates.garbage)) {
        count("garbage");
        return new Response("<html>502 Bad Gateway</html>\u0000\uFFFF", {
          status: answer.status,
          headers: { "content-type": "application/json" },
        });
      }
    }
    return new Response(
      answer.status === 204 || answer.status === 304 ? null : answer.text,
      { status: answer.status, headers: answer.headers },
    );
  }

  return {
    fetch: faultyFetch as typeof fetch,
    token({ refresh }) {
      if (refresh) tokenGiven = tokenValid;
      return `t${tokenGiven}`;
    },
    requests: () => requests,
  };
}
