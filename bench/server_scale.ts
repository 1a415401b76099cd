/**
 * The server-side scale benchmark: push and pull throughput and request
 * latency of the reference server (`server/serve.ts`, real processes) per
 * store (SQLite file, SQLite `:memory:`, the memory store, a KV file,
 * Postgres), with 1, 8 and 64 concurrent clients, and with 1, 2 and 4 server
 * processes on one Postgres database. Every row is also given as a ratio to
 * the single-process SQLite-file row of the same run and load. `--base DIR`
 * runs each setup a second time on another checkout's server (e.g. a
 * `git worktree` of main), right after this one's: a same-run before/after.
 *
 * ```sh
 * deno run -A bench/server_scale.ts                      # everything, about 4 minutes
 * BENCH_SCALE=tiny deno run -A bench/server_scale.ts     # a second per row, few rows
 * deno run -A bench/server_scale.ts --duration 5000 --clients 1,8,64 --batch 50 --records 2000
 * deno run -A bench/server_scale.ts --setups sqlite,postgres --no-postgres
 * deno run -A bench/server_scale.ts --setups memory-store,sqlite --base /tmp/main
 * ```
 *
 * Clients are `fetch` loops in this process (kept-alive connections), each
 * with its own principal (`--token`) unless the row says "shared"; with
 * several server processes they are spread over them round-robin. The
 * client and the servers share the machine's cores, so absolute figures
 * are those of this machine; the ratios are of one run.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  killAll,
  probePostgres,
  type Setup,
  SETUPS,
  type SetupSpec,
  startSetup,
} from "./_scale_servers.ts";
import {
  type Client,
  fillPull,
  type PhaseResult,
  pullPhase,
  pushPhase,
  quantile,
} from "./_scale_load.ts";

const TINY = Deno.env.get("BENCH_SCALE") === "tiny";
/** The mark of a row served by the `--base` checkout. */
const BASE = "[base]";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    duration: { type: "string", default: TINY ? "1000" : "3000" },
    clients: { type: "string", default: TINY ? "4" : "1,8,64" },
    batch: { type: "string", default: "50" },
    records: { type: "string", default: TINY ? "200" : "500" },
    limit: { type: "string", default: "100" },
    setups: { type: "string" },
    "no-postgres": { type: "boolean", default: false },
    "require-postgres": { type: "boolean", default: false },
    json: { type: "string" },
    base: { type: "string" },
  },
});

function positive(name: string, text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value <= 0) {
    throw new TypeError(
      `Cannot run the benchmark as '--${name}' is not a positive integer: current value is ${
        JSON.stringify(text)
      }`,
    );
  }
  return value;
}

const durationMs = positive("duration", values.duration);
const clientCounts = values.clients.split(",").map((c) =>
  positive("clients", c)
);
const batch = positive("batch", values.batch);
const records = positive("records", values.records);
const limit = positive("limit", values.limit);
const maxClients = Math.max(...clientCounts);

/** A load: how many clients, and whether they share one principal. */
interface Load {
  readonly clients: number;
  readonly shared: boolean;
}

const LOADS: readonly Load[] = [
  ...clientCounts.map((clients) => ({ clients, shared: false })),
  ...(maxClients > 1 ? [{ clients: maxClients, shared: true }] : []),
];

/** One measured row. */
interface Row {
  readonly setup: string;
  readonly load: Load;
  readonly push: PhaseResult;
  readonly pull: PhaseResult;
}

const principals = Array.from(
  { length: maxClients },
  (_, i) => ({ token: `bench-token-p${i}-0123456789`, principal: `p${i}` }),
);
const sharedPrincipal = {
  token: "bench-token-shared-0123456789",
  principal: "shared",
};
const tokenArgs = [...principals, sharedPrincipal].flatMap((
  { token, principal },
) => ["--token", `${token}=${principal}`]);

function clientsOf(setup: Setup, load: Load): Client[] {
  return Array.from({ length: load.clients }, (_, index) => ({
    url: setup.urls[index % setup.urls.length]!,
    token: load.shared ? sharedPrincipal.token : principals[index]!.token,
    index,
  }));
}

let setups: SetupSpec[] = [...SETUPS];
if (values.setups !== undefined) {
  const wanted = values.setups.split(",");
  setups = setups.filter((s) => wanted.includes(s.store));
}
let skipped: string | null = null;
if (values["no-postgres"]) {
  skipped = "--no-postgres";
} else if (setups.some((s) => s.store === "postgres")) {
  const reason = await probePostgres();
  if (reason !== null) {
    if (values["require-postgres"]) {
      throw new Error(
        `Cannot run the Postgres rows as no Postgres answers at DATABASE_URL: current value is ${reason}`,
      );
    }
    skipped = `no Postgres answers at DATABASE_URL (${reason})`;
  }
}
if (skipped !== null) {
  setups = setups.filter((s) => s.store !== "postgres");
  console.log(`Skipping the Postgres rows: ${skipped}`);
}

// A killed benchmark leaves no server behind (a Postgres schema it made is
// left; rerunning drops nothing, so drop t_* schemas by hand if needed).
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, () => {
    killAll();
    Deno.exit(130);
  });
}

