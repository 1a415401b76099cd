/**
 * The storage conformance suite: Keys round-trip: `/`, NUL, unicode and 2 KiB keys, keys that look alike
 * when joined, op ids and meta keys of `maxKeyLength` (and one more), and
 * writes of the longest kinds and record ids the contract allows.
 *
 * Part of the published suite (`storage/conformance.ts`), not exported
 * from the package on its own; it depends only on the storage contract.
 *
 * @module
 */

import assert from "node:assert/strict";
import { StorageError } from "../src/errors.ts";
import type {
  Mutation,
  StorageCapabilities,
  StoredOp,
  StoredRecord,
} from "../src/storage.ts";
import {
  type Case,
  commit,
  deleteOp,
  deleteRecord,
  finite,
  getMeta,
  getOp,
  getRecord,
  KIND,
  op,
  opId,
  pages,
  putMeta,
  putOp,
  putRecord,
  record,
  rejectsWith,
  succeeds,
  writeBytes,
} from "./_conformance_kit.ts";

/** Keys that break adapters which join, escape or truncate keys. */
const ALL_ODD_KEYS: readonly string[] = [
  "a/b",
  "/",
  "a\0b",
  "\0",
  "\u00FC",
  "\u{1F600}",
  "\u65E5\u672C\u8A9E",
  " ",
  ".",
  "..",
  "%2F",
  "__proto__",
  "constructor",
  "x".repeat(2048),
];

/** An op's record id for a key: short, so one op fits a 4 KiB write. */
function shortId(key: string): string {
  return key.slice(0, 64);
}

/**
 * How many digits {@linkcode wideKey} has: U+E000 to U+FFFF, each 3 bytes in
 * UTF-8 (the most per code unit), none a surrogate.
 */
const WIDE_DIGITS = 0x2000;

/**
 * A key of `length` code units, all among the widest, that ends with `n`'s
 * digits: keys for different `n` differ while `n < WIDE_DIGITS ** length`.
 */
function wideKey(length: number, n: number): string {
  const units = new Array<string>(length).fill("\uFFFF");
  for (let index = length - 1; n > 0 && index >= 0; index--) {
    units[index] = String.fromCharCode(0xFFFF - n % WIDE_DIGITS);
    n = Math.floor(n / WIDE_DIGITS);
  }
  return units.join("");
}

/**
 * The longest kind every storage holds, in UTF-16 code units (contract
 * clause 8): the wire contract's 64 characters.
 */
const LONGEST_KIND = 64;

/**
 * The longest record id every storage holds, in UTF-16 code units: the wire
 * contract's 256 code points, each up to two units.
 */
const LONGEST_ID = 512;

/** The longest kind the wire contract allows: 64 of `[A-Za-z0-9_-]`. */
const LONG_KIND = "K_-9".repeat(LONGEST_KIND / 4);

/**
 * Record ids of 256 code points, the wire contract's longest, most of them
 * astral (512 UTF-16 units), with NUL, `/` and `%`; several share all but
 * their last character, whose UTF-16 order differs from its code point
 * order. The last one is 512 BMP characters: within what every storage
 * holds, beyond what the wire carries.
 */
const LONG_IDS: readonly string[] = (() => {
  const emoji = "\u{1F600}";
  const stem = emoji.repeat(255);
  return [
    emoji.repeat(256),
    // A prefix of the next ones.
    stem,
    ...["\0", "%", "/", "a", "\u{10FFFF}", "\uFFFF", "\u{10000}"].map((
      last,
    ) => stem + last),
    "\0" + stem,
    "/" + stem,
    "%2F" + emoji.repeat(253),
    emoji.repeat(128) + "\0/%" + emoji.repeat(125),
    "x".repeat(256),
    "\uFFFF".repeat(LONGEST_ID),
  ];
})();

/**
 * A record id of 256 code points (511 UTF-16 units), all but two among the
 * widest, with NUL, `/` or `%`: ids for different `n` differ while
 * `n < 0x100000`.
 */
