/**
 * The pull phase (ENGINE.md clauses 10-13): fetches each table's changes
 * page by page with the keyset cursor and applies them without ever
 * overwriting a pending local edit.
 *
 * @module
 */

import {
  type EngineContext,
  readRecordMeta,
  type RecordMeta,
  type TableConfig,
} from "./_context.ts";
import { ParseError, ResyncRequiredError, StorageError } from "./errors.ts";
import type { RecordChange, SyncStats } from "./events.ts";
import { isJsonObject, type JsonObject, type JsonValue } from "./json.ts";
import { byteLength, writeChunked } from "./_write.ts";
import type { Mutation, StoredRecord, Versioned } from "./storage.ts";

/** Where a table's pull stands: the last applied item and the page hint. */
export interface PullCursor {
  /** The `updated_at` of the last applied item. */
  readonly updatedAt: string;
  /** The id of the last applied item. */
  readonly id: string;
  /** The server's hint for the next page, when the last page gave one. */
  readonly pageToken: string | null;
}

/** Options of {@linkcode pullPhase}. */
export interface PullPhaseOptions {
  /** The tables to pull. */
  readonly kinds: readonly string[];
  /** Whether to re-pull every table from the start (clause 13). */
  readonly resync: boolean;
  /** The run's counters, updated in place. */
  readonly stats: SyncStats;
  /** Cancels the phase. */
  readonly signal: AbortSignal;
}

/**
 * The metadata key of a table's cursor.
 *
 * @param kind The table.
 * @returns The key.
 */
export function cursorKey(kind: string): string {
  return `cursor/${kind}`;
}

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
 * Pulls every table in `kinds`. A table whose cursor the server no longer
 * serves (`410`), or whose last resync was interrupted, is resynced.
 *
 * @param ctx The engine context.
 * @param options Tables, mode, counters, signal.
 */
export async function pullPhase(
  ctx: EngineContext,
  options: PullPhaseOptions,
): Promise<void> {
  const markers = await ctx.storage.getMeta(options.kinds.map(resyncKey));
  for (let i = 0; i < options.kinds.length; i++) {
    const kind = options.kinds[i]!;
    const table = ctx.table(kind);
    const resync = options.resync || markers[i] !== undefined;
    try {
      await pullTable(ctx, table, { ...options, resync });
    } catch (error) {
      if (!(error instanceof ResyncRequiredError) || resync) throw error;
      await pullTable(ctx, table, { ...options, resync: true });
    }
  }
}

/** Reads and validates a stored cursor. */
function parseCursor(value: JsonValue | undefined): PullCursor | null {
  if (
    !isJsonObject(value) || typeof value.updatedAt !== "string" ||
    typeof value.id !== "string"
  ) {
    return null;
  }
  return {
    updatedAt: value.updatedAt,
    id: value.id,
    pageToken: typeof value.pageToken === "string" ? value.pageToken : null,
  };
}

async function pullTable(
  ctx: EngineContext,
  table: TableConfig,
  options: PullPhaseOptions,
): Promise<void> {
  const { kind } = table;
  const { stats, signal } = options;
  const key = cursorKey(kind);
  let seen: Set<string> | null = null;
  if (options.resync) {
    // Mark first: a crash mid-resync leaves the marker, and the next run
    // starts the resync over from an empty cursor.
    await ctx.storage.write([
      { type: "putMeta", key: resyncKey(kind), value: true },
      { type: "deleteMeta", key: cursorKey(kind) },
    ]);
    seen = new Set();
  }
  let [entry] = await ctx.storage.getMeta([key]);
  let previousToken: string | null = null;
  let done = 0;
  let interrupted = false;
  for (;;) {
    signal.throwIfAborted();
    const cursor = parseCursor(entry?.value);
    const limit = ctx.limits.pageSize;
    const sentAt = ctx.now();
    const page = await ctx.transport.pull({
      kind,
      updatedSince: cursor?.updatedAt ?? null,
      afterId: cursor?.id ?? null,
      limit,
      pageToken: cursor?.pageToken ?? null,
    }, { signal });
    ctx.observeServerDate(page.serverDate, sentAt);
    const metas = validatePage(table, page.items, cursor);
    for (const meta of metas) seen?.add(meta.id);
    if (metas.length === 0) {
      if (page.nextPageToken === null) break;
      if (page.nextPageToken === previousToken) {
        throw new ParseError(
          `Cannot pull '${kind}' as the server repeats an empty page with the same token: current value is "${page.nextPageToken}"`,
        );
      }
    }
    previousToken = page.nextPageToken;
    if (metas.length > 0) {
      const applied = await applyPage(
        ctx,
        table,
        // validatePage() refused any item that is not an object.
        page.items as readonly JsonObject[],
        metas,
        page.nextPageToken,
        entry,
      );
      if (applied === null) {
        // Another engine moved the cursor: continue from where it stands.
        // During a resync its pages escape `seen`, so no sweep this time;
        // the marker stays and the next run resyncs again.
        interrupted = true;
        [entry] = await ctx.storage.getMeta([key]);
        continue;
      }
      entry = applied;
      done += metas.length;
      stats.pulled += metas.length;
      stats.pages++;
      const last = metas[metas.length - 1]!;
      ctx.hub.emit({
        type: "pullPageApplied",
        kind,
        count: metas.length,
        cursor: { updatedAt: last.updatedAt, id: last.id },
      });
      ctx.hub.emit({
        type: "progress",
        phase: "pull",
        kind,
        done,
        total: null,
      });
    } else {
      // An empty page with a token: follow the token, keyset unchanged.
      const value: PullCursor | null = cursor === null
        ? null
        : { ...cursor, pageToken: page.nextPageToken };
      if (value !== null) {
        await ctx.storage.write([{
          type: "putMeta",
          key,
          value: { ...value },
        }]);
        [entry] = await ctx.storage.getMeta([key]);
      }
    }
    if (metas.length < limit && page.nextPageToken === null) break;
  }
  if (seen !== null && !interrupted) await sweep(ctx, table, seen, stats);
}

