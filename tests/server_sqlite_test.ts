import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { StorageError } from "../src/errors.ts";
import type { JsonObject } from "../src/json.ts";
import {
  createSyncServer,
  type ServerStore,
  type SyncServer,
} from "../server/mod.ts";
import {
  createSqliteServerStore,
  openSqliteServerStore,
} from "../server/sqlite.ts";
import { testServerStore } from "../server/conformance.ts";
import {
  AWKWARD_IDS,
  bearerPrincipal,
  serverRecord,
  shuffled,
} from "../server/_conformance_kit.ts";
import { wrapDriver } from "./_sqlite_drivers.ts";

testServerStore(
  "sqlite (:memory:)",
  async () => ({ store: await openSqliteServerStore(":memory:") }),
  { shared: true },
);

testServerStore("sqlite (file)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sync-server-" });
  const file = `${dir}/store.sqlite`;
  return {
    store: await openSqliteServerStore(file),
    reopen: () => openSqliteServerStore(file),
    teardown: () => Deno.remove(dir, { recursive: true }),
  };
}, { persistent: true, shared: true });

testServerStore("sqlite (createSqliteServerStore)", () => {
  const db = new DatabaseSync(":memory:");
  return Promise.resolve({
    store: createSqliteServerStore(db, { closeDatabase: true }),
  });
}, { shared: true });

const ORIGIN = "http://sync.test";
const T0 = Date.UTC(2025, 2, 1, 10, 0, 0);

async function send(
  server: SyncServer,
  method: string,
  target: string,
  init: { json?: JsonObject; headers?: Record<string, string> } = {},
): Promise<{ status: number; body: JsonObject; headers: Headers }> {
  const response = await server.fetch(
    new Request(`${ORIGIN}${target}`, {
      method,
      headers: init.headers ?? {},
      ...(init.json === undefined ? {} : { body: JSON.stringify(init.json) }),
    }),
  );
  return {
    status: response.status,
    body: await response.json() as JsonObject,
    headers: response.headers,
  };
}

