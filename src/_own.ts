/**
 * Turns what the app writes into JSON the engine owns. Private to the
 * package (underscore): not exported from `mod.ts`.
 *
 * @module
 */

import { ValidationError } from "./errors.ts";
import { WIRE_LIMITS } from "./limits.ts";
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
  // Most records are clean JSON: copied in one walk without the bookkeeping
  // of the general path (error paths, undefined handling).
  // Deeper than the wire allows goes the general path too, so that a cycle
  // is never walked forever here (the callers check the depth first).
  return ownedCleanRecord(value, WIRE_LIMITS.maxDepth + 1) ??
    toJson(kind, value, []) as JsonObject;
}

/**
 * {@linkcode ownedRecord} of a clean record only: `undefined` when the
 * record needs the general path (a value JSON would drop or change, a
 * prototype other than a plain object's, symbol keys, an object under a
 * `__proto__` key), or when it nests `maxDepth` levels or more, a cycle
 * included. A record it copies is therefore shallower than `maxDepth`.
 *
 * @param value A plain object.
 * @param maxDepth The nesting at which to give up (the record is level 1).
 * @returns The copy, or `undefined`.
 */
export function ownedCleanRecord(
  value: JsonObject,
  maxDepth: number,
): JsonObject | undefined {
  const copy = copyClean(value, maxDepth - 1);
  return copy === UNCLEAN ? undefined : copy as JsonObject;
}

/** What {@linkcode copyClean} returns for a value the general path takes. */
const UNCLEAN: unique symbol = Symbol("unclean");

/**
 * Copies an object or an array of clean JSON, `remaining` more levels deep
 * at most. Objects are copied by spread (data properties only, so an own
 * `__proto__` key stays an own key), then their members are checked in
 * place and their objects replaced by copies, walked with `for...in`, which
 * allocates nothing.
 */
function copyClean(
  value: object,
  remaining: number,
): JsonValue | typeof UNCLEAN {
  if (remaining <= 0) return UNCLEAN;
  if (Array.isArray(value)) {
    const length = value.length;
    const items: JsonValue[] = new Array(length);
    for (let i = 0; i < length; i++) {
      const item: unknown = value[i];
      if (typeof item === "object") {
        if (item === null) {
          items[i] = null;
          continue;
        }
        const inner = copyClean(item, remaining - 1);
        if (inner === UNCLEAN) return UNCLEAN;
        items[i] = inner;
      } else if (isCleanScalar(item)) items[i] = item as JsonValue;
      else return UNCLEAN;
    }
    return items;
  }
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return UNCLEAN;
  const members: Record<string, unknown> = { ...value };
  for (const key in members) {
    const item = members[key];
    if (typeof item === "object") {
      if (item === null) continue;
      // An inherited member (a polluted prototype) or an object under a
      // `__proto__` key: the general path reads own keys and defines them.
      if (key === "__proto__" || !Object.hasOwn(members, key)) return UNCLEAN;
      const inner = copyClean(item, remaining - 1);
      if (inner === UNCLEAN) return UNCLEAN;
      members[key] = inner;
    } else if (typeof item !== "string" && typeof item !== "boolean") {
      if (!isCleanScalar(item) || !Object.hasOwn(members, key)) return UNCLEAN;
    }
  }
  // Spread copies symbol keys, which JSON (and the general path) drops.
  if (Object.getOwnPropertySymbols(value).length > 0) return UNCLEAN;
  return members as JsonObject;
}

/** Whether a value that is not an object is JSON, as JSON would carry it. */
function isCleanScalar(value: unknown): boolean {
  switch (typeof value) {
    case "string":
    case "boolean":
      return true;
    case "number":
      return Number.isFinite(value);
    default:
      return value === null;
  }
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
