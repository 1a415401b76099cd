/**
 * Bun smoke test: two clients sync through the reference server, on the
 * memory storage and on SQLite (Bun's `bun:sqlite` driver and `node:sqlite`),
 * importing the package as a Bun user who ran `bunx jsr add
 * @offline-first/sync` would. `tests/bun_test.ts` installs it that way in a
 * temporary folder and runs this file with `bun run`.
 *
 * @module
 */

import { type Storage, SyncEngine } from "@offline-first/sync";
import { createMemoryStorage } from "@offline-first/sync/storage/memory";
import {
  createSqliteStorage,
  openSqliteStorage,
} from "@offline-first/sync/storage/sqlite";
import { createRestTransport } from "@offline-first/sync/transport/rest";
import { createSyncServer } from "@offline-first/sync/server";

/** The part of Bun's API this script uses. */
declare const Bun: {
  version: string;
  serve(options: {
    port: number;
    hostname: string;
    fetch: (request: Request) => Promise<Response>;
  }): { port: number; stop(closeActive?: boolean): void };
};

function check(condition: boolean, message: string): void {
  if (!condition) throw new Error(`smoke check failed: ${message}`);
}

const server = createSyncServer();
const http = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: server.fetch });
const baseUrl = `http://127.0.0.1:${http.port}`;
const dir = await (await import("node:fs/promises")).mkdtemp(
  `${(await import("node:os")).tmpdir()}/bun-smoke-`,
);

async function pair(name: string, a: Storage, b: Storage): Promise<void> {
  const engines = [a, b].map((storage) =>
    new SyncEngine({ storage, transport: createRestTransport({ baseUrl }) })
  );
  const [ea, eb] = engines as [SyncEngine, SyncEngine];
  const kind = `notes_${name}`;
  const ta = ea.table(kind);
  const tb = eb.table(kind);
  await ta.put({ id: "n1", mood: "ok", energy: 3, notes: "" });
  await ea.sync();
  await eb.sync();
  check((await tb.get("n1"))?.mood === "ok", `${name}: B received A's record`);
  await ta.update("n1", { mood: "great", notes: "bun" });
  await tb.update("n1", { energy: 5 });
  await eb.sync();
  await ea.sync();
  await eb.sync();
  const fromA = await ta.get("n1");
  const fromB = await tb.get("n1");
  check(
    JSON.stringify(fromA) === JSON.stringify(fromB),
    `${name}: both clients agree`,
  );
  check(
    fromA?.mood === "great" && fromA?.notes === "bun" && fromA?.energy === 5,
    `${name}: the conflict merged every field`,
  );
  await ta.delete("n1");
  await ea.sync();
  await eb.sync();
  check((await tb.get("n1")) === undefined, `${name}: the delete reached B`);
  for (const engine of engines) await engine.close();
  await a.close();
  await b.close();
  console.log(`bun smoke ${name}: ok`);
}

try {
  await pair("memory", createMemoryStorage(), createMemoryStorage());
  // A variable specifier: Deno type-checks this file and knows no bun:sqlite.
  const bunSqlite = "bun:sqlite";
  const { Database } = await import(bunSqlite);
  await pair(
    "sqlite",
    createSqliteStorage(new Database(`${dir}/a.sqlite`), {
      closeDatabase: true,
    }),
    await openSqliteStorage(`${dir}/b.sqlite`),
  );
  console.log(`bun smoke: all ok on Bun ${Bun.version}`);
} finally {
  http.stop(true);
  await server.close();
  await (await import("node:fs/promises")).rm(dir, {
    recursive: true,
    force: true,
  });
}
