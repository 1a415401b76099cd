/**
 * Copies of JSON values made of plain objects and arrays, without a JSON
 * round-trip; present-`undefined` properties are dropped. Private to the
 * merge modules and the local write path.
 *
 * @module
 */

import type { JsonObject, JsonValue } from "./json.ts";

/**
 * A shallow copy as a plain object. Object spread defines properties
 * (CreateDataProperty), so an own `"__proto__"` key stays an own key, and it
 * is V8's fastest way to copy an object. Present-`undefined` properties are
 * dropped.
 */
export function copyObject(obj: JsonObject): JsonObject {
  const out: JsonObject = { ...obj };
  for (const key of Object.keys(out)) {
    if (out[key] === undefined) delete out[key];
  }
  return out;
}

/** A deep copy made of plain objects and arrays, without a JSON round-trip. */
export function cloneValue(value: JsonValue): JsonValue {
  if (typeof value !== "object" || value === null) return value;
  if (Array.isArray(value)) {
    const out = value.slice();
    for (let i = 0; i < out.length; i++) {
      const item = out[i];
      if (typeof item === "object" && item !== null) out[i] = cloneValue(item);
    }
    return out;
  }
  const out: JsonObject = { ...value };
  for (const key of Object.keys(out)) {
    const item = out[key];
    if (item === undefined) delete out[key];
    else if (typeof item === "object" && item !== null) {
      out[key] = cloneValue(item);
    }
  }
  return out;
}

export function cloneOptional(
  value: JsonValue | undefined,
): JsonValue | undefined {
  return value === undefined ? undefined : cloneValue(value);
}
