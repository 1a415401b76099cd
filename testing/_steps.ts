/**
 * The three phases of a run over its state: one op with faults on, the
 * heal (faults off, every client syncs until quiescent, parked conflicts
 * resolved on the way), and the judgement. Private.
 *
 * @module
 */

import { Resolutions } from "../src/conflict.ts";
import type { ConflictStrategy } from "../src/conflict.ts";
import type { SyncResult } from "../src/engine.ts";
import type { Backend } from "./_backend.ts";
import type { ChaosClient } from "./_client.ts";
import type { FaultLink } from "./_fault_fetch.ts";
import type { Ledger } from "./_ledger.ts";
import type { RunModel } from "./_model.ts";
import type { ChaosOp, FaultType, Verdict, VerdictName } from "./_types.ts";
import {
  checkConvergence,
  checkExactlyOnce,
  checkNoLostWrite,
  checkNoServerError,
  checkNoStuckClient,
  type Views,
} from "./_verdicts.ts";

/** A heal sync that makes more requests than this counts as stuck. */
const MAX_HEAL_REQUESTS = 400;

/** Everything a run's phases share. */
export interface RunState {
  /** The backend. */
  readonly backend: Backend;
  /** The clients, by number. */
  readonly clients: readonly ChaosClient[];
  /** Each client's fault link, by number. */
  readonly links: readonly FaultLink[];
  /** The server's acknowledgements. */
  readonly ledger: Ledger;
  /** The run's own record. */
  readonly model: RunModel;
  /** The tables (prefixed) and their strategies. */
  readonly strategies: Readonly<Record<string, ConflictStrategy>>;
  /** The longest one sync may take. */
  readonly syncTimeoutMs: number;
  /** Counts one injected fault. */
  readonly count: (type: FaultType) => void;
}

/**
 * Syncs one client within the run's timeout; never rejects.
 *
 * @param state The run.
 * @param client The client.
 * @param phase `"chaos"` or `"heal"` (heal syncs are held to a request bound).
 * @returns The result, or the error the sync rejected with.
 */
export async function timedSync(
  state: RunState,
  client: ChaosClient,
  phase: "chaos" | "heal",
): Promise<SyncResult | Error> {
  const link = state.links[client.index]!;
  const before = link.requests();
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, state.syncTimeoutMs);
  try {
    return await client.engine.sync({ signal: controller.signal });
  } catch (error) {
    return error instanceof Error ? error : new Error(String(error));
  } finally {
    clearTimeout(timer);
    if (timedOut) {
      state.model.stuck.push(
        `c${client.index}: a ${phase} sync took over ${state.syncTimeoutMs} ms`,
      );
    }
    const made = link.requests() - before;
    if (phase === "heal" && made > MAX_HEAL_REQUESTS) {
      state.model.stuck.push(
        `c${client.index}: a heal sync made ${made} requests`,
      );
    }
  }
}

/**
 * Runs one op (faults on).
 *
 * @param state The run.
 * @param op The op, its kind already prefixed.
 * @returns Whether a local write committed.
 */
export async function runOp(state: RunState, op: ChaosOp): Promise<boolean> {
  const { model } = state;
  if (op.type === "restart") {
    if (await state.backend.restart()) state.count("serverRestart");
    return false;
  }
  if (op.type === "purge") {
    if (await state.backend.purge()) state.count("tombstonePurge");
    return false;
  }
  const client = state.clients[op.client];
  if (client === undefined) return false;
  const { index } = client;
  switch (op.type) {
    case "put":
      await client.table(op.kind).put({
        id: op.id,
        w: op.mark,
        n: op.n,
        [`f${op.n % 3}`]: op.n,
      });
      model.wrote({ client: index, kind: op.kind, id: op.id, mark: op.mark });
      return true;
    case "patch": {
      const table = client.table(op.kind);
      if ((await table.get(op.id)) === undefined) return false;
      await table.update(op.id, { w: op.mark, [`f${op.n % 3}`]: op.n });
      model.wrote({ client: index, kind: op.kind, id: op.id, mark: op.mark });
      return true;
    }
    case "delete":
      await client.table(op.kind).delete(op.id);
      model.wrote({ client: index, kind: op.kind, id: op.id, mark: null });
      return true;
    case "putMany":
      await client.table(op.kind).putMany(
        op.ids.map((id) => ({ id, w: `${op.mark}:${id}`, n: 0 })),
      );
      for (const id of op.ids) {
        const mark = `${op.mark}:${id}`;
        model.wrote({ client: index, kind: op.kind, id, mark });
      }
      return true;
    case "sync":
      await timedSync(state, client, "chaos");
      await checkPendingVisible(state, client);
      return false;
    case "reopen":
      await client.reopen();
      state.count("clientReopen");
      return false;
    case "skew":
      client.skewMs = op.ms;
      state.count("clockSkew");
      return false;
  }
}

