/**
 * The KV storage's write planner: a write's mutations checked, encoded and
 * grouped by item (the last mutation of an item wins; its expects must
 * agree), and which values go to blobs. It decides; `_kv_write.ts` reads,
 * builds and commits. Private to `storage/kv.ts`: not exported from the
 * package.
 *
 * @module
 */

import type { JsonValue } from "../src/json.ts";
import type {
  Mutation,
  StorageCapabilities,
  StoredOp,
  StoredRecord,
  WritePrecondition,
  WriteResult,
} from "../src/storage.ts";
import { randomSlot } from "./_kv_keys.ts";
import {
  ATOMIC_SLACK_BYTES,
  KV_MAX_ATOMIC_BYTES,
  KV_MAX_VALUE_BYTES,
  NUMBER,
  STATE,
  TAG,
  UUID,
} from "./_kv_limits.ts";
import {
  encodeJson,
  type Envelope,
  type KvKeyspace,
  UNINDEXED_STATE,
} from "./_kv_keyspace.ts";
import { utf8Length } from "./_text.ts";
import {
  type CheckedMutation,
  checkMutations,
  checkWriteBytes,
} from "./_validate.ts";

/** A versionstamp as KV issues it: 20 lowercase hex digits. */
const VERSIONSTAMP = /^[0-9a-f]{20}$/;

/** A checked mutation with its item's identity within the write. */
type Planned = CheckedMutation & {
  readonly identity: string;
  /** The value's UTF-8 JSON as stored; `undefined` for a delete. */
  readonly bytes: Uint8Array | undefined;
  /** Whether a record's base was left out of `bytes` (`"a": 1`). */
  readonly shared: boolean;
  /** The UTF-8 length of `JSON.stringify()` of the value, for the limit. */
  readonly jsonBytes: number | undefined;
};

/** One item a write touches: its last mutation, its combined expect. */
export interface Item {
  /** The item's space. */
  readonly space: "record" | "op" | "meta";
  /** The key of its header. */
  readonly headerKey: Deno.KvKey;
  /** The final value; `undefined` when the write deletes the item. */
  readonly value: StoredRecord | StoredOp | JsonValue | undefined;
  /** The final value's UTF-8 JSON, as stored. */
  readonly bytes: Uint8Array | undefined;
  /** Whether a record's base was left out of `bytes` (`"a": 1`). */
  readonly shared: boolean;
  /** The expect of its mutations (they agree). */
  readonly expect: WritePrecondition;
  /** Whether the final value goes to a blob. */
  large: boolean;
  /** A fresh slot, used if the op turns out not to exist. */
  readonly freshSlot: number;
  /** What a read found; `undefined` when the item was not read. */
  read:
    | { versionstamp: string | null; envelope: Envelope | undefined }
    | undefined;
}

/** A write to commit: its items, and which item each mutation wrote. */
export interface WritePlan {
  /** The items, each once. */
  readonly items: readonly Item[];
  /** The item of each mutation, in the write's order. */
  readonly itemOf: readonly Item[];
}

/**
 * Validates a write with the checks every adapter shares (contract clause
 * 5), encodes its values and groups it by item; decides the outcome when
 * no store could change it.
 *
 * @param space The store.
 * @param write The mutations, and the storage's limits.
 * @returns The plan, or the write's result when it is decided already.
 * @throws {TypeError} When a mutation is malformed.
 * @throws {StorageError} When the write exceeds a limit.
 */
export function planWrite(
  space: KvKeyspace,
  write: {
    readonly mutations: readonly Mutation[];
    readonly capabilities: StorageCapabilities;
  },
): WritePlan | WriteResult {
  const { mutations, capabilities } = write;
  // Validating everything first keeps the write all-or-nothing: nothing
  // below can fail halfway through. The values are only checked, not
  // copied: their JSON is encoded before this returns.
  const plan = checkMutations(mutations, capabilities, { checkBytes: false })
    .map(planOf);
  // Measured from the JSON just encoded rather than by serialising the
  // whole write again.
  checkWriteBytes(
    mutations,
    capabilities.maxWriteBytes,
    (index) => plan[index]!.jsonBytes,
  );
  if (plan.length === 0) return { ok: true, revs: [] };
  const grouped = group(space, plan);
  // Expects that contradict each other, or a revision KV never issued,
  // cannot hold whatever the store holds.
  if (grouped === undefined) return { ok: false };
  chooseLarge(space, grouped.items);
  return grouped;
}

/** The combined expect of each item; `undefined` when they cannot hold. */
function expectsOf(
  plan: readonly Planned[],
): Map<string, WritePrecondition> | undefined {
  const expects = new Map<string, WritePrecondition>();
  for (const planned of plan) {
    if (planned.expect === undefined) continue;
    if (
      typeof planned.expect === "string" && !VERSIONSTAMP.test(planned.expect)
    ) {
      return undefined;
    }
    const seen = expects.get(planned.identity);
    if (expects.has(planned.identity) && seen !== planned.expect) {
      return undefined;
    }
    expects.set(planned.identity, planned.expect);
  }
  return expects;
}

/**
 * Groups mutations by item: the last mutation of an item wins, and its
 * expects must agree. `undefined` when they cannot all hold.
 */
