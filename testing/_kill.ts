/**
 * A process-kill run: client 0 lives in a child process (`deno run`) on an
 * SQLite or KV file and SIGKILLs itself at a seeded point (mid-commit,
 * mid-pull); the parent then runs the other client's ops, opens a new
 * child on the same file, and so on. After the last life the parent opens
 * the file itself, heals and judges as any run. A write in progress at a
 * kill may or may not have committed: its records are left out of the
 * lost-write check, never out of convergence or exactly-once. Private;
 * `./mod.ts` publishes it as `runKillChaos`.
 *
 * @module
 */

import { openBackend } from "./_backend.ts";
import { ChaosClient } from "./_client.ts";
import { createFaultLink } from "./_fault_fetch.ts";
import type { KillPlan } from "./_kill_child.ts";
import { Ledger } from "./_ledger.ts";
import { RunModel } from "./_model.ts";
import { generateOps } from "./_ops.ts";
import { createPrng, deriveSeed } from "./_prng.ts";
import {
  DEFAULT_EVENT_RATES,
  DEFAULT_FAULT_RATES,
  DEFAULT_TABLES,
} from "./_run.ts";
import { heal, judge, runOp, type RunState } from "./_steps.ts";
import type { ChaosOp, ChaosResult, FaultType } from "./_types.ts";

/** Options of {@linkcode runKillChaos}. */
export interface KillChaosOptions {
  /** The seed. */
  readonly seed: number;
  /** The durable storage of the killed client. */
  readonly storage: "sqlite" | "kv";
  /**
   * The number of ops.
   *
   * @default {40}
   */
  readonly ops?: number;
  /**
   * The number of kills (lives of the child, minus one).
   *
   * @default {3}
   */
  readonly kills?: number;
}

const MODES = {
  sqlite: ["statement", "statement", "pull"],
  kv: ["commit-before", "commit-after", "pull"],
} as const;

/**
 * Runs one seed with client process kills.
 *
 * @param options The seed, the storage and the number of kills.
 * @returns The run's verdicts and figures (`processKill` counts the kills).
 */
