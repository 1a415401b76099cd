/**
 * The reference server's side of CONTRACT.md §Limits: what it reports in
 * `GET /health`, and the bounded helpers its refusals are built with. Every
 * helper here costs no more than the limit it enforces, whatever the request
 * holds, so a refusal never becomes a 500 (a message that quoted a value by
 * `JSON.stringify` could overflow or allocate megabytes).
 *
 * @module
 */

import {
  exceedsDepth,
  idempotencyKeyProblem,
  idProblem,
  kindProblem,
  WIRE_LIMITS,
  type WireLimits,
} from "../src/limits.ts";
import { describe } from "../src/describe.ts";

/**
 * The limits a server states in `GET /health` (`"limits"`): the wire
 * contract's, where `maxRecordBytes`, the batch and page sizes may be the
 * server's own, plus how many idempotency keys it stores per principal.
 */
export interface ServerLimits extends WireLimits {
  /** Most idempotency keys stored per principal. */
  readonly maxIdempotencyKeys: number;
}

/** A refusal before a reply: status, JSON error code and message. */
export interface Refusal {
  /** The HTTP status. */
  readonly status: number;
  /** The JSON error code. */
  readonly error: string;
  /** The std-style message. */
  readonly message: string;
}

/**
 * The refusal of a kind that breaks the limits, or `null`.
 *
 * @param kind The decoded kind.
 * @param action What was refused, such as `"pull"`.
 * @returns `400 invalid_kind`, or `null` for a valid kind.
 */
export function kindRefusal(kind: string, action: string): Refusal | null {
  const problem = kindProblem(kind);
  return problem === null ? null : {
    status: 400,
    error: "invalid_kind",
    message:
      `Cannot ${action} as the kind is not valid, ${problem}: current value is ${
        describe(kind)
      }`,
  };
}

/**
 * The refusal of an id that breaks the limits, or `null`.
 *
 * @param id The decoded id.
 * @param action What was refused.
 * @returns `400 invalid_id`, or `null` for a valid id.
 */
export function idRefusal(id: string, action: string): Refusal | null {
  const problem = idProblem(id);
  return problem === null ? null : {
    status: 400,
    error: "invalid_id",
    message:
      `Cannot ${action} as the id is not valid, ${problem}: current value is ${
        describe(id)
      }`,
  };
}

/**
 * The refusal of an idempotency key that breaks the limits, or `null`.
 *
 * @param key The key.
 * @param action What was refused.
 * @returns `400 invalid_idempotency_key`, or `null` for a valid key.
 */
export function keyRefusal(key: string, action: string): Refusal | null {
  const problem = idempotencyKeyProblem(key);
  return problem === null ? null : {
    status: 400,
    error: "invalid_idempotency_key",
    message:
      `Cannot ${action} as its idempotency key is not valid, ${problem}: current value is ${
        describe(key)
      }`,
  };
}

/**
 * Tells whether a record nests deeper than the contract allows. It must run
 * before anything recursive sees the value (canonical JSON, a schema, a
 * structured clone): the check itself stops one level past the limit.
 *
 * @param value The record (level 1).
 * @returns `true` when it is too deep.
 */
export function isTooDeep(value: unknown): boolean {
  return exceedsDepth(value, WIRE_LIMITS.maxDepth);
}

/**
 * The refusal of a record nested deeper than the contract allows.
 *
 * @param action What was refused.
 * @returns `400 too_deep`.
 */
export function tooDeepRefusal(action: string): Refusal {
  return {
    status: 400,
    error: "too_deep",
    message:
      `Cannot ${action} as the record nests deeper than ${WIRE_LIMITS.maxDepth} levels`,
  };
}

/**
 * The number of UTF-8 bytes of a string, as `TextEncoder` would write it (a
 * lone surrogate as the 3 bytes of U+FFFD), without allocating.
 *
 * @param text The string.
 * @returns Its UTF-8 length.
 */
export function utf8Length(text: string): number {
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) continue;
    if (unit < 0x800) {
      bytes += 1;
    } else if (
      unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length &&
      (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00
    ) {
      // Two units, four bytes.
      bytes += 2;
      i++;
    } else {
      bytes += 2;
    }
  }
  return bytes;
}
