/**
 * `deno task chaos`: runs chaos seeds from the command line and prints, per
 * verdict and per fault type, what happened. A failing seed is printed with
 * its verdict, what the verdict found and its shrunk op list; the run goes
 * on, and the exit code is 1 when any seed failed.
 *
 * ```sh
 * deno task chaos --runs 1000 --seed 1 --storage memory|sqlite|kv|mix \
 *   --backend embedded|embedded-sqlite|mix|http://host:port [--large]
 * ```
 *
 * `--large` makes each run 5 clients and 300 ops; `--clients N` and
 * `--ops N` set them directly; `--progress N` prints the figures every N
 * runs (default 1000); `--shrink N` shrinks the first N failures (default 3).
 *
 * @module
 */

import { addCounts } from "./_convergence.ts";
import { formatOps } from "./_ops.ts";
import { runChaos } from "./_run.ts";
import { shrinkOps } from "./_shrink.ts";
import type {
  ChaosOpType,
  ChaosStorageName,
  FaultType,
  VerdictName,
} from "./_types.ts";

function flag(name: string): string | undefined {
  const index = Deno.args.indexOf(`--${name}`);
  if (index === -1) return undefined;
  return Deno.args[index + 1];
}

function numberFlag(name: string, fallback: number): number {
  const text = flag(name);
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 0) {
    console.error(
      `--${name} must be a non-negative integer: current value is ${text}`,
    );
    Deno.exit(2);
  }
  return value;
}

const large = Deno.args.includes("--large");
const runs = numberFlag("runs", 100);
const firstSeed = numberFlag("seed", 1);
const clients = numberFlag("clients", large ? 5 : 3);
const ops = numberFlag("ops", large ? 300 : 30);
const progress = numberFlag("progress", 1000);
let shrinkLeft = numberFlag("shrink", 3);
const storageFlag = flag("storage") ?? "memory";
const backendFlag = flag("backend") ?? "embedded";
const STORAGES: readonly ChaosStorageName[] = ["memory", "sqlite", "kv"];
const BACKENDS = ["embedded", "embedded-sqlite"] as const;
if (
  storageFlag !== "mix" && !STORAGES.includes(storageFlag as ChaosStorageName)
) {
  console.error(
    `--storage must be memory, sqlite, kv or mix: current value is ${storageFlag}`,
  );
  Deno.exit(2);
}

const verdicts: Record<
  string,
  { pass: number; fail: number; unchecked: number }
> = {};
const faults: Partial<Record<FaultType, number>> = {};
const opTotals: Partial<Record<ChaosOpType, number>> = {};
const failures: string[] = [];
let requests = 0;
let done = 0;
const started = performance.now();

function report(final: boolean): void {
  const seconds = (performance.now() - started) / 1000;
  console.log(
    `${final ? "== final" : "-- progress"}: ${done} runs in ${
      seconds.toFixed(0)
    } s (${
      (done / seconds).toFixed(1)
    } runs/s), ${failures.length} failed, ${requests} requests`,
  );
  console.log(
    "verdicts: " +
      Object.entries(verdicts).map(([name, c]) =>
        `${name} ${c.pass} pass / ${c.fail} fail${
          c.unchecked > 0 ? ` / ${c.unchecked} unchecked` : ""
        }`
      ).join(", "),
  );
  console.log(
    "faults: " +
      Object.entries(faults).sort(([a], [b]) => a.localeCompare(b)).map((
        [name, n],
      ) => `${name} ${n}`).join(", "),
  );
  console.log(
    "ops: " +
      Object.entries(opTotals).sort(([a], [b]) => a.localeCompare(b)).map((
        [name, n],
      ) => `${name} ${n}`).join(", "),
  );
  if (final && failures.length > 0) {
    console.log("failing seeds: " + failures.join(" "));
  }
}

for (let seed = firstSeed; seed < firstSeed + runs; seed++) {
  const storage = storageFlag === "mix"
    ? STORAGES[seed % 3]!
    : storageFlag as ChaosStorageName;
  const backend = backendFlag === "mix"
    ? BACKENDS[Math.floor(seed / 3) % 2]!
    : backendFlag;
  const options = { seed, storage, backend, clients, ops };
  const result = await runChaos(options);
  done++;
  requests += result.requests;
  addCounts(faults, result.faults);
  addCounts(opTotals, result.opCounts);
  for (const [name, verdict] of Object.entries(result.verdicts)) {
    verdicts[name] ??= { pass: 0, fail: 0, unchecked: 0 };
    verdicts[name][verdict.status]++;
  }
  if (!result.ok) {
    const failed = Object.entries(result.verdicts).filter(([, v]) =>
      v.status === "fail"
    );
    const verdict = failed[0]![0] as VerdictName;
    failures.push(`${seed}:${storage}:${backend}:${verdict}`);
    console.log(
      `FAIL seed ${seed} (${storage}, ${backend}): ${
        failed.map(([name, v]) => `${name}: ${v.detail}`).join(" | ")
      }`,
    );
    if (shrinkLeft > 0) {
      shrinkLeft--;
      const shrunk = await shrinkOps(result.opList, {
        budget: 100,
        fails: async (list) =>
          (await runChaos({ ...options, opList: list })).verdicts[verdict]
            .status === "fail",
      });
      console.log(
        `shrunk ops (${shrunk.ops.length} of ${result.opList.length}, ${shrunk.tries} tries):\n${
          formatOps(shrunk.ops)
        }`,
      );
    }
  }
  if (progress > 0 && done % progress === 0 && done < runs) report(false);
}
report(true);
Deno.exit(failures.length > 0 ? 1 : 0);
