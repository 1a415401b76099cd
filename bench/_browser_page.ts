/**
 * The page side of `bench/browser.ts`, bundled for Chromium: times the
 * engine on IndexedDB against raw IndexedDB writes of the same shape, in
 * the same page and run, and reports ratios.
 *
 * @module
 */

import { SyncEngine } from "../mod.ts";
import { openIndexedDbStorage } from "../storage/indexeddb.ts";
import { createRestTransport } from "../transport/rest.ts";

// The DOM's IndexedDB, as far as the baselines use it (the bundle's type
// program has no DOM library).
interface RawRequest {
  result: unknown;
  error: unknown;
  onsuccess: (() => void) | null;
  onerror: (() => void) | null;
  onupgradeneeded?: (() => void) | null;
}
interface RawTransaction {
  objectStore(name: string): { put(value: unknown, key?: string): void };
  oncomplete: (() => void) | null;
  onerror: (() => void) | null;
  onabort: (() => void) | null;
}
interface RawDatabase {
  createObjectStore(name: string): void;
  transaction(
    names: string[],
    mode: "readwrite",
    options?: { durability: "default" | "strict" | "relaxed" },
  ): RawTransaction;
  close(): void;
}
const idb = (globalThis as unknown as {
  indexedDB: {
    open(name: string, version: number): RawRequest;
    deleteDatabase(name: string): RawRequest;
  };
}).indexedDB;

/** One row: our time and the baseline's, per item. */
export interface BrowserRow {
  readonly group: string;
  readonly items: number;
  readonly oursMs: number;
  readonly baselineMs: number;
}

/**
 * The storage's default durability, so that both sides pay the same flush
 * per transaction.
 */
const STRICT = { durability: "strict" } as const;

function done(request: RawRequest): Promise<unknown> {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function openRaw(name: string): Promise<RawDatabase> {
  await done(idb.deleteDatabase(name));
  const request = idb.open(name, 1);
  request.onupgradeneeded = () => {
    const db = request.result as RawDatabase;
    db.createObjectStore("records");
    db.createObjectStore("ops");
  };
  return await done(request) as RawDatabase;
}

function commit(tx: RawTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = tx.onabort = () => reject(new Error("raw write failed"));
  });
}

function record(i: number) {
  return { id: `r${String(i).padStart(7, "0")}`, title: `todo ${i}`, n: i };
}

/** Raw: one transaction per item holding a record and an op. */
async function rawEach(db: RawDatabase, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const tx = db.transaction(["records", "ops"], "readwrite", STRICT);
    const value = record(i);
    tx.objectStore("records").put({ data: value }, value.id);
    tx.objectStore("ops").put({ payload: value }, `op${i}`);
    await commit(tx);
  }
}

/** Raw: items in transactions of `chunk` items each. */
async function rawChunks(
  db: RawDatabase,
  n: number,
  chunk: number,
  withOps: boolean,
): Promise<void> {
  for (let start = 0; start < n; start += chunk) {
    const tx = db.transaction(["records", "ops"], "readwrite", STRICT);
    for (let i = start; i < Math.min(n, start + chunk); i++) {
      const value = record(i);
      tx.objectStore("records").put({ data: value }, value.id);
      if (withOps) tx.objectStore("ops").put({ payload: value }, `op${i}`);
    }
    await commit(tx);
  }
}

async function time(fn: () => Promise<void>): Promise<number> {
  const started = performance.now();
  await fn();
  return performance.now() - started;
}

let serial = 0;
async function engineOn(baseUrl: string) {
  const storage = await openIndexedDbStorage(`bench-${Date.now()}-${serial++}`);
  const transport = createRestTransport({ baseUrl });
  const engine = new SyncEngine({ storage, transport, pageSize: 1000 });
  return {
    engine,
    table: engine.table("todos"),
    async close() {
      await engine.close();
      await transport.close();
      await storage.close();
    },
  };
}

/**
 * Runs every group once; `baseUrl` is a reference server holding `pull`
 * records of kind `todos`.
 */
async function run(
  baseUrl: string,
  sizes: { each: number; bulk: number; pull: number },
): Promise<BrowserRow[]> {
  const rows: BrowserRow[] = [];
  const raw = await openRaw("bench-raw");
  try {
    {
      const ours = await engineOn(baseUrl);
      const oursMs = await time(async () => {
        for (let i = 0; i < sizes.each; i++) await ours.table.put(record(i));
      });
      await ours.close();
      const baselineMs = await time(() => rawEach(raw, sizes.each));
      rows.push({
        group: "enqueue: put() vs one raw transaction (record + op) per write",
        items: sizes.each,
        oursMs,
        baselineMs,
      });
    }
    {
      const ours = await engineOn(baseUrl);
      const records = Array.from({ length: sizes.bulk }, (_, i) => record(i));
      const oursMs = await time(async () => {
        await ours.table.putMany(records);
      });
      await ours.close();
      const baselineMs = await time(() =>
        rawChunks(raw, sizes.bulk, 1000, true)
      );
      rows.push({
        group: "bulk: putMany() vs raw transactions of 1,000 (records + ops)",
        items: sizes.bulk,
        oursMs,
        baselineMs,
      });
    }
    {
      const ours = await engineOn(baseUrl);
      const oursMs = await time(async () => {
        await ours.engine.sync();
      });
      const pulled = (await ours.table.list()).length;
      await ours.close();
      if (pulled !== sizes.pull) {
        throw new Error(`Pulled ${pulled} of ${sizes.pull} records`);
      }
      const baselineMs = await time(() =>
        rawChunks(raw, sizes.pull, 1000, false)
      );
      rows.push({
        group:
          "pull over HTTP into IndexedDB vs raw transactions of 1,000 records",
        items: sizes.pull,
        oursMs,
        baselineMs,
      });
    }
  } finally {
    raw.close();
  }
  return rows;
}

(globalThis as Record<string, unknown>)["browserBench"] = { run };
