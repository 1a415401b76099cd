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
  inlineHeader,
  type KvKeyspace,
  UNINDEXED_STATE,
} from "./_kv_keyspace.ts";
import { utf8Length } from "./_text.ts";
import {
  type CheckedMutation,
  checkMutations,
  checkWriteBytes,
  writeBytes,
} from "./_validate.ts";

/** A versionstamp as KV issues it: 20 lowercase hex digits. */
const VERSIONSTAMP = /^[0-9a-f]{20}$/;

/** A checked mutation with its value's JSON. */
type Planned = CheckedMutation & {
  /** The value's UTF-8 JSON as stored; `undefined` for a delete. */
  readonly bytes: Uint8Array | undefined;
  /**
   * A record's or meta entry's inline header, around `bytes`; `undefined`
   * for an op (its header holds its slot) or a delete.
   */
  readonly header: Uint8Array | undefined;
  /** Whether a record's base was left out of `bytes` (`"a": 1`). */
  readonly shared: boolean;
  /**
   * The UTF-8 length of `JSON.stringify()` of the value, for the limit;
   * `undefined` when it takes serialising again (a record stored without
   * its base's data) or for a delete.
   */
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
  /** A record's or meta entry's inline header, around `bytes`. */
  readonly header: Uint8Array | undefined;
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
  // whole write again: first against a bound, which needs no more
  // serialising (a record stored without its base's data has whole JSON at
  // most twice its stored JSON), then exactly when the bound is too big.
  const { maxWriteBytes } = capabilities;
  const bound = writeBytes(mutations, (index) => jsonBound(plan[index]!));
  if (bound > maxWriteBytes) {
    checkWriteBytes(
      mutations,
      maxWriteBytes,
      (index) => exactJsonBytes(plan[index]!),
    );
  }
  if (plan.length === 0) return { ok: true, revs: [] };
  const grouped = group(space, plan);
  // Expects that contradict each other, or a revision KV never issued,
  // cannot hold whatever the store holds.
  if (grouped === undefined) return { ok: false };
  chooseLarge(space, grouped.items);
  return grouped;
}

/** One item while a write is grouped: its last mutation, its expect. */
interface Grouping {
  last: Planned;
  /** The expect of its mutations; `undefined` while none gave one. */
  expect: WritePrecondition;
  item: Item | undefined;
}

/**
 * Groups mutations by item: the last mutation of an item wins, and its
 * expects must agree. `undefined` when they cannot all hold: expects that
 * contradict each other, or a revision KV never issued.
 */
function group(
  space: KvKeyspace,
  plan: readonly Planned[],
): WritePlan | undefined {
  const items = new ItemMaps<Grouping>();
  const order: Grouping[] = [];
  const groupingOf: Grouping[] = new Array(plan.length);
  for (let index = 0; index < plan.length; index++) {
    const planned = plan[index]!;
    const { expect } = planned;
    if (typeof expect === "string" && !VERSIONSTAMP.test(expect)) {
      return undefined;
    }
    const byName = items.of(planned);
    const name = nameOf(planned);
    let grouping = byName.get(name);
    if (grouping === undefined) {
      grouping = { last: planned, expect, item: undefined };
      byName.set(name, grouping);
      order.push(grouping);
    } else {
      if (expect !== undefined) {
        if (grouping.expect !== undefined && grouping.expect !== expect) {
          return undefined;
        }
        grouping.expect = expect;
      }
      grouping.last = planned;
    }
    groupingOf[index] = grouping;
  }
  const planned: Item[] = [];
  for (const grouping of order) {
    const { last } = grouping;
    grouping.item = {
      space: last.space,
      headerKey: headerKey(space, last),
      value: last.value,
      bytes: last.bytes,
      header: last.header,
      shared: last.shared,
      expect: grouping.expect,
      large: false,
      freshSlot: last.space === "op" ? randomSlot() : 0,
      read: undefined,
    };
    planned.push(grouping.item);
  }
  return {
    items: planned,
    itemOf: groupingOf.map((grouping) => grouping.item!),
  };
}

