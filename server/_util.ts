/**
 * Small helpers the reference server's modules share.
 *
 * @module
 */

import type { JsonObject } from "../src/json.ts";
import type { ServerRecord } from "./store.ts";

/**
 * A listed record from its stored JSON text: `text` is sent by a pull as
 * it is, and `data` is parsed only when something reads it (once).
 *
 * @param meta The record without its data.
 * @param text Its data's JSON text, as stored.
 * @returns The record.
 */
export function listedRecord(
  meta: Omit<ServerRecord, "data" | "text">,
  text: string,
): ServerRecord {
  let data: JsonObject | undefined;
  return {
    kind: meta.kind,
    id: meta.id,
    updatedAt: meta.updatedAt,
    deletedAt: meta.deletedAt,
    get data(): JsonObject {
      return data ??= JSON.parse(text) as JsonObject;
    },
    text,
  };
}

/**
 * Tells whether a value is a non-null object.
 *
 * @param value Any value.
 * @returns `true` for an object or an array.
 */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null;
}

/**
 * The inner map of `outer` at `key`, created when absent.
 *
 * @param outer A map of maps.
 * @param key The outer key.
 * @returns The inner map.
 */
export function inner<K, L, V>(outer: Map<K, Map<L, V>>, key: K): Map<L, V> {
  let map = outer.get(key);
  if (map === undefined) {
    map = new Map();
    outer.set(key, map);
  }
  return map;
}
