/**
 * Every delay is clamped (clause 9): a `Retry-After` to at most one hour, a
 * timer to what `setTimeout` holds, so no value turns into a tight loop.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  backoffDelay,
  clampDelay,
  delay,
  MAX_RETRY_AFTER_MS,
  MAX_TIMER_MS,
  parseRetryAfter,
} from "../src/backoff.ts";

const NOW = Date.parse("2025-03-01T10:00:00.000Z");

Deno.test("parseRetryAfter() clamps a huge delay to one hour, never to a near-zero wait", () => {
  assert.equal(MAX_RETRY_AFTER_MS, 3_600_000);
  for (
    const header of [
      "99999999999",
      "9".repeat(400), // Infinity as a number
      "3601",
      "Fri, 31 Dec 9999 23:59:59 GMT",
      "Sun, 01 Mar 2026 10:00:00 GMT",
    ]
  ) {
    assert.equal(parseRetryAfter(header, NOW), MAX_RETRY_AFTER_MS, header);
  }
  assert.equal(parseRetryAfter("120", NOW), 120_000);
  assert.equal(parseRetryAfter("0", NOW), 0);
  assert.equal(parseRetryAfter("Sat, 01 Mar 2025 10:00:30 GMT", NOW), 30_000);
  assert.equal(parseRetryAfter("Sat, 01 Mar 2025 09:00:00 GMT", NOW), 0);
  assert.equal(parseRetryAfter("soon", NOW), null);
  assert.equal(parseRetryAfter(null, NOW), null);
});

Deno.test("parseRetryAfter() reads HTTP dates only, not what Date.parse guesses a date", () => {
  // RFC 9110's three forms: IMF-fixdate, RFC 850 and asctime.
  assert.equal(parseRetryAfter("Sat, 01 Mar 2025 10:00:30 GMT", NOW), 30_000);
  assert.equal(
    parseRetryAfter("Saturday, 01-Mar-25 10:00:30 GMT", NOW),
    30_000,
  );
  assert.equal(parseRetryAfter("Sat Mar  1 10:00:30 2025", NOW), 30_000);
  for (const header of ["-5", "1.5", "2025-03-01", "Mar 1 2025"]) {
    assert.equal(parseRetryAfter(header, NOW), null, header);
  }
});

Deno.test("clampDelay() keeps a delay within what a timer holds", () => {
  assert.equal(MAX_TIMER_MS, 2 ** 31 - 1);
  assert.equal(clampDelay(1e15), MAX_TIMER_MS);
  assert.equal(clampDelay(Infinity), MAX_TIMER_MS);
  assert.equal(clampDelay(NaN), 0);
  assert.equal(clampDelay(-5), 0);
  assert.equal(clampDelay(250), 250);
  assert.equal(clampDelay(1e9, 1000), 1000);
});

Deno.test("backoffDelay() stays within the timer range for any attempt", () => {
  const options = { baseMs: 1000, maxMs: Infinity, random: () => 0.999 };
  assert.ok(backoffDelay(5000, options) <= MAX_TIMER_MS);
});

Deno.test("delay() arms no timer longer than the timer range", async () => {
  const original = globalThis.setTimeout;
  const armed: number[] = [];
  globalThis.setTimeout = ((callback: () => void, ms?: number) => {
    armed.push(ms ?? 0);
    return original(callback, 0);
  }) as typeof setTimeout;
  try {
    await delay(99_999_999_999_000);
    await delay(NaN);
  } finally {
    globalThis.setTimeout = original;
  }
  assert.deepEqual(armed, [MAX_TIMER_MS, 0]);
});
