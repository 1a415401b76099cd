/**
 * The server setups of `bench/server_scale.ts`: real `server/serve.ts`
 * processes on `:memory:` SQLite, an SQLite file, a KV file, or one Postgres
 * database shared by 1, 2 or 4 processes (a fresh schema per setup, dropped
 * after). Every wait is bounded; `close()` stops the processes and removes
 * what the setup created.
 *
 * @module
 */

import postgres from "postgres";

/** The database the Postgres setups use. */
export const DATABASE_URL: string = Deno.env.get("DATABASE_URL") ??
  "postgres://root@127.0.0.1:5432/test";

/**
 * Which store a setup serves on: `memory` is SQLite `:memory:` through
 * `server/serve.ts`, `memory-store` the reference server's own memory store
 * (`createMemoryServerStore()`, through `_scale_memory_serve.ts`).
 */
export type StoreKind =
  | "memory"
  | "memory-store"
  | "sqlite"
  | "kv"
  | "postgres";

/** One setup of the benchmark. */
export interface SetupSpec {
  /** The label of its rows. */
  readonly label: string;
  readonly store: StoreKind;
  /** How many server processes share the store. */
  readonly processes: number;
  /**
   * The checkout whose server runs (a directory URL ending in `/`); this
   * one when absent. `--base` runs an older checkout beside it.
   */
  readonly root?: URL;
}

/** The running servers of one setup. */
export interface Setup extends AsyncDisposable {
  readonly spec: SetupSpec;
  /** The base URL of each process, without the trailing `/`. */
  readonly urls: readonly string[];
}

/** The setups in their table order; the SQLite file one is the baseline. */
export const SETUPS: readonly SetupSpec[] = [
  { label: "SQLite file, 1 process", store: "sqlite", processes: 1 },
  {
    label: "memory (SQLite :memory:), 1 process",
    store: "memory",
    processes: 1,
  },
  {
    label: "memory store, 1 process",
    store: "memory-store",
    processes: 1,
  },
  { label: "KV file, 1 process", store: "kv", processes: 1 },
  { label: "Postgres, 1 process", store: "postgres", processes: 1 },
  { label: "Postgres, 2 processes", store: "postgres", processes: 2 },
  { label: "Postgres, 4 processes", store: "postgres", processes: 4 },
];

/**
 * Why Postgres cannot be reached at {@linkcode DATABASE_URL}, or `null`
 * when it answers.
 */
export async function probePostgres(): Promise<string | null> {
  const sql = postgres(DATABASE_URL, {
    max: 1,
    connect_timeout: 3,
    onnotice: () => {},
  });
  try {
    await sql`SELECT 1`;
    return null;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  } finally {
    await sql.end({ timeout: 0 }).catch(() => {});
  }
}

async function dropSchema(schema: string): Promise<void> {
  const sql = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

const HERE = new URL("../", import.meta.url);
const SERVE_MEMORY = new URL("./_scale_memory_serve.ts", import.meta.url);

/** Every `serve.ts` process running, for {@linkcode killAll}. */
const running = new Set<Deno.ChildProcess>();

/** Kills every server process still running (on SIGINT or SIGTERM). */
export function killAll(): void {
  for (const child of running) {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }
}

/** A started `serve.ts` process. */
interface Proc {
  readonly child: Deno.ChildProcess;
  readonly url: string;
  stop(): Promise<void>;
}

/** Starts one `serve.ts` and waits (bounded) for its `Listening on` line. */
async function startServe(
  args: readonly string[],
  script: URL,
): Promise<Proc> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script.pathname, "--port", "0", ...args],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  running.add(child);
  child.status.finally(() => running.delete(child));
  let printed = "";
  let errors = "";
  const drain = async (
    stream: ReadableStream<Uint8Array>,
    sink: (text: string) => void,
  ) => {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      sink(text);
    }
  };
  let found: (url: string) => void = () => {};
  const urlFound = new Promise<string>((resolve) => found = resolve);
  const look = () => {
    const match = /Listening on (http:\/\/\S+?)\/?\s/.exec(printed);
    if (match !== null) found(match[1]!);
  };
  const drained = Promise.all([
    drain(child.stdout, (text) => {
      printed += text;
      look();
    }),
    drain(child.stderr, (text) => errors += text),
  ]).catch(() => {});
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`serve.ts printed no URL in 30 s: ${errors}`)),
      30_000,
    );
  });
  const exited = child.status.then((status) => {
    throw new Error(
      `serve.ts exited with code ${status.code} before listening: ${errors}`,
    );
  });
  try {
    const url = await Promise.race([urlFound, timeout, exited]);
    return {
      child,
      url,
      async stop() {
        try {
          child.kill("SIGTERM");
        } catch { /* already gone */ }
        const killer = setTimeout(() => {
          try {
            child.kill("SIGKILL");
          } catch { /* already gone */ }
        }, 5_000);
        await child.status;
        clearTimeout(killer);
        await drained;
      },
    };
  } catch (error) {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await child.status;
    await drained;
    throw error;
  } finally {
    clearTimeout(timer);
    exited.catch(() => {});
  }
}

/**
 * Starts the processes of one setup.
 *
 * @param spec The setup.
 * @param tokenArgs `--token TOKEN=principal` flags for every process.
 */
export async function startSetup(
  spec: SetupSpec,
  tokenArgs: readonly string[],
): Promise<Setup> {
  const dir = await Deno.makeTempDir({ prefix: "server-scale-" });
  const schema = `t_${Date.now().toString(36)}_${
    crypto.randomUUID().replaceAll("-", "").slice(0, 12)
  }`;
  let storeArgs: string[];
  switch (spec.store) {
    case "memory":
      storeArgs = ["--db", ":memory:"];
      break;
    case "memory-store":
      storeArgs = ["--root", (spec.root ?? HERE).href];
      break;
    case "sqlite":
      storeArgs = ["--db", `${dir}/sync.sqlite`];
      break;
    case "kv":
      storeArgs = ["--kv", `${dir}/sync.kv`];
      break;
    case "postgres":
      storeArgs = ["--postgres", DATABASE_URL, "--postgres-schema", schema];
      break;
  }
  const procs: Proc[] = [];
  const close = async () => {
    await Promise.all(procs.map((proc) => proc.stop()));
    if (spec.store === "postgres") await dropSchema(schema).catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    // The first process creates the schema; the others start on it.
    const script = spec.store === "memory-store"
      ? SERVE_MEMORY
      : new URL("server/serve.ts", spec.root ?? HERE);
    procs.push(await startServe([...storeArgs, ...tokenArgs], script));
    const rest = await Promise.all(
      Array.from(
        { length: spec.processes - 1 },
        () => startServe([...storeArgs, ...tokenArgs], script),
      ),
    );
    procs.push(...rest);
  } catch (error) {
    await close();
    throw error;
  }
  return {
    spec,
    urls: procs.map((proc) => proc.url.replace(/\/$/, "")),
    [Symbol.asyncDispose]: close,
  };
}