async function withTempDir(
  fn: (dir: string) => void | Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sync-server-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("sqlite: a server restarted on the same file keeps records, keys, horizons and its clock", async () => {
  await withTempDir(async (dir) => {
    const file = `${dir}/sync.sqlite`;
    let clock = T0;
    let created: JsonObject;
    {
      await using server = createSyncServer({
        store: await openSqliteServerStore(file),
        now: () => clock,
      });
      const put = await send(server, "PUT", "/todo/a%2Fb", {
        json: { title: "kept" },
        headers: { "idempotency-key": "op-1" },
      });
      assert.equal(put.status, 201);
      created = put.body;
      await send(server, "PUT", "/todo/gone", { json: {} });
      clock += 1_000;
      assert.equal((await send(server, "DELETE", "/todo/gone")).status, 200);
      assert.equal(await server.purgeTombstones(), 1);
    }
    // The clock went back an hour while the server was down.
    clock = T0 - 3_600_000;
    await using server = createSyncServer({
      store: await openSqliteServerStore(file),
      now: () => clock,
    });
    const replay = await send(server, "PUT", "/todo/a%2Fb", {
      json: { title: "kept" },
      headers: { "idempotency-key": "op-1" },
    });
    assert.equal(replay.headers.get("idempotent-replayed"), "true");
    assert.deepEqual(replay.body, created);
    const gone = await send(
      server,
      "GET",
      `/todo?updatedSince=${encodeURIComponent(new Date(T0).toISOString())}`,
    );
    assert.equal(gone.status, 410);
    // The clock and the last id survive: (T0 + 1 s, "gone") was the newest
    // write. The store is shared (several processes may write the file), so
    // every write moves past the stored clock: "new" and "fresh" get the
    // next milliseconds; neither goes back an hour.
    {
      await using probe = await openSqliteServerStore(file);
      assert.deepEqual(await probe.lastWrite("public"), {
        updatedAt: T0 + 1_000,
        id: "gone",
      });
    }
    const next = await send(server, "PUT", "/todo/new", { json: {} });
    assert.equal(next.body.updated_at, new Date(T0 + 1_001).toISOString());
    const fresh = await send(server, "PUT", "/todo/fresh", { json: {} });
    assert.equal(fresh.body.updated_at, new Date(T0 + 1_002).toISOString());
    const pull = await send(server, "GET", "/todo");
    assert.deepEqual(
      (pull.body.items as JsonObject[]).map((item) => item.id),
      ["a/b", "new", "fresh"],
    );
  });
});

Deno.test("sqlite: openSqliteServerStore() uses WAL and a versioned schema", async () => {
  await withTempDir(async (dir) => {
    const file = `${dir}/sync.sqlite`;
    const store = await openSqliteServerStore(file);
    const probe = new DatabaseSync(file);
    try {
      const mode = probe.prepare("PRAGMA journal_mode").get() as {
        journal_mode: string;
      };
      assert.equal(mode.journal_mode, "wal");
      const version = probe.prepare("PRAGMA user_version").get() as {
        user_version: number;
      };
      assert.equal(version.user_version, 3);
    } finally {
      probe.close();
      await store.close();
    }
  });
});

Deno.test("sqlite: a database with another schema version is refused", async () => {
  await withTempDir(async (dir) => {
    const file = `${dir}/sync.sqlite`;
    const db = new DatabaseSync(file);
    db.exec("PRAGMA user_version = 4");
    db.close();
    await assert.rejects(openSqliteServerStore(file), StorageError);
    // The refused file is left as it was, and closed (removable).
    const check = new DatabaseSync(file);
    const row = check.prepare("PRAGMA user_version").get() as {
      user_version: number;
    };
    check.close();
    assert.equal(row.user_version, 4);
  });
});

Deno.test("sqlite: createSqliteServerStore() closes the database only with closeDatabase", async () => {
  const kept = new DatabaseSync(":memory:");
  await createSqliteServerStore(kept).close();
  assert.equal(
    (kept.prepare("SELECT 1 AS one").get() as { one: number }).one,
    1,
  );
  kept.close();
  const owned = new DatabaseSync(":memory:");
  await createSqliteServerStore(owned, { closeDatabase: true }).close();
  assert.throws(() => owned.prepare("SELECT 1"));
  const other = new DatabaseSync(":memory:");
  assert.throws(
    () =>
      createSqliteServerStore(other, {
        closeDatabase: "yes" as unknown as boolean,
      }),
    TypeError,
  );
  other.close();
  await assert.rejects(
    openSqliteServerStore(":memory:", { busyTimeoutMs: -1 }),
    RangeError,
  );
});

Deno.test("sqlite: pull pages exactly through 1,000 records sharing one updated_at with limit 7", async () => {
  const store = await openSqliteServerStore(":memory:");
  const all = Array.from(
    { length: 1000 },
    (_, index) => serverRecord("todo", `é${(index * 7919) % 1000}😀`, T0),
  );
  await store.commit(
    shuffled(all).map((record) => ({
      type: "record" as const,
      namespace: "public",
      record,
    })),
  );
  await using server = createSyncServer({ store });
  const seen: string[] = [];
  let query = "limit=7";
  let pages = 0;
  for (;;) {
    const { status, body } = await send(server, "GET", `/todo?${query}`);
    assert.equal(status, 200);
    pages++;
    const items = body.items as JsonObject[];
    seen.push(...items.map((item) => String(item.id)));
    const last = items.at(-1);
    if (body.nextPageToken === null || last === undefined) break;
    query = new URLSearchParams({
      limit: "7",
      updatedSince: String(last.updated_at),
      afterId: String(last.id),
      pageToken: String(body.nextPageToken),
    }).toString();
  }
  assert.equal(pages, 143);
  assert.equal(new Set(seen).size, 1000);
  assert.deepEqual(seen, all.map((record) => record.id).sort());
});

Deno.test("http: ids with / ? # % space unicode and NUL round-trip over HTTP into SQLite", async () => {
  await withTempDir(async (dir) => {
    await using server = createSyncServer({
      store: await openSqliteServerStore(`${dir}/sync.sqlite`),
    });
    await using http = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen(): void {} },
      server.fetch,
    );
    const base = `http://127.0.0.1:${http.addr.port}`;
    const ids = AWKWARD_IDS.filter((id) => id.isWellFormed());
    for (const id of ids) {
      const response = await fetch(`${base}/todo/${encodeURIComponent(id)}`, {
        method: "PUT",
        body: JSON.stringify({ label: id }),
      });
      assert.equal(response.status, 201, JSON.stringify(id));
      assert.deepEqual((await response.json()).label, id);
    }
    const page = await (await fetch(`${base}/todo?limit=100`)).json();
    assert.deepEqual(
      (page.items as JsonObject[]).map((item) => [item.id, item.label]),
      ids.map((id) => [id, id]),
    );
    const removed = await fetch(
      `${base}/todo/${encodeURIComponent("nul\0byte")}`,
      {
        method: "DELETE",
      },
    );
    assert.equal(removed.status, 200);
    assert.equal((await removed.json()).id, "nul\0byte");
    const stillThere = await fetch(
      `${base}/todo/${encodeURIComponent("nul")}`,
      {
        method: "DELETE",
      },
    );
    assert.equal(stillThere.status, 404);
    await stillThere.body?.cancel();
  });
});

