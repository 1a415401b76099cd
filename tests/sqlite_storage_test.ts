import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { ClosedError, StorageError } from "../src/errors.ts";
import type { JsonValue } from "../src/json.ts";
import type { SqliteDatabaseLike } from "../src/sqlite_like.ts";
import type {
  Mutation,
  Storage,
  StoredOp,
  StoredRecord,
} from "../src/storage.ts";
import { testStorage } from "../storage/conformance.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { createSqliteStorage, openSqliteStorage } from "../storage/sqlite.ts";
import {
  encodeKey,
  migrateSqliteSchema,
  SQLITE_MIGRATIONS,
  SQLITE_SCHEMA_VERSION,
} from "../storage/_sqlite_schema.ts";
import {
  betterSqlite3Shaped,
  bunShaped,
  wrapDriver,
} from "./_sqlite_drivers.ts";
import { FaultPoint, faultyDriver } from "./_faults.ts";
import { pendingOp } from "./_fixtures.ts";

/** A fresh temporary file for one suite case, and its cleanup. */
async function tempFile(): Promise<
  { path: string; teardown: () => Promise<void> }
> {
  const dir = await Deno.makeTempDir({ prefix: "sqlite-storage-" });
  return {
    path: `${dir}/store.sqlite`,
    teardown: () => Deno.remove(dir, { recursive: true }),
  };
}

await testStorage("sqlite (file)", async () => {
  const { path, teardown } = await tempFile();
  return {
    storage: await openSqliteStorage(path),
    reopen: () => openSqliteStorage(path),
    teardown,
  };
});

await testStorage("sqlite (:memory:)", async () => ({
  storage: await openSqliteStorage(":memory:"),
}));

/** A suite over a file, through a driver wrapped into another shape. */
async function wrappedSuite(
  name: string,
  wrap: (db: SqliteDatabaseLike) => SqliteDatabaseLike,
): Promise<void> {
  await testStorage(name, async () => {
    const { path, teardown } = await tempFile();
    const open = (): Storage =>
      createSqliteStorage(wrap(new DatabaseSync(path)), {
        closeDatabase: true,
      });
    return {
      storage: open(),
      reopen: () => Promise.resolve(open()),
      teardown,
    };
  });
}

// bun:sqlite's get() returns null for no row.
await wrappedSuite("sqlite (null-get driver)", bunShaped);
// better-sqlite3 returns BLOBs as Buffers.
await wrappedSuite("sqlite (Buffer driver)", betterSqlite3Shaped);
// An SQLite older than 3.33 compiles no UPDATE … FROM (nor, before 3.15,
// row values): updates and deletes then run row by row.
const MULTI_ROW_CHANGE = /UPDATE .* FROM \(VALUES|\) IN \(VALUES/s;
await wrappedSuite(
  "sqlite (no multi-row UPDATE or DELETE)",
  (db) =>
    wrapDriver(db, {
      onPrepare(sql) {
        if (MULTI_ROW_CHANGE.test(sql)) {
          throw new Error('near "FROM": syntax error');
        }
      },
    }),
);

Deno.test("sqlite: a push's claim and settle run as multi-row UPDATEs and DELETEs, row by row where SQLite cannot", async () => {
  for (const capable of [true, false]) {
    const { path, teardown } = await tempFile();
    const prepared: string[] = [];
    const storage = createSqliteStorage(
      wrapDriver(new DatabaseSync(path), {
        onPrepare(sql) {
          if (!capable && MULTI_ROW_CHANGE.test(sql)) {
            throw new Error('near "FROM": syntax error');
          }
          prepared.push(sql);
        },
      }),
      { closeDatabase: true },
    );
    try {
      const ops = Array.from(
        { length: 40 },
        (_, i) =>
          pendingOp(`01JB${String(i).padStart(22, "0")}`, { id: `r${i}` }),
      );
      const records = ops.map((op) => ({
        kind: op.kind,
        id: op.id,
        data: { title: "x" },
        deleted: false,
        base: null,
        lastOpId: op.opId,
        localUpdatedAt: 0,
      }));
      const put = await storage.write([
        ...ops.map((op) => ({ type: "putOp" as const, op, expect: null })),
        ...records.map((record) => ({
          type: "putRecord" as const,
          kind: record.kind,
          id: record.id,
          record,
          expect: null,
        })),
      ]);
      assert.ok(put.ok);
      const batched = (from: number) =>
        prepared.slice(from).filter((sql) => MULTI_ROW_CHANGE.test(sql));
      let from = prepared.length;
      const claim = await storage.write(ops.map((op, i) => ({
        type: "putOp",
        op: { ...op, attempts: 1 },
        expect: put.revs[i]!,
      })));
      assert.ok(claim.ok);
      // 40 rows: one statement of 32 rows and one of 8.
      assert.equal(batched(from).length, capable ? 2 : 0);
      from = prepared.length;
      // A settle alternates an op's delete and its record's put: each kind
      // of mutation still goes in batches of 32 and 8.
      const settle = await storage.write(ops.flatMap((op, i) => [
        { type: "deleteOp" as const, opId: op.opId, expect: claim.revs[i]! },
        {
          type: "putRecord" as const,
          kind: op.kind,
          id: op.id,
          record: { ...records[i]!, data: { title: "y" } },
          expect: put.revs[ops.length + i]!,
        },
      ]));
      assert.ok(settle.ok);
      assert.equal(batched(from).length, capable ? 4 : 0);
      assert.deepEqual(await storage.listOps(), []);
      const [first] = await storage.getRecords("todo", ["r0"]);
      assert.deepEqual(first?.value.data, { title: "y" });
    } finally {
      await storage.close();
      await teardown();
    }
  }
});

// ---------------------------------------------------------------------------
// Helpers

async function withTempDir(
  fn: (dir: string) => void | Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sqlite-storage-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function pragma(db: DatabaseSync, name: string): unknown {
  const row = db.prepare(`PRAGMA ${name}`).get() as Record<string, unknown>;
  return Object.values(row)[0];
}

/** Everything a migration could change, without the data. */
function schemaOf(db: DatabaseSync): unknown {
  return {
    objects: db.prepare(
      "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name",
    ).all().map((row) => ({ ...row })),
    version: db.prepare(
        "SELECT name FROM sqlite_master WHERE name = 'sync_state'",
      ).get() === undefined
      ? 0
      : Number(
        (db.prepare("SELECT schema_version FROM sync_state").get() as {
          schema_version: number;
        }).schema_version,
      ),
  };
}

function record(
  kind: string,
  id: string,
  fields: Partial<StoredRecord> = {},
): StoredRecord {
  return {
    kind,
    id,
    data: { id },
    deleted: false,
    base: null,
    lastOpId: null,
    localUpdatedAt: null,
    ...fields,
  };
}

function op(opId: string, fields: Partial<StoredOp> = {}): StoredOp {
  return pendingOp(opId, fields);
}

/** Builds a file at schema version 1, as the first release wrote it. */
function buildV1(path: string): DatabaseSync {
  const db = new DatabaseSync(path);
  migrateSqliteSchema(db, SQLITE_MIGRATIONS.slice(0, 1));
  return db;
}

// ---------------------------------------------------------------------------
// Adapter-specific cases

Deno.test("sqlite: capabilities follow the database: a file persists and is shared, :memory: is neither", async () => {
  await withTempDir(async (dir) => {
    await using file = await openSqliteStorage(`${dir}/a.sqlite`);
    assert.deepEqual(file.capabilities, {
      persistent: true,
      multiProcess: true,
      maxMutationsPerWrite: Infinity,
      maxWriteBytes: Infinity,
      maxKeyLength: Infinity,
    });
    assert.ok(Object.isFrozen(file.capabilities));
    await using memory = await openSqliteStorage(":memory:");
    assert.equal(memory.capabilities.persistent, false);
    assert.equal(memory.capabilities.multiProcess, false);
    // "" is SQLite's private temporary database: gone on close.
    await using temporary = await openSqliteStorage("");
    assert.equal(temporary.capabilities.persistent, false);
  });
});

Deno.test("sqlite: a file is in WAL mode and durability maps to PRAGMA synchronous", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/a.sqlite`;
    const db = new DatabaseSync(path);
    const normal = createSqliteStorage(db);
    assert.equal(pragma(db, "journal_mode"), "wal");
    assert.equal(pragma(db, "synchronous"), 1); // NORMAL
    assert.equal(pragma(db, "busy_timeout"), 5000);
    await normal.close();

    const full = createSqliteStorage(db, {
      durability: "full",
      busyTimeoutMs: 250,
    });
    assert.equal(pragma(db, "synchronous"), 2); // FULL
    assert.equal(pragma(db, "busy_timeout"), 250);
    await full.close();
    db.close();

    // WAL stays with the file: another connection sees it.
    const other = new DatabaseSync(path);
    assert.equal(pragma(other, "journal_mode"), "wal");
    other.close();

    const memory = new DatabaseSync(":memory:");
    createSqliteStorage(memory, { durability: "full" });
    assert.equal(pragma(memory, "journal_mode"), "memory");
    assert.equal(pragma(memory, "synchronous"), 2);
    memory.close();
  });
});

Deno.test("sqlite: options are validated with TypeError and RangeError", async () => {
  const db = new DatabaseSync(":memory:");
  try {
    const cases: [unknown, ErrorConstructor, string][] = [
      [
        { durability: "extra" },
        RangeError,
        `Cannot create SQLite storage as 'durability' is not "normal" or "full": current value is "extra"`,
      ],
      [
        { durability: 1 },
        TypeError,
        `Cannot create SQLite storage as 'durability' is not "normal" or "full": current value is 1`,
      ],
      [
        { busyTimeoutMs: -1 },
        RangeError,
        "Cannot create SQLite storage as 'busyTimeoutMs' is not an integer from 0 to 2147483647: current value is -1",
      ],
      [{ busyTimeoutMs: 1.5 }, RangeError, "current value is 1.5"],
      [{ busyTimeoutMs: 2 ** 31 }, RangeError, "current value is 2147483648"],
      [
        { busyTimeoutMs: "5" },
        TypeError,
        `Cannot create SQLite storage as 'busyTimeoutMs' is not a number: current value is "5"`,
      ],
      [
        { closeDatabase: "yes" },
        TypeError,
        `Cannot create SQLite storage as 'closeDatabase' is not a boolean: current value is "yes"`,
      ],
    ];
    for (const [options, type, message] of cases) {
      assert.throws(
        () => createSqliteStorage(db, options as never),
        (error: unknown) => {
          assert.ok(error instanceof type, String(error));
          assert.ok(error.message.endsWith(message), error.message);
          return true;
        },
      );
    }
    // Nothing was created by a refused call.
    assert.deepEqual(schemaOf(db), { objects: [], version: 0 });
    // openSqliteStorage() returns a promise, so it rejects rather than throws.
    await assert.rejects(
      openSqliteStorage(":memory:", { busyTimeoutMs: NaN }),
      {
        name: "RangeError",
        message:
          "Cannot open SQLite storage as 'busyTimeoutMs' is not an integer from 0 to 2147483647: current value is NaN",
      },
    );
    await assert.rejects(openSqliteStorage(1 as unknown as string), {
      name: "TypeError",
      message:
        "Cannot open SQLite storage as 'path' is not a string: current value is 1",
    });
  } finally {
    db.close();
  }
});

Deno.test("sqlite: opening a file that is not a database rejects with a StorageError", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/notes.txt`;
    await Deno.writeTextFile(
      path,
      "not a database, just some text\n".repeat(200),
    );
    const before = await Deno.readFile(path);
    await assert.rejects(openSqliteStorage(path), (error: unknown) => {
      assert.ok(error instanceof StorageError);
      assert.match(
        error.message,
        /^Cannot create SQLite storage as SQLite failed: /,
      );
      assert.ok(error.cause instanceof Error);
      return true;
    });
    assert.deepEqual(await Deno.readFile(path), before);
  });
});

