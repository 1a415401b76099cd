/**
 * Deno KV's limits as the KV storage counts them: the size of a key, the
 * longest op id or meta key a store's prefix and mutations per write leave
 * room for, and a tally of an atomic operation against KV's caps. Private
 * to `storage/kv.ts` and its helpers: not exported from the package.
 *
 * @module
 */

import { ID_BUDGET, keyPartBytes, KIND_BUDGET } from "./_kv_keys.ts";
import { utf8Length } from "./_text.ts";

// Deno KV's limits, measured on Deno 2.9.
/** KV caps one key at 2 KiB. */
export const KV_MAX_KEY_BYTES = 2048;
/** KV caps the keys of one atomic operation (checks and mutations) at 80 KiB. */
export const KV_MAX_TOTAL_KEY_BYTES = 80 * 1024;
/**
 * KV caps an atomic operation at 800 KiB, counting each check's key once
 * and each mutation's key twice plus its value.
 */
export const KV_MAX_ATOMIC_BYTES = 800 * 1024;
/** KV caps an atomic operation at 100 checks. */
export const KV_MAX_CHECKS = 100;
/** KV caps an atomic operation at 1000 mutations. */
export const KV_MAX_MUTATIONS = 1000;
/** KV caps a value at 64 KiB. */
export const KV_MAX_VALUE_BYTES = 64 * 1024;
/** KV's `getMany()` reads at most 10 keys. */
export const KV_MAX_GET_MANY = 10;
/** KV's `list()` returns at most 1000 entries per batch. */
export const KV_MAX_BATCH = 1000;

/** Room kept free in every atomic operation for what estimates miss. */
export const ATOMIC_SLACK_BYTES = 8 * 1024;

/**
 * The encoded size of the tag parts: a one-letter string is 3 bytes, a
 * number 9, a UUID string 38, a state name at most 13 ("quarantined").
 */
export const TAG = 3;
/** See {@linkcode TAG}. */
export const NUMBER = 9;
/** See {@linkcode TAG}. */
export const UUID = 38;
/** See {@linkcode TAG}. */
export const STATE = 13;

/**
 * The longest op id or meta key (code units) that keeps every key and every
 * write within KV's limits, given the prefix's encoded size and the
 * mutations a write may hold; 0 when the longest record key would not fit.
 * A string part takes at most `3 × length + 2` bytes.
 *
 * @param prefixBytes The encoded size of the store's prefix.
 * @param mutations The most mutations one write holds.
 * @returns The longest key, in code units.
 */
export function deriveMaxKeyLength(
  prefixBytes: number,
  mutations: number,
): number {
  // The longest key with an op id: its by-state entry.
  const bySingleKey = Math.floor(
    (KV_MAX_KEY_BYTES - prefixBytes - TAG - STATE - 2) / 3,
  );
  // Per write: the count's check and set, the ticket's check and set.
  const fixed = 2 * (prefixBytes + TAG) + 2 * (prefixBytes + TAG + UUID);
  const perMutation = Math.floor((KV_MAX_TOTAL_KEY_BYTES - fixed) / mutations);
  // An op changing state and record: header check and set (prefix + TAG +
  // S), old and new state index (prefix + TAG + STATE + S), old and new
  // record index (prefix + TAG + 2 numbers), with S the op id's part. A
  // meta entry (check and set of prefix + TAG + S) weighs less, and so does
  // a record with an expect, its header's check and set with the longest
  // kind and id parts (2 × (prefix + 497) bytes), once S may take
  // MIN_KEY_LENGTH code units (6 × prefix + 1048).
  const constant = 6 * prefixBytes + 6 * TAG + 2 * STATE + 4 * NUMBER + 4 * 2;
  const byTotal = Math.floor((perMutation - constant) / 12);
  // The longest record key must fit one key, whatever the mutations.
  const recordKey = prefixBytes + TAG + keyPartBytes(KIND_BUDGET) + 2 +
    keyPartBytes(ID_BUDGET) + 2;
  if (recordKey > KV_MAX_KEY_BYTES) return 0;
  return Math.max(0, Math.min(bySingleKey, byTotal));
}

/**
 * The encoded size of a KV key, as KV counts it against its limits.
 *
 * @param key The key.
 * @returns Its size in bytes.
 */
export function keyBytes(key: Deno.KvKey): number {
  let bytes = 0;
  for (const part of key) bytes += partBytes(part);
  return bytes;
}

