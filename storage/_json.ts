/**
 * The JSON checks every storage adapter makes on the values it is given.
 * Private to the package's adapters: not exported from it.
 *
 * JSON is checked in two ways: {@linkcode checkJson} only validates, for an
 * adapter that serialises the value at once and so never keeps the caller's
 * object; {@linkcode copyJson} validates and deep-copies, for one that keeps
 * the value as an object. Both walk at most {@linkcode MAX_DEPTH} levels
 * deep, so their stack is bounded whatever the value: a deeper value is
 * refused with a `StorageError` rather than overflowing the stack.
 *
 * @module
 */

import { StorageError } from "../src/errors.ts";
import type { JsonObject, JsonValue } from "../src/json.ts";
import { describe } from "./_text.ts";

/**
 * How deep a value may nest: the value itself is level 1 when it is an
 * object or an array. The contract asks every adapter to hold 256 levels
 * (a record's data nests at most 64 by the wire contract, a few more around
 * it); ours refuse deeper values, since checking and copying them recurses
 * once per level.
 */
export const MAX_DEPTH = 256;

/**
 * Checks that a value is JSON that `JSON.stringify` writes faithfully: no
 * `undefined`, functions, symbols, bigints, non-finite numbers, cycles, or
 * objects other than plain ones and arrays (a `Date` or `Map` would be
 * written as something else and read back different). Copies nothing.
 *
 * @param value The value to check.
 * @param action What the caller was doing, for the message.
 * @param path Where the value is, for the message; restored on return.
 * @param ancestors The objects being checked around the value (cycles).
 * @param seen Objects of the same write already found to be such JSON,
 * skipped when met again (the engine passes one object as a record's data
 * and its base's data); objects near the root are added once checked. The
 * checks of a write run synchronously, so nothing changes them meanwhile.
 * @throws {TypeError} When it is not such JSON.
 * @throws {StorageError} When it nests deeper than {@linkcode MAX_DEPTH}.
 */
export function checkJson(
  value: unknown,
  action: string,
  path: (string | number)[] = [],
  ancestors: Set<object> = new Set(),
  seen?: Set<object>,
): void {
  // The common case, valid JSON, is checked without tracking the path or
  // the ancestors; only a failure walks again to say where and why.
  if (ancestors.size === 0 && isJson(value, 0, seen)) return;
  explainJson(value, action, path, ancestors);
}

/**
 * Whether a value is JSON as {@linkcode checkJson} means it, at most
 * {@linkcode MAX_DEPTH} levels deep. A cycle makes a value infinitely deep,
 * so it fails here too; {@linkcode explainJson} then tells which it is.
 *
 * @param depth How many objects and arrays hold the value.
 */
function isJson(
  value: unknown,
  depth: number,
  seen: Set<object> | undefined,
): boolean {
  switch (typeof value) {
    case "string":
    case "boolean":
      return true;
    case "number":
      return Number.isFinite(value);
    case "object": {
      if (value === null) return true;
      if (depth >= MAX_DEPTH) return false;
      // Only near the root: deeper, a lookup would cost what it saves.
      const near = seen !== undefined && depth <= 2;
      if (near && seen.has(value)) return true;
      if (Array.isArray(value)) {
        for (let index = 0; index < value.length; index++) {
          if (!isJson(value[index], depth + 1, seen)) return false;
        }
      } else {
        const prototype = Object.getPrototypeOf(value);
        if (prototype !== Object.prototype && prototype !== null) return false;
        const source = value as Record<string, unknown>;
        for (const key of Object.keys(source)) {
          if (!isJson(source[key], depth + 1, seen)) return false;
        }
      }
      if (near) seen.add(value);
      return true;
    }
    default:
      return false;
  }
}

/**
 * Walks a value as {@linkcode checkJson} does, throwing where it fails. The
 * ancestors are the objects and arrays that hold the value, so their count
 * is its depth.
 */