Deno.test("sqlite: opening a newer schema fails and changes nothing", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/newer.sqlite`;
    // A rollback-journal file, so that a switch to WAL would show in its
    // bytes.
    const writer = new DatabaseSync(path);
    migrateSqliteSchema(writer);
    const newer = SQLITE_SCHEMA_VERSION + 1;
    writer.exec(`UPDATE sync_state SET schema_version = ${newer}`);
    writer.exec("CREATE TABLE from_the_future (x)");
    assert.equal(pragma(writer, "journal_mode"), "delete");
    writer.close();
    const bytes = await Deno.readFile(path);
    const message =
      `Cannot open SQLite storage as its schema is newer than version ${SQLITE_SCHEMA_VERSION}: current value is ${newer}`;

    await assert.rejects(openSqliteStorage(path), {
      name: "StorageError",
      message,
    });
    assert.deepEqual(await Deno.readFile(path), bytes);

    // The same through a connection the caller owns, which stays open.
    const db = new DatabaseSync(path);
    const schema = schemaOf(db);
    assert.throws(() => createSqliteStorage(db, { closeDatabase: true }), {
      name: "StorageError",
      message,
    });
    assert.deepEqual(schemaOf(db), schema);
    assert.equal(pragma(db, "journal_mode"), "delete");
    db.close();
    assert.deepEqual(await Deno.readFile(path), bytes);
    assert.deepEqual(
      [...Deno.readDirSync(dir)].map((entry) => entry.name),
      ["newer.sqlite"],
    );
  });
});

Deno.test("sqlite: opening a v1 file upgrades it to the current schema and keeps its data", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/v1.sqlite`;
    const v1 = buildV1(path);
    assert.equal(SQLITE_SCHEMA_VERSION, 4);
    assert.equal((schemaOf(v1) as { version: number }).version, 1);
    // Rows as the first release wrote them.
    const stored = record("todo", "a\0b", { data: { title: "\u{1F600}" } });
    const pending = op("01A", { id: "a\0b" });
    const quarantined = op("01B", {
      state: "quarantined",
      error: {
        category: "rejected",
        message: "Title is required",
        status: 422,
        code: "invalid",
        body: null,
        at: 5,
      },
    });
    v1.prepare(
      "INSERT INTO records (kind, id, deleted, value, rev) VALUES (?, ?, 0, ?, 5)",
    ).run(encodeKey("todo"), encodeKey("a\0b"), JSON.stringify(stored));
    const insertOp = v1.prepare(
      "INSERT INTO ops (op_id, state, kind, id, value, rev) VALUES (?, ?, ?, ?, ?, ?)",
    );
    for (const [value, rev] of [[pending, 6], [quarantined, 7]] as const) {
      insertOp.run(
        encodeKey(value.opId),
        value.state,
        encodeKey(value.kind),
        encodeKey(value.id),
        JSON.stringify(value),
        rev,
      );
    }
    v1.prepare("INSERT INTO meta (key, value, rev) VALUES (?, ?, 7)").run(
      encodeKey("cursor"),
      JSON.stringify({ page: 3 }),
    );
    v1.exec("UPDATE sync_state SET revision = 7");
    v1.close();

    {
      await using storage = await openSqliteStorage(path);
      assert.deepEqual(await storage.getRecords("todo", ["a\0b"]), [
        { value: stored, rev: "5" },
      ]);
      assert.deepEqual(
        await storage.listOps({ states: ["pending"], limit: 10 }),
        [{ value: pending, rev: "6" }],
      );
      assert.deepEqual(
        (await storage.listOps({ kinds: ["todo"], id: "a\0b" })).map((entry) =>
          entry.value.opId
        ),
        ["01A"],
      );
      // Old revisions stay valid, and new ones continue the old counter.
      const result = await storage.write([
        { type: "putMeta", key: "cursor", value: { page: 4 }, expect: "7" },
      ]);
      assert.deepEqual(result, { ok: true, revs: ["8"] });
    }

    const db = new DatabaseSync(path);
    const { objects, version } = schemaOf(db) as {
      objects: { type: string; name: string }[];
      version: number;
    };
    assert.equal(version, SQLITE_SCHEMA_VERSION);
    const names = objects.map(({ type, name }) => `${type} ${name}`);
    for (
      const expected of [
        "index ops_by_record",
        "index ops_by_state",
        "view conflict_inbox",
        "view quarantine",
      ]
    ) {
      assert.ok(names.includes(expected), `Expected ${expected}`);
    }
    assert.deepEqual(
      db.prepare("SELECT op_id, status, message FROM quarantine").all().map((
        row,
      ) => ({ ...row })),
      [{ op_id: "01B", status: 422, message: "Title is required" }],
    );
    db.close();
  });
});

