/**
 * Runs the reference sync server on an SQLite file: `deno task serve`.
 *
 * ```sh
 * SYNC_TOKENS="s3cret-alice=alice,s3cret-bob=bob" deno task serve --port 8787
 * ```
 *
 * Flags: `--port` (default 8787; 0 picks a free port), `--hostname` (default
 * 127.0.0.1), `--db` (default `./sync-server.sqlite`; `:memory:` keeps
 * nothing), `--kv PATH` (serve on a Deno KV file instead, which several
 * server processes may share), `--postgres URL` (serve on Postgres instead,
 * which any number of server processes may share; also `DATABASE_URL`,
 * with `--postgres-schema NAME`), `--token TOKEN=principal` (repeatable; also
 * `SYNC_TOKENS`, comma separated) and `--insecure`.
 *
 * With tokens, every request but `GET /health` needs `Authorization: Bearer
 * TOKEN` and lives in its principal's namespace; without, every request is
 * the principal `"public"`, which is only allowed on a loopback address
 * unless `--insecure` says otherwise. It prints the URL it listens on and
 * stops cleanly on SIGINT or SIGTERM. Invalid flags, and a non-loopback bind
 * without auth, exit with code 2.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { bearerAuth, parseBearerTokens } from "./auth.ts";
import { createSyncServer } from "./handler.ts";
import { openSqliteServerStore } from "./sqlite.ts";
import { openKvServerStore } from "./kv.ts";
import type { ServerStore } from "./store.ts";

const USAGE = `Usage: deno task serve [--port 8787] [--hostname 127.0.0.1]
                        [--db ./sync-server.sqlite | --kv PATH | --postgres URL [--postgres-schema NAME]]
                        [--token TOKEN=principal ...] [--insecure]

  --port      TCP port, 0 for any free port (default 8787)
  --hostname  interface to listen on (default 127.0.0.1, loopback only)
  --db        SQLite file, or :memory: (default ./sync-server.sqlite)
  --kv        Deno KV file instead of SQLite; several server processes may
              serve one KV file at once
  --postgres  a postgres:// URL to serve on instead of SQLite; any number of
              server processes may serve one database at once (prefer
              DATABASE_URL for a URL with a password: flags show in the
              process list; --postgres "" takes it from there)
  --postgres-schema
              the schema that holds the tables, created on first start
              (default offline_first_sync)
  --token     a bearer token and the principal it stands for; repeatable.
              SYNC_TOKENS="TOKEN=principal,TOKEN=principal" adds more
              (prefer it: flags show in the process list)
  --insecure  serve without tokens on a non-loopback address
  --help      show this help`;

/** What the flags and the environment say. */
interface ServeFlags {
  readonly port: number;
  readonly hostname: string;
  readonly db: string;
  /** The KV file to serve on instead of `db`, if any. */
  readonly kv: string | undefined;
  /** The Postgres URL to serve on instead of `db`, if any. */
  readonly postgres: string | undefined;
  /** The Postgres schema. */
  readonly postgresSchema: string | undefined;
  /** The tokens and the principals they stand for. */
  readonly tokens: readonly [token: string, principal: string][];
  readonly insecure: boolean;
  readonly help: boolean;
}

/** A token shorter than this is accepted with a warning. */
const WEAK_TOKEN_LENGTH = 16;

/**
 * Parses the flags and `SYNC_TOKENS`; throws a `TypeError` with a message
 * for the user.
 */
