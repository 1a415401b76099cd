/**
 * The options of an engine sharing its storage (ENGINE.md clause 26):
 * checked once, defaults filled in.
 *
 * @module
 */

import { MAX_TIMER_MS } from "./backoff.ts";
import type { SharedOptions } from "./_engine_options.ts";

/** {@linkcode SharedOptions} with every default filled in. */
export interface ResolvedShared {
  readonly leaseMs: number;
  readonly pollMs: number;
  readonly requestTimeoutMs: number;
  readonly holder: string;
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
  return { leaseMs, pollMs, requestTimeoutMs, holder };
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