function longestId(n: number): string {
  return "\u{10FFFF}".repeat(254) + ["\0", "/", "%"][n % 3]! +
    String.fromCodePoint(0x10000 + n);
}

/** The values of a widest case: as first written, then as changed. */
interface Widest<T> {
  readonly created: T[];
  readonly changed: T[];
}

/**
 * How many items a widest case writes at once: `maxMutationsPerWrite`, or
 * 64 when it has no limit.
 */
function widestCount(capabilities: StorageCapabilities): number {
  const { maxMutationsPerWrite } = capabilities;
  return finite(maxMutationsPerWrite) ? maxMutationsPerWrite : 64;
}

/**
 * Ops whose op id is `maxKeyLength` wide characters (26 when it has no
 * limit) and whose kind and id are the longest, wide too; changed, each
 * moves to another state and record.
 */
function widestOps(capabilities: StorageCapabilities): Widest<StoredOp> {
  const { maxKeyLength } = capabilities;
  const length = finite(maxKeyLength) ? maxKeyLength : 26;
  const created = Array.from(
    { length: widestCount(capabilities) },
    (_, n) =>
      op(wideKey(length, n), {
        kind: wideKey(LONGEST_KIND, 0),
        id: longestId(0),
      }),
  );
  const changed = created.map((value): StoredOp => ({
    ...value,
    // The longest state name, for adapters that put it in a key.
    state: "quarantined",
    id: longestId(1),
  }));
  return { created, changed };
}

/** Records whose kind and id are the longest, in wide characters. */
function widestRecords(
  capabilities: StorageCapabilities,
): Widest<StoredRecord> {
  const created = Array.from(
    { length: widestCount(capabilities) },
    (_, n) => record(wideKey(LONGEST_KIND, 0), longestId(n), { data: { n } }),
  );
  const changed = created.map((value, n): StoredRecord => ({
    ...value,
    data: { n, changed: true },
    deleted: true,
  }));
  return { created, changed };
}

/** Whether the writes of a widest case can run within the limits. */
function widestFits<T>(
  capabilities: StorageCapabilities,
  build: (capabilities: StorageCapabilities) => Widest<T>,
  put: (value: T) => Mutation,
): boolean {
  const { maxKeyLength, maxWriteBytes } = capabilities;
  // Too short an op id to tell every op apart.
  if (WIDE_DIGITS ** maxKeyLength < widestCount(capabilities)) return false;
  const { created, changed } = build(capabilities);
  return [created, changed].every((values) =>
    writeBytes(values.map(put)) <= maxWriteBytes
  );
}

function byOpId(a: StoredOp, b: StoredOp): number {
  return a.opId < b.opId ? -1 : a.opId > b.opId ? 1 : 0;
}

