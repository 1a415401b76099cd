/**
 * A probe of the reference server's `POST /batch` (issue 14): the same 10k
 * new-record ops in chunks of 500, in-process (`server.fetch`, no socket) or
 * over loopback HTTP (`Deno.serve` + `fetch`, the bare client of
 * `bench/_drain.ts`), per store, with a per-stage breakdown. With `--root`
 * given more than once it loads the server of each checkout and runs them
 * alternately in one process, so that an old/new A/B shares the machine's
 * noise:
 *
 * ```sh
 * git worktree add --detach /tmp/base main
 * deno run -A bench/_server_batch_probe.ts --root /tmp/base --root . --rounds 5
 * deno run -A bench/_server_batch_probe.ts --stages --stores memory,sqlite
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { makeRecord } from "./_drain.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    root: { type: "string", multiple: true },
    stores: { type: "string", default: "memory,sqlite" },
    ops: { type: "string", default: "10000" },
    chunk: { type: "string", default: "500" },
    rounds: { type: "string", default: "3" },
    mode: { type: "string", default: "inproc,http" },
    stages: { type: "boolean", default: false },
    attribute: { type: "string" },
  },
});

if (values.attribute !== undefined) {
  attribute(values.attribute);
  Deno.exit(0);
}

/**
 * Attributes a `--cpu-prof` profile of this probe to the stages of
 * `POST /batch`: each sample goes to the innermost stage function on its
 * stack (`deno run -A --cpu-prof --cpu-prof-dir=DIR
 * bench/_server_batch_probe.ts --mode inproc --stores memory`, then
 * `--attribute DIR/x.cpuprofile`).
 */
