/**
 * Pull: {@linkcode SCALE.pullRecords} server records pulled in pages of
 * {@linkcode SCALE.pageSize} through the real engine (`engine.sync()`) into
 * a fresh store, against the raw cost of inserting the same rows straight
 * into that storage's engine, measured in the same run (`deno task bench`;
 * `BENCH_SCALE=tiny` for a quick run).
 *
 * The server is seeded once per module, through its store's `commit()`.
 * Every iteration is a whole pull into a fresh store (opened before the timed
 * part, closed and deleted after it).
 *
 * Groups `pull <N> records in pages of <P>, <storage>`:
 *
 * - baseline: the raw insert of the same rows, each the record's JSON.
 *   SQLite: prepared INSERTs, one transaction per page of rows, on a file in
 *   WAL mode with `synchronous = NORMAL` (the adapter's default durability).
 *   KV: `kv.atomic()`s of 50 sets (49 rows and a cursor), the size of the
 *   adapter's writes (its `maxMutationsPerWrite`). Memory: a `Map.set()` of
 *   a `structuredClone` per row (a store keeps copies, contract clause 3).
 * - `engine.sync()` with an in-process transport that returns pre-built
 *   pages (memory, SQLite): the engine and the storage alone. The SQLite
 *   target (at least 50 % of the raw insert rate, so at most 2× its time)
 *   applies to this row.
 * - `engine.sync()` against the reference server (`createSyncServer()`
 *   served by `Deno.serve` on 127.0.0.1, the REST transport; SQLite, KV):
 *   the whole pull. Serving, serialising and parsing the pages adds about
 *   the same time whatever the storage (the SQLite group shows how much).
 * - floor (SQLite, KV): a bare client `GET`s the same pages from the same
 *   server and parses them, then the baseline's raw inserts write their
 *   items, both timed: the least any client pulling over HTTP into that
 *   storage does.
 *
 * Every pull iteration takes from half a second to several seconds, and
 * Deno runs each row at least four times, so not every group has both pull
 * rows (the file must stay well under a minute): memory has no HTTP row
 * (there HTTP would outweigh the storage), and KV, whose pull is bound by
 * one fsync per atomic commit, has no in-process row (HTTP is a small part
 * of it).
 *
 * Peak memory: before the first pull bench's timed part, the file pulls
 * {@linkcode SCALE.pullRecords} and then 1,000,000 records (1,000 under
 * `BENCH_SCALE=tiny`) over HTTP into a fresh SQLite file, each in a child
 * process (this file, run with `deno run`) from a server in another child
 * (seeded a commit of 10,000 records at a time), and prints each child's
 * pull time, peak RSS and how much its live heap (after a full GC) and RSS
 * grew: a pull that streams page by page has about the same peak for both
 * (the goal: peak RSS at 1M at most 1.5× the peak at 100k). It adds about
 * 20 s to the file. `deno run -A bench/pull_bench.ts` prints that check
 * alone.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import {
  type JsonObject,
  type Storage,
  SyncEngine,
  type Transport,
} from "../mod.ts";
import type { PullPage, PullRequest } from "../transport/mod.ts";
import { openKvStorage } from "../storage/kv.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { createSqliteStorage, openSqliteStorage } from "../storage/sqlite.ts";
import { createRestTransport } from "../transport/rest.ts";
import {
  createSyncServer,
  type ServerStore,
  type ServerWrite,
} from "../server/mod.ts";
import { createMemoryServerStore } from "../server/memory.ts";
import { pullRecord } from "./_pull_record.ts";
import { SCALE, short, TINY } from "./_scale.ts";

const KIND = "items";
const RECORDS = SCALE.pullRecords;
const PAGE = SCALE.pageSize;
const encoder = new TextEncoder();

/** A temporary directory, removed with everything in it on dispose. */
async function tempDir(): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix: "pull_bench_" });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true });
    },
  };
}

// ---------------------------------------------------------------------------
// The seeded server

