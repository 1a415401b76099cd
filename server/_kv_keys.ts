/**
 * The keys of the Deno KV server store (`kv.ts`), and how strings become key
 * parts. Private to the KV server store and its tests.
 *
 * Under the store's prefix `P`, with `N` a namespace's part, `K` a kind's and
 * `I` an id's:
 *
 * | key | value |
 * |---|---|
 * | `P, "c", N` | the namespace's clock: `{ updatedAt, id, intent? }` |
 * | `P, "r", N, K, I` | a record: {@linkcode StoredRecord} |
 * | `P, "u", N, K, updatedAt, I` | the pull index: `{ size, deleted }` |
 * | `P, "t", updatedAt, N, K, I` | a tombstone, oldest first, for purges |
 * | `P, "h", N, K` | a kind's tombstone horizon (ms) |
 * | `P, "k", N, key` | an idempotency entry: {@linkcode StoredEntry} |
 * | `P, "x", N, expiresAt, key` | a namespace's entries, oldest first |
 * | `P, "e", expiresAt, N, key` | every entry, oldest first, for purges |
 * | `P, "b", blob, n` | chunk `n` of a large value (`Uint8Array`) |
 * | `P, "i", N, intent, n` | part `n` of a commit larger than one atomic |
 * | `P, "p", blob or intent` | a staged or superseded blob or intent |
 * | `P, "l", at, uid, n` | a change-log entry (`_kv_changes.ts`), expiring |
 * | `P, "lh"` | the change log's head, set by every logged commit |
 *
 * An id or key is a `Uint8Array` whose bytes sort like the string's UTF-16
 * code units (`K` of `storage/_kv_keys.ts`, the client store's format):
 * each unit `u` is `u + 1` for `u < 0x7F`, else two or three bytes that
 * keep the order, never a zero byte. KV compares such parts bytewise, so its
 * order of the pull index is the contract's `(updatedAt, id)` order; KV's
 * own string parts would sort by UTF-8 instead. A namespace's part is the
 * same encoding when it is short, else a zero byte and its SHA-256 (no
 * encoded string starts with a zero byte, so the two never collide): only
 * its equality matters.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { describe } from "../src/describe.ts";

/** KV caps one key at 2 KiB. */
export const KV_MAX_KEY_BYTES = 2048;
/** The most bytes of a namespace's part kept whole; longer ones are hashed. */
const NAMESPACE_BUDGET = 128;
/** The most bytes of a kind's part: 64 of the widest units. */
export const KIND_BUDGET = 192;
/** The most bytes of an id's or idempotency key's part: 341 widest units. */
export const ID_BUDGET = 1024;
/** The most bytes of the store's prefix, encoded. */
export const PREFIX_BUDGET = 256;

/** The key part of a string whose order matters, bytes sorting like its code units. */
export function orderedPart(text: string): Uint8Array {
  const out = new Uint8Array(text.length * 3);
  let length = 0;
  for (let index = 0; index < text.length; index++) {
    const unit = text.charCodeAt(index);
    if (unit < 0x7f) {
      out[length++] = unit + 1;
      continue;
    }
    const v = unit - 0x7f;
    if (v < 127 * 255) {
      out[length++] = 0x80 + Math.floor(v / 255);
      out[length++] = 1 + v % 255;
    } else {
      const w = v - 127 * 255;
      out[length++] = 0xff;
      out[length++] = 1 + Math.floor(w / 255);
      out[length++] = 1 + w % 255;
    }
  }
  return out.slice(0, length);
}

/** A namespace's key part: its ordered part when short, else its hash. */
export function namespacePart(namespace: string): Uint8Array {
  const part = orderedPart(namespace);
  if (part.length <= NAMESPACE_BUDGET) return part;
  const hash = createHash("sha256").update(namespace, "utf16le").digest();
  const out = new Uint8Array(1 + hash.length);
  out.set(hash, 1);
  return out;
}

/**
 * The key part of a kind, id or idempotency key, within its budget.
 *
 * @throws {RangeError} When it is longer than the budget.
 */
export function boundedPart(
  text: string,
  budget: number,
  what: string,
): Uint8Array {
  if (typeof text !== "string") {
    throw new TypeError(
      `Cannot use ${what} as it is not a string: current value is ${
        describe(text)
      }`,
    );
  }
  const part = orderedPart(text);
  if (part.length > budget) {
    throw new RangeError(
      `Cannot use ${what} as it takes more than ${budget} bytes of a KV key: current value is ${
        describe(text.length > 40 ? `${text.slice(0, 40)}…` : text)
      }`,
    );
  }
  return part;
}

/** A record as the KV store keeps it under `P, "r", N, K, I`. */
export interface StoredRecord {
  /** The table. */
  readonly kind: string;
  /** The record's id. */
  readonly id: string;
  /** The record's `updatedAt` (ms). */
  readonly updatedAt: number;
  /** When it was deleted (ms), or `null`. */
  readonly deletedAt: number | null;
  /** The UTF-8 length of the data's JSON text. */
  readonly size: number;
  /** The data's JSON text as UTF-8, or `null` when it is in a blob. */
  readonly data: Uint8Array | null;
  /** The blob holding the data, when it does not fit the value. */
  readonly blob: BlobRef | null;
}

