/**
 * A profiling harness for `table.putMany()` (issue 14's "write 10k docs
 * locally" row): `N` records written in one call to a fresh memory (or
 * SQLite) storage, round after round, with the median per record:
 *
 * ```sh
 * deno run -A bench/_profile_put_many.ts 10000 memory 15
 * deno run -A --cpu-prof --cpu-prof-dir=.demo/prof bench/_profile_put_many.ts 10000 memory 30
 * ```
 *
 * @module
 */

import { SyncEngine } from "../mod.ts";
import { openOutbox, perItem } from "./_profile_kit.ts";
import { createRestTransport } from "../transport/rest.ts";
import { KIND, makeRecord } from "./_drain.ts";

const n = Number(Deno.args[0] ?? "10000");
const which = Deno.args[1] ?? "memory";
const rounds = Number(Deno.args[2] ?? "15");

const dir = await Deno.makeTempDir({ prefix: "profile_put_many_" });
const times: number[] = [];
try {
  for (let round = 0; round < rounds; round++) {
    const storage = await openOutbox(which, dir, round);
    // Port 9 (discard) is never contacted: nothing syncs here.
    await using transport = createRestTransport({
      baseUrl: "http://127.0.0.1:9",
    });
    await using engine = new SyncEngine({ storage, transport });
    const table = engine.table(KIND);
    const records = Array.from({ length: n }, (_, i) => makeRecord(i));
    const started = performance.now();
    await table.putMany(records);
    times.push(performance.now() - started);
    await engine.close();
    await storage.close();
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
console.log(`putMany ${which} ${n}: µs/record per round ${perItem(times, n)}`);
