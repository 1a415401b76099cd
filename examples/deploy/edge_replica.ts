/**
 * An edge worker that keeps a Deno KV replica of an upstream sync server
 * and serves reads from it: on Deno Deploy each region reads its own KV
 * copy in a millisecond instead of crossing the world to the upstream.
 *
 * The replica is an ordinary sync client whose local store is KV. It pulls
 * on start, whenever the upstream's live hints say something changed, and
 * on `Deno.cron` (a safety net that survives idle isolates). Many isolates
 * share one KV database, so they elect one syncer with a lease in the store
 * (`shared`); the others serve reads, and a cron run on one of them asks the
 * syncer to sync.
 *
 * ```sh
 * UPSTREAM_URL=https://sync.example.com UPSTREAM_TOKEN=... KV_PATH=./replica.kv \
 *   deno run --allow-net --allow-env --allow-read --allow-write \
 *   --unstable-kv --unstable-cron examples/deploy/edge_replica.ts
 * ```
 *
 * Environment:
 * - `UPSTREAM_URL` (required): the sync server to replicate.
 * - `UPSTREAM_TOKEN`: its bearer token (the replica sees that principal's
 *   records).
 * - `REPLICA_KINDS`: the tables to replicate, comma separated (default
 *   `todos`).
 * - `KV_PATH`: the KV file (unset: the default KV, Deploy's database).
 * - `PORT`: the port to listen on locally (default 8000; Deploy ignores it).
 * - `REPLICA_LEASE_MS`: how long the syncing isolate's lease lasts without
 *   renewal, so how soon another takes over when it dies (default 10000).
 * - `SYNC_CRON`: the cron schedule of the safety-net sync (default every
 *   minute).
 *
 * Routes: `GET /health` (the engine's status: connection, live hints,
 * role), `GET /{kind}` (every record
 * of a replicated table, from KV), `GET /{kind}/{id}` (one record, or 404).
 *
 * @module
 */

import { SyncEngine } from "@offline-first/sync";
import { openKvStorage } from "@offline-first/sync/storage/kv";
import { createRestTransport } from "@offline-first/sync/transport/rest";

function fail(message: string): never {
  console.error(message);
  Deno.exit(2);
}

const upstream = Deno.env.get("UPSTREAM_URL") ?? "";
if (!URL.canParse(upstream)) {
  fail(
    `Cannot start replica as UPSTREAM_URL is not a URL: current value is ${
      JSON.stringify(upstream)
    }`,
  );
}
const token = Deno.env.get("UPSTREAM_TOKEN") ?? "";
const kinds = (Deno.env.get("REPLICA_KINDS") ?? "todos").split(",")
  .map((kind) => kind.trim()).filter((kind) => kind !== "");
const port = Number(Deno.env.get("PORT") ?? "8000");
if (!Number.isInteger(port) || port < 0 || port > 65_535) {
  fail(
    `Cannot start replica as PORT is not an integer from 0 to 65535: current value is ${
      JSON.stringify(Deno.env.get("PORT"))
    }`,
  );
}

const leaseMs = Number(Deno.env.get("REPLICA_LEASE_MS") ?? "10000");
if (!Number.isInteger(leaseMs) || leaseMs < 100 || leaseMs > 600_000) {
  fail(
    `Cannot start replica as REPLICA_LEASE_MS is not an integer from 100 to 600000: current value is ${
      JSON.stringify(Deno.env.get("REPLICA_LEASE_MS"))
    }`,
  );
}

const storage = await openKvStorage(Deno.env.get("KV_PATH") || undefined, {
  prefix: ["edge-replica"],
});
const transport = createRestTransport({
  baseUrl: upstream,
  ...(token === "" ? {} : { token: () => token }),
});
const engine = new SyncEngine({
  storage,
  transport,
  // A replica only reads: the upstream is the truth.
  strategy: "serverWins",
  // Every isolate on this KV database runs this file: one of them syncs
  // (the lease holder), the others serve reads and take over when it goes.
  shared: { leaseMs, pollMs: Math.min(1_000, Math.floor(leaseMs / 3)) },
});
const tables = new Map(kinds.map((kind) => [kind, engine.table(kind)]));
engine.on("error", (event) => {
  console.error(`sync error (${event.error.category}): ${event.error.message}`);
});

// The safety net: a pull every minute even when no hint arrives.
Deno.cron(
  "edge replica sync",
  Deno.env.get("SYNC_CRON") ?? "* * * * *",
  async () => {
    await engine.sync().catch(() => {
      // Reported through the `error` event.
    });
  },
);
// Live hints from the upstream pull each change about when it happens; the
// interval and the cron job are the safety net for lost hints.
engine.startAuto({ intervalMs: 60_000, live: true });

const http = Deno.serve({
  port,
  onListen({ hostname, port }) {
    const host = hostname.includes(":") ? `[${hostname}]` : hostname;
    console.log(`Listening on http://${host}:${port}/`);
  },
}, async (request) => {
  if (request.method !== "GET") {
    return Response.json({ error: "read_only" }, { status: 405 });
  }
  const segments = new URL(request.url).pathname.split("/").filter((part) =>
    part !== ""
  ).map(decodeURIComponent);
  if (segments.length === 1 && segments[0] === "health") {
    const { connection, phase, live, role, lastSyncedAt } = engine.status;
    return Response.json({
      status: "ok",
      sync: { connection, phase, live, role, lastSyncedAt },
    });
  }
  const table = segments[0] === undefined ? undefined : tables.get(segments[0]);
  if (table === undefined || segments.length > 2) {
    return Response.json({ error: "not_found" }, { status: 404 });
  }
  if (segments.length === 1) {
    return Response.json({ items: await table.list() });
  }
  const record = await table.get(segments[1]!);
  return record === undefined
    ? Response.json({ error: "not_found" }, { status: 404 })
    : Response.json(record);
});

const stop = async () => {
  await http.shutdown();
  await engine.close();
  await transport.close();
  await storage.close();
  // The cron job keeps the process alive: leave explicitly.
  Deno.exit(0);
};
try {
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
} catch {
  // No signals here (Deno Deploy): nothing to do.
}
await http.finished;