interface Fixture {
  /** The seeded records, as the server sends them. */
  readonly items: readonly JsonObject[];
  /** The same, cut into the pages the server returns. */
  readonly pages: readonly (readonly JsonObject[])[];
  /** The seeded store; closing it is a no-op (see below). */
  readonly store: ServerStore;
}

let fixture: Promise<Fixture> | undefined;

/** Seeds the server once per module, on first use. */
function loadFixture(): Promise<Fixture> {
  fixture ??= (async () => {
    const items = Array.from(
      { length: RECORDS },
      (_, index) => pullRecord(index),
    );
    const store = createMemoryServerStore();
    const seed = async (kind: string, records: readonly JsonObject[]) => {
      for (let start = 0; start < records.length; start += 10_000) {
        await store.commit(
          records.slice(start, start + 10_000).map((data) => ({
            type: "record",
            // The reference server's principal when it has no auth hook.
            namespace: "public",
            record: {
              kind,
              id: data.id as string,
              updatedAt: Date.parse(data.updated_at as string),
              deletedAt: null,
              data,
            },
          })),
        );
      }
    };
    await seed(KIND, items);
    const pages: JsonObject[][] = [];
    for (let start = 0; start < items.length; start += PAGE) {
      pages.push(items.slice(start, start + PAGE));
    }
    return { items, pages, store: unclosable(store) };
  })();
  return fixture;
}

/**
 * The seeded store behind a view whose `close()` does nothing: every
 * iteration serves it with a server of its own, closed when the iteration
 * ends (which closes its store), while the seeded data, plain memory, lives
 * as long as the module.
 */
function unclosable(store: ServerStore): ServerStore {
  return {
    getRecord: (namespace, kind, id) => store.getRecord(namespace, kind, id),
    listRecords: (namespace, kind, options) =>
      store.listRecords(namespace, kind, options),
    getIdempotency: (namespace, key) => store.getIdempotency(namespace, key),
    commit: (writes) => store.commit(writes),
    purge: (options) => store.purge(options),
    trimIdempotency: (namespace, options) =>
      store.trimIdempotency(namespace, options),
    lastWrite: (namespace) => store.lastWrite(namespace),
    close: () => Promise.resolve(),
    [Symbol.asyncDispose]: () => Promise.resolve(),
  };
}

/** Serves the seeded store on 127.0.0.1 until disposed. */
async function serve(): Promise<AsyncDisposable & { url: string }> {
  const { store } = await loadFixture();
  const server = createSyncServer({ store, maxPageSize: PAGE });
  const http = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    server.fetch,
  );
  return {
    url: `http://127.0.0.1:${http.addr.port}`,
    async [Symbol.asyncDispose]() {
      await http.shutdown();
      await server.close();
    },
  };
}

/**
 * A transport that answers each page request with a pre-built page, found
 * by the cursor's `afterId`; the page after the last is empty. It hands out
 * the same objects every time: the engine and the storages copy or
 * serialise what they keep, and nothing changes them.
 */
function pagesTransport(pages: readonly (readonly JsonObject[])[]): Transport {
  const byCursor = new Map<string | null, readonly JsonObject[]>();
  let after: string | null = null;
  for (const page of pages) {
    byCursor.set(after, page);
    after = page.at(-1)!.id as string;
  }
  return {
    pull(request: PullRequest): Promise<PullPage> {
      const items = byCursor.get(request.afterId) ?? [];
      return Promise.resolve({ items, nextPageToken: null });
    },
    push() {
      return Promise.reject(new Error("Cannot push as the bench only pulls"));
    },
    close: () => Promise.resolve(),
    [Symbol.asyncDispose]: () => Promise.resolve(),
  };
}

// ---------------------------------------------------------------------------
// Raw inserts

interface RawInsert {
  readonly name: string;
  /** Inserts every row into a fresh store in `dir`, timing only the inserts. */
  run(b: Deno.BenchContext, dir: string, items: readonly JsonObject[]):
    | Promise<void>
    | void;
}

const RAW_MEMORY: RawInsert = {
  name: "Map.set() of a structuredClone() per row",
  run(b, _dir, items) {
    const rows = new Map<string, JsonObject>();
    b.start();
    for (const row of items) rows.set(row.id as string, structuredClone(row));
    b.end();
  },
};

