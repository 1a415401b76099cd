/**
 * Structural equality and top-level diffs of JSON records (ENGINE.md
 * clause 2), with the own-property reads they rest on: `"__proto__"`,
 * `"constructor"` and `"prototype"` are ordinary keys here (clause 16).
 * Private module: `deepEqual` and `diffFields` are public through
 * `merge.ts`.
 *
 * @module
 */

import type { JsonObject, JsonValue } from "./json.ts";

/** Reads an own property only: `obj["constructor"]` on `{}` is `Object`. */
export function getOwn(obj: JsonObject, key: string): JsonValue | undefined {
  return Object.hasOwn(obj, key) ? obj[key] : undefined;
}

/** Whether `obj` has `key` with a value (present-`undefined` is absent). */
export function hasValue(obj: JsonObject, key: string): boolean {
  return Object.hasOwn(obj, key) && obj[key] !== undefined;
}

/**
 * Compares two JSON values structurally. Object key order does not matter,
 * array order does, and a property whose value is `undefined` counts as
 * absent (as it would after `JSON.stringify`). Only own properties are
 * compared, so `"__proto__"` is compared like any other key.
 *
 * @param a The first value; `undefined` stands for "absent".
 * @param b The second value; `undefined` stands for "absent".
 * @returns `true` when both values would serialize to the same JSON up to
 * object key order.
 *
 * @example Usage
 * ```ts
 * import { deepEqual } from "@offline-first/sync";
 * import assert from "node:assert/strict";
 *
 * assert.equal(deepEqual({ a: [1, { b: 2 }] }, { a: [1, { b: 2 }] }), true);
 * assert.equal(deepEqual({ a: 1, b: 2 }, { b: 2, a: 1 }), true);
 * assert.equal(deepEqual([1, 2], [2, 1]), false);
 * assert.equal(deepEqual(0, false), false);
 * assert.equal(deepEqual(null, undefined), false);
 * ```
 */
export function deepEqual(
  a: JsonValue | undefined,
  b: JsonValue | undefined,
): boolean {
  if (a === b) return true;
  if (
    typeof a !== "object" || typeof b !== "object" || a === null || b === null
  ) {
    return false;
  }
  const aIsArray = Array.isArray(a);
  if (aIsArray !== Array.isArray(b)) return false;
  if (aIsArray) {
    const bArray = b as JsonValue[];
    if (a.length !== bArray.length) return false;
    for (let i = 0; i < a.length; i++) {
      if (!deepEqual(a[i], bArray[i])) return false;
    }
    return true;
  }
  return objectsEqual(a as JsonObject, b as JsonObject);
}

function objectsEqual(a: JsonObject, b: JsonObject): boolean {
  // Counting defined keys on both sides avoids building key sets: if every
  // defined key of `a` is defined and equal in `b` and the counts match, `b`
  // has no extra defined key.
  let count = 0;
  for (const key of Object.keys(a)) {
    const value = a[key];
    if (value === undefined) continue;
    count++;
    if (!Object.hasOwn(b, key) || !deepEqual(value, b[key])) return false;
  }
  for (const key of Object.keys(b)) {
    if (b[key] !== undefined) count--;
  }
  return count === 0;
}

/**
 * Lists the top-level fields that differ between two versions of a record
 * (clause 2): fields whose values differ deeply, fields added, and fields
 * removed in `after`.
 *
 * @param before The earlier version (usually the base), or `null` when there
 * is none: then every field of `after` counts as changed.
 * @param after The later version.
 * @returns The changed field names, sorted; empty when nothing changed.
 *
 * @example Usage
 * ```ts
 * import { diffFields } from "@offline-first/sync";
 * import assert from "node:assert/strict";
 *
 * const before = { title: "a", tags: ["x"], done: false, note: "n" };
 * const after = { title: "a", tags: ["x", "y"], done: true };
 * assert.deepEqual(diffFields(before, after), ["done", "note", "tags"]);
 * assert.deepEqual(diffFields(null, { b: 1, a: 2 }), ["a", "b"]);
 * ```
 */
export function diffFields(
  before: JsonObject | null,
  after: JsonObject,
): string[] {
  const fields: string[] = [];
  for (const key of Object.keys(after)) {
    const value = after[key];
    if (value === undefined) continue;
    if (before === null || !deepEqual(getOwn(before, key), value)) {
      fields.push(key);
    }
  }
  if (before !== null) {
    for (const key of Object.keys(before)) {
      if (before[key] !== undefined && !hasValue(after, key)) fields.push(key);
    }
  }
  return fields.sort();
}
