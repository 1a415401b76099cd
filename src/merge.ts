/**
 * Field-level merging of JSON records: the `autoPreserve` conflict strategy
 * (ENGINE.md clause 14) and the building blocks it rests on (`deepEqual`,
 * `diffFields` for clause 2).
 *
 * Every function here is pure: inputs are never mutated, and results never
 * share an object or array with an input, so the engine may store or edit a result
 * without touching the records it came from. Sharing untouched subtrees would
 * save copying, but then editing the merged record would silently edit the
 * server's record or the client's pending data; instead each output node is
 * copied exactly once (never cloned and then overwritten), with object spread
 * for the copy and no JSON round-trip.
 *
 * Prototype safety (clause 16): records come from untrusted JSON, where
 * `"__proto__"`, `"constructor"` and `"prototype"` are ordinary keys. Reads
 * only ever look at own properties; copies use object spread, which defines
 * properties rather than assigning them; and new keys that `Object.prototype`
 * knows are written with `Object.defineProperty`. So such keys end up as own
 * data properties of plain objects (as `JSON.parse` makes them), and
 * `Object.prototype` is never reached.
 *
 * A property whose value is `undefined` is treated as absent throughout:
 * it does not survive `JSON.stringify`, so it cannot reach the server or the
 * store, and counting it as a change would enqueue writes that change nothing.
 *
 * @module
 */

import { describe } from "./describe.ts";
import {
  isJsonObject,
  type JsonObject,
  type JsonValue,
  setOwn,
} from "./json.ts";

/**
 * The fields that always come from the server in
 * {@linkcode autoPreserveMerge}: the record id and its timestamps, in both
 * spellings. The server owns them; a client copy is at best stale.
 *
 * @example Usage
 * ```ts
 * import { DEFAULT_SYSTEM_FIELDS } from "./merge.ts";
 * import assert from "node:assert/strict";
 *
 * assert.ok(DEFAULT_SYSTEM_FIELDS.includes("updated_at"));
 * assert.ok(DEFAULT_SYSTEM_FIELDS.includes("deletedAt"));
 * ```
 */
export const DEFAULT_SYSTEM_FIELDS: readonly string[] = Object.freeze([
  "id",
  "updated_at",
  "updatedAt",
  "created_at",
  "createdAt",
  "deleted_at",
  "deletedAt",
]);

// Built once: the engine merges per conflict and the default is the common case.
const DEFAULT_SYSTEM_SET: ReadonlySet<string> = new Set(DEFAULT_SYSTEM_FIELDS);

/** Reads an own property only: `obj["constructor"]` on `{}` is `Object`. */
function getOwn(obj: JsonObject, key: string): JsonValue | undefined {
  return Object.hasOwn(obj, key) ? obj[key] : undefined;
}

/** Whether `obj` has `key` with a value (present-`undefined` is absent). */
function hasValue(obj: JsonObject, key: string): boolean {
  return Object.hasOwn(obj, key) && obj[key] !== undefined;
}

/**
 * Sets `key` on an object made by this module: plain assignment when `key`
 * is already an own data property (then `[[Set]]` writes it in place and
 * never reaches a `"__proto__"` setter), {@linkcode setOwn} otherwise.
 */
function writeOwn(obj: JsonObject, key: string, value: JsonValue): void {
  if (Object.hasOwn(obj, key)) obj[key] = value;
  else setOwn(obj, key, value);
}

/**
 * A shallow copy as a plain object. Object spread defines properties
 * (CreateDataProperty), so an own `"__proto__"` key stays an own key, and it
 * is V8's fastest way to copy an object. Present-`undefined` properties are
 * dropped.
 */
function copyObject(obj: JsonObject): JsonObject {
  const out: JsonObject = { ...obj };
  for (const key of Object.keys(out)) {
    if (out[key] === undefined) delete out[key];
  }
  return out;
}

