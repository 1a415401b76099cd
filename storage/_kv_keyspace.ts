/**
 * The KV storage's entries under one prefix: how their keys are built and
 * named, how their values decode, and how commits are retried. Shared by
 * the storage's reads, writes and garbage collection; private to
 * `storage/kv.ts` and its helpers, not exported from the package. The
 * layout itself is described in `storage/kv.ts`.
 *
 * @module
 */

import { StorageError, SyncError } from "../src/errors.ts";
import type { JsonValue } from "../src/json.ts";
import type { OpState, StoredRecord } from "../src/storage.ts";
import {
  encodeText,
  ID_BUDGET,
  keyPart,
  KIND_BUDGET,
  partText,
} from "./_kv_keys.ts";
import { KV_MAX_GET_MANY, partBytes } from "./_kv_limits.ts";
import {
  type ItemName,
  parseStored,
  storedRecord,
  withBaseData,
} from "./_stored.ts";
import { describe } from "../src/describe.ts";
import { OP_STATES } from "./_validate.ts";

/** Every op state, in the contract's order. */
export const ALL_STATES: readonly OpState[] = [...OP_STATES] as OpState[];

/**
 * Whether a stored value is an op state.
 *
 * @param value The value.
 * @returns Whether it is one.
 */
export function isOpState(value: unknown): value is OpState {
  return OP_STATES.has(value as string);
}

/** The one state without a by-state index (see `storage/kv.ts`). */
export const UNINDEXED_STATE: OpState = "pending";

/** A header, decoded (see `storage/kv.ts`). */
export interface Envelope {
  /** The value, when stored inline. */
  readonly v?: JsonValue;
  /** The blob id, when stored as a blob. */
  readonly b?: string;
  /** The blob's chunk count. */
  readonly n?: number;
  /** The blob's size in bytes. */
  readonly z?: number;
  /** An op's slot. */
  readonly s?: number;
  /** A large record's `deleted`. */
  readonly d?: boolean;
  /** A large op's kind. */
  readonly k?: string;
  /** A large op's record id. */
  readonly i?: string;
  /** A large op's state. */
  readonly t?: OpState;
  /** 1 when a record's base was stored without its data (its `data`). */
  readonly a?: 1;
}

/** The count of large records and meta entries, as last read. */
export interface Count {
  /** How many there are. */
  readonly value: number;
  /** The count entry's versionstamp; `null` while it is absent. */
  readonly versionstamp: string | null;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One store's entries in a KV: its prefix, its keys, its count. */
export class KvKeyspace {
  /** The KV. */
  readonly kv: Deno.Kv;
  /** Every key's first parts. */
  readonly prefix: Deno.KvKey;
  /** The prefix's encoded size. */
  readonly prefixBytes: number;
  /** The longest op id or meta key a write accepts. */
  readonly maxKeyLength: number;
  /** Where the count of large values lives. */
  readonly countKey: Deno.KvKey;
  /** Where the layout's version lives. */
  readonly layoutKey: Deno.KvKey;
  /**
   * The count of large records and meta entries, as last read or written
   * by this handle.
   */
  count: Count = { value: 0, versionstamp: null };

  /**
   * Describes a store's entries in a KV.
   *
   * @param kv The KV.
   * @param layout The prefix, its encoded size, and the longest key.
   */
  constructor(
    kv: Deno.Kv,
    layout: {
      readonly prefix: Deno.KvKey;
      readonly prefixBytes: number;
      readonly maxKeyLength: number;
    },
  ) {
    this.kv = kv;
    this.prefix = layout.prefix;
    this.prefixBytes = layout.prefixBytes;
    this.maxKeyLength = layout.maxKeyLength;
    this.countKey = [...layout.prefix, "x"];
    this.layoutKey = [...layout.prefix, "f"];
  }

  /**
   * A key of this store.
   *
   * @param tag The entry's tag (see `storage/kv.ts`).
   * @param parts The parts after it.
   * @returns The key.
   */
  key(tag: string, ...parts: Deno.KvKeyPart[]): Deno.KvKey {
    return [...this.prefix, tag, ...parts];
  }

  /**
   * A record's header key.
   *
   * @param kind The record's kind.
   * @param id The record's id.
   * @returns The key.
   */
  recordKey(kind: string, id: string): Deno.KvKey {
    return this.key("r", this.#kindPart(kind), keyPart(id, ID_BUDGET));
  }

  /** The last kind's key part, kept: a write's records share one kind. */
  #lastKind: { readonly kind: string; readonly part: Uint8Array } | undefined;

  /** A kind's key part, encoded once while the kind stays the same. */
  #kindPart(kind: string): Uint8Array {
    const last = this.#lastKind;
    if (last !== undefined && last.kind === kind) return last.part;
    const part = keyPart(kind, KIND_BUDGET);
    this.#lastKind = { kind, part };
    return part;
  }

