/**
 * One chaos run: open the backend and the clients, run the op list with
 * faults on, heal (faults off, every client syncs until quiescent), then
 * judge. Private; `./mod.ts` publishes it as `runChaos`.
 *
 * @module
 */

import type { ConflictStrategy } from "../src/conflict.ts";
import { openBackend } from "./_backend.ts";
import { ChaosClient } from "./_client.ts";
import { createFaultLink, type FaultLink } from "./_fault_fetch.ts";
import { Ledger } from "./_ledger.ts";
import { RunModel } from "./_model.ts";
import { generateOps } from "./_ops.ts";
import { createPrng, deriveSeed } from "./_prng.ts";
import { heal, judge, runOp, type RunState } from "./_steps.ts";
import type {
  ChaosOp,
  ChaosOptions,
  ChaosResult,
  EventRates,
  FaultRates,
  FaultType,
} from "./_types.ts";

/** The fault rates a run uses unless told otherwise. */
export const DEFAULT_FAULT_RATES: FaultRates = Object.freeze({
  dropRequest: 0.04,
  dropResponse: 0.05,
  duplicate: 0.04,
  delay: 0.1,
  serverError: 0.03,
  rateLimit: 0.02,
  unavailable: 0.02,
  expireToken: 0.02,
  truncate: 0.02,
  garbage: 0.02,
  offline: 0.02,
});

/** The run-level fault rates a run uses unless told otherwise. */
export const DEFAULT_EVENT_RATES: EventRates = Object.freeze({
  skew: 0.03,
  restart: 0.02,
  purge: 0.02,
  reopen: 0.04,
});

/** The tables a run uses unless told otherwise: one per strategy. */
export const DEFAULT_TABLES: Readonly<Record<string, ConflictStrategy>> = Object
  .freeze({
    auto: "autoPreserve",
    server: "serverWins",
    client: "clientWins",
    lww: "lastWriteWins",
    merged: "merge",
    manual: "manual",
  });

function checkRange(name: string, value: number, min: number, max: number) {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(
      `Cannot run chaos as '${name}' must be an integer from ${min} to ${max}: current value is ${value}`,
    );
  }
}

/**
 * Runs one seed.
 *
 * @param options The seed and the shape of the run.
 * @returns The run's verdicts and figures.
 */
export async function runChaos(options: ChaosOptions): Promise<ChaosResult> {
  const started = performance.now();
  const seed = options.seed;
  checkRange("seed", seed, 0, 2 ** 32 - 1);
  const clientCount = options.clients ?? 3;
  checkRange("clients", clientCount, 2, 5);
  const opCount = options.ops ?? 30;
  checkRange("ops", opCount, 0, 100_000);
  const ids = options.ids ?? 4;
  checkRange("ids", ids, 1, 1000);
  const syncTimeoutMs = options.syncTimeoutMs ?? 15_000;
  const maxHealRounds = options.maxHealRounds ?? 8;
  const rates: FaultRates = { ...DEFAULT_FAULT_RATES, ...options.faults };
  const events: EventRates = { ...DEFAULT_EVENT_RATES, ...options.events };
  const hooks = options.hooks ?? {};
  const backendName = options.backend ?? "embedded";
  const remote = backendName !== "embedded" &&
    backendName !== "embedded-sqlite";
  // On a shared backend each run gets tables of its own.
  const prefix = remote
    ? `s${seed.toString(36)}-${Date.now().toString(36)}-`
    : "";
  const tables = options.tables ?? DEFAULT_TABLES;
  const strategies: Record<string, ConflictStrategy> = {};
  for (const [kind, strategy] of Object.entries(tables)) {
    strategies[prefix + kind] = strategy;
  }
  const opList: readonly ChaosOp[] = options.opList ??
    generateOps({
      seed,
      ops: opCount,
      clients: clientCount,
      kinds: Object.keys(tables),
      ids,
      events,
    });

  const faults: Partial<Record<FaultType, number>> = {};
  const count = (type: FaultType) => {
    faults[type] = (faults[type] ?? 0) + 1;
  };
  const opCounts: Partial<Record<ChaosOp["type"], number>> = {};
  let tempDir: string | null = null;
  const dirs = new Map<string, string>();
  async function dir(name: string): Promise<string> {
    tempDir ??= await Deno.makeTempDir({ prefix: "chaos-" });
    let path = dirs.get(name);
    if (path === undefined) {
      path = `${tempDir}/${name}`;
      await Deno.mkdir(path, { recursive: true });
      dirs.set(name, path);
    }
    return path;
  }

  const backendBase = remote ? String(backendName) : "http://chaos.test";
  const ledger = new Ledger(backendBase);
  const backend = await openBackend({
    backend: backendName,
    dir: () => dir("server"),
    ledger,
    hooks,
  });
  let faulty = true;
  const links: FaultLink[] = [];
  const clients: ChaosClient[] = [];
  const model = new RunModel();
  try {
    for (let index = 0; index < clientCount; index++) {
      const link = createFaultLink({
        random: createPrng(deriveSeed(seed, `faults:${index}`)),
        rates,
        enabled: () => faulty,
        target: () => backend.target(),
        ledger,
        count,
      });
      links.push(link);
      const client = new ChaosClient({
        index,
        storage: options.storage ?? "memory",
        dir: () => dir(`client${index}`),
        base: backend.base,
        link,
        tables: strategies,
        random: createPrng(deriveSeed(seed, `client:${index}`)),
        hooks,
      });
      await client.open();
      clients.push(client);
    }

    const state: RunState = {
      backend,
      clients,
      links,
      ledger,
      model,
      strategies,
      syncTimeoutMs,
      count,
    };
    for (const op of opList) {
      opCounts[op.type] = (opCounts[op.type] ?? 0) + 1;
      await runOp(state, "kind" in op ? { ...op, kind: prefix + op.kind } : op);
    }
    faulty = false;
    const healRounds = await heal(state, maxHealRounds);
    const verdicts = await judge(state);
    return {
      seed,
      ok: Object.values(verdicts).every((v) => v.status !== "fail"),
      verdicts,
      opCounts,
      faults,
      requests: links.reduce((sum, link) => sum + link.requests(), 0),
      healRounds,
      opList,
      durationMs: performance.now() - started,
    };
  } finally {
    for (const client of clients) await client.dispose().catch(() => {});
    await backend.close().catch(() => {});
    if (tempDir !== null) {
      await Deno.remove(tempDir, { recursive: true }).catch(() => {});
    }
  }
}