/**
 * The encoded size of one part of a KV key.
 *
 * @param part The part.
 * @returns Its size in bytes; KV's limit for a part of an unknown type.
 */
export function partBytes(part: Deno.KvKeyPart): number {
  if (part instanceof Uint8Array) {
    // A type byte, the bytes with every zero escaped as two, a terminator.
    let bytes = part.length + 2;
    for (const byte of part) if (byte === 0) bytes++;
    return bytes;
  }
  switch (typeof part) {
    case "string": {
      let bytes = utf8Length(part) + 2;
      for (let index = 0; index < part.length; index++) {
        if (part.charCodeAt(index) === 0) bytes++;
      }
      return bytes;
    }
    case "number":
      return NUMBER;
    case "boolean":
      return 1;
    case "bigint": {
      // A type byte, a length byte beyond 8 bytes, the magnitude.
      const magnitude = part < 0n ? -part : part;
      return 2 + Math.ceil(magnitude.toString(16).length / 2);
    }
    default:
      return KV_MAX_KEY_BYTES;
  }
}

/** What an {@linkcode AtomicTally} builds on. */
export interface TallySource {
  /** Where the atomic operation comes from. */
  readonly kv: Deno.Kv;
  /** The encoded size of a key (the store may know its prefix's). */
  keyBytes(key: Deno.KvKey): number;
}

/**
 * An atomic operation and KV's count of it: checks, mutations, key bytes,
 * and bytes (a check's key once, a mutation's key twice plus its value),
 * so that a writer can tell when the next mutation would not fit.
 */
export class AtomicTally {
  /** The operation the calls add to. */
  readonly operation: Deno.AtomicOperation;
  readonly #source: TallySource;
  #checks = 0;
  #mutations = 0;
  #keys = 0;
  #bytes: number;

  /**
   * Starts an empty atomic operation.
   *
   * @param source The KV and how to size its keys.
   * @param slackBytes Bytes counted from the start, left free for what
   * estimates miss.
   */
  constructor(source: TallySource, slackBytes = 0) {
    this.#source = source;
    this.operation = source.kv.atomic();
    this.#bytes = slackBytes;
  }

  /** Whether the operation holds no check and no mutation. */
  get empty(): boolean {
    return this.#checks === 0 && this.#mutations === 0;
  }

  /**
   * Adds a check.
   *
   * @param key The key.
   * @param versionstamp The versionstamp it must have; `null` for absent.
   */
  check(key: Deno.KvKey, versionstamp: string | null): void {
    this.operation.check({ key, versionstamp });
    const size = this.#source.keyBytes(key);
    this.#checks++;
    this.#keys += size;
    this.#bytes += size;
  }

  /**
   * Adds a set.
   *
   * @param key The key.
   * @param value The value.
   */
  set(key: Deno.KvKey, value: Uint8Array): void {
    this.operation.set(key, value);
    this.#mutate(this.#source.keyBytes(key), value.length);
  }

  /**
   * Adds a delete.
   *
   * @param key The key.
   */
  delete(key: Deno.KvKey): void {
    this.operation.delete(key);
    this.#mutate(this.#source.keyBytes(key), 0);
  }

  /**
   * Whether one more mutation of a key stays within KV's caps.
   *
   * @param key The key.
   * @param valueBytes The size of its value; 0 for a delete.
   * @returns Whether it fits.
   */
  fits(key: Deno.KvKey, valueBytes: number): boolean {
    const size = this.#source.keyBytes(key);
    return this.#mutations + 1 <= KV_MAX_MUTATIONS &&
      this.#keys + size <= KV_MAX_TOTAL_KEY_BYTES &&
      this.#bytes + 2 * size + valueBytes <= KV_MAX_ATOMIC_BYTES;
  }

  /**
   * What exceeds KV's caps, for a message; `undefined` when all is within.
   *
   * @returns The counts, or `undefined`.
   */
  excess(): string | undefined {
    if (
      this.#checks <= KV_MAX_CHECKS && this.#mutations <= KV_MAX_MUTATIONS &&
      this.#keys <= KV_MAX_TOTAL_KEY_BYTES && this.#bytes <= KV_MAX_ATOMIC_BYTES
    ) {
      return undefined;
    }
    return `${this.#checks} checks, ${this.#mutations} mutations, ${this.#keys} key bytes, ${this.#bytes} bytes`;
  }

  #mutate(keySize: number, valueBytes: number): void {
    this.#mutations++;
    this.#keys += keySize;
    this.#bytes += 2 * keySize + valueBytes;
  }
}
