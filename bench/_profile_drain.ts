/**
 * A profiling harness for the batch drain (issue 14): fills an outbox with
 * `N` ops through `putMany`, then drains it push-only
 * (`engine.sync({ pullKinds: [] })`) to the reference server in the same
 * process over loopback HTTP, timing each stage: every storage call and
 * the transport's `push` (request, server and response). A bare
 * `POST /batch` client then sends the same ops to a fresh server in the
 * same process, the floor of the transport stage. Run with `--cpu-prof` to
 * see where the time goes:
 *
 * ```sh
 * deno run -A bench/_profile_drain.ts 10000 sqlite
 * deno run -A bench/_profile_drain.ts 10000 memory
 * deno run -A bench/_profile_drain.ts 10000 sqlite 3 8   # per-op, 8 in flight
 * deno run -A --cpu-prof --cpu-prof-dir=.demo/prof bench/_profile_drain.ts 10000
 * deno run -A bench/_profile_summary.ts .demo/prof/*.cpuprofile
 * ```
 *
 * @module
 */

import { SyncEngine } from "../mod.ts";
import { openSqliteStorage } from "../storage/sqlite.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { createRestTransport } from "../transport/rest.ts";
import {
  bareBatch,
  barePerOp,
  DrainServer,
  KIND,
  makeRecord,
  type WireOp,
} from "./_drain.ts";
import { Stages } from "./_stages.ts";

const n = Number(Deno.args[0] ?? "10000");
const which = Deno.args[1] ?? "sqlite";
const rounds = Number(Deno.args[2] ?? "3");
/** `batch`, or per-op with this many requests in flight. */
const concurrency = Number(Deno.args[3] ?? "0");
const batch = concurrency === 0;
const ROUND = 1000;

const stages = new Stages();

/**
 * A storage call's stage: its method, and for a write whether it claims
 * (only op puts) or settles (op deletes, record puts).
 */
function stageOf(method: string, args: unknown[]): string {
  if (method !== "write") return `storage.${method}`;
  const mutations = args[0] as readonly { readonly type: string }[];
  const claim = mutations.every((mutation) => mutation.type === "putOp");
  return claim ? "storage.write (claim)" : "storage.write (settle)";
}

/**
 * With `REMOTE=1`, the server runs in another process (`server/serve.ts`,
 * memory store), one per drain: the client's work then overlaps with the
 * server's for real.
 */
interface Remote extends AsyncDisposable {
  readonly url: string;
}
async function startRemote(): Promise<Remote> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../server/serve.ts", import.meta.url).pathname,
      "--port",
      "0",
      "--db",
      ":memory:",
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  let match: RegExpMatchArray | null = null;
  while (match === null) {
    const { value, done } = await reader.read();
    if (done) {
      throw new Error(`Cannot start the server: current value is ${text}`);
    }
    text += value;
    match = text.match(/http:\/\/[\w.]+:(\d+)/);
  }
  reader.releaseLock();
  child.stdout.cancel().catch(() => {});
  return {
    url: `http://127.0.0.1:${match[1]}`,
    async [Symbol.asyncDispose]() {
      child.kill();
      await child.status;
    },
  };
}
let remote: Remote | undefined;

const dir = await Deno.makeTempDir({ prefix: "profile_drain_" });
try {
  for (let round = 0; round < rounds; round++) {
    stages.all.clear();
    const raw = which === "memory"
      ? createMemoryStorage()
      : await openSqliteStorage(`${dir}/outbox-${round}.sqlite`);
    const records = Array.from({ length: n }, (_, i) => makeRecord(i));
    {
      await using fillTransport = createRestTransport({
        baseUrl: "http://127.0.0.1:9",
      });
      await using filler = new SyncEngine({
        storage: raw,
        transport: fillTransport,
      });
      await filler.table(KIND).putMany(records);
    }
    const ops: WireOp[] = (await raw.listOps({ states: ["pending"] })).map((
      { value },
    ) => ({ key: value.opId, id: value.id, payload: value.payload! }));
    if (Deno.env.get("REMOTE") === "1") remote = await startRemote();
    let engineMs: number;
    let pushed: number;
    let written: number;
    {
      await using server = remote ?? new DrainServer();
      const transport = createRestTransport({
        baseUrl: server.url,
        batch,
        batchSize: ROUND,
        concurrency: Math.max(1, concurrency),
      });
      const engine = new SyncEngine({
        storage: stages.storage(raw, stageOf),
        transport: stages.transport(transport, "push"),
        pushBatchSize: ROUND,
      });
      engine.table(KIND);
      const started = performance.now();
      const { stats } = await engine.sync({ pullKinds: [] });
      engineMs = performance.now() - started;
      pushed = stats.pushed;
      written = server instanceof DrainServer ? server.written : NaN;
      await engine.close();
      await transport.close();
    }
    await raw.close();
    let bareMs: number;
    {
      await using server = remote === undefined
        ? new DrainServer()
        : await startRemote();
      const started = performance.now();
      if (batch) await bareBatch(server.url, ops, ROUND);
      else await barePerOp(server.url, ops, concurrency);
      bareMs = performance.now() - started;
    }
    const perOp = (ms: number) => `${(ms * 1000 / n).toFixed(1)} µs/op`;
    console.log(
      `${which} ${
        batch ? "batch" : `per-op ×${concurrency}`
      } ${n} (round ${round}): engine ${engineMs.toFixed(0)} ms (${
        perOp(engineMs)
      }, ${Math.round(n / (engineMs / 1000))} ops/s), bare ${
        bareMs.toFixed(0)
      } ms (${perOp(bareMs)}) = ${
        (100 * bareMs / engineMs).toFixed(0)
      } % of bare; pushed ${pushed}, server wrote ${written}`,
    );
    let staged = 0;
    for (
      const [name, stage] of [...stages.all].sort((a, b) => b[1].ms - a[1].ms)
    ) {
      staged += stage.ms;
      console.log(
        `  ${name.padEnd(22)} ${stage.ms.toFixed(1).padStart(8)} ms ${
          perOp(stage.ms).padStart(14)
        } ${String(stage.calls).padStart(6)} calls`,
      );
    }
    console.log(
      `  ${"(engine's own code)".padEnd(22)} ${
        (engineMs - staged).toFixed(1).padStart(8)
      } ms ${perOp(engineMs - staged).padStart(14)}`,
    );
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
