/**
 * How every error message of the package shows a value: short, bounded and
 * safe for hostile input. A leaf module (no imports), shared by the engine,
 * the storages, the transport and the server; not exported from `mod.ts`.
 *
 * @module
 */

/** The most characters of a value a message shows. */
const MAX_CHARS = 64;

/**
 * A short, bounded description of a value for an error message: at most 64
 * characters of it, cut with `…`. Strings are quoted as JSON (which escapes
 * lone surrogates); objects and arrays are sketched two levels deep and four
 * entries wide, never by a full `JSON.stringify` (a hostile value may be
 * huge, deep or cyclic).
 *
 * @param value Any value.
 * @returns The description.
 *
 * @example Usage
 * ```ts
 * import { describe } from "./describe.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(describe("todo"), '"todo"');
 * assert.equal(describe({ a: [1, 2] }), '{"a":[1,2]}');
 * assert.equal(describe("x".repeat(100)), `"${"x".repeat(64)}…"`);
 * // Never half a surrogate pair, which no UTF-8 log line could carry.
 * assert.ok(describe("😀".repeat(100)).isWellFormed());
 * ```
 */
export function describe(value: unknown): string {
  // A string is cut inside its quotes; anything else once sketched.
  if (typeof value === "string") return sketch(value, 0);
  const text = sketch(value, 2);
  return text.length > MAX_CHARS ? `${cut(text)}…` : text;
}

/** The first MAX_CHARS units of `text`, never half a surrogate pair. */
function cut(text: string): string {
  const last = text.charCodeAt(MAX_CHARS - 1);
  return text.slice(
    0,
    last >= 0xd800 && last <= 0xdbff ? MAX_CHARS - 1 : MAX_CHARS,
  );
}

function sketch(value: unknown, depth: number): string {
  switch (typeof value) {
    case "string":
      return JSON.stringify(
        value.length > MAX_CHARS ? `${cut(value)}…` : value,
      );
    case "number":
    case "boolean":
      return String(value);
    case "bigint":
      return `${value}n`;
    case "undefined":
      return "undefined";
    case "function":
      return "a function";
    case "symbol":
      return "a symbol";
  }
  if (value === null) return "null";
  if (value instanceof Error) {
    return sketch(`${value.name}: ${value.message}`, 0);
  }
  if (depth === 0) return Array.isArray(value) ? "[…]" : "{…}";
  const parts: string[] = [];
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length && i < 4; i++) {
      parts.push(sketch(value[i], depth - 1));
    }
    if (value.length > 4) parts.push("…");
    return `[${parts.join(",")}]`;
  }
  let count = 0;
  for (const key in value) {
    if (!Object.hasOwn(value, key)) continue;
    if (count++ === 4) {
      parts.push("…");
      break;
    }
    parts.push(
      `${sketch(key, 0)}:${
        sketch((value as Record<string, unknown>)[key], depth - 1)
      }`,
    );
  }
  return `{${parts.join(",")}}`;
}