export async function runKillChaos(
  options: KillChaosOptions,
): Promise<ChaosResult> {
  const started = performance.now();
  const { seed, storage } = options;
  const random = createPrng(deriveSeed(seed, "kills"));
  const tables = DEFAULT_TABLES;
  const opList = generateOps({
    seed,
    ops: options.ops ?? 40,
    clients: 2,
    kinds: Object.keys(tables),
    ids: 4,
    events: { ...DEFAULT_EVENT_RATES, restart: 0 },
  });
  const faults: Partial<Record<FaultType, number>> = {};
  const count = (type: FaultType) => {
    faults[type] = (faults[type] ?? 0) + 1;
  };
  const dir = await Deno.makeTempDir({ prefix: "chaos-kill-" });
  const path = `${dir}/client0.${storage}`;
  const base = "http://chaos.test";
  const ledger = new Ledger(base);
  const backend = await openBackend({
    backend: "embedded",
    dir: () => Promise.resolve(dir),
    ledger,
    hooks: {},
  });
  // The child reaches the server over HTTP; the acknowledgements it gets are
  // read here, on the server's side of the wire.
  const http = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (request) => {
      const body = request.body === null ? null : await request.clone().text();
      const target = backend.target();
      if (target === null) return new Response(null, { status: 503 });
      const url = new URL(request.url);
      const inner = new Request(`${base}${url.pathname}${url.search}`, {
        method: request.method,
        headers: request.headers,
        body,
      });
      const response = await target(inner);
      const text = await response.text();
      ledger.observe(inner, body, response.status, text);
      return new Response(response.status === 204 ? null : text, {
        status: response.status,
        headers: response.headers,
      });
    },
  );
  const url = `http://127.0.0.1:${http.addr.port}`;
  const model = new RunModel();
  const opCounts: Partial<Record<ChaosOp["type"], number>> = {};
  const clients: ChaosClient[] = [];
  try {
    let faulty = true;
    const link1 = createFaultLink({
      random: createPrng(deriveSeed(seed, "faults:1")),
      rates: DEFAULT_FAULT_RATES,
      enabled: () => faulty,
      target: () => backend.target(),
      ledger,
      count,
    });
    const other = new ChaosClient({
      index: 1,
      storage: "memory",
      dir: () => Promise.resolve(dir),
      base,
      link: link1,
      tables,
      random: createPrng(deriveSeed(seed, "client:1")),
      hooks: {},
    });
    await other.open();
    clients.push(other);
    const state: RunState = {
      backend,
      clients: [other, other],
      links: [link1, link1],
      ledger,
      model,
      strategies: tables,
      syncTimeoutMs: 15_000,
      count,
    };
    const kills = options.kills ?? 3;
    let from = 0;
    for (let life = 0; from < opList.length; life++) {
      const last = life >= kills;
      const plan: KillPlan = {
        seed,
        generation: life,
        storage,
        path,
        url,
        ops: opList,
        from,
        killAt: last ? 0 : random.int(1, storage === "sqlite" ? 120 : 40),
        mode: random.pick(MODES[storage]),
        tables,
        rates: DEFAULT_FAULT_RATES,
      };
      const lines = await runChild(plan);
      let reached = opList.length;
      let inFlight: number | null = null;
      for (const line of lines) {
        if (line.killed !== undefined) count("processKill");
        if (typeof line.at !== "number") continue;
        if (line.state === "start") inFlight = line.at;
        else {
          inFlight = null;
          if (line.wrote === true) recordWrite(model, opList[line.at]!, false);
        }
      }
      if (lines.some((line) => line.killed !== undefined)) {
        reached = inFlight ?? lastDone(lines, from);
        if (inFlight !== null) {
          // It may or may not have committed: out of the lost-write check.
          recordWrite(model, opList[inFlight]!, true);
          reached = inFlight + 1;
        }
      }
      // The other client's ops (and the server's) up to where the child got.
      for (let at = from; at < reached; at++) {
        const op = opList[at]!;
        opCounts[op.type] = (opCounts[op.type] ?? 0) + 1;
        if ("client" in op && op.client === 0) continue;
        await runOp(state, op);
      }
      from = reached;
    }
    // The killed client opens its file here, as a restarted app would.
    const link0 = createFaultLink({
      random: createPrng(deriveSeed(seed, "faults:0")),
      rates: DEFAULT_FAULT_RATES,
      enabled: () => faulty,
      target: () => backend.target(),
      ledger,
      count,
    });
    const revived = new ChaosClient({
      index: 0,
      storage: async () => {
        if (storage === "sqlite") {
          const { openSqliteStorage } = await import("../storage/sqlite.ts");
          return await openSqliteStorage(path);
        }
        const { openKvStorage } = await import("../storage/kv.ts");
        return await openKvStorage(path);
      },
      dir: () => Promise.resolve(dir),
      base,
      link: link0,
      tables,
      random: createPrng(deriveSeed(seed, "client:0")),
      hooks: {},
    });
    await revived.open();
    clients.unshift(revived);
    faulty = false;
    const healed: RunState = {
      ...state,
      clients: [revived, other],
      links: [link0, link1],
    };
    const healRounds = await heal(healed, 8);
    const verdicts = await judge(healed);
    return {
      seed,
      ok: Object.values(verdicts).every((v) => v.status !== "fail"),
      verdicts,
      opCounts,
      faults,
      requests: link0.requests() + link1.requests(),
      healRounds,
      opList,
      durationMs: performance.now() - started,
    };
  } finally {
    for (const client of clients) await client.dispose().catch(() => {});
    await http.shutdown();
    await backend.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

function lastDone(
  lines: readonly Record<string, unknown>[],
  from: number,
): number {
  let reached = from;
  for (const line of lines) {
    if (line.state === "done" && typeof line.at === "number") {
      reached = line.at + 1;
    }
  }
  return reached;
}

function recordWrite(model: RunModel, op: ChaosOp, uncertain: boolean): void {
  const client = 0;
  switch (op.type) {
    case "put":
    case "patch":
      model.wrote({
        client,
        kind: op.kind,
        id: op.id,
        mark: uncertain ? null : op.mark,
      });
      return;
    case "delete":
      model.wrote({ client, kind: op.kind, id: op.id, mark: null });
      return;
    case "putMany":
      for (const id of op.ids) {
        model.wrote({
          client,
          kind: op.kind,
          id,
          mark: uncertain ? null : `${op.mark}:${id}`,
        });
      }
      return;
    default:
  }
}

async function runChild(plan: KillPlan): Promise<Record<string, unknown>[]> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-net",
      "--allow-env",
      "--unstable-kv",
      new URL("./_kill_child.ts", import.meta.url).href,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(JSON.stringify(plan)));
  await writer.close();
  const [out, err, status] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.status,
  ]);
  const lines = out.split("\n").filter((line) => line !== "").map((line) =>
    JSON.parse(line) as Record<string, unknown>
  );
  const killed = lines.some((line) => line.killed !== undefined);
  if (!killed && !status.success) {
    throw new Error(
      `Cannot run the kill child as it failed: current value is ${status.code} ${
        err.slice(0, 2000)
      }`,
    );
  }
  return lines;
}
