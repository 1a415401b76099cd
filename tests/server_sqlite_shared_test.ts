import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import {
  createSyncServer,
  type ServerStore,
  StaleClockError,
} from "../server/mod.ts";
import { openSqliteServerStore } from "../server/sqlite.ts";
import { MIGRATE_1_TO_2 } from "../server/_sqlite_schema.ts";
import { entry, put, serverRecord } from "../server/_conformance_kit.ts";
import { withTimeout } from "./_timeout.ts";

// The SQLite server store as a shared store: two connections to one file
// (as two server processes hold them) guard their commits by the clock row
// and its version, re-checked inside BEGIN IMMEDIATE.

const ORIGIN = "http://sync.test";
const T0 = Date.UTC(2025, 2, 1, 10, 0, 0);

async function withFile(
  fn: (file: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sync-shared-" });
  try {
    await fn(`${dir}/sync.sqlite`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test(
  "sqlite shared: of two connections that read one clock, the second guarded commit is stale and writes nothing",
  withTimeout(10_000, async () => {
    await withFile(async (file) => {
      await using a = await openSqliteServerStore(file);
      await using b = await openSqliteServerStore(file);
      await a.commit([put("ns", serverRecord("todo", "0", T0))]);
      // Both read the same clock, as two processes starting a write do.
      const seenByA = await a.readClock!("ns");
      const seenByB = await b.readClock!("ns");
      assert.deepEqual(seenByA, seenByB);
      assert.deepEqual(seenByA.last, { updatedAt: T0, id: "0" });
      await b.commit([put("ns", serverRecord("todo", "b", T0 + 1))], {
        namespace: "ns",
        expect: seenByB,
      });
      const moved = await a.readClock!("ns");
      assert.notEqual(moved.version, seenByA.version);
      assert.deepEqual(moved.last, { updatedAt: T0 + 1, id: "b" });
      // A computed its write from the clock before B's commit: stale.
      await assert.rejects(
        a.commit([
          put("ns", serverRecord("todo", "a", T0 + 1)),
          { type: "idempotency", namespace: "ns", entry: entry("k", T0 + 9) },
        ], { namespace: "ns", expect: seenByA }),
        StaleClockError,
      );
      assert.equal(await b.getRecord("ns", "todo", "a"), null);
      assert.equal(await b.getIdempotency("ns", "k"), null);
      assert.deepEqual(await b.readClock!("ns"), moved);
      // Guarded by the fresh clock, it applies.
      await a.commit([put("ns", serverRecord("todo", "a", T0 + 2))], {
        namespace: "ns",
        expect: moved,
      });
      assert.deepEqual((await b.readClock!("ns")).last, {
        updatedAt: T0 + 2,
        id: "a",
      });
    });
  }),
);

/** A store whose commits wait at a gate and count stale ones. */
function gated(inner: ServerStore): {
  store: ServerStore;
  stale: () => number;
  hold: () => { reached: Promise<void>; release: () => void };
} {
  let stale = 0;
  let gate: { reached: () => void; wait: Promise<void> } | null = null;
  const store: ServerStore = {
    getRecord: (ns, kind, id) => inner.getRecord(ns, kind, id),
    listRecords: (ns, kind, options) => inner.listRecords(ns, kind, options),
    getIdempotency: (ns, key) => inner.getIdempotency(ns, key),
    async commit(writes, guard) {
      if (gate !== null) {
        const { reached, wait } = gate;
        gate = null;
        reached();
        await wait;
      }
      try {
        return await inner.commit(writes, guard);
      } catch (error) {
        if (error instanceof StaleClockError) stale++;
        throw error;
      }
    },
    purge: (options) => inner.purge(options),
    trimIdempotency: (ns, options) => inner.trimIdempotency(ns, options),
    lastWrite: (ns) => inner.lastWrite(ns),
    readClock: (ns) => inner.readClock!(ns),
    close: () => inner.close(),
    [Symbol.asyncDispose]: () => inner.close(),
  };
  return {
    store,
    stale: () => stale,
    hold() {
      const reached = Promise.withResolvers<void>();
      const wait = Promise.withResolvers<void>();
      gate = { reached: reached.resolve, wait: wait.promise };
      return { reached: reached.promise, release: wait.resolve };
    },
  };
}

Deno.test(
  "sqlite shared: two servers on one file; a write that lost the race runs again and lands after the other's",
  withTimeout(10_000, async () => {
    await withFile(async (file) => {
      const a = gated(await openSqliteServerStore(file));
      await using serverA = createSyncServer({ store: a.store, now: () => T0 });
      await using serverB = createSyncServer({
        store: await openSqliteServerStore(file),
        now: () => T0,
      });
      const putVia = (
        server: typeof serverA,
        id: string,
        key: string,
      ) =>
        server.fetch(
          new Request(`${ORIGIN}/todo/${id}`, {
            method: "PUT",
            headers: { "idempotency-key": key },
            body: "{}",
          }),
        );
      // A reads the clock and computes its write, then waits before its
      // commit; B commits meanwhile (at T0, the same millisecond).
      const held = a.hold();
      const first = putVia(serverA, "z", "op-a");
      await held.reached;
      const second = await putVia(serverB, "y", "op-b");
      assert.equal(second.status, 201);
      const atB = (await second.json()).updated_at;
      held.release();
      const response = await first;
      assert.equal(response.status, 201);
      const atA = (await response.json()).updated_at;
      assert.equal(a.stale(), 1);
      assert.equal(atB, new Date(T0).toISOString());
      // Re-run from fresh reads: after B's record, so a reader whose cursor
      // is at B's record still gets it.
      assert.equal(atA, new Date(T0 + 1).toISOString());
      const page = await (await serverB.fetch(new Request(`${ORIGIN}/todo`)))
        .json();
      assert.deepEqual(
        page.items.map((item: { id: string }) => item.id),
        ["y", "z"],
      );
      // Applied once: the key replays the stored answer.
      const replay = await putVia(serverB, "z", "op-a");
      assert.equal(replay.headers.get("idempotent-replayed"), "true");
      assert.equal((await replay.json()).updated_at, atA);
    });
  }),
);

Deno.test(
  "sqlite shared: another connection holding the write lock delays a write, never fails it or applies it twice",
  withTimeout(10_000, async () => {
    await withFile(async (file) => {
      // No busy wait at all: every BEGIN IMMEDIATE under the lock fails.
      const a = gated(await openSqliteServerStore(file, { busyTimeoutMs: 0 }));
      await using server = createSyncServer({ store: a.store });
      const other = new DatabaseSync(file);
      try {
        other.exec("BEGIN IMMEDIATE");
        const response = server.fetch(
          new Request(`${ORIGIN}/todo/1`, {
            method: "PUT",
            headers: { "idempotency-key": "op-1" },
            body: "{}",
          }),
        );
        let settled = false;
        response.finally(() => settled = true).catch(() => {});
        // The handler backs off and runs the write again (a write answered
        // meanwhile, e.g. 500, fails the status check below).
        while (a.stale() < 2 && !settled) {
          await new Promise((resolve) => setTimeout(resolve, 1));
        }
        other.exec("COMMIT");
        assert.equal((await response).status, 201);
        const page = await (await server.fetch(new Request(`${ORIGIN}/todo`)))
          .json();
        assert.deepEqual(
          page.items.map((item: { id: string }) => item.id),
          ["1"],
        );
        const clock = await a.store.readClock!("public");
        // One commit moved the clock's version: applied once.
        assert.equal(clock.version, "1");
      } finally {
        other.close();
      }
    });
  }),
);

/** A schema version 2 file: version 1's layout, migrated by the v1 → v2 step. */
const V2_FILE = `
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
${MIGRATE_1_TO_2}
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

Deno.test(
  "sqlite shared: a schema version 2 file upgrades to version 3, keeping each clock and giving it a version",
  withTimeout(10_000, async () => {
    await withFile(async (file) => {
      {
        const db = new DatabaseSync(file);
        db.exec(V2_FILE);
        const record = serverRecord("todo", "b", T0 + 5);
        db.prepare(
          "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)",
        ).run(
          utf16("alice"),
          utf16("todo"),
          utf16("b"),
          T0 + 5,
          null,
          JSON.stringify(record.data).length,
          JSON.stringify(record.data),
        );
        const clock = db.prepare("INSERT INTO clocks VALUES (?, ?, ?)");
        clock.run(utf16("alice"), T0 + 5, utf16("b"));
        clock.run(utf16("bob"), T0 + 8, null);
        const version = db.prepare("PRAGMA user_version").get() as {
          user_version: number;
        };
        assert.equal(version.user_version, 2);
        db.close();
      }
      // The first connection migrates; the second finds it migrated.
      await using a = await openSqliteServerStore(file);
      await using b = await openSqliteServerStore(file);
      const alice = await a.readClock!("alice");
      assert.deepEqual(alice.last, { updatedAt: T0 + 5, id: "b" });
      assert.notEqual(alice.version, null);
      assert.deepEqual((await b.readClock!("bob")).last, {
        updatedAt: T0 + 8,
        id: null,
      });
      assert.deepEqual(await b.readClock!("carol"), {
        last: null,
        version: null,
      });
      assert.deepEqual(
        (await b.getRecord("alice", "todo", "b"))?.updatedAt,
        T0 + 5,
      );
      // A commit of entries alone creates the clock row with no last write.
      await b.commit(
        [{ type: "idempotency", namespace: "carol", entry: entry("k", 1) }],
        { namespace: "carol", expect: { last: null, version: null } },
      );
      const carol = await a.readClock!("carol");
      assert.equal(carol.last, null);
      assert.notEqual(carol.version, null);
      assert.equal(await a.lastWrite("carol"), null);
      const probe = new DatabaseSync(file);
      const version = probe.prepare("PRAGMA user_version").get() as {
        user_version: number;
      };
      probe.close();
      assert.equal(version.user_version, 3);
    });
  }),
);
