/**
 * Where a drain allocates (issue 14): V8's sampling heap profiler, counting
 * objects the garbage collector already freed too, over `rounds` fills of a
 * memory outbox with `N` records (`table.putMany`) and their push-only
 * drains through a transport that answers at once (as in
 * `bench/_profile_engine.ts`). Prints the megabytes allocated per function,
 * and for the built-ins (`set`, `next`, `slice`, …) the two callers above:
 *
 * ```sh
 * deno run -A bench/_profile_alloc.ts 10000 3
 * deno run -A bench/_profile_alloc.ts 10000 3 drain   # the drains alone
 * ```
 *
 * @module
 */

import { Session } from "node:inspector/promises";
import { SyncEngine } from "../mod.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { KIND, makeRecord } from "./_drain.ts";
import { instantTransport } from "./_profile_kit.ts";

const n = Number(Deno.args[0] ?? "10000");
const rounds = Number(Deno.args[1] ?? "3");
/** `drain`: sample the drains only, not the fills. */
const drainOnly = Deno.args[2] === "drain";

interface ProfileNode {
  readonly callFrame: {
    readonly functionName: string;
    readonly url: string;
  };
  readonly selfSize: number;
  readonly children?: readonly ProfileNode[];
}

const session = new Session();
session.connect();
await session.post("HeapProfiler.enable");
const sampling = {
  samplingInterval: 4096,
  includeObjectsCollectedByMajorGC: true,
  includeObjectsCollectedByMinorGC: true,
};
const stop = async (): Promise<ProfileNode> =>
  ((await session.post("HeapProfiler.stopSampling")) as {
    profile: { head: ProfileNode };
  }).profile.head;
const heads: ProfileNode[] = [];
if (!drainOnly) await session.post("HeapProfiler.startSampling", sampling);
for (let round = 0; round < rounds; round++) {
  const storage = createMemoryStorage();
  const engine = new SyncEngine({
    storage,
    transport: instantTransport(),
    pushBatchSize: 1000,
  });
  await engine.table(KIND).putMany(
    Array.from({ length: n }, (_, i) => makeRecord(i)),
  );
  if (drainOnly) await session.post("HeapProfiler.startSampling", sampling);
  await engine.sync({ pullKinds: [] });
  if (drainOnly) heads.push(await stop());
  await engine.close();
}
if (!drainOnly) heads.push(await stop());
session.disconnect();

const name = (node: ProfileNode): string =>
  `${node.callFrame.functionName || "(anonymous)"} ${
    node.callFrame.url.replace(/^.*\/(bench|src|storage|transport)\//, "$1/")
  }`;
const own = new Map<string, number>();
const builtins = new Map<string, number>();
let total = 0;
const walk = (node: ProfileNode, callers: readonly string[]): void => {
  const here = name(node);
  total += node.selfSize;
  own.set(here, (own.get(here) ?? 0) + node.selfSize);
  if (node.callFrame.url === "" && node.selfSize > 0) {
    const key = `${here.trim()} <- ${callers.slice(-2).reverse().join(" <- ")}`;
    builtins.set(key, (builtins.get(key) ?? 0) + node.selfSize);
  }
  for (const child of node.children ?? []) walk(child, [...callers, here]);
};
for (const head of heads) walk(head, []);
const mb = (bytes: number) => (bytes / 1e6).toFixed(1).padStart(7);
console.log(
  `${mb(total)} MB allocated over ${rounds} × ${n} records (${
    (total / (rounds * n)).toFixed(0)
  } bytes per record: ${drainOnly ? "its drain" : "its write and its drain"})`,
);
console.log("\nby function");
for (const [key, bytes] of [...own].sort((a, b) => b[1] - a[1]).slice(0, 25)) {
  console.log(`${mb(bytes)} MB  ${key}`);
}
console.log("\nbuilt-ins, by caller");
for (
  const [key, bytes] of [...builtins].sort((a, b) => b[1] - a[1]).slice(0, 15)
) {
  console.log(`${mb(bytes)} MB  ${key}`);
}
