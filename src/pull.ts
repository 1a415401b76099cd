/**
 * The pull phase (ENGINE.md clauses 10-13, 25): fetches each table's changes
 * page by page with the keyset cursor and applies them without ever
 * overwriting a pending local edit; an item that breaks the wire limits is
 * skipped and reported, and the pull goes on past it.
 *
 * @module
 */

import {
  comparePositions,
  type EngineContext,
  isFault,
  type Position,
  readRecordMeta,
  type RecordFault,
  type RecordMeta,
  type TableConfig,
} from "./_context.ts";
import { describe } from "./describe.ts";
import { parseTimestamp } from "./timestamp.ts";
import {
  ParseError,
  ResyncRequiredError,
  ServerError,
  StorageError,
  SyncError,
  ValidationError,
} from "./errors.ts";
import type { RecordChange, SyncStats } from "./events.ts";
import { isJsonObject, type JsonObject, type JsonValue } from "./json.ts";
import { byteLength, writeChunked } from "./_write.ts";
import type { Mutation, StoredRecord, Versioned } from "./storage.ts";
import type { PullPage } from "./transport.ts";

/** A request position: a cursor and the token the server gave with it. */
export interface PullFrom {
  /** The `updated_at` of the last item passed. */
  readonly updatedAt: string;
  /** The id of the last item passed, or a valid stand-in past it. */
  readonly id: string;
  /** The server's hint for the next page, when it gave one. */
  readonly pageToken: string | null;
}

