/**
 * The identity of list items for list merges: objects with a string or
 * number `id` by that id, primitives by value, anything else by deep
 * equality. Private to the merge modules.
 *
 * @module
 */

import { deepEqual } from "./_diff.ts";
import { isJsonObject, type JsonValue } from "./json.ts";

/**
 * List items are identified by their `id` when they are objects with a
 * string or number `id`, by value when they are primitives (both via maps,
 * so tag lists merge in linear time), and otherwise by deep equality.
 */
export interface ItemIndex {
  // Created on first use: most lists hold one kind of item, and the engine
  // merges per conflict.
  values: Set<JsonValue> | undefined;
  ids: Map<string | number, JsonValue> | undefined;
  others: JsonValue[] | undefined;
}

export function itemId(item: JsonValue): string | number | undefined {
  if (!isJsonObject(item) || !Object.hasOwn(item, "id")) return undefined;
  const id = item["id"];
  return typeof id === "string" || typeof id === "number" ? id : undefined;
}

export function createIndex(items: readonly JsonValue[] = []): ItemIndex {
  const index: ItemIndex = {
    values: undefined,
    ids: undefined,
    others: undefined,
  };
  for (const item of items) addToIndex(index, item);
  return index;
}

/** Adds the first item of each identity; later duplicates are ignored. */
export function addToIndex(index: ItemIndex, item: JsonValue): void {
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
export function findInIndex(
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
