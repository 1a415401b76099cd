/**
 * The performance goals `docs/benchmarks.md` states, each read off the rows
 * of one `deno bench` run by `bench/_report.ts`: a goal names its file, its
 * group and row (by the start of their names) and what it asks of the row
 * against a baseline of the same group, so every figure in the table is a
 * ratio of one run (or a rate whose item count the bench fixes).
 *
 * @module
 */

/** The mean time of one bench row, as `deno bench --json` reports it. */
export interface RowTime {
  /** The file's name, e.g. `outbox_bench.ts`. */
  readonly file: string;
  /** The group's name, or the row's when it has no group. */
  readonly group: string;
  /** The row's name. */
  readonly name: string;
  /** Whether the row is its group's baseline. */
  readonly baseline: boolean;
  /** Mean ns per iteration. */
  readonly avg: number;
}

/** What a goal asks of its row. */
export type Measure =
  /** The row's rate is at least `target` % of the baseline's. */
  | { readonly type: "share"; readonly target: number }
  /** The row is faster than the baseline (ours ÷ baseline below 1). */
  | { readonly type: "faster" }
  /**
   * The row's time per item grows at most `target`× from the baseline's:
   * `(row / rowItems) / (baseline / baselineItems)`.
   */
  | {
    readonly type: "growth";
    readonly target: number;
    readonly rowItems: number;
    readonly baselineItems: number;
  }
  /** The row handles at least `target` items/s, `items` per iteration. */
  | { readonly type: "rate"; readonly target: number; readonly items: number };

/** One line of the goals table. */
export interface Goal {
  /** The label `docs/benchmarks.md` uses. */
  readonly label: string;
  /** The bench file's name. */
  readonly file: string;
  /** The start of the group's name. */
  readonly group: string;
  /** The start of the row's name. */
  readonly row: string;
  /** The start of the baseline row's name; the group's baseline if absent. */
  readonly baseline?: string;
  /** What the goal asks. */
  readonly measure: Measure;
  /**
   * A row of the same run that does only what the goal's row cannot skip
   * (no engine, no adapter: statements or requests by hand), measured the
   * same way: when it misses the goal too, the gap is outside this code.
   */
  readonly floor?: Floor;
}

/** Where a goal's floor is measured. */
export interface Floor {
  /** What the floor row does, for the table. */
  readonly what: string;
  /** The start of the floor row's name. */
  readonly row: string;
  /** The start of its group's name; the goal's group if absent. */
  readonly group?: string;
  /**
   * The start of the baseline row's name in that group; the goal's
   * baseline (or the group's) if absent.
   */
  readonly baseline?: string;
}