const RAW_SQLITE: RawInsert = {
  name: `prepared INSERTs, a transaction per ${short(PAGE)} rows`,
  run(b, dir, items) {
    const db = new DatabaseSync(`${dir}/raw.sqlite`);
    try {
      db.exec("PRAGMA journal_mode = WAL");
      db.exec("PRAGMA synchronous = NORMAL");
      db.exec(`
        CREATE TABLE records (
          kind TEXT NOT NULL, id TEXT NOT NULL, value TEXT NOT NULL,
          PRIMARY KEY (kind, id)
        ) WITHOUT ROWID
      `);
      const begin = db.prepare("BEGIN");
      const commit = db.prepare("COMMIT");
      const insert = db.prepare(
        "INSERT INTO records (kind, id, value) VALUES (?, ?, ?)",
      );
      b.start();
      for (let start = 0; start < items.length; start += PAGE) {
        begin.run();
        const end = Math.min(items.length, start + PAGE);
        for (let index = start; index < end; index++) {
          const row = items[index]!;
          insert.run(KIND, row.id as string, JSON.stringify(row));
        }
        commit.run();
      }
      b.end();
    } finally {
      db.close();
    }
  },
};

const RAW_KV: RawInsert = {
  name: "kv.atomic()s of 50 sets (49 rows and a cursor)",
  async run(b, dir, items) {
    using kv = await Deno.openKv(`${dir}/raw.kv`);
    b.start();
    for (let start = 0; start < items.length; start += 49) {
      const atomic = kv.atomic();
      const end = Math.min(items.length, start + 49);
      for (let index = start; index < end; index++) {
        const row = items[index]!;
        atomic.set(
          ["r", KIND, row.id as string],
          encoder.encode(JSON.stringify(row)),
        );
      }
      atomic.set(["m", "cursor"], encoder.encode(String(end)));
      await atomic.commit();
    }
    b.end();
  },
};

// ---------------------------------------------------------------------------
// Groups "pull, <storage>"

interface Backend {
  readonly name: string;
  /** A fresh, empty storage in `dir`. */
  open(dir: string): Promise<Storage>;
  readonly raw: RawInsert;
  /** Which pull rows the group has (see the module doc). */
  readonly pulls: readonly ("in-process" | "http")[];
}

const BACKENDS: readonly Backend[] = [
  {
    name: "memory",
    open: () => Promise.resolve(createMemoryStorage()),
    raw: RAW_MEMORY,
    pulls: ["in-process"],
  },
  {
    name: "SQLite file",
    open: (dir) =>
      Promise.resolve(
        createSqliteStorage(new DatabaseSync(`${dir}/app.sqlite`), {
          closeDatabase: true,
        }),
      ),
    raw: RAW_SQLITE,
    pulls: ["in-process", "http"],
  },
  {
    name: "KV file",
    open: (dir) => openKvStorage(`${dir}/app.kv`),
    raw: RAW_KV,
    pulls: ["http"],
  },
];

/**
 * Whole pulls take from 100 ms to seconds: Deno's minimum (two warm-ups, then
 * its half-second budget and one more) is plenty; its defaults (20 and 10)
 * would take minutes.
 */
const ITERATIONS = { warmup: 1, n: 1 } as const;

/** Pulls every record into a fresh store, timing only `engine.sync()`. */
async function timedPull(
  b: Deno.BenchContext,
  backend: Backend,
  transport: Transport,
) {
  await using dir = await tempDir();
  await using storage = await backend.open(dir.path);
  await using engine = new SyncEngine({ storage, transport, pageSize: PAGE });
  engine.table(KIND);
  b.start();
  const { stats } = await engine.sync();
  b.end();
  if (stats.pulled !== RECORDS) {
    throw new Error(
      `Cannot trust the bench as the pull applied ${stats.pulled} records: expected ${RECORDS}`,
    );
  }
}

