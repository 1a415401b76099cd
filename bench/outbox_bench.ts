/**
 * The outbox drain: `engine.sync({ pullKinds: [] })` pushing pending ops to
 * the reference server, against a bare `fetch` client that sends the same
 * HTTP requests with no engine and no storage. Each group's figures are
 * ratios to its baseline, measured in the same run (`deno task bench`).
 *
 * Each iteration starts from a freshly filled outbox and an empty server,
 * both set up outside the timed part (`b.start()` / `b.end()`):
 *
 * - The SQLite outbox (the headline) is filled once per size through the
 *   table API (one `put` per realistic 10-field record, each a record and
 *   its op in one atomic write), closed, and its file copied for every
 *   iteration: the copy is the same outbox as a refill at a fraction of the
 *   time, which keeps this file near two minutes. The memory outbox is
 *   refilled through the table API every iteration.
 * - The server is `createSyncServer()` with its memory store, served by
 *   `Deno.serve` on `127.0.0.1:0` in this process, new for every iteration,
 *   so every write is a real create (no record and no idempotency entry left
 *   over). In-process because a push is request → response → settle: in
 *   batch and single-request mode a server in another process would not
 *   overlap with the engine anyway, and on a small shared machine a second
 *   process only adds scheduling noise. The server's cost is in both rows of
 *   a group, so the ratios are those of a client next to a fast server.
 * - The baseline sends what the REST transport sends: per op
 *   `PUT /todos/{id}` with the same `Accept`, `Content-Type` and
 *   `Idempotency-Key` (the op id) and the same body, `concurrency` requests
 *   in flight; or `POST /batch` with the same envelope and batch size. Keys
 *   and bodies are read back from the filled outbox. It parses every
 *   response, as any client must, and keeps nothing.
 * - After each timed part the bench checks that the client pushed, and the
 *   server wrote (a wrapper around its store counts record writes), exactly
 *   the ops expected, and throws otherwise.
 *
 * Engine settings: `pushBatchSize` 1,000 (ops claimed, sent and settled per
 * round) in every mode; in batch mode `batchSize` 1,000 too, so that a round
 * is one `POST /batch` (≈ 330 kB, under the server's 1 MiB body limit).
 *
 * Groups:
 *
 * - `drain 10k ops, …`: batch, per-op with 8 in flight, per-op one at a
 *   time; the engine on SQLite, and on memory in batch mode. Floor rows
 *   time the bare requests followed by the SQLite outbox's storage work
 *   written by hand on a copy of the same outbox (`bench/_drain_floor.ts`):
 *   the adapter's own statements ("this layout by hand") and, in batch mode,
 *   the least a durable outbox does (one ranged `UPDATE` to claim a round,
 *   one to mark it sent). No engine on this storage can beat the first; no
 *   durable outbox on SQLite can beat the second. In batch mode a third
 *   floor row times the bare requests followed by the memory outbox's work
 *   by hand (`bench/_memory_floor.ts`: maps and the deep copies the storage
 *   contract asks for), the floor of the memory drain.
 * - `coalesce`: 10,000 edits of 100 records. The bench throws if the server
 *   is sent more than 100 ops. The baseline is a bare `POST /batch` of the
 *   100 final records: the floor of the coalesced drain. The other natural
 *   baseline, the same edits with `coalesce: false`, costs 7 to 13 s per
 *   drain here (100 rounds of 100 ops, each rescanning the rest of the
 *   outbox), too much for the budget.
 * - `scale`: the batch drain of 1,000, 10,000 and 100,000 ops, the smallest
 *   as the baseline, so a linear drain shows ×10 and ×100. The summary
 *   printed at the end gives the median cost per op at each size relative
 *   to the smallest, which must stay under 1.5 (no quadratic work).
 *
 * Iterations: Deno 2.9.6 runs `n + 2` and discards the first, so `n: 1` is
 * two measured drains; the 100,000-op row costs about a minute with its
 * fill.
 *
 * `BENCH_SCALE=tiny` shrinks every size (50 ops, 200 edits of 10 records,
 * scale 20 / 50 / 200, 20 ops per round) so that CI can run the file once
 * quickly.
 *
 * @module
 */

import {
  bareBatch,
  barePerOp,
  copyOutbox,
  createDrainer,
  createTemplate,
  type DrainMode,
  DrainServer,
  type FillOptions,
  memoryOutbox,
  type OutboxTemplate,
  readWireOps,
  type WireOp,
} from "./_drain.ts";
import { FLOORS, openOutboxFile } from "./_drain_floor.ts";
import { memoryByHand, memoryOutboxOf } from "./_memory_floor.ts";