function attribute(path: string): void {
  const STAGES: [RegExp, string][] = [
    [/^readBody$/, "body read + UTF-8 decode + JSON.parse"],
    [
      /^(canonicalBody|fingerprintOf)$/,
      "fingerprint (canonical JSON + SHA-256)",
    ],
    [/^(batchCall|withinLimits|withinDepth|keyRefusal)$/, "per-op checks"],
    [
      /^(prefetch|getRecords|getIdempotencies|getRecord|getIdempotency)$/,
      "store reads",
    ],
    [/^commit$/, "store commit"],
    [/^putRecord$|^textOf$/, "staging (record copy, timestamp, JSON text)"],
    [
      /^(applyWrite|nextTimestamp|deleteRecord|putIdempotency)$/,
      "write logic (key check, version, entry)",
    ],
    [/^(resultText|#respond)$/, "answer serialisation"],
    [
      /^(inScope|exclusive|batchRequest|#answer|#route|fetch)$/,
      "server plumbing (routing, lock, scope)",
    ],
    [/^(inproc|bodies|timedStore)$/, "probe (client side)"],
  ];
  const profile = JSON.parse(Deno.readTextFileSync(path)) as {
    nodes: {
      id: number;
      callFrame: { functionName: string; url: string };
      children?: number[];
    }[];
    samples: number[];
    timeDeltas: number[];
  };
  const parent = new Map<number, number>();
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  for (const node of profile.nodes) {
    for (const child of node.children ?? []) parent.set(child, node.id);
  }
  const totals = new Map<string, number>();
  let all = 0;
  profile.samples.forEach((id, index) => {
    const delta = profile.timeDeltas[index] ?? 0;
    all += delta;
    let stage: string | undefined;
    const leaf = byId.get(id)!.callFrame.functionName;
    if (leaf === "(garbage collector)") stage = "garbage collector";
    if (leaf === "(idle)") stage = "idle";
    for (
      let at: number | undefined = id;
      stage === undefined && at !== undefined;
      at = parent.get(at)
    ) {
      const name = byId.get(at)!.callFrame.functionName;
      stage = STAGES.find(([pattern]) => pattern.test(name))?.[1];
    }
    stage ??= "other (runtime, Request/Response, microtasks)";
    totals.set(stage, (totals.get(stage) ?? 0) + delta);
  });
  for (const [stage, us] of [...totals].sort((a, b) => b[1] - a[1])) {
    console.log(
      `${(us / 1000).toFixed(0).padStart(6)} ms ${
        ((us / all) * 100).toFixed(1).padStart(5)
      } %  ${stage}`,
    );
  }
}

const roots = (values.root ?? [new URL("..", import.meta.url).pathname]).map(
  (root) =>
    new URL(root.endsWith("/") ? root : `${root}/`, `file://${Deno.cwd()}/`),
);
const stores = values.stores.split(",");
const modes = values.mode.split(",");
const N = Number(values.ops);
const CHUNK = Number(values.chunk);
const ROUNDS = Number(values.rounds);

// deno-lint-ignore no-explicit-any
type Any = any;

const DATABASE_URL = Deno.env.get("DATABASE_URL") ??
  "postgres://root@127.0.0.1:5432/test";
/** The Postgres schemas the probe created, dropped at the end. */
const schemas: string[] = [];

interface Server {
  fetch(request: Request): Promise<Response>;
  close(): Promise<void>;
}

interface Root {
  readonly name: string;
  createSyncServer(options: { store: Any }): Server;
  store(kind: string): Promise<Any>;
}

async function loadRoot(url: URL): Promise<Root> {
  const mod = await import(new URL("server/mod.ts", url).href);
  const memory = await import(new URL("server/memory.ts", url).href);
  const sqlite = await import(new URL("server/sqlite.ts", url).href);
  const kv = await import(new URL("server/kv.ts", url).href);
  const pg = await import(new URL("server/postgres.ts", url).href);
  return {
    name: url.pathname,
    createSyncServer: mod.createSyncServer,
    async store(kind) {
      if (kind === "memory") return memory.createMemoryServerStore();
      if (kind === "sqlite") {
        const dir = await Deno.makeTempDir({ prefix: "batch_probe_" });
        return await sqlite.openSqliteServerStore(`${dir}/s.sqlite`);
      }
      if (kind === "kv") {
        const dir = await Deno.makeTempDir({ prefix: "batch_probe_" });
        return await kv.openKvServerStore(`${dir}/s.kv`);
      }
      if (kind === "postgres") {
        const schema = `probe_${crypto.randomUUID().replaceAll("-", "")}`;
        schemas.push(schema);
        return await pg.openPostgresServerStore(DATABASE_URL, { schema });
      }
      throw new TypeError(`Cannot open store as it is unknown: ${kind}`);
    },
  };
}

/** The request bodies: N new records, CHUNK ops per POST. */
function bodies(round: number): string[] {
  const out: string[] = [];
  for (let start = 0; start < N; start += CHUNK) {
    const ops = [];
    for (let i = start; i < Math.min(N, start + CHUNK); i++) {
      const payload = makeRecord(i);
      ops.push({
        opId: `op-${round}-${i}`,
        kind: "todos",
        id: payload.id as string,
        type: "upsert",
        payload,
      });
    }
    out.push(JSON.stringify({ ops }));
  }
  return out;
}

/** Times a store's calls (their synchronous part: memory and SQLite). */
function timedStore(store: Any, t: Record<string, number>): Any {
  const wrap = (name: string) => (...args: Any[]) => {
    const started = performance.now();
    try {
      return store[name](...args);
    } finally {
      t[name] = (t[name] ?? 0) + performance.now() - started;
    }
  };
  const out: Any = {};
  for (
    const name of [
      "getRecord",
      "listRecords",
      "getIdempotency",
      "getRecords",
      "getIdempotencies",
      "commit",
      "purge",
      "trimIdempotency",
      "lastWrite",
      "close",
    ]
  ) {
    if (typeof store[name] === "function") out[name] = wrap(name);
  }
  out[Symbol.asyncDispose] = () => store.close();
  return out;
}

async function inproc(
  root: Root,
  kind: string,
  texts: string[],
  t: Record<string, number>,
): Promise<number> {
  const server = root.createSyncServer({
    store: timedStore(await root.store(kind), t),
  });
  const started = performance.now();
  let ok = 0;
  for (const text of texts) {
    const response = await server.fetch(
      new Request("http://localhost/batch", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: text,
      }),
    );
    const answer = await response.text();
    ok += answer.split('"status":201').length - 1;
  }
  const ms = performance.now() - started;
  await server.close();
  if (ok !== N) throw new Error(`only ${ok} of ${N} ops were created`);
  return ms;
}

async function http(root: Root | "echo", kind: string, texts: string[]) {
  let server: Server | null = null;
  const handler = root === "echo"
    ? async (request: Request) => {
      // The loopback floor: read and parse the body, answer one result per
      // op echoing its payload, as the server does.
      const { ops } = JSON.parse(await request.text());
      return Response.json({
        results: ops.map((op: Any) => ({
          opId: op.opId,
          status: 201,
          record: op.payload,
        })),
      });
    }
    : (server = root.createSyncServer({ store: await root.store(kind) }))
      .fetch;
  const http = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    handler,
  );
  const url = `http://127.0.0.1:${http.addr.port}/batch`;
  const started = performance.now();
  let ok = 0;
  for (const text of texts) {
    const response = await fetch(url, {
      method: "POST",
      headers: {
        "accept": "application/json",
        "content-type": "application/json",
      },
      body: text,
    });
    const { results } = await response.json();
    for (const r of results) if (r.status >= 200 && r.status < 300) ok++;
  }
  const ms = performance.now() - started;
  await http.shutdown();
  await server?.close();
  if (ok !== N) throw new Error(`only ${ok} of ${N} ops were created`);
  return ms;
}

const loaded = await Promise.all(roots.map(loadRoot));
const results = new Map<string, number[]>();
const stageSums = new Map<string, Record<string, number>>();
const note = (label: string, ms: number) => {
  const list = results.get(label) ?? [];
  list.push(ms);
  results.set(label, list);
};

for (let round = 0; round < ROUNDS; round++) {
  const texts = bodies(round);
  for (const kind of stores) {
    for (const mode of modes) {
      if (mode === "http") note(`http echo`, await http("echo", kind, texts));
      for (const [index, root] of loaded.entries()) {
        const label = `${mode} ${kind} root${index}`;
        if (mode === "inproc") {
          const t: Record<string, number> = {};
          note(label, await inproc(root, kind, texts, t));
          const sums = stageSums.get(label) ?? {};
          for (const [k, v] of Object.entries(t)) sums[k] = (sums[k] ?? 0) + v;
          stageSums.set(label, sums);
        } else {
          note(label, await http(root, kind, texts));
        }
      }
    }
  }
}

for (const [index, root] of loaded.entries()) {
  console.log(`root${index} = ${root.name}`);
}
for (const [label, list] of results) {
  const sorted = [...list].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)]!;
  console.log(
    `${label.padEnd(28)} median ${median.toFixed(0).padStart(5)} ms = ${
      Math.round(N / (median / 1000)).toString().padStart(7)
    } ops/s  runs ${list.map((ms) => ms.toFixed(0)).join(" ")}`,
  );
  const sums = stageSums.get(label);
  if (sums !== undefined) {
    console.log(
      "   store µs/op: " +
        Object.entries(sums).map(([k, v]) =>
          `${k} ${(v * 1000 / N / list.length).toFixed(2)}`
        ).join(", "),
    );
  }
}

