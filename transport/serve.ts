/**
 * Runs the reference sync server on an SQLite file: `deno task serve`.
 *
 * ```sh
 * deno task serve --port 8787 --hostname 127.0.0.1 --db ./sync-server.sqlite
 * ```
 *
 * Flags: `--port` (default 8787; 0 picks a free port), `--hostname` (default
 * 127.0.0.1), `--db` (default `./sync-server.sqlite`; `:memory:` keeps
 * nothing). It prints the URL it listens on and stops cleanly on SIGINT or
 * SIGTERM. Invalid flags exit with code 2.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { createSyncServer } from "./server.ts";
import { openSqliteServerStore } from "./server_sqlite.ts";

const USAGE =
  `Usage: deno task serve [--port 8787] [--hostname 127.0.0.1] [--db ./sync-server.sqlite]

  --port      TCP port, 0 for any free port (default 8787)
  --hostname  interface to listen on (default 127.0.0.1)
  --db        SQLite file, or :memory: (default ./sync-server.sqlite)
  --help      show this help`;

interface ServeFlags {
  readonly port: number;
  readonly hostname: string;
  readonly db: string;
  readonly help: boolean;
}

/** Parses the flags; throws a `TypeError` with a message for the user. */
function parseFlags(args: string[]): ServeFlags {
  const { values, positionals } = parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: {
      port: { type: "string", default: "8787" },
      hostname: { type: "string", default: "127.0.0.1" },
      db: { type: "string", default: "./sync-server.sqlite" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (positionals.length > 0) {
    throw new TypeError(
      `Cannot start server as it takes no positional arguments: current value is ${
        JSON.stringify(positionals)
      }`,
    );
  }
  const port = /^\d{1,5}$/.test(values.port) ? Number(values.port) : NaN;
  if (!(port >= 0 && port <= 65535)) {
    throw new TypeError(
      `Cannot start server as '--port' is not an integer from 0 to 65535: current value is ${
        JSON.stringify(values.port)
      }`,
    );
  }
  if (values.hostname === "") {
    throw new TypeError(
      "Cannot start server as '--hostname' is empty: current value is \"\"",
    );
  }
  if (values.db === "") {
    throw new TypeError(
      "Cannot start server as '--db' is empty: current value is \"\"",
    );
  }
  return {
    port,
    hostname: values.hostname,
    db: values.db,
    help: values.help,
  };
}

async function main(args: string[]): Promise<number> {
  let flags: ServeFlags;
  try {
    flags = parseFlags(args);
  } catch (error) {
    console.error(error instanceof Error ? error.message : String(error));
    console.error(USAGE);
    return 2;
  }
  if (flags.help) {
    console.log(USAGE);
    return 0;
  }
  const server = createSyncServer({
    store: openSqliteServerStore(flags.db),
  });
  const http = Deno.serve({
    port: flags.port,
    hostname: flags.hostname,
    onListen({ hostname, port }): void {
      const host = hostname.includes(":") ? `[${hostname}]` : hostname;
      console.log(`Listening on http://${host}:${port}/`);
    },
  }, server.fetch);
  const stop = new Promise<void>((resolve) => {
    Deno.addSignalListener("SIGINT", resolve);
    if (Deno.build.os !== "windows") Deno.addSignalListener("SIGTERM", resolve);
  });
  await Promise.race([stop, http.finished]);
  await http.shutdown();
  await server.close();
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
