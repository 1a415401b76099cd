import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { StorageError } from "../src/errors.ts";
import type { JsonObject } from "../src/json.ts";
import { createSyncServer, type SyncServer } from "../transport/server.ts";
import {
  createSqliteServerStore,
  openSqliteServerStore,
} from "../transport/server_sqlite.ts";
import {
  AWKWARD_IDS,
  serverRecord,
  shuffled,
  testServerStore,
} from "./_server_store_cases.ts";

testServerStore(
  "sqlite (:memory:)",
  () => Promise.resolve({ store: openSqliteServerStore(":memory:") }),
);

testServerStore("sqlite (file)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sync-server-" });
  const file = `${dir}/store.sqlite`;
  return {
    store: openSqliteServerStore(file),
    reopen: () => openSqliteServerStore(file),
    teardown: () => Deno.remove(dir, { recursive: true }),
  };
}, { persistent: true });

testServerStore("sqlite (createSqliteServerStore)", () => {
  const db = new DatabaseSync(":memory:");
  return Promise.resolve({
    store: createSqliteServerStore(db, { closeDatabase: true }),
  });
});

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
        store: openSqliteServerStore(file),
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
      store: openSqliteServerStore(file),
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
    // write, so "new" (after "gone") may share its instant and "fresh"
    // (before it) moves to the next millisecond; neither goes back an hour.
    const next = await send(server, "PUT", "/todo/new", { json: {} });
    assert.equal(next.body.updated_at, new Date(T0 + 1_000).toISOString());
    const fresh = await send(server, "PUT", "/todo/fresh", { json: {} });
    assert.equal(fresh.body.updated_at, new Date(T0 + 1_001).toISOString());
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
    const store = openSqliteServerStore(file);
    const probe = new DatabaseSync(file);
    try {
      const mode = probe.prepare("PRAGMA journal_mode").get() as {
        journal_mode: string;
      };
      assert.equal(mode.journal_mode, "wal");
      const version = probe.prepare("PRAGMA user_version").get() as {
        user_version: number;
      };
      assert.equal(version.user_version, 2);
    } finally {
      probe.close();
      await store.close();
    }
  });
});

Deno.test("sqlite: a database with another schema version is refused", async () => {
  await withTempDir((dir) => {
    const file = `${dir}/sync.sqlite`;
    const db = new DatabaseSync(file);
    db.exec("PRAGMA user_version = 3");
    db.close();
    assert.throws(() => openSqliteServerStore(file), StorageError);
    // The refused file is left as it was, and closed (removable).
    const check = new DatabaseSync(file);
    const row = check.prepare("PRAGMA user_version").get() as {
      user_version: number;
    };
    check.close();
    assert.equal(row.user_version, 3);
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
  assert.throws(
    () => openSqliteServerStore(":memory:", { busyTimeoutMs: -1 }),
    RangeError,
  );
});

Deno.test("sqlite: pull pages exactly through 1,000 records sharing one updated_at with limit 7", async () => {
  const store = openSqliteServerStore(":memory:");
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
      store: openSqliteServerStore(`${dir}/sync.sqlite`),
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
