/**
 * The fingerprint of a write: what makes two requests under one idempotency
 * key the same request. Stores keep it, so its input and output never
 * change.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { isJsonObject, type JsonObject, type JsonValue } from "../src/json.ts";
import type { WriteCall } from "./_wire.ts";

/**
 * The digest of what makes two writes the same request: SHA-256, in hex, of
 * the canonical JSON of `[...parts, kind, id, force, extra]`. Stores keep it,
 * so its input and output never change. A JSON body has passed the depth
 * limit first: the canonical JSON recurses.
 *
 * `node:crypto`'s synchronous `createHash` hashes a 400-byte request in
 * about 1 µs. `crypto.subtle.digest` took 40 µs awaited one after another
 * under the write lock (12 µs when a batch's are awaited together); a
 * hand-written SHA-256 takes 2 µs but is 150 lines to trust. The price is
 * the import: 15 to 25 ms once per process in Deno.
 *
 * @param call The write.
 * @param body `canonicalBody()` of a JSON PUT body, when the caller made it
 * already (a batch measures the body with it).
 * @returns The digest.
 */
export function fingerprintOf(call: WriteCall, body?: string): string {
  let canonical: string;
  if (call.method === "DELETE") {
    canonical = `["DELETE",${canonicalJson(call.base)}`;
  } else if (call.body.type === "json") {
    const value = call.body.value;
    const text = body ?? canonicalBody(value);
    canonical = isJsonObject(value)
      ? `["PUT","json",${canonicalJson(value._baseUpdatedAt ?? null)},${text}`
      : `["PUT","json",null,${text}`;
  } else if (call.body.type === "text") {
    canonical = `["PUT","text",null,${JSON.stringify(call.body.text)}`;
  } else {
    // A body past a limit is the same request whatever it held.
    canonical = `["PUT","${call.body.type}",null,null`;
  }
  canonical += `,${JSON.stringify(call.kind)},${JSON.stringify(call.id)},${
    call.force ? "true" : "false"
  },[`;
  for (let i = 0; i < call.extra.length; i++) {
    const [name, value] = call.extra[i]!;
    canonical += `${i === 0 ? "" : ","}[${JSON.stringify(name)},${
      JSON.stringify(value)
    }]`;
  }
  canonical += "]]";
  return createHash("sha256").update(canonical).digest("hex");
}

/**
 * The canonical JSON of a PUT body, as the fingerprint holds it: keys
 * sorted, a top-level `_baseUpdatedAt` left out (the fingerprint holds it
 * apart). It is as long as `JSON.stringify` of the body without that key,
 * so a batch measures its ops' bodies with it instead of stringifying them
 * once more.
 *
 * @param value The body, within the depth limit.
 * @returns The text.
 */
export function canonicalBody(value: JsonValue): string {
  return isJsonObject(value)
    ? canonicalJson(value, "_baseUpdatedAt")
    : canonicalJson(value);
}

/**
 * JSON with object keys sorted, so that key order does not change a digest;
 * `omit` leaves out one key of a top-level object.
 *
 * The fast path copies objects with their keys inserted in sorted order and
 * lets `JSON.stringify` write the copy: insertion order is property order
 * except for array-index keys, which always come first, and a `__proto__`
 * key, which assignment would turn into a prototype. A key that starts with a
 * digit or is `__proto__` sends the whole value down the slow path, which
 * writes the same text piece by piece.
 */
function canonicalJson(value: JsonValue, omit: string | null = null): string {
  const copy = sortedCopy(value, omit);
  return copy === UNSORTABLE
    ? canonicalText(value, omit)
    : JSON.stringify(copy);
}

/** What {@linkcode sortedCopy} returns for a value it cannot copy faithfully. */
const UNSORTABLE: unique symbol = Symbol("unsortable");

function sortedCopy(
  value: JsonValue,
  omit: string | null,
): JsonValue | typeof UNSORTABLE {
  if (typeof value !== "object" || value === null) return value;
  if (Array.isArray(value)) {
    let copy: JsonValue[] | null = null;
    for (let i = 0; i < value.length; i++) {
      const item = value[i]!;
      if (typeof item !== "object" || item === null) continue;
      const sorted = sortedCopy(item, null);
      if (sorted === UNSORTABLE) return UNSORTABLE;
      copy ??= value.slice();
      copy[i] = sorted;
    }
    return copy ?? value;
  }
  const copy: JsonObject = {};
  for (const key of Object.keys(value).sort()) {
    if (key === omit) continue;
    const first = key.charCodeAt(0);
    if ((first >= 48 && first <= 57) || key === "__proto__") return UNSORTABLE;
    const item = value[key]!;
    if (typeof item !== "object" || item === null) {
      copy[key] = item;
    } else {
      const sorted = sortedCopy(item, null);
      if (sorted === UNSORTABLE) return UNSORTABLE;
      copy[key] = sorted;
    }
  }
  return copy;
}

/** {@linkcode canonicalJson}'s slow path: the same text, piece by piece. */
function canonicalText(value: JsonValue, omit: string | null): string {
  if (typeof value !== "object" || value === null) return JSON.stringify(value);
  if (Array.isArray(value)) {
    let out = "[";
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out += ",";
      out += canonicalText(value[i]!, null);
    }
    return `${out}]`;
  }
  let out = "{";
  for (const key of Object.keys(value).sort()) {
    if (key === omit) continue;
    if (out.length > 1) out += ",";
    out += `${JSON.stringify(key)}:${canonicalText(value[key]!, null)}`;
  }
  return `${out}}`;
}
