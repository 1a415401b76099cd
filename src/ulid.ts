/**
 * ULIDs (https://github.com/ulid/spec): 26-character, time-sortable ids.
 * Op ids are ULIDs so the outbox's id order is its time order.
 *
 * @module
 */

const ENCODING = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const TIME_LENGTH = 10;
const RANDOM_LENGTH = 16;
const ULID_LENGTH = TIME_LENGTH + RANDOM_LENGTH;
const MAX_TIME = 2 ** 48 - 1;

/** The character codes of {@linkcode ENCODING}, by digit. */
const CODES: readonly number[] = Array.from(
  ENCODING,
  (char) => char.charCodeAt(0),
);

/**
 * Digits by character code (the first 128): -1 for a character that is no
 * digit, -2 for a digit a ULID may not start with (above 7).
 */
const DIGITS: Int8Array = (() => {
  const digits = new Int8Array(128).fill(-1);
  CODES.forEach((code, digit) => digits[code] = digit);
  return digits;
})();

/** Options for {@linkcode createUlid}. */
export interface UlidOptions {
  /**
   * The clock, in milliseconds since the epoch.
   *
   * @default {Date.now}
   */
  now?: () => number;
  /**
   * Fills a byte array with random bytes.
   *
   * @default {crypto.getRandomValues}
   */
  random?: (bytes: Uint8Array) => Uint8Array;
}

/** A ULID generator. */
export interface UlidFactory {
  /**
   * Returns a new ULID, greater than every ULID this factory returned before
   * and greater than `after` when given.
   *
   * @param after A ULID the result must sort after.
   */
  (after?: string): string;
}

function encodeTime(time: number): string {
  if (!Number.isInteger(time) || time < 0 || time > MAX_TIME) {
    throw new RangeError(
      `Cannot encode ULID time as it is not an integer between 0 and 2^48-1: current value is ${time}`,
    );
  }
  let out = "";
  for (let i = 0; i < TIME_LENGTH; i++) {
    out = ENCODING[time % 32] + out;
    time = Math.floor(time / 32);
  }
  return out;
}

function encodeRandom(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < RANDOM_LENGTH; i++) out += ENCODING[bytes[i]! % 32];
  return out;
}

/** How many leading characters {@linkcode jump} keeps and increments. */
const JUMP_PREFIX = TIME_LENGTH + 6;

/**
 * The next ULID past `floor` by a step of 32^10 ids, with random low bits;
 * `null` when it overflows.
 */
function jump(floor: string, bytes: Uint8Array): string | null {
  const head = increment(floor.slice(0, JUMP_PREFIX));
  if (head === null) return null;
  return head + encodeRandom(bytes).slice(0, floor.length - JUMP_PREFIX);
}

/** Increments a base-32 string; `null` when it overflows. */
function increment(text: string): string | null {
  // Usually only the last character changes: keep the prefix as it is.
  for (let i = text.length - 1; i >= 0; i--) {
    const index = ENCODING.indexOf(text[i]!);
    if (index < 31) {
      return text.slice(0, i) + ENCODING[index + 1] +
        ENCODING[0]!.repeat(text.length - i - 1);
    }
  }
  return null;
}

/**
 * Tells whether a string is a well-formed ULID.
 *
 * @param value The string to test.
 * @returns `true` for 26 Crockford base-32 characters within the time range.
 *
 * @example Usage
 * ```ts
 * import { isUlid } from "./ulid.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(isUlid("01ARZ3NDEKTSV4RRFFQ69G5FAV"), true);
 * assert.equal(isUlid("not-a-ulid"), false);
 * ```
 */
export function isUlid(value: string): boolean {
  // A table lookup per character: the engine checks every op id it makes.
  if (typeof value !== "string" || value.length !== ULID_LENGTH) return false;
  const first = value.charCodeAt(0);
  if (first < 48 || first > 55) return false;
  for (let i = 1; i < ULID_LENGTH; i++) {
    const code = value.charCodeAt(i);
    if (code >= 128 || DIGITS[code]! < 0) return false;
  }
  return true;
}