Deno.test("sqlite: opening a v2 file upgrades it to the current schema; its records read back and new ones store a shared base once", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/v2.sqlite`;
    const v2 = new DatabaseSync(path);
    migrateSqliteSchema(v2, SQLITE_MIGRATIONS.slice(0, 2));
    assert.equal((schemaOf(v2) as { version: number }).version, 2);
    // A pulled record as version 2 wrote it: its data twice.
    const data = { id: "a", title: "Milk", tags: ["x"] };
    const old = record("todo", "a", {
      data,
      base: { data, updatedAt: "2025-01-01T00:00:00.000Z", deleted: false },
    });
    v2.prepare(
      "INSERT INTO records (kind, id, deleted, value, rev) VALUES (?, ?, 0, ?, 4)",
    ).run(encodeKey("todo"), encodeKey("a"), JSON.stringify(old));
    v2.exec("UPDATE sync_state SET revision = 4");
    v2.close();

    {
      await using storage = await openSqliteStorage(path);
      const [read] = await storage.getRecords("todo", ["a"]);
      assert.deepEqual(read, { value: old, rev: "4" });
      assert.deepEqual(await storage.listRecords("todo"), [read]);
      const pulled = { id: "b", title: "Eggs", tags: ["y"] };
      const result = await storage.write([{
        type: "putRecord",
        record: record("todo", "b", {
          data: pulled,
          base: {
            data: pulled,
            updatedAt: "2025-01-02T00:00:00.000Z",
            deleted: false,
          },
        }),
        expect: null,
      }]);
      assert.deepEqual(result, { ok: true, revs: ["5"] });
    }

    const db = new DatabaseSync(path);
    assert.equal(
      (schemaOf(db) as { version: number }).version,
      SQLITE_SCHEMA_VERSION,
    );
    const rows = db.prepare(
      "SELECT value, base_is_data FROM records ORDER BY id",
    ).all() as { value: string; base_is_data: number }[];
    assert.deepEqual(rows.map((row) => row.base_is_data), [0, 1]);
    assert.deepEqual(JSON.parse(rows[1]!.value).base, {
      updatedAt: "2025-01-02T00:00:00.000Z",
      deleted: false,
    });
    db.close();
  });
});

Deno.test("sqlite: a base sharing the record's data object is stored once and reads back as independent objects", async () => {
  const db = new DatabaseSync(":memory:");
  await using storage = createSqliteStorage(db);
  const data = { id: "1", title: "Milk", nested: { tags: ["a"] } };
  const base = { data, updatedAt: "2025-01-01T00:00:00.000Z", deleted: false };
  const shared = record("todo", "1", { data, base });
  // Equal but distinct objects: stored as they are.
  const copied = record("todo", "2", {
    data: { ...data },
    base: { ...base, data: structuredClone(data) },
  });
  assert.equal(
    (await storage.write([
      { type: "putRecord", record: shared },
      { type: "putRecord", record: copied },
    ])).ok,
    true,
  );
  const stored = db.prepare(
    "SELECT length(value) AS bytes, base_is_data FROM records ORDER BY id",
  ).all() as { bytes: number; base_is_data: number }[];
  assert.deepEqual(stored.map((row) => row.base_is_data), [1, 0]);
  assert.equal(
    stored[0]!.bytes,
    JSON.stringify(shared).length - JSON.stringify(data).length -
      '"data":,'.length,
  );

  const reads = [
    ...(await storage.getRecords("todo", ["1", "1", "2"])).map((entry) =>
      entry!.value
    ),
    ...(await storage.listRecords("todo")).map((entry) => entry.value),
  ];
  assert.deepEqual(reads, [shared, shared, copied, shared, copied]);
  // The engine builds a base as { data, updatedAt, deleted }: same order.
  assert.deepEqual(Object.keys(reads[0]!.base!), Object.keys(base));
  for (const value of reads) {
    assert.notEqual(value.base!.data, value.data);
    assert.notEqual(
      (value.base!.data["nested"] as { tags: string[] }).tags,
      (value.data["nested"] as { tags: string[] }).tags,
    );
  }
  assert.notEqual(reads[0], reads[1]);
  // Changing what was read changes neither the store nor another read.
  (reads[0]!.data["nested"] as { tags: string[] }).tags.push("b");
  assert.deepEqual(reads[0]!.base!.data, data);
  assert.deepEqual((await storage.getRecords("todo", ["1"]))[0]?.value, shared);

  // Rewritten without the shared object (a local edit), the flag clears.
  const edited = { ...shared, data: { ...data, title: "Oat milk" } };
  await storage.write([{ type: "putRecord", record: edited }]);
  assert.deepEqual((await storage.getRecords("todo", ["1"]))[0]?.value, edited);
  assert.equal(
    (db.prepare("SELECT base_is_data FROM records ORDER BY id").get() as {
      base_is_data: number;
    }).base_is_data,
    0,
  );
});

Deno.test("sqlite: getRecords() reads many ids in chunks, in order, with repeats and gaps", async () => {
  const called: string[] = [];
  const db = new DatabaseSync(":memory:");
  await using storage = createSqliteStorage(
    wrapDriver(db, { beforeCall: (sql) => called.push(sql) }),
  );
  const ids = Array.from({ length: 300 }, (_, index) => `r${index}`);
  await storage.write(
    ids.filter((_, index) => index % 3 !== 0).map((id) => ({
      type: "putRecord",
      record: record("todo", id),
    })),
  );
  // Reversed, with every id asked twice and a third of them absent.
  const asked = [...ids, ...ids].reverse();
  called.length = 0;
  const entries = await storage.getRecords("todo", asked);
  assert.deepEqual(
    entries.map((entry) => entry?.value.id),
    asked.map((id) => Number(id.slice(1)) % 3 === 0 ? undefined : id),
  );
  const [first, , , ...rest] = entries;
  const again = rest[ids.length - 3];
  assert.equal(first?.value.id, again?.value.id);
  assert.notEqual(first?.value, again?.value);
  assert.notEqual(first?.value.data, again?.value.data);
  // 600 ids: 5 statements of at most 128 ids, in one read transaction.
  const selects = called.filter((sql) => sql.startsWith("SELECT"));
  assert.equal(selects.length, 5);
  assert.deepEqual(called.at(0), "BEGIN");
  assert.deepEqual(called.at(-1), "COMMIT");
});

Deno.test("sqlite: puts sharing multi-row statements keep every expect and stay all-or-nothing", async () => {
  const called: string[] = [];
  const db = new DatabaseSync(":memory:");
  await using storage = createSqliteStorage(
    wrapDriver(db, { beforeCall: (sql) => called.push(sql) }),
  );
  const ids = Array.from({ length: 70 }, (_, index) => `r${index}`);
  const put = (id: string, expect?: null): Mutation => ({
    type: "putRecord",
    record: record("todo", id),
    ...(expect === null ? { expect } : {}),
  });
  assert.equal((await storage.write([put("r41")])).ok, true);
  // 70 inserts expecting absence, one of which exists: nothing is written.
  called.length = 0;
  assert.deepEqual(
    await storage.write(ids.map((id) => put(id, null))),
    { ok: false },
  );
  assert.ok(
    called.filter((sql) => sql.startsWith("INSERT")).length < 10,
    called.join("\n"),
  );
  assert.deepEqual(
    (await storage.listRecords("todo")).map((entry) => entry.value.id),
    ["r41"],
  );
  // Inserts, then upserts, a delete between them, ops, and one record
  // put twice (its expects both hold against the state before the write).
  const mutations: Mutation[] = [
    ...ids.slice(0, 40).map((id) => put(id, null)),
    { type: "deleteRecord", kind: "todo", id: "r41" },
    ...ids.slice(40).map((id) => put(id)),
    ...["01A", "01B", "01C"].map((opId): Mutation => ({
      type: "putOp",
      op: op(opId),
      expect: null,
    })),
    put("twice", null),
    put("twice", null),
  ];
  const result = await storage.write(mutations);
  assert.ok(result.ok);
  // r41 is deleted and put again: both its mutations report the new rev.
  const rev = result.revs[0];
  assert.deepEqual(result.revs, mutations.map(() => rev));
  assert.deepEqual(
    (await storage.listRecords("todo")).map((entry) => entry.value.id).sort(),
    [...ids, "twice"].sort(),
  );
  assert.equal((await storage.listOps()).length, 3);
});

Deno.test("sqlite: a failing migration leaves the v1 file as it was", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/clash.sqlite`;
    const v1 = buildV1(path);
    v1.prepare("INSERT INTO meta (key, value, rev) VALUES (?, '1', 1)").run(
      encodeKey("kept"),
    );
    // Version 2 creates its indexes, then a view by this name: the view
    // fails after the indexes were made, so the whole step must roll back.
    v1.exec("CREATE TABLE quarantine (note TEXT)");
    const before = schemaOf(v1);
    v1.close();
    const bytes = await Deno.readFile(path);

    await assert.rejects(openSqliteStorage(path), (error: unknown) => {
      assert.ok(error instanceof StorageError);
      assert.equal(
        error.message,
        `Cannot open SQLite storage as migrating its schema to version ${SQLITE_SCHEMA_VERSION} failed: current value is 1`,
      );
      assert.match(String((error.cause as Error).message), /quarantine/);
      return true;
    });

    const db = new DatabaseSync(path);
    assert.deepEqual(schemaOf(db), before);
    assert.equal(
      db.prepare("SELECT count(*) AS n FROM sqlite_master WHERE type = 'index'")
        .get()?.["n"],
      0,
    );
    assert.equal(pragma(db, "journal_mode"), "delete");
    db.close();
    assert.deepEqual(await Deno.readFile(path), bytes);
  });
});

