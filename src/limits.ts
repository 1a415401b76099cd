/**
 * The wire contract's limits (CONTRACT.md §Limits) and the checks that keep
 * them. One leaf module, shared by the engine (write-time checks, pulled
 * items), the REST transport (what it sends and reads) and the reference
 * server (what it accepts): the three agree because they read one table.
 *
 * Every check is iterative or bounded by the limit it enforces, so a hostile
 * value (an id of 70,000 characters, a record nested 5,000 levels deep)
 * costs no more than the limit itself and never overflows the stack.
 *
 * @example Checking an id before sending it
 * ```ts
 * import { idProblem, WIRE_LIMITS } from "@offline-first/sync/limits";
 * import assert from "node:assert/strict";
 *
 * assert.equal(idProblem("todo-1"), null);
 * assert.match(idProblem("x".repeat(WIRE_LIMITS.maxIdLength + 1))!, /256/);
 * assert.match(idProblem("\ud800")!, /lone surrogate/);
 * ```
 *
 * @module
 */

/** The limits every party of the wire contract keeps. */
export interface WireLimits {
  /** Most Unicode code points in a record id (ids are 1 or more). */
  readonly maxIdLength: number;
  /** Most characters in a kind (`[A-Za-z0-9_-]`, 1 or more). */
  readonly maxKindLength: number;
  /** Deepest nesting of a record: the record object itself is level 1. */
  readonly maxDepth: number;
  /** Largest serialized record, in UTF-8 bytes. */
  readonly maxRecordBytes: number;
  /** Most ops in one `POST /batch`. */
  readonly maxBatchOps: number;
  /** Largest `POST /batch` body, in bytes. */
  readonly maxBatchBytes: number;
  /** Most items in one pull page. */
  readonly maxPageItems: number;
  /** Largest pull page body a server sends, in bytes. */
  readonly maxPageBytes: number;
  /** Most characters in an idempotency key (visible ASCII, 1 or more). */
  readonly maxIdempotencyKeyLength: number;
}

/**
 * The reference values of CONTRACT.md §Limits. A server may state other
 * values in `GET /health`; ids, kinds and depth are the same for every
 * party, since a record that one side accepts must travel to every other.
 */
export const WIRE_LIMITS: WireLimits = Object.freeze({
  maxIdLength: 256,
  maxKindLength: 64,
  maxDepth: 64,
  maxRecordBytes: 1_048_576,
  maxBatchOps: 1_000,
  maxBatchBytes: 8_388_608,
  maxPageItems: 1_000,
  maxPageBytes: 4_194_304,
  maxIdempotencyKeyLength: 255,
});

/** Route names a kind may not take (CONTRACT.md §Limits). */
export const RESERVED_KINDS: ReadonlySet<string> = new Set([
  "health",
  "batch",
  "live",
]);

/**
 * Says what is wrong with a record id, if anything: it must be a string of
 * 1 to {@linkcode WireLimits.maxIdLength} Unicode code points, well-formed
 * (no lone surrogate, which no URL and no UTF-8 body can carry), and not
 * `.` or `..` (URL parsers drop those path segments even percent-encoded).
 *
 * @param id The id.
 * @returns `null` for a valid id, else what is wrong (a sentence fragment
 * for a std-style message).
 *
 * @example Usage
 * ```ts
 * import { idProblem } from "@offline-first/sync/limits";
 * import assert from "node:assert/strict";
 *
 * assert.equal(idProblem("a/b?c#d %"), null);
 * assert.equal(idProblem("😀".repeat(256)), null);
 * assert.notEqual(idProblem(".."), null);
 * ```
 */
