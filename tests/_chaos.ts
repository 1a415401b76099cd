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

/**
 * Registers one test that runs a range of seeds.
 *
 * @param range The seeds, storage and backend.
 */
export function chaosSeeds(range: SeedRange): void {
  const last = range.firstSeed + range.runs - 1;
  Deno.test(
    `chaos (${range.storage}, ${range.backend}): seeds ${range.firstSeed}-${last} converge with no lost, doubled or stuck write`,
    withTimeout(range.timeoutMs, async () => {
      await testConvergence({
        firstSeed: range.firstSeed,
        runs: range.runs,
        storage: range.storage,
        backend: range.backend,
        ops: range.ops ?? 30,
        clients: range.clients ?? 3,
        shrinkBudget: 60,
      });
    }),
  );
}
