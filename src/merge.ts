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

import { cloneOptional, cloneValue, copyObject } from "./_clone.ts";
import { deepEqual, diffFields, getOwn, hasValue } from "./_diff.ts";
import { mergeBothChanged } from "./_merge_three_way.ts";
import { mergeTwoWay } from "./_merge_two_way.ts";
import { describe } from "./describe.ts";
import {
  isJsonObject,
  type JsonObject,
  type JsonValue,
  setOwn,
} from "./json.ts";

export { deepEqual, diffFields } from "./_diff.ts";

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

/**
 * Sets `key` on an object made by this module: plain assignment when `key`
 * is already an own data property (then `[[Set]]` writes it in place and
 * never reaches a `"__proto__"` setter), {@linkcode setOwn} otherwise.
 */
function writeOwn(obj: JsonObject, key: string, value: JsonValue): void {
  if (Object.hasOwn(obj, key)) obj[key] = value;
  else setOwn(obj, key, value);
}

/** Whether two key lists are equal, in order. */
function sameKeys(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
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

/** Where a merge starts, and what both records' fields are. */
interface MergeStart {
  /** The result's data: a shallow copy of the server record. */
  readonly data: JsonObject;
  readonly serverKeys: string[];
  readonly localKeys: string[];
  /** Whether both records list the same fields in the same order. */
  readonly aligned: boolean;
}

/**
 * Starts the result's data as a shallow copy of the server record (keeping
 * its key order); the merge then replaces untouched objects and arrays by
 * copies and changed fields by their merged values, so nothing is cloned
 * twice.
 */
function startMerge(local: JsonObject, server: JsonObject): MergeStart {
  const data = copyObject(server);
  const serverKeys = Object.keys(server);
  const localKeys = Object.keys(local);
  return {
    data,
    serverKeys,
    localKeys,
    aligned: sameKeys(serverKeys, localKeys),
  };
}

/** The original library's rule: every non-null local field wins. */
function mergeUnknownChanges(
  local: JsonObject,
  server: JsonObject,
  system: ReadonlySet<string>,
  result: MergeResult,
): void {
  const { data, serverKeys, localKeys, aligned } = startMerge(local, server);
  result.data = data;
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
  const { data, serverKeys, localKeys, aligned } = startMerge(local, server);
  result.data = data;
  if (aligned) {
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
