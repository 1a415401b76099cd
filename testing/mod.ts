/**
 * `@offline-first/sync/testing`: the seeded chaos and convergence suite,
 * shipped so that every user can run it against their own backend and
 * storage. A run is one seed: 2 to 5 clients, each a `SyncEngine` over its
 * own storage, do a random mix of put / patch / delete / putMany / sync /
 * close+reopen over a small id space, through a fault layer driven by the
 * same seed (lost requests and answers, duplicates, reordering, `5xx`,
 * `429`/`503` with `Retry-After`, token expiry, cut or garbled bodies,
 * offline stretches, clock skew, server restarts, tombstone purges). Then
 * every client syncs until quiescent and five named verdicts are checked:
 * `convergence`, `noLostWrite`, `exactlyOnce`, `noStuckClient`,
 * `noServerError`. `deno task chaos` runs it from the command line
 * (`testing/cli.ts`); docs/reliability.md says what each verdict promises.
 *
 * @example One seed against the reference server in process
 * ```ts
 * import { runChaos } from "@offline-first/sync/testing";
 * import assert from "node:assert/strict";
 *
 * const result = await runChaos({ seed: 42, clients: 3, ops: 20 });
 * assert.equal(result.ok, true);
 * assert.equal(result.verdicts.convergence.status, "pass");
 * ```
 *
 * @example Many seeds; the first failure throws with its shrunk ops
 * ```ts
 * import { testConvergence } from "@offline-first/sync/testing";
 * import { createMemoryStorage } from "@offline-first/sync/storage/memory";
 * import assert from "node:assert/strict";
 *
 * // Your own adapter: a factory, called again with the same client and
 * // directory on a reopen (a memory storage cannot survive one: no reopens).
 * const summary = await testConvergence({
 *   runs: 3,
 *   ops: 15,
 *   storage: () => Promise.resolve(createMemoryStorage()),
 *   events: { reopen: 0 },
 * });
 * assert.equal(summary.verdicts.convergence.fail, 0);
 * ```
 *
 * @module
 */

export {
  DEFAULT_EVENT_RATES,
  DEFAULT_FAULT_RATES,
  DEFAULT_TABLES,
  runChaos,
} from "./_run.ts";
export {
  ChaosFailureError,
  type ConvergenceOptions,
  type ConvergenceSummary,
  testConvergence,
  type VerdictCounts,
} from "./_convergence.ts";
export { formatOps } from "./_ops.ts";
export { type KillChaosOptions, runKillChaos } from "./_kill.ts";
export { shrinkOps, type ShrinkOptions, type ShrinkResult } from "./_shrink.ts";
export type {
  ChaosBackend,
  ChaosHooks,
  ChaosOp,
  ChaosOptions,
  ChaosOpType,
  ChaosResult,
  ChaosStorageContext,
  ChaosStorageFactory,
  ChaosStorageName,
  EventRates,
  FaultRates,
  FaultType,
  Verdict,
  VerdictName,
} from "./_types.ts";
