/**
 * Clause 1 at every fault point: each local write (put, putMany, update,
 * delete) runs once without faults to count the calls it makes into the
 * store, then once per call k with the k-th call failing. After every
 * failure, and again after reopening the file, each record the write
 * touched is exactly as it was before the write (record and ops) or
 * exactly as the fault-free run left it: never a record without its op, an
 * op without its record, or half of a fold. A write that resolved must
 * have landed whole.
 *
 * The fault points are the adapters' own: every SQLite statement (the
 * driver wrapped structurally), every Deno KV `commit()` (blob chunks and
 * their tickets included), and every call into the in-memory storage.
 *
 * @module
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { SyncEngine, type Table } from "../mod.ts";
import type { JsonObject } from "../src/json.ts";
import type { Storage, StoredRecord } from "../src/storage.ts";
import { openKvStorage } from "../storage/kv.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { createSqliteStorage, openSqliteStorage } from "../storage/sqlite.ts";
import { createRestTransport } from "../transport/rest.ts";
import {
  type FaultMode,
  FaultPoint,
  faultyDriver,
  faultyKv,
  faultyStorage,
} from "./_faults.ts";

const KIND = "notes";
const T0 = "2025-03-01T10:00:00.000Z";
const NOW = Date.parse("2025-03-01T11:00:00.000Z");
/** Over KV's 64 KiB value limit: stored as blob chunks there. */
const LARGE = "x".repeat(150_000);

interface Opened {
  readonly storage: Storage;
  /** Opens the same file again without faults, when there is a file. */
  readonly reopen?: () => Promise<Storage>;
}

interface Target {
  readonly name: string;
  readonly modes: readonly FaultMode[];
  open(fault: FaultPoint, path: string): Promise<Opened>;
}

const TARGETS: readonly Target[] = [
  {
    name: "sqlite, every statement",
    // A statement that ran inside the transaction is rolled back with it:
    // only a failure before the driver runs it is a distinct point.
    modes: ["before"],
    open(fault, path) {
      const db = new DatabaseSync(`${path}.sqlite`);
      const storage = createSqliteStorage(faultyDriver(db, fault), {
        closeDatabase: true,
      });
      return Promise.resolve({
        storage,
        reopen: () => openSqliteStorage(`${path}.sqlite`),
      });
    },
  },
  {
    name: "kv, every commit",
    modes: ["before", "after"],
    async open(fault, path) {
      const kv = await Deno.openKv(`${path}.kv`);
      const storage = await openKvStorage(faultyKv(kv, fault), {
        closeKv: true,
      });
      return { storage, reopen: () => openKvStorage(`${path}.kv`) };
    },
  },
  {
    name: "memory, every storage call",
    modes: ["before", "after"],
    open(fault) {
      // A small write limit: putMany spans several writes here, and a
      // write boundary could fall between a record and its op.
      const memory = createMemoryStorage({ maxMutationsPerWrite: 3 });
      return Promise.resolve({ storage: faultyStorage(memory, fault) });
    },
  },
];

/** A record as the server last sent it, with no local change. */
function synced(id: string, fields: JsonObject): StoredRecord {
  const data = { id, ...fields, updated_at: T0 };
  return {
    kind: KIND,
    id,
    data,
    deleted: false,
    base: { data, updatedAt: T0, deleted: false },
    lastOpId: null,
    localUpdatedAt: null,
  };
}

async function seedSynced(
  storage: Storage,
  records: readonly StoredRecord[],
): Promise<void> {
  const result = await storage.write(
    records.map((record) => ({ type: "putRecord", record })),
  );
  assert.ok(result.ok);
}

interface Scenario {
  readonly name: string;
  /** The records the write touches. */
  readonly ids: readonly string[];
  /** Prepares the store (without faults). */
  seed(storage: Storage, table: Table): Promise<void>;
  /** The local write under test. */
  act(table: Table): Promise<unknown>;
}

const SCENARIOS: readonly Scenario[] = [
  {
    name: "put() of a new record",
    ids: ["r"],
    seed: () => Promise.resolve(),
    act: (table) => table.put({ id: "r", title: "new" }),
  },
  {
    name: "put() replacing a synced record",
    ids: ["r"],
    seed: (storage) => seedSynced(storage, [synced("r", { title: "old" })]),
    act: (table) => table.put({ id: "r", title: "changed" }),
  },
  {
    name: "put() folding into a pending op",
    ids: ["r"],
    async seed(storage, table) {
      await seedSynced(storage, [synced("r", { title: "old", n: 0 })]);
      await table.update("r", { title: "first" });
    },
    act: (table) => table.put({ id: "r", title: "first", n: 1 }),
  },
  {
    name: "put() of a large record over a large one",
    ids: ["r"],
    seed: (storage) => seedSynced(storage, [synced("r", { body: LARGE })]),
    act: (table) => table.put({ id: "r", body: `${LARGE}y` }),
  },
  {
    name: "putMany() of a replacement and two new records",
    ids: ["a", "b", "c"],
    seed: (storage) => seedSynced(storage, [synced("a", { title: "old" })]),
    act: (table) =>
      table.putMany([
        { id: "a", title: "A" },
        { id: "b", title: "B" },
        { id: "c", title: "C" },
      ]),
  },
  {
    name: "update() of a synced record",
    ids: ["r"],
    seed: (storage) => seedSynced(storage, [synced("r", { title: "old" })]),
    act: (table) => table.update("r", { title: "patched" }),
  },
  {
    name: "delete() of a synced record",
    ids: ["r"],
    seed: (storage) => seedSynced(storage, [synced("r", { title: "old" })]),
    act: (table) => table.delete("r"),
  },
  {
    name: "delete() folding into a pending update",
    ids: ["r"],
    async seed(storage, table) {
      await seedSynced(storage, [synced("r", { title: "old" })]);
      await table.update("r", { title: "first" });
    },
    act: (table) => table.delete("r"),
  },
  {
    name: "delete() of a record the server never saw",
    ids: ["r"],
    async seed(_storage, table) {
      await table.put({ id: "r", title: "draft" });
    },
    act: (table) => table.delete("r"),
  },
];

