/**
 * The child process of the crash and multi-process tests: opens a durable
 * storage, then writes and syncs against a server until it is killed or its
 * write budget runs out. It reports every write that `put`/`update`/`delete`
 * resolved (committed) as one JSON line on stdout, after the promise resolved.
 *
 * Usage: deno run -A tests/_crash_child.ts <sqlite|kv> <path> <url> <writer> <seed> [writes]
 *
 * `writer` names this process's values (`<writer>:<n>`) and its own records
 * (`<writer>-<k>`); records `shared-<k>` are written by every writer.
 *
 * @module
 */

import { SyncEngine, SyncError } from "../mod.ts";
import type { Storage } from "../src/storage.ts";
import { createRestTransport } from "../transport/rest.ts";

const [kind, path, url, writer, seedText, budgetText] = Deno.args;
if (
  kind === undefined || path === undefined || url === undefined ||
  writer === undefined || seedText === undefined
) {
  console.error(
    "usage: _crash_child.ts <sqlite|kv> <path> <url> <writer> <seed> [writes]",
  );
  Deno.exit(2);
}

/** A small seeded PRNG (mulberry32), so a failing run can be replayed. */
function prng(seed: number): () => number {
  let state = seed >>> 0;
  return function next(): number {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const random = prng(Number(seedText));
const budget = budgetText === undefined ? Infinity : Number(budgetText);
const encoder = new TextEncoder();

function report(line: Record<string, unknown>): void {
  // A synchronous write: the line is out before the next await.
  Deno.stdout.writeSync(encoder.encode(JSON.stringify(line) + "\n"));
}

const storage: Storage = kind === "kv"
  ? await (await import("../storage/kv.ts")).openKvStorage(path)
  : await (await import("../storage/sqlite.ts")).openSqliteStorage(path);
const transport = createRestTransport({
  baseUrl: url,
  retry: { attempts: 2, baseDelayMs: 5, maxDelayMs: 20 },
});
const engine = new SyncEngine({ storage, transport, pushBatchSize: 7 });
const items = engine.table("items");
report({ type: "ready" });

// Own records prove "every write arrives"; shared ones make two processes
// race on the same record in the multi-process test.
const own = writer.replace(/^g\d+$/, "solo");
const ids = [
  ...Array.from({ length: 8 }, (_, i) => `${own}-${i}`),
  ...Array.from({ length: 4 }, (_, i) => `shared-${i}`),
];
let written = 0;
while (written < budget) {
  const id = ids[Math.floor(random() * ids.length)]!;
  const v = `${writer}:${written}`;
  const roll = random();
  // The intent goes out before the write: a kill between the commit and the
  // "committed" line leaves the parent knowing which record is uncertain.
  report({ type: "intent", id, v });
  if (roll < 0.15) {
    const existed = await items.delete(id);
    report({ type: "committed", id, v, deleted: true, existed });
  } else if (roll < 0.55 && (await items.get(id)) !== undefined) {
    try {
      await items.update(id, { v, [`by-${writer}`]: written });
      report({ type: "committed", id, v, deleted: false });
    } catch (error) {
      // The other process deleted the record in between: nothing written.
      if (!(error instanceof SyncError) || error.category !== "validation") {
        throw error;
      }
      report({ type: "skipped", id, v });
    }
  } else {
    await items.put({ id, v, writer, n: written });
    report({ type: "committed", id, v, deleted: false });
  }
  written++;
  if (random() < 0.25) {
    try {
      await engine.sync();
      report({ type: "synced" });
    } catch (error) {
      report({ type: "syncFailed", message: String(error) });
    }
  }
}
await engine.sync().catch(() => {});
report({ type: "done" });
await engine.close();
await transport.close();
await storage.close();