Deno.test("sqlite: migrations from an empty database run in one transaction", () => {
  const db = new DatabaseSync(":memory:");
  try {
    const failing = [
      ...SQLITE_MIGRATIONS,
      {
        version: SQLITE_MIGRATIONS.length + 1,
        description: "a step that fails halfway",
        sql: "CREATE TABLE extra (x); SELECT * FROM no_such_table;",
      },
    ];
    assert.throws(() => migrateSqliteSchema(db, failing), (error: unknown) => {
      assert.ok(error instanceof StorageError);
      assert.match(error.message, /current value is 0$/);
      return true;
    });
    // Not even version 1's tables are left behind.
    assert.deepEqual(schemaOf(db), { objects: [], version: 0 });
    assert.throws(
      () => migrateSqliteSchema(db, [{ version: 2, description: "", sql: "" }]),
      RangeError,
    );
    migrateSqliteSchema(db);
    assert.equal(
      (schemaOf(db) as { version: number }).version,
      SQLITE_SCHEMA_VERSION,
    );
    // Running it again is a no-op.
    const schema = schemaOf(db);
    migrateSqliteSchema(db);
    assert.deepEqual(schemaOf(db), schema);
  } finally {
    db.close();
  }
});

Deno.test("sqlite: NUL, lone-surrogate and non-BMP keys survive reopen in UTF-16 order", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/keys.sqlite`;
    const kinds = ["a\0b", "\uD800", "a"];
    const ids = [
      "\0",
      "\0\0",
      "x\0",
      "\uDBFF",
      "\uDC00\uD800",
      "\u{1F600}",
      "\uFF5E",
      "",
    ];
    {
      await using storage = await openSqliteStorage(path);
      const mutations: Mutation[] = [];
      for (const kind of kinds) {
        for (const id of ids) {
          mutations.push({ type: "putRecord", record: record(kind, id) });
        }
      }
      for (const id of ids) {
        mutations.push({ type: "putOp", op: op(id, { kind: "a\0b", id }) });
        mutations.push({ type: "putMeta", key: id, value: id });
      }
      assert.equal((await storage.write(mutations)).ok, true);
    }
    await using storage = await openSqliteStorage(path);
    const sorted = [...ids].sort();
    for (const kind of kinds) {
      assert.deepEqual(
        (await storage.listRecords(kind)).map((entry) => entry.value),
        sorted.map((id) => record(kind, id)),
      );
    }
    assert.deepEqual(
      (await storage.listOps()).map((entry) => entry.value.opId),
      sorted,
    );
    assert.deepEqual(
      (await storage.getMeta(ids)).map((entry) => entry?.value),
      ids,
    );
    for (const id of ids) {
      assert.deepEqual(
        (await storage.listOps({ kinds: ["a\0b"], id })).map((entry) =>
          entry.value.opId
        ),
        [id],
      );
    }
    // "a\0b" and "a" are different tables, though one is a prefix.
    assert.equal((await storage.listRecords("a\0")).length, 0);
  });
});

Deno.test("sqlite: the quarantine and conflict_inbox views list the right ops", async () => {
  const db = new DatabaseSync(":memory:");
  await using storage = createSqliteStorage(db);
  const error = {
    category: "rejected",
    message: "Title is required",
    status: 422,
    code: "invalid",
    body: { field: "title" },
    at: 11,
  };
  const conflict = {
    server: { id: "2", title: "server" },
    serverUpdatedAt: "2025-01-01T00:00:00.000Z",
    local: { id: "2", title: "local" },
    base: null,
    detectedAt: 12,
  };
  await storage.write([
    {
      type: "putOp",
      op: op("\uFF5E", { state: "quarantined", id: "3", error }),
    },
    {
      type: "putOp",
      op: op("\u{1F600}", { state: "quarantined", id: "1", error }),
    },
    { type: "putOp", op: op("01C", { state: "parked", id: "2", conflict }) },
    { type: "putOp", op: op("01D", { state: "pending", id: "4" }) },
  ]);
  const rows = (sql: string): Record<string, unknown>[] =>
    db.prepare(sql).all().map((row) => ({ ...row }));
  // UTF-16 order: the surrogate pair (0xD83D…) sorts before U+FF5E.
  assert.deepEqual(
    rows(
      "SELECT op_id, kind, id, type, status, code, message, failed_at FROM quarantine",
    ),
    [
      {
        op_id: "\u{1F600}",
        kind: "todo",
        id: "1",
        type: "upsert",
        status: 422,
        code: "invalid",
        message: "Title is required",
        failed_at: 11,
      },
      {
        op_id: "\uFF5E",
        kind: "todo",
        id: "3",
        type: "upsert",
        status: 422,
        code: "invalid",
        message: "Title is required",
        failed_at: 11,
      },
    ],
  );
  const [parked, ...others] = rows("SELECT * FROM conflict_inbox");
  assert.equal(others.length, 0);
  assert.equal(parked?.["op_id"], "01C");
  assert.equal(parked?.["detected_at"], 12);
  assert.equal(parked?.["server_updated_at"], conflict.serverUpdatedAt);
  assert.deepEqual(JSON.parse(parked?.["local"] as string), conflict.local);
  assert.deepEqual(JSON.parse(parked?.["server"] as string), conflict.server);
  assert.equal(parked?.["base"], null);
  assert.deepEqual(
    JSON.parse(parked?.["value"] as string),
    op("01C", { state: "parked", id: "2", conflict }),
  );
  // Retrying the quarantined op takes it out of the view.
  await storage.write([{ type: "putOp", op: op("\uFF5E", { id: "3" }) }]);
  assert.deepEqual(rows("SELECT op_id FROM quarantine"), [{
    op_id: "\u{1F600}",
  }]);
  await storage.close();
  db.close();
});

Deno.test("sqlite: close() leaves a caller-owned db open unless closeDatabase is set", async () => {
  const owned = new DatabaseSync(":memory:");
  const storage = createSqliteStorage(owned);
  await storage.write([{ type: "putMeta", key: "k", value: 1 }]);
  await storage.close();
  await storage.close();
  await assert.rejects(storage.getMeta(["k"]), {
    name: "ClosedError",
    message: "Cannot read meta as the storage is closed",
  });
  // The caller's connection still works, and still holds the data.
  assert.equal(
    (owned.prepare("SELECT value FROM meta").get() as { value: string }).value,
    "1",
  );
  // A second storage on it picks the data up.
  const again = createSqliteStorage(owned);
  assert.equal((await again.getMeta(["k"]))[0]?.value, 1);
  await again.close();
  owned.close();

  const handed = new DatabaseSync(":memory:");
  const closing = createSqliteStorage(handed, { closeDatabase: true });
  await closing[Symbol.asyncDispose]();
  assert.throws(() => handed.prepare("SELECT 1"), /not open/);
});

Deno.test("sqlite: malformed calls fail with the memory storage's errors and messages", async () => {
  await using memory = createMemoryStorage();
  await using sqlite = await openSqliteStorage(":memory:");
  const cyclic: Record<string, unknown> = {};
  cyclic["self"] = cyclic;
  const good = record("todo", "1");
  const malformed: unknown[] = [
    null,
    "putMeta",
    { type: "putNothing" },
    { type: "putMeta", key: 1, value: 1 },
    { type: "putMeta", key: "k", value: undefined },
    { type: "putMeta", key: "k", value: NaN },
    { type: "putMeta", key: "k", value: -Infinity },
    { type: "putMeta", key: "k", value: 1n },
    { type: "putMeta", key: "k", value: new Date(0) },
    { type: "putMeta", key: "k", value: new Map() },
    { type: "putMeta", key: "k", value: cyclic },
    { type: "putMeta", key: "k", value: [1, undefined] },
    { type: "putMeta", key: "k", value: { a: [{ b: Symbol("s") }] } },
    { type: "putMeta", key: "k", value: 1, expect: 3 },
    { type: "putRecord", record: [] },
    { type: "putRecord", record: { ...good, id: 1 } },
    { type: "putRecord", record: { ...good, kind: null } },
    { type: "putRecord", record: { ...good, data: [] } },
    { type: "putRecord", record: { ...good, deleted: "no" } },
    { type: "putRecord", record: { ...good, data: { at: () => 1 } } },
    {
      type: "putRecord",
      record: { ...good, base: { data: new Uint8Array() } },
    },
    { type: "putOp", op: { ...op("1"), state: "done" } },
    { type: "putOp", op: { ...op("1"), opId: undefined } },
    { type: "putOp", op: { ...op("1"), payload: { n: NaN } } },
    { type: "deleteRecord", kind: "todo" },
    { type: "deleteOp" },
    { type: "deleteMeta", key: null },
  ];
  const outcome = async (promise: Promise<unknown>): Promise<unknown> => {
    try {
      return { resolved: await promise };
    } catch (error) {
      return { name: (error as Error).name, message: (error as Error).message };
    }
  };
  for (const [index, mutation] of malformed.entries()) {
    const mutations = [
      { type: "putMeta", key: "first", value: 1 },
      mutation,
    ] as Mutation[];
    const expected = await outcome(memory.write(mutations));
    assert.equal((expected as { name: string }).name, "TypeError", `${index}`);
    assert.deepEqual(
      await outcome(sqlite.write(mutations)),
      expected,
      `${index}`,
    );
  }
  const calls: [string, (storage: Storage) => Promise<unknown>][] = [
    ["write(string)", (s) => s.write("nope" as unknown as Mutation[])],
    ["listOps limit", (s) => s.listOps({ limit: -1 })],
    ["listOps states", (s) => s.listOps({ states: "pending" as never })],
    ["listOps after", (s) => s.listOps({ after: 1 as never })],
    ["listRecords limit", (s) => s.listRecords("todo", { limit: 0.5 })],
    ["listRecords kind", (s) => s.listRecords(1 as never)],
    [
      "listRecords includeDeleted",
      (s) => s.listRecords("todo", { includeDeleted: 1 as never }),
    ],
    ["getRecords ids", (s) => s.getRecords("todo", [1] as never)],
    ["getOps ids", (s) => s.getOps("x" as never)],
    ["getMeta keys", (s) => s.getMeta("k" as never)],
  ];
  for (const [name, invoke] of calls) {
    const expected = await outcome(invoke(memory));
    assert.ok("name" in (expected as object), name);
    assert.deepEqual(await outcome(invoke(sqlite)), expected, name);
  }
  assert.deepEqual(await sqlite.getMeta(["first", "k"]), [
    undefined,
    undefined,
  ]);
});

Deno.test("sqlite: write() refuses an array with a hole with the memory storage's TypeError", async () => {
  await using memory = createMemoryStorage();
  await using sqlite = await openSqliteStorage(":memory:");
  // JSON.stringify would write the hole as null: it would read back changed.
  const holey: JsonValue[] = new Array(2);
  holey[1] = 1;
  for (
    const mutation of [
      { type: "putMeta", key: "k", value: { list: holey } },
      { type: "putRecord", record: record("todo", "1", { data: { holey } }) },
    ] as Mutation[]
  ) {
    const message = await memory.write([mutation]).then(
      () => assert.fail("Expected the memory storage to refuse the hole"),
      (error: Error) => error.message,
    );
    await assert.rejects(sqlite.write([mutation]), TypeError, message);
  }
  assert.deepEqual(await sqlite.getMeta(["k"]), [undefined]);
  assert.deepEqual(await sqlite.getRecords("todo", ["1"]), [undefined]);
});

Deno.test("sqlite: reads and writes with an aborted signal reject with its reason", async () => {
  await using storage = await openSqliteStorage(":memory:");
  const reason = new Error("stop");
  const signal = AbortSignal.abort(reason);
  for (
    const promise of [
      storage.getRecords("todo", ["1"], { signal }),
      storage.listRecords("todo", { signal }),
      storage.getOps(["1"], { signal }),
      storage.listOps({ signal }),
      storage.getMeta(["k"], { signal }),
      storage.write([{ type: "putMeta", key: "k", value: 1 }], { signal }),
    ]
  ) {
    await assert.rejects(promise, (error: unknown) => error === reason);
  }
  assert.deepEqual(await storage.getMeta(["k"]), [undefined]);
});

Deno.test("sqlite: a driver failure mid-write rejects with a StorageError and commits nothing", async () => {
  let failOn: RegExp | undefined;
  const db = new DatabaseSync(":memory:");
  const storage = createSqliteStorage(
    wrapDriver(db, {
      beforeCall(sql) {
        if (failOn?.test(sql)) throw new Error("disk I/O error (injected)");
      },
    }),
    { closeDatabase: true },
  );
  await storage.write([{ type: "putMeta", key: "m", value: 0 }]);
  const [before] = await storage.getMeta(["m"]);
  failOn = /^INSERT INTO ops/;
  await assert.rejects(
    storage.write([
      { type: "putMeta", key: "m", value: 1 },
      { type: "putRecord", record: record("todo", "1") },
      { type: "putOp", op: op("01A") },
    ]),
    (error: unknown) => {
      assert.ok(error instanceof StorageError);
      assert.equal(
        error.message,
        "Cannot write mutations as SQLite failed: disk I/O error (injected)",
      );
      assert.equal(error.retryable, false);
      assert.equal((error.cause as Error).message, "disk I/O error (injected)");
      return true;
    },
  );
  failOn = undefined;
  assert.deepEqual(await storage.getMeta(["m"]), [before]);
  assert.deepEqual(await storage.getRecords("todo", ["1"]), [undefined]);
  // The transaction was rolled back, not left open: the next write works.
  const result = await storage.write([{ type: "putOp", op: op("01A") }]);
  assert.equal(result.ok, true);
  failOn = /^SELECT value, rev FROM meta/;
  await assert.rejects(storage.getMeta(["m"]), {
    name: "StorageError",
    message: "Cannot read meta as SQLite failed: disk I/O error (injected)",
  });
  failOn = undefined;
  await storage.close();
  await assert.rejects(storage.write([]), ClosedError);
});

Deno.test("sqlite: a write blocked by another connection's lock rejects with a retryable StorageError", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/busy.sqlite`;
    await using storage = await openSqliteStorage(path, { busyTimeoutMs: 0 });
    await storage.write([{ type: "putMeta", key: "k", value: 1 }]);
    const other = new DatabaseSync(path);
    other.exec("BEGIN IMMEDIATE");
    try {
      await assert.rejects(
        storage.write([{ type: "putMeta", key: "k", value: 2 }]),
        (error: unknown) => {
          assert.ok(error instanceof StorageError);
          assert.equal(error.retryable, true);
          assert.match(
            error.message,
            /^Cannot write mutations as SQLite failed: /,
          );
          return true;
        },
      );
      // WAL: readers do not wait for the writer.
      assert.equal((await storage.getMeta(["k"]))[0]?.value, 1);
    } finally {
      other.exec("ROLLBACK");
      other.close();
    }
    const result = await storage.write([{
      type: "putMeta",
      key: "k",
      value: 3,
    }]);
    assert.equal(result.ok, true);
  });
});

