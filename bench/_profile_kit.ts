/**
 * What the profiling harnesses without HTTP share (`bench/_profile_engine.ts`,
 * `bench/_profile_alloc.ts`, `bench/_profile_put_many.ts`): a transport that
 * answers at once, a fresh outbox per round, and the per-round summary.
 *
 * @module
 */

import type { JsonObject } from "../mod.ts";
import type { Storage } from "../src/storage.ts";
import type { PushOp, PushResult, Transport } from "../src/transport.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { openSqliteStorage } from "../storage/sqlite.ts";

/**
 * A transport that answers each op at once as the reference server does:
 * the record, with its id and a fresh `updated_at`.
 *
 * @returns The transport; it never pulls.
 */
export function instantTransport(): Transport {
  let clock = Date.parse("2026-01-01T00:00:00.000Z");
  return {
    pull: () => Promise.reject(new Error("not used")),
    push(ops: readonly PushOp[]): Promise<PushResult[]> {
      return Promise.resolve(ops.map((op) => {
        const record: JsonObject = {
          ...(op.payload ?? {}),
          id: op.id,
          updated_at: new Date(++clock).toISOString(),
        };
        return { type: "ok", status: 200, record };
      }));
    },
    close: () => Promise.resolve(),
    [Symbol.asyncDispose]: () => Promise.resolve(),
  };
}

/**
 * A fresh outbox for one round: a memory storage, or an SQLite file in `dir`.
 *
 * @param which `memory` or `sqlite`.
 * @param dir The round's directory for a file.
 * @param round The round's number (names the file).
 * @returns The storage; close it.
 */
export async function openOutbox(
  which: string,
  dir: string,
  round: number,
): Promise<Storage> {
  return which === "memory"
    ? createMemoryStorage()
    : await openSqliteStorage(`${dir}/outbox-${round}.sqlite`);
}

/**
 * Each round's time per item, and their median.
 *
 * @param times Milliseconds per round.
 * @param items Items per round.
 * @returns `a b c …; median m`, in µs per item.
 */
export function perItem(times: readonly number[], items: number): string {
  const sorted = [...times].sort((a, b) => a - b);
  const us = (ms: number) => (ms * 1000 / items).toFixed(1);
  return `${times.map(us).join(" ")}; median ${
    us(sorted[Math.floor(sorted.length / 2)]!)
  }`;
}

/** A node of a V8 CPU profile (`.cpuprofile`, `Profiler.stop`). */
export interface CpuProfileNode {
  readonly id: number;
  readonly children?: readonly number[];
  readonly callFrame: {
    readonly functionName: string;
    readonly url: string;
    readonly lineNumber: number;
  };
}

/** A V8 CPU profile: its nodes, and the node and time of each sample. */
export interface CpuProfile {
  readonly nodes: readonly CpuProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}
