import assert from "node:assert/strict";
import { type KvStorage, openKvStorage } from "../storage/kv.ts";
import { testStorage } from "../storage/conformance.ts";
import { ClosedError, StorageError } from "../src/errors.ts";
import type {
  Mutation,
  Storage,
  StoredOp,
  StoredRecord,
} from "../src/storage.ts";
import type { JsonValue } from "../src/json.ts";
import { encodeText, keyPart, keyPartBytes } from "../storage/_kv_keys.ts";
import { sha256 } from "../storage/_sha256.ts";
import { pendingOp } from "./_fixtures.ts";

await testStorage("kv (:memory:)", async () => ({
  storage: await openKvStorage(":memory:"),
}));

await testStorage("kv (file)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kv_storage_test_" });
  const path = `${dir}/store.sqlite`;
  return {
    storage: await openKvStorage(path),
    reopen: () => openKvStorage(path),
    teardown: () => Deno.remove(dir, { recursive: true }),
  };
});

/** Noise another store sharing the KV writes under its own prefix. */
const NOISE: Mutation[] = [
  { type: "putRecord", record: record("todo", "a", { title: "other" }) },
  { type: "putRecord", record: record("todo", "", {}) },
  { type: "putOp", op: op(1, { id: "a" }) },
  { type: "putOp", op: op(2, { id: "1", state: "parked" }) },
  { type: "putMeta", key: "m", value: "other" },
  { type: "putMeta", key: "counter", value: 1000 },
];

await testStorage("kv (prefixed, sharing a Kv)", async () => {
  const kv = await Deno.openKv(":memory:");
  const other = await openKvStorage(kv, { prefix: ["tenant", "other"] });
  assert.equal((await other.write(NOISE)).ok, true);
  const before = await snapshot(other);
  const prefix = ["tenant", "mine", 7, new Uint8Array([0, 1])];
  return {
    storage: await openKvStorage(kv, { prefix }),
    reopen: () => openKvStorage(kv, { prefix }),
    async teardown() {
      // The suite's case never touched the other store's data.
      assert.deepEqual(await snapshot(other), before);
      await other.close();
      kv.close();
    },
  };
});

function record(
  kind: string,
  id: string,
  data: StoredRecord["data"],
  fields: Partial<StoredRecord> = {},
): StoredRecord {
  return {
    kind,
    id,
    data,
    deleted: false,
    base: null,
    lastOpId: null,
    localUpdatedAt: null,
    ...fields,
  };
}

function opId(n: number): string {
  return `01J${String(n).padStart(23, "0")}`;
}

function op(n: number, fields: Partial<StoredOp> = {}): StoredOp {
  return pendingOp(opId(n), {
    payload: { n },
    createdAt: n,
    editedAt: n,
    ...fields,
  });
}

async function snapshot(storage: Storage): Promise<unknown> {
  return {
    records: await storage.listRecords("todo", { includeDeleted: true }),
    ops: await storage.listOps(),
    byRecord: await storage.listOps({ id: "a" }),
    meta: await storage.getMeta(["m", "counter"]),
  };
}