/**
 * Clause 11, seen from the app: after a sync, a record that still has a
 * pending (or parked) op of this client reads as the client's last write,
 * whatever the pull brought. A miss is a lost write (`model.hidden`).
 *
 * @param state The run.
 * @param client The client that just synced.
 */
async function checkPendingVisible(
  state: RunState,
  client: ChaosClient,
): Promise<void> {
  const ops = await client.engine.outbox.list({
    states: ["pending", "parked"],
  });
  const pending = new Set(ops.map((op) => `${op.kind}/${op.id}`));
  for (const write of state.model.lastWrites.values()) {
    if (write.client !== client.index) continue;
    if (!pending.has(`${write.kind}/${write.id}`)) continue;
    const record = await client.table(write.kind).get(write.id);
    const seen = record === undefined ? null : record.w;
    if (seen !== write.mark) {
      state.model.hidden.push(
        `c${client.index}'s pending write ${write.kind}/${write.id} w=${write.mark} reads as ${
          JSON.stringify(seen ?? null)
        } after a sync`,
      );
    }
  }
}

/**
 * Heals: every client syncs, round after round, until a whole round
 * changes nothing. A parked conflict is resolved on the way, by taking the
 * client's side or the server's (by its mark's parity).
 *
 * @param state The run (faults already off).
 * @param maxRounds The most rounds.
 * @returns The rounds it took.
 */
export async function heal(
  state: RunState,
  maxRounds: number,
): Promise<number> {
  const { model } = state;
  for (let round = 1; round <= maxRounds; round++) {
    let quiet = true;
    for (const client of state.clients) {
      const result = await timedSync(state, client, "heal");
      if (result instanceof Error) {
        quiet = false;
        if (round > 2) {
          model.stuck.push(
            `c${client.index}: heal sync ${round} failed: ${result.message}`,
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
        const mark = typeof entry.local?.w === "string" ? entry.local.w : null;
        const takeServer = mark !== null && mark.length % 2 === 1;
        if (mark !== null) {
          model.inboxMarks.set(
            mark,
            takeServer ? "acceptServer" : "acceptClient",
          );
        }
        await client.engine.conflicts.resolve(
          entry.opId,
          takeServer ? Resolutions.acceptServer() : Resolutions.acceptClient(),
        );
      }
      if ((await client.engine.outbox.count()) > 0) quiet = false;
    }
    if (quiet) return round;
  }
  model.stuck.push(`no quiescence after ${maxRounds} heal rounds`);
  return maxRounds;
}

/**
 * Reads every view and checks the five verdicts.
 *
 * @param state The run, healed.
 * @returns The verdicts.
 */
export async function judge(
  state: RunState,
): Promise<Record<VerdictName, Verdict>> {
  const kinds = Object.keys(state.strategies);
  const server = new Map<string, Map<string, Record<string, unknown>>>();
  for (const kind of kinds) server.set(kind, await state.backend.readAll(kind));
  const clients: Map<string, Map<string, Record<string, unknown>>>[] = [];
  const leftovers: string[] = [];
  for (const client of state.clients) {
    const tables = new Map<string, Map<string, Record<string, unknown>>>();
    for (const kind of kinds) {
      const records = await client.table(kind).list({
        includeDeleted: true,
        limit: 100_000,
      });
      tables.set(
        kind,
        new Map(records.map((record) => [String(record.id), record])),
      );
    }
    clients.push(tables);
    const left = await client.engine.outbox.list({
      states: ["pending", "quarantined", "parked"],
    });
    for (const op of left.slice(0, 3)) {
      leftovers.push(
        `c${client.index} left a ${op.state} ${op.type} of ${op.kind}/${op.id}${
          op.error === null ? "" : ` (${op.error.message})`
        }`,
      );
    }
  }
  const views: Views = { server, clients };
  return {
    convergence: checkConvergence(views),
    noLostWrite: checkNoLostWrite(
      state.model,
      state.ledger,
      views,
      state.strategies,
    ),
    exactlyOnce: checkExactlyOnce(state.ledger),
    noStuckClient: checkNoStuckClient(state.model, leftovers),
    noServerError: checkNoServerError(state.ledger),
  };
}