// ---------------------------------------------------------------------------
// Schema version 1 upgrades; pages and batches stay bounded
// ---------------------------------------------------------------------------

/** The layout of schema version 1, as files written before it hold it. */
const V1_SCHEMA = `
CREATE TABLE records (
  ns BLOB NOT NULL, kind BLOB NOT NULL, id BLOB NOT NULL,
  updated_at INTEGER NOT NULL, deleted_at INTEGER, data TEXT NOT NULL,
  PRIMARY KEY (ns, kind, id)
) WITHOUT ROWID;
CREATE INDEX records_keyset ON records (ns, kind, updated_at, id);
CREATE INDEX records_tombstones ON records (updated_at)
  WHERE deleted_at IS NOT NULL;
CREATE TABLE idempotency (
  ns BLOB NOT NULL, key BLOB NOT NULL, fingerprint BLOB NOT NULL,
  status INTEGER NOT NULL, body TEXT NOT NULL, expires_at INTEGER NOT NULL,
  PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_expiry ON idempotency (expires_at);
CREATE TABLE horizons (
  ns BLOB NOT NULL, kind BLOB NOT NULL, horizon INTEGER NOT NULL,
  PRIMARY KEY (ns, kind)
) WITHOUT ROWID;
CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
PRAGMA user_version = 1;
`;

/** UTF-16BE code units, as the store keeps names. */
function utf16(text: string): Uint8Array {
  const bytes = new Uint8Array(text.length * 2);
  for (let index = 0; index < text.length; index++) {
    bytes[index * 2] = text.charCodeAt(index) >> 8;
    bytes[index * 2 + 1] = text.charCodeAt(index) & 0xff;
  }
  return bytes;
}

Deno.test("sqlite: a schema version 1 file upgrades to version 3 with per-namespace clocks and record sizes", async () => {
  await withTempDir(async (dir) => {
    const file = `${dir}/v1.sqlite`;
    const records = [
      ["alice", serverRecord("todo", "a", T0 + 5, { fields: { t: "é😀" } })],
      ["alice", serverRecord("todo", "b", T0 + 5)],
      ["alice", serverRecord("todo", "c", T0 + 1, { deleted: true })],
      ["bob", serverRecord("todo", "x", T0 + 2)],
    ] as const;
    {
      const db = new DatabaseSync(file);
      db.exec(V1_SCHEMA);
      const insert = db.prepare(
        "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?)",
      );
      for (const [ns, record] of records) {
        insert.run(
          utf16(ns),
          utf16(record.kind),
          utf16(record.id),
          record.updatedAt,
          record.deletedAt,
          JSON.stringify(record.data),
        );
      }
      // Bob purged a tombstone of T0 + 8; Carol has nothing but a purge.
      const horizon = db.prepare("INSERT INTO horizons VALUES (?, ?, ?)");
      horizon.run(utf16("bob"), utf16("todo"), T0 + 9);
      horizon.run(utf16("carol"), utf16("note"), T0 + 4);
      db.prepare("INSERT INTO idempotency VALUES (?, ?, ?, ?, ?, ?)").run(
        utf16("alice"),
        utf16("k1"),
        utf16("fp"),
        201,
        '{"id":"a"}',
        T0 + 1e9,
      );
      // The one clock of version 1: everybody's.
      db.exec(`INSERT INTO meta VALUES ('clock', ${T0 + 9})`);
      db.close();
    }
    {
      await using store = await openSqliteServerStore(file);
      for (const [ns, record] of records) {
        assert.deepEqual(
          await store.getRecord(ns, record.kind, record.id),
          record,
        );
      }
      assert.deepEqual(await store.lastWrite("alice"), {
        updatedAt: T0 + 5,
        id: "b",
      });
      assert.deepEqual(await store.lastWrite("bob"), {
        updatedAt: T0 + 8,
        id: null,
      });
      assert.deepEqual(await store.lastWrite("carol"), {
        updatedAt: T0 + 3,
        id: null,
      });
      assert.equal(await store.lastWrite("dave"), null);
      // Sizes were measured in UTF-8 bytes.
      const size = new TextEncoder().encode(
        JSON.stringify(records[0][1].data),
      ).length;
      const page = await store.listRecords("alice", "todo", {
        limit: 10,
        since: T0 + 5,
        maxBytes: size,
      });
      assert.deepEqual(page.records.map((record) => record.id), ["a"]);
      assert.equal(page.truncated, true);
      assert.equal((await store.getIdempotency("alice", "k1"))?.status, 201);
      assert.deepEqual(
        await store.trimIdempotency("alice", {
          keep: Infinity,
          expiresAtOrBefore: -Infinity,
        }),
        { count: 1, oldestExpiresAt: T0 + 1e9 },
      );
    }
    const probe = new DatabaseSync(file);
    const version = probe.prepare("PRAGMA user_version").get() as {
      user_version: number;
    };
    probe.close();
    assert.equal(version.user_version, 3);
    // Reopened as version 3; each principal continues from its own clock.
    await using server = createSyncServer({
      store: await openSqliteServerStore(file),
      auth: (request) => request.headers.get("x-principal"),
      now: () => T0,
    });
    const put = async (ns: string, id: string) =>
      (await server.fetch(
        new Request(`${ORIGIN}/todo/${id}`, {
          method: "PUT",
          headers: { "x-principal": ns },
          body: "{}",
        }),
      ).then((response) => response.json())).updated_at;
    assert.equal(await put("alice", "a0"), new Date(T0 + 6).toISOString());
    assert.equal(await put("bob", "y"), new Date(T0 + 9).toISOString());
    assert.equal(await put("carol", "z"), new Date(T0 + 4).toISOString());
    assert.equal(await put("dave", "w"), new Date(T0).toISOString());
  });
});