function parseFlags(
  args: string[],
  envTokens: string,
  envDatabaseUrl: string,
): ServeFlags {
  const { values, positionals } = parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: {
      port: { type: "string", default: "8787" },
      hostname: { type: "string", default: "127.0.0.1" },
      db: { type: "string", default: "./sync-server.sqlite" },
      kv: { type: "string" },
      postgres: { type: "string" },
      "postgres-schema": { type: "string" },
      token: { type: "string", multiple: true, default: [] },
      insecure: { type: "boolean", default: false },
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
  if (values.kv === "") {
    throw new TypeError(
      "Cannot start server as '--kv' is empty: current value is \"\"",
    );
  }
  let postgres = values.postgres;
  if (postgres === "") postgres = envDatabaseUrl;
  if (postgres === "") {
    throw new TypeError(
      "Cannot start server as '--postgres' is empty and DATABASE_URL is unset: current value is \"\"",
    );
  }
  if (postgres !== undefined && values.kv !== undefined) {
    throw new TypeError(
      "Cannot start server as '--kv' and '--postgres' are both given: current value is both",
    );
  }
  if (values["postgres-schema"] !== undefined && postgres === undefined) {
    throw new TypeError(
      "Cannot start server as '--postgres-schema' is given without '--postgres': current value is " +
        JSON.stringify(values["postgres-schema"]),
    );
  }
  if (values.db === "") {
    throw new TypeError(
      "Cannot start server as '--db' is empty: current value is \"\"",
    );
  }
  const pairs = [
    ...values.token,
    ...envTokens.split(",").map((pair) => pair.trim()).filter((pair) =>
      pair !== ""
    ),
  ];
  // Split at the last `=` (a token may end in `=`); bearerAuth's table
  // checks every pair and refuses a token given twice.
  const tokens = parseBearerTokens(pairs.map((pair) => {
    const at = pair.lastIndexOf("=");
    // Without `=` nothing is shown back: the text may be a pasted token.
    return at < 0
      ? ["", ""] as const
      : [pair.slice(0, at), pair.slice(at + 1)] as const;
  }));
  for (const [token, principal] of tokens) {
    if (token.length < WEAK_TOKEN_LENGTH) {
      console.error(
        `Warning: the token for ${
          JSON.stringify(principal)
        } is shorter than ${WEAK_TOKEN_LENGTH} characters`,
      );
    }
  }
  return {
    port,
    hostname: values.hostname,
    db: values.db,
    kv: values.kv,
    postgres,
    postgresSchema: values["postgres-schema"],
    tokens,
    insecure: values.insecure,
    help: values.help,
  };
}

/** Whether a hostname only reaches this machine. */
function isLoopback(hostname: string): boolean {
  const host = hostname.toLowerCase().replace(/^\[(.*)\]$/, "$1");
  return host === "localhost" || host === "::1" ||
    host === "0:0:0:0:0:0:0:1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

function env(variable: string): string {
  const state = Deno.permissions.querySync({ name: "env", variable }).state;
  return state === "granted" ? Deno.env.get(variable) ?? "" : "";
}

/** Opens the store the flags name; the Postgres driver only when asked. */
async function openStore(flags: ServeFlags): Promise<ServerStore> {
  if (flags.postgres !== undefined) {
    const { openPostgresServerStore } = await import("./postgres.ts");
    return await openPostgresServerStore(
      flags.postgres,
      flags.postgresSchema === undefined
        ? {}
        : { schema: flags.postgresSchema },
    );
  }
  return flags.kv === undefined
    ? await openSqliteServerStore(flags.db)
    : await openKvServerStore(flags.kv);
}

async function main(args: string[]): Promise<number> {
  let flags: ServeFlags;
  try {
    flags = parseFlags(args, env("SYNC_TOKENS"), env("DATABASE_URL"));
  } catch (error) {
    console.error(error instanceof Error ? error.message : String(error));
    console.error(USAGE);
    return 2;
  }
  if (flags.help) {
    console.log(USAGE);
    return 0;
  }
  const auth = flags.tokens.length > 0;
  if (!auth && !isLoopback(flags.hostname) && !flags.insecure) {
    console.error(
      `Cannot start server as '--hostname' is not a loopback address and no token is given, pass --token TOKEN=principal (or SYNC_TOKENS), or --insecure to serve without auth: current value is ${
        JSON.stringify(flags.hostname)
      }`,
    );
    return 2;
  }
  let store: ServerStore;
  try {
    store = await openStore(flags);
  } catch (error) {
    console.error(error instanceof Error ? error.message : String(error));
    return 1;
  }
  const server = createSyncServer({
    store,
    ...(auth ? { auth: bearerAuth(flags.tokens) } : {}),
  });
  const http = Deno.serve({
    port: flags.port,
    hostname: flags.hostname,
    onListen({ hostname, port }): void {
      const host = hostname.includes(":") ? `[${hostname}]` : hostname;
      console.log(`Listening on http://${host}:${port}/`);
      console.log(
        auth
          ? `Auth: bearer tokens for ${
            [...new Set(flags.tokens.map(([, principal]) => principal))].join(
              ", ",
            )
          }`
          : 'Auth: none, every request is the principal "public"',
      );
      if (!auth && !isLoopback(flags.hostname)) {
        console.error(
          "Warning: serving without auth on a non-loopback address (--insecure)",
        );
      }
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
