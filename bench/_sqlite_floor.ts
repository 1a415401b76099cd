/**
 * The floor of the batch drain into an SQLite outbox (issue 14), measured in
 * one run: what the drain's storage work costs when written by hand, with no
 * engine and no adapter, against the bare `POST /batch` requests it rides
 * on.
 *
 * Each of the floors of `bench/_drain_floor.ts` (this layout by hand,
 * set-based outbox verbs, the least a durable outbox does) runs on a copy of
 * one outbox of `N` pending ops filled through `table.put()`, interleaved
 * with the bare client of `bench/outbox_bench.ts` POSTing the same ops to
 * the reference server in batches of 1,000.
 *
 * It prints µs per op for each step and the ceiling each leaves: the share
 * of the bare rate a client could reach if the storage were all it did
 * (`bare ÷ (bare + storage)`), and its ops/s.
 *
 * ```sh
 * deno run -A bench/_sqlite_floor.ts            # 10,000 ops, 5 rounds
 * deno run -A bench/_sqlite_floor.ts 10000 7
 * ```
 *
 * @module
 */

import { FLOORS, onCopy, type Stages } from "./_drain_floor.ts";
import {
  bareBatch,
  createTemplate,
  DrainServer,
  readWireOps,
} from "./_drain.ts";

const N = Number(Deno.args[0] ?? "10000");
const ROUNDS = Number(Deno.args[1] ?? "5");
const STEP = 1_000;

const dir = await Deno.makeTempDir({ prefix: "sqlite_floor_" });
try {
  const template = await createTemplate(`${dir}/template.sqlite`, {
    records: N,
    edits: N,
    coalesce: false,
  });
  const ops = await readWireOps(template, `${dir}/wire.sqlite`);

  const runs: {
    bare: number;
    layout: Stages;
    verbs: Stages;
    least: Stages;
  }[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    // Interleaved, so that a noisy moment hits all three alike.
    await using server = new DrainServer();
    const started = performance.now();
    const accepted = await bareBatch(server.url, ops, STEP);
    const bare = performance.now() - started;
    if (accepted !== N) throw new Error(`bare accepted ${accepted} of ${N}`);
    const layout = await onCopy(
      template.path,
      `${dir}/l${round}`,
      FLOORS["this layout by hand"],
    );
    const verbs = await onCopy(
      template.path,
      `${dir}/v${round}`,
      FLOORS["set-based outbox verbs (prototype)"],
    );
    const least = await onCopy(
      template.path,
      `${dir}/m${round}`,
      FLOORS["the least a durable outbox does"],
    );
    runs.push({ bare, layout, verbs, least });
  }

  const median = (values: number[]) =>
    values.sort((a, b) => a - b)[values.length >> 1]!;
  const perOp = (ms: number) => (1000 * ms) / N;
  const bare = perOp(median(runs.map((run) => run.bare)));
  console.log(
    `SQLite drain floor, ${N} ops, medians of ${ROUNDS} interleaved rounds (µs/op)`,
  );
  console.log(`  bare POST /batch of ${STEP}: ${bare.toFixed(1)}`);
  const names = {
    layout: "this layout by hand",
    verbs: "set-based outbox verbs (prototype)",
    least: "the least a durable outbox does",
  };
  for (const which of ["layout", "verbs", "least"] as const) {
    const stages = Object.keys(runs[0]![which]);
    const parts = stages.map((stage) => ({
      stage,
      us: perOp(median(runs.map((run) => run[which][stage]!))),
    }));
    const total = parts.reduce((sum, part) => sum + part.us, 0);
    const ceiling = bare / (bare + total);
    console.log(
      `  ${names[which]}: ${total.toFixed(1)} = ${
        parts.map((part) => `${part.stage} ${part.us.toFixed(1)}`).join(", ")
      }`,
    );
    console.log(
      `    ceiling with nothing else on the client: ${
        (100 * ceiling).toFixed(0)
      } % of bare, ${
        Math.round(1e6 / (bare + total)).toLocaleString("en-US")
      } ops/s`,
    );
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