// With --base, each setup runs on the older checkout right after this one,
// so that the two share the machine's state; their rows say "[base]".
if (values.base !== undefined) {
  const dir = values.base.endsWith("/") ? values.base : `${values.base}/`;
  const root = new URL(dir, `file://${Deno.cwd()}/`);
  setups = setups.flatMap((spec) => [
    spec,
    { ...spec, label: `${spec.label} ${BASE}`, root },
  ]);
}

const rows: Row[] = [];
const startedAt = new Date();
for (const spec of setups) {
  console.error(`# ${spec.label}`);
  await using setup = await startSetup(spec, tokenArgs);
  // Every principal's pull table, filled once per setup.
  const all: Client[] = [
    ...principals.map(({ token }, index) => ({
      url: setup.urls[index % setup.urls.length]!,
      token,
      index,
    })),
    { url: setup.urls[0]!, token: sharedPrincipal.token, index: maxClients },
  ];
  await fillPull(all, records);
  for (const load of LOADS) {
    const clients = clientsOf(setup, load);
    const push = await pushPhase(
      clients,
      durationMs,
      batch,
      `push${rows.length}`,
    );
    const pull = await pullPhase(clients, durationMs, limit);
    rows.push({ setup: spec.label, load, push, pull });
    console.error(
      `  ${load.clients} ${load.shared ? "shared" : "separate"}: push ${
        rate(push).toFixed(0)
      } ops/s, pull ${rate(pull).toFixed(0)} records/s`,
    );
  }
}

function rate(phase: PhaseResult): number {
  return phase.items / (phase.elapsedMs / 1000);
}

function baselineOf(row: Row): Row | undefined {
  const label = row.setup.endsWith(BASE)
    ? `${SETUPS[0]!.label} ${BASE}`
    : SETUPS[0]!.label;
  return rows.find((r) =>
    r.setup === label && r.load.clients === row.load.clients &&
    r.load.shared === row.load.shared
  );
}

function ms(value: number): string {
  return value < 10 ? value.toFixed(1) : value.toFixed(0);
}

/** A markdown table with padded columns, the way `deno fmt` writes them. */
function table(head: string[], body: string[][], right: boolean[]): string {
  const widths = head.map((h, i) =>
    Math.max(h.length, ...body.map((r) => r[i]!.length), 3)
  );
  const line = (cells: string[]) =>
    `| ${
      cells.map((c, i) =>
        right[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)
      )
        .join(" | ")
    } |`;
  const rule = `| ${
    widths.map((w, i) => right[i] ? `${"-".repeat(w - 1)}:` : "-".repeat(w))
      .join(" | ")
  } |`;
  return [line(head), rule, ...body.map(line)].join("\n");
}

function phaseTable(which: "push" | "pull"): string {
  const unit = which === "push" ? "ops/s" : "records/s";
  const head = [
    "setup",
    "clients",
    "principals",
    unit,
    "÷ SQLite",
    "requests/s",
    "busy",
    "p50 ms",
    "p95 ms",
    "p99 ms",
  ];
  const body = rows.map((row) => {
    const phase = row[which];
    const base = baselineOf(row);
    const ratio = base === undefined
      ? "—"
      : `${(rate(phase) / rate(base[which])).toFixed(2)}×`;
    return [
      row.setup,
      String(row.load.clients),
      row.load.shared ? "1 shared" : "1 each",
      rate(phase).toFixed(0),
      ratio,
      (phase.requests / (phase.elapsedMs / 1000)).toFixed(0),
      String(phase.busy),
      ms(quantile(phase.latencies, 0.5)),
      ms(quantile(phase.latencies, 0.95)),
      ms(quantile(phase.latencies, 0.99)),
    ];
  });
  return table(head, body, head.map((_, i) => i >= 1 && i !== 2));
}

const command =
  `deno run -A bench/server_scale.ts --duration ${durationMs} --clients ${
    clientCounts.join(",")
  } --batch ${batch} --records ${records} --limit ${limit}`;
const cores = navigator.hardwareConcurrency;
console.log(
  [
    `Server scale, ${
      startedAt.toISOString().slice(0, 10)
    }, Deno ${Deno.version.deno}, ${cores} cores shared by the client (this process) and the servers`,
    `Reproduce: ${command}`,
    `Each row: ${durationMs} ms of push (POST /batch of ${batch} new records per request), then ${durationMs} ms of pull (paging GET /pull?limit=${limit} through ${records} records to the end, again and again); "1 each" = a principal per client, "1 shared" = all clients in one principal; ÷ SQLite = this row's rate over the SQLite-file 1-process row of the same load in this run; busy = requests answered 503/429 (retry later), each retried after its Retry-After (at most 1 s), its latency not counted.`,
    "",
    "Push",
    "",
    phaseTable("push"),
    "",
    "Pull",
    "",
    phaseTable("pull"),
  ].join("\n"),
);

if (values.json !== undefined) {
  await Deno.writeTextFile(
    values.json,
    JSON.stringify(
      rows.map((row) => ({
        setup: row.setup,
        clients: row.load.clients,
        shared: row.load.shared,
        pushOpsPerSecond: rate(row.push),
        pullRecordsPerSecond: rate(row.pull),
        pushRequests: row.push.requests,
        pullRequests: row.pull.requests,
        pushBusy: row.push.busy,
      })),
    ),
  );
}