function group(
  space: KvKeyspace,
  plan: readonly Planned[],
): WritePlan | undefined {
  const expects = expectsOf(plan);
  if (expects === undefined) return undefined;
  const last = new Map<string, Planned>();
  for (const planned of plan) last.set(planned.identity, planned);
  const items: Item[] = [];
  const byIdentity = new Map<string, Item>();
  for (const [identity, planned] of last) {
    const item: Item = {
      space: planned.space,
      headerKey: headerKey(space, planned),
      value: planned.value,
      bytes: planned.bytes,
      shared: planned.shared,
      expect: expects.get(identity),
      large: false,
      freshSlot: planned.space === "op" ? randomSlot() : 0,
      read: undefined,
    };
    items.push(item);
    byIdentity.set(identity, item);
  }
  return {
    items,
    itemOf: plan.map((planned) => byIdentity.get(planned.identity)!),
  };
}

/** The key of a mutation's item's header. */
function headerKey(space: KvKeyspace, planned: Planned): Deno.KvKey {
  switch (planned.space) {
    case "record":
      return space.recordKey(planned.kind, planned.id);
    case "op":
      return space.itemKey("o", planned.opId);
    case "meta":
      return space.itemKey("m", planned.key);
  }
}

/**
 * Decides which values go to blobs: those too big for one KV value, then
 * the biggest until the atomic operation fits KV's 800 KiB. Estimated once,
 * at the worst case, so that retries reuse the pre-written blobs.
 */
function chooseLarge(space: KvKeyspace, items: readonly Item[]): void {
  const prefix = space.prefixBytes;
  // Keys count twice (check and mutation), the ticket's and count's too.
  let fixed = 2 * (4 * prefix + 4 * TAG + 2 * UUID) + ATOMIC_SLACK_BYTES;
  const inline: { item: Item; weight: number }[] = [];
  for (const item of items) {
    fixed += 2 * worstKeyBytes(space, item);
    if (item.bytes === undefined) continue;
    // A quarantined or parked op's header is stored twice (header and
    // state index), and an op's record index entry holds its ids; a blob's
    // header is small.
    const copies = item.space === "op" &&
        (item.value as StoredOp).state !== UNINDEXED_STATE
      ? 2
      : 1;
    if (item.space === "op") {
      // JSON takes at most 6 bytes per code unit (`\u0000`).
      const op = item.value as StoredOp;
      fixed += 6 * (op.opId.length + op.kind.length + op.id.length) + 32;
    }
    fixed += copies * 256;
    if (item.bytes.length + 64 > KV_MAX_VALUE_BYTES) {
      item.large = true;
    } else {
      inline.push({ item, weight: copies * (item.bytes.length + 64) });
    }
  }
  inline.sort((a, b) => b.weight - a.weight);
  let total = fixed + inline.reduce((sum, entry) => sum + entry.weight, 0);
  for (const { item, weight } of inline) {
    if (total <= KV_MAX_ATOMIC_BYTES) break;
    item.large = true;
    total -= weight;
  }
}

/** An item's keys in the final atomic operation, at worst. */
function worstKeyBytes(space: KvKeyspace, item: Item): number {
  const header = space.keyBytes(item.headerKey);
  if (item.space !== "op") return 2 * header;
  const stateKey = header + STATE;
  const recordIndexKey = space.prefixBytes + TAG + 2 * NUMBER;
  return 2 * header + 2 * stateKey + 2 * recordIndexKey;
}

/** A checked mutation with its identity and its value's JSON. */
function planOf(mutation: CheckedMutation): Planned {
  switch (mutation.space) {
    case "record":
      return {
        ...mutation,
        identity: identity("r", mutation.kind, mutation.id),
        ...recordBytes(mutation.value),
      };
    case "op":
    case "meta": {
      const bytes = mutation.value === undefined
        ? undefined
        : encodeJson(mutation.value);
      return {
        ...mutation,
        identity: mutation.space === "op"
          ? identity("o", mutation.opId)
          : identity("m", mutation.key),
        bytes,
        shared: false,
        jsonBytes: bytes?.length,
      };
    }
  }
}

/** A record's JSON as stored, and the length of its whole JSON. */
function recordBytes(
  record: StoredRecord | undefined,
): Pick<Planned, "bytes" | "shared" | "jsonBytes"> {
  if (record === undefined) {
    return { bytes: undefined, shared: false, jsonBytes: undefined };
  }
  const base = record.base as StoredRecord["base"] | undefined;
  if (typeof base !== "object" || base === null || base.data !== record.data) {
    const bytes = encodeJson(record);
    return { bytes, shared: false, jsonBytes: bytes.length };
  }
  // The engine passes one object for a pulled record's data and its base's
  // data: stored once, it halves the value.
  const { data: _, ...rest } = base;
  const bytes = encodeJson({ ...record, base: rest });
  // The whole JSON holds `"data":<data>` in the base, and a comma unless
  // the base has no other key.
  const jsonBytes = bytes.length + '"data":'.length +
    utf8Length(JSON.stringify(record.data)) +
    (Object.keys(rest).length > 0 ? 1 : 0);
  return { bytes, shared: true, jsonBytes };
}

/** An item's identity: the space, then length-prefixed parts. */
function identity(space: string, ...parts: string[]): string {
  return space + parts.map((part) => `${part.length}:${part}`).join("");
}
