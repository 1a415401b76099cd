/**
 * Turns what the app writes into JSON the engine owns. Private to the
 * package (underscore): not exported from `mod.ts`.
 *
 * @module
 */

import { ValidationError } from "./errors.ts";
import { type JsonObject, type JsonValue, setOwn } from "./json.ts";

/**
 * A deep copy of `value` as JSON would carry it, owned by the caller: keys
 * whose value is `undefined` are left out (as `JSON.stringify` does), and
 * values JSON cannot carry faithfully (functions, non-finite numbers, class
 * instances, `undefined` in arrays) are refused with a `ValidationError`.
 * The app may change its object after a write without touching what was
 * written or returned.
 *
 * @param kind The table, for the message.
 * @param value A plain object.
 * @returns The copy.
 * @throws {ValidationError} When `value` is not such JSON.
 */
export function ownedRecord(kind: string, value: JsonObject): JsonObject {
  // Most records are clean JSON: check, then copy without the bookkeeping
  // of the general path (error paths, undefined handling).
  if (isCleanJson(value, 0)) return copyClean(value) as JsonObject;
  return toJson(kind, value, []) as JsonObject;
}

/** Copies a value `isCleanJson` accepted. */
function copyClean(value: JsonValue): JsonValue {
  if (typeof value !== "object" || value === null) return value;
  if (Array.isArray(value)) return value.map(copyClean);
  const out: JsonObject = {};
  for (const key of Object.keys(value)) {
    setOwn(out, key, copyClean(value[key]!));
  }
  return out;
}

/**
 * Whether a value is JSON exactly as `JSON.stringify` would carry it: plain
 * objects and arrays, finite numbers, no `undefined` anywhere. Nesting
 * deeper than 64 levels goes the slow way, which also catches cycles.
 */
function isCleanJson(value: unknown, depth: number): boolean {
  if (
    value === null || typeof value === "string" || typeof value === "boolean"
  ) {
    return true;
  }
  if (typeof value === "number") return Number.isFinite(value);
  if (typeof value !== "object" || depth > 64) return false;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      if (!isCleanJson(value[i], depth + 1)) return false;
    }
    return true;
  }
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return false;
  for (const key in value) {
    if (!Object.hasOwn(value, key)) continue;
    if (!isCleanJson((value as Record<string, unknown>)[key], depth + 1)) {
      return false;
    }
  }
  return true;
}

/**
 * Copies a record as JSON would carry it: keys whose value is `undefined`
 * are left out (as `JSON.stringify` does), and values JSON cannot carry
 * faithfully (functions, non-finite numbers, class instances, `undefined`
 * in arrays) are refused, since they would change on the way to the server.
 * The copy also means the caller can reuse its object after a write.
 */
function toJson(
  kind: string,
  value: unknown,
  path: PropertyKey[],
): JsonValue {
  if (
    value === null || typeof value === "string" || typeof value === "boolean"
  ) {
    return value;
  }
  if (typeof value === "number") {
    if (Number.isFinite(value)) return value;
    return fail(kind, "a number is not finite", path);
  }
  // `path` is one stack shared by the whole walk: it is copied only when an
  // error reports it, not allocated per field.
  if (Array.isArray(value)) {
    const out: JsonValue[] = new Array(value.length);
    for (let i = 0; i < value.length; i++) {
      const item = value[i];
      path.push(i);
      if (item === undefined) fail(kind, "an array item is undefined", path);
      out[i] = toJson(kind, item, path);
      path.pop();
    }
    return out;
  }
  if (typeof value === "object") {
    const proto = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) {
      fail(kind, "a value is not a plain object", path);
    }
    const out: JsonObject = {};
    for (const key of Object.keys(value)) {
      const item = (value as Record<string, unknown>)[key];
      if (item === undefined) continue;
      path.push(key);
      const copy = toJson(kind, item, path);
      path.pop();
      setOwn(out, key, copy);
    }
    return out;
  }
  return fail(kind, `a value of type ${typeof value} is not JSON`, path);
}

function fail(kind: string, what: string, path: readonly PropertyKey[]): never {
  throw new ValidationError(
    `Cannot write record into '${kind}' as ${what} at "${path.join(".")}"`,
    [{ message: what, path: [...path] }],
  );
}
