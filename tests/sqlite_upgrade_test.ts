import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import type { StoredOp, StoredRecord } from "../src/storage.ts";
import { openSqliteStorage } from "../storage/sqlite.ts";
import {
  encodeKey,
  migrateSqliteSchema,
  SQLITE_MIGRATIONS,
  SQLITE_SCHEMA_VERSION,
} from "../storage/_sqlite_schema.ts";
import { pendingOp } from "./_fixtures.ts";

async function withTempDir(
  fn: (dir: string) => void | Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sqlite-upgrade-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function record(id: string, lastOpId: string): StoredRecord {
  return {
    kind: "todo",
    id,
    data: { id, title: `Task ${id}` },
    deleted: false,
    base: null,
    lastOpId,
    localUpdatedAt: 1,
  };
}

/** The SQL of an index, as the file holds it. */
function indexSql(db: DatabaseSync, name: string): string {
  const row = db.prepare(
    "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?",
  ).get(name) as { sql: string } | undefined;
  return row?.sql ?? "";
}

const held = (fields: Partial<StoredOp>): Partial<StoredOp> => ({
  error: {
    category: "rejected",
    message: "Title is required",
    status: 422,
    code: "invalid",
    body: null,
    at: 5,
  },
  ...fields,
});

Deno.test("sqlite: a v3 file with pending, parked and quarantined ops upgrades to the partial ops_by_state and drains in order", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/v3.sqlite`;
    const v3 = new DatabaseSync(path);
    migrateSqliteSchema(v3, SQLITE_MIGRATIONS.slice(0, 3));
    assert.match(indexSql(v3, "ops_by_state"), /ON ops \(state, op_id\)$/);
    // Rows as version 3 wrote them: 40 records with a pending op each,
    // record 07 with a second pending op queued behind its first, and held
    // ops in between, so that a listing of pending ops must skip them.
    const insertRecord = v3.prepare(
      "INSERT INTO records (kind, id, deleted, value, rev, base_is_data) VALUES (?, ?, 0, ?, ?, 0)",
    );
    const insertOp = v3.prepare(
      "INSERT INTO ops (op_id, state, kind, id, value, rev) VALUES (?, ?, ?, ?, ?, ?)",
    );
    const ops: StoredOp[] = [];
    let rev = 0;
    for (let index = 0; index < 40; index++) {
      const id = String(index).padStart(2, "0");
      const opId = `01A${id}`;
      const state = index % 10 === 3
        ? "quarantined"
        : index % 10 === 6
        ? "parked"
        : "pending";
      ops.push(
        pendingOp(opId, {
          id,
          state,
          ...(state === "pending" ? {} : held({})),
        }),
      );
      insertRecord.run(
        encodeKey("todo"),
        encodeKey(id),
        JSON.stringify(record(id, index === 7 ? "01B07" : opId)),
        ++rev,
      );
    }
    ops.push(pendingOp("01B07", { id: "07", payload: { title: "later" } }));
    for (const op of ops) {
      insertOp.run(
        encodeKey(op.opId),
        op.state,
        encodeKey(op.kind),
        encodeKey(op.id),
        JSON.stringify(op),
        ++rev,
      );
    }
    v3.prepare("UPDATE sync_state SET revision = ?").run(rev);
    v3.close();

    const pendingIds = ops.filter((op) => op.state === "pending").map((op) =>
      op.opId
    );
    const heldIds = (state: string) =>
      ops.filter((op) => op.state === state).map((op) => op.opId);
    {
      await using storage = await openSqliteStorage(path);
      // Reads of every kind find the old rows.
      assert.deepEqual(
        (await storage.listOps({ states: ["quarantined"] })).map((entry) =>
          entry.value.opId
        ),
        heldIds("quarantined"),
      );
      assert.deepEqual(
        (await storage.listOps({ states: ["parked"], after: "01A10" })).map((
          entry,
        ) => entry.value.opId),
        heldIds("parked").filter((opId) => opId > "01A10"),
      );
      assert.deepEqual(
        (await storage.listOps({ kinds: ["todo"], id: "07" })).map((entry) =>
          entry.value.opId
        ),
        ["01A07", "01B07"],
      );
      assert.deepEqual(
        (await storage.getRecords("todo", ["07"]))[0]?.value,
        record("07", "01B07"),
      );
      // A drain: pages of pending ops in outbox order, each acked by
      // deleting it at its revision.
      const drained: string[] = [];
      let after: string | undefined;
      for (;;) {
        const page = await storage.listOps({
          states: ["pending"],
          ...(after === undefined ? {} : { after }),
          limit: 7,
        });
        if (page.length === 0) break;
        const result = await storage.write(
          page.map((entry) => ({
            type: "deleteOp",
            opId: entry.value.opId,
            expect: entry.rev,
          })),
        );
        assert.equal(result.ok, true);
        drained.push(...page.map((entry) => entry.value.opId));
        after = page[page.length - 1]!.value.opId;
      }
      assert.deepEqual(drained, pendingIds);
      assert.deepEqual(await storage.listOps({ states: ["pending"] }), []);
      // The held ops stay, and a new op is pending after them.
      const put = await storage.write([{
        type: "putOp",
        op: pendingOp("01C00", { id: "00" }),
        expect: null,
      }]);
      assert.deepEqual(put, { ok: true, revs: [String(rev + 1)] });
      assert.deepEqual(
        (await storage.listOps({})).map((entry) => entry.value.opId),
        [...heldIds("quarantined"), ...heldIds("parked")].sort().concat(
          "01C00",
        ),
      );
    }

    const db = new DatabaseSync(path);
    const version = db.prepare("SELECT schema_version FROM sync_state").get() as
      | { schema_version: number }
      | undefined;
    assert.equal(version?.schema_version, SQLITE_SCHEMA_VERSION);
    assert.match(indexSql(db, "ops_by_state"), /WHERE state <> 'pending'$/);
    // The index holds exactly the held ops.
    const indexed = db.prepare(
      "SELECT count(*) AS n FROM ops INDEXED BY ops_by_state WHERE state <> 'pending'",
    ).get() as { n: number };
    assert.equal(indexed.n, heldIds("quarantined").length + 4);
    assert.deepEqual(
      db.prepare("SELECT op_id FROM conflict_inbox").all().map((row) =>
        (row as { op_id: string }).op_id
      ),
      heldIds("parked"),
    );
    db.close();
  });
});

Deno.test("sqlite: an op moved between pending and held states is listed under its new state only", async () => {
  await using storage = await openSqliteStorage(":memory:");
  const first = pendingOp("01A", { id: "a" });
  const second = pendingOp("01B", { id: "b" });
  const put = await storage.write([
    { type: "putOp", op: first, expect: null },
    { type: "putOp", op: second, expect: null },
  ]);
  assert.equal(put.ok, true);
  const states = async () => ({
    pending: (await storage.listOps({ states: ["pending"] })).map((entry) =>
      entry.value.opId
    ),
    parked: (await storage.listOps({ states: ["parked"] })).map((entry) =>
      entry.value.opId
    ),
    held: (await storage.listOps({ states: ["parked", "quarantined"] })).map((
      entry,
    ) => entry.value.opId),
  });
  const park = await storage.write([{
    type: "putOp",
    op: { ...first, state: "parked" },
    expect: put.ok ? put.revs[0]! : null,
  }]);
  assert.equal(park.ok, true);
  assert.deepEqual(await states(), {
    pending: ["01B"],
    parked: ["01A"],
    held: ["01A"],
  });
  const back = await storage.write([{
    type: "putOp",
    op: { ...first, state: "pending" },
  }]);
  assert.equal(back.ok, true);
  assert.deepEqual(await states(), {
    pending: ["01A", "01B"],
    parked: [],
    held: [],
  });
});