async function tempPath(): Promise<{ path: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "kv_storage_test_" });
  return {
    path: `${dir}/store.sqlite`,
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

/** A JSON text of about `bytes` bytes with multi-byte characters and NUL. */
function bigText(bytes: number): string {
  const pattern = "abcdefghijklmnopqrstuvwxyz0123456789\u00FC\u{1F600}\0";
  return pattern.repeat(Math.ceil(bytes / pattern.length));
}

/** Every raw entry under a prefix. */
async function raw(
  kv: Deno.Kv,
  prefix: Deno.KvKey,
): Promise<Deno.KvEntry<unknown>[]> {
  return await Array.fromAsync(kv.list({ prefix }));
}

Deno.test("kv: capabilities follow the path, the prefix and maxMutationsPerWrite", async () => {
  await using memory = await openKvStorage(":memory:");
  assert.deepEqual(memory.capabilities, {
    persistent: false,
    multiProcess: false,
    maxMutationsPerWrite: 50,
    maxWriteBytes: 8 * 1024 * 1024,
    maxKeyLength: 118,
  });
  assert.ok(Object.isFrozen(memory.capabilities));
  await using file = await tempPath();
  await using onFile = await openKvStorage(file.path);
  assert.equal(onFile.capabilities.persistent, true);
  assert.equal(onFile.capabilities.multiProcess, true);
  using kv = await Deno.openKv(":memory:");
  // The most mutations that leave op ids and meta keys 80 code units.
  await using passed = await openKvStorage(kv, { maxMutationsPerWrite: 69 });
  assert.equal(passed.capabilities.persistent, true);
  assert.equal(passed.capabilities.multiProcess, true);
  assert.equal(passed.capabilities.maxMutationsPerWrite, 69);
  assert.equal(passed.capabilities.maxKeyLength, 81);
  for (const maxMutationsPerWrite of [70, 98]) {
    await assert.rejects(openKvStorage(kv, { maxMutationsPerWrite }), {
      name: "RangeError",
      message:
        `Cannot open KV storage as 'prefix' and 'maxMutationsPerWrite' leave too little room for keys: current value is 20 bytes of prefix and ${maxMutationsPerWrite} mutations per write`,
    });
  }
  await using one = await openKvStorage(kv, { maxMutationsPerWrite: 1 });
  // One mutation per write: the 2 KiB limit of one key decides.
  assert.equal(one.capabilities.maxKeyLength, 670);
  await using long = await openKvStorage(kv, { prefix: ["x".repeat(60)] });
  assert.ok(long.capabilities.maxKeyLength < 118);
  // A long prefix is in every key: fewer mutations per write leave room.
  await assert.rejects(
    openKvStorage(kv, { prefix: ["x".repeat(100)] }),
    RangeError,
  );
  await assert.rejects(
    openKvStorage(kv, { prefix: ["x".repeat(300)] }),
    RangeError,
  );
  await using fewer = await openKvStorage(kv, {
    prefix: ["x".repeat(300)],
    maxMutationsPerWrite: 10,
  });
  assert.ok(fewer.capabilities.maxKeyLength > 0);
});

Deno.test("kv: openKvStorage() rejects malformed options", async () => {
  for (const value of [0, 99, 1.5, NaN, "10"]) {
    await assert.rejects(
      openKvStorage(":memory:", {
        maxMutationsPerWrite: value as number,
      }),
      RangeError,
    );
  }
  await assert.rejects(
    openKvStorage(":memory:", { maxMutationsPerWrite: 0 }),
    {
      message:
        "Cannot open KV storage as 'maxMutationsPerWrite' is not an integer from 1 to 98: current value is 0",
    },
  );
  await assert.rejects(
    openKvStorage(":memory:", { prefix: "app" as unknown as Deno.KvKey }),
    TypeError,
  );
  await assert.rejects(
    openKvStorage(":memory:", { prefix: [{}] as unknown as Deno.KvKey }),
    TypeError,
  );
  await assert.rejects(
    openKvStorage(":memory:", { closeKv: 1 as unknown as boolean }),
    TypeError,
  );
  await assert.rejects(
    openKvStorage(42 as unknown as string),
    TypeError,
  );
  await assert.rejects(
    openKvStorage(":memory:", { prefix: ["x".repeat(2000)] }),
    RangeError,
  );
  // Room for op ids of 156 code units, but not for a record key with the
  // longest kind and id parts (1,562 + 497 bytes).
  await assert.rejects(
    openKvStorage(":memory:", {
      prefix: ["x".repeat(1560)],
      maxMutationsPerWrite: 1,
    }),
    RangeError,
  );
  await using widest = await openKvStorage(":memory:", {
    prefix: ["x".repeat(1549)],
    maxMutationsPerWrite: 1,
  });
  // The longest parts: 192 and 256 bytes kept, a marker and a hash each.
  const kind = "\uFFFF".repeat(65);
  const id = "a" + "\u{1F600}".repeat(255);
  const created = await widest.write([{
    type: "putRecord",
    record: record(kind, id, {}),
    expect: null,
  }]);
  assert.equal(created.ok, true);
  assert.equal((await widest.getRecords(kind, [id]))[0]?.value.id, id);
});

Deno.test("kv: the longest keys fit at 3 bytes per code unit, whatever the prefix", async () => {
  // Units from 0x7F00 up take 3 bytes in the key encoding.
  const wide = (n: number, seed: number): string =>
    Array.from(
      { length: n },
      (_, i) => String.fromCharCode(0xff00 - ((seed * 7 + i) % 200)),
    ).join("");
  const prefixes: Deno.KvKey[] = [
    ["offline-first-sync"],
    [],
    ["\0\0", 1n << 80n, true, 3.5, new Uint8Array(40)],
    ["p".repeat(300)],
  ];
  let opened = 0;
  for (const prefix of prefixes) {
    for (const maxMutationsPerWrite of [1, 7, 50, 69]) {
      using kv = await Deno.openKv(":memory:");
      let storage: KvStorage;
      try {
        storage = await openKvStorage(kv, { prefix, maxMutationsPerWrite });
      } catch (error) {
        // Too many mutations for so long a prefix.
        assert.ok(error instanceof RangeError);
        assert.ok(keyBytes(prefix) > 40, Deno.inspect(prefix));
        continue;
      }
      opened++;
      await using _ = storage;
      const max = storage.capabilities.maxKeyLength;
      const count = maxMutationsPerWrite;
      // The worst record write: every record with the longest kind and id
      // (64 and 512 code units, all 3 bytes), each with a check.
      const kind = wide(64, 1);
      const ids = Array.from({ length: count }, (_, i) => wide(512, i));
      const created = await storage.write(ids.map((id) => ({
        type: "putRecord",
        record: record(kind, id, {}),
        expect: null,
      })));
      assert.equal(created.ok, true);
      const records = await storage.getRecords(kind, ids);
      const updated = await storage.write(records.map((entry) => ({
        type: "putRecord",
        record: { ...entry!.value, deleted: true },
        expect: entry!.rev,
      })));
      assert.equal(updated.ok, true, `prefix ${Deno.inspect(prefix)}`);
      assert.equal(
        (await storage.listRecords(kind, { includeDeleted: true })).length,
        count,
      );
      // The worst op write: every op changes state between two indexed
      // states and changes record, each with a check, op ids at the limit.
      const ops = Array.from({ length: count }, (_, i) =>
        op(i, {
          opId: wide(max - 1, i) + String.fromCharCode(0xff00 + i % 200),
          kind: wide(64, i + 1),
          id: wide(512, i + 2),
          state: "quarantined",
        }));
      const result = await storage.write(ops.map((value) => ({
        type: "putOp",
        op: value,
        expect: null,
      })));
      assert.equal(result.ok, true);
      const current = await storage.getOps(ops.map((value) => value.opId));
      const moved = await storage.write(current.map((entry, i) => ({
        type: "putOp",
        op: { ...entry!.value, state: "parked", id: wide(512, i + 3) },
        expect: entry!.rev,
      })));
      assert.equal(moved.ok, true, `prefix ${Deno.inspect(prefix)}`);
      const [listed] = await storage.listOps({
        kinds: [ops[0]!.kind],
        id: wide(512, 3),
      });
      assert.equal(listed?.value.state, "parked");
      // Meta keys at the limit.
      const keys = Array.from({ length: count }, (_, i) => wide(max, i));
      const metas = await storage.write(keys.map((key) => ({
        type: "putMeta",
        key,
        value: 1,
        expect: null,
      })));
      assert.equal(metas.ok, true);
    }
  }
  // Every prefix opens at 1 and 7 mutations; the short ones up to 69.
  assert.equal(opened, 12);
});

Deno.test("kv: values are stored as JSON bytes, not V8 serialization", async () => {
  using kv = await Deno.openKv(":memory:");
  await using storage = await openKvStorage(kv, { prefix: ["p"] });
  const value = record("todo", "1", { title: "Buy milk", nul: "\0" });
  assert.equal(
    (await storage.write([
      { type: "putRecord", record: value },
      { type: "putOp", op: op(1) },
      { type: "putMeta", key: "cursor", value: null },
    ])).ok,
    true,
  );
  const entries = await raw(kv, ["p"]);
  // Record, op, its record index entry (a pending op has no by-state
  // entry), meta, the layout's version.
  assert.equal(entries.length, 5);
  for (const entry of entries) {
    assert.ok(entry.value instanceof Uint8Array, Deno.inspect(entry.key));
    JSON.parse(new TextDecoder().decode(entry.value));
  }
  const header = await kv.get<Uint8Array>(["p", "r", ...keyParts("todo", "1")]);
  assert.deepEqual(JSON.parse(new TextDecoder().decode(header.value!)), {
    v: value,
  });
  assert.equal(
    header.versionstamp,
    (await storage.getRecords("todo", ["1"]))[0]?.rev,
  );
});

Deno.test("kv: a base sharing the record's data object is stored once and reads back as independent objects", async () => {
  using kv = await Deno.openKv(":memory:");
  await using storage = await openKvStorage(kv, { prefix: ["p"] });
  const data = { id: "1", title: "Milk", nested: { tags: ["a"] } };
  const base = { data, updatedAt: "2025-01-01T00:00:00.000Z", deleted: false };
  const shared = record("todo", "1", data, { base });
  // Equal but distinct objects: stored as they are.
  const copied = record("todo", "2", { ...data }, {
    base: { ...base, data: structuredClone(data) },
  });
  // A large one goes to a blob, flagged in its header.
  const bigData = { id: "3", text: bigText(200_000) };
  const big = record("todo", "3", bigData, {
    base: { ...base, data: bigData },
  });
  assert.equal(
    (await storage.write([
      { type: "putRecord", record: shared },
      { type: "putRecord", record: copied },
      { type: "putRecord", record: big },
    ])).ok,
    true,
  );
  const headerOf = async (id: string) => {
    const entry = await kv.get<Uint8Array>(["p", "r", ...keyParts("todo", id)]);
    return JSON.parse(new TextDecoder().decode(entry.value!));
  };
  const { base: _, ...rest } = shared;
  assert.deepEqual(await headerOf("1"), {
    a: 1,
    v: { ...rest, base: { updatedAt: base.updatedAt, deleted: false } },
  });
  assert.deepEqual(await headerOf("2"), { v: copied });
  const bigHeader = await headerOf("3");
  assert.equal(bigHeader.a, 1);
  // One copy of the text, not two.
  const once = new TextEncoder().encode(JSON.stringify(bigData)).length;
  assert.ok(
    bigHeader.z > once && bigHeader.z < once + 500,
    `${bigHeader.z} bytes`,
  );

  const reads = [
    ...(await storage.getRecords("todo", ["1", "1", "2", "3"])).map((entry) =>
      entry!.value
    ),
    ...(await storage.listRecords("todo")).map((entry) => entry.value),
  ];
  assert.deepEqual(reads, [shared, shared, copied, big, shared, copied, big]);
  assert.deepEqual(Object.keys(reads[0]!.base!), Object.keys(base));
  for (const value of reads) {
    assert.notEqual(value.base!.data, value.data);
  }
  assert.notEqual(
    (reads[0]!.base!.data["nested"] as { tags: string[] }).tags,
    (reads[0]!.data["nested"] as { tags: string[] }).tags,
  );
  assert.notEqual(reads[0], reads[1]);
  (reads[0]!.data["nested"] as { tags: string[] }).tags.push("b");
  assert.deepEqual(reads[0]!.base!.data, data);
  assert.deepEqual((await storage.getRecords("todo", ["1"]))[0]?.value, shared);
});

Deno.test("kv: a write of shared-base records measures its bytes as JSON.stringify does", async () => {
  await using storage = await openKvStorage(":memory:");
  const max = storage.capabilities.maxWriteBytes;
  /** Two records sharing their base's data, and a meta entry of `pad`. */
  const write = (pad: string, baseKeys: "all" | "data only"): Mutation[] => {
    const data = { id: "1", text: '\u00FC\u{1F600}\0"x'.repeat(1000) };
    const base = baseKeys === "all"
      ? { updatedAt: "2025-01-01T00:00:00.000Z", data, deleted: false }
      : { data } as unknown as StoredRecord["base"];
    return [
      { type: "putRecord", record: record("todo", "1", data, { base }) },
      {
        type: "putRecord",
        record: record("todo", "2", data, { base }),
        expect: null,
        extra: [1, undefined],
      } as Mutation,
      { type: "putMeta", key: "pad", value: pad },
    ];
  };
  for (const baseKeys of ["all", "data only"] as const) {
    const size = new TextEncoder().encode(JSON.stringify(write("", baseKeys)))
      .length;
    const exact = write("x".repeat(max - size), baseKeys);
    assert.equal(
      new TextEncoder().encode(JSON.stringify(exact)).length,
      max,
    );
    const result = await storage.write(exact);
    assert.equal(result.ok, true, baseKeys);
    await assert.rejects(
      storage.write(write("x".repeat(max - size + 1), baseKeys)),
      StorageError,
      `${max + 1} bytes`,
    );
    await storage.write([
      { type: "deleteRecord", kind: "todo", id: "1" },
      { type: "deleteRecord", kind: "todo", id: "2" },
    ]);
  }
});

Deno.test("kv: pending ops have no by-state entry; quarantined and parked ops do", async () => {
  using kv = await Deno.openKv(":memory:");
  await using storage = await openKvStorage(kv, { prefix: ["p"] });
  const stateKeys = async () =>
    (await raw(kv, ["p", "s"])).map((entry) => entry.key[2]);
  // Quarantined and parked ops among pending ones, and a large pending op.
  const large = op(4, { payload: { text: bigText(100_000) } });
  await storage.write([
    { type: "putOp", op: op(1) },
    { type: "putOp", op: op(2, { state: "quarantined" }) },
    { type: "putOp", op: op(3, { state: "parked" }) },
    { type: "putOp", op: large },
    { type: "putOp", op: op(5) },
  ]);
  assert.deepEqual(await stateKeys(), ["parked", "quarantined"]);
  const ids = async (options: Parameters<Storage["listOps"]>[0]) =>
    (await storage.listOps(options)).map((entry) => entry.value.createdAt);
  assert.deepEqual(await ids({ states: ["pending"] }), [1, 4, 5]);
  assert.deepEqual(await ids({ states: ["pending"], limit: 2 }), [1, 4]);
  assert.deepEqual(
    await ids({ states: ["pending"], after: opId(1), limit: 1 }),
    [4],
  );
  assert.deepEqual(await ids({ states: ["pending", "parked"] }), [1, 3, 4, 5]);
  assert.deepEqual(await ids({ states: ["quarantined", "parked"] }), [2, 3]);
  assert.deepEqual(await ids({}), [1, 2, 3, 4, 5]);
  assert.deepEqual(
    (await storage.listOps({ states: ["pending"] }))[1]?.value,
    large,
  );

  // Moving through every state keeps exactly the entries of the new state.
  const [first] = await storage.getOps([opId(1)]);
  let rev = first!.rev;
  for (const state of ["quarantined", "parked", "pending"] as const) {
    const result = await storage.write([
      { type: "putOp", op: op(1, { state }), expect: rev },
    ]);
    assert.ok(result.ok);
    rev = result.revs[0]!;
    assert.deepEqual(
      (await raw(kv, ["p", "s"])).filter((entry) =>
        JSON.parse(new TextDecoder().decode(entry.value as Uint8Array)).v
          ?.createdAt === 1
      ).map((entry) => entry.key[2]),
      state === "pending" ? [] : [state],
    );
    assert.deepEqual(
      await ids({ states: [state] }),
      {
        quarantined: [1, 2],
        parked: [1, 3],
        pending: [1, 4, 5],
      }[state],
    );
  }
  await storage.write([
    { type: "deleteOp", opId: opId(2) },
    { type: "deleteOp", opId: opId(3) },
  ]);
  assert.deepEqual(await stateKeys(), []);
});

Deno.test("kv: opening a store that indexed pending ops by state drops those entries", async () => {
  using kv = await Deno.openKv(":memory:");
  {
    await using storage = await openKvStorage(kv, { prefix: ["p"] });
    await storage.write([
      { type: "putOp", op: op(1) },
      { type: "putOp", op: op(2, { state: "parked" }) },
    ]);
  }
  // Entries as versions before this layout wrote them: a copy of each
  // pending op's header, 1,500 of them (more than one batch).
  const [header] = await raw(kv, ["p", "o"]);
  for (let start = 0; start < 1500; start += 500) {
    const atomic = kv.atomic();
    for (let n = start; n < start + 500; n++) {
      atomic.set(
        ["p", "s", "pending", ...keyParts(n === 0 ? opId(1) : opId(100 + n))],
        header!.value,
      );
    }
    assert.ok((await atomic.commit()).ok);
  }
  await using storage = await openKvStorage(kv, { prefix: ["p"] });
  assert.deepEqual(
    (await raw(kv, ["p", "s"])).map((entry) => entry.key[2]),
    ["parked"],
  );
  assert.deepEqual(
    (await storage.listOps()).map((entry) => entry.value.state),
    ["pending", "parked"],
  );
});

/** A generous bound of a key's encoded size (ASCII strings, numbers). */
function keyBytes(key: Deno.KvKey): number {
  return key.reduce<number>(
    (sum, part) => sum + (typeof part === "string" ? part.length * 2 + 2 : 20),
    0,
  );
}

/** The key parts of strings as the storage encodes them (ASCII only). */
function keyParts(...texts: string[]): Uint8Array[] {
  return texts.map((text) =>
    Uint8Array.from(text, (char) => char.charCodeAt(0) + 1)
  );
}

Deno.test("kv: a 1 MiB record is chunked and reassembled", async () => {
  using kv = await Deno.openKv(":memory:");
  await using storage = await openKvStorage(kv, { prefix: ["p"] });
  const big = record("todo", "big", { text: bigText(1024 * 1024) });
  const first = await storage.write([{ type: "putRecord", record: big }]);
  assert.equal(first.ok, true);
  const chunks = await raw(kv, ["p", "b"]);
  assert.ok(chunks.length >= 17, `${chunks.length} chunks`);
  assert.ok(
    chunks.every((entry) =>
      entry.value instanceof Uint8Array && entry.value.length <= 65536
    ),
  );
  const [read] = await storage.getRecords("todo", ["big"]);
  assert.deepEqual(read?.value, big);
  assert.equal(read?.rev, first.ok ? first.revs[0] : undefined);
  assert.deepEqual((await storage.listRecords("todo"))[0]?.value, big);
  // A large op and a large meta value, listed by every index.
  const bigOp = op(1, { payload: { text: bigText(300 * 1024) } });
  assert.equal(
    (await storage.write([
      { type: "putOp", op: bigOp, expect: null },
      { type: "putMeta", key: "big", value: [bigText(100 * 1024)] },
    ])).ok,
    true,
  );
  assert.deepEqual((await storage.getOps([bigOp.opId]))[0]?.value, bigOp);
  assert.deepEqual((await storage.listOps())[0]?.value, bigOp);
  assert.deepEqual(
    (await storage.listOps({ states: ["pending"] }))[0]?.value,
    bigOp,
  );
  assert.deepEqual(
    (await storage.listOps({ kinds: ["todo"], id: "1" }))[0]?.value,
    bigOp,
  );
  assert.deepEqual((await storage.getMeta(["big"]))[0]?.value, [
    bigText(100 * 1024),
  ]);
  // Replacing and deleting large values leaves no chunk and no ticket.
  const [current] = await storage.getRecords("todo", ["big"]);
  assert.equal(
    (await storage.write([
      {
        type: "putRecord",
        record: { ...big, data: { small: true } },
        expect: current!.rev,
      },
      { type: "deleteOp", opId: bigOp.opId },
      { type: "putMeta", key: "big", value: 1 },
    ])).ok,
    true,
  );
  assert.deepEqual(await raw(kv, ["p", "b"]), []);
  assert.deepEqual(await raw(kv, ["p", "t"]), []);
  assert.deepEqual(
    (await storage.getRecords("todo", ["big"]))[0]?.value.data,
    { small: true },
  );
  assert.deepEqual(await storage.listOps(), []);
});

Deno.test("kv: a write too big for one atomic operation moves values to blobs", async () => {
  using kv = await Deno.openKv(":memory:");
  await using storage = await openKvStorage(kv, { prefix: ["p"] });
  // 50 values of 60 KiB: each fits a KV value, together not an atomic.
  const records = Array.from(
    { length: 50 },
    (_, i) => record("todo", `r${i}`, { text: bigText(60 * 1024) }),
  );
  const result = await storage.write(
    records.map((value) => ({ type: "putRecord", record: value })),
  );
  assert.equal(result.ok, true);
  assert.ok((await raw(kv, ["p", "b"])).length > 0);
  const listed = await storage.listRecords("todo");
  assert.deepEqual(
    listed.map((entry) => entry.value),
    [...records].sort((a, b) => a.id < b.id ? -1 : 1),
  );
  assert.ok(listed.every((entry) => result.ok && entry.rev === result.revs[0]));
});

Deno.test("kv: a crash between blob pre-writes and the header swap leaves the old value", async () => {
  await using file = await tempPath();
  const old = record("todo", "a", { version: 1 });
  {
    await using storage = await openKvStorage(file.path);
    assert.equal(
      (await storage.write([{ type: "putRecord", record: old }])).ok,
      true,
    );
  }
  // What a write of a large value does before its atomic swap: a pending
  // ticket, then the chunks of a blob nothing references yet.
  const json = new TextEncoder().encode(
    JSON.stringify(record("todo", "a", { text: bigText(200 * 1024) })),
  );
  const blobId = crypto.randomUUID();
  const chunks = Math.ceil(json.length / 65536);
  {
    using kv = await Deno.openKv(file.path);
    const prefix = ["offline-first-sync"];
    const ticket = {
      state: "pending",
      at: Date.now(),
      blobs: [{ id: blobId, n: chunks }],
    };
    await kv.set(
      [...prefix, "t", crypto.randomUUID()],
      new TextEncoder().encode(JSON.stringify(ticket)),
    );
    for (let i = 0; i < chunks; i++) {
      await kv.set(
        [...prefix, "b", blobId, i],
        json.subarray(i * 65536, (i + 1) * 65536),
      );
    }
    // The process dies here.
  }
  using kv = await Deno.openKv(file.path);
  const chunkKeys = ["offline-first-sync", "b"];
  {
    await using storage = await openKvStorage(file.path);
    assert.deepEqual((await storage.getRecords("todo", ["a"]))[0]?.value, old);
    // A young pending ticket may be a write in flight: opening keeps it.
    assert.equal((await raw(kv, chunkKeys)).length, chunks);
    assert.equal(await storage.vacuum(), 0);
    assert.equal(await storage.vacuum({ graceMs: 0 }), 1);
    assert.deepEqual(await raw(kv, chunkKeys), []);
    assert.deepEqual(await raw(kv, ["offline-first-sync", "t"]), []);
    assert.deepEqual((await storage.getRecords("todo", ["a"]))[0]?.value, old);
  }
});

Deno.test("kv: opening collects garbage a crash left after the header swap", async () => {
  await using file = await tempPath();
  using kv = await Deno.openKv(file.path);
  // The swap committed a garbage ticket; the process died before deleting
  // the chunks it lists. And an old pending ticket nobody finished.
  const prefix = ["offline-first-sync"];
  const encode = (value: unknown) =>
    new TextEncoder().encode(JSON.stringify(value));
  const garbage = crypto.randomUUID();
  const abandoned = crypto.randomUUID();
  await kv.set(
    [...prefix, "t", crypto.randomUUID()],
    encode({ state: "garbage", at: 0, blobs: [{ id: garbage, n: 2 }] }),
  );
  await kv.set(
    [...prefix, "t", crypto.randomUUID()],
    encode({
      state: "pending",
      at: Date.now() - 3_600_000,
      blobs: [{ id: abandoned, n: 1 }],
    }),
  );
  for (const key of [[garbage, 0], [garbage, 1], [abandoned, 0]]) {
    await kv.set([...prefix, "b", ...key], new Uint8Array(10));
  }
  await using storage = await openKvStorage(kv);
  assert.deepEqual(await raw(kv, [...prefix, "b"]), []);
  assert.deepEqual(await raw(kv, [...prefix, "t"]), []);
  assert.equal(await storage.vacuum(), 0);
});

Deno.test("kv: a writer whose pending blobs were collected writes them again", async () => {
  using kv = await Deno.openKv(":memory:");
  await using storage = await openKvStorage(kv, { prefix: ["p"] });
  await using collector = await openKvStorage(kv, { prefix: ["p"] });
  const big = record("todo", "big", { text: bigText(100 * 1024) });
  // Collect every pending ticket while the write is between its pre-writes
  // and its swap: the swap's check of its ticket fails, the write retries.
  let collected = 0;
  const original = kv.atomic.bind(kv);
  let armed = true;
  kv.atomic = () => {
    const operation = original();
    const commit = operation.commit.bind(operation);
    operation.commit = async () => {
      const tickets = await raw(kv, ["p", "t"]);
      const pending = tickets.some((entry) =>
        JSON.parse(new TextDecoder().decode(entry.value as Uint8Array))
          .state === "pending"
      );
      const chunks = await raw(kv, ["p", "b"]);
      if (armed && pending && chunks.length === 2) {
        armed = false;
        collected = await collector.vacuum({ graceMs: 0 });
      }
      return await commit();
    };
    return operation;
  };
  try {
    assert.equal(
      (await storage.write([{ type: "putRecord", record: big }])).ok,
      true,
    );
  } finally {
    kv.atomic = original;
  }
  assert.equal(collected, 1);
  assert.deepEqual((await storage.getRecords("todo", ["big"]))[0]?.value, big);
  assert.deepEqual(await raw(kv, ["p", "t"]), []);
});

Deno.test("kv: an expect with a versionstamp KV never issued is a conflict", async () => {
  await using storage = await openKvStorage(":memory:");
  assert.equal(
    (await storage.write([{ type: "putMeta", key: "m", value: 1 }])).ok,
    true,
  );
  const [entry] = await storage.getMeta(["m"]);
  const revs = [
    "",
    "nope",
    "00000000000000000000",
    "ffffffffffffffffffff",
    entry!.rev.toUpperCase().replace(/^0/, "A"),
    entry!.rev.toUpperCase(),
    `${entry!.rev}0`,
    entry!.rev.slice(1),
    " ".repeat(20),
  ];
  for (const rev of revs) {
    if (rev === entry!.rev) continue;
    for (
      const mutation of [
        { type: "putMeta", key: "m", value: 2, expect: rev },
        { type: "putMeta", key: "absent", value: 2, expect: rev },
        { type: "deleteOp", opId: "x", expect: rev },
        {
          type: "putRecord",
          record: record("todo", "1", {}),
          expect: rev,
        },
      ] as Mutation[]
    ) {
      assert.deepEqual(
        await storage.write([mutation]),
        { ok: false },
        JSON.stringify(rev),
      );
    }
  }
  assert.equal((await storage.getMeta(["m"]))[0]?.value, 1);
  assert.deepEqual(await storage.getMeta(["absent"]), [undefined]);
});

Deno.test("kv: two handles racing on one file: exactly one wins", async () => {
  await using file = await tempPath();
  await using first = await openKvStorage(file.path);
  await using second = await openKvStorage(file.path);
  for (let round = 0; round < 20; round++) {
    const opValue = op(round, { id: `r${round}` });
    // Both enqueue the same op: one of them, not two, lands.
    const results = await Promise.all(
      [first, second].map((storage, i) =>
        storage.write([
          {
            type: "putRecord",
            record: record("todo", `r${round}`, { by: i }, {
              lastOpId: opValue.opId,
            }),
            expect: null,
          },
          { type: "putOp", op: opValue, expect: null },
        ])
      ),
    );
    assert.equal(results.filter((result) => result.ok).length, 1);
    const [winner] = await first.getRecords("todo", [`r${round}`]);
    assert.equal(
      winner?.value.data["by"],
      results[0]!.ok ? 0 : 1,
    );
    // Both take the op off the queue: one does.
    const [entry] = await second.getOps([opValue.opId]);
    const taken = await Promise.all(
      [first, second].map((storage) =>
        storage.write([{
          type: "putOp",
          op: { ...opValue, attempts: 1 },
          expect: entry!.rev,
        }])
      ),
    );
    assert.equal(taken.filter((result) => result.ok).length, 1);
  }
  const ops = await first.listOps({ states: ["pending"] });
  assert.equal(ops.length, 20);
  assert.ok(ops.every((entry) => entry.value.attempts === 1));
  assert.deepEqual(await second.listOps(), ops);
});

Deno.test("kv: writes without expect racing on one op keep its indexes consistent", async () => {
  await using file = await tempPath();
  await using first = await openKvStorage(file.path);
  await using second = await openKvStorage(file.path);
  const states = ["pending", "quarantined", "parked"] as const;
  await Promise.all([first, second].map(async (storage, worker) => {
    for (let step = 0; step < 30; step++) {
      const result = await storage.write([{
        type: "putOp",
        op: op(1, {
          state: states[(step + worker) % 3]!,
          id: `r${(step * (worker + 1)) % 4}`,
          attempts: step,
        }),
      }]);
      assert.equal(result.ok, true);
    }
  }));
  const [final] = await first.getOps([opId(1)]);
  for (const state of states) {
    const listed = await first.listOps({ states: [state] });
    assert.deepEqual(listed, state === final!.value.state ? [final] : []);
  }
  for (let r = 0; r < 4; r++) {
    const listed = await second.listOps({ id: `r${r}` });
    assert.deepEqual(listed, final!.value.id === `r${r}` ? [final] : []);
  }
});

Deno.test("kv: keys order by UTF-16 code units, with NUL and non-BMP characters", async () => {
  await using storage = await openKvStorage(":memory:");
  const ids = [
    "",
    "\0",
    "\0\0",
    "a",
    "a\0",
    "a\0\0",
    "a\u0001",
    "\u007E",
    "\u007F",
    "\u0080",
    "\u07FF",
    "\u0800",
    "\u7EFF",
    "\u7F00",
    "\uD7FF",
    "\u{10000}",
    "\u{1F600}",
    "\u{10FFFF}",
    "\uD800",
    "\uDFFF",
    "\uE000",
    "\uFF5E",
    "\uFFFF",
    "\uFFFF\0",
  ];
  const shuffled = [...ids].sort(() => Math.random() - 0.5);
  for (const id of shuffled) {
    const result = await storage.write([
      { type: "putRecord", record: record("todo", id, {}) },
      { type: "putOp", op: op(0, { opId: id, id }) },
      { type: "putMeta", key: id, value: id },
    ]);
    assert.equal(result.ok, true);
  }
  const sorted = [...ids].sort();
  assert.deepEqual(
    (await storage.listRecords("todo")).map((entry) => entry.value.id),
    sorted,
  );
  assert.deepEqual(
    (await storage.listOps()).map((entry) => entry.value.opId),
    sorted,
  );
  assert.deepEqual(
    (await storage.listOps({ states: ["pending"] })).map((entry) =>
      entry.value.opId
    ),
    sorted,
  );
  for (const [index, after] of sorted.entries()) {
    assert.deepEqual(
      (await storage.listRecords("todo", { after, limit: 2 })).map((entry) =>
        entry.value.id
      ),
      sorted.slice(index + 1, index + 3),
    );
    assert.deepEqual(
      (await storage.listOps({ after, limit: 2, states: ["pending"] })).map((
        entry,
      ) => entry.value.opId),
      sorted.slice(index + 1, index + 3),
    );
    assert.deepEqual(
      (await storage.listOps({ id: after })).map((entry) => entry.value.opId),
      [after],
    );
  }
  assert.deepEqual(
    (await storage.getMeta(ids)).map((entry) => entry?.value),
    ids,
  );
});

Deno.test("kv: a cursor longer than maxKeyLength pages correctly", async () => {
  await using storage = await openKvStorage(":memory:");
  const max = storage.capabilities.maxKeyLength;
  const ids = ["a", "k".repeat(max), "k".repeat(max - 1) + "l", "z"];
  assert.equal(
    (await storage.write(
      ids.map((id) => ({ type: "putRecord", record: record("todo", id, {}) })),
    )).ok,
    true,
  );
  const after = async (cursor: string): Promise<string[]> =>
    (await storage.listRecords("todo", { after: cursor })).map((entry) =>
      entry.value.id
    );
  assert.deepEqual(await after("k".repeat(max + 5)), [
    "k".repeat(max - 1) + "l",
    "z",
  ]);
  assert.deepEqual(await after("k".repeat(max)), [
    "k".repeat(max - 1) + "l",
    "z",
  ]);
  assert.deepEqual(await after("j".repeat(max + 5)), [
    "k".repeat(max),
    "k".repeat(max - 1) + "l",
    "z",
  ]);
  assert.deepEqual(await storage.getRecords("todo", ["k".repeat(max + 1)]), [
    undefined,
  ]);
  assert.deepEqual(await storage.listRecords("k".repeat(max + 1)), []);
  assert.deepEqual(await storage.listOps({ after: "x".repeat(max + 1) }), []);
});

Deno.test("kv: a passed Kv stays open after close() unless closeKv is set", async () => {
  const kv = await Deno.openKv(":memory:");
  const storage = await openKvStorage(kv);
  await storage.close();
  await storage.close();
  await kv.set(["still", "open"], 1);
  const owning = await openKvStorage(kv, { closeKv: true });
  await owning.close();
  await assert.rejects(kv.atomic().set(["x"], 1).commit());
  await assert.rejects(owning.getMeta([]), ClosedError);
  await assert.rejects(owning.vacuum(), ClosedError);
});

Deno.test("kv: close() waits for calls in flight", async () => {
  const storage = await openKvStorage(":memory:");
  const writes = Array.from(
    { length: 20 },
    (_, i) => storage.write([{ type: "putMeta", key: `m${i}`, value: i }]),
  );
  const closed = storage.close();
  const results = await Promise.all(writes);
  await closed;
  assert.ok(results.every((result) => result.ok));
  await assert.rejects(storage.write([]), {
    name: "ClosedError",
    message: "Cannot write mutations as the storage is closed",
  });
});

Deno.test("kv: malformed mutations reject with TypeError and commit nothing", async () => {
  await using storage = await openKvStorage(":memory:");
  const malformed: unknown[] = [
    null,
    { type: "putNothing" },
    { type: "putMeta", key: 1, value: 1 },
    { type: "putMeta", key: "k", value: undefined },
    { type: "putMeta", key: "k", value: NaN },
    { type: "putMeta", key: "k", value: new Date(0) },
    { type: "putMeta", key: "k", value: [, 1] },
    { type: "putMeta", key: "k", value: 1, expect: 3 },
    { type: "putRecord", record: { ...record("todo", "1", {}), data: [] } },
    { type: "putOp", op: { ...op(1), state: "done" } },
    { type: "deleteOp" },
  ];
  for (const [index, mutation] of malformed.entries()) {
    await assert.rejects(
      storage.write([
        { type: "putMeta", key: "first", value: 1 },
        mutation as Mutation,
      ]),
      TypeError,
      `malformed mutation ${index}`,
    );
  }
  assert.deepEqual(await storage.getMeta(["first", "k"]), [
    undefined,
    undefined,
  ]);
  await assert.rejects(
    storage.write([{ type: "putMeta", key: "k", value: NaN }]),
    {
      message:
        "Cannot write mutation 0 as 'value' is not a JSON value: current value is NaN",
    },
  );
  await assert.rejects(storage.listOps({ limit: -1 }), RangeError);
  await assert.rejects(storage.vacuum({ graceMs: -1 }), RangeError);
});

Deno.test("kv: an aborted write after its blobs were pre-written leaves nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  await using storage = await openKvStorage(kv, { prefix: ["p"] });
  const controller = new AbortController();
  const reason = new Error("stop");
  // Abort once the pre-write committed, before the swap.
  const original = kv.atomic.bind(kv);
  let commits = 0;
  kv.atomic = () => {
    const operation = original();
    const commit = operation.commit.bind(operation);
    operation.commit = async () => {
      const result = await commit();
      if (++commits === 1) controller.abort(reason);
      return result;
    };
    return operation;
  };
  try {
    await assert.rejects(
      storage.write([{
        type: "putRecord",
        record: record("todo", "big", { text: bigText(100 * 1024) }),
      }], { signal: controller.signal }),
      (error: unknown) => error === reason,
    );
  } finally {
    kv.atomic = original;
  }
  assert.deepEqual((await raw(kv, ["p"])).map((entry) => entry.key), [
    ["p", "f"],
  ]);
});

