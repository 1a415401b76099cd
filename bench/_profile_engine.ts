/**
 * A profiling harness for the engine's own drain work (issue 14): a memory
 * or SQLite outbox filled with `N` ops, drained push-only through a
 * transport that answers every op at once with the record the reference
 * server would return (no HTTP, no server). What it times is the engine and
 * the storage alone, with little noise:
 *
 * ```sh
 * deno run -A bench/_profile_engine.ts 10000 memory 8
 * deno run -A --cpu-prof --cpu-prof-dir=.demo/prof bench/_profile_engine.ts 10000 memory 8
 * ```
 *
 * @module
 */

import { SyncEngine } from "../mod.ts";
import { instantTransport, openOutbox, perItem } from "./_profile_kit.ts";
import { KIND, makeRecord } from "./_drain.ts";

const n = Number(Deno.args[0] ?? "10000");
const which = Deno.args[1] ?? "memory";
const rounds = Number(Deno.args[2] ?? "5");

const dir = await Deno.makeTempDir({ prefix: "profile_engine_" });
const times: number[] = [];
try {
  for (let round = 0; round < rounds; round++) {
    const storage = await openOutbox(which, dir, round);
    const transport = instantTransport();
    const engine = new SyncEngine({ storage, transport, pushBatchSize: 1000 });
    await engine.table(KIND).putMany(
      Array.from({ length: n }, (_, i) => makeRecord(i)),
    );
    const started = performance.now();
    const { stats } = await engine.sync({ pullKinds: [] });
    const ms = performance.now() - started;
    times.push(ms);
    if (stats.pushed !== n) throw new Error(`pushed ${stats.pushed} of ${n}`);
    await engine.close();
    await storage.close();
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
console.log(`${which} ${n}: µs/op per round ${perItem(times, n)}`);