/**
 * Checks a page before anything of it is applied: every item is a record
 * with an id and a timestamp, in strictly increasing `(updated_at, id)`
 * order after the cursor. A server that breaks the order could make the
 * cursor skip items, so such a page is refused whole.
 */
function validatePage(
  table: TableConfig,
  items: readonly JsonValue[],
  cursor: PullCursor | null,
): RecordMeta[] {
  const metas: RecordMeta[] = [];
  let previous: { time: number; id: string } | null = cursor === null
    ? null
    : { time: Date.parse(cursor.updatedAt), id: cursor.id };
  for (let i = 0; i < items.length; i++) {
    const item = items[i];
    if (!isJsonObject(item)) {
      throw new ParseError(
        `Cannot pull '${table.kind}' as item ${i} is not an object: current value is ${
          JSON.stringify(item)
        }`,
      );
    }
    const meta = readRecordMeta(table, item);
    if (typeof meta === "string") {
      throw new ParseError(
        `Cannot pull '${table.kind}' as item ${i} is malformed: ${meta}`,
      );
    }
    if (previous !== null) {
      const order = meta.time - previous.time ||
        (meta.id < previous.id ? -1 : meta.id > previous.id ? 1 : 0);
      if (order <= 0) {
        throw new ParseError(
          `Cannot pull '${table.kind}' as item ${i} is not after the previous one in (updated_at, id) order: current value is ("${meta.updatedAt}", "${meta.id}")`,
        );
      }
    }
    previous = meta;
    metas.push(meta);
  }
  return metas;
}

/**
 * Applies one page, in as many writes as the storage's limits require; each
 * write carries the cursor of its last item, so an interrupted page resumes
 * exactly after the last chunk that landed (clause 10). Chunks are sized by
 * the mutations actually planned (a record with pending edits stores its
 * local data and its base), never by an estimate.
 *
 * @returns The new cursor entry, or `null` when another writer moved the
 * cursor first.
 */
