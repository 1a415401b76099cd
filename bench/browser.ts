/**
 * Browser throughput: the engine on IndexedDB in real headless Chromium
 * against raw IndexedDB writes of the same shape, timed in the same page
 * and run. Prints each group as ours ÷ baseline (per item) and the rates.
 *
 * ```sh
 * deno run -A bench/browser.ts            # 2,000 puts, 20,000 putMany, 20,000 pulled
 * BENCH_SCALE=tiny deno run -A bench/browser.ts
 * ```
 *
 * Needs Debian's Chromium at /usr/bin/chromium (`apt-get install -y
 * chromium`).
 *
 * @module
 */

import { createSyncServer } from "../server/mod.ts";
import { bundle, launchChromium, within } from "../tests/_browser.ts";
import type { BrowserRow } from "./_browser_page.ts";
import { TINY } from "./_scale.ts";

const sizes = TINY
  ? { each: 50, bulk: 200, pull: 300 }
  : { each: 2_000, bulk: 20_000, pull: 20_000 };

const code = await bundle(new URL("./_browser_page.ts", import.meta.url));
await using server = createSyncServer({ maxPageSize: 1000 });
// The server's records, written in batches before the page opens.
for (let start = 0; start < sizes.pull; start += 1000) {
  const ops = Array.from(
    { length: Math.min(1000, sizes.pull - start) },
    (_, i) => {
      const id = `s${String(start + i).padStart(7, "0")}`;
      return {
        opId: `seed-${id}`,
        kind: "todos",
        id,
        type: "upsert",
        payload: { id, title: `server ${start + i}` },
      };
    },
  );
  const response = await server.fetch(
    new Request("http://localhost/batch", {
      method: "POST",
      body: JSON.stringify({ ops }),
    }),
  );
  if (response.status !== 200) {
    throw new Error(`Cannot seed the server: ${response.status}`);
  }
  await response.body?.cancel();
}

const page =
  `<!doctype html><meta charset="utf-8"><script type="module" src="/bench.js"></script>`;
await using http = Deno.serve(
  { hostname: "127.0.0.1", port: 0, onListen() {} },
  (request) => {
    const path = new URL(request.url).pathname;
    if (path.startsWith("/sync/")) {
      const url = new URL(request.url);
      url.pathname = path.slice("/sync".length);
      return server.fetch(new Request(url, request));
    }
    if (path === "/bench.js") {
      return new Response(code, {
        headers: { "content-type": "text/javascript" },
      });
    }
    return new Response(page, { headers: { "content-type": "text/html" } });
  },
);
const origin = `http://127.0.0.1:${http.addr.port}`;
const dir = await Deno.makeTempDir({ prefix: "browser_bench_" });
const context = await within(60_000, "launch Chromium", launchChromium(dir));
try {
  const tab = await context.newPage();
  await tab.goto(`${origin}/`);
  await tab.waitForFunction(() => "browserBench" in globalThis, undefined, {
    timeout: 30_000,
  });
  const rows = await within(
    600_000,
    "the browser benchmark",
    tab.evaluate(
      ([base, sizes]) =>
        (globalThis as unknown as {
          browserBench: {
            run(base: string, sizes: unknown): Promise<BrowserRow[]>;
          };
        }).browserBench.run(base, sizes),
      [`${origin}/sync`, sizes] as const,
    ),
  );
  const version = context.browser()?.version() ?? "Chromium";
  console.log(`browser throughput, ${version}, IndexedDB on disk\n`);
  for (const row of rows) {
    const ours = row.items / (row.oursMs / 1000);
    const base = row.items / (row.baselineMs / 1000);
    console.log(
      `${row.group}\n  ${row.items} items: ours ${row.oursMs.toFixed(0)} ms (${
        Math.round(ours).toLocaleString("en")
      }/s), baseline ${row.baselineMs.toFixed(0)} ms (${
        Math.round(base).toLocaleString("en")
      }/s), ours ÷ baseline ${(row.oursMs / row.baselineMs).toFixed(2)}× (${
        Math.round(100 * row.baselineMs / row.oursMs)
      } % of the baseline's rate)`,
    );
  }
} finally {
  await context.close();
  await Deno.remove(dir, { recursive: true });
}