for (const backend of BACKENDS) {
  const group = `pull ${short(RECORDS)} records in pages of ${
    short(PAGE)
  }, ${backend.name}`;

  Deno.bench({
    name: `baseline: raw, ${backend.raw.name}`,
    group,
    baseline: true,
    ...ITERATIONS,
    async fn(b) {
      await checkPeakMemoryOnce();
      const { items } = await loadFixture();
      await using dir = await tempDir();
      await backend.raw.run(b, dir.path, items);
    },
  });

  if (backend.pulls.includes("in-process")) {
    Deno.bench({
      name: "engine.sync(), in-process transport (pre-built pages)",
      group,
      ...ITERATIONS,
      async fn(b) {
        await checkPeakMemoryOnce();
        const { pages } = await loadFixture();
        await using transport = pagesTransport(pages);
        await timedPull(b, backend, transport);
      },
    });
  }

  if (backend.pulls.includes("http")) {
    Deno.bench({
      name: "floor: bare GETs of the pages, then the raw inserts",
      group,
      ...ITERATIONS,
      async fn(b) {
        await checkPeakMemoryOnce();
        await using server = await serve();
        await using dir = await tempDir();
        const untimed = { start() {}, end() {} } as Deno.BenchContext;
        b.start();
        const items = await barePages(server.url);
        await backend.raw.run(untimed, dir.path, items);
        b.end();
        if (items.length !== RECORDS) {
          throw new Error(
            `Cannot trust the bench as the bare pull read ${items.length} records: expected ${RECORDS}`,
          );
        }
      },
    });

    Deno.bench({
      name: "engine.sync() over HTTP (reference server)",
      group,
      ...ITERATIONS,
      async fn(b) {
        await checkPeakMemoryOnce();
        await using server = await serve();
        await using transport = createRestTransport({ baseUrl: server.url });
        await timedPull(b, backend, transport);
      },
    });
  }
}

/**
 * Every record of the seeded kind, paged as the REST transport pages them:
 * a `GET` per page after the last item's `updated_at` and id, with the
 * last page's `nextPageToken`, its JSON parsed, nothing checked or kept
 * but the items.
 */
async function barePages(url: string): Promise<JsonObject[]> {
  const items: JsonObject[] = [];
  let query = "";
  for (;;) {
    const response = await fetch(
      `${url}/${KIND}?${query}limit=${PAGE}&includeDeleted=true`,
      { headers: { accept: "application/json" } },
    );
    const page = await response.json() as {
      items: JsonObject[];
      nextPageToken: string | null;
    };
    if (!Array.isArray(page.items)) {
      throw new Error(
        `Cannot pull bare as the server answered ${response.status}: current value is ${
          JSON.stringify(page).slice(0, 200)
        }`,
      );
    }
    for (const item of page.items) items.push(item);
    const last = page.items.at(-1);
    if (page.nextPageToken === null || last === undefined) return items;
    // The keyset is what the server pages by; its token goes along.
    query = `updatedSince=${
      encodeURIComponent(String(last.updated_at))
    }&afterId=${encodeURIComponent(String(last.id))}&pageToken=${
      encodeURIComponent(page.nextPageToken)
    }&`;
  }
}

// ---------------------------------------------------------------------------
// Peak memory of a pull, in child processes

/** The records of the large pull of the peak-memory check. */
const LARGE = TINY ? 1_000 : 1_000_000;

/** The argument that makes this file a pulling child of the check. */
const CHILD = "--peak-memory-child";
/** The argument that makes this file the check's server. */
const SERVER_CHILD = "--peak-memory-server";

/** What a pulling child reports. */
interface PeakReport {
  readonly pulled: number;
  /** How long the pull took, ms. */
  readonly ms: number;
  /** `heapUsed` after a full GC, just before the pull, bytes. */
  readonly liveBefore: number;
  /** The highest `heapUsed` after a full GC, at 10 points of the pull. */
  readonly livePeak: number;
  /** The highest `heapTotal` (the heap V8 holds, garbage included). */
  readonly heapTotalPeak: number;
  /** RSS just before the pull, bytes. */
  readonly rssBefore: number;
  /** The process's peak RSS (Linux `VmHWM`, else the highest sampled), bytes. */
  readonly rssPeak: number;
}

