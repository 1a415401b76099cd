/**
 * The server record the pull benches pull (`bench/pull_bench.ts`,
 * `bench/_profile_pull.ts`).
 *
 * @module
 */

import type { JsonObject } from "../mod.ts";

/** The first record's `updated_at`; each next one is a second later. */
export const T0 = Date.UTC(2025, 0, 1);

/**
 * A realistic server record (about 200 bytes of JSON).
 *
 * @param index Its place in the table; its id and `updated_at` follow it.
 * @returns The record.
 */
export function pullRecord(index: number): JsonObject {
  return {
    id: `item-${String(index).padStart(7, "0")}`,
    updated_at: new Date(T0 + index * 1000).toISOString(),
    title: `Task number ${index}`,
    done: index % 3 === 0,
    priority: index % 5,
    tags: ["work", "home"],
    notes: "Lorem ipsum dolor sit amet, consectetur adipiscing elit.",
  };
}
