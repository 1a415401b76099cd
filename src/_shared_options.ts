/**
 * The options of an engine sharing its storage (ENGINE.md clause 26):
 * checked once, defaults filled in.
 *
 * @module
 */

import { MAX_TIMER_MS } from "./backoff.ts";
import type { SharedOptions } from "./_engine_options.ts";
import { webLocks } from "./_web_lock.ts";

/** {@linkcode SharedOptions} with every default filled in. */
export interface ResolvedShared {
  readonly leaseMs: number;
  readonly pollMs: number;
  readonly requestTimeoutMs: number;
  readonly holder: string;
  /** The Web Lock that elects the syncer, if any. */
  readonly webLock?: string;
}

/**
 * Checks the options of a shared engine and fills in the defaults.
 *
 * @param options What the app gave.
 * @returns The settings.
 * @throws {RangeError} When a duration is not an integer in its range, or
 * the holder's name is empty or longer than 128 characters.
 * @throws {TypeError} When the holder's name is not a string.
 */
export function resolveShared(options: SharedOptions): ResolvedShared {
  const leaseMs = options.leaseMs ?? 5000;
  checkMs("leaseMs", leaseMs, 30);
  const pollMs = options.pollMs ?? Math.min(500, leaseMs);
  checkMs("pollMs", pollMs, 1, leaseMs);
  const requestTimeoutMs = options.requestTimeoutMs ?? 60_000;
  checkMs("requestTimeoutMs", requestTimeoutMs, 1);
  const holder = options.holder ?? crypto.randomUUID();
  if (typeof holder !== "string") {
    throw new TypeError(
      `Cannot share storage as holder is not a string: current value is ${typeof holder}`,
    );
  }
  if (holder.length < 1 || holder.length > 128) {
    throw new RangeError(
      `Cannot share storage as holder is not 1 to 128 characters long: current value is ${holder.length}`,
    );
  }
  const webLock = options.webLock;
  if (webLock !== undefined) {
    if (typeof webLock !== "string" || webLock.length < 1) {
      throw new TypeError(
        `Cannot share storage as webLock is not a non-empty string: current value is ${
          JSON.stringify(webLock)
        }`,
      );
    }
    if (webLocks() === undefined) {
      throw new TypeError(
        `Cannot share storage as this runtime has no Web Locks (navigator.locks): current value is ${
          JSON.stringify(webLock)
        }`,
      );
    }
  }
  return {
    leaseMs,
    pollMs,
    requestTimeoutMs,
    holder,
    ...(webLock === undefined ? {} : { webLock }),
  };
}

function checkMs(
  name: string,
  value: unknown,
  min: number,
  max = MAX_TIMER_MS,
) {
  if (
    typeof value !== "number" || !Number.isInteger(value) || value < min ||
    value > max
  ) {
    throw new RangeError(
      `Cannot share storage as ${name} is not an integer number of ms from ${min} to ${max}: current value is ${value}`,
    );
  }
}