const TINY = Deno.env.get("BENCH_SCALE") === "tiny";

/** Ops of the three drain groups. */
const DRAIN_OPS = TINY ? 50 : 10_000;
/** The coalescing group's edits and records. */
const EDITS = TINY ? 200 : 10_000;
const EDITED_RECORDS = TINY ? 10 : 100;
/** The scale group's small and large outboxes (the middle is DRAIN_OPS). */
const SCALE_SMALL = TINY ? 20 : 1_000;
const SCALE_LARGE = TINY ? 200 : 100_000;
/** Ops per engine round and per `POST /batch`. */
const ROUND = TINY ? 20 : 1_000;

const BATCH: DrainMode = {
  batch: true,
  batchSize: ROUND,
  concurrency: 1,
  pushBatchSize: ROUND,
};
const PER_OP_8: DrainMode = {
  batch: false,
  batchSize: ROUND,
  concurrency: 8,
  pushBatchSize: ROUND,
};
const PER_OP_1: DrainMode = { ...PER_OP_8, concurrency: 1 };

const dir = Deno.makeTempDirSync({ prefix: "outbox-bench-" });
globalThis.addEventListener("unload", () => {
  printSummary();
  Deno.removeSync(dir, { recursive: true });
});

let files = 0;
/** A fresh file name in the temp dir. */
function freshPath(): string {
  return `${dir}/outbox-${files++}.sqlite`;
}

/** Removes an SQLite file and its WAL companions. */
async function removeDatabase(path: string): Promise<void> {
  for (const suffix of ["", "-wal", "-shm"]) {
    await Deno.remove(`${path}${suffix}`).catch((error) => {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    });
  }
}

/** Builds each template once, on first use, outside any timed part. */
const templates = new Map<string, Promise<OutboxTemplate>>();
function template(options: FillOptions): Promise<OutboxTemplate> {
  const key = JSON.stringify(options);
  let found = templates.get(key);
  if (found === undefined) {
    found = createTemplate(freshPath(), options);
    templates.set(key, found);
  }
  return found;
}

/**
 * The ops of a template as the wire carries them, read once, on first use
 * by a baseline: only the outboxes a bare client sends stay on the heap.
 */
const wireOps = new Map<string, Promise<readonly WireOp[]>>();
function opsOf(options: FillOptions): Promise<readonly WireOp[]> {
  const key = JSON.stringify(options);
  let found = wireOps.get(key);
  if (found === undefined) {
    found = template(options).then((filled) =>
      readWireOps(filled, freshPath())
    );
    wireOps.set(key, found);
  }
  return found;
}

/** A count for a bench name: `1k`, `100k`, or the number itself. */
function k(ops: number): string {
  return ops >= 1000 ? `${ops / 1000}k` : `${ops}`;
}

/** An outbox of `ops` distinct records, one op each. */
function distinct(ops: number): FillOptions {
  return { records: ops, edits: ops, coalesce: true };
}

/** Milliseconds of each timed part, by bench, for the scale summary. */
const timings = new Map<string, number[]>();
function recordTiming(name: string, ms: number): void {
  const list = timings.get(name) ?? [];
  list.push(ms);
  timings.set(name, list);
}

/** Ops the coalescing drain sent, for the summary. */
const sent = { coalesced: -1 };

/**
 * Checks a drain after its timed part: what the client counted as accepted
 * and what the server wrote.
 */
type Verify = (pushed: number, written: number) => void;

/** Every op was pushed and written once, no more, no less. */
function exactly(expected: number): Verify {
  return (pushed, written) => {
    if (pushed !== expected || written !== expected) {
      throw new Error(
        `Cannot trust the drain as it did not write every op once: current value is ${pushed} pushed, ${written} written of ${expected}`,
      );
    }
  };
}

/**
 * Registers the engine drain of an SQLite outbox copied from `fill`.
 */
function engineSqlite(
  group: string,
  name: string,
  fill: FillOptions,
  mode: DrainMode,
  verify: Verify,
  options: { n: number; baseline?: boolean },
): void {
  Deno.bench({
    name,
    group,
    ...options,
    async fn(b) {
      const source = await template(fill);
      const path = freshPath();
      await using server = new DrainServer();
      {
        await using drainer = createDrainer(
          await copyOutbox(source, path),
          server.url,
          mode,
          fill.coalesce,
        );
        const started = performance.now();
        b.start();
        const pushed = await drainer.drain();
        b.end();
        recordTiming(`${group}/${name}`, performance.now() - started);
        verify(pushed, server.written);
      }
      await removeDatabase(path);
    },
  });
}

