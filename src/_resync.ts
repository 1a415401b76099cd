/**
 * The end of a full resync (ENGINE.md clause 13): the marker that an
 * interrupted resync starts over, and the sweep of local records the server
 * no longer has.
 *
 * @module
 */

import type { EngineContext, TableConfig } from "./_context.ts";
import type { SyncStats } from "./events.ts";
import { writeChunked } from "./_write.ts";
import type { Mutation, StoredRecord, Versioned } from "./storage.ts";

/**
 * The metadata key that marks a table's full resync as in progress, so an
 * interrupted resync starts over instead of leaving stale records behind.
 *
 * @param kind The table.
 * @returns The key.
 */
export function resyncKey(kind: string): string {
  return `resync/${kind}`;
}

/**
 * After a complete resync pull, removes local records the server no longer
 * has, except those with pending ops (clause 13), then clears the marker.
 */
export async function sweep(
  ctx: EngineContext,
  table: TableConfig,
  seen: ReadonlySet<string>,
  stats: SyncStats,
): Promise<void> {
  const stale: Versioned<StoredRecord>[] = [];
  let after: string | undefined;
  for (;;) {
    const page = await ctx.storage.listRecords(table.kind, {
      includeDeleted: true,
      ...(after === undefined ? {} : { after }),
      limit: 1000,
    });
    for (const entry of page) {
      if (!seen.has(entry.value.id) && entry.value.lastOpId === null) {
        stale.push(entry);
      }
    }
    if (page.length < 1000) break;
    after = page[page.length - 1]!.value.id;
  }
  const groups: Mutation[][] = stale.map((entry) => [{
    type: "deleteRecord",
    kind: table.kind,
    id: entry.value.id,
    expect: entry.rev,
  }]);
  // A record that changed since we listed it was touched by a local write
  // and is kept; the sweep does not retry it.
  const { failed } = await writeChunked(ctx, groups);
  stale.forEach((entry, index) => {
    if (failed.has(index)) return;
    stats.removed++;
    if (!entry.value.deleted) {
      ctx.hub.emit({
        type: "change",
        kind: table.kind,
        id: entry.value.id,
        data: null,
        deleted: true,
        origin: "pulled",
      });
    }
  });
  await ctx.storage.write([{ type: "deleteMeta", key: resyncKey(table.kind) }]);
}
