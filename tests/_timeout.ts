/**
 * Per-test timeouts (see `tests/_preload.ts`, which applies them to every
 * `Deno.test`).
 *
 * @module
 */

/** The timeout of a test that does not set its own. */
export const DEFAULT_TIMEOUT_MS = 30_000;

/** Where a test function carries its own timeout. */
export const TIMEOUT: unique symbol = Symbol.for("offline-first.test-timeout");

/**
 * Gives one test function a timeout other than the default.
 *
 * @param ms The timeout.
 * @param fn The test function.
 * @returns The same function, marked.
 */
export function withTimeout<F extends (t: Deno.TestContext) => unknown>(
  ms: number,
  fn: F,
): F {
  (fn as F & { [TIMEOUT]?: number })[TIMEOUT] = ms;
  return fn;
}
