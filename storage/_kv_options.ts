/**
 * The options of `openKvStorage()`, checked, with their defaults and what
 * follows from them. Private to `storage/kv.ts`: not exported from the
 * package.
 *
 * @module
 */

import type { StorageCapabilities } from "../src/storage.ts";
import { deriveMaxKeyLength, keyBytes, KV_MAX_CHECKS } from "./_kv_limits.ts";
import { describe } from "../src/describe.ts";
import { notA } from "./_validate.ts";

/** Options for `openKvStorage`. */
export interface KvStorageOptions {
  /**
   * The key prefix of every entry, so that one KV can hold several stores
   * (one per user, say). No store's prefix may be a prefix of another's. A
   * longer prefix leaves less room for keys: see `maxMutationsPerWrite`.
   *
   * @default {["offline-first-sync"]}
   */
  prefix?: Deno.KvKey;
  /**
   * Whether `close()` closes the `Deno.Kv`.
   *
   * @default {true} when the storage opened the KV, `false` for a `Deno.Kv`
   * passed in
   */
  closeKv?: boolean;
  /**
   * The most mutations one `write()` accepts. The keys of one atomic
   * operation share 80 KiB, and every write must fit with the longest kinds
   * and ids, so the more mutations a write may hold, the shorter
   * `capabilities.maxKeyLength` (op ids and meta keys) is: 50 leave 118 code
   * units with the default prefix. At most 69 with the default prefix (the
   * most that leave 80), fewer with a longer one; never more than 98 (KV
   * allows 100 checks per atomic operation, a write needs one per item plus
   * two).
   *
   * @default {50}
   */
  maxMutationsPerWrite?: number;
}

/** The default of {@linkcode KvStorageOptions.prefix}. */
const DEFAULT_PREFIX: Deno.KvKey = ["offline-first-sync"];
const DEFAULT_MAX_MUTATIONS = 50;
/**
 * The shortest `maxKeyLength` a store opens with: the engine's meta keys
 * are `cursor/` or `resync/` and a kind of up to 64 characters.
 */
const MIN_KEY_LENGTH = 80;
/**
 * The most bytes one write accepts. Large values go through blobs, so any
 * size would fit; the cap bounds what one crashed write can leave behind.
 */
const MAX_WRITE_BYTES = 8 * 1024 * 1024;

const ACTION = "open KV storage";

/** What {@linkcode resolveKvOptions} resolved. */
export interface ResolvedKvOptions {
  /** The KV passed in; `undefined` when the storage opens its own. */
  readonly kv: Deno.Kv | undefined;
  /** The key prefix, a frozen copy. */
  readonly prefix: Deno.KvKey;
  /** Whether `close()` closes the KV. */
  readonly closeKv: boolean;
  /** The storage's capabilities. */
  readonly capabilities: StorageCapabilities;
}

/**
 * Checks the arguments of `openKvStorage()` and resolves their defaults.
 *
 * @param pathOrKv Where the store lives.
 * @param options The options as given.
 * @returns The resolved options.
 * @throws {TypeError} When an argument has the wrong type.
 * @throws {RangeError} When `maxMutationsPerWrite` is out of range, or too
 * many for the prefix.
 */
export function resolveKvOptions(
  pathOrKv: unknown,
  options: KvStorageOptions,
): ResolvedKvOptions {
  if (typeof options !== "object" || options === null) {
    throw notA("an object", {
      action: ACTION,
      name: "options",
      value: options,
    });
  }
  const prefix = resolvePrefix(options.prefix);
  const maxMutationsPerWrite = resolveMaxMutations(
    options.maxMutationsPerWrite,
  );
  const prefixBytes = keyBytes(prefix);
  const maxKeyLength = deriveMaxKeyLength(prefixBytes, maxMutationsPerWrite);
  if (maxKeyLength < MIN_KEY_LENGTH) {
    throw new RangeError(
      `Cannot open KV storage as 'prefix' and 'maxMutationsPerWrite' leave too little room for keys: current value is ${prefixBytes} bytes of prefix and ${maxMutationsPerWrite} mutations per write`,
    );
  }
  const owned = pathOrKv === undefined || typeof pathOrKv === "string";
  if (!owned && !isKv(pathOrKv)) {
    throw notA("a path or a Deno.Kv", {
      action: ACTION,
      name: "pathOrKv",
      value: pathOrKv,
    });
  }
  const closeKv = options.closeKv ?? owned;
  if (typeof closeKv !== "boolean") {
    throw notA("a boolean", {
      action: ACTION,
      name: "closeKv",
      value: closeKv,
    });
  }
  // Only a KV in memory is private to this handle and gone with it.
  const shared = pathOrKv !== ":memory:";
  return {
    kv: owned ? undefined : pathOrKv as Deno.Kv,
    prefix,
    closeKv,
    capabilities: {
      persistent: shared,
      multiProcess: shared,
      maxMutationsPerWrite,
      maxWriteBytes: MAX_WRITE_BYTES,
      maxKeyLength,
    },
  };
}

function isKv(value: unknown): value is Deno.Kv {
  return typeof value === "object" && value !== null &&
    typeof (value as Deno.Kv).atomic === "function" &&
    typeof (value as Deno.Kv).getMany === "function" &&
    typeof (value as Deno.Kv).list === "function";
}

function resolvePrefix(prefix: unknown): Deno.KvKey {
  if (prefix === undefined) return DEFAULT_PREFIX;
  if (!Array.isArray(prefix)) {
    throw notA("an array", { action: ACTION, name: "prefix", value: prefix });
  }
  prefix.forEach((part, index) => {
    if (
      !(typeof part === "string" || typeof part === "number" ||
        typeof part === "bigint" || typeof part === "boolean" ||
        part instanceof Uint8Array)
    ) {
      throw notA("a KV key part", {
        action: ACTION,
        name: `prefix[${index}]`,
        value: part,
      });
    }
  });
  // A copy: the caller may change its array later.
  return Object.freeze(
    prefix.map((part) => part instanceof Uint8Array ? part.slice() : part),
  );
}

function resolveMaxMutations(value: unknown): number {
  if (value === undefined) return DEFAULT_MAX_MUTATIONS;
  // Each item may need one check, plus the count's and the ticket's.
  const most = KV_MAX_CHECKS - 2;
  if (
    typeof value !== "number" || !Number.isInteger(value) || value < 1 ||
    value > most
  ) {
    throw new RangeError(
      `Cannot open KV storage as 'maxMutationsPerWrite' is not an integer from 1 to ${most}: current value is ${
        describe(value)
      }`,
    );
  }
  return value;
}
