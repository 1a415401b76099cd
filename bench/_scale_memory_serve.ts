/**
 * The memory-store server of `bench/server_scale.ts`: `server/serve.ts`
 * serves SQLite, KV and Postgres only, so this serves the reference server
 * over `createMemoryServerStore()` (the default store of
 * `createSyncServer()`, and the one `bench/_drain.ts` drains to) with the
 * same `--port`, `--hostname` and `--token TOKEN=principal` flags and the
 * same `Listening on` line, until SIGTERM or SIGINT; `--root` serves another
 * checkout's server.
 *
 * @module
 */

import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    port: { type: "string", default: "0" },
    hostname: { type: "string", default: "127.0.0.1" },
    token: { type: "string", multiple: true },
    // The checkout whose server runs (`--base` of server_scale.ts).
    root: { type: "string", default: new URL("../", import.meta.url).href },
  },
});
const root = new URL(values.root);
const { bearerAuth, createSyncServer } = await import(
  new URL("server/mod.ts", root).href
) as typeof import("../server/mod.ts");
const { createMemoryServerStore } = await import(
  new URL("server/memory.ts", root).href
) as typeof import("../server/memory.ts");
const tokens = (values.token ?? []).join(",");
const server = createSyncServer({
  store: createMemoryServerStore(),
  ...(tokens === "" ? {} : { auth: bearerAuth(tokens) }),
});
const http = Deno.serve({
  port: Number(values.port),
  hostname: values.hostname,
  onListen({ hostname, port }): void {
    console.log(`Listening on http://${hostname}:${port}/`);
  },
}, server.fetch);
const stop = new Promise<void>((resolve) => {
  Deno.addSignalListener("SIGINT", resolve);
  Deno.addSignalListener("SIGTERM", resolve);
});
await Promise.race([stop, http.finished]);
await http.shutdown();
await server.close();
Deno.exit(0);
