/**
 * Retry timing shared by the REST transport and the engine's auto sync.
 * Private to the package (underscore): not exported from `mod.ts`.
 *
 * @module
 */

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
  const capped = Math.min(options.maxMs, exponential);
  return Math.round(capped * options.random());
}

/**
 * Parses a `Retry-After` header: delta seconds or an HTTP date.
 *
 * @param header The header's value, or `null`.
 * @param now The current time in ms since the epoch.
 * @returns The delay in ms (never negative), or `null` when absent or
 * unparsable.
 */
export function parseRetryAfter(
  header: string | null,
  now: number,
): number | null {
  if (header === null) return null;
  const text = header.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  if (Number.isNaN(date)) return null;
  return Math.max(0, date - now);
}

/**
 * Waits for `ms` milliseconds, or until `signal` aborts.
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
    }, ms);
    function onAbort(): void {
      clearTimeout(timer);
      reject(signal?.reason);
    }
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
