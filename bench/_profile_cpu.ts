/**
 * Where a drain's CPU time goes without HTTP (issue 14): V8's sampling CPU
 * profiler through `node:inspector`, started before each push-only drain of
 * a memory or SQLite outbox filled with `N` records and stopped after it
 * (the fills are not sampled), through a transport that answers at once (as
 * in `bench/_profile_engine.ts`). Prints self time by function:
 *
 * ```sh
 * deno run -A bench/_profile_cpu.ts 10000 memory 20
 * deno run -A bench/_profile_cpu.ts 10000 sqlite 5 put        # the fills instead
 * FOCUS=copyObject deno run -A bench/_profile_cpu.ts 10000 memory  # and its callers
 * ```
 *
 * @module
 */

import { Session } from "node:inspector/promises";
import { SyncEngine } from "../mod.ts";
import { KIND, makeRecord } from "./_drain.ts";
import {
  type CpuProfile as Profile,
  instantTransport,
  openOutbox,
} from "./_profile_kit.ts";

const n = Number(Deno.args[0] ?? "10000");
const which = Deno.args[1] ?? "memory";
const rounds = Number(Deno.args[2] ?? "10");
/** `drain` (the default) samples the drains, `put` the fills (`putMany`). */
const phase = Deno.args[3] ?? "drain";

const session = new Session();
session.connect();
await session.post("Profiler.enable");
await session.post("Profiler.setSamplingInterval", { interval: 50 });
const self = new Map<string, number>();
/** With `FOCUS=name`, the callers of that function too. */
const focus = Deno.env.get("FOCUS");
const callers = new Map<string, number>();
/** Self time by source file (native code and the VM's own by name). */
const files = new Map<string, number>();
let total = 0;
const dir = await Deno.makeTempDir({ prefix: "profile_cpu_" });
try {
  for (let round = 0; round < rounds; round++) {
    const storage = await openOutbox(which, dir, round);
    const engine = new SyncEngine({
      storage,
      transport: instantTransport(),
      pushBatchSize: 1000,
    });
    const records = Array.from({ length: n }, (_, i) => makeRecord(i));
    const table = engine.table(KIND);
    if (phase === "put") {
      await session.post("Profiler.start");
      await table.putMany(records);
    } else {
      await table.putMany(records);
      await session.post("Profiler.start");
      await engine.sync({ pullKinds: [] });
    }
    const { profile } = (await session.post("Profiler.stop")) as {
      profile: Profile;
    };
    const byId = new Map(profile.nodes.map((node) => [node.id, node]));
    const parent = new Map<number, number>();
    for (const node of profile.nodes) {
      for (const child of node.children ?? []) parent.set(child, node.id);
    }
    profile.samples.forEach((id, i) => {
      const delta = profile.timeDeltas[i] ?? 0;
      const frame = byId.get(id)!.callFrame;
      const file = frame.url === ""
        ? `(${frame.functionName})`
        : frame.url.replace(
          /^.*\/(bench|src|storage|transport|server)\//,
          "$1/",
        );
      const key = `${frame.functionName || "(anonymous)"} ${file}:${
        frame.lineNumber + 1
      }`;
      self.set(key, (self.get(key) ?? 0) + delta);
      files.set(file, (files.get(file) ?? 0) + delta);
      if (focus !== undefined && frame.functionName === focus) {
        let up = parent.get(id);
        const chain: string[] = [];
        while (up !== undefined && chain.length < 4) {
          const f = byId.get(up)!.callFrame;
          if (f.functionName !== focus) {
            chain.push(`${f.functionName}:${f.lineNumber + 1}`);
          }
          up = parent.get(up);
        }
        const c = chain.join(" < ");
        callers.set(c, (callers.get(c) ?? 0) + delta);
      }
      total += delta;
    });
    await engine.close();
    await storage.close();
  }
} finally {
  await Deno.remove(dir, { recursive: true });
  session.disconnect();
}
const us = (micros: number) => (micros / (rounds * n)).toFixed(2).padStart(6);
console.log(`${us(total)} µs/op sampled (${which}, ${rounds} × ${n} ops)`);
for (
  const [file, micros] of [...files].sort((a, b) => b[1] - a[1]).slice(0, 15)
) {
  console.log(`${us(micros)} µs/op  ${file}`);
}
console.log();
for (
  const [key, micros] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 40)
) {
  console.log(`${us(micros)} µs/op  ${key}`);
}
if (focus !== undefined) {
  console.log(`\ncallers of ${focus}`);
  for (
    const [key, micros] of [...callers].sort((a, b) => b[1] - a[1]).slice(0, 15)
  ) {
    console.log(`${us(micros)} µs/op  ${key}`);
  }
}