  /**
   * The header keys of records of one kind, its key part encoded once.
   *
   * @param kind The records' kind.
   * @param ids Their ids.
   * @returns The keys, in order.
   */
  recordKeys(kind: string, ids: readonly string[]): Deno.KvKey[] {
    const kindPart = this.#kindPart(kind);
    return ids.map((id) => this.key("r", kindPart, keyPart(id, ID_BUDGET)));
  }

  /**
   * An op's header key (tag `"o"`) or a meta entry's (tag `"m"`).
   *
   * @param tag `"o"` or `"m"`.
   * @param name The op id or meta key.
   * @returns The key.
   */
  itemKey(tag: "o" | "m", name: string): Deno.KvKey {
    return this.key(tag, encodeText(name));
  }

  /**
   * {@linkcode KvKeyspace.itemKey} for a read: a name longer than the limit
   * was never written, so there is nothing to read.
   *
   * @param tag `"o"` or `"m"`.
   * @param name The op id or meta key.
   * @returns The key, or `undefined`.
   */
  readKey(tag: "o" | "m", name: string): Deno.KvKey | undefined {
    return name.length > this.maxKeyLength
      ? undefined
      : this.itemKey(tag, name);
  }

  /**
   * The encoded size of one of this store's keys, the prefix's size known.
   *
   * @param key The key.
   * @returns Its size in bytes.
   */
  keyBytes(key: Deno.KvKey): number {
    let bytes = this.prefixBytes;
    for (let index = this.prefix.length; index < key.length; index++) {
      bytes += partBytes(key[index]!);
    }
    return bytes;
  }

  /**
   * `getMany()` in batches of KV's 10 keys, all in parallel.
   *
   * @param keys The keys.
   * @returns Their entries, in order.
   */
  async getMany(
    keys: readonly Deno.KvKey[],
  ): Promise<Deno.KvEntryMaybe<unknown>[]> {
    if (keys.length <= KV_MAX_GET_MANY) {
      if (keys.length === 0) return [];
      return await this.kv.getMany<unknown[]>(keys as Deno.KvKey[], {
        consistency: "strong",
      });
    }
    const batches: Promise<Deno.KvEntryMaybe<unknown>[]>[] = [];
    for (let start = 0; start < keys.length; start += KV_MAX_GET_MANY) {
      batches.push(
        this.kv.getMany<unknown[]>(
          keys.slice(start, start + KV_MAX_GET_MANY) as Deno.KvKey[],
          { consistency: "strong" },
        ),
      );
    }
    return (await Promise.all(batches)).flat();
  }

  /**
   * A header's JSON, checked to be an object.
   *
   * @param entry The header's entry.
   * @returns The envelope.
   * @throws {StorageError} When it is not one.
   */
  decodeEnvelope(entry: Deno.KvEntry<unknown>): Envelope {
    const envelope = this.decodeJson(entry);
    if (typeof envelope !== "object" || envelope === null) {
      throw this.formatError(entry.key, envelope);
    }
    return envelope as Envelope;
  }

  /**
   * An entry's JSON value.
   *
   * @param entry The entry.
   * @returns The parsed value.
   * @throws {StorageError} When it is not UTF-8 JSON bytes.
   */
  decodeJson(entry: Deno.KvEntry<unknown>): unknown {
    if (!(entry.value instanceof Uint8Array)) {
      throw this.formatError(entry.key, entry.value);
    }
    return parseStored(
      decoder.decode(entry.value),
      () => this.name(entry.key),
    );
  }

  /**
   * The count of large values from its entry.
   *
   * @param entry The count's entry, maybe absent.
   * @returns The count.
   * @throws {StorageError} When it is not a number.
   */
  decodeCount(entry: Deno.KvEntryMaybe<unknown>): Count {
    if (entry.versionstamp === null) return { value: 0, versionstamp: null };
    const value = this.decodeJson(entry);
    if (typeof value !== "number") throw this.formatError(entry.key, value);
    return { value, versionstamp: entry.versionstamp };
  }

  /**
   * The error for an entry that is not in this storage's format.
   *
   * @param key The entry's key.
   * @param value What was found.
   * @returns The error.
   */
  formatError(key: Deno.KvKey, value: unknown): StorageError {
    return new StorageError(
      `Cannot read ${
        this.name(key)
      } as it is not in this storage's format: current value is ${
        describe(value)
      }`,
    );
  }