/**
 * The check's server: seeds a memory store with `count` records of `kind`
 * (a commit per 10,000, the items made as they go, never all at once),
 * serves it on 127.0.0.1, prints its URL as a line of JSON, and stops when
 * its stdin closes. A process of its own: a million records in the bench
 * process would slow every garbage collection of the timed rows, and in the
 * pulling child they would be counted as the pull's memory.
 */
async function serverChild(kind: string, count: number): Promise<void> {
  const store = createMemoryServerStore();
  for (let start = 0; start < count; start += 10_000) {
    const writes: ServerWrite[] = [];
    for (let index = start; index < Math.min(count, start + 10_000); index++) {
      const data = pullRecord(index);
      writes.push({
        type: "record",
        namespace: "public",
        record: {
          kind,
          id: data.id as string,
          updatedAt: Date.parse(data.updated_at as string),
          deletedAt: null,
          data,
        },
      });
    }
    await store.commit(writes);
  }
  const server = createSyncServer({ store, maxPageSize: PAGE });
  const http = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    server.fetch,
  );
  console.log(JSON.stringify({ url: `http://127.0.0.1:${http.addr.port}` }));
  // Until the parent closes stdin.
  for await (const _ of Deno.stdin.readable) {
    // Nothing is sent.
  }
  await http.shutdown();
  await server.close();
}

/**
 * A pulling child: pulls `count` records of `kind` over HTTP into a fresh
 * SQLite file and prints a {@linkcode PeakReport} as JSON. The live heap is
 * read after a full GC (`--expose-gc`) at ten evenly spaced pages, whatever
 * the pull's length: what the pull retains, without V8's lazy collection,
 * which lets garbage pile up longer in a longer run. RSS and the heap V8
 * holds (`heapTotal`, garbage included) are sampled every 5 ms.
 */
async function peakChild(
  baseUrl: string,
  kind: string,
  expected: number,
): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) {
    throw new Error("Cannot measure the live heap without --expose-gc");
  }
  const every = Math.max(1, Math.round(expected / PAGE / 10));
  await using dir = await tempDir();
  await using storage = await openSqliteStorage(`${dir.path}/app.sqlite`);
  await using transport = createRestTransport({ baseUrl });
  await using engine = new SyncEngine({ storage, transport, pageSize: PAGE });
  engine.table(kind);
  gc();
  const before = Deno.memoryUsage();
  let livePeak = before.heapUsed;
  let rssPeak = before.rss;
  let heapTotalPeak = before.heapTotal;
  const live = () => {
    gc();
    livePeak = Math.max(livePeak, Deno.memoryUsage().heapUsed);
  };
  let pages = 0;
  engine.on("pullPageApplied", () => {
    if (++pages % every === 0) live();
  });
  const timer = setInterval(() => {
    const usage = Deno.memoryUsage();
    rssPeak = Math.max(rssPeak, usage.rss);
    heapTotalPeak = Math.max(heapTotalPeak, usage.heapTotal);
  }, 5);
  const started = performance.now();
  let pulled: number;
  try {
    ({ stats: { pulled } } = await engine.sync());
  } finally {
    clearInterval(timer);
  }
  const ms = performance.now() - started;
  live();
  const report: PeakReport = {
    pulled,
    ms,
    liveBefore: before.heapUsed,
    livePeak,
    heapTotalPeak,
    rssBefore: before.rss,
    rssPeak: Math.max(rssPeak, await peakRss() ?? 0),
  };
  console.log(JSON.stringify(report));
}

/** The process's peak RSS from `/proc/self/status`, where there is one. */
async function peakRss(): Promise<number | undefined> {
  try {
    const status = await Deno.readTextFile("/proc/self/status");
    const kb = /^VmHWM:\s+(\d+) kB$/m.exec(status)?.[1];
    return kb === undefined ? undefined : Number(kb) * 1024;
  } catch {
    return undefined;
  }
}

