/**
 * `deno task bench`: runs `deno bench --json` over the given files (all of
 * `bench/` by default) and prints every row as a ratio to its group's
 * baseline, measured in the same run: "ours ÷ baseline" of the mean time
 * per iteration (below 1 is faster), and the same as a share of the
 * baseline's rate. The group and row names are the labels
 * `docs/benchmarks.md` uses. It ends with the goals table of that page, each
 * goal read off this run's rows (`_goals.ts`). `BENCH_SCALE` passes through
 * (see `_scale.ts`).
 *
 * @module
 */

interface Stats {
  readonly avg: number;
  readonly min: number;
  readonly n: number;
}

interface Bench {
  readonly origin: string;
  readonly group: string | null;
  readonly name: string;
  readonly baseline: boolean;
  readonly results: readonly {
    readonly ok?: Stats;
    readonly failed?: unknown;
  }[];
}

import { measureGoals, type RowTime } from "./_goals.ts";

const files = Deno.args.length > 0 ? Deno.args : ["bench/"];
const output = await new Deno.Command(Deno.execPath(), {
  args: ["bench", "--allow-all", "--lock=bench/deno.lock", "--json", ...files],
  stdout: "piped",
  stderr: "inherit",
}).output();
const text = new TextDecoder().decode(output.stdout);
const start = text.indexOf("{");
if (!output.success || start < 0) {
  console.error(text);
  Deno.exit(output.code || 1);
}
const { benches } = JSON.parse(text.slice(start)) as {
  benches: readonly Bench[];
};

/** Formats a time in ns for people. */
function time(ns: number): string {
  if (ns >= 1e9) return `${(ns / 1e9).toFixed(2)} s`;
  if (ns >= 1e6) return `${(ns / 1e6).toFixed(2)} ms`;
  if (ns >= 1e3) return `${(ns / 1e3).toFixed(2)} µs`;
  return `${ns.toFixed(0)} ns`;
}

const groups = new Map<string, Bench[]>();
for (const bench of benches) {
  const key = `${bench.origin.split("/").pop()} · ${bench.group ?? bench.name}`;
  groups.set(key, [...(groups.get(key) ?? []), bench]);
}
let failed = 0;
for (const [group, rows] of groups) {
  console.log(`\n${group}`);
  const baseline = rows.find((row) => row.baseline)?.results[0]?.ok;
  for (const row of rows) {
    const stats = row.results[0]?.ok;
    if (stats === undefined) {
      failed++;
      console.log(`  ${row.name}: FAILED`);
      continue;
    }
    if (row.baseline || baseline === undefined) {
      console.log(`  ${row.name}: ${time(stats.avg)} per iteration`);
      continue;
    }
    const ratio = stats.avg / baseline.avg;
    console.log(
      `  ${row.name}: ours ÷ baseline = ${ratio.toFixed(2)} (${
        (100 / ratio).toFixed(0)
      } % of the baseline's rate; ${time(stats.avg)} vs ${time(baseline.avg)})`,
    );
  }
}
// The goals table of docs/benchmarks.md, read off this run's rows.
const rows: RowTime[] = [];
for (const bench of benches) {
  const stats = bench.results[0]?.ok;
  if (stats === undefined) continue;
  rows.push({
    file: bench.origin.split("/").pop()!,
    group: bench.group ?? bench.name,
    name: bench.name.replace(/^baseline: /, ""),
    baseline: bench.baseline,
    avg: stats.avg,
  });
}
const goals = measureGoals(rows);
if (goals.length > 0) {
  console.log("\ngoals (docs/benchmarks.md), this run");
  for (const { goal, measured, target, met, floor } of goals) {
    const below = floor === undefined
      ? ""
      : `; floor ${floor.measured} (${floor.what})${
        floor.met ? "" : ", short of the goal too"
      }`;
    console.log(
      `  ${goal.label}: ${measured} (goal ${target}) ${
        met ? "met" : "NOT met"
      }${below}`,
    );
  }
}
Deno.exit(failed > 0 ? 1 : 0);
