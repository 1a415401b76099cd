/**
 * One server process of the two-process cursor test
 * (`server_kv_processes_test.ts`): the reference server over a KV file, an
 * SQLite file or a Postgres schema, on `127.0.0.1:0`. It prints its port, answers
 * `GET /__stats` with how often a commit lost the race, and stops on stdin's
 * end.
 *
 * Usage: `deno run -A tests/_two_server_child.ts kv|sqlite PATH` or
 * `… postgres URL#SCHEMA`
 *
 * @module
 */

import {
  createSyncServer,
  type ServerStore,
  StaleClockError,
} from "../server/mod.ts";
import { openKvServerStore } from "../server/kv.ts";
import { openSqliteServerStore } from "../server/sqlite.ts";
import { openPostgresServerStore } from "../server/postgres.ts";

const [type, path] = Deno.args;
if (path === undefined) {
  throw new TypeError("Usage: kv|sqlite PATH, or postgres URL#SCHEMA");
}
const inner = type === "kv"
  ? await openKvServerStore(path)
  : type === "postgres"
  ? await openPostgresServerStore(path.slice(0, path.lastIndexOf("#")), {
    schema: path.slice(path.lastIndexOf("#") + 1),
  })
  : await openSqliteServerStore(path);
let stale = 0;
const store: ServerStore = {
  getRecord: (ns, kind, id) => inner.getRecord(ns, kind, id),
  listRecords: (ns, kind, options) => inner.listRecords(ns, kind, options),
  getIdempotency: (ns, key) => inner.getIdempotency(ns, key),
  async commit(writes, guard) {
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
  ...(inner.readClock === undefined
    ? {}
    : { readClock: (ns: string) => inner.readClock!(ns) }),
  ...(inner.changes === undefined
    ? {}
    : { changes: (signal: AbortSignal) => inner.changes!(signal) }),
  close: () => inner.close(),
  [Symbol.asyncDispose]: () => inner.close(),
};
const server = createSyncServer({ store });
const http = Deno.serve(
  {
    hostname: "127.0.0.1",
    port: 0,
    onListen({ port }) {
      console.log(port);
    },
  },
  (request) =>
    new URL(request.url).pathname === "/__stats"
      ? Response.json({ stale })
      : server.fetch(request),
);
// The parent closes stdin to stop the process.
for await (const _ of Deno.stdin.readable) {
  // Nothing is sent; the loop ends when stdin closes.
}
await http.shutdown();
await server.close();
