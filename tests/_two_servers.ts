/**
 * The two-process cursor check: two server processes over one store file
 * (or one Postgres schema),
 * writers putting new records through both while readers pull through both
 * with keyset cursors; afterwards each reader's collected ids are compared
 * with the final table. A record committed behind a reader's cursor is a
 * miss. Used by `server_kv_processes_test.ts` and
 * `server_sqlite_processes_test.ts` and `server_postgres_processes_test.ts`;
 * run directly to measure a store:
 * `deno run -A tests/_two_servers.ts kv|sqlite|postgres [SECONDS]`.
 *
 * @module
 */

import { DATABASE_URL, dropSchema, freshSchema } from "./_postgres.ts";

/** What one run measured. */
export interface TwoServersResult {
  readonly writes: number;
  readonly pages: number;
  readonly records: number;
  /** Per reader, the ids of the final table it never received. */
  readonly misses: number[];
  /** The ids missed by at least one reader. */
  readonly missedIds: number;
  /** How often a commit lost the race and ran again (shared stores). */
  readonly retries: number;
  readonly failedWrites: number;
}

/** Options of {@linkcode runTwoServers}. */
export interface TwoServersOptions {
  readonly store: "kv" | "sqlite" | "postgres";
  readonly ms: number;
  readonly writers: number;
  readonly readers: number;
}

/** A server process started by {@linkcode start}. */
export interface Child {
  readonly process: Deno.ChildProcess;
  readonly base: string;
}

/**
 * Starts a server process over a store file (for `postgres`: `URL#SCHEMA`);
 * resolves once it listens.
 */
export async function start(store: string, path: string): Promise<Child> {
  const process = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("./_two_server_child.ts", import.meta.url).pathname,
      store,
      path,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  // The first line is the port; the rest of stdout is drained.
  const reader = process.stdout.pipeThrough(new TextDecoderStream())
    .getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("Cannot start server process");
    text += value;
  }
  (async () => {
    while (!(await reader.read()).done) {
      // Drained.
    }
  })().catch(() => {});
  const value = text.split("\n")[0]!;
  return { process, base: `http://127.0.0.1:${value.trim()}` };
}

/** Stops a server process and waits for its end. */
export async function stop(child: Child): Promise<void> {
  await child.process.stdin.close();
  await child.process.status;
}

/** Pulls from a cursor to the end; returns the new cursor. */
async function pullAll(
  base: string,
  cursor: { since: string; afterId: string } | null,
  seen: Set<string>,
  count: { pages: number },
): Promise<{ since: string; afterId: string } | null> {
  for (;;) {
    const params = new URLSearchParams({ limit: "25" });
    if (cursor !== null) {
      params.set("updatedSince", cursor.since);
      params.set("afterId", cursor.afterId);
    }
    const response = await fetch(`${base}/todo?${params}`);
    if (response.status !== 200) {
      await response.body?.cancel();
      throw new Error(`pull answered ${response.status}`);
    }
    const page = await response.json() as {
      items: { id: string; updated_at: string }[];
    };
    count.pages++;
    for (const item of page.items) seen.add(item.id);
    const last = page.items.at(-1);
    if (last !== undefined) {
      cursor = { since: last.updated_at, afterId: last.id };
    }
    if (page.items.length < 25) return cursor;
  }
}

/**
 * Runs the check.
 *
 * @param options The store, duration, writers and readers.
 * @returns What it measured.
 */
export async function runTwoServers(
  options: TwoServersOptions,
): Promise<TwoServersResult> {
  const dir = await Deno.makeTempDir({ prefix: "two-servers-" });
  const schema = options.store === "postgres" ? freshSchema() : null;
  const path = schema !== null
    ? `${DATABASE_URL}#${schema}`
    : `${dir}/store.${options.store}`;
  // Both start at once: on Postgres they race to create the schema.
  const [first, second] = await Promise.all([
    start(options.store, path),
    start(options.store, path),
  ]);
  const bases = [first.base, second.base];
  try {
    let stop = false;
    let writes = 0;
    let failedWrites = 0;
    const writers = Array.from({ length: options.writers }, async (_, w) => {
      for (let n = 0; !stop; n++) {
        const id = `w${w}-${String(n).padStart(6, "0")}`;
        const response = await fetch(`${bases[(w + n) % 2]}/todo/${id}`, {
          method: "PUT",
          headers: { "idempotency-key": id },
          body: JSON.stringify({ n }),
        });
        await response.body?.cancel();
        if (response.status === 201) writes++;
        else failedWrites++;
      }
    });
    const count = { pages: 0 };
    const seen = Array.from(
      { length: options.readers },
      () => new Set<string>(),
    );
    const readers = seen.map(async (set, r) => {
      let cursor: { since: string; afterId: string } | null = null;
      for (let n = 0; !stop; n++) {
        cursor = await pullAll(bases[(r + n) % 2]!, cursor, set, count);
      }
      return cursor;
    });
    await new Promise((resolve) => setTimeout(resolve, options.ms));
    stop = true;
    await Promise.all(writers);
    const cursors = await Promise.all(readers);
    // Each reader catches up from its own cursor, as a client would.
    for (const [r, set] of seen.entries()) {
      await pullAll(bases[r % 2]!, cursors[r]!, set, count);
    }
    const table = new Set<string>();
    await pullAll(bases[0]!, null, table, { pages: 0 });
    const misses = seen.map((set) =>
      [...table].filter((id) => !set.has(id)).length
    );
    const missed = new Set<string>();
    for (const set of seen) {
      for (const id of table) if (!set.has(id)) missed.add(id);
    }
    let retries = 0;
    for (const base of bases) {
      retries += (await (await fetch(`${base}/__stats`)).json()).stale;
    }
    return {
      writes,
      pages: count.pages,
      records: table.size,
      misses,
      missedIds: missed.size,
      retries,
      failedWrites,
    };
  } finally {
    await stop(first);
    await stop(second);
    await Deno.remove(dir, { recursive: true });
    if (schema !== null) await dropSchema(schema);
  }
}

if (import.meta.main) {
  const store = Deno.args[0] === "sqlite"
    ? "sqlite"
    : Deno.args[0] === "postgres"
    ? "postgres"
    : "kv";
  const seconds = Number(Deno.args[1] ?? 5);
  console.log(
    store,
    await runTwoServers({ store, ms: seconds * 1000, writers: 8, readers: 4 }),
  );
}
