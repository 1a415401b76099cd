/**
 * Retry timing shared by the REST transport and the engine's auto sync: a
 * leaf module (no imports) that adapters may use, not exported from
 * `mod.ts`.
 *
 * @module
 */

/**
 * The longest wait a timer can hold: `setTimeout` keeps its delay in a
 * signed 32-bit integer and fires at once (after 1 ms) for anything longer,
 * so an unclamped long wait would become a tight loop.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * The longest `Retry-After` honoured, in ms (one hour): a server that asks
 * for more is waited on for this long, then asked again. A documented
 * maximum rather than the server's word, since a hostile or broken value
 * (`Retry-After: 99999999999`) must neither stall sync for years nor
 * overflow a timer.
 */
export const MAX_RETRY_AFTER_MS = 3_600_000;

/**
 * Brings a delay into what a timer can hold: `NaN` and negatives become 0,
 * anything above `max` becomes `max`.
 *
 * @param ms The delay in ms.
 * @param max The largest delay allowed.
 * @returns The delay in `[0, max]`.
 */
export function clampDelay(ms: number, max: number = MAX_TIMER_MS): number {
  if (!(ms > 0)) return 0;
  return ms > max ? max : ms;
}

/** Options for {@linkcode backoffDelay}. */
export interface BackoffOptions {
  /** The delay before the first retry, in ms. */
  readonly baseMs: number;
  /** The cap on any delay, in ms. */
  readonly maxMs: number;
  /** A random number in [0, 1). */
  readonly random: () => number;
}

/**
 * The delay before retry number `attempt` (1-based): capped exponential with
 * "full jitter", so many clients that failed together do not retry together.
 *
 * @param attempt Which retry this is, from 1.
 * @param options Base, cap and randomness.
 * @returns The delay in ms, in `[0, min(maxMs, baseMs * 2^(attempt-1))]`.
 */
export function backoffDelay(attempt: number, options: BackoffOptions): number {
  const exponential = options.baseMs * 2 ** Math.max(0, attempt - 1);
  const capped = clampDelay(Math.min(options.maxMs, exponential));
  return Math.round(capped * options.random());
}

const HTTP_DATE =
  /^[A-Za-z]{3,9}, .* GMT$|^[A-Za-z]{3} [A-Za-z]{3} +\d{1,2} \d{2}:\d{2}:\d{2} \d{4}$/;

/**
 * Parses a `Retry-After` header: delta seconds or an HTTP date.
 *
 * @param header The header's value, or `null`.
 * @param now The current time in ms since the epoch.
 * @returns The delay in ms, in `[0, MAX_RETRY_AFTER_MS]`, or `null` when
 * absent or unparsable.
 */
export function parseRetryAfter(
  header: string | null,
  now: number,
): number | null {
  if (header === null) return null;
  const text = header.trim();
  // Huge values (a thousand digits is `Infinity`) clamp like any other.
  if (/^\d+$/.test(text)) {
    return clampDelay(Number(text) * 1000, MAX_RETRY_AFTER_MS);
  }
  // An HTTP date (RFC 9110: IMF-fixdate, or the obsolete forms, all in
  // GMT). `Date.parse` alone reads "-5" or "2025" as dates.
  if (!HTTP_DATE.test(text)) return null;
  const date = Date.parse(text);
  if (Number.isNaN(date)) return null;
  return clampDelay(date - now, MAX_RETRY_AFTER_MS);
}

/**
 * Waits for `ms` milliseconds, or until `signal` aborts. The wait is
 * clamped to `[0, MAX_TIMER_MS]` (see {@linkcode clampDelay}), so no value
 * turns into an immediate timer.
 *
 * @param ms How long to wait.
 * @param signal Cancels the wait, rejecting with the signal's reason.
 * @returns A promise that resolves after the delay.
 */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, clampDelay(ms));
    function onAbort(): void {
      clearTimeout(timer);
      reject(signal?.reason);
    }
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
