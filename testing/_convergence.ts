/**
 * Many seeds in a row: {@linkcode testConvergence} runs them, sums their
 * figures, and on the first failure shrinks the op list and throws a
 * {@linkcode ChaosFailureError} with the seed, the verdict and the shrunk
 * ops. Private; `./mod.ts` publishes it.
 *
 * @module
 */

import { formatOps } from "./_ops.ts";
import { runChaos } from "./_run.ts";
import { shrinkOps } from "./_shrink.ts";
import type {
  ChaosOp,
  ChaosOptions,
  ChaosOpType,
  ChaosResult,
  FaultType,
  VerdictName,
} from "./_types.ts";

/** Options of {@linkcode testConvergence}: a run's options, many seeds. */
export interface ConvergenceOptions
  extends Omit<ChaosOptions, "seed" | "opList"> {
  /**
   * The first seed.
   *
   * @default {1}
   */
  readonly firstSeed?: number;
  /**
   * How many seeds, from `firstSeed` on.
   *
   * @default {100}
   */
  readonly runs?: number;
  /**
   * Whether a failure's op list is shrunk before it is thrown.
   *
   * @default {true}
   */
  readonly shrink?: boolean;
  /**
   * The most runs the shrinker may make.
   *
   * @default {150}
   */
  readonly shrinkBudget?: number;
  /** Called after each run (progress, figures). */
  readonly onRun?: (result: ChaosResult) => void;
}

/** Counts of one verdict over many runs. */
export interface VerdictCounts {
  /** Runs where it passed. */
  pass: number;
  /** Runs where it failed. */
  fail: number;
  /** Runs where the backend could not tell. */
  unchecked: number;
}

/** The figures of {@linkcode testConvergence}. */
export interface ConvergenceSummary {
  /** Runs made. */
  readonly runs: number;
  /** Each verdict's counts. */
  readonly verdicts: Readonly<Record<VerdictName, VerdictCounts>>;
  /** Faults injected, by type, over every run. */
  readonly faults: Readonly<Partial<Record<FaultType, number>>>;
  /** Ops run, by type, over every run. */
  readonly ops: Readonly<Partial<Record<ChaosOpType, number>>>;
  /** HTTP requests made over every run. */
  readonly requests: number;
  /** Wall time, in ms. */
  readonly durationMs: number;
}

/** A run that failed a verdict: its seed, the verdict and the shrunk ops. */
export class ChaosFailureError extends Error {
  /** The failing seed. */
  readonly seed: number;
  /** The first failing verdict. */
  readonly verdict: VerdictName;
  /** What the verdict found. */
  readonly detail: string;
  /** The shrunk op list that still fails that verdict with that seed. */
  readonly ops: readonly ChaosOp[];
  /** The run's whole op list. */
  readonly originalOps: readonly ChaosOp[];

  /**
   * Constructs a new instance.
   *
   * @param failure The seed, verdict, detail and op lists.
   */
  constructor(failure: {
    seed: number;
    verdict: VerdictName;
    detail: string;
    ops: readonly ChaosOp[];
    originalOps: readonly ChaosOp[];
  }) {
    super(
      `Cannot pass chaos seed ${failure.seed} as verdict '${failure.verdict}' failed: current value is ${failure.detail}\n` +
        `shrunk ops (${failure.ops.length} of ${failure.originalOps.length}), replay with runChaos({ seed: ${failure.seed}, opList }):\n` +
        formatOps(failure.ops),
    );
    this.name = "ChaosFailureError";
    this.seed = failure.seed;
    this.verdict = failure.verdict;
    this.detail = failure.detail;
    this.ops = failure.ops;
    this.originalOps = failure.originalOps;
  }
}

const VERDICTS: readonly VerdictName[] = [
  "convergence",
  "noLostWrite",
  "exactlyOnce",
  "noStuckClient",
  "noServerError",
];

/**
 * Runs many seeds; throws on the first that fails a verdict.
 *
 * @param options The runs' options, the seeds and the shrinker's budget.
 * @returns The summed figures when every run passed.
 * @throws {ChaosFailureError} On the first failing seed, with the shrunk ops.
 * @throws {RangeError} When an option is out of range.
 */
export async function testConvergence(
  options: ConvergenceOptions = {},
): Promise<ConvergenceSummary> {
  const started = performance.now();
  const first = options.firstSeed ?? 1;
  const runs = options.runs ?? 100;
  const verdicts = Object.fromEntries(
    VERDICTS.map((name) => [name, { pass: 0, fail: 0, unchecked: 0 }]),
  ) as Record<VerdictName, VerdictCounts>;
  const faults: Partial<Record<FaultType, number>> = {};
  const ops: Partial<Record<ChaosOpType, number>> = {};
  let requests = 0;
  for (let seed = first; seed < first + runs; seed++) {
    const result = await runChaos({ ...options, seed });
    options.onRun?.(result);
    for (const name of VERDICTS) verdicts[name][result.verdicts[name].status]++;
    addCounts(faults, result.faults);
    addCounts(ops, result.opCounts);
    requests += result.requests;
    if (result.ok) continue;
    const verdict = VERDICTS.find((name) =>
      result.verdicts[name].status === "fail"
    )!;
    const shrunk = options.shrink === false
      ? { ops: result.opList }
      : await shrinkOps(result.opList, {
        budget: options.shrinkBudget ?? 150,
        fails: async (list) =>
          (await runChaos({ ...options, seed, opList: list })).verdicts[verdict]
            .status === "fail",
      });
    throw new ChaosFailureError({
      seed,
      verdict,
      detail: result.verdicts[verdict].detail,
      ops: shrunk.ops,
      originalOps: result.opList,
    });
  }
  return {
    runs,
    verdicts,
    faults,
    ops,
    requests,
    durationMs: performance.now() - started,
  };
}

/**
 * Adds one run's counts to a total.
 *
 * @param total The total.
 * @param counts The run's counts.
 */
export function addCounts<K extends string>(
  total: Partial<Record<K, number>>,
  counts: Readonly<Partial<Record<K, number>>>,
): void {
  for (const [key, value] of Object.entries(counts) as [K, number][]) {
    total[key] = (total[key] ?? 0) + value;
  }
}
