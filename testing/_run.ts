/**
 * One chaos run: open the backend and the clients, run the op list with
 * faults on, heal (faults off, every client syncs until quiescent), then
 * judge. Private; `./mod.ts` publishes it as `runChaos`.
 *
 * @module
 */

import type { ConflictStrategy } from "../src/conflict.ts";
import type { SyncResult } from "../src/engine.ts";
import { Resolutions } from "../src/conflict.ts";
import { openBackend } from "./_backend.ts";
import { ChaosClient } from "./_client.ts";
import { createFaultLink, type FaultLink } from "./_fault_fetch.ts";
import { Ledger } from "./_ledger.ts";
import { RunModel } from "./_model.ts";
import { generateOps } from "./_ops.ts";
import { createPrng, deriveSeed } from "./_prng.ts";
import type {
  ChaosOp,
  ChaosOptions,
  ChaosResult,
  EventRates,
  FaultRates,
  FaultType,
  VerdictName,
} from "./_types.ts";
import {
  checkConvergence,
  checkExactlyOnce,
  checkNoLostWrite,
  checkNoServerError,
  checkNoStuckClient,
  type Views,
} from "./_verdicts.ts";

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
  const kinds = Object.keys(strategies);
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
  let healRounds = 0;
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

    async function timedSync(
      client: ChaosClient,
      phase: string,
    ): Promise<SyncResult | Error> {
      const before = links[client.index]!.requests();
      const controller = new AbortController();
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        controller.abort();
      }, syncTimeoutMs);
      try {
        return await client.engine.sync({ signal: controller.signal });
      } catch (error) {
        return error instanceof Error ? error : new Error(String(error));
      } finally {
        clearTimeout(timer);
        if (timedOut) {
          model.stuck.push(
            `c${client.index}: a ${phase} sync took over ${syncTimeoutMs} ms`,
          );
        }
        const made = links[client.index]!.requests() - before;
        if (phase === "heal" && made > 400) {
          model.stuck.push(
            `c${client.index}: a heal sync made ${made} requests`,
          );
        }
      }
    }

    // Chaos.
    for (const op of opList) {
      opCounts[op.type] = (opCounts[op.type] ?? 0) + 1;
      await runOp("kind" in op ? { ...op, kind: prefix + op.kind } : op);
    }

    async function runOp(op: ChaosOp): Promise<void> {
      switch (op.type) {
        case "restart":
          if (await backend.restart()) count("serverRestart");
          return;
        case "purge":
          if (await backend.purge()) count("tombstonePurge");
          return;
        default:
      }
      const client = clients[op.client];
      if (client === undefined) return;
      switch (op.type) {
        case "put":
          await client.table(op.kind).put({
            id: op.id,
            w: op.mark,
            n: op.n,
            [`f${op.n % 3}`]: op.n,
          });
          model.wrote({
            client: op.client,
            kind: op.kind,
            id: op.id,
            mark: op.mark,
          });
          return;
        case "patch": {
          const table = client.table(op.kind);
          if ((await table.get(op.id)) === undefined) return;
          await table.update(op.id, { w: op.mark, [`f${op.n % 3}`]: op.n });
          model.wrote({
            client: op.client,
            kind: op.kind,
            id: op.id,
            mark: op.mark,
          });
          return;
        }
        case "delete":
          await client.table(op.kind).delete(op.id);
          model.wrote({
            client: op.client,
            kind: op.kind,
            id: op.id,
            mark: null,
          });
          return;
        case "putMany":
          await client.table(op.kind).putMany(
            op.ids.map((id) => ({ id, w: `${op.mark}:${id}`, n: 0 })),
          );
          for (const id of op.ids) {
            model.wrote({
              client: op.client,
              kind: op.kind,
              id,
              mark: `${op.mark}:${id}`,
            });
          }
          return;
        case "sync":
          await timedSync(client, "chaos");
          return;
        case "reopen":
          await client.reopen();
          count("clientReopen");
          return;
        case "skew":
          client.skewMs = op.ms;
          count("clockSkew");
          return;
      }
    }

    // Heal: faults off, then every client syncs until a whole round
    // changes nothing. Parked conflicts are resolved on the way, taking the
    // client's side or the server's by the mark's parity.
    faulty = false;
    let quiet = false;
    for (healRounds = 1; healRounds <= maxHealRounds && !quiet; healRounds++) {
      quiet = true;
      for (const client of clients) {
        const result = await timedSync(client, "heal");
        if (result instanceof Error) {
          quiet = false;
          if (healRounds > 2) {
            model.stuck.push(
              `c${client.index}: heal sync ${healRounds} failed: ${result.message}`,
            );
          }
          continue;
        }
        const { stats } = result;
        if (stats.pushed + stats.pulled + stats.conflicts + stats.removed > 0) {
          quiet = false;
        }
        for (const entry of await client.engine.conflicts.list()) {
          quiet = false;
          const mark = typeof entry.local?.w === "string"
            ? entry.local.w
            : null;
          const takeServer = mark !== null && mark.length % 2 === 1;
          if (mark !== null) {
            model.inboxMarks.set(
              mark,
              takeServer ? "acceptServer" : "acceptClient",
            );
          }
          await client.engine.conflicts.resolve(
            entry.opId,
            takeServer
              ? Resolutions.acceptServer()
              : Resolutions.acceptClient(),
          );
        }
        if ((await client.engine.outbox.count()) > 0) quiet = false;
      }
    }
    healRounds--;
    if (!quiet) {
      model.stuck.push(`no quiescence after ${maxHealRounds} heal rounds`);
    }

    // Judge.
    const views: Views = {
      server: new Map(
        await Promise.all(
          kinds.map(async (kind) =>
            [kind, await backend.readAll(kind)] as const
          ),
        ),
      ),
      clients: await Promise.all(clients.map(async (client) => {
        const tables = new Map<string, Map<string, Record<string, unknown>>>();
        for (const kind of kinds) {
          const records = await client.table(kind).list({
            includeDeleted: true,
            limit: 100_000,
          });
          tables.set(
            kind,
            new Map(
              records.map((
                record,
              ) => [String(record.id), record as Record<string, unknown>]),
            ),
          );
        }
        return tables;
      })),
    };
    const leftovers: string[] = [];
    for (const client of clients) {
      const left = await client.engine.outbox.list({
        states: ["pending", "quarantined", "parked"],
      });
      for (const op of left.slice(0, 3)) {
        leftovers.push(
          `c${client.index} left ${op.state} op ${op.type} ${op.kind}/${op.id}${
            op.error ? ` (${op.error.message ?? ""})` : ""
          }`,
        );
      }
    }
    const verdicts: Record<VerdictName, ReturnType<typeof checkConvergence>> = {
      convergence: checkConvergence(views),
      noLostWrite: checkNoLostWrite(model, ledger, views, strategies),
      exactlyOnce: checkExactlyOnce(ledger),
      noStuckClient: checkNoStuckClient(model, leftovers),
      noServerError: checkNoServerError(ledger),
    };
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