async function applyPage(
  ctx: EngineContext,
  table: TableConfig,
  items: readonly JsonObject[],
  metas: readonly RecordMeta[],
  nextPageToken: string | null,
  entry: Versioned<JsonValue> | undefined,
): Promise<Versioned<JsonValue> | undefined | null> {
  const key = cursorKey(table.kind);
  const { maxMutationsPerWrite, maxWriteBytes } = ctx.storage.capabilities;
  const measure = Number.isFinite(maxWriteBytes);
  // One mutation per item plus the cursor's.
  const perWrite = Math.max(1, maxMutationsPerWrite - 1);
  let start = 0;
  while (start < items.length) {
    let committed = false;
    for (let attempt = 0; attempt < ctx.limits.writeRetries; attempt++) {
      const stop = Math.min(items.length, start + perWrite);
      const ids = metas.slice(start, stop).map((meta) => meta.id);
      const locals = await ctx.storage.getRecords(table.kind, ids);
      // Plan the items that fit, measured as the storage measures a write
      // (the JSON of the mutations); the cursor's own size depends on the
      // item it ends at, so it is measured last and the chunk shrinks if
      // the cursor does not fit.
      const planned: Mutation[][] = [];
      const planChanges: RecordChange[][] = [];
      const sizes: number[] = [];
      let bytes = 2;
      for (let i = start; i < stop; i++) {
        const itemMutations: Mutation[] = [];
        const itemChanges: RecordChange[] = [];
        planItem(
          table,
          items[i]!,
          metas[i]!,
          locals[i - start],
          itemMutations,
          itemChanges,
        );
        const size = measure && itemMutations.length > 0
          ? byteLength(itemMutations) - 1
          : 0;
        if (measure && planned.length > 0 && bytes + size > maxWriteBytes) {
          break;
        }
        planned.push(itemMutations);
        planChanges.push(itemChanges);
        sizes.push(size);
        bytes += size;
      }
      let end = start + planned.length;
      let cursor = cursorMutation(
        key,
        metas[end - 1]!,
        end === items.length ? nextPageToken : null,
        entry,
      );
      while (
        measure && planned.length > 1 &&
        bytes + byteLength([cursor]) - 1 > maxWriteBytes
      ) {
        planned.pop();
        planChanges.pop();
        bytes -= sizes.pop()!;
        end--;
        cursor = cursorMutation(key, metas[end - 1]!, null, entry);
      }
      const mutations = planned.flat();
      const changes = planChanges.flat();
      mutations.push(cursor);
      const result = await ctx.storage.write(mutations);
      if (result.ok) {
        committed = true;
        entry = { value: cursor.value, rev: result.revs.at(-1)! };
        for (const change of changes) {
          ctx.hub.emit({ type: "change", ...change });
        }
        start = end;
        break;
      }
      const [now] = await ctx.storage.getMeta([key]);
      if (now?.rev !== entry?.rev) return null;
    }
    if (!committed) {
      throw new StorageError(
        `Cannot apply pulled page of '${table.kind}' as the store kept changing concurrently: current value is ${ctx.limits.writeRetries} attempts`,
        { retryable: true },
      );
    }
  }
  return entry;
}

/** The cursor write of a chunk ending at `last`. */
function cursorMutation(
  key: string,
  last: RecordMeta,
  pageToken: string | null,
  entry: Versioned<JsonValue> | undefined,
): Extract<Mutation, { type: "putMeta" }> {
  const cursor: PullCursor = {
    updatedAt: last.updatedAt,
    id: last.id,
    pageToken,
  };
  return {
    type: "putMeta",
    key,
    value: { ...cursor },
    expect: entry === undefined ? null : entry.rev,
  };
}

/** Plans one pulled item (clauses 11, 12). */
function planItem(
  table: TableConfig,
  item: JsonObject,
  meta: RecordMeta,
  local: Versioned<StoredRecord> | undefined,
  mutations: Mutation[],
  changes: RecordChange[],
): void {
  const base = { data: item, updatedAt: meta.updatedAt, deleted: meta.deleted };
  if (local === undefined) {
    // A tombstone of a record we never had: nothing to hide.
    if (meta.deleted) return;
    mutations.push({
      type: "putRecord",
      record: {
        kind: table.kind,
        id: meta.id,
        data: item,
        deleted: false,
        base,
        lastOpId: null,
        localUpdatedAt: null,
      },
      expect: null,
    });
    changes.push({
      kind: table.kind,
      id: meta.id,
      data: item,
      deleted: false,
      source: "remote",
    });
    return;
  }
  const r = local.value;
  if (r.base !== null && Date.parse(r.base.updatedAt) >= meta.time) {
    // We already hold this version or a newer one (our own push's answer).
    return;
  }
  if (r.lastOpId !== null) {
    // Pending local edits win locally: only the base moves; the push that
    // follows resolves any conflict with the table's strategy.
    mutations.push({
      type: "putRecord",
      record: { ...r, base },
      expect: local.rev,
    });
    return;
  }
  mutations.push({
    type: "putRecord",
    record: { ...r, data: item, deleted: meta.deleted, base },
    expect: local.rev,
  });
  changes.push({
    kind: table.kind,
    id: meta.id,
    data: meta.deleted ? null : item,
    deleted: meta.deleted,
    source: "remote",
  });
}

/**
 * After a complete resync pull, removes local records the server no longer
 * has, except those with pending ops (clause 13), then clears the marker.
 */
async function sweep(
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
        source: "remote",
      });
    }
  });
  await ctx.storage.write([{ type: "deleteMeta", key: resyncKey(table.kind) }]);
}
