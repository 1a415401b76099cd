/**
 * The goals table `deno task bench` prints (bench/_goals.ts): each figure is
 * read off the right rows of one run, against the right baseline.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type Goal, measureGoals, type RowTime } from "../bench/_goals.ts";

function row(
  group: string,
  name: string,
  avg: number,
  baseline = false,
): RowTime {
  return { file: "x_bench.ts", group, name, baseline, avg };
}

const base = { file: "x_bench.ts", group: "g" } as const;

Deno.test("goals: a share is the baseline's time over the row's", () => {
  const goal: Goal = {
    ...base,
    label: "share",
    row: "ours",
    measure: { type: "share", target: 50 },
  };
  const rows = [row("g 10k", "bare", 100, true), row("g 10k", "ours", 250)];
  const [result] = measureGoals(rows, [goal]);
  assert.equal(result?.measured, "40 %");
  assert.equal(result?.met, false);
  const [faster] = measureGoals(
    [row("g", "bare", 100, true), row("g", "ours", 200)],
    [goal],
  );
  assert.equal(faster?.measured, "50 %");
  assert.equal(faster?.met, true);
});

Deno.test("goals: a named baseline row is used instead of the group's", () => {
  const goal: Goal = {
    ...base,
    label: "faster",
    row: "ours: put",
    baseline: "rxdb: insert",
    measure: { type: "faster" },
  };
  const rows = [
    row("g", "rxdb: bulkInsert", 10, true),
    row("g", "rxdb: insert × N", 300),
    row("g", "ours: put × N", 200),
  ];
  const [result] = measureGoals(rows, [goal]);
  assert.equal(result?.measured, "1.50× faster");
  assert.equal(result?.met, true);
  const [slower] = measureGoals(
    [row("g", "rxdb: insert × N", 100), row("g", "ours: put × N", 200)],
    [goal],
  );
  assert.equal(slower?.measured, "2.00× slower");
  assert.equal(slower?.met, false);
});

Deno.test("goals: growth is per item, a rate counts the bench's items", () => {
  const growth: Goal = {
    ...base,
    label: "growth",
    row: "100k",
    measure: { type: "growth", target: 1.2, rowItems: 100, baselineItems: 1 },
  };
  const rows = [row("g", "1k", 10, true), row("g", "100k", 1_150)];
  const [grew] = measureGoals(rows, [growth]);
  assert.equal(grew?.measured, "1.15×");
  assert.equal(grew?.met, true);
  const rate: Goal = {
    ...base,
    label: "rate",
    row: "100k",
    measure: { type: "rate", target: 50_000, items: 10_000 },
  };
  // 10,000 items in 0.25 s: 40k/s.
  const [slow] = measureGoals([row("g", "100k", 250e6)], [rate]);
  assert.equal(slow?.measured, "40.0k/s");
  assert.equal(slow?.met, false);
});

Deno.test("goals: rows the run does not hold are left out", () => {
  const goal: Goal = {
    ...base,
    label: "missing",
    row: "ours",
    measure: { type: "share", target: 50 },
  };
  assert.deepEqual(measureGoals([row("g", "bare", 1, true)], [goal]), []);
  // No baseline: no ratio.
  assert.deepEqual(measureGoals([row("g", "ours", 1)], [goal]), []);
  // Another file's rows do not count.
  assert.deepEqual(
    measureGoals([{ ...row("g", "ours", 1), file: "y_bench.ts" }], [goal]),
    [],
  );
});

Deno.test("goals: a floor row is measured like its goal, in its own group", () => {
  const share: Goal = {
    ...base,
    label: "share",
    row: "ours",
    measure: { type: "share", target: 50 },
    floor: { what: "by hand", row: "floor:" },
  };
  const rows = [
    row("g", "bare", 100, true),
    row("g", "ours", 400),
    row("g", "floor: by hand", 250),
  ];
  const [result] = measureGoals(rows, [share]);
  assert.equal(result?.measured, "25 %");
  assert.deepEqual(result?.floor, {
    what: "by hand",
    measured: "40 %",
    met: false,
  });
  // A floor that meets the goal says so: the gap is then ours.
  const [ours] = measureGoals(
    [rows[0]!, rows[1]!, row("g", "floor: by hand", 150)],
    [share],
  );
  assert.equal(ours?.floor?.met, true);
  // No floor row in the run: no floor.
  const [none] = measureGoals(rows.slice(0, 2), [share]);
  assert.equal(none?.floor, undefined);
  // A growth goal's floor in another group, with that group's baseline.
  const growth: Goal = {
    ...base,
    label: "growth",
    row: "100k",
    measure: { type: "growth", target: 1.2, rowItems: 1, baselineItems: 1 },
    floor: { what: "raw", group: "raw", row: "100k" },
  };
  const [grew] = measureGoals([
    row("g", "1k", 10, true),
    row("g", "100k", 20),
    row("raw at N", "1k", 10, true),
    row("raw at N", "100k", 30),
  ], [growth]);
  assert.equal(grew?.measured, "2.00×");
  assert.deepEqual(grew?.floor, { what: "raw", measured: "3.00×", met: false });
});