Deno.test("kv: KV failures reject with a StorageError that keeps the cause", async () => {
  using kv = await Deno.openKv(":memory:");
  await using storage = await openKvStorage(kv);
  const failure = new Error("disk on fire");
  const original = kv.getMany.bind(kv);
  kv.getMany = () => Promise.reject(failure);
  try {
    await assert.rejects(storage.getMeta(["x"]), (error: unknown) => {
      assert.ok(error instanceof StorageError);
      assert.equal(error.cause, failure);
      assert.equal(
        error.message,
        "Cannot read meta as Deno KV failed: current value is Error: disk on fire",
      );
      return true;
    });
  } finally {
    kv.getMany = original;
  }
});

Deno.test("kv: the record index hash is 64-bit FNV-1a over UTF-16 code units", async () => {
  // The same ids through a store and through a BigInt reference.
  using kv = await Deno.openKv(":memory:");
  await using storage = await openKvStorage(kv, { prefix: ["p"] });
  const ids = ["", "a", "r1", "\u{1F600}", "\0", "\uFFFF".repeat(50)];
  assert.equal(
    (await storage.write(ids.map((id, i) => ({
      type: "putOp",
      op: op(i, { id }),
    })))).ok,
    true,
  );
  const buckets = (await raw(kv, ["p", "i"])).map((entry) => entry.key[2]);
  const expected = ids.map((id) => {
    let hash = 0xcbf29ce484222325n;
    for (let i = 0; i < id.length; i++) {
      for (const byte of [id.charCodeAt(i) & 0xff, id.charCodeAt(i) >> 8]) {
        hash ^= BigInt(byte);
        hash = (hash * 0x100000001b3n) & 0xffffffffffffffffn;
      }
    }
    return Number(hash >> 11n);
  });
  assert.deepEqual(
    [...buckets].sort((a, b) => Number(a) - Number(b)),
    [...expected].sort((a, b) => a - b),
  );
});

