/**
 * Merges of values both sides changed relative to a base (ENGINE.md clause
 * 14): lists three-way, objects field by field, anything else local wins
 * and the path is reported. Private to `merge.ts`.
 *
 * @module
 */

import { cloneOptional, cloneValue } from "./_clone.ts";
import { deepEqual, getOwn, hasValue } from "./_diff.ts";
import { addToIndex, createIndex, findInIndex } from "./_item_index.ts";
import {
  isJsonObject,
  type JsonObject,
  type JsonValue,
  setOwn,
} from "./json.ts";

/**
 * Merges values that both sides changed relative to `base`; local wins
 * unless lists or objects let both changes through.
 */
export function mergeBothChanged(
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
