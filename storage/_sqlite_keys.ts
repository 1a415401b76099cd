/**
 * The SQLite storage's key encoder: {@linkcode encodeKey} with fewer
 * allocations, for the keys every call binds. Private to
 * `storage/sqlite.ts` and its helpers: not exported from the package.
 *
 * @module
 */

import { encodeKey } from "./_sqlite_schema.ts";
import { encodeUtf16 } from "../src/utf16.ts";

/** The size of the chunks keys are encoded into. */
const KEY_CHUNK = 64 * 1024;

/** How many encoded kinds a storage keeps (kinds are few: one per table). */
const KIND_KEYS_CACHE = 256;

/** Encodes keys as the schema stores them, reusing memory. */
export class KeyEncoder {
  /** Encoded kinds: every record key starts with one. */
  readonly #kindKeys = new Map<string, Uint8Array>();
  /** Where {@linkcode KeyEncoder.key} writes keys, and how far. */
  #chunk = new Uint8Array(0);
  #used = 0;

  /**
   * {@linkcode encodeKey} into views of a shared chunk: one allocation per
   * 64 KiB of keys instead of one per key (a few percent of a pull). A
   * chunk is never written twice: a full one is left to the views still
   * using it, and the driver copies what it binds anyway.
   *
   * @param text The key.
   * @returns Its bytes.
   */
  key(text: string): Uint8Array {
    const length = text.length * 2;
    if (this.#used + length > this.#chunk.length) {
      if (length > KEY_CHUNK / 4) return encodeKey(text);
      this.#chunk = new Uint8Array(KEY_CHUNK);
      this.#used = 0;
    }
    const start = this.#used;
    this.#used = start + length;
    return encodeUtf16(text, {
      into: this.#chunk.subarray(start, start + length),
    });
  }

  /**
   * A kind's key, encoded once.
   *
   * @param kind The kind.
   * @returns Its bytes.
   */
  kind(kind: string): Uint8Array {
    let key = this.#kindKeys.get(kind);
    if (key === undefined) {
      if (this.#kindKeys.size >= KIND_KEYS_CACHE) this.#kindKeys.clear();
      key = encodeKey(kind);
      this.#kindKeys.set(kind, key);
    }
    return key;
  }
}