Deno.test("kv: a store of 2,000 records lists in pages of 1,000", async () => {
  await using storage: KvStorage = await openKvStorage(":memory:");
  const { maxMutationsPerWrite } = storage.capabilities;
  for (let start = 0; start < 2000; start += maxMutationsPerWrite) {
    const mutations: Mutation[] = [];
    for (let n = start; n < Math.min(start + maxMutationsPerWrite, 2000); n++) {
      mutations.push({
        type: "putRecord",
        record: record("todo", String(n).padStart(5, "0"), { n }),
        expect: null,
      });
    }
    assert.equal((await storage.write(mutations)).ok, true);
  }
  const first = await storage.listRecords("todo", { limit: 1000 });
  const second = await storage.listRecords("todo", {
    limit: 1000,
    after: first.at(-1)!.value.id,
  });
  assert.equal(first.length, 1000);
  assert.equal(second.length, 1000);
  assert.equal(second.at(-1)?.value.id, "01999");
});

Deno.test("kv: replacing a large value another handle wrote frees its chunks", async () => {
  using kv = await Deno.openKv(":memory:");
  await using first = await openKvStorage(kv, { prefix: ["p"] });
  await using second = await openKvStorage(kv, { prefix: ["p"] });
  // The first handle last saw no large value in the store.
  assert.equal(
    (await first.write([{ type: "putMeta", key: "a", value: 1 }])).ok,
    true,
  );
  const big = {
    type: "putMeta",
    key: "big",
    value: bigText(100 * 1024),
  } as const;
  assert.equal((await second.write([big])).ok, true);
  assert.equal(
    (await second.write([{ ...big, key: "big2" }, {
      type: "putRecord",
      record: record("todo", "big", { text: bigText(100 * 1024) }),
    }])).ok,
    true,
  );
  assert.ok((await raw(kv, ["p", "b"])).length > 0);
  // Blind overwrites: no expect, nothing read first.
  assert.equal(
    (await first.write([
      { type: "putMeta", key: "big", value: "small" },
      { type: "deleteMeta", key: "big2" },
    ])).ok,
    true,
  );
  // With an op read first (which refreshes the count), then the record.
  assert.equal(
    (await first.write([
      { type: "putOp", op: op(1) },
      { type: "putRecord", record: record("todo", "big", { small: true }) },
    ])).ok,
    true,
  );
  assert.deepEqual(await raw(kv, ["p", "b"]), []);
  assert.deepEqual(await raw(kv, ["p", "t"]), []);
  const count = await kv.get<Uint8Array>(["p", "x"]);
  assert.equal(new TextDecoder().decode(count.value!), "0");
  assert.deepEqual(
    (await second.getMeta(["big", "big2"])).map((entry) => entry?.value),
    ["small", undefined],
  );
});