  /**
   * Names the item under a key of ours, for a message.
   *
   * @param key The key.
   * @returns The name.
   */
  name(key: Deno.KvKey): string {
    const [tag, first, second] = key.slice(this.prefix.length);
    switch (tag) {
      case "r":
        return `record ${partText(second, ID_BUDGET)} of kind ${
          partText(first, KIND_BUDGET)
        }`;
      case "o":
        return `op ${partText(first, Infinity)}`;
      case "s":
        return `the ${String(first)} entry of op ${partText(second, Infinity)}`;
      case "i":
        return `the ops-by-record entry ${String(first)}/${String(second)}`;
      case "m":
        return `meta entry ${partText(first, Infinity)}`;
      case "x":
        return "the count of large values";
      case "f":
        return "the layout version";
      default:
        return `KV entry ${Deno.inspect(key)}`;
    }
  }
}

/** How often a commit is tried while SQLite reports the file locked. */
const MAX_LOCKED_ATTEMPTS = 50;

/**
 * Commits an atomic operation, trying again while SQLite reports the file
 * locked: two handles on one file (in one process or two) make KV's SQLite
 * fail a commit with "database is locked" instead of waiting, and such a
 * commit wrote nothing.
 *
 * @param operation The operation.
 * @returns KV's result.
 * @throws {Error} KV's error, when it is not a lock or it lasts.
 */
export async function commitRetrying(
  operation: Deno.AtomicOperation,
): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
  for (let attempt = 1;; attempt++) {
    try {
      return await operation.commit();
    } catch (error) {
      if (!isLocked(error) || attempt >= MAX_LOCKED_ATTEMPTS) throw error;
      await delay(Math.random() * Math.min(2 ** attempt, 20));
    }
  }
}

function isLocked(error: unknown): boolean {
  return error instanceof Error &&
    /database is (locked|busy)/.test(error.message);
}

/**
 * Waits.
 *
 * @param ms How long.
 * @returns A promise that resolves then.
 */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Our own errors as they are; anything else is KV's failure.
 *
 * @param action What failed, for the message.
 * @param error What was thrown.
 * @returns The error to throw.
 */
export function kvFailure(action: string, error: unknown): SyncError {
  if (error instanceof SyncError) return error;
  return new StorageError(
    `Cannot ${action} as Deno KV failed: current value is ${
      error instanceof Error
        ? `${error.name}: ${error.message}`
        : describe(error)
    }`,
    { cause: error, retryable: isLocked(error) },
  );
}

/**
 * A value as stored: UTF-8 JSON.
 *
 * @param value The value.
 * @returns The bytes.
 */
export function encodeJson(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

/**
 * Decodes UTF-8 bytes.
 *
 * @param bytes The bytes.
 * @returns The text.
 */
export function decodeUtf8(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}

/** The start of a record's or meta entry's inline header. */
const VALUE_HEAD = '{"v":';
/** The start of the inline header of a record stored without its base's data. */
const SHARED_HEAD = '{"a":1,"v":';

/**
 * A record's or meta entry's inline header, `{"v": value}` (`{"a":1,"v":
 * value}` for a record stored without its base's data), encoded with the
 * value's JSON in one go.
 *
 * @param value The value as stored.
 * @param shared Whether a record's base was left out of it.
 * @returns The header's bytes, and the value's JSON within them.
 */
export function inlineHeader(
  value: unknown,
  shared: boolean,
): { readonly header: Uint8Array; readonly json: Uint8Array } {
  const head = shared ? SHARED_HEAD : VALUE_HEAD;
  const header = encoder.encode(`${head}${JSON.stringify(value)}}`);
  // The heads are ASCII: as many bytes as characters.
  return { header, json: header.subarray(head.length, header.length - 1) };
}

/**
 * An op's inline header: `{"s": slot, "v": op}`.
 *
 * @param json The op's JSON.
 * @param slot The op's slot.
 * @returns The header's bytes.
 */
export function opHeaderOf(json: Uint8Array, slot: number): Uint8Array {
  const start = encoder.encode(`{"s":${slot},"v":`);
  const out = new Uint8Array(start.length + json.length + 1);
  out.set(start);
  out.set(json, start.length);
  out[out.length - 1] = 0x7d; // "}"
  return out;
}

/**
 * A stored record, checked, with its base's data back when it was stored
 * without it (`"a": 1`).
 *
 * @param value The stored value.
 * @param found Its envelope, the item's name, and the kind and id it must
 * have.
 * @returns The record.
 * @throws {StorageError} When it is not a record of that kind and id.
 */
export function recordOf(
  value: unknown,
  found: {
    readonly envelope: Envelope;
    readonly item: ItemName;
    readonly kind: string;
    readonly id?: string;
  },
): StoredRecord {
  const { envelope, item, ...expected } = found;
  const shared = envelope.a === 1;
  const record = storedRecord(value, item, { ...expected, baseIsData: shared });
  return shared ? withBaseData(record, item) : record;
}

/**
 * Compares strings by UTF-16 code units, as `Array.prototype.sort` wants.
 *
 * @param a One string.
 * @param b The other.
 * @returns Negative, zero or positive.
 */
export function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