Deno.test("sqlite: listOps() and getRecords() run on indexes", async () => {
  const called: string[] = [];
  const db = new DatabaseSync(":memory:");
  await using storage = createSqliteStorage(
    wrapDriver(db, { beforeCall: (sql) => called.push(sql) }),
  );
  /** The query plan of the one SELECT the call ran. */
  const planOf = async (call: () => Promise<unknown>): Promise<string> => {
    called.length = 0;
    await call();
    const selects = [...new Set(called)].filter((sql) =>
      sql.startsWith("SELECT")
    );
    assert.equal(selects.length, 1, selects.join("\n"));
    return db.prepare(`EXPLAIN QUERY PLAN ${selects[0]}`).all().map((row) =>
      String((row as { detail: string }).detail)
    ).join("; ");
  };
  // Pending ops are not in the partial index ops_by_state (schema v4): the
  // primary key lists them in outbox order.
  const pending = await planOf(() =>
    storage.listOps({ states: ["pending"], limit: 100 })
  );
  assert.match(pending, /^SCAN ops$/);
  const pendingAfter = await planOf(() =>
    storage.listOps({ states: ["pending"], after: "01A", limit: 100 })
  );
  assert.match(pendingAfter, /^SEARCH ops USING PRIMARY KEY \(op_id>\?\)$/);
  const parked = await planOf(() =>
    storage.listOps({ states: ["parked"], limit: 100 })
  );
  assert.match(parked, /USING INDEX ops_by_state \(state=\?\)/);
  assert.doesNotMatch(parked, /TEMP B-TREE/);
  const heldAfter = await planOf(() =>
    storage.listOps({ states: ["quarantined"], after: "01A", limit: 100 })
  );
  assert.match(
    heldAfter,
    /USING INDEX ops_by_state \(state=\? AND op_id>\?\)/,
  );
  const fifo = await planOf(() =>
    storage.listOps({ kinds: ["todo"], id: "1" })
  );
  assert.match(fifo, /USING INDEX ops_by_record \(id=\? AND kind=\?\)/);
  assert.doesNotMatch(fifo, /TEMP B-TREE/);
  const anyKind = await planOf(() => storage.listOps({ id: "1" }));
  assert.match(anyKind, /USING INDEX ops_by_record \(id=\?\)/);
  const records = await planOf(() => storage.getRecords("todo", ["1", "2"]));
  assert.match(records, /USING PRIMARY KEY \(kind=\? AND id=\?\)/);
  const page = await planOf(() =>
    storage.listRecords("todo", { after: "1", limit: 10 })
  );
  assert.match(page, /USING PRIMARY KEY \(kind=\? AND id>\?\)/);
  assert.doesNotMatch(page, /TEMP B-TREE/);
  await storage.close();
  db.close();
});