/**
 * Reads the time (ms since the epoch) a ULID encodes.
 *
 * @param id The ULID.
 * @returns The timestamp.
 * @throws {TypeError} When `id` is not a ULID.
 *
 * @example Usage
 * ```ts
 * import { decodeUlidTime } from "./ulid.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(decodeUlidTime("01ARZ3NDEKTSV4RRFFQ69G5FAV"), 1469922850259);
 * ```
 */
export function decodeUlidTime(id: string): number {
  if (!isUlid(id)) {
    throw new TypeError(
      `Cannot decode ULID time as the id is not a ULID: current value is "${id}"`,
    );
  }
  let time = 0;
  for (const char of id.slice(0, TIME_LENGTH)) {
    time = time * 32 + ENCODING.indexOf(char);
  }
  return time;
}

/**
 * Creates a monotonic ULID generator: within one millisecond (or when the
 * clock goes back) it increments the random part instead of drawing a new
 * one, so ids always sort in creation order.
 *
 * @param options Injectable clock and randomness.
 * @returns The generator.
 *
 * @example Ids sort in creation order
 * ```ts
 * import { createUlid } from "@offline-first/sync";
 * import assert from "node:assert/strict";
 *
 * const ulid = createUlid({ now: () => 1_700_000_000_000 });
 * const a = ulid();
 * const b = ulid();
 * assert.equal(a.length, 26);
 * assert.ok(a < b);
 * assert.ok(ulid("7ZZZZZZZZZ0000000000000000") > "7ZZZZZZZZZ0000000000000000");
 * ```
 */
export function createUlid(options: UlidOptions = {}): UlidFactory {
  const now = options.now ?? Date.now;
  const random = options.random ??
    ((bytes: Uint8Array) => crypto.getRandomValues(bytes));
  let last = "";
  // The last id's character codes and the clock reading that made it: the
  // next id of the same millisecond is the last one plus one, built as one
  // flat string (concatenation would leave a rope that every map lookup of
  // the id flattens again).
  const codes: number[] = new Array(ULID_LENGTH).fill(CODES[0]!);
  let lastTime = NaN;
  return function ulid(after?: string): string {
    const floor = after !== undefined && after > last ? after : last;
    const now_ = now();
    if (now_ === lastTime && floor === last && incrementCodes(codes)) {
      last = String.fromCharCode.apply(null, codes);
      return last;
    }
    const time = encodeTime(now_);
    let next: string;
    if (floor !== "" && time <= floor.slice(0, TIME_LENGTH)) {
      // Past our own last id, +1 keeps this factory's ids apart. Past an id
      // another factory made (`after`: an earlier engine on the same store,
      // whose clock was ahead), +1 may be the very id that factory made next
      // in the same millisecond (its ids are consecutive there), already
      // sent with its own body: jump past every such run, then fresh bits.
      const bumped = floor === last
        ? increment(floor)
        : jump(floor, random(new Uint8Array(RANDOM_LENGTH)));
      if (bumped === null) {
        throw new RangeError(
          `Cannot create a ULID after the largest one: current value is "${floor}"`,
        );
      }
      next = bumped;
    } else {
      next = time + encodeRandom(random(new Uint8Array(RANDOM_LENGTH)));
    }
    if (next.length === ULID_LENGTH) {
      for (let i = 0; i < ULID_LENGTH; i++) codes[i] = next.charCodeAt(i);
      last = String.fromCharCode.apply(null, codes);
      lastTime = now_;
    } else {
      last = next;
      lastTime = NaN;
    }
    return last;
  };
}

/**
 * Adds one to a ULID held as character codes, in place, as
 * {@linkcode increment} does to its text; `false` (and nothing changed)
 * when it would overflow, which the slow path then reports.
 */
function incrementCodes(codes: number[]): boolean {
  for (let i = ULID_LENGTH - 1; i >= 0; i--) {
    const digit = DIGITS[codes[i]!]!;
    if (digit < 31) {
      codes[i] = CODES[digit + 1]!;
      for (let j = i + 1; j < ULID_LENGTH; j++) codes[j] = CODES[0]!;
      return true;
    }
  }
  return false;
}
