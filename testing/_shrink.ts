/**
 * Delta debugging over a failing run's op list (Zeller's ddmin): remove
 * chunks, then single ops, while the same verdict still fails with the same
 * seed (so the same fault schedule). Private.
 *
 * @module
 */

import type { ChaosOp } from "./_types.ts";

/** What {@linkcode shrinkOps} needs. */
export interface ShrinkOptions {
  /** Tells whether a list still fails the same way. */
  readonly fails: (ops: readonly ChaosOp[]) => Promise<boolean>;
  /**
   * The most lists to try.
   *
   * @default {200}
   */
  readonly budget?: number;
}

/** The outcome of {@linkcode shrinkOps}. */
export interface ShrinkResult {
  /** The smallest failing list found. */
  readonly ops: readonly ChaosOp[];
  /** How many lists were tried. */
  readonly tries: number;
}

/**
 * Shrinks a failing op list.
 *
 * @param ops A list that fails.
 * @param options The test and the budget.
 * @returns A list that still fails, 1-minimal when the budget allowed.
 */
export async function shrinkOps(
  ops: readonly ChaosOp[],
  options: ShrinkOptions,
): Promise<ShrinkResult> {
  const budget = options.budget ?? 200;
  let current = [...ops];
  let tries = 0;
  let chunks = 2;
  while (current.length >= 2 && tries < budget) {
    const size = Math.ceil(current.length / chunks);
    let reduced = false;
    for (
      let start = 0;
      start < current.length && tries < budget;
      start += size
    ) {
      const candidate = [
        ...current.slice(0, start),
        ...current.slice(start + size),
      ];
      tries++;
      if (await options.fails(candidate)) {
        current = candidate;
        chunks = Math.max(chunks - 1, 2);
        reduced = true;
        break;
      }
    }
    if (!reduced) {
      if (chunks >= current.length) break;
      chunks = Math.min(chunks * 2, current.length);
    }
  }
  if (current.length === 1 && tries < budget && await options.fails([])) {
    current = [];
    tries++;
  }
  return { ops: current, tries };
}
