/**
 * The reference sync server on Deno KV, deployable to Deno Deploy as is.
 *
 * On Deno Deploy every isolate runs this file against the project's one KV
 * database: the KV server store keeps the pull cursor commit-ordered across
 * isolates and carries `GET /live` hints between them. Locally it listens on
 * `PORT` and opens the KV file at `KV_PATH`, so several processes can share
 * one file the way isolates share Deploy's KV.
 *
 * ```sh
 * SYNC_TOKENS="a-long-secret-token=alice" KV_PATH=./sync.kv PORT=8000 \
 *   deno run --allow-net --allow-env --allow-read --allow-write --unstable-kv \
 *   examples/deploy/server.ts
 * ```
 *
 * Environment:
 * - `SYNC_TOKENS`: `TOKEN=principal` pairs, comma separated (required: each
 *   principal gets its own namespace; `GET /health` needs no token).
 *   `SYNC_INSECURE=1` serves without tokens instead, every request the
 *   principal `"public"`.
 * - `KV_PATH`: the KV file (unset: the default KV, which on Deploy is the
 *   project's database).
 * - `PORT`: the port to listen on locally (default 8000; Deploy ignores it).
 *
 * @module
 */

import { bearerAuth, createSyncServer } from "@offline-first/sync/server";
import { openKvServerStore } from "@offline-first/sync/server/kv";

const tokens = Deno.env.get("SYNC_TOKENS") ?? "";
const insecure = Deno.env.get("SYNC_INSECURE") === "1";
if (tokens.trim() === "" && !insecure) {
  console.error(
    'Cannot start server as SYNC_TOKENS is empty, set TOKEN=principal pairs or SYNC_INSECURE=1: current value is ""',
  );
  Deno.exit(2);
}
const port = Number(Deno.env.get("PORT") ?? "8000");
if (!Number.isInteger(port) || port < 0 || port > 65_535) {
  console.error(
    `Cannot start server as PORT is not an integer from 0 to 65535: current value is ${
      JSON.stringify(Deno.env.get("PORT"))
    }`,
  );
  Deno.exit(2);
}

const server = createSyncServer({
  store: await openKvServerStore(Deno.env.get("KV_PATH") || undefined),
  ...(insecure && tokens.trim() === "" ? {} : { auth: bearerAuth(tokens) }),
});

const http = Deno.serve({
  port,
  onListen({ hostname, port }) {
    const host = hostname.includes(":") ? `[${hostname}]` : hostname;
    console.log(`Listening on http://${host}:${port}/`);
  },
}, server.fetch);

// Locally, stop cleanly on a signal; Deploy stops isolates by itself.
const stop = () => http.shutdown().then(() => server.close());
try {
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
} catch {
  // No signals here (Deno Deploy, Windows for SIGTERM): nothing to do.
}
await http.finished;