export function idProblem(id: unknown): string | null {
  if (typeof id !== "string") return `it is not a string (${typeof id})`;
  if (id === "") return "it is empty";
  if (id === "." || id === "..") {
    return `it is a dot segment ("${id}"), which URLs cannot carry`;
  }
  // Each code point is one or two UTF-16 units: a string of more than twice
  // the limit is too long whatever it holds, and is not walked.
  if (id.length > 2 * WIRE_LIMITS.maxIdLength) {
    return `it is longer than ${WIRE_LIMITS.maxIdLength} characters (${id.length} UTF-16 units)`;
  }
  let points = 0;
  for (let i = 0; i < id.length; i++) {
    const unit = id.charCodeAt(i);
    if (unit >= 0xd800 && unit <= 0xdfff) {
      const next = id.charCodeAt(i + 1);
      if (unit > 0xdbff || !(next >= 0xdc00 && next <= 0xdfff)) {
        return `it has a lone surrogate at index ${i}`;
      }
      i++;
    }
    points++;
  }
  if (points > WIRE_LIMITS.maxIdLength) {
    return `it is longer than ${WIRE_LIMITS.maxIdLength} characters (${points})`;
  }
  return null;
}

const KIND = /^[A-Za-z0-9_-]+$/;

/**
 * Says what is wrong with a kind, if anything: 1 to
 * {@linkcode WireLimits.maxKindLength} characters of `[A-Za-z0-9_-]`, and
 * not a reserved route name (`health`, `batch`, `live`).
 *
 * @param kind The kind.
 * @returns `null` for a valid kind, else what is wrong.
 *
 * @example Usage
 * ```ts
 * import { kindProblem } from "@offline-first/sync/limits";
 * import assert from "node:assert/strict";
 *
 * assert.equal(kindProblem("todo_items-v2"), null);
 * assert.notEqual(kindProblem("batch"), null);
 * assert.notEqual(kindProblem("a/b"), null);
 * ```
 */
export function kindProblem(kind: unknown): string | null {
  if (typeof kind !== "string") return `it is not a string (${typeof kind})`;
  if (kind === "") return "it is empty";
  if (kind.length > WIRE_LIMITS.maxKindLength) {
    return `it is longer than ${WIRE_LIMITS.maxKindLength} characters (${kind.length})`;
  }
  if (!KIND.test(kind)) return "it has characters outside [A-Za-z0-9_-]";
  if (RESERVED_KINDS.has(kind)) return `it is a reserved route name`;
  return null;
}

/**
 * Says what is wrong with an idempotency key, if anything: 1 to
 * {@linkcode WireLimits.maxIdempotencyKeyLength} visible ASCII characters
 * (`!` to `~`).
 *
 * @param key The key.
 * @returns `null` for a valid key, else what is wrong.
 *
 * @example Usage
 * ```ts
 * import { idempotencyKeyProblem } from "@offline-first/sync/limits";
 * import assert from "node:assert/strict";
 *
 * assert.equal(idempotencyKeyProblem("01J9ZQ4K2M3N4P5Q6R7S8T9V0W.r1"), null);
 * assert.notEqual(idempotencyKeyProblem("has space"), null);
 * ```
 */
export function idempotencyKeyProblem(key: unknown): string | null {
  if (typeof key !== "string") return `it is not a string (${typeof key})`;
  if (key === "") return "it is empty";
  if (key.length > WIRE_LIMITS.maxIdempotencyKeyLength) {
    return `it is longer than ${WIRE_LIMITS.maxIdempotencyKeyLength} characters (${key.length})`;
  }
  for (let i = 0; i < key.length; i++) {
    const unit = key.charCodeAt(i);
    if (unit < 0x21 || unit > 0x7e) {
      return `it has a character outside visible ASCII at index ${i}`;
    }
  }
  return null;
}

/**
 * Tells whether a value nests deeper than `maxDepth` objects and arrays. The
 * value itself is level 1 when it is an object or an array; scalars add no
 * level. The walk stops one level past the limit, so its cost and its stack
 * are bounded by the limit, whatever the value holds (a cycle counts as too
 * deep).
 *
 * @param value The value, typically a record.
 * @param maxDepth The deepest nesting allowed.
 * @returns `true` when the value is too deep.
 *
 * @example Usage
 * ```ts
 * import { exceedsDepth } from "@offline-first/sync/limits";
 * import assert from "node:assert/strict";
 *
 * assert.equal(exceedsDepth({ a: { b: [1] } }, 3), false);
 * assert.equal(exceedsDepth({ a: { b: [1] } }, 2), true);
 * ```
 */
export function exceedsDepth(
  value: unknown,
  maxDepth: number = WIRE_LIMITS.maxDepth,
): boolean {
  return deeper(value, maxDepth);
}