/** This file run as a child with `args`. */
function child(args: readonly string[], stdin: "piped" | "null") {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--v8-flags=--expose-gc",
      import.meta.filename!,
      ...args,
    ],
    // The project's deno.json applies to the child as to this file.
    cwd: new URL("..", import.meta.url),
    stdin,
    stdout: "piped",
    stderr: "inherit",
  });
}

/**
 * Serves `count` records from a server child, pulls them in a pulling
 * child, and stops the server.
 */
async function measure(count: number): Promise<PeakReport> {
  const kind = `items_${count}`;
  const server = child([SERVER_CHILD, kind, String(count)], "piped").spawn();
  const lines = server.stdout.pipeThrough(new TextDecoderStream())
    .getReader();
  try {
    let text = "";
    while (!text.includes("\n")) {
      const { done, value } = await lines.read();
      if (done) {
        throw new Error("Cannot check peak memory as the server child exited");
      }
      text += value;
    }
    const { url } = JSON.parse(text) as { url: string };
    const { code, stdout } = await child(
      [CHILD, url, kind, String(count)],
      "null",
    )
      .output();
    if (code !== 0) {
      throw new Error(`Cannot check peak memory as the child exited ${code}`);
    }
    return JSON.parse(new TextDecoder().decode(stdout)) as PeakReport;
  } finally {
    await server.stdin.close();
    await lines.cancel();
    await server.status;
  }
}

/** Measures the 100k and the 1M pull and prints the comparison. */
async function printPeakMemory(): Promise<void> {
  const small = await measure(RECORDS);
  const large = await measure(LARGE);
  if (small.pulled !== RECORDS || large.pulled !== LARGE) {
    throw new Error(
      `Cannot trust the peak-memory check as the children pulled ${small.pulled} and ${large.pulled} records`,
    );
  }
  const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MB`;
  const line = (count: number, report: PeakReport) =>
    `  ${`${short(count)} records:`.padEnd(14)} ${
      (report.ms / 1000).toFixed(1)
    } s (${Math.round(count / report.ms * 1000)} records/s), live heap ${
      mb(report.liveBefore)
    } → peak ${mb(report.livePeak)}, V8 heap peak ${
      mb(report.heapTotalPeak)
    }, RSS ${mb(report.rssBefore)} → peak ${mb(report.rssPeak)}`;
  const growth = (before: keyof PeakReport, peak: keyof PeakReport) =>
    ((large[peak] - large[before]) /
      Math.max(1, small[peak] - small[before])).toFixed(2);
  console.log(
    [
      `peak memory of a pull over HTTP into a SQLite file, in a child process (pages of ${
        short(PAGE)
      }; the server in another):`,
      line(RECORDS, small),
      line(LARGE, large),
      `  ${short(LARGE)} vs ${short(RECORDS)}: peak RSS ×${
        (large.rssPeak / small.rssPeak).toFixed(2)
      } (goal ≤ 1.5); growth during the pull ×${
        growth("liveBefore", "livePeak")
      } (live heap), ×${
        growth("rssBefore", "rssPeak")
      } (RSS). A pull that kept its records would grow ×${LARGE / RECORDS}.`,
    ].join("\n"),
  );
}

let peakCheck: Promise<void> | undefined;

/**
 * Runs the peak-memory check once per module, from inside whichever pull
 * bench runs first and before its timed part: `deno bench` evaluates every
 * bench file before running any bench, so a check at the top level would
 * run while another file's benches are being measured.
 */
function checkPeakMemoryOnce(): Promise<void> {
  peakCheck ??= printPeakMemory();
  return peakCheck;
}

if (Deno.args[0] === CHILD) {
  await peakChild(Deno.args[1]!, Deno.args[2]!, Number(Deno.args[3]));
} else if (Deno.args[0] === SERVER_CHILD) {
  await serverChild(Deno.args[1]!, Number(Deno.args[2]));
} else if (import.meta.main) {
  // `deno run -A bench/pull_bench.ts`: the check alone.
  await printPeakMemory();
}
