/**
 * A profiling harness for the batch drain (issue 14): fills an SQLite
 * outbox with `N` ops through `putMany`, then drains it to the reference
 * server in the same process over loopback HTTP, timing each stage. Run
 * with `--cpu-prof` to see where the time goes:
 *
 * ```sh
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
import { DrainServer, KIND, makeRecord } from "./_drain.ts";

const n = Number(Deno.args[0] ?? "10000");
const which = Deno.args[1] ?? "sqlite";
const dir = await Deno.makeTempDir({ prefix: "profile_drain_" });
try {
  await using server = new DrainServer();
  const storage = which === "memory"
    ? createMemoryStorage()
    : await openSqliteStorage(`${dir}/outbox.sqlite`);
  const transport = createRestTransport({ baseUrl: server.url });
  const engine = new SyncEngine({ storage, transport });
  const table = engine.table(KIND);
  const records = Array.from({ length: n }, (_, i) => makeRecord(i));
  let started = performance.now();
  await table.putMany(records);
  const fillMs = performance.now() - started;
  started = performance.now();
  const { stats } = await engine.sync();
  const drainMs = performance.now() - started;
  console.log(
    `${which}: putMany ${n}: ${fillMs.toFixed(0)} ms; drain: ${
      drainMs.toFixed(0)
    } ms (${
      Math.round(n / (drainMs / 1000))
    } ops/s), pushed ${stats.pushed}, server wrote ${server.written}`,
  );
  await engine.close();
  await transport.close();
  await storage.close();
} finally {
  await Deno.remove(dir, { recursive: true });
}