/** An idempotency entry as the KV store keeps it under `P, "k", N, key`. */
export interface StoredEntry {
  /** The idempotency key. */
  readonly key: string;
  /** The request's digest. */
  readonly fingerprint: string;
  /** The stored response's status. */
  readonly status: number;
  /** When the entry stops counting (ms). */
  readonly expiresAt: number;
  /** The body's JSON text as UTF-8, or `null` when it is in a blob. */
  readonly body: Uint8Array | null;
  /** The blob holding the body, when it does not fit the value. */
  readonly blob: BlobRef | null;
}

/** Where a large value lives: `P, "b", id, 0..chunks-1`. */
export interface BlobRef {
  /** The record's id. */
  readonly id: string;
  /** How many chunks it has. */
  readonly chunks: number;
}

/** A namespace's clock as kept under `P, "c", N`. */
export interface StoredClock {
  /** The record's `updatedAt` (ms). */
  readonly updatedAt: number | null;
  /** The record's id. */
  readonly id: string | null;
  /** A commit that took the clock and is not fully applied yet. */
  readonly intent: IntentRef | null;
}

/** A commit larger than one atomic: `P, "i", N, id, 0..parts-1`. */
export interface IntentRef {
  /** The record's id. */
  readonly id: string;
  /** How many parts it has. */
  readonly parts: number;
}

/** The key builders of one store, under its prefix. */
export class KvKeys {
  readonly #prefix: readonly Deno.KvKeyPart[];

  /**
   * Keys under a prefix.
   *
   * @param prefix The store's prefix.
   */
  constructor(prefix: readonly Deno.KvKeyPart[]) {
    this.#prefix = prefix;
  }

  /** Every key of the store. */
  get all(): Deno.KvKey {
    return [...this.#prefix];
  }
  /** A namespace's clock. */
  clock(ns: Uint8Array): Deno.KvKey {
    return [...this.#prefix, "c", ns];
  }
  /** A record. */
  record(ns: Uint8Array, kind: Uint8Array, id: Uint8Array): Deno.KvKey {
    return [...this.#prefix, "r", ns, kind, id];
  }
  /** A record's pull index entry. */
  index(
    ns: Uint8Array,
    kind: Uint8Array,
    updatedAt: number,
    id: Uint8Array,
  ): Deno.KvKey {
    return [...this.#prefix, "u", ns, kind, updatedAt, id];
  }
  /** A kind's pull index. */
  indexOf(ns: Uint8Array, kind: Uint8Array): Deno.KvKey {
    return [...this.#prefix, "u", ns, kind];
  }
  /** A tombstone's entry in the purge index. */
  tombstone(
    updatedAt: number,
    ns: Uint8Array,
    kind: Uint8Array,
    id: Uint8Array,
  ): Deno.KvKey {
    return [...this.#prefix, "t", updatedAt, ns, kind, id];
  }
  /** The purge index of tombstones. */
  tombstones(): Deno.KvKey {
    return [...this.#prefix, "t"];
  }
  /** A kind's tombstone horizon. */
  horizon(ns: Uint8Array, kind: Uint8Array): Deno.KvKey {
    return [...this.#prefix, "h", ns, kind];
  }
  /** An idempotency entry. */
  entry(ns: Uint8Array, key: Uint8Array): Deno.KvKey {
    return [...this.#prefix, "k", ns, key];
  }
  /** An entry in its namespace's expiry index. */
  byExpiry(ns: Uint8Array, expiresAt: number, key: Uint8Array): Deno.KvKey {
    return [...this.#prefix, "x", ns, expiresAt, key];
  }
  /** A namespace's expiry index. */
  byExpiryOf(ns: Uint8Array): Deno.KvKey {
    return [...this.#prefix, "x", ns];
  }
  /** An entry in the store's expiry index. */
  expiry(expiresAt: number, ns: Uint8Array, key: Uint8Array): Deno.KvKey {
    return [...this.#prefix, "e", expiresAt, ns, key];
  }
  /** The store's expiry index. */
  expiries(): Deno.KvKey {
    return [...this.#prefix, "e"];
  }
  /** One chunk of a blob. */
  chunk(blob: string, index: number): Deno.KvKey {
    return [...this.#prefix, "b", blob, index];
  }
  /** A blob's chunks. */
  chunksOf(blob: string): Deno.KvKey {
    return [...this.#prefix, "b", blob];
  }
  /** One part of an intent. */
  intent(ns: Uint8Array, intent: string, part: number): Deno.KvKey {
    return [...this.#prefix, "i", ns, intent, part];
  }
  /** An intent's parts. */
  intentOf(ns: Uint8Array, intent: string): Deno.KvKey {
    return [...this.#prefix, "i", ns, intent];
  }
  /** A staged or superseded blob's or intent's marker. */
  orphan(id: string): Deno.KvKey {
    return [...this.#prefix, "p", id];
  }
  /** Every orphan marker. */
  orphans(): Deno.KvKey {
    return [...this.#prefix, "p"];
  }
}
