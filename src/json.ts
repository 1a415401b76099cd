/**
 * JSON value types shared by the engine, the storage contract and the
 * transport contract.
 *
 * Records travel as JSON between the app, the local store and the server, so
 * every contract speaks in these types rather than in `unknown`.
 *
 * @module
 */

/** A JSON primitive. */
export type JsonPrimitive = string | number | boolean | null;

/** Any JSON value. */
export type JsonValue = JsonPrimitive | JsonValue[] | JsonObject;

/** A JSON object: the shape of every record. */
export interface JsonObject {
  /** Any field holds any JSON value. */
  [key: string]: JsonValue;
}

/**
 * Tells whether a value is a plain JSON object (not an array, not `null`).
 *
 * @param value The value to test.
 * @returns `true` when `value` is a non-null, non-array object.
 *
 * @example Usage
 * ```ts
 * import { isJsonObject } from "./json.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(isJsonObject({ a: 1 }), true);
 * assert.equal(isJsonObject([1]), false);
 * assert.equal(isJsonObject(null), false);
 * ```
 */
export function isJsonObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Sets an own data field on a JSON object, safely for untrusted keys: plain
 * assignment, except for keys that `Object.prototype` has. `out["__proto__"]
 * = v` would replace the prototype instead of setting a field, and assigning
 * a key that a frozen `Object.prototype` holds throws (the "override mistake"
 * of hardened environments); those are defined instead.
 *
 * @param target The object.
 * @param key The field.
 * @param value Its value.
 *
 * @example Usage
 * ```ts
 * import { setOwn } from "./json.ts";
 * import assert from "node:assert/strict";
 *
 * const out = {};
 * setOwn(out, "__proto__", { polluted: true });
 * assert.equal(Object.getPrototypeOf(out), Object.prototype);
 * assert.deepEqual(Object.keys(out), ["__proto__"]);
 * ```
 */
export function setOwn(
  target: JsonObject,
  key: string,
  value: JsonValue,
): void {
  if (key in Object.prototype) {
    Object.defineProperty(target, key, {
      value,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  } else {
    target[key] = value;
  }
}
