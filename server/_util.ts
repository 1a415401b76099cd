/**
 * Small helpers the reference server's modules share.
 *
 * @module
 */

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