/** Whether two key lists are equal, in order. */
function sameKeys(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A deep copy made of plain objects and arrays, without a JSON round-trip. */
function cloneValue(value: JsonValue): JsonValue {
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

function cloneOptional(value: JsonValue | undefined): JsonValue | undefined {
  return value === undefined ? undefined : cloneValue(value);
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

/** Input of {@linkcode autoPreserveMerge}. */
export interface AutoPreserveInput {
  /** The client's current data for the record. */
  local: JsonObject;
  /** The server's current record (from the 409 response). */
  server: JsonObject;
  /**
   * The last server version the client knew. With it, changes made by both
   * sides are detected (and reported) and lists merge three-way; without
   * it, lists merge as a union and no conflict is reported. With it and no
   * `changedFields`, what the client changed is the diff base → local.
   *
   * @default {null}
   */
  base?: JsonObject | null;
  /**
   * The top-level fields the client changed (see {@linkcode diffFields}).
   * `null` or absent means unknown: then they are
   * `diffFields(base, local)`, or without a base every non-null local value
   * wins, at every depth.
   *
   * @default {null}
   */
  changedFields?: readonly string[] | null;
  /**
   * Top-level fields that always come from the server. Replaces the default
   * list rather than extending it.
   *
   * @default {DEFAULT_SYSTEM_FIELDS}
   */
  systemFields?: readonly string[];
}

/** Result of {@linkcode autoPreserveMerge}. */
export interface MergeResult {
  /** The merged record: a fresh object sharing nothing with the inputs. */
  data: JsonObject;
  /**
   * Top-level fields whose merged value came wholly or partly from the
   * client and differs from the server's. System fields are never listed.
   * Sorted.
   */
  localFields: string[];
  /**
   * Top-level fields whose merged value is the server's and differs from the
   * client's: what the server contributed. An absent field counts as a value,
   * so a field the server lacks and the client has is listed. System fields
   * are never listed. Sorted.
   */
  serverFields: string[];
  /**
   * Paths both sides changed to different values, dotted for nested fields
   * (`"settings.theme"`); for a list, the list's path. The client's value
   * won each of them. Empty without a base. Sorted.
   */
  conflictingFields: string[];
}

/**
 * Merges a client's record with the server's after a conflict, keeping both
 * sides' changes where they do not overlap (clause 14, the `autoPreserve`
 * strategy):
 *
 * - The result starts from the server record.
 * - For each field in `changedFields`, the local value wins, an explicit
 *   `null` included; a changed field absent locally is removed.
 * - With a `base`, a field both sides changed is a field conflict: local wins
 *   and the field is reported. When both values are lists they merge
 *   three-way instead: the server's list, plus the items the client added
 *   (appended in the client's order), minus the items the client removed.
 *   Items are the same item when they are objects with equal `id` (a string
 *   or number), otherwise when they are deeply equal; no duplicates are
 *   introduced; for an item both sides modified, the client's version wins,
 *   and one the client modified but the server removed is kept. When both
 *   values are objects they merge field by field with the same rules, nested
 *   changes being read off the base.
 * - Without a base, lists merge as a union (the server's list, then the
 *   client's new items; for an `id` both have, the client's version) and
 *   objects merge recursively with every local sub-field winning.
 * - System fields (top-level only) always come from the server.
 * - With `changedFields` unknown but a base known, the changed fields are
 *   `diffFields(base, local)` (clause 2) and the rules above apply, field
 *   conflicts included.
 * - With neither known (the original library's rule), every non-null local
 *   value wins at every depth: lists union as above, except that an item
 *   whose `id` both lists hold merges field by field by this same rule;
 *   objects merge recursively; a local `null` (or a missing field) is no
 *   value and keeps the server's; where the types differ (a list against an
 *   object, an object against a scalar), the local value wins. No conflict
 *   is reported: without a base none can be told apart.
 *
 * Two changes are not a conflict when both sides made the same one. Field
 * names containing `.` make dotted paths ambiguous; they are not escaped.
 *
 * @param input The local, server and base records and what the client
 * changed.
 * @returns The merged data and which fields came from where.
 * @throws {TypeError} If `local` or `server` is not an object, or `base` is
 * neither an object nor `null`.
 *
 * @example Keeping both sides' changes
 * ```ts
 * import { autoPreserveMerge } from "@offline-first/sync";
 * import assert from "node:assert/strict";
 *
 * const result = autoPreserveMerge({
 *   base: { mood: "ok", energy: 3, tags: ["a", "b"] },
 *   local: { mood: "great", energy: 3, tags: ["a", "c"] },
 *   server: { mood: "ok", energy: 5, tags: ["a", "b", "d"] },
 *   changedFields: ["mood", "tags"],
 * });
 * assert.deepEqual(result.data, {
 *   mood: "great",
 *   energy: 5,
 *   tags: ["a", "d", "c"],
 * });
 * assert.deepEqual(result.localFields, ["mood", "tags"]);
 * assert.deepEqual(result.serverFields, ["energy"]);
 * assert.deepEqual(result.conflictingFields, []);
 * ```
 *
 * @example Reporting a field both sides changed
 * ```ts
 * import { autoPreserveMerge } from "@offline-first/sync";
 * import assert from "node:assert/strict";
 *
 * const result = autoPreserveMerge({
 *   base: { id: "1", title: "a" },
 *   local: { id: "1", title: "mine" },
 *   server: { id: "1", title: "theirs" },
 *   changedFields: ["title"],
 * });
 * assert.deepEqual(result.data, { id: "1", title: "mine" });
 * assert.deepEqual(result.conflictingFields, ["title"]);
 * ```
 *
 * @example Merging with neither a base nor changedFields
 * ```ts
 * import { autoPreserveMerge } from "@offline-first/sync";
 * import assert from "node:assert/strict";
 *
 * const result = autoPreserveMerge({
 *   local: { note: null, tags: ["a", "c"], ui: { theme: "dark" } },
 *   server: { note: "n", tags: ["a", "b"], ui: { theme: "light", size: 2 } },
 * });
 * assert.deepEqual(result.data, {
 *   note: "n",
 *   tags: ["a", "b", "c"],
 *   ui: { theme: "dark", size: 2 },
 * });
 * ```
 */
export function autoPreserveMerge(input: AutoPreserveInput): MergeResult {
  const { local, server } = input;
  const base = input.base ?? null;
  if (!isJsonObject(local)) {
    throw new TypeError(
      `Cannot merge as 'local' is not an object: current value is ${
        describe(local)
      }`,
    );
  }
  if (!isJsonObject(server)) {
    throw new TypeError(
      `Cannot merge as 'server' is not an object: current value is ${
        describe(server)
      }`,
    );
  }
  if (base !== null && !isJsonObject(base)) {
    throw new TypeError(
      `Cannot merge as 'base' is neither an object nor null: current value is ${
        describe(base)
      }`,
    );
  }
  const system = input.systemFields === undefined
    ? DEFAULT_SYSTEM_SET
    : new Set(input.systemFields);
  const changedFields = input.changedFields ?? null;
  const result: MergeResult = {
    data: {},
    localFields: [],
    serverFields: [],
    conflictingFields: [],
  };
  if (changedFields === null && base === null) {
    mergeUnknownChanges(local, server, system, result);
  } else {
    // With a base, unknown changes are the diff base → local (clause 2), so
    // the three-way rules apply to them like to declared ones.
    const changed = new Set<string>();
    for (const field of changedFields ?? diffFields(base, local)) {
      if (!system.has(field)) changed.add(field);
    }
    mergeKnownChanges(local, server, base, changed, result);
  }
  // System fields always come from the server; listing them (a fresh
  // `updated_at` on every merge) would only bury what the users changed.
  result.localFields = result.localFields.filter((key) => !system.has(key))
    .sort();
  result.serverFields = result.serverFields.filter((key) => !system.has(key))
    .sort();
  result.conflictingFields.sort();
  return result;
}

/** The original library's rule: every non-null local field wins. */
function mergeUnknownChanges(
  local: JsonObject,
  server: JsonObject,
  system: ReadonlySet<string>,
  result: MergeResult,
): void {
  const data = copyObject(server);
  result.data = data;
  const serverKeys = Object.keys(server);
  const localKeys = Object.keys(local);
  const aligned = sameKeys(serverKeys, localKeys);
  // Same fields in the same order (the usual case): index-aligned values
  // spare a hash lookup per field.
  const serverValues = aligned ? Object.values(server) : undefined;
  const localValues = aligned ? Object.values(local) : undefined;
  for (let i = 0; i < serverKeys.length; i++) {
    const key = serverKeys[i]!;
    const serverValue = aligned ? serverValues![i] : server[key];
    if (serverValue === undefined) continue;
    const localValue = aligned ? localValues![i] : getOwn(local, key);
    const same = localValue === serverValue;
    if (!system.has(key) && localValue !== undefined && localValue !== null) {
      if (typeof localValue !== "object") {
        data[key] = localValue;
        if (!same) result.localFields.push(key);
        continue;
      }
      // Lists and objects merge with the server's rather than replace it.
      const value = mergeTwoWay(localValue, serverValue, "unknown")!;
      data[key] = value;
      if (!deepEqual(value, serverValue)) result.localFields.push(key);
      else if (!deepEqual(value, localValue)) result.serverFields.push(key);
    } else {
      if (typeof serverValue === "object" && serverValue !== null) {
        data[key] = cloneValue(serverValue);
      }
      if (!same && !deepEqual(serverValue, localValue)) {
        result.serverFields.push(key);
      }
    }
  }
  for (const key of localKeys) {
    const localValue = local[key];
    if (localValue === undefined || hasValue(server, key)) continue;
    if (!system.has(key) && localValue !== null) {
      setOwn(data, key, mergeTwoWay(localValue, undefined, "unknown")!);
      result.localFields.push(key);
    } else {
      // The server lacks it and the client's value does not win: the
      // server's absence is what the result keeps.
      result.serverFields.push(key);
    }
  }
}

function mergeKnownChanges(
  local: JsonObject,
  server: JsonObject,
  base: JsonObject | null,
  changed: ReadonlySet<string>,
  result: MergeResult,
): void {
  // The result starts as a shallow copy of the server record (keeping its
  // key order); below, untouched objects and arrays are replaced by copies
  // and changed fields by their merged values, so nothing is cloned twice.
  const data = copyObject(server);
  result.data = data;
  const serverKeys = Object.keys(server);
  const localKeys = Object.keys(local);
  if (sameKeys(serverKeys, localKeys)) {
    // The usual case: both records list the same fields in the same order
    // (they came from the same server). Values aligned by index spare a
    // hash lookup per field, which dominates on wide records.
    const serverValues = Object.values(server);
    const localValues = Object.values(local);
    for (let i = 0; i < serverKeys.length; i++) {
      const key = serverKeys[i]!;
      const serverValue = serverValues[i];
      const localValue = localValues[i];
      if (changed.has(key)) {
        if (serverValue !== undefined || localValue !== undefined) {
          mergeChangedField(key, local, server, base, result);
        }
      } else if (serverValue === undefined) {
        // Absent on the server (copyObject dropped it): absent it stays.
        if (localValue !== undefined) result.serverFields.push(key);
      } else {
        if (typeof serverValue === "object" && serverValue !== null) {
          data[key] = cloneValue(serverValue);
        }
        if (serverValue !== localValue && !deepEqual(serverValue, localValue)) {
          result.serverFields.push(key);
        }
      }
    }
    return;
  }
  let shared = 0;
  for (const key of Object.keys(data)) {
    const serverValue = data[key]!;
    const localValue = getOwn(local, key);
    if (localValue !== undefined) shared++;
    if (changed.has(key)) {
      mergeChangedField(key, local, server, base, result);
    } else {
      if (typeof serverValue === "object" && serverValue !== null) {
        data[key] = cloneValue(serverValue);
      }
      if (serverValue !== localValue && !deepEqual(serverValue, localValue)) {
        result.serverFields.push(key);
      }
    }
  }
  // Often both sides have the same fields: then there is nothing left.
  if (localKeys.length === shared) return;
  for (const key of localKeys) {
    if (local[key] === undefined || hasValue(server, key)) continue;
    if (changed.has(key)) {
      mergeChangedField(key, local, server, base, result);
    } else {
      result.serverFields.push(key);
    }
  }
}

function mergeChangedField(
  key: string,
  local: JsonObject,
  server: JsonObject,
  base: JsonObject | null,
  result: MergeResult,
): void {
  const localValue = getOwn(local, key);
  const serverValue = getOwn(server, key);
  let value: JsonValue | undefined;
  if (base === null) {
    value = localValue === undefined
      ? undefined
      : mergeTwoWay(localValue, serverValue, "changed");
  } else {
    const baseValue = getOwn(base, key);
    // A server edit of a field the client removed still overlaps: it goes
    // through the both-changed path and is reported.
    value = deepEqual(serverValue, baseValue)
      ? cloneOptional(localValue)
      : mergeBothChanged(
        localValue,
        serverValue,
        baseValue,
        key,
        result.conflictingFields,
      );
  }
  if (value !== undefined) writeOwn(result.data, key, value);
  else if (Object.hasOwn(result.data, key)) delete result.data[key];
  if (!deepEqual(value, serverValue)) {
    result.localFields.push(key);
  } else if (!deepEqual(value, localValue)) {
    result.serverFields.push(key);
  }
}

/**
 * Merges values that both sides changed relative to `base`; local wins
 * unless lists or objects let both changes through.
 */
function mergeBothChanged(
  localValue: JsonValue | undefined,
  serverValue: JsonValue | undefined,
  baseValue: JsonValue | undefined,
  path: string,
  conflicts: string[],
): JsonValue | undefined {
  // The same change on both sides is agreement, not a conflict.
  if (deepEqual(localValue, serverValue)) return cloneOptional(localValue);
  if (Array.isArray(localValue) && Array.isArray(serverValue)) {
    // A base that was not a list (or absent) contributed no items.
    const baseList = Array.isArray(baseValue) ? baseValue : [];
    return mergeListsThreeWay(
      baseList,
      localValue,
      serverValue,
      path,
      conflicts,
    );
  }
  if (isJsonObject(localValue) && isJsonObject(serverValue)) {
    const baseObject = isJsonObject(baseValue) ? baseValue : {};
    return mergeObjectsThreeWay(
      baseObject,
      localValue,
      serverValue,
      path,
      conflicts,
    );
  }
  conflicts.push(path);
  return cloneOptional(localValue);
}

function mergeObjectsThreeWay(
  base: JsonObject,
  local: JsonObject,
  server: JsonObject,
  path: string,
  conflicts: string[],
): JsonObject {
  const out: JsonObject = {};
  for (const key of Object.keys(server)) {
    if (server[key] === undefined) continue;
    mergeSubField(key, base, local, server, out, path, conflicts);
  }
  for (const key of Object.keys(local)) {
    if (local[key] === undefined || hasValue(server, key)) continue;
    mergeSubField(key, base, local, server, out, path, conflicts);
  }
  return out;
}

function mergeSubField(
  key: string,
  base: JsonObject,
  local: JsonObject,
  server: JsonObject,
  out: JsonObject,
  path: string,
  conflicts: string[],
): void {
  const localValue = getOwn(local, key);
  const serverValue = getOwn(server, key);
  const baseValue = getOwn(base, key);
  // Below the top level there is no changedFields: the base tells who
  // changed what.
  let value: JsonValue | undefined;
  if (deepEqual(localValue, baseValue)) {
    value = cloneOptional(serverValue);
  } else if (deepEqual(serverValue, baseValue)) {
    value = cloneOptional(localValue);
  } else {
    value = mergeBothChanged(
      localValue,
      serverValue,
      baseValue,
      `${path}.${key}`,
      conflicts,
    );
  }
  if (value !== undefined) setOwn(out, key, value);
}

/**
 * What a two-way merge (no base) lets the client's side claim.
 *
 * - `"changed"`: a field the client declared changed. Every local value wins,
 *   `null` included; an item whose `id` both lists hold is the client's.
 * - `"unknown"`: nothing says what the client changed (the original
 *   library's rule). A local `null` is no value and never wins; an item whose
 *   `id` both lists hold merges field by field by this same rule.
 */
type TwoWayRule = "changed" | "unknown";

/**
 * Merges without a base: local values win, lists union, objects recurse.
 * Returns `undefined` only for an `"unknown"` local `null` the server has no
 * value for.
 */
function mergeTwoWay(
  localValue: JsonValue,
  serverValue: JsonValue | undefined,
  rule: TwoWayRule,
): JsonValue | undefined {
  if (localValue === null && rule === "unknown") {
    return cloneOptional(serverValue);
  }
  if (Array.isArray(localValue)) {
    return Array.isArray(serverValue)
      ? unionLists(localValue, serverValue, rule)
      : cloneValue(localValue);
  }
  if (isJsonObject(localValue)) {
    // Against a non-object the local object wins, merged with nothing.
    return mergeObjectsTwoWay(
      localValue,
      isJsonObject(serverValue) ? serverValue : null,
      rule,
    );
  }
  return localValue;
}

/** The server's fields in its order, then local-only ones in local order. */
function mergeObjectsTwoWay(
  local: JsonObject,
  server: JsonObject | null,
  rule: TwoWayRule,
): JsonObject {
  const out: JsonObject = {};
  if (server !== null) {
    for (const key of Object.keys(server)) {
      const serverSub = server[key];
      if (serverSub === undefined) continue;
      const localSub = getOwn(local, key);
      const value = localSub === undefined
        ? cloneValue(serverSub)
        : mergeTwoWay(localSub, serverSub, rule);
      if (value !== undefined) setOwn(out, key, value);
    }
  }
  for (const key of Object.keys(local)) {
    const localSub = local[key];
    if (localSub === undefined) continue;
    if (server !== null && hasValue(server, key)) continue;
    const value = mergeTwoWay(localSub, undefined, rule);
    if (value !== undefined) setOwn(out, key, value);
  }
  return out;
}

/**
 * List items are identified by their `id` when they are objects with a
 * string or number `id`, by value when they are primitives (both via maps,
 * so tag lists merge in linear time), and otherwise by deep equality.
 */
interface ItemIndex {
  // Created on first use: most lists hold one kind of item, and the engine
  // merges per conflict.
  values: Set<JsonValue> | undefined;
  ids: Map<string | number, JsonValue> | undefined;
  others: JsonValue[] | undefined;
}

function itemId(item: JsonValue): string | number | undefined {
  if (!isJsonObject(item) || !Object.hasOwn(item, "id")) return undefined;
  const id = item["id"];
  return typeof id === "string" || typeof id === "number" ? id : undefined;
}

function createIndex(items: readonly JsonValue[] = []): ItemIndex {
  const index: ItemIndex = {
    values: undefined,
    ids: undefined,
    others: undefined,
  };
  for (const item of items) addToIndex(index, item);
  return index;
}

/** Adds the first item of each identity; later duplicates are ignored. */
function addToIndex(index: ItemIndex, item: JsonValue): void {
  if (typeof item !== "object" || item === null) {
    (index.values ??= new Set()).add(item);
    return;
  }
  const id = itemId(item);
  if (id !== undefined) {
    const ids = index.ids ??= new Map();
    if (!ids.has(id)) ids.set(id, item);
    return;
  }
  if (findOther(index, item) === undefined) (index.others ??= []).push(item);
}

function findOther(index: ItemIndex, item: JsonValue): JsonValue | undefined {
  if (index.others === undefined) return undefined;
  for (const other of index.others) {
    if (deepEqual(other, item)) return other;
  }
  return undefined;
}

/** The indexed item with the same identity as `item`, or `undefined`. */
function findInIndex(
  index: ItemIndex,
  item: JsonValue,
): JsonValue | undefined {
  if (typeof item !== "object" || item === null) {
    return index.values?.has(item) ? item : undefined;
  }
  const id = itemId(item);
  if (id !== undefined) return index.ids?.get(id);
  return findOther(index, item);
}

/**
 * Server list + items local added − items local removed. The server's list
 * keeps its order (and any duplicates it already had); local additions are
 * appended in local order.
 */
function mergeListsThreeWay(
  base: readonly JsonValue[],
  local: readonly JsonValue[],
  server: readonly JsonValue[],
  path: string,
  conflicts: string[],
): JsonValue[] {
  const baseIndex = createIndex(base);
  const localIndex = createIndex(local);
  const outIndex = createIndex();
  const out: JsonValue[] = [];
  let conflict = false;
  for (const serverItem of server) {
    const localItem = findInIndex(localIndex, serverItem);
    const baseItem = findInIndex(baseIndex, serverItem);
    if (localItem === undefined) {
      if (baseItem !== undefined) {
        // Removed locally; a server edit of the removed item overlaps it.
        if (!deepEqual(baseItem, serverItem)) conflict = true;
        continue;
      }
      out.push(cloneValue(serverItem));
      addToIndex(outIndex, serverItem);
      continue;
    }
    if (findInIndex(outIndex, serverItem) !== undefined) {
      // The server's own duplicate: kept as it is, so no local version is
      // copied twice.
      out.push(cloneValue(serverItem));
      continue;
    }
    let chosen = serverItem;
    // Only items with an id can differ while having the same identity.
    if (!deepEqual(localItem, serverItem)) {
      // Both added the same id (no base item) counts as both changing it.
      const localChanged = baseItem === undefined ||
        !deepEqual(localItem, baseItem);
      if (localChanged) {
        chosen = localItem;
        if (baseItem === undefined || !deepEqual(serverItem, baseItem)) {
          conflict = true;
        }
      }
    }
    out.push(cloneValue(chosen));
    addToIndex(outIndex, serverItem);
  }
  for (const localItem of local) {
    if (findInIndex(outIndex, localItem) !== undefined) continue;
    const baseItem = findInIndex(baseIndex, localItem);
    if (baseItem !== undefined) {
      // The server removed it. Keep it only when the client edited it: the
      // client's change wins an overlap, as for fields.
      if (deepEqual(baseItem, localItem)) continue;
      conflict = true;
    }
    out.push(cloneValue(localItem));
    addToIndex(outIndex, localItem);
  }
  if (conflict) conflicts.push(path);
  return out;
}

/**
 * The server's list, then local items it lacks; an item whose `id` both
 * lists have takes the local version in the server's position, merged into
 * the server's item under the `"unknown"` rule.
 */
function unionLists(
  local: readonly JsonValue[],
  server: readonly JsonValue[],
  rule: TwoWayRule,
): JsonValue[] {
  const localIndex = createIndex(local);
  const out: JsonValue[] = [];
  const outIndex = createIndex();
  for (const serverItem of server) {
    const id = itemId(serverItem);
    // Only the first server item of an id takes the local version; later
    // ones are the server's own duplicates and stay as they are.
    const localItem = id === undefined || outIndex.ids?.has(id)
      ? undefined
      : localIndex.ids?.get(id);
    if (localItem === undefined) out.push(cloneValue(serverItem));
    else if (rule === "changed") out.push(cloneValue(localItem));
    else {
      // itemId() found an id in both: both items are objects.
      out.push(
        mergeObjectsTwoWay(
          localItem as JsonObject,
          serverItem as JsonObject,
          rule,
        ),
      );
    }
    addToIndex(outIndex, serverItem);
  }
  for (const localItem of local) {
    if (findInIndex(outIndex, localItem) !== undefined) continue;
    out.push(cloneValue(localItem));
    addToIndex(outIndex, localItem);
  }
  return out;
}
