/**
 * What the reference server reads from a write request: the body within its
 * limits, the idempotency key, the force flags and the query, as one
 * {@linkcode WriteCall} that a single request and a batch op both become.
 *
 * @module
 */

import type { JsonValue } from "../src/json.ts";
import { parseTimestamp } from "../src/timestamp.ts";
import { describe } from "../src/describe.ts";
import { decodeUtf8 } from "../src/_utf8.ts";
import { isTooDeep, keyRefusal } from "./_limits.ts";
import { failure, refusal, type Reply } from "./_reply.ts";

/**
 * A PUT body as far as it could be read. A body that breaks a limit keeps
 * only that fact: nothing recursive (fingerprint, schema, store) sees it.
 */
export type BodyInput =
  | {
    readonly type: "json";
    readonly value: JsonValue;
    /** Its JSON text's length, when known (a batch op's payload). */
    readonly size?: number;
  }
  | { readonly type: "text"; readonly text: string }
  | { readonly type: "too_large" }
  | { readonly type: "too_deep" };

/** One write, from a single request or a batch op. */
export type WriteCall =
  | {
    readonly method: "PUT";
    readonly kind: string;
    readonly id: string;
    readonly key: string | null;
    readonly force: boolean;
    readonly body: BodyInput;
    readonly extra: readonly (readonly [string, string])[];
  }
  | {
    readonly method: "DELETE";
    readonly kind: string;
    readonly id: string;
    readonly key: string | null;
    readonly force: boolean;
    readonly base: string | null;
    readonly extra: readonly (readonly [string, string])[];
  };

/**
 * Reads a write's idempotency key from `Idempotency-Key` or its alias
 * `X-Idempotency-Key`.
 *
 * @param headers The request's headers.
 * @returns The key, `null` without one, or the `400` reply that refuses it.
 */
export function idempotencyKey(headers: Headers): string | null | Reply {
  const key = headers.get("idempotency-key");
  const alias = headers.get("x-idempotency-key");
  if (key !== null && alias !== null && key !== alias) {
    return failure(
      400,
      "invalid_idempotency_key",
      `Cannot apply request as 'Idempotency-Key' and 'X-Idempotency-Key' differ: current value is ${
        describe([key, alias])
      }`,
    );
  }
  const value = key ?? alias;
  if (value === null) return null;
  const refused = keyRefusal(value, "apply request");
  return refused === null ? value : refusal(refused);
}

/**
 * Reads a boolean header such as `X-Force-Update`.
 *
 * @param header The header's value.
 * @returns `true` only for `true`, in any case and spacing.
 */
export function isTrue(header: string | null): boolean {
  return header !== null && header.trim().toLowerCase() === "true";
}

/**
 * A request's query parameters in a canonical order, for its fingerprint.
 *
 * @param params The query.
 * @param omit A parameter to leave out, or `null`.
 * @returns The name-value pairs, sorted.
 */
export function sortedParams(
  params: URLSearchParams,
  omit: string | null,
): [string, string][] {
  return [...params].filter(([name]) => name !== omit).sort((a, b) =>
    a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0
  );
}

/**
 * Reads a body up to `max` bytes, trusting neither `Content-Length` nor its
 * absence: the bytes actually read are counted too.
 *
 * @param request The request.
 * @param max The most bytes to read.
 * @returns The body as JSON, as text, or the limit it broke.
 */
export async function readBody(
  request: Request,
  max: number,
): Promise<BodyInput> {
  const declared = request.headers.get("content-length");
  if (declared !== null && /^\s*\d+\s*$/.test(declared) && +declared > max) {
    await request.body?.cancel().catch(ignore);
    return { type: "too_large" };
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (request.body !== null) {
    const reader = request.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > max) {
        await reader.cancel().catch(ignore);
        return { type: "too_large" };
      }
      chunks.push(value);
    }
  }
  let bytes: Uint8Array;
  if (chunks.length === 1) {
    bytes = chunks[0]!;
  } else {
    bytes = new Uint8Array(size);
    let offset = 0;
    for (const chunk of chunks) {
      bytes.set(chunk, offset);
      offset += chunk.byteLength;
    }
  }
  const { text, malformed } = decodeUtf8(bytes);
  if (malformed) return { type: "text", text: "<invalid UTF-8>" };
  try {
    return { type: "json", value: JSON.parse(text) as JsonValue };
  } catch {
    return { type: "text", text };
  }
}

/**
 * Reads a version-check base.
 *
 * @param value `_baseUpdatedAt` as sent.
 * @returns The instant (ms), `null` when absent, `"invalid"` when malformed.
 */
export function parseBase(
  value: JsonValue | undefined,
): number | null | "invalid" {
  if (value === undefined || value === null) return null;
  if (typeof value !== "string") return "invalid";
  return parseTimestamp(value) ?? "invalid";
}

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


/**
 * Turns a JSON body deeper than the contract allows into `too_deep`.
 *
 * @param body The body as read.
 * @returns The body, or `too_deep`.
 */
export function withinDepth(body: BodyInput): BodyInput {
  return body.type === "json" && isTooDeep(body.value)
    ? { type: "too_deep" }
    : body;
}

function ignore(): void {}