function explainJson(
  value: unknown,
  action: string,
  path: (string | number)[],
  ancestors: Set<object>,
): void {
  switch (typeof value) {
    case "string":
    case "boolean":
      return;
    case "number":
      if (Number.isFinite(value)) return;
      break;
    case "object": {
      if (value === null) return;
      if (ancestors.has(value)) break;
      if (ancestors.size >= MAX_DEPTH) throw tooDeep(action, path);
      if (Array.isArray(value)) {
        ancestors.add(value);
        for (let index = 0; index < value.length; index++) {
          path.push(index);
          explainJson(value[index], action, path, ancestors);
          path.pop();
        }
        ancestors.delete(value);
        return;
      }
      const prototype = Object.getPrototypeOf(value);
      if (prototype !== Object.prototype && prototype !== null) break;
      ancestors.add(value);
      const source = value as Record<string, unknown>;
      for (const key of Object.keys(source)) {
        path.push(key);
        explainJson(source[key], action, path, ancestors);
        path.pop();
      }
      ancestors.delete(value);
      return;
    }
  }
  throw notJson(value, action, path);
}

/**
 * Deep-copies a JSON value, checking it as {@linkcode checkJson} does.
 * Objects are rebuilt with data properties only, so a `__proto__` key stays
 * an own data key and never becomes a prototype (contract clause 3).
 *
 * @param value The value to copy.
 * @param action What the caller was doing, for the message.
 * @param path Where the value is, for the message; restored on return.
 * @param ancestors The objects being copied around the value (cycles).
 * @param copies Copies already made, by source object: a source met again
 * returns its copy (copies are shared, never with `value`'s objects).
 * @returns The copy, sharing nothing with `value`.
 * @throws {TypeError} When it is not such JSON.
 * @throws {StorageError} When it nests deeper than {@linkcode MAX_DEPTH}.
 */
export function copyJson(
  value: unknown,
  action?: string,
  path: (string | number)[] = [],
  ancestors: Set<object> = new Set(),
  copies?: Map<object, JsonValue>,
): JsonValue {
  switch (typeof value) {
    case "string":
    case "boolean":
      return value;
    case "number":
      if (Number.isFinite(value)) return value;
      break;
    case "object": {
      if (value === null) return null;
      if (ancestors.has(value)) break;
      const known = copies?.get(value);
      if (known !== undefined) return known;
      // The ancestors hold the value: their count is its depth.
      if (ancestors.size >= MAX_DEPTH) {
        throw tooDeep(action ?? "copy value", path);
      }
      if (Array.isArray(value)) {
        ancestors.add(value);
        const copy: JsonValue[] = new Array(value.length);
        for (let index = 0; index < value.length; index++) {
          path.push(index);
          copy[index] = copyJson(value[index], action, path, ancestors, copies);
          path.pop();
        }
        ancestors.delete(value);
        copies?.set(value, copy);
        return copy;
      }
      const prototype = Object.getPrototypeOf(value);
      if (prototype !== Object.prototype && prototype !== null) break;
      ancestors.add(value);
      const source = value as Record<string, unknown>;
      const copy: JsonObject = {};
      for (const key of Object.keys(source)) {
        path.push(key);
        const item = copyJson(source[key], action, path, ancestors, copies);
        path.pop();
        if (key === "__proto__") {
          Object.defineProperty(copy, key, {
            value: item,
            writable: true,
            enumerable: true,
            configurable: true,
          });
        } else {
          copy[key] = item;
        }
      }
      ancestors.delete(value);
      copies?.set(value, copy);
      return copy;
    }
  }
  throw notJson(value, action ?? "copy value", path);
}

/**
 * The error for a value nested deeper than {@linkcode MAX_DEPTH}; it names
 * the root only, since the path to the deepest level is that long.
 */
function tooDeep(
  action: string,
  path: readonly (string | number)[],
): StorageError {
  const root = path.length === 0 ? "value" : String(path[0]);
  return new StorageError(
    `Cannot ${action} as '${root}' nests more than ${MAX_DEPTH} levels deep: current value is at least ${
      MAX_DEPTH + 1
    } levels`,
  );
}

function notJson(
  value: unknown,
  action: string,
  path: readonly (string | number)[],
): TypeError {
  return new TypeError(
    `Cannot ${action} as '${
      path.join(".")
    }' is not a JSON value: current value is ${describe(value)}`,
  );
}
