/**
 * Merges without a base (ENGINE.md clause 14): local values win, lists
 * union, objects recurse. Private to `merge.ts`.
 *
 * @module
 */

import { cloneOptional, cloneValue } from "./_clone.ts";
import { getOwn, hasValue } from "./_diff.ts";
import { addToIndex, createIndex, findInIndex, itemId } from "./_item_index.ts";
import {
  isJsonObject,
  type JsonObject,
  type JsonValue,
  setOwn,
} from "./json.ts";

/**
 * What a two-way merge (no base) lets the client's side claim.
 *
 * - `"changed"`: a field the client declared changed. Every local value wins,
 *   `null` included; an item whose `id` both lists hold is the client's.
 * - `"unknown"`: nothing says what the client changed (the original
 *   library's rule). A local `null` is no value and never wins; an item whose
 *   `id` both lists hold merges field by field by this same rule.
 */
export type TwoWayRule = "changed" | "unknown";

/**
 * Merges without a base: local values win, lists union, objects recurse.
 * Returns `undefined` only for an `"unknown"` local `null` the server has no
 * value for.
 */
export function mergeTwoWay(
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