/** Registers the engine drain of a memory outbox filled per iteration. */
function engineMemory(
  group: string,
  name: string,
  fill: FillOptions,
  mode: DrainMode,
  verify: Verify,
  options: { n: number },
): void {
  Deno.bench({
    name,
    group,
    ...options,
    async fn(b) {
      await using server = new DrainServer();
      await using drainer = createDrainer(
        await memoryOutbox(fill),
        server.url,
        mode,
        fill.coalesce,
      );
      b.start();
      const pushed = await drainer.drain();
      b.end();
      verify(pushed, server.written);
    },
  });
}

/**
 * Registers a floor row: the bare requests of the baseline, then the
 * storage's work for the same ops written by hand on a copy of the outbox
 * (`bench/_drain_floor.ts`), both timed, one after the other as the engine
 * does them on its one thread. What no client of this storage work can beat.
 */
function floor(
  group: string,
  name: keyof typeof FLOORS,
  fill: FillOptions,
  mode: DrainMode,
  options: { n: number },
): void {
  Deno.bench({
    name: `floor: bare requests + ${name}`,
    group,
    ...options,
    async fn(b) {
      const ops = await opsOf(fill);
      const source = await template(fill);
      const path = freshPath();
      await Deno.copyFile(source.path, path);
      await using server = new DrainServer();
      const db = openOutboxFile(path);
      try {
        b.start();
        const accepted = mode.batch
          ? await bareBatch(server.url, ops, mode.batchSize)
          : await barePerOp(server.url, ops, mode.concurrency);
        FLOORS[name](db, ROUND);
        b.end();
        exactly(ops.length)(accepted, server.written);
      } finally {
        db.close();
      }
      await removeDatabase(path);
    },
  });
}

/**
 * Registers the memory floor row: the bare requests of the baseline, then
 * the memory outbox's drain work for the same ops by hand
 * (`bench/_memory_floor.ts`), both timed.
 */
function memoryFloor(
  group: string,
  fill: FillOptions,
  mode: DrainMode,
  options: { n: number },
): void {
  Deno.bench({
    name: "floor: bare requests + a memory outbox by hand",
    group,
    ...options,
    async fn(b) {
      const ops = await opsOf(fill);
      const outbox = memoryOutboxOf(ops);
      await using server = new DrainServer();
      b.start();
      const accepted = mode.batch
        ? await bareBatch(server.url, ops, mode.batchSize)
        : await barePerOp(server.url, ops, mode.concurrency);
      const settled = memoryByHand(outbox, ROUND);
      b.end();
      exactly(ops.length)(accepted, server.written);
      exactly(ops.length)(settled, server.written);
    },
  });
}

/** Registers the bare-fetch baseline sending the ops of `fill`'s outbox. */
function bare(
  group: string,
  name: string,
  fill: FillOptions,
  mode: DrainMode,
  options: { n: number },
): void {
  Deno.bench({
    name,
    group,
    baseline: true,
    ...options,
    async fn(b) {
      const ops = await opsOf(fill);
      await using server = new DrainServer();
      b.start();
      const accepted = mode.batch
        ? await bareBatch(server.url, ops, mode.batchSize)
        : await barePerOp(server.url, ops, mode.concurrency);
      b.end();
      exactly(ops.length)(accepted, server.written);
    },
  });
}

// -- drain, three modes -------------------------------------------------------

/** Two measured drains per row (see the module doc). */
const ONCE = { n: 1 };

for (
  const [label, mode, memory] of [
    [`batch (POST /batch of ${ROUND})`, BATCH, true],
    ["per-op ×8 (PUT, 8 in flight)", PER_OP_8, false],
    ["per-op ×1 (PUT, one at a time)", PER_OP_1, false],
  ] as const
) {
  const group = `drain ${k(DRAIN_OPS)} ops, ${label}`;
  const fill = distinct(DRAIN_OPS);
  bare(group, "baseline: bare fetch, same requests", fill, mode, ONCE);
  const verify = exactly(DRAIN_OPS);
  engineSqlite(group, "engine, SQLite outbox", fill, mode, verify, ONCE);
  floor(group, "this layout by hand", fill, mode, ONCE);
  if (mode.batch) {
    floor(group, "the least a durable outbox does", fill, mode, ONCE);
  }
  // A memory outbox only where it is cheap: in per-op modes the requests
  // dominate and it adds 20 s to the run for little news.
  if (memory) {
    engineMemory(group, "engine, memory outbox", fill, mode, verify, ONCE);
    memoryFloor(group, fill, mode, ONCE);
  }
}