/** The goals of issue 14, in the order of `docs/benchmarks.md`. */
export const GOALS: readonly Goal[] = [
  {
    label: "drain 10k, batch, SQLite outbox ÷ bare batch POSTs",
    file: "outbox_bench.ts",
    group: "drain 10k ops, batch",
    row: "engine, SQLite outbox",
    measure: { type: "share", target: 50 },
    floor: {
      what: "bare POSTs, then the adapter's statements by hand",
      row: "floor: bare requests + this layout",
    },
  },
  {
    label: "drain 10k, batch, SQLite outbox, end to end",
    file: "outbox_bench.ts",
    group: "drain 10k ops, batch",
    row: "engine, SQLite outbox",
    measure: { type: "rate", target: 50_000, items: 10_000 },
    floor: {
      what: "bare POSTs, then the least a durable SQLite outbox does",
      row: "floor: bare requests + the least",
    },
  },
  {
    label: "drain 10k, batch, memory outbox ÷ bare batch POSTs",
    file: "outbox_bench.ts",
    group: "drain 10k ops, batch",
    row: "engine, memory outbox",
    measure: { type: "share", target: 75 },
    floor: {
      what: "bare POSTs, then a memory outbox's maps and copies by hand",
      row: "floor: bare requests + a memory outbox by hand",
    },
  },
  {
    label: "drain 10k, per-op ×8 ÷ bare fetch ×8",
    file: "outbox_bench.ts",
    group: "drain 10k ops, per-op ×8",
    row: "engine, SQLite outbox",
    measure: { type: "share", target: 80 },
    floor: {
      what: "bare fetches, then the adapter's statements by hand",
      row: "floor: bare requests + this layout",
    },
  },
  {
    label: "drain 10k, per-op ×1 ÷ bare fetch ×1",
    file: "outbox_bench.ts",
    group: "drain 10k ops, per-op ×1",
    row: "engine, SQLite outbox",
    measure: { type: "share", target: 80 },
    floor: {
      what: "bare fetches, then the adapter's statements by hand",
      row: "floor: bare requests + this layout",
    },
  },
  {
    label: "enqueue, SQLite file ÷ raw atomic write",
    file: "enqueue_bench.ts",
    group: "enqueue, SQLite file",
    row: "table.put()",
    measure: { type: "share", target: 85 },
    floor: {
      what: "the record's read and the adapter's statements, by hand",
      row: "floor:",
    },
  },
  {
    label: "enqueue, KV file ÷ raw atomic write",
    file: "enqueue_bench.ts",
    group: "enqueue, KV file",
    row: "table.put()",
    measure: { type: "share", target: 75 },
    floor: {
      what: "the record's get and the adapter's atomic, by hand",
      row: "floor:",
    },
  },
  {
    label: "write 10k docs locally: putMany ÷ RxDB bulkInsert",
    file: "peer_bench.ts",
    group: "write 10k docs locally",
    row: "ours: putMany",
    measure: { type: "faster" },
    floor: {
      what: "a deep copy, a ULID and two Map.set() per doc, by hand",
      row: "floor:",
    },
  },
  {
    label: "write 10k docs locally: put × N ÷ RxDB insert × N",
    file: "peer_bench.ts",
    group: "write 10k docs locally",
    row: "ours: put × N",
    baseline: "rxdb: insert × N",
    measure: { type: "faster" },
  },
  {
    label: "push 10k docs, local writes included ÷ RxDB",
    file: "peer_bench.ts",
    group: "push 10k docs",
    row: "ours",
    measure: { type: "faster" },
  },
  {
    label: "push 10k docs, push only ÷ RxDB",
    file: "peer_bench.ts",
    group: "push 10k docs, push only",
    row: "ours",
    measure: { type: "faster" },
  },
  {
    label: "pull 10k docs ÷ RxDB",
    file: "peer_bench.ts",
    group: "pull 10k docs",
    row: "ours",
    measure: { type: "faster" },
  },
  {
    label: "pull 100k into SQLite (in-process pages) ÷ raw INSERTs",
    file: "pull_bench.ts",
    group: "pull 100k records in pages of 1k, SQLite",
    row: "engine.sync(), in-process",
    measure: { type: "share", target: 60 },
  },
  {
    label: "pull 100k into KV file (over HTTP) ÷ raw atomics",
    file: "pull_bench.ts",
    group: "pull 100k records in pages of 1k, KV",
    row: "engine.sync() over HTTP",
    measure: { type: "share", target: 50 },
    floor: { what: "bare GETs, then the raw atomics", row: "floor:" },
  },
  {
    label: "pull 100k over HTTP into SQLite, end to end",
    file: "pull_bench.ts",
    group: "pull 100k records in pages of 1k, SQLite",
    row: "engine.sync() over HTTP",
    measure: { type: "rate", target: 150_000, items: 100_000 },
    floor: { what: "bare GETs, then the raw INSERTs", row: "floor:" },
  },
  {
    label: "enqueue per op, 100k pending ÷ 1k pending (SQLite)",
    file: "enqueue_bench.ts",
    group: "enqueue at N pending ops, SQLite file",
    row: "100k pending ops",
    measure: { type: "growth", target: 1.2, rowItems: 1, baselineItems: 1 },
    floor: {
      what: "SQLite's own statements in the adapter's layout",
      group: "raw writes at N rows, SQLite file",
      row: "100k",
    },
  },
  {
    label: "drain per op, 100k pending ÷ 1k pending (SQLite)",
    file: "outbox_bench.ts",
    group: "scale: batch drain, SQLite outbox",
    row: "100k ops",
    measure: {
      type: "growth",
      target: 1.2,
      rowItems: 100_000,
      baselineItems: 1_000,
    },
  },
];

