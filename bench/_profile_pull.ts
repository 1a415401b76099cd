/**
 * A profiling harness for the pull (issue 14): seeds a memory server store
 * with `N` records (the pull bench's), serves it in this process, and pulls
 * them over loopback HTTP into a fresh store, timing each stage: every
 * storage call and the transport's `pull` (request, server, response and
 * parse). The rest of `engine.sync()` is the engine's own work. Run with
 * `--cpu-prof` to see where the time goes:
 *
 * ```sh
 * deno run -A bench/_profile_pull.ts 100000 kv
 * deno run -A bench/_profile_pull.ts 100000 sqlite 3
 * deno run -A bench/_profile_pull.ts 100000 sqlite 3 pages  # no HTTP
 * deno run -A --cpu-prof --cpu-prof-dir=.demo/prof bench/_profile_pull.ts 100000 kv 1
 * deno run -A bench/_profile_summary.ts .demo/prof/*.cpuprofile
 * ```
 *
 * @module
 */

import { type JsonObject, SyncEngine } from "../mod.ts";
import type { Transport } from "../src/transport.ts";
import { openKvStorage } from "../storage/kv.ts";
import { openSqliteStorage } from "../storage/sqlite.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { createRestTransport } from "../transport/rest.ts";
import { createSyncServer } from "../server/mod.ts";
import { createMemoryServerStore } from "../server/memory.ts";
import { pullRecord } from "./_pull_record.ts";
import { Stages } from "./_stages.ts";

const n = Number(Deno.args[0] ?? "100000");
const which = Deno.args[1] ?? "kv";
const rounds = Number(Deno.args[2] ?? "3");
/** `http` (the reference server in this process) or `pages` (pre-built). */
const via = Deno.args[3] ?? "http";
const PAGE = 1000;
const KIND = "items";
const stages = new Stages();

const store = createMemoryServerStore();
const items = Array.from({ length: n }, (_, index) => pullRecord(index));
for (let start = 0; start < n; start += 10_000) {
  await store.commit(
    items.slice(start, start + 10_000).map((data) => ({
      type: "record",
      namespace: "public",
      record: {
        kind: KIND,
        id: data.id as string,
        updatedAt: Date.parse(data.updated_at as string),
        deletedAt: null,
        data,
      },
    })),
  );
}
const server = createSyncServer({ store, maxPageSize: PAGE });
const http = Deno.serve(
  { port: 0, hostname: "127.0.0.1", onListen() {} },
  server.fetch,
);
const url = `http://127.0.0.1:${http.addr.port}`;

/** Answers each page request with the next page of `items`, pre-built. */
function pagesTransport(): Transport {
  const pages = new Map<string | null, JsonObject[]>();
  for (let start = 0; start < n; start += PAGE) {
    pages.set(
      start === 0 ? null : items[start - 1]!.id as string,
      items.slice(start, start + PAGE),
    );
  }
  return {
    pull: (request) =>
      Promise.resolve({
        items: pages.get(request.afterId) ?? [],
        nextPageToken: null,
      }),
    push: () => Promise.reject(new Error("Cannot push as this only pulls")),
    close: () => Promise.resolve(),
    [Symbol.asyncDispose]: () => Promise.resolve(),
  };
}

const dir = await Deno.makeTempDir({ prefix: "profile_pull_" });
try {
  for (let round = 0; round < rounds; round++) {
    stages.all.clear();
    const storage = which === "memory"
      ? createMemoryStorage()
      : which === "sqlite"
      ? await openSqliteStorage(`${dir}/app-${round}.sqlite`)
      : await openKvStorage(`${dir}/app-${round}.kv`);
    await using transport = via === "pages"
      ? pagesTransport()
      : createRestTransport({ baseUrl: url });
    await using engine = new SyncEngine({
      storage: stages.storage(storage),
      transport: stages.transport(transport, "pull"),
      pageSize: PAGE,
    });
    engine.table(KIND);
    const started = performance.now();
    const { stats } = await engine.sync();
    const total = performance.now() - started;
    await engine.close();
    await storage.close();
    let counted = 0;
    const lines = [...stages.all].map(([name, { ms, calls }]) => {
      counted += ms;
      return `  ${name.padEnd(22)} ${ms.toFixed(0).padStart(6)} ms ${
        String(calls).padStart(5)
      } calls`;
    });
    console.log(
      `round ${round}: ${stats.pulled} pulled in ${total.toFixed(0)} ms (${
        (stats.pulled / total * 1000).toFixed(0)
      }/s)\n${lines.join("\n")}\n  ${"engine (the rest)".padEnd(22)} ${
        (total - counted).toFixed(0).padStart(6)
      } ms`,
    );
  }
} finally {
  await http.shutdown();
  await server.close();
  await Deno.remove(dir, { recursive: true });
}