// -- coalescing ---------------------------------------------------------------

{
  const group = `coalesce: drain after ${
    k(EDITS)
  } edits of ${EDITED_RECORDS} records`;
  const edits = { records: EDITED_RECORDS, edits: EDITS, coalesce: true };
  // The baseline is the bare fetch of what coalescing leaves, the floor of
  // the coalesced drain. The other natural baseline, the same edits with
  // `coalesce: false`, takes 7 to 13 s per drain (100 rounds of 100 ops,
  // each rescanning the remaining outbox) and would blow the budget.
  Deno.bench({
    name: `baseline: bare fetch of the ${EDITED_RECORDS} final records`,
    group,
    baseline: true,
    n: 10,
    async fn(b) {
      const ops = await opsOf(edits);
      await using server = new DrainServer();
      b.start();
      const accepted = await bareBatch(server.url, ops, ROUND);
      b.end();
      exactly(ops.length)(accepted, server.written);
    },
  });
  engineSqlite(
    group,
    `engine, coalesce: true (at most ${EDITED_RECORDS} ops)`,
    edits,
    BATCH,
    (pushed, written) => {
      // The promise: coalescing sends at most one op per record.
      if (written > EDITED_RECORDS || pushed !== written) {
        throw new Error(
          `Cannot coalesce ${EDITS} edits of ${EDITED_RECORDS} records into at most ${EDITED_RECORDS} ops: current value is ${written} sent`,
        );
      }
      sent.coalesced = written;
    },
    { n: 10 },
  );
}

// -- scale --------------------------------------------------------------------

/**
 * One group, the smallest outbox as the baseline: a linear drain shows the
 * rows at 10× and 100× its time. The summary printed at the end divides by
 * the op count. No bare baseline at 100k: the criterion compares the engine
 * with itself, and a bare 100k drain would add half a minute.
 */
const SCALE_GROUP = "scale: batch drain, SQLite outbox (linear = ×ops)";
const SCALE_SIZES = [SCALE_SMALL, DRAIN_OPS, SCALE_LARGE] as const;
for (const ops of SCALE_SIZES) {
  engineSqlite(
    SCALE_GROUP,
    `${k(ops)} ops`,
    distinct(ops),
    BATCH,
    exactly(ops),
    ops === SCALE_SMALL ? { n: 5, baseline: true } : ONCE,
  );
}

// -- summary ------------------------------------------------------------------

/** The median time of a row's timed parts, in ms. */
function median(name: string): number | undefined {
  const list = [...(timings.get(name) ?? [])].sort((a, b) => a - b);
  if (list.length === 0) return undefined;
  const middle = list.length >> 1;
  return list.length % 2 === 1
    ? list[middle]!
    : (list[middle - 1]! + list[middle]!) / 2;
}

/**
 * Prints the cost per op of the batch drain at each size relative to the
 * smallest (a figure Deno's table cannot show: it compares whole
 * iterations), and the coalesced op count.
 */
function printSummary(): void {
  const lines: string[] = [];
  let first: number | undefined;
  for (const ops of SCALE_SIZES) {
    const ms = median(`${SCALE_GROUP}/${k(ops)} ops`);
    if (ms === undefined) continue;
    const perOp = (ms * 1000) / ops;
    first ??= perOp;
    const ratio = perOp / first;
    lines.push(
      `  ${k(ops).padStart(5)} ops: ${perOp.toFixed(1)} µs/op, ${
        Math.round(1e6 / perOp)
      } ops/s, ${ratio.toFixed(2)}× the smallest per op${
        ratio > 1.5 ? " (over the 1.5× bound)" : ""
      }`,
    );
  }
  if (lines.length > 0) {
    console.log(
      `\n${SCALE_GROUP}, median cost per op:\n${lines.join("\n")}`,
    );
  }
  if (sent.coalesced >= 0) {
    console.log(
      `coalesce: ${EDITS} edits of ${EDITED_RECORDS} records sent ${sent.coalesced} ops`,
    );
  }
}
