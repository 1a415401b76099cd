/**
 * Node smoke test: the reference server on Node's `node:http` (through
 * `server/node.ts`) over an SQLite server store, and two client engines on
 * SQLite storage through `node:sqlite`, syncing over real HTTP until they
 * converge; plus a `GET /live` stream that names a written kind.
 * With `--serve`, it then keeps serving until stdin ends, for the backend
 * kit. `tests/node_test.ts` runs it with Node 22
 * (`--experimental-strip-types`).
 *
 * @module
 */

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { DatabaseSync } from "node:sqlite";
import { SyncEngine } from "../../mod.ts";
import {
  createSqliteStorage,
  openSqliteStorage,
} from "../../storage/sqlite.ts";
import { createRestTransport } from "../../transport/rest.ts";
import { createSyncServer } from "../../server/handler.ts";
import { bearerAuth } from "../../server/auth.ts";
import { openSqliteServerStore } from "../../server/sqlite.ts";
import { serveNode } from "../../server/node.ts";

declare const process: {
  version: string;
  argv: string[];
  stdin: AsyncIterable<unknown>;
};

function check(condition: boolean, message: string): void {
  if (!condition) throw new Error(`node smoke check failed: ${message}`);
}

const dir = await mkdtemp(`${tmpdir()}/node-smoke-`);
/** Two principals, so the backend kit can check tenancy through Node. */
const TOKENS = {
  "node-smoke-alice-token": "alice",
  "node-smoke-bob-token-1": "bob",
};
const server = createSyncServer({
  store: await openSqliteServerStore(`${dir}/server.sqlite`),
  auth: bearerAuth(TOKENS),
});
const token = "node-smoke-alice-token";
const http = await serveNode(server.fetch, { port: 0 });
const baseUrl = `http://127.0.0.1:${http.port}`;
try {
  // A live stream, open before the writes: it must name the kind.
  const live = await fetch(`${baseUrl}/live`, {
    headers: { authorization: `Bearer ${token}` },
  });
  check(live.status === 200, `GET /live is 200: ${live.status}`);
  const reader = live.body!.pipeThrough(new TextDecoderStream()).getReader();
  let heard = "";
  const hinted = (async () => {
    while (!heard.includes("notes")) {
      const { value, done } = await reader.read();
      if (done) return;
      heard += value;
    }
  })();

  const storages = [
    createSqliteStorage(new DatabaseSync(`${dir}/a.sqlite`), {
      closeDatabase: true,
    }),
    await openSqliteStorage(`${dir}/b.sqlite`),
  ];
  const engines = storages.map((storage) =>
    new SyncEngine({
      storage,
      transport: createRestTransport({ baseUrl, token: () => token }),
      // Pages of 7: 40 records cross several page boundaries.
      pageSize: 7,
    })
  );
  const [ea, eb] = engines as [SyncEngine, SyncEngine];
  const ta = ea.table("notes");
  const tb = eb.table("notes");
  for (let index = 0; index < 40; index++) {
    await ta.put({ id: `n${index}`, mood: "ok", energy: index, notes: "" });
  }
  await ea.sync();
  await eb.sync();
  check((await tb.get("n39"))?.energy === 39, "B received A's records");
  await hinted;
  check(heard.includes("event: change"), `a live hint came: ${heard}`);
  await reader.cancel();

  await ta.update("n1", { mood: "great", notes: "node" });
  await tb.update("n1", { energy: 5 });
  await tb.delete("n2");
  await eb.sync();
  await ea.sync();
  await eb.sync();
  const all = async (engine: SyncEngine) =>
    JSON.stringify(
      (await engine.table("notes").list()).sort((x, y) =>
        String(x.id).localeCompare(String(y.id))
      ),
    );
  check(await all(ea) === await all(eb), "both clients agree");
  const merged = await ta.get("n1");
  check(
    merged?.mood === "great" && merged?.notes === "node" &&
      merged?.energy === 5,
    `the conflict merged every field: ${JSON.stringify(merged)}`,
  );
  check((await ta.get("n2")) === undefined, "the delete reached A");
  for (const engine of engines) await engine.close();
  for (const storage of storages) await storage.close();
  console.log(`node sync: converged on Node ${process.version}`);
  if (process.argv.includes("--serve")) {
    // The parent runs the backend kit against this server, then closes
    // stdin to stop it.
    console.log(`node sync: serving ${baseUrl}`);
    for await (const _ of process.stdin) {
      // Nothing is sent: only the end matters.
    }
  }
} finally {
  await http.close();
  await server.close();
  await rm(dir, { recursive: true, force: true });
}