/**
 * Each record with its ops, op ids replaced by their rank: two runs make
 * different ULIDs for the same ops.
 */
async function snapshot(
  storage: Storage,
  ids: readonly string[],
): Promise<Map<string, unknown>> {
  const records = await storage.getRecords(KIND, ids);
  const out = new Map<string, unknown>();
  for (const [i, id] of ids.entries()) {
    const ops = await storage.listOps({ kinds: [KIND], id });
    const rank = new Map(ops.map((op, n) => [op.value.opId, `op${n}`]));
    const record = records[i]?.value;
    out.set(id, {
      record: record === undefined ? null : {
        ...record,
        lastOpId: record.lastOpId === null
          ? null
          : rank.get(record.lastOpId) ?? `missing ${record.lastOpId}`,
      },
      ops: ops.map((op) => ({ ...op.value, opId: rank.get(op.value.opId) })),
    });
  }
  return out;
}

interface Run {
  readonly before: Map<string, unknown>;
  readonly after: Map<string, unknown>;
  /** The state after reopening the file, when there is one. */
  readonly reopened: Map<string, unknown> | null;
  readonly error: unknown;
  readonly fired: boolean;
  /** The calls the write made through the fault point. */
  readonly calls: number;
}

async function runOnce(
  target: Target,
  scenario: Scenario,
  path: string,
  fault?: { readonly k: number; readonly mode: FaultMode },
): Promise<Run> {
  const point = new FaultPoint();
  const { storage, reopen } = await target.open(point, path);
  try {
    await using transport = createRestTransport({
      baseUrl: "http://127.0.0.1:9",
    });
    await using engine = new SyncEngine({
      storage,
      transport,
      clock: { now: () => NOW },
    });
    const table = engine.table(KIND);
    await scenario.seed(storage, table);
    const before = await snapshot(storage, scenario.ids);
    const start = point.calls;
    if (fault !== undefined) point.arm(fault.k, fault.mode);
    let error: unknown;
    try {
      await scenario.act(table);
    } catch (thrown) {
      error = thrown ?? new Error("rejected with nothing");
    }
    point.disarm();
    const calls = point.calls - start;
    const after = await snapshot(storage, scenario.ids);
    await storage.close();
    let reopened: Map<string, unknown> | null = null;
    if (reopen !== undefined) {
      await using again = await reopen();
      reopened = await snapshot(again, scenario.ids);
    }
    return { before, after, reopened, error, fired: point.fired, calls };
  } finally {
    await storage.close();
  }
}

interface Snapshot {
  readonly record: { readonly lastOpId: string | null } | null;
  readonly ops: readonly { readonly opId: string | undefined }[];
}

/** A record and its ops agree: its newest op is the one it points to. */
function assertConsistent(state: Map<string, unknown>, where: string): void {
  for (const [id, value] of state) {
    const { record, ops } = value as Snapshot;
    const newest = ops.at(-1)?.opId ?? null;
    assert.equal(
      record?.lastOpId ?? null,
      newest,
      `${where}: "${id}" points to its newest op`,
    );
  }
}

function assertWholeOrNothing(
  reference: Run,
  state: Map<string, unknown>,
  landed: boolean,
  where: string,
): void {
  assertConsistent(state, where);
  for (const [id, now] of state) {
    const before = reference.before.get(id);
    const after = reference.after.get(id);
    if (landed) {
      assert.deepEqual(now, after, `${where}: "${id}" as a resolved write`);
      continue;
    }
    try {
      assert.deepEqual(now, before);
    } catch {
      assert.deepEqual(
        now,
        after,
        `${where}: "${id}" is neither as before the write nor as after it`,
      );
    }
  }
}

for (const target of TARGETS) {
  for (const scenario of SCENARIOS) {
    Deno.test(`atomicity (${target.name}): clause 1, ${scenario.name} lands whole or not at all`, async () => {
      const dir = await Deno.makeTempDir();
      try {
        let runs = 0;
        const reference = await runOnce(target, scenario, `${dir}/${runs++}`);
        assert.equal(reference.error, undefined, "the fault-free run works");
        assert.ok(reference.calls > 0);
        assert.notDeepEqual(reference.after, reference.before);
        assertConsistent(reference.before, "before the write");
        assertConsistent(reference.after, "after the write");
        if (reference.reopened !== null) {
          assertWholeOrNothing(reference, reference.reopened, true, "reopened");
        }
        for (const mode of target.modes) {
          for (let k = 1; k <= reference.calls; k++) {
            const where = `fault ${mode} call ${k} of ${reference.calls}`;
            const run = await runOnce(target, scenario, `${dir}/${runs++}`, {
              k,
              mode,
            });
            assert.ok(run.fired, `${where} went off`);
            const landed = run.error === undefined;
            assertWholeOrNothing(reference, run.after, landed, where);
            if (run.reopened !== null) {
              assertWholeOrNothing(
                reference,
                run.reopened,
                landed,
                `${where}, reopened`,
              );
            }
          }
        }
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    });
  }
}
