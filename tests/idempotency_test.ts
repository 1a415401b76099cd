/**
 * Clause 6 end to end, across a restart: the server applies a write, its
 * response is lost on the way back, the app closes, and a new engine over
 * the same storage (the same file, reopened) syncs again. The op goes out
 * again with the same idempotency key, the server answers from its store
 * without applying it a second time, and the client ends with the server's
 * record.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type JsonObject, SyncEngine } from "../mod.ts";
import type { Storage } from "../src/storage.ts";
import { openKvStorage } from "../storage/kv.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { openSqliteStorage } from "../storage/sqlite.ts";
import { createRestTransport } from "../transport/rest.ts";
import { startServer, type TestServer } from "./_harness.ts";

interface Store {
  readonly name: string;
  /** Opens the store of `path`: the same one again on a second call. */
  opener(path: string): { open(): Promise<Storage>; reopens: boolean };
}

const STORES: readonly Store[] = [
  {
    name: "memory",
    opener() {
      // One object for both sessions: only the engine restarts.
      const storage = createMemoryStorage();
      return { open: () => Promise.resolve(storage), reopens: false };
    },
  },
  {
    name: "sqlite",
    opener: (path) => ({
      open: () => openSqliteStorage(`${path}.sqlite`),
      reopens: true,
    }),
  },
  {
    name: "kv",
    opener: (path) => ({
      open: () => openKvStorage(`${path}.kv`),
      reopens: true,
    }),
  },
];

/** What the server did with the writes it received. */
interface Effects {
  /** Per idempotency key: how often the server applied it (not replayed). */
  readonly applied: Map<string, number>;
  /** Per idempotency key: how often it was sent. */
  readonly sent: Map<string, number>;
  /** Per record id: how many writes of it the server applied. */
  readonly records: Map<string, number>;
  /** Stops losing responses; counting goes on. */
  heal(): void;
}

function bump(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

/**
 * Counts effects by idempotency key, and until healed loses every response
 * after the server handled the request: the client sees the connection
 * break mid-body.
 */
function loseResponses(server: TestServer): Effects {
  const applied = new Map<string, number>();
  const sent = new Map<string, number>();
  const records = new Map<string, number>();
  let losing = true;
  server.intercept(async (request, seen, next) => {
    if (seen.method === "GET") return undefined;
    const batch = seen.path === "/batch";
    const ops: { opId: string; id: string }[] = batch
      ? JSON.parse(seen.body).ops
      : [{
        opId: seen.headers.get("idempotency-key") ?? "",
        id: decodeURIComponent(seen.path.split("/")[2] ?? ""),
      }];
    const keys = ops.map((op) => op.opId);
    keys.forEach((key) => bump(sent, key));
    const response = await next(request);
    const body = await response.text();
    if (batch && response.ok) {
      const { results } = JSON.parse(body) as {
        results: { opId: string; status: number; replayed?: boolean }[];
      };
      results.forEach((result, i) => {
        const ok = result.status >= 200 && result.status < 300;
        if (!ok || result.replayed === true) return;
        bump(applied, result.opId);
        bump(records, ops[i]!.id);
      });
    } else if (
      !batch && response.ok &&
      response.headers.get("idempotent-replayed") !== "true"
    ) {
      bump(applied, keys[0]!);
      bump(records, ops[0]!.id);
    }
    if (!losing) {
      return new Response(body, {
        status: response.status,
        headers: response.headers,
      });
    }
    return new Response(
      new ReadableStream({
        start(controller) {
          controller.enqueue(new TextEncoder().encode(body.slice(0, 5)));
          controller.error(new Error("connection lost"));
        },
      }),
      { status: 200, headers: { "content-type": "application/json" } },
    );
  });
  return {
    applied,
    sent,
    records,
    heal() {
      losing = false;
    },
  };
}

/** The server's records of a kind, read straight from the server. */
async function serverRecords(
  server: TestServer,
  kind: string,
): Promise<Map<string, JsonObject>> {
  const response = await server.server.fetch(
    new Request(`${server.url}/${kind}?limit=1000&includeDeleted=true`),
  );
  const page = await response.json() as { items: JsonObject[] };
  return new Map(page.items.map((item) => [item.id as string, item]));
}

for (const store of STORES) {
  for (const batch of [false, true]) {
    Deno.test(`idempotency (${store.name}, batch ${batch}): clause 6, a write whose response was lost is applied once, even by a new engine after a restart`, async () => {
      const dir = await Deno.makeTempDir();
      try {
        await using server = startServer();
        const { open, reopens } = store.opener(`${dir}/client`);
        const transportOptions = {
          baseUrl: server.url,
          batch,
          retry: { attempts: 1 },
          sleep: () => Promise.resolve(),
        };
        let effects: Effects;
        {
          // The first session: one synced record, then two offline writes.
          const storage = await open();
          await using transport = createRestTransport(transportOptions);
          await using engine = new SyncEngine({ storage, transport });
          const todos = engine.table("todos");
          await todos.put({ id: "old", title: "v1" });
          await engine.sync();
          await todos.update("old", { title: "v2" });
          await todos.put({ id: "new", title: "created" });
          effects = loseResponses(server);
          await assert.rejects(engine.sync(), "every response was lost");
          const ops = await engine.outbox.list();
          assert.deepEqual(ops.map((op) => [op.id, op.attempts]), [
            ["old", 1],
            ["new", 1],
          ]);
          assert.deepEqual([...effects.applied.values()], [1, 1]);
          // The app quits here; the network heals.
          if (reopens) await storage.close();
          effects.heal();
        }

        await using storage = await open();
        await using transport = createRestTransport(transportOptions);
        await using engine = new SyncEngine({ storage, transport });
        const todos = engine.table("todos");
        const { stats } = await engine.sync();
        assert.deepEqual(
          Object.fromEntries(effects.records),
          { old: 1, new: 1 },
          "the server applied each write once",
        );
        for (const [key, times] of effects.sent) {
          assert.equal(effects.applied.get(key), 1, `"${key}" applied once`);
          assert.equal(times, 2, `"${key}" was sent again with the same key`);
        }
        assert.equal(effects.sent.size, 2, "no other key was used");
        assert.equal(stats.pushed, 2);
        assert.equal(stats.conflicts, 0, "our own write is not a conflict");
        assert.equal(await engine.outbox.count(), 0);
        const onServer = await serverRecords(server, "todos");
        assert.deepEqual(await todos.get("old"), onServer.get("old"));
        assert.deepEqual(await todos.get("new"), onServer.get("new"));
        assert.equal(onServer.get("old")?.title, "v2");
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    });
  }
}
