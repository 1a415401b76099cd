/**
 * Shared by the chaos tests: one test that runs a range of seeds through
 * `testConvergence` (a failure throws with the seed, the verdict and the
 * shrunk ops), and the storage/backend matrix. Not published (underscore).
 *
 * @module
 */

import {
  type ChaosBackend,
  type ChaosStorageName,
  testConvergence,
} from "../testing/mod.ts";
import { withTimeout } from "./_timeout.ts";

/** One range of seeds on one storage and backend. */
export interface SeedRange {
  /** The client storage. */
  readonly storage: ChaosStorageName;
  /** The backend. */
  readonly backend: ChaosBackend;
  /** The first seed. */
  readonly firstSeed: number;
  /** How many seeds. */
  readonly runs: number;
  /** Ops per run. */
  readonly ops?: number;
  /** Clients per run. */
  readonly clients?: number;
  /** The test's timeout. */
  readonly timeoutMs: number;
}

/** The most seeds one test runs: a slow machine gets headroom per test. */
const CHUNK = 50;

/**
 * Registers tests that run a range of seeds, at most {@linkcode CHUNK} per
 * test, each with the range's timeout.
 *
 * @param range The seeds, storage and backend.
 */
export function chaosSeeds(range: SeedRange): void {
  const end = range.firstSeed + range.runs;
  for (let first = range.firstSeed; first < end; first += CHUNK) {
    const runs = Math.min(CHUNK, end - first);
    Deno.test(
      `chaos (${range.storage}, ${range.backend}): seeds ${first}-${
        first + runs - 1
      } converge with no lost, doubled or stuck write`,
      withTimeout(range.timeoutMs, async () => {
        await testConvergence({
          firstSeed: first,
          runs,
          storage: range.storage,
          backend: range.backend,
          ops: range.ops ?? 30,
          clients: range.clients ?? 3,
          shrinkBudget: 60,
        });
      }),
    );
  }
}
