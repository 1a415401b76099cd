/**
 * Keeps the benchmarks from rotting: CI does not run the long benchmarks,
 * but this runs every `bench/*_bench.ts` once at a tiny size
 * (`BENCH_SCALE=tiny`), so each still type-checks, runs and cleans up.
 *
 * @module
 */

import assert from "node:assert/strict";

const root = new URL("../", import.meta.url);
const benches: string[] = [];
for await (const entry of Deno.readDir(new URL("bench/", root))) {
  if (entry.isFile && entry.name.endsWith("_bench.ts")) {
    benches.push(entry.name);
  }
}
benches.sort();

for (const name of benches) {
  Deno.test(`bench: ${name} runs once at a tiny size`, async () => {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["bench", "-A", "--lock=bench/deno.lock", `bench/${name}`],
      cwd: root,
      env: { BENCH_SCALE: "tiny", NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(output.stdout) +
      new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 0, text);
    assert.match(text, /benchmark\s+\|\s+time\/iter/, "it printed results");
  });
}