Deno.test("kv: the key hash is SHA-256, as Web Crypto computes it", async () => {
  for (const length of [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, 140_000]) {
    const data = Uint8Array.from({ length }, (_, i) => (i * 31 + 7) & 0xff);
    assert.deepEqual(
      sha256(data),
      new Uint8Array(await crypto.subtle.digest("SHA-256", data)),
      `${length} bytes`,
    );
  }
});

Deno.test("kv: a key part keeps 256 bytes whole, else a prefix that fits, 0xFF and 20 bytes of SHA-256", () => {
  const x = "x".charCodeAt(0) + 1;
  assert.deepEqual(
    keyPart("x".repeat(256), 256),
    new Uint8Array(256).fill(x),
  );
  const hashOf = (text: string): number[] => {
    const units = new Uint8Array(text.length * 2);
    for (let i = 0; i < text.length; i++) {
      units[i * 2] = text.charCodeAt(i) & 0xff;
      units[i * 2 + 1] = text.charCodeAt(i) >> 8;
    }
    return [...sha256(units).subarray(0, 20)].map((byte) => byte | 0x80);
  };
  for (
    const [text, kept] of [
      ["x".repeat(257), 256],
      ["x".repeat(70_000), 256],
      // The last unit would take 3 bytes of the 1 left.
      ["x".repeat(255) + "\uFFFF", 255],
      // A surrogate pair is cut between its halves.
      ["a" + "\u{1F600}".repeat(60), 256],
    ] as const
  ) {
    const part = keyPart(text, 256);
    assert.deepEqual([...part.subarray(0, kept)], [
      ...encodeText(text).subarray(0, kept),
    ]);
    assert.deepEqual([...part.subarray(kept)], [0xff, ...hashOf(text)]);
  }
  assert.equal(keyPartBytes(256), 277);
});

