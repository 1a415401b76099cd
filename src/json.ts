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