/**
 * Maps of a write's items by name: records by kind, then id; ops by op id;
 * meta entries by key. The names are the mutations' own strings, so no key
 * is built (a fresh string costs its hash, about half a µs, on every item
 * of a write).
 */
class ItemMaps<T> {
  readonly #records = new Map<string, Map<string, T>>();
  readonly #ops = new Map<string, T>();
  readonly #meta = new Map<string, T>();

  /** The map of a mutation's space (and kind). */
  of(mutation: CheckedMutation): Map<string, T> {
    switch (mutation.space) {
      case "record": {
        let byId = this.#records.get(mutation.kind);
        if (byId === undefined) {
          this.#records.set(mutation.kind, byId = new Map());
        }
        return byId;
      }
      case "op":
        return this.#ops;
      case "meta":
        return this.#meta;
    }
  }
}

/** A mutation's item's name within its map (see {@linkcode ItemMaps}). */
function nameOf(mutation: CheckedMutation): string {
  switch (mutation.space) {
    case "record":
      return mutation.id;
    case "op":
      return mutation.opId;
    case "meta":
      return mutation.key;
  }
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

/** A checked mutation with its value's JSON. */
function planOf(mutation: CheckedMutation): Planned {
  switch (mutation.space) {
    case "record":
      return {
        ...mutation,
        ...recordBytes(mutation.value),
      };
    case "op": {
      const bytes = mutation.value === undefined
        ? undefined
        : encodeJson(mutation.value);
      return {
        ...mutation,
        bytes,
        header: undefined,
        shared: false,
        jsonBytes: bytes?.length,
      };
    }
    case "meta": {
      const inline = mutation.value === undefined
        ? undefined
        : inlineHeader(mutation.value, false);
      return {
        ...mutation,
        bytes: inline?.json,
        header: inline?.header,
        shared: false,
        jsonBytes: inline?.json.length,
      };
    }
  }
}

/** A record's JSON as stored, and the length of its whole JSON if known. */
function recordBytes(
  record: StoredRecord | undefined,
): Pick<Planned, "bytes" | "header" | "shared" | "jsonBytes"> {
  if (record === undefined) {
    return {
      bytes: undefined,
      header: undefined,
      shared: false,
      jsonBytes: undefined,
    };
  }
  const base = record.base as StoredRecord["base"] | undefined;
  if (typeof base !== "object" || base === null || base.data !== record.data) {
    const { json, header } = inlineHeader(record, false);
    return { bytes: json, header, shared: false, jsonBytes: json.length };
  }
  // The engine passes one object for a pulled record's data and its base's
  // data: stored once, it halves the value.
  const { data: _, ...rest } = base;
  const { json, header } = inlineHeader({ ...record, base: rest }, true);
  return { bytes: json, header, shared: true, jsonBytes: undefined };
}

/** The UTF-8 length of the whole JSON of a mutation's value, or a bound. */
function jsonBound(planned: Planned): number | undefined {
  if (planned.jsonBytes !== undefined || !planned.shared) {
    return planned.jsonBytes;
  }
  // The stored JSON holds the data's JSON once, so the data's JSON is no
  // longer: the whole JSON adds `"data":`, it, and maybe a comma.
  return 2 * planned.bytes!.length + '"data":'.length + 1;
}

/** The UTF-8 length of the whole JSON of a mutation's value, exactly. */
function exactJsonBytes(planned: Planned): number | undefined {
  if (planned.jsonBytes !== undefined || !planned.shared) {
    return planned.jsonBytes;
  }
  const record = planned.value as StoredRecord;
  const { data: _, ...rest } = record.base!;
  // The whole JSON holds `"data":<data>` in the base, and a comma unless
  // the base has no other key.
  return planned.bytes!.length + '"data":'.length +
    utf8Length(JSON.stringify(record.data)) +
    (Object.keys(rest).length > 0 ? 1 : 0);
}