Deno.test("kv: ids beyond the key budget are hashed, and list and page in UTF-16 order", async () => {
  using kv = await Deno.openKv(":memory:");
  await using storage = await openKvStorage(kv, { prefix: ["p"] });
  const emoji = "\u{1F600}";
  const ids = [
    // Around the 256 bytes kept whole: ASCII takes 1 byte, U+FFFF 3.
    "x".repeat(255),
    "x".repeat(256),
    "x".repeat(257),
    "x".repeat(256) + "\0",
    "x".repeat(256) + "\uFFFF",
    "\uFFFF".repeat(85),
    "\uFFFF".repeat(85) + "a",
    "\uFFFF".repeat(86),
    // Cut inside a surrogate pair: 1 + 42 × 6 + 3 bytes fit.
    "a" + emoji.repeat(256),
    "a" + emoji.repeat(255) + "\0",
    "a" + emoji.repeat(42) + "\uD83D",
    // 1 or 2 bytes left after the prefix: narrower units still fit there.
    "x".repeat(254) + "\u0100\u0100",
    "x".repeat(254) + "\u0100" + "a",
    "x".repeat(255) + "\u0100",
    "x".repeat(255) + "\uFFFF",
    "x".repeat(255) + "a" + "b",
    // Ids sharing 255 emoji, differing in their last character.
    ...["", "\0", "/", "%", "a", "\u{10FFFF}", "\uFFFF", "\u{10000}"].map((
      last,
    ) => emoji.repeat(255) + last),
    // Far beyond the contract, and lone surrogates.
    emoji.repeat(35_000),
    "\uDC00".repeat(600),
    "\uD800".repeat(600),
    "z",
  ];
  const shuffled = [...ids].sort(() => Math.random() - 0.5);
  const result = await storage.write(shuffled.map((id, n) => ({
    type: "putRecord",
    record: record("todo", id, { n }),
  })));
  assert.equal(result.ok, true);
  const sorted = [...ids].sort();
  // Whole up to 256 bytes of the key encoding, a prefix and a hash beyond.
  const parts = (await raw(kv, ["p", "r"])).map((entry) =>
    entry.key.at(-1) as Uint8Array
  );
  assert.ok(parts.every((part) => part.length <= 256 + 21));
  assert.equal(parts.filter((part) => part.length > 256).length, 22);
  const list = async (options: { after?: string; limit?: number } = {}) =>
    (await storage.listRecords("todo", options)).map((entry) => entry.value.id);
  assert.deepEqual(await list(), sorted);
  assert.deepEqual(
    (await storage.getRecords("todo", ids)).map((entry) => entry?.value.id),
    ids,
  );
  for (const [index, after] of sorted.entries()) {
    assert.deepEqual(
      await list({ after, limit: 3 }),
      sorted.slice(index + 1, index + 4),
      `after ${index}`,
    );
  }
  // Cursors that are no stored id, inside and between groups.
  for (
    const after of [
      emoji.repeat(255) + "0",
      emoji.repeat(255) + "\uD83D",
      emoji.repeat(300),
      "x".repeat(256) + "\u0001",
      "\uFFFF".repeat(200),
      "a" + emoji.repeat(100),
    ]
  ) {
    assert.deepEqual(
      await list({ after, limit: 5 }),
      sorted.filter((id) => id > after).slice(0, 5),
    );
  }
  // Paging one by one visits every id once.
  const paged = await list({ limit: 1 });
  for (;;) {
    const page = await list({ after: paged.at(-1)!, limit: 1 });
    if (page.length === 0) break;
    paged.push(...page);
  }
  assert.deepEqual(paged, sorted);
  // Kinds beyond 192 bytes are hashed too, and kept apart.
  const kinds = ["\uFFFF".repeat(64), "\uFFFF".repeat(65), "k".repeat(70_000)];
  for (const kind of kinds) {
    const write = await storage.write([{
      type: "putRecord",
      record: record(kind, emoji.repeat(256), { kind }),
    }]);
    assert.equal(write.ok, true);
  }
  for (const kind of kinds) {
    const listed = await storage.listRecords(kind);
    assert.deepEqual(listed.map((entry) => entry.value.data), [{ kind }]);
  }
});