Deno.test("sqlite: two processes incrementing one counter lose no update", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/shared.sqlite`;
    const module = new URL("../storage/sqlite.ts", import.meta.url).href;
    const script = `
      import { openSqliteStorage } from ${JSON.stringify(module)};
      await using storage = await openSqliteStorage(${JSON.stringify(path)});
      for (let done = 0; done < 200;) {
        const [entry] = await storage.getMeta(["counter"]);
        const value = typeof entry?.value === "number" ? entry.value : 0;
        const result = await storage.write([{
          type: "putMeta", key: "counter", value: value + 1,
          expect: entry === undefined ? null : entry.rev,
        }]);
        if (result.ok) done++;
      }
    `;
    await using storage = await openSqliteStorage(path);
    const child = new Deno.Command(Deno.execPath(), {
      args: ["eval", "--ext=ts", script],
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    for (let done = 0; done < 200;) {
      const [entry] = await storage.getMeta(["counter"]);
      const value = typeof entry?.value === "number" ? entry.value : 0;
      const result = await storage.write([{
        type: "putMeta",
        key: "counter",
        value: value + 1,
        expect: entry === undefined ? null : entry.rev,
      }]);
      if (result.ok) done++;
      // Let the child in between our writes.
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    assert.equal((await child.status).code, 0);
    assert.equal((await storage.getMeta(["counter"]))[0]?.value, 400);
  });
});

Deno.test("sqlite: handles sharing a file never issue the same revision, even after a refused write", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/revs.sqlite`;
    await using first = await openSqliteStorage(path);
    await using second = await openSqliteStorage(path);
    const revs: string[] = [];
    const put = async (storage: Storage, key: string): Promise<void> => {
      const result = await storage.write([
        { type: "putMeta", key, value: revs.length },
      ]);
      assert.ok(result.ok);
      revs.push(result.revs[0]!);
    };
    // The first write of `first` reserves revisions, then its expect fails:
    // the reservation is rolled back and must not be used later, since
    // `second` may be handed the same block.
    const refused = await first.write([
      { type: "putMeta", key: "a", value: 1 },
      { type: "putMeta", key: "b", value: 1, expect: "999" },
    ]);
    assert.equal(refused.ok, false);
    for (let round = 0; round < 5; round++) {
      await put(second, "k");
      await put(first, "k");
      await put(first, `k${round}`);
    }
    assert.equal(new Set(revs).size, revs.length, revs.join(", "));
    // Both see the other's latest revision of "k".
    const [fromFirst] = await first.getMeta(["k"]);
    const [fromSecond] = await second.getMeta(["k"]);
    assert.deepEqual(fromFirst, fromSecond);
    assert.equal(fromFirst?.rev, revs.at(-2));
  });
});