function deeper(value: unknown, remaining: number): boolean {
  if (typeof value !== "object" || value === null) return false;
  if (remaining <= 0) return true;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      if (deeper(value[i], remaining - 1)) return true;
    }
    return false;
  }
  for (const key in value) {
    if (
      Object.hasOwn(value, key) &&
      deeper((value as Record<string, unknown>)[key], remaining - 1)
    ) {
      return true;
    }
  }
  return false;
}

/**
 * The `afterId` that moves a pull cursor past an item whose id breaks the
 * limits, so one bad item is skipped once instead of refetched forever
 * (ENGINE.md clause 25). For a valid id it is the id itself. Otherwise it is
 * a valid id `A` such that, for every valid id `v`, `v > A` exactly when
 * `v > id` in UTF-16 order:
 *
 * - an id longer than the limit: the smallest string of at most
 *   `maxIdLength` code points above every string that starts with its first
 *   `maxIdLength` code points (those, with the last one's successor). A
 *   prefix of the bad id itself would not do: the server sends the bad id
 *   again after it, and a page full of such ids would never pass;
 * - an id with a lone surrogate: the smallest well-formed string above every
 *   string with that ill-formed prefix.
 *
 * In both cases the one valid id that equals the cursor, at the same
 * millisecond, is passed over too: no finite valid id lies just below it. A
 * server that keeps the contract never stores such ids, so only a broken
 * server can produce that case.
 *
 * The ids `.` and `..` are their own cursor: a query parameter carries them
 * (only a path segment cannot). An empty id has no such cursor: it returns
 * `null` and the caller treats the item as having no position.
 *
 * @param id The pulled item's id.
 * @returns The cursor id, or `null` for the empty id.
 *
 * @example Usage
 * ```ts
 * import { cursorIdAfter } from "@offline-first/sync/limits";
 * import assert from "node:assert/strict";
 *
 * assert.equal(cursorIdAfter("todo-1"), "todo-1");
 * assert.equal(cursorIdAfter("x".repeat(70_000)), "x".repeat(255) + "y");
 * assert.equal(cursorIdAfter("a\udc00"), "a\ue000");
 * ```
 */
export function cursorIdAfter(id: string): string | null {
  if (id === "") return null;
  let points = 0;
  for (let i = 0; i < id.length; i++) {
    if (points === WIRE_LIMITS.maxIdLength) return successorOf(id.slice(0, i));
    const unit = id.charCodeAt(i);
    if (unit >= 0xd800 && unit <= 0xdbff) {
      const next = i + 1 < id.length ? id.charCodeAt(i + 1) : -1;
      if (next >= 0xdc00 && next <= 0xdfff) {
        i++;
        points++;
        continue;
      }
      const prefix = id.slice(0, i);
      // A valid id continues a high surrogate with a low one (0xdc00 and up).
      if (next < 0xdc00) return prefix + String.fromCharCode(unit, 0xdc00);
      return unit < 0xdbff
        ? prefix + String.fromCharCode(unit + 1, 0xdc00)
        : prefix + "\ue000";
    }
    // A lone low surrogate: a valid id has a code unit of 0xe000 or more
    // here, or a high surrogate (below it, so not greater).
    if (unit >= 0xdc00 && unit <= 0xdfff) return id.slice(0, i) + "\ue000";
    points++;
  }
  return id;
}

/**
 * The smallest string of at most as many code points as `prefix` (which is
 * well-formed) above every string that starts with it: its last code point's
 * successor, carrying over U+10FFFF and skipping the surrogate range; `null`
 * when there is none.
 */
function successorOf(prefix: string): string | null {
  let end = prefix.length;
  while (end > 0) {
    const low = prefix.charCodeAt(end - 1);
    const pair = low >= 0xdc00 && low <= 0xdfff && end >= 2;
    const start = pair ? end - 2 : end - 1;
    const point = prefix.codePointAt(start)!;
    if (point < 0x10ffff) {
      const next = point === 0xd7ff ? 0xe000 : point + 1;
      return prefix.slice(0, start) + String.fromCodePoint(next);
    }
    end = start;
  }
  return null;
}