Deno.test("sqlite: a pull reads the data of the records it returns, no more", async () => {
  let dataRows = 0;
  const db = wrapDriver(new DatabaseSync(":memory:"), {
    row(row) {
      if ("data" in row) dataRows++;
      return row;
    },
  });
  await using server = createSyncServer({
    store: createSqliteServerStore(db, { closeDatabase: true }),
    maxPageBytes: 40_000,
  });
  for (let index = 0; index < 60; index++) {
    await send(server, "PUT", `/todo/r${index}`, {
      json: { text: "x".repeat(10_000) },
    });
  }
  dataRows = 0;
  const page = await send(server, "GET", "/todo?limit=1000");
  const items = page.body.items as JsonObject[];
  assert.equal(items.length, 3);
  assert.equal(dataRows, 3);
});

Deno.test("sqlite: a batch commits in bounded slices, and another principal's write lands between them", async () => {
  const begins: string[] = [];
  const db = wrapDriver(new DatabaseSync(":memory:"), {
    beforeCall(sql) {
      if (sql.startsWith("BEGIN")) begins.push(sql);
    },
  });
  const inner = createSqliteServerStore(db, { closeDatabase: true });
  const commits: string[] = [];
  let bob: Promise<unknown> | null = null;
  const store: ServerStore = {
    getRecord: (ns, kind, id) => inner.getRecord(ns, kind, id),
    listRecords: (ns, kind, options) => inner.listRecords(ns, kind, options),
    getIdempotency: (ns, key) => inner.getIdempotency(ns, key),
    async commit(writes) {
      await inner.commit(writes);
      commits.push(writes[0]!.namespace);
      // Bob writes once Alice's batch has committed its first slice.
      bob ??= send(server, "PUT", "/todo/b", {
        json: {},
        headers: { authorization: "Bearer bob" },
      });
    },
    purge: (options) => inner.purge(options),
    trimIdempotency: (ns, options) => inner.trimIdempotency(ns, options),
    lastWrite: (ns) => inner.lastWrite(ns),
    close: () => inner.close(),
    [Symbol.asyncDispose]: () => inner.close(),
  };
  await using server = createSyncServer({ store, auth: bearerPrincipal });
  const ops = Array.from({ length: 1_000 }, (_, index) => ({
    opId: `o${index}`,
    kind: "todo",
    id: `r${index}`,
    type: "upsert",
    payload: {},
  }));
  const batch = await send(server, "POST", "/batch", {
    json: { ops },
    headers: { authorization: "Bearer alice" },
  });
  assert.deepEqual(
    (batch.body.results as JsonObject[]).map((result) => result.status),
    ops.map(() => 201),
  );
  await bob;
  // One commit (one transaction) per slice of 250 ops.
  assert.equal(commits.filter((ns) => ns === "alice").length, 4);
  assert.ok(begins.every((sql) => sql.startsWith("BEGIN")));
  const bobAt = commits.indexOf("bob");
  assert.ok(
    bobAt > 0 && bobAt < commits.length - 1,
    `Bob's write waited for the whole batch: ${commits.join(" ")}`,
  );
});
