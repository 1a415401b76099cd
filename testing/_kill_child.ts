/**
 * The child process of a process-kill run: one client on an SQLite or KV
 * file runs its share of the op list against the run's server over HTTP,
 * through its own fault layer, and SIGKILLs itself at a seeded point: the
 * k-th SQLite statement (inside a transaction: mid-commit), just before or
 * after the k-th KV atomic commit, or the k-th write of a pulled page
 * (mid-pull). It reads its plan as JSON on stdin and reports each op's start
 * and end as JSON lines on stdout. Private; run by `./_kill.ts`.
 *
 * @module
 */

import type { SqliteDatabaseLike } from "../src/sqlite_like.ts";
import type { Storage } from "../src/storage.ts";
import { ChaosClient } from "./_client.ts";
import { createFaultLink } from "./_fault_fetch.ts";
import { Ledger } from "./_ledger.ts";
import { RunModel } from "./_model.ts";
import { createPrng, deriveSeed } from "./_prng.ts";
import { runOp, type RunState } from "./_steps.ts";
import type { ChaosOp, FaultRates } from "./_types.ts";
import type { Backend } from "./_backend.ts";

/** What the parent sends on stdin. */
export interface KillPlan {
  /** The run's seed. */
  readonly seed: number;
  /** Which life of the child this is (0 for the first). */
  readonly generation: number;
  /** `"sqlite"` or `"kv"`. */
  readonly storage: "sqlite" | "kv";
  /** The storage file. */
  readonly path: string;
  /** The server's base URL. */
  readonly url: string;
  /** The whole op list; the child runs client 0's ops from `from` on. */
  readonly ops: readonly ChaosOp[];
  /** The first op index to run. */
  readonly from: number;
  /** Where to die: the k-th counted call (`0`: never). */
  readonly killAt: number;
  /** What is counted. */
  readonly mode: "statement" | "commit-before" | "commit-after" | "pull";
  /** The tables and strategies. */
  readonly tables: Readonly<Record<string, string>>;
  /** The fault rates. */
  readonly rates: FaultRates;
}

const encoder = new TextEncoder();
function report(line: Record<string, unknown>): void {
  // Synchronous: the line is out before the next step.
  Deno.stdout.writeSync(encoder.encode(JSON.stringify(line) + "\n"));
}

const plan = JSON.parse(
  await new Response(Deno.stdin.readable).text(),
) as KillPlan;
let calls = 0;
function tick(): void {
  calls++;
  if (plan.killAt > 0 && calls === plan.killAt) {
    report({ killed: calls });
    Deno.kill(Deno.pid, "SIGKILL");
  }
}

/** A connection whose statements count towards the kill. */
function killingDriver(db: SqliteDatabaseLike): SqliteDatabaseLike {
  return new Proxy(db, {
    get(target, property) {
      if (property === "exec") {
        return (sql: string) => {
          tick();
          return target.exec(sql);
        };
      }
      if (property === "prepare") {
        return (sql: string) => {
          const statement = target.prepare(sql);
          return new Proxy(statement, {
            get(inner, name) {
              const value = Reflect.get(inner, name, inner);
              if (typeof value !== "function") return value;
              if (name === "run" || name === "get" || name === "all") {
                return (...args: unknown[]) => {
                  tick();
                  return value.apply(inner, args);
                };
              }
              return value.bind(inner);
            },
          });
        };
      }
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/** A KV whose atomic commits count towards the kill, before or after. */
function killingKv(kv: Deno.Kv, after: boolean): Deno.Kv {
  return new Proxy(kv, {
    get(target, property) {
      if (property === "atomic") {
        return () => {
          const atomic = target.atomic();
          const proxy: Deno.AtomicOperation = new Proxy(atomic, {
            get(inner, name) {
              const value = Reflect.get(inner, name, inner);
              if (name === "commit") {
                return async () => {
                  if (!after) tick();
                  const result = await inner.commit();
                  if (after) tick();
                  return result;
                };
              }
              if (typeof value !== "function") return value;
              // Builder calls return the operation: keep the proxy.
              return (...args: unknown[]) => {
                const out = value.apply(inner, args);
                return out === inner ? proxy : out;
              };
            },
          });
          return proxy;
        };
      }
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/** A storage whose pulled-page writes count towards the kill. */
function killingPulls(storage: Storage): Storage {
  return new Proxy(storage, {
    get(target, property) {
      if (property === "write") {
        return (
          mutations: Parameters<Storage["write"]>[0],
          options?: Parameters<Storage["write"]>[1],
        ) => {
          const page = mutations.some((m) =>
            m.type === "putMeta" && m.key.startsWith("cursor")
          );
          if (page) tick();
          return target.write(mutations, options);
        };
      }
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

async function openStorage(): Promise<Storage> {
  if (plan.storage === "sqlite") {
    const { DatabaseSync } = await import("node:sqlite");
    const { createSqliteStorage } = await import("../storage/sqlite.ts");
    const db = new DatabaseSync(plan.path) as unknown as SqliteDatabaseLike;
    const storage = createSqliteStorage(
      plan.mode === "statement" ? killingDriver(db) : db,
      { closeDatabase: true },
    );
    return plan.mode === "pull" ? killingPulls(storage) : storage;
  }
  const { openKvStorage } = await import("../storage/kv.ts");
  const kv = await Deno.openKv(plan.path);
  const storage = await openKvStorage(
    plan.mode === "commit-before" || plan.mode === "commit-after"
      ? killingKv(kv, plan.mode === "commit-after")
      : kv,
  );
  return plan.mode === "pull" ? killingPulls(storage) : storage;
}

const ledger = new Ledger(plan.url);
const target = (request: Request) => fetch(request);
const link = createFaultLink({
  random: createPrng(deriveSeed(plan.seed, `kill-faults:${plan.generation}`)),
  rates: plan.rates,
  enabled: () => true,
  target: () => target,
  ledger,
  count() {},
});
const client = new ChaosClient({
  index: 0,
  storage: () => openStorage(),
  dir: () => Promise.resolve(""),
  base: plan.url,
  link,
  tables: plan.tables as Record<string, never>,
  random: createPrng(deriveSeed(plan.seed, `kill-client:${plan.generation}`)),
  hooks: {},
});
await client.open();
const backend: Backend = {
  base: plan.url,
  embedded: false,
  target: () => target,
  restart: () => Promise.resolve(false),
  purge: () => Promise.resolve(false),
  readAll: () => Promise.resolve(new Map()),
  close: () => Promise.resolve(),
};
const state: RunState = {
  backend,
  clients: [client],
  links: [link],
  ledger,
  model: new RunModel(),
  strategies: plan.tables as Record<string, never>,
  syncTimeoutMs: 15_000,
  count() {},
};
report({ ready: true });
for (let at = plan.from; at < plan.ops.length; at++) {
  const op = plan.ops[at]!;
  if (!("client" in op) || op.client !== 0) continue;
  report({ at, state: "start" });
  const wrote = await runOp(state, op);
  report({ at, state: "done", wrote });
}
await client.dispose();
report({ finished: true });