Deno.test("sqlite: a connection takes its revisions from one reserved block, not one counter update per write", async () => {
  const db = new DatabaseSync(":memory:");
  await using storage = createSqliteStorage(db, { closeDatabase: true });
  const counter = (): number =>
    Number(
      (db.prepare("SELECT revision FROM sync_state").get() as {
        revision: number;
      }).revision,
    );
  const revs: string[] = [];
  for (let write = 0; write < 10; write++) {
    const result = await storage.write([
      { type: "putMeta", key: `k${write}`, value: write },
    ]);
    assert.ok(result.ok);
    revs.push(result.revs[0]!);
    // The first write reserved the block: later ones leave the counter.
    if (write === 0) assert.ok(counter() >= Number(revs[0]));
  }
  const reserved = counter();
  await storage.write([{ type: "putMeta", key: "last", value: 0 }]);
  assert.equal(counter(), reserved);
  assert.deepEqual(
    revs.map((rev) => Number(rev) - Number(revs[0])),
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
  );
});

Deno.test("sqlite: a file that cannot switch to WAL keeps its durability with synchronous FULL", async () => {
  await withTempDir(async (dir) => {
    const db = new DatabaseSync(`${dir}/no-wal.sqlite`);
    // A driver on a VFS without WAL support answers with its old mode.
    const noWal = wrapDriver(db, {
      row: (row) => "journal_mode" in row ? { journal_mode: "delete" } : row,
    });
    const storage = createSqliteStorage(noWal);
    assert.equal(pragma(db, "synchronous"), 2);
    assert.equal(storage.capabilities.persistent, true);
    await storage.close();
    db.close();
  });
});

Deno.test("sqlite: limits beyond 2^53 list everything", async () => {
  await using storage = await openSqliteStorage(":memory:");
  await storage.write([
    { type: "putRecord", record: record("todo", "1") },
    { type: "putOp", op: op("01A") },
  ]);
  assert.equal((await storage.listRecords("todo", { limit: 1e300 })).length, 1);
  assert.equal((await storage.listOps({ limit: 2 ** 60 })).length, 1);
});

Deno.test("sqlite: a stored record or op that is corrupt, of the wrong shape or under another key rejects with a StorageError naming it", async () => {
  const db = new DatabaseSync(":memory:");
  await using storage = createSqliteStorage(db, { closeDatabase: true });
  const base = { data: { id: "b" }, updatedAt: "2024-01-01T00:00:00Z" };
  const shared = record("todo", "b");
  await storage.write([
    { type: "putRecord", record: record("todo", "a") },
    {
      type: "putRecord",
      record: {
        ...shared,
        base: { ...base, data: shared.data, deleted: false },
      },
    },
    { type: "putOp", op: op("01A", { id: "a" }) },
    { type: "putMeta", key: "cursor/todo", value: "x" },
  ]);
  const corrupt = (sql: string, ...params: (string | Uint8Array)[]) =>
    db.prepare(sql).run(...params);
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
  const recordReads = [
    () => storage.getRecords("todo", ["a"]),
    () => storage.getRecords("todo", ["a", "b"]),
    () => storage.listRecords("todo"),
  ];
  const a = encodeKey("a");
  const update = "UPDATE records SET value = ? WHERE id = ?";
  const good = JSON.stringify(record("todo", "a"));
  corrupt(update, '{"kind": "todo", "id": "a", "da', a);
  await fails(
    recordReads,
    /^Cannot read record "a" of kind "todo" as its stored value is not valid JSON: current value is "\{\\"kind/,
  );
  corrupt(update, JSON.stringify({ ...record("todo", "a"), deleted: "no" }), a);
  await fails(
    recordReads,
    /^Cannot read record "a" of kind "todo" as its stored 'deleted' is not a boolean: current value is "no"$/,
  );
  corrupt(update, JSON.stringify({ ...record("todo", "a"), base: [] }), a);
  await fails(recordReads, /stored 'base' is not an object or null/);
  corrupt(update, "[1, 2]", a);
  await fails(
    recordReads,
    /stored value is not an object: current value is \[.*\]$/,
  );
  // A record stored under another id or kind is as wrong as a corrupt one.
  corrupt(update, JSON.stringify(record("todo", "c")), a);
  await fails(
    recordReads,
    /^Cannot read record "a" of kind "todo" as its stored 'id' is not the one it is stored under: current value is "c"$/,
  );
  corrupt(update, JSON.stringify(record("other", "a")), a);
  await fails(recordReads, /stored 'kind' is not the one it is stored under/);
  corrupt(update, JSON.stringify({ ...record("todo", "a"), deleted: true }), a);
  await fails(recordReads, /stored 'deleted' disagrees with its row/);
  corrupt(update, good, a);
  assert.equal((await storage.listRecords("todo")).length, 2);
  // A shared base whose data nests too deep to copy.
  let deep: unknown = 1;
  for (let level = 0; level < 5_000; level++) deep = { deep };
  corrupt(
    update,
    JSON.stringify({
      ...shared,
      data: { deep },
      base: { ...base, deleted: false },
    }),
    encodeKey("b"),
  );
  await fails(
    [() => storage.getRecords("todo", ["b"])],
    /^Cannot read record "b" of kind "todo" as its stored 'data' nests more than 256 levels deep/,
  );
  corrupt("DELETE FROM records WHERE id = ?", encodeKey("b"));
  // Ops: corrupt, wrong shape, or disagreeing with the columns listings
  // filter on.
  const opReads = [
    () => storage.getOps(["01A"]),
    () => storage.listOps(),
    () => storage.listOps({ kinds: ["todo"], id: "a" }),
  ];
  const setOp = "UPDATE ops SET value = ? WHERE op_id = ?";
  const opKey = encodeKey("01A");
  corrupt(setOp, "not json", opKey);
  await fails(
    opReads,
    /^Cannot read op "01A" as its stored value is not valid JSON/,
  );
  corrupt(
    setOp,
    JSON.stringify({ ...op("01A", { id: "a" }), state: "gone" }),
    opKey,
  );
  await fails(
    opReads,
    /^Cannot read op "01A" as its stored 'state' is not an op state: current value is "gone"$/,
  );
  corrupt(
    setOp,
    JSON.stringify({ ...op("01A", { id: "a" }), error: { category: 1 } }),
    opKey,
  );
  await fails(opReads, /stored 'error.category' is not a string/);
  corrupt(setOp, JSON.stringify(op("01A", { id: "z" })), opKey);
  await fails(
    opReads,
    /^Cannot read op "01A" as its stored 'id' is not the one it is stored under: current value is "z"$/,
  );
  corrupt(setOp, JSON.stringify(op("01B", { id: "a" })), opKey);
  await fails(opReads, /stored 'opId' is not the one it is stored under/);
  corrupt(
    setOp,
    JSON.stringify(op("01A", { id: "a", state: "parked" })),
    opKey,
  );
  await fails(opReads, /stored 'state' is not the one it is stored under/);
  corrupt(setOp, JSON.stringify(op("01A", { id: "a" })), opKey);
  assert.equal((await storage.listOps({ id: "a" })).length, 1);
  // Meta values are any JSON: only corrupt text fails.
  corrupt("UPDATE meta SET value = ?", "{");
  await fails(
    [() => storage.getMeta(["cursor/todo"])],
    /^Cannot read meta entry "cursor\/todo" as its stored value is not valid JSON/,
  );
});