/** Where a table's pull stands: the last item passed and the page hint. */
export interface PullCursor extends PullFrom {
  /**
   * Present on a cursor that ends part of a page applied in several writes:
   * where that page was requested from (`null`: from no cursor). The
   * middle of a page has no token (the server's token names the page's
   * end), so a pull resumed there after a crash may meet `410` where the
   * page's own request, which may carry the server's mark of a pull that
   * began with no cursor, would not: it then goes back to that request.
   */
  readonly pageStart?: PullFrom | null;
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
 * serves (`410`), or whose last resync was interrupted, is resynced. A
 * table whose server sends what cannot be pulled (category `parse`, e.g. a
 * page that brings no progress) does not stop the other tables: they are
 * pulled, then the phase fails with the first such error.
 *
 * @param ctx The engine context.
 * @param options Tables, mode, counters, signal.
 */
export async function pullPhase(
  ctx: EngineContext,
  options: PullPhaseOptions,
): Promise<void> {
  const markers = await ctx.storage.getMeta(options.kinds.map(resyncKey));
  let failure: SyncError | null = null;
  for (let i = 0; i < options.kinds.length; i++) {
    const table = ctx.table(options.kinds[i]!);
    const resync = options.resync || markers[i] !== undefined;
    try {
      await pullKind(ctx, table, options, resync);
    } catch (error) {
      if (!(error instanceof SyncError) || error.category !== "parse") {
        throw error;
      }
      failure ??= error;
    }
  }
  if (failure !== null) throw failure;
}

/**
 * Pulls one table, resyncing it on `410`. A `410` during a resync breaks
 * the contract (pages of a pull that began with no cursor never get it):
 * an error, not a loop.
 */
async function pullKind(
  ctx: EngineContext,
  table: TableConfig,
  options: PullPhaseOptions,
  resync: boolean,
): Promise<void> {
  try {
    await pullTable(ctx, table, { ...options, resync });
    return;
  } catch (error) {
    if (!(error instanceof ResyncRequiredError)) throw error;
    if (resync) {
      throw new ServerError(
        `Cannot resync '${table.kind}' as the server answered 410 to a pull that began with no cursor: current value is ${
          describe(error.message)
        }`,
        { status: 410, code: "gone", retryable: false, cause: error },
      );
    }
  }
  await pullKind(ctx, table, options, true);
}

/** Reads a stored request position, or `undefined` when malformed. */
function parseFrom(value: JsonValue | undefined): PullFrom | undefined {
  if (
    !isJsonObject(value) || typeof value.updatedAt !== "string" ||
    typeof value.id !== "string" || parseTimestamp(value.updatedAt) === null
  ) {
    return undefined;
  }
  return {
    updatedAt: value.updatedAt,
    id: value.id,
    pageToken: typeof value.pageToken === "string" ? value.pageToken : null,
  };
}

/** Reads and validates a stored cursor. */
function parseCursor(value: JsonValue | undefined): PullCursor | null {
  const from = parseFrom(value);
  if (from === undefined) return null;
  const object = value as JsonObject;
  if (!Object.hasOwn(object, "pageStart")) return from;
  const pageStart = object.pageStart === null
    ? null
    : parseFrom(object.pageStart);
  return pageStart === undefined ? from : { ...from, pageStart };
}

/** The position a request position names. */
function positionOf(from: PullFrom | null): Position | null {
  if (from === null) return null;
  return {
    updatedAt: from.updatedAt,
    time: parseTimestamp(from.updatedAt)!,
    id: from.id,
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
  // A table's first pull (no cursor yet) lists the whole table: when it
  // completes in this run it sweeps, as a resync does, the synced records
  // the listing lacks. Otherwise a record we pushed, deleted elsewhere and
  // its tombstone purged before our first pull, would live on here forever.
  // An interrupted first pull resumes from its cursor (clause 10) unswept,
  // and so does one that listed nothing: an empty listing is no evidence
  // against what we pushed (a server that lists nothing, e.g. a write-only
  // endpoint, must not empty the table).
  const firstPull = !options.resync && entry === undefined;
  if (firstPull) seen ??= new Set();
  let done = 0;
  let interrupted = false;
  for (;;) {
    signal.throwIfAborted();
    const limit = ctx.limits.pageSize;
    const { page, from } = await fetchPage(ctx, table, {
      cursor: parseCursor(entry?.value),
      limit,
      signal,
    });
    const read = readPage(table, page.items, positionOf(from));
    reportSkipped(ctx, table, read.skipped, stats);
    for (const { meta } of read.accepted) seen?.add(meta.id);
    // The server still has a record it sent broken: a resync keeps the
    // local copy rather than sweep it away.
    for (const { id } of read.skipped) if (id !== null) seen?.add(id);
    const caughtUp = page.items.length < limit && page.nextPageToken === null;
    if (read.end === null) {
      if (caughtUp) break;
      // Clause 9: the same request would bring the same page again.
      throw new ParseError(
        `Cannot pull '${kind}' as the server's page brings no progress past the cursor: current value is ${page.items.length} items and token ${
          describe(page.nextPageToken)
        }`,
        { code: "no_progress" },
      );
    }
    const applied = await applyPage(ctx, table, {
      accepted: read.accepted,
      end: read.end,
      // The server refuses a token that does not name the cursor sent with
      // it: only a cursor at the page's last item, as served, carries it.
      token: read.endsAtLast ? page.nextPageToken : null,
      from,
      entry,
    });
    if (applied === null) {
      // Another engine moved the cursor: continue from where it stands.
      // During a resync its pages escape `seen`, so no sweep this time;
      // the marker stays and the next run resyncs again.
      interrupted = true;
      [entry] = await ctx.storage.getMeta([key]);
      continue;
    }
    entry = applied;
    done += read.accepted.length;
    stats.pulled += read.accepted.length;
    stats.pages++;
    ctx.hub.emit({
      type: "pullPageApplied",
      kind,
      count: read.accepted.length,
      cursor: { updatedAt: read.end.updatedAt, id: read.end.id },
    });
    ctx.hub.emit({ type: "progress", phase: "pull", kind, done, total: null });
    if (caughtUp) break;
  }
  if (seen !== null && !interrupted && (!firstPull || seen.size > 0)) {
    await sweep(ctx, table, seen, stats);
  }
}

/**
 * Requests the page after `cursor`. A cursor in the middle of a page that
 * meets `410` goes back, once, to where that page was requested from (see
 * {@linkcode PullCursor.pageStart}).
 *
 * @returns The page and the position it was requested from.
 */
async function fetchPage(
  ctx: EngineContext,
  table: TableConfig,
  request: { cursor: PullCursor | null; limit: number; signal: AbortSignal },
): Promise<{ page: PullPage; from: PullFrom | null }> {
  const { cursor, limit, signal } = request;
  let from: PullFrom | null = cursor;
  let fallback = cursor?.pageStart;
  for (;;) {
    const sentAt = ctx.now();
    try {
      const page = await ctx.transport.pull({
        kind: table.kind,
        updatedSince: from?.updatedAt ?? null,
        afterId: from?.id ?? null,
        limit,
        pageToken: from?.pageToken ?? null,
      }, { signal });
      ctx.observeServerDate(page.serverDate, sentAt);
      return { page, from };
    } catch (error) {
      if (
        error instanceof ValidationError && from !== null &&
        from.pageToken !== null
      ) {
        // The server's token cannot travel (a lone surrogate, too long): it
        // is only a hint, and the keyset cursor goes on without it. Kept,
        // it would fail every later run before a request is sent.
        from = { ...from, pageToken: null };
        continue;
      }
      if (!(error instanceof ResyncRequiredError) || fallback === undefined) {
        throw error;
      }
      from = fallback;
      fallback = undefined;
    }
  }
}

/** A pulled item to apply, with the cursor position once it is applied. */
interface AcceptedItem {
  readonly item: JsonObject;
  readonly meta: RecordMeta;
  /** The furthest position reached with this item, skipped ones included. */
  readonly after: Position;
}

/** A pulled item that breaks the limits, at its index in the page. */
interface SkippedItem extends RecordFault {
  readonly index: number;
  /** Its id as served, when a string. */
  readonly id: string | null;
}

/** What a page brings, checked item by item. */
interface PageRead {
  readonly accepted: AcceptedItem[];
  readonly skipped: SkippedItem[];
  /** The furthest position the page reaches, or `null` for no progress. */
  readonly end: Position | null;
  /** Whether `end` is the page's last item itself, its id as served. */
  readonly endsAtLast: boolean;
}

/**
 * Checks every item of a page (clause 25). An item that breaks the limits
 * is skipped, and the cursor moves past it when its position is readable
 * (its `updated_at`, and its id or a valid stand-in past it). The cursor
 * never moves back: it is the furthest position seen.
 *
 * A valid item that is not after the one before it (a server that breaks
 * the `(updated_at, id)` order) is still applied: it is a genuine record,
 * and applying it cannot regress local data (a version older than the one
 * held is ignored). Refusing the page would let one misordered pair (say,
 * ids a server sorts by UTF-8 bytes rather than UTF-16 units) stop the pull
 * for good; skipping it would lose a record the client can take.
 */
function readPage(
  table: TableConfig,
  items: readonly JsonValue[],
  from: Position | null,
): PageRead {
  const accepted: AcceptedItem[] = [];
  const skipped: SkippedItem[] = [];
  let furthest = from;
  let endsAtLast = false;
  for (let index = 0; index < items.length; index++) {
    const item = items[index];
    const meta = readRecordMeta(table, item);
    let position: Position | null;
    let exact: boolean;
    if (isFault(meta)) {
      const id = isJsonObject(item) ? item[table.idField] : undefined;
      skipped.push({
        ...meta,
        index,
        id: typeof id === "string" ? id : null,
      });
      position = meta.position;
      exact = position !== null && id === position.id;
    } else {
      position = { updatedAt: meta.updatedAt, time: meta.time, id: meta.id };
      exact = true;
    }
    if (
      position !== null &&
      (furthest === null || comparePositions(position, furthest) > 0)
    ) {
      furthest = position;
    }
    endsAtLast = exact && furthest === position;
    if (!isFault(meta)) {
      accepted.push({ item: item as JsonObject, meta, after: furthest! });
    }
  }
  return {
    accepted,
    skipped,
    end: furthest === from ? null : furthest,
    endsAtLast,
  };
}

/** Reports the skipped items of a page and counts them (clause 25). */
function reportSkipped(
  ctx: EngineContext,
  table: TableConfig,
  skipped: readonly SkippedItem[],
  stats: SyncStats,
): void {
  for (const item of skipped) {
    stats.skipped++;
    ctx.hub.emit({
      type: "pullItemSkipped",
      kind: table.kind,
      index: item.index,
      problem: item.problem,
      reason:
        `Cannot apply pulled item ${item.index} of '${table.kind}' as ${item.reason}`,
      position: item.position === null
        ? null
        : { updatedAt: item.position.updatedAt, id: item.position.id },
    });
  }
}

/** What {@linkcode applyPage} writes. */
interface PagePlan {
  /** The items to apply, in page order. */
  readonly accepted: readonly AcceptedItem[];
  /** The furthest position of the page: the cursor once it is applied. */
  readonly end: Position;
  /** The token the cursor at `end` carries. */
  readonly token: string | null;
  /** Where the page was requested from. */
  readonly from: PullFrom | null;
  /** The cursor entry as last read. */
  readonly entry: Versioned<JsonValue> | undefined;
}

/**
 * Applies one page, in as many writes as the storage's limits require; each
 * write carries the cursor of its last item, so an interrupted page resumes
 * exactly after the last chunk that landed (clause 10), and the last write
 * carries the page's end (skipped items included) and token. Chunks are
 * sized by the mutations actually planned (a record with pending edits
 * stores its local data and its base), never by an estimate. A page whose
 * items were all skipped writes the cursor alone.
 *
 * @returns The new cursor entry, or `null` when another writer moved the
 * cursor first.
 */
async function applyPage(
  ctx: EngineContext,
  table: TableConfig,
  plan: PagePlan,
): Promise<Versioned<JsonValue> | undefined | null> {
  const key = cursorKey(table.kind);
  const { accepted } = plan;
  let entry = plan.entry;
  const { maxMutationsPerWrite, maxWriteBytes } = ctx.storage.capabilities;
  const measure = Number.isFinite(maxWriteBytes);
  // One mutation per item plus the cursor's.
  const perWrite = Math.max(1, maxMutationsPerWrite - 1);
  const cursorAt = (end: number): Extract<Mutation, { type: "putMeta" }> => {
    const value: JsonObject = end === accepted.length
      ? {
        updatedAt: plan.end.updatedAt,
        id: plan.end.id,
        pageToken: plan.token,
      }
      : {
        updatedAt: accepted[end - 1]!.after.updatedAt,
        id: accepted[end - 1]!.after.id,
        pageToken: null,
        pageStart: plan.from === null ? null : { ...plan.from },
      };
    return {
      type: "putMeta",
      key,
      value,
      expect: entry === undefined ? null : entry.rev,
    };
  };
  let start = 0;
  do {
    let committed = false;
    for (let attempt = 0; attempt < ctx.limits.writeRetries; attempt++) {
      const stop = Math.min(accepted.length, start + perWrite);
      const ids = accepted.slice(start, stop).map((one) => one.meta.id);
      const locals = ids.length === 0
        ? []
        : await ctx.storage.getRecords(table.kind, ids);
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
          accepted[i]!,
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
      let cursor = cursorAt(end);
      while (
        measure && planned.length > 1 &&
        bytes + byteLength([cursor]) - 1 > maxWriteBytes
      ) {
        planned.pop();
        planChanges.pop();
        bytes -= sizes.pop()!;
        end--;
        cursor = cursorAt(end);
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
  } while (start < accepted.length);
  return entry;
}

/** Plans one pulled item (clauses 11, 12). */
function planItem(
  table: TableConfig,
  accepted: AcceptedItem,
  local: Versioned<StoredRecord> | undefined,
  mutations: Mutation[],
  changes: RecordChange[],
): void {
  const { item, meta } = accepted;
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
      origin: "pulled",
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
    origin: "pulled",
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
        origin: "pulled",
      });
    }
  });
  await ctx.storage.write([{ type: "deleteMeta", key: resyncKey(table.kind) }]);
}