Deno.test("kv: opening a store of layout 1 moves the records whose keys are now hashed", async () => {
  using kv = await Deno.openKv(":memory:");
  const prefix = ["p"];
  const wideKind = "\uFFFF".repeat(70);
  const wideId = "\u{1F600}".repeat(59);
  const kept = [
    record("todo", "a", { n: 1 }),
    record("todo", "\uFFFF".repeat(85), { n: 2 }),
  ];
  const moved = [
    record("todo", wideId, { n: 3 }),
    record("todo", wideId + "\0", { n: 4 }),
    record(wideKind, "a", { n: 5 }),
  ];
  // What version 1 wrote (with up to 59 emoji in an id, at 20 mutations per
  // write): every kind and id whole, and no layout version.
  for (const value of [...kept, ...moved]) {
    await kv.set(
      [...prefix, "r", encodeText(value.kind), encodeText(value.id)],
      new TextEncoder().encode(JSON.stringify({ v: value })),
    );
  }
  await kv.set(
    [...prefix, "m", encodeText("cursor/todo")],
    new TextEncoder().encode(JSON.stringify({ v: "c" })),
  );
  {
    await using storage = await openKvStorage(kv, { prefix });
    const todo = [...kept, ...moved.slice(0, 2)];
    assert.deepEqual(
      (await storage.getRecords("todo", todo.map((value) => value.id))).map((
        entry,
      ) => entry?.value),
      todo,
    );
    assert.deepEqual(
      (await storage.listRecords("todo")).map((entry) => entry.value),
      [...todo].sort((a, b) => a.id < b.id ? -1 : 1),
    );
    assert.deepEqual(
      (await storage.listRecords(wideKind)).map((entry) => entry.value),
      [moved[2]],
    );
    assert.deepEqual((await storage.getMeta(["cursor/todo"]))[0]?.value, "c");
  }
  const layout = await kv.get<Uint8Array>([...prefix, "f"]);
  assert.equal(new TextDecoder().decode(layout.value!), "2");
  const parts = (await raw(kv, [...prefix, "r"])).map((entry) =>
    entry.key.slice(-2) as Uint8Array[]
  );
  assert.equal(parts.length, 5);
  assert.ok(parts.every(([kind]) => kind!.length <= 192 + 21));
  assert.equal(parts.filter(([, id]) => id!.length > 256).length, 2);
  // Once upgraded, a record of layout 2 is never moved again.
  const before = await raw(kv, [...prefix, "r"]);
  await (await openKvStorage(kv, { prefix })).close();
  assert.deepEqual(await raw(kv, [...prefix, "r"]), before);
});

Deno.test("kv: opening a store of a later layout fails and changes nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  await kv.set(["p", "f"], new TextEncoder().encode("3"));
  await assert.rejects(openKvStorage(kv, { prefix: ["p"] }), {
    name: "StorageError",
    message:
      "Cannot open KV storage as a later version of this library wrote it: current value is layout 3",
  });
  assert.equal((await raw(kv, ["p"])).length, 1);
});