Deno.test("sqlite: a value nested deeper than 256 levels is refused with a StorageError", async () => {
  await using storage = await openSqliteStorage(":memory:");
  let deep: JsonValue = 1;
  for (let level = 0; level < 100_000; level++) deep = { deep };
  for (
    const [index, mutation] of [
      { type: "putRecord", record: { ...record("todo", "a"), data: { deep } } },
      { type: "putOp", op: { ...op("01A"), payload: { deep } } },
      { type: "putMeta", key: "m", value: deep },
    ].entries()
  ) {
    await assert.rejects(
      storage.write([
        { type: "putMeta", key: "before", value: index },
        mutation as Mutation,
      ]),
      {
        name: "StorageError",
        message: `Cannot write mutation 1 as '${
          ["record", "op", "value"][index]
        }' nests more than 256 levels deep: current value is at least 257 levels`,
      },
    );
  }
  assert.deepEqual(await storage.getMeta(["before"]), [undefined]);
});

Deno.test("sqlite: every field of a stored record or op is checked on read", async () => {
  const db = new DatabaseSync(":memory:");
  await using storage = createSqliteStorage(db, { closeDatabase: true });
  const base = { data: { id: "a" }, updatedAt: "2024-01-01T00:00:00Z" };
  const full = record("todo", "a", {
    base: { ...base, deleted: false },
    lastOpId: "01A",
    localUpdatedAt: 1,
  });
  const error = {
    category: "validation",
    message: "m",
    status: 422,
    code: "c",
    body: null,
    at: 1,
  };
  const conflict = {
    server: {},
    serverUpdatedAt: "2024-01-01T00:00:00Z",
    local: {},
    base: {},
    detectedAt: 1,
  };
  const fullOp = op("01A", { id: "a", error, conflict, changedFields: ["x"] });
  await storage.write([
    { type: "putRecord", record: full },
    { type: "putOp", op: fullOp },
  ]);
  // A wrong value for each field, nested ones by path.
  const wrong = (value: unknown): unknown =>
    typeof value === "string"
      ? 1
      : typeof value === "number"
      ? "1"
      : Array.isArray(value)
      ? [1]
      : [];
  const paths = (value: Record<string, unknown>): string[][] =>
    Object.entries(value).flatMap(([key, field]) =>
      typeof field === "object" && field !== null && !Array.isArray(field) &&
        ["base", "error", "conflict"].includes(key)
        ? [[key], ...Object.keys(field).map((inner) => [key, inner])]
        : [[key]]
    );
  const damaged = (value: object, path: string[]): string => {
    const copy = structuredClone(value) as Record<string, unknown>;
    const parent = path.length === 1
      ? copy
      : copy[path[0]!] as Record<string, unknown>;
    parent[path.at(-1)!] = wrong(parent[path.at(-1)!]);
    return JSON.stringify(copy);
  };
  let checked = 0;
  for (const path of paths(full as unknown as Record<string, unknown>)) {
    db.prepare("UPDATE records SET value = ?").run(damaged(full, path));
    await assert.rejects(storage.getRecords("todo", ["a"]), (e: unknown) => {
      assert.ok(e instanceof StorageError, `${path}: ${e}`);
      assert.match(e.message, new RegExp(`'${path.join("\\.")}' is not`));
      return true;
    });
    checked++;
  }
  db.prepare("UPDATE records SET value = ?").run(JSON.stringify(full));
  for (const path of paths(fullOp as unknown as Record<string, unknown>)) {
    // Any JSON is an error's body.
    if (path.join(".") === "error.body") continue;
    db.prepare("UPDATE ops SET value = ?").run(damaged(fullOp, path));
    await assert.rejects(storage.getOps(["01A"]), (e: unknown) => {
      assert.ok(e instanceof StorageError, `${path}: ${e}`);
      assert.match(e.message, new RegExp(`'${path.join("\\.")}' is not`));
      return true;
    });
    checked++;
  }
  assert.equal(checked, 7 + 3 + 17 + 5 + 5);
});

Deno.test("sqlite: a read that fails at any statement, its COMMIT included, leaves the connection able to write", async () => {
  const fault = new FaultPoint();
  await using storage = createSqliteStorage(
    faultyDriver(new DatabaseSync(":memory:"), fault),
  );
  const read = () => storage.getMeta(["a", "b"]);
  await read();
  const before = fault.calls;
  await read();
  const statements = fault.calls - before;
  assert.ok(statements >= 3, "BEGIN, the reads and COMMIT");
  for (let k = 1; k <= statements; k++) {
    fault.arm(k);
    await assert.rejects(read());
    assert.ok(fault.fired, `statement ${k} failed`);
    const result = await storage.write([
      { type: "putMeta", key: "a", value: k },
    ]);
    assert.equal(result.ok, true, `a write after statement ${k} failed`);
    assert.equal((await storage.getMeta(["a"]))[0]?.value, k);
  }
});
