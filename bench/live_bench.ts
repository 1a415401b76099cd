/**
 * How soon a write on one client reaches another client's local store:
 * live hints (`startAuto({ live: true })`, ENGINE.md clause 27) against
 * interval polling, over real HTTP with the reference server
 * (`createSyncServer()` on `Deno.serve`, 127.0.0.1:0).
 *
 * Client A pushes each write as soon as it is made
 * (`startAuto({ afterWriteMs: 0 })`). Each case has its own client B,
 * created once for the file and running all along:
 *
 * - **polling every 1 s** (baseline): `startAuto({ intervalMs: 1000 })`;
 * - **live hints**: `startAuto({ intervalMs: 2 ** 31 - 1, live: true })`
 *   (default debounce, 100 ms): B pulls only when a hint comes;
 * - **polling every 5 s**: `startAuto({ intervalMs: 5000 })`.
 *
 * One iteration is one write: it waits a random time first, untimed (up to
 * B's interval, so a write lands at any point of B's polling cycle), then
 * times `put()` on A until B emits the record's pulled `change` event (what
 * `watch()` delivers). The rows report the mean as ours ÷ baseline; the
 * p50 and p95 of every case's samples are printed to stderr at the end.
 *
 * `BENCH_SCALE=tiny` runs 2 writes per case with intervals of 100 and
 * 200 ms.
 *
 * @module
 */

import { SyncEngine } from "../src/engine.ts";
import type { AutoSyncOptions } from "../src/_engine_options.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { createRestTransport } from "../transport/rest.ts";
import { createSyncServer } from "../server/mod.ts";
import { TINY } from "./_scale.ts";

/** Writes timed per case. */
const WRITES = TINY ? 2 : 50;
/** The same for the slow polling case: each sample takes 5 s of waiting. */
const SLOW_WRITES = TINY ? 2 : 20;
const FAST_MS = TINY ? 100 : 1000;
const SLOW_MS = TINY ? 200 : 5000;
const KIND = "todos";

const server = createSyncServer();
const http = Deno.serve(
  { port: 0, hostname: "127.0.0.1", onListen() {} },
  server.fetch,
);
const baseUrl = `http://127.0.0.1:${http.addr.port}`;

/** A client over memory storage. */
function openClient(auto: AutoSyncOptions) {
  const storage = createMemoryStorage();
  const transport = createRestTransport({ baseUrl, batch: true });
  const engine = new SyncEngine({ storage, transport });
  const table = engine.table(KIND);
  /** Who waits for which pulled record. */
  const waiting = new Map<string, () => void>();
  engine.on("change", (event) => {
    if (event.origin !== "pulled") return;
    waiting.get(event.id)?.();
    waiting.delete(event.id);
  });
  engine.on("error", (event) => {
    console.error(`bench client error: ${event.error.message}`);
  });
  engine.startAuto(auto);
  return {
    engine,
    table,
    /** Resolves when this client pulled record `id`. */
    pulled(id: string): Promise<void> {
      return new Promise((resolve) => waiting.set(id, resolve));
    },
  };
}

type Client = ReturnType<typeof openClient>;

const writer = openClient({ intervalMs: 2 ** 31 - 1, afterWriteMs: 0 });
const readers = {
  fast: openClient({ intervalMs: FAST_MS, afterWriteMs: null }),
  live: openClient({
    intervalMs: 2 ** 31 - 1,
    afterWriteMs: null,
    live: true,
  }),
  slow: openClient({ intervalMs: SLOW_MS, afterWriteMs: null }),
};
const samples: Record<keyof typeof readers, number[]> = {
  fast: [],
  live: [],
  slow: [],
};
let written = 0;

/** One write on A, timed until `reader` pulled it. */
async function writeAndSee(
  b: Deno.BenchContext,
  reader: Client,
  phaseMs: number,
): Promise<number> {
  if (reader === readers.live && reader.engine.live !== "open") {
    await new Promise<void>((resolve) => {
      const off = reader.engine.on("live", (event) => {
        if (event.state === "open") off(), resolve();
      });
    });
  }
  await new Promise((resolve) => setTimeout(resolve, Math.random() * phaseMs));
  const id = `w${++written}`;
  const seen = reader.pulled(id);
  const started = performance.now();
  b.start();
  await writer.table.put({ id, title: `write ${written}` });
  await seen;
  b.end();
  return performance.now() - started;
}

// deno bench runs a case more often than `n` (it probes first), so the
// figures are printed once every case is over, when the process ends; the
// server and clients end with it.
globalThis.addEventListener("unload", () => {
  for (const [name, values] of Object.entries(samples)) {
    const sorted = [...values].sort((x, y) => x - y);
    const at = (q: number): number =>
      sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
    console.error(
      `write on A → seen on B, ${name}: p50 ${at(0.5).toFixed(0)} ms, p95 ${
        at(0.95).toFixed(0)
      } ms (n=${sorted.length})`,
    );
  }
});

const GROUP = "write on A → seen on B";

Deno.bench({
  name: `polling every ${FAST_MS} ms`,
  group: GROUP,
  baseline: true,
  n: WRITES,
  warmup: 0,
  async fn(b) {
    samples.fast.push(await writeAndSee(b, readers.fast, FAST_MS));
  },
});

Deno.bench({
  name: "live hints",
  group: GROUP,
  n: WRITES,
  warmup: 0,
  async fn(b) {
    samples.live.push(await writeAndSee(b, readers.live, 200));
  },
});

Deno.bench({
  name: `polling every ${SLOW_MS} ms`,
  group: GROUP,
  n: SLOW_WRITES,
  warmup: 0,
  async fn(b) {
    samples.slow.push(await writeAndSee(b, readers.slow, SLOW_MS));
  },
});