if (values.stages) {
  // Pure stages on the same bodies, µs per op.
  const { fingerprintOf } = await import(
    new URL("server/_fingerprint.ts", roots.at(-1)!).href
  );
  const texts = bodies(99);
  const utf8 = new TextEncoder();
  const decoder = new TextDecoder();
  const bytes = texts.map((text) => utf8.encode(text));
  const time = (fn: () => void) => {
    const started = performance.now();
    for (let r = 0; r < 5; r++) fn();
    return ((performance.now() - started) * 1000) / N / 5;
  };
  const parsed = texts.map((text) => JSON.parse(text).ops as Any[]);
  console.log(
    `decode+parse ${
      time(() => bytes.forEach((b) => JSON.parse(decoder.decode(b))))
        .toFixed(2)
    } µs/op`,
  );
  console.log(
    `payload stringify (size check) ${
      time(() =>
        parsed.forEach((ops) => ops.forEach((op) => JSON.stringify(op.payload)))
      ).toFixed(2)
    } µs/op`,
  );
  console.log(
    `fingerprint ${
      time(() =>
        parsed.forEach((ops) =>
          ops.forEach((op) =>
            fingerprintOf({
              method: "PUT",
              kind: op.kind,
              id: op.id,
              key: op.opId,
              force: false,
              body: { type: "json", value: op.payload },
              extra: [],
            })
          )
        )
      ).toFixed(2)
    } µs/op`,
  );
  const answers = parsed.map((ops) => ({
    results: ops.map((op) => ({
      opId: op.opId,
      status: 201,
      record: { ...op.payload, updated_at: new Date().toISOString() },
    })),
  }));
  console.log(
    `answer stringify ${
      time(() => answers.forEach((a) => JSON.stringify(a))).toFixed(2)
    } µs/op`,
  );
}
if (schemas.length > 0) {
  const { default: postgres } = await import("postgres");
  const sql = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
  for (const schema of schemas) {
    await sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  }
  await sql.end({ timeout: 5 });
}
Deno.exit(0);