Deno.test("kv: a stored record or op that is corrupt, of the wrong shape or under another key rejects with a StorageError naming it", async () => {
  using kv = await Deno.openKv(":memory:");
  await using storage = await openKvStorage(kv, { prefix: ["p"] });
  const long = "\u{1F600}".repeat(256);
  await storage.write([
    { type: "putRecord", record: record("todo", "a", {}) },
    { type: "putRecord", record: record("todo", long, {}) },
    {
      type: "putRecord",
      record: record("todo", "big", { text: bigText(100 * 1024) }),
    },
    { type: "putOp", op: op(1, { id: "a", state: "quarantined" }) },
    { type: "putMeta", key: "cursor/todo", value: "x" },
  ]);
  const encode = (value: unknown) =>
    new TextEncoder().encode(JSON.stringify(value));
  /** Every read that meets the damage rejects with a message naming it. */
  const fails = async (
    reads: (() => Promise<unknown>)[],
    message: RegExp,
  ): Promise<void> => {
    for (const read of reads) {
      await assert.rejects(read(), (error: unknown) => {
        assert.ok(error instanceof StorageError, String(error));
        assert.match(error.message, message);
        return true;
      });
    }
  };
  const headerOf = async (id: string) =>
    (await raw(kv, ["p", "r"])).find((entry) =>
      JSON.stringify(entry.value).length > 0 &&
      new TextDecoder().decode(entry.value as Uint8Array).includes(
        JSON.stringify(id),
      )
    )!.key;
  const a = ["p", "r", ...keyParts("todo", "a")];
  const good = (await kv.get(a)).value;
  const reads = [
    () => storage.getRecords("todo", ["a"]),
    () => storage.listRecords("todo"),
  ];
  await kv.set(a, new TextEncoder().encode('{"v":{"kind"'));
  await fails(
    reads,
    /^Cannot read record "a" of kind "todo" as its stored value is not valid JSON: current value is "\{\\"v\\":\{\\"kind\\""$/,
  );
  await kv.set(a, "not bytes");
  await fails(
    reads,
    /^Cannot read record "a" of kind "todo" as it is not in this storage's format: current value is "not bytes"$/,
  );
  await kv.set(a, encode({ v: { ...record("todo", "a", {}), deleted: 0 } }));
  await fails(
    reads,
    /^Cannot read record "a" of kind "todo" as its stored 'deleted' is not a boolean: current value is 0$/,
  );
  await kv.set(a, encode({ v: record("todo", "b", {}) }));
  await fails(
    reads,
    /^Cannot read record "a" of kind "todo" as its stored 'id' is not the one it is stored under: current value is "b"$/,
  );
  await kv.set(a, encode({ v: record("todo", long, {}) }));
  await fails(reads, /stored 'id' is not the one it is stored under/);
  await kv.set(a, good);
  // A hashed key is named by the prefix it keeps.
  const hashed = await headerOf(long);
  const longGood = (await kv.get(hashed)).value;
  await kv.set(hashed, encode({ v: record("todo", "a", {}) }));
  await fails(
    [
      () => storage.getRecords("todo", [long]),
      () => storage.listRecords("todo"),
    ],
    /^Cannot read record "(\u{1F600}){32}…" of kind "todo" as its stored 'id' is not the one/u,
  );
  await kv.set(hashed, longGood);
  // A large record whose chunks are not JSON, or are missing.
  const [chunk] = await raw(kv, ["p", "b"]);
  const bytes = chunk!.value as Uint8Array;
  await kv.set(chunk!.key, new Uint8Array(bytes.length).fill(0x7d));
  const bigReads = [
    () => storage.getRecords("todo", ["big"]),
    () => storage.listRecords("todo"),
  ];
  await fails(
    bigReads,
    /^Cannot read record "big" of kind "todo" as its stored value is not valid JSON: current value is "}}}/,
  );
  await kv.set(chunk!.key, bytes.subarray(1));
  await fails(
    bigReads,
    /^Cannot read record "big" of kind "todo" as the chunks of its large value are incomplete: current value is blob "/,
  );
  await kv.set(chunk!.key, bytes);
  assert.equal((await storage.listRecords("todo", { limit: 2 })).length, 2);
  // Ops: the header, its by-state copy and its ops-by-record entry.
  const opId = op(1).opId;
  const header = ["p", "o", ...keyParts(opId)];
  const opGood = (await kv.get(header)).value;
  const opReads = [
    () => storage.getOps([opId]),
    () => storage.listOps(),
    () => storage.listOps({ kinds: ["todo"], id: "a" }),
  ];
  await kv.set(header, new TextEncoder().encode("nope"));
  await fails(
    opReads,
    new RegExp(
      `^Cannot read op "${opId}" as its stored value is not valid JSON`,
    ),
  );
  await kv.set(header, encode({ s: 1, v: { ...op(1), state: "gone" } }));
  await fails(
    opReads,
    new RegExp(
      `^Cannot read op "${opId}" as its stored 'state' is not an op state: current value is "gone"$`,
    ),
  );
  await kv.set(header, encode({ s: 1, v: op(2) }));
  await fails(opReads, /stored 'opId' is not the one it is stored under/);
  await kv.set(header, opGood);
  const [byState] = await raw(kv, ["p", "s"]);
  await kv.set(
    byState!.key,
    encode({ s: 1, v: { ...op(1), changedFields: [1] } }),
  );
  await fails(
    [() => storage.listOps({ states: ["quarantined"] })],
    new RegExp(
      `^Cannot read the quarantined entry of op "${opId}" as its stored 'changedFields' is not a list of strings or null`,
    ),
  );
  const [byRecord] = await raw(kv, ["p", "i"]);
  await kv.set(byRecord!.key, encode([opId, "todo"]));
  await fails(
    [() => storage.listOps({ id: "a" })],
    /^Cannot read the ops-by-record entry \d+\/\d+ as it is not in this storage's format: current value is \[.*\]$/,
  );
  // A write that must replace the damaged op fails the same way, and
  // commits nothing.
  await kv.set(header, new TextEncoder().encode("nope"));
  await assert.rejects(
    storage.write([
      { type: "putMeta", key: "m", value: 1 },
      { type: "deleteOp", opId },
    ]),
    StorageError,
  );
  assert.deepEqual(await storage.getMeta(["m"]), [undefined]);
  // Meta values are any JSON: only corrupt text fails.
  await kv.set(["p", "m", ...keyParts("cursor/todo")], encode({ v: [1] }));
  assert.deepEqual((await storage.getMeta(["cursor/todo"]))[0]?.value, [1]);
  await kv.set(["p", "m", ...keyParts("cursor/todo")], encode(1));
  await fails(
    [() => storage.getMeta(["cursor/todo"])],
    /^Cannot read meta entry "cursor\/todo" as it is not in this storage's format: current value is 1$/,
  );
});

Deno.test("kv: a damaged ticket does not keep the store from opening; a damaged count does, naming it", async () => {
  using kv = await Deno.openKv(":memory:");
  (await openKvStorage(kv, { prefix: ["p"] })).close();
  await kv.set(["p", "t", "x"], new TextEncoder().encode('{"state":'));
  await kv.set(
    ["p", "t", "y"],
    new TextEncoder().encode('{"state":"garbage"}'),
  );
  {
    await using storage = await openKvStorage(kv, { prefix: ["p"] });
    assert.equal(await storage.vacuum({ graceMs: 0 }), 0);
  }
  await kv.set(["p", "x"], new TextEncoder().encode('"many"'));
  await assert.rejects(openKvStorage(kv, { prefix: ["p"] }), {
    name: "StorageError",
    message:
      `Cannot read the count of large values as it is not in this storage's format: current value is "many"`,
  });
});

Deno.test("kv: a value nested deeper than 256 levels is refused with a StorageError", async () => {
  await using storage = await openKvStorage(":memory:");
  let deep: JsonValue = 1;
  for (let level = 0; level < 5_000; level++) deep = [deep];
  await assert.rejects(
    storage.write([
      { type: "putMeta", key: "before", value: 1 },
      { type: "putRecord", record: record("todo", "a", { deep }) },
    ]),
    {
      name: "StorageError",
      message:
        "Cannot write mutation 1 as 'record' nests more than 256 levels deep: current value is at least 257 levels",
    },
  );
  assert.deepEqual(await storage.getMeta(["before"]), [undefined]);
});