function byId(a: StoredRecord, b: StoredRecord): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** The cases on keys, in order. */
export const KEY_CASES: readonly Case[] = [
  {
    clause: "keys with /, NUL, unicode and 2 KiB round-trip",
    async run({ storage }): Promise<void> {
      // An op id or meta key beyond the declared maxKeyLength, or a record
      // id beyond the contract's 512 code units, is the limit cases'
      // business.
      const ODD_KEYS = ALL_ODD_KEYS.filter((key) =>
        key.length <= storage.capabilities.maxKeyLength
      );
      const ODD_IDS = ALL_ODD_KEYS.filter((key) => key.length <= LONGEST_ID);
      await commit(storage, [
        ...ODD_IDS.map((key) =>
          putRecord(record(KIND, key, { data: { n: key.length } }))
        ),
        ...ODD_KEYS.map((key) => putOp(op(key, { id: shortId(key) }))),
        ...ODD_KEYS.map((key) => putMeta(key, key.length)),
      ]);
      const sorted = [...ODD_KEYS].sort();
      const records = await storage.getRecords(KIND, ODD_IDS);
      assert.deepEqual(
        records.map((entry) => entry?.value),
        ODD_IDS.map((key) => record(KIND, key, { data: { n: key.length } })),
      );
      assert.deepEqual(
        (await storage.listRecords(KIND)).map((entry) => entry.value.id),
        [...ODD_IDS].sort(),
      );
      const ops = await storage.getOps(ODD_KEYS);
      assert.deepEqual(
        ops.map((entry) => entry?.value),
        ODD_KEYS.map((key) => op(key, { id: shortId(key) })),
      );
      assert.deepEqual(
        (await storage.listOps()).map((entry) => entry.value.opId),
        sorted,
      );
      for (const key of ODD_KEYS) {
        const [entry] = await storage.listOps({
          kinds: [KIND],
          id: shortId(key),
        });
        assert.equal(entry?.value.opId, key);
      }
      const meta = await storage.getMeta(ODD_KEYS);
      assert.deepEqual(
        meta.map((entry) => entry?.value),
        ODD_KEYS.map((key) => key.length),
      );
    },
  },
  {
    clause: "keys that look alike when joined do not collide",
    async run({ storage }): Promise<void> {
      const pairs: [string, string][] = [
        ["a", "b"],
        ["a", "b/c"],
        ["a/b", "c"],
        ["a", "b\0c"],
        ["a\0b", "c"],
        ["a", "b:c"],
        ["a:b", "c"],
        ["ab", "c"],
        ["a", "bc"],
      ];
      await commit(
        storage,
        pairs.map(([kind, id]) =>
          putRecord(record(kind, id, { data: { kind, id } }), null)
        ),
      );
      // The same string in every space is a different item in each.
      await commit(storage, [
        putOp(op("a", { kind: "a", id: "a" }), null),
        putMeta("a", "meta", null),
        putRecord(record("meta", "a"), null),
      ]);
      for (const [kind, id] of pairs) {
        const entry = await getRecord(storage, kind, id);
        assert.deepEqual(entry?.value.data, { kind, id });
      }
      assert.deepEqual(
        (await storage.listRecords("a")).map((entry) => entry.value.id),
        ["b", "b\0c", "b/c", "b:c", "bc"],
      );
      for (const kind of ["a/b", "a\0b", "a:b", "ab"]) {
        assert.deepEqual(
          (await storage.listRecords(kind)).map((entry) => entry.value.id),
          ["c"],
        );
      }
      assert.equal(await getRecord(storage, "a", "a"), undefined);
      assert.equal((await getMeta(storage, "a"))?.value, "meta");
      assert.equal((await getOp(storage, "a"))?.value.kind, "a");
      assert.deepEqual(
        (await storage.listRecords("meta")).map((entry) => entry.value.id),
        ["a"],
      );
    },
  },
  {
    clause: "write() accepts op ids and meta keys of exactly maxKeyLength",
    needs: ({ capabilities }) => finite(capabilities.maxKeyLength),
    async run({ storage }): Promise<void> {
      const max = storage.capabilities.maxKeyLength;
      // Unicode at the end: a limit counted in bytes instead of code units,
      // or a key cut short, shows up here.
      const key = "k".repeat(max - 2) + "\u{1F600}";
      assert.equal(key.length, max);
      await commit(storage, [putOp(op(key, { kind: LONG_KIND }))]);
      await commit(storage, [putMeta(key, 1)]);
      assert.equal((await storage.getOps([key]))[0]?.value.opId, key);
      assert.equal((await getMeta(storage, key))?.value, 1);
      const [listed] = await storage.listOps({ kinds: [LONG_KIND], id: "1" });
      assert.equal(listed?.value.opId, key);
    },
  },
  {
    clause:
      "write() rejects an op id or meta key of maxKeyLength + 1 with a StorageError and commits nothing",
    needs: ({ capabilities }) => finite(capabilities.maxKeyLength),
    async run({ storage }): Promise<void> {
      const max = storage.capabilities.maxKeyLength;
      const long = "k".repeat(max + 1);
      const writes: Mutation[][] = [
        [putMeta("before", 1), putOp(op(long))],
        [putMeta("before", 1), putMeta(long, 1)],
      ];
      for (const mutations of writes) {
        await rejectsWith(storage.write(mutations), StorageError, max);
      }
      assert.equal(await getMeta(storage, "before"), undefined);
      assert.deepEqual(await storage.listOps(), []);
    },
  },
  {
    clause:
      "records with the longest kinds and ids round-trip: read, list, page, update and delete",
    async run({ storage }): Promise<void> {
      const other = LONG_KIND.slice(0, -1) + "8";
      await commit(storage, [
        ...LONG_IDS.map((id) => putRecord(record(LONG_KIND, id), null)),
        putRecord(record(other, LONG_IDS[0]!, { data: { other: true } })),
      ]);
      const sorted = [...LONG_IDS].sort();
      const entries = await storage.getRecords(LONG_KIND, LONG_IDS);
      assert.deepEqual(
        entries.map((entry) => entry?.value),
        LONG_IDS.map((id) => record(LONG_KIND, id)),
      );
      const list = async (after?: string, limit?: number) =>
        (await storage.listRecords(LONG_KIND, {
          ...(after === undefined ? {} : { after }),
          ...(limit === undefined ? {} : { limit }),
        })).map((entry) => entry.value.id);
      assert.deepEqual(await list(), sorted);
      assert.deepEqual(await pages((after) => list(after, 3), String, 3), [
        ...sorted,
      ]);
      for (const [index, after] of sorted.entries()) {
        assert.deepEqual(
          await list(after, 2),
          sorted.slice(index + 1, index + 3),
          `Expected the two ids after ${index}`,
        );
      }
      // A cursor that is no stored id, between two that share 255
      // characters.
      assert.deepEqual(
        await list("\u{1F600}".repeat(255) + "b"),
        sorted.filter((id) => id > "\u{1F600}".repeat(255) + "b"),
      );
      assert.deepEqual(
        (await storage.listRecords(other)).map((entry) => entry.value.data),
        [{ other: true }],
      );
      const changed = LONG_IDS.map((id, n) =>
        record(LONG_KIND, id, { data: { n }, deleted: true })
      );
      await commit(
        storage,
        changed.map((value, n) => putRecord(value, entries[n]!.rev)),
      );
      const updated = await storage.getRecords(LONG_KIND, LONG_IDS);
      assert.deepEqual(updated.map((entry) => entry?.value), changed);
      assert.deepEqual(await list(), []);
      assert.deepEqual(
        (await storage.listRecords(LONG_KIND, { includeDeleted: true })).map(
          (entry) => entry.value,
        ),
        [...changed].sort(byId),
      );
      await commit(
        storage,
        LONG_IDS.map((id, n) => deleteRecord(LONG_KIND, id, updated[n]!.rev)),
      );
      assert.ok(
        (await storage.getRecords(LONG_KIND, LONG_IDS)).every((entry) =>
          entry === undefined
        ),
      );
      assert.deepEqual(
        await storage.listRecords(LONG_KIND, { includeDeleted: true }),
        [],
      );
      assert.equal((await storage.listRecords(other)).length, 1);
    },
  },
  {
    clause:
      "ops with the longest kinds and ids round-trip: read, list by record, update and delete",
    async run({ storage }): Promise<void> {
      const ops = LONG_IDS.map((id, n) => op(opId(n), { kind: LONG_KIND, id }));
      await commit(storage, ops.map((value) => putOp(value, null)));
      const opIds = ops.map((value) => value.opId);
      const entries = await storage.getOps(opIds);
      assert.deepEqual(entries.map((entry) => entry?.value), ops);
      for (const value of ops) {
        for (const kinds of [[LONG_KIND], undefined]) {
          const listed = await storage.listOps({
            id: value.id,
            ...(kinds === undefined ? {} : { kinds }),
          });
          assert.deepEqual(listed.map((entry) => entry.value), [value]);
        }
      }
      // Each op moves to the next op's record and out of the live queue.
      const changed = ops.map((value, n): StoredOp => ({
        ...value,
        id: LONG_IDS[(n + 1) % LONG_IDS.length]!,
        state: "quarantined",
      }));
      await commit(
        storage,
        changed.map((value, n) => putOp(value, entries[n]!.rev)),
      );
      const updated = await storage.getOps(opIds);
      assert.deepEqual(updated.map((entry) => entry?.value), changed);
      for (const value of changed) {
        const listed = await storage.listOps({
          kinds: [LONG_KIND],
          id: value.id,
        });
        assert.deepEqual(listed.map((entry) => entry.value), [value]);
      }
      assert.deepEqual(await storage.listOps({ states: ["pending"] }), []);
      assert.deepEqual(
        (await storage.listOps({ states: ["quarantined"] })).map((entry) =>
          entry.value
        ),
        changed,
      );
      await commit(
        storage,
        opIds.map((id, n) => deleteOp(id, updated[n]!.rev)),
      );
      assert.deepEqual(await storage.listOps(), []);
      assert.deepEqual(await storage.listOps({ id: LONG_IDS[0]! }), []);
    },
  },
  {
    // The worst write the declared limits allow: an adapter that derives
    // its limits from a budget per write (Deno KV caps the keys of one
    // atomic operation at 80 KiB) shows here that its limits fit it.
    clause:
      "write() accepts maxMutationsPerWrite ops with the longest kinds, ids and op ids in wide characters",
    needs: ({ capabilities }) => widestFits(capabilities, widestOps, putOp),
    async run({ storage }): Promise<void> {
      const { created, changed } = widestOps(storage.capabilities);
      const opIds = created.map((value) => value.opId);
      assert.equal(new Set(opIds).size, opIds.length);
      await succeeds(storage, created.map((value) => putOp(value, null)));
      const entries = await storage.getOps(opIds);
      assert.deepEqual(entries.map((entry) => entry?.value), created);
      await succeeds(
        storage,
        changed.map((value, n) => putOp(value, entries[n]!.rev)),
      );
      const updated = await storage.getOps(opIds);
      assert.deepEqual(updated.map((entry) => entry?.value), changed);
      const { kind, id } = changed[0]!;
      assert.deepEqual(
        (await storage.listOps({ kinds: [kind], id })).map((entry) =>
          entry.value
        ),
        [...changed].sort(byOpId),
      );
      assert.deepEqual(
        await storage.listOps({ kinds: [kind], id: created[0]!.id }),
        [],
      );
      assert.deepEqual(await storage.listOps({ states: ["pending"] }), []);
      await succeeds(
        storage,
        opIds.map((opId, n) => deleteOp(opId, updated[n]!.rev)),
      );
      assert.deepEqual(await storage.listOps(), []);
    },
  },
  {
    clause:
      "write() accepts maxMutationsPerWrite records with the longest kinds and ids in wide characters",
    needs: ({ capabilities }) =>
      widestFits(capabilities, widestRecords, putRecord),
    async run({ storage }): Promise<void> {
      const { created, changed } = widestRecords(storage.capabilities);
      const { kind } = created[0]!;
      const ids = created.map((value) => value.id);
      assert.equal(new Set(ids).size, ids.length);
      await succeeds(storage, created.map((value) => putRecord(value, null)));
      const entries = await storage.getRecords(kind, ids);
      assert.deepEqual(entries.map((entry) => entry?.value), created);
      await succeeds(
        storage,
        changed.map((value, n) => putRecord(value, entries[n]!.rev)),
      );
      const updated = await storage.getRecords(kind, ids);
      assert.deepEqual(updated.map((entry) => entry?.value), changed);
      assert.deepEqual(
        (await storage.listRecords(kind, { includeDeleted: true })).map((
          entry,
        ) => entry.value),
        [...changed].sort(byId),
      );
      assert.deepEqual(await storage.listRecords(kind), []);
      await succeeds(
        storage,
        ids.map((id, n) => deleteRecord(kind, id, updated[n]!.rev)),
      );
      assert.deepEqual(
        await storage.listRecords(kind, { includeDeleted: true }),
        [],
      );
    },
  },
];
