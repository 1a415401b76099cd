/**
 * Summarizes V8 `.cpuprofile` files (from `deno run --cpu-prof`): self time
 * by source file and by function, the top rows of each.
 *
 * @module
 */

import type { CpuProfile as Profile } from "./_profile_kit.ts";

for (const path of Deno.args) {
  const profile = JSON.parse(await Deno.readTextFile(path)) as Profile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const files = new Map<string, number>();
  const functions = new Map<string, number>();
  let total = 0;
  profile.samples.forEach((id, i) => {
    const delta = profile.timeDeltas[i] ?? 0;
    total += delta;
    const frame = byId.get(id)!.callFrame;
    const file = frame.url === ""
      ? `(${frame.functionName || "native"})`
      : frame.url.replace(/^.*\/work\/[^/]+\//, "").replace(/^file:\/\//, "");
    files.set(file, (files.get(file) ?? 0) + delta);
    const fn = `${frame.functionName || "(anonymous)"} ${file}:${
      frame.lineNumber + 1
    }`;
    functions.set(fn, (functions.get(fn) ?? 0) + delta);
  });
  const top = (map: Map<string, number>, count: number) =>
    [...map].sort((a, b) => b[1] - a[1]).slice(0, count).map(([name, us]) =>
      `${(us / 1000).toFixed(0).padStart(7)} ms ${
        (100 * us / total).toFixed(1).padStart(5)
      } %  ${name}`
    ).join("\n");
  console.log(`${path}: ${(total / 1000).toFixed(0)} ms sampled\n`);
  console.log(
    `by file\n${top(files, 25)}\n\nby function\n${top(functions, 30)}\n`,
  );
}