/** A goal as measured in one run. */
export interface GoalResult {
  /** The goal. */
  readonly goal: Goal;
  /** The figure, as the table prints it. */
  readonly measured: string;
  /** The goal, as the table prints it. */
  readonly target: string;
  /** Whether the figure meets the goal. */
  readonly met: boolean;
  /** The floor, when the goal names one and the run measured it. */
  readonly floor?: {
    readonly what: string;
    readonly measured: string;
    readonly met: boolean;
  };
}

/**
 * Reads each goal off a run's rows; goals whose rows the run does not hold
 * (another file, a failed row) are left out.
 *
 * @param rows The run's rows.
 * @param goals The goals, {@linkcode GOALS} by default.
 * @returns The goals measured, in order.
 */
export function measureGoals(
  rows: readonly RowTime[],
  goals: readonly Goal[] = GOALS,
): GoalResult[] {
  const results: GoalResult[] = [];
  for (const goal of goals) {
    const found = findRows(rows, goal.file, {
      group: goal.group,
      row: goal.row,
      baseline: goal.baseline,
    });
    if (found === undefined) continue;
    const result = measureOne(goal, found.row, found.baseline);
    if (result === null) continue;
    const { floor } = goal;
    const atFloor = floor === undefined
      ? undefined
      : findRows(rows, goal.file, {
        group: floor.group ?? goal.group,
        row: floor.row,
        baseline: floor.baseline ??
          (floor.group === undefined ? goal.baseline : undefined),
      });
    const measured = atFloor === undefined
      ? null
      : measureOne(goal, atFloor.row, atFloor.baseline);
    results.push(
      measured === null ? result : {
        ...result,
        floor: {
          what: floor!.what,
          measured: measured.measured,
          met: measured.met,
        },
      },
    );
  }
  return results;
}

/** A row's and its baseline's mean times, when the run has the row. */
function findRows(
  rows: readonly RowTime[],
  file: string,
  where: { group: string; row: string; baseline: string | undefined },
): { row: number; baseline: number | undefined } | undefined {
  const inGroup = rows.filter((row) =>
    row.file === file && row.group.startsWith(where.group)
  );
  const row = inGroup.find((row) =>
    !row.baseline && row.name.startsWith(where.row)
  );
  if (row === undefined) return undefined;
  const base = where.baseline === undefined
    ? inGroup.find((row) => row.baseline)
    : inGroup.find((row) => row.name.startsWith(where.baseline!));
  return { row: row.avg, baseline: base?.avg };
}

function measureOne(
  goal: Goal,
  avg: number,
  baseline: number | undefined,
): GoalResult | null {
  const { measure } = goal;
  if (measure.type === "rate") {
    const rate = measure.items / (avg / 1e9);
    return {
      goal,
      measured: `${count(rate)}/s`,
      target: `≥ ${count(measure.target)}/s`,
      met: rate >= measure.target,
    };
  }
  if (baseline === undefined) return null;
  if (measure.type === "share") {
    const share = 100 * baseline / avg;
    return {
      goal,
      measured: `${share.toFixed(0)} %`,
      target: `≥ ${measure.target} %`,
      met: share >= measure.target,
    };
  }
  if (measure.type === "faster") {
    const ratio = avg / baseline;
    return {
      goal,
      measured: ratio <= 1
        ? `${(1 / ratio).toFixed(2)}× faster`
        : `${ratio.toFixed(2)}× slower`,
      target: "faster",
      met: ratio < 1,
    };
  }
  const growth = (avg / measure.rowItems) /
    (baseline / measure.baselineItems);
  return {
    goal,
    measured: `${growth.toFixed(2)}×`,
    target: `≤ ${measure.target}×`,
    met: growth <= measure.target,
  };
}

/** A rate for people: `16.8k`, `150k`, `1.2M`. */
function count(value: number): string {
  if (value >= 1e6) return `${(value / 1e6).toFixed(2)}M`;
  if (value >= 1e3) return `${(value / 1e3).toFixed(1)}k`;
  return value.toFixed(0);
}
