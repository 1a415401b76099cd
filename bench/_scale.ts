/**
 * Sizes shared by the enqueue and pull benchmarks. `BENCH_SCALE=tiny`
 * shrinks every one of them so that CI can run each bench quickly (Deno
 * still runs every bench for about half a second); the default sizes are
 * the ones the performance targets are stated for.
 *
 * @module
 */

/** Whether `BENCH_SCALE=tiny` asks for a quick run. */
export const TINY: boolean = Deno.env.get("BENCH_SCALE") === "tiny";

/**
 * Whether `BENCH_SCALE=full` asks for the sizes too slow for every run: the
 * enqueue scale group on Deno KV at 100k pending ops (filling them takes
 * about 20 s, as Deno KV itself slows down while it grows).
 */
export const FULL: boolean = Deno.env.get("BENCH_SCALE") === "full";

/** The sizes of one run. */
export interface Scale {
  /** Local writes timed per bench iteration (the figure is per batch). */
  readonly enqueueBatch: number;
  /** Pending ops already in the outbox, for the enqueue scale groups. */
  readonly pendingOps: readonly number[];
  /** The same on Deno KV, whose fill is slow. */
  readonly kvPendingOps: readonly number[];
  /** Server records pulled by one pull bench iteration. */
  readonly pullRecords: number;
  /** The smaller pull of the peak-memory check. */
  readonly pullRecordsSmall: number;
  /** The pull page size. */
  readonly pageSize: number;
}

/** The sizes of this run: the issue's, or tiny ones under `BENCH_SCALE=tiny`. */
export const SCALE: Scale = TINY
  ? {
    enqueueBatch: 10,
    pendingOps: [10, 100],
    kvPendingOps: [10, 100],
    pullRecords: 100,
    pullRecordsSmall: 10,
    pageSize: 10,
  }
  : {
    enqueueBatch: 200,
    pendingOps: [1_000, 10_000, 100_000],
    kvPendingOps: FULL ? [1_000, 10_000, 100_000] : [1_000, 10_000],
    pullRecords: 100_000,
    pullRecordsSmall: 10_000,
    pageSize: 1_000,
  };

/**
 * Formats a count for a bench name: `1k`, `100k`, or the number itself.
 *
 * @param count The count.
 * @returns The short form.
 */
export function short(count: number): string {
  return count >= 1000 && count % 1000 === 0 ? `${count / 1000}k` : `${count}`;
}
