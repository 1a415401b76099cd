/**
 * The pull phase (ENGINE.md clauses 10-13, 25): fetches each table's changes
 * page by page with the keyset cursor and applies them without ever
 * overwriting a pending local edit; an item that breaks the wire limits is
 * skipped and reported, and the pull goes on past it.
 *
 * @module
 */

import type { EngineContext, TableConfig } from "./_context.ts";
import {
  cursorKey,
  parseCursor,
  positionOf,
  type PullCursor,
  type PullFrom,
} from "./_cursor.ts";
import {
  applyPage,
  pageEndCursor,
  readPage,
  reportSkipped,
} from "./_pull_page.ts";
import { resyncKey, sweep } from "./_resync.ts";
import { describe } from "./describe.ts";
import {
  ParseError,
  ResyncRequiredError,
  ServerError,
  SyncError,
  ValidationError,
} from "./errors.ts";
import type { SyncStats } from "./events.ts";
import type { JsonValue } from "./json.ts";
import type { PullPage } from "./transport.ts";

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
  //
  // A first pull into a table that holds nothing yet has nothing to sweep:
  // a record that appears during it is either pulled (listed) or written
  // locally since (never evidence of a purge), so it keeps no set of ids,
  // which would grow with the table (1M ids are tens of MB), and lists
  // nothing back at the end.
  const holds = options.resync || entry !== undefined ||
    await holdsRecords(ctx, kind);
  const firstPull = !options.resync && entry === undefined && holds;
  if (firstPull) seen ??= new Set();
  // Whether the last page held no local record: the next page's records
  // are then written unread, as new (see applyPage). Once such a write
  // fails, this pull reads every page first: a failed write costs as much
  // as one that lands.
  let guessAbsent = !holds;
  let missed = false;
  let done = 0;
  // Items after the pages applied, when the server tells (`total`).
  let remaining: number | null = null;
  let interrupted = false;
  // The next page, requested while this one is applied: the request needs
  // only the cursor this page leaves, and the two overlap (the storage
  // commits while the server answers). It is used only if the cursor then
  // stands where it was asked from; otherwise it is cancelled.
  let ahead: Ahead | undefined;
  try {
    for (;;) {
      signal.throwIfAborted();
      const limit = ctx.limits.pageSize;
      const { page, from } = await takeAhead(ahead, entry?.value, limit) ??
        await fetchPage(ctx, table, {
          cursor: parseCursor(entry?.value),
          limit,
          signal,
        });
      ahead = undefined;
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
      // The server refuses a token that does not name the cursor sent with
      // it: only a cursor at the page's last item, as served, carries it.
      const token = read.endsAtLast ? page.nextPageToken : null;
      if (!caughtUp) {
        ahead = fetchAhead(ctx, table, {
          cursor: pageEndCursor({ end: read.end, token }),
          limit,
          signal,
        });
      }
      const applied = await applyPage(ctx, table, {
        accepted: read.accepted,
        end: read.end,
        token,
        from,
        entry,
        guessAbsent,
      });
      if (applied === null) {
        // Another engine moved the cursor: continue from where it stands.
        // During a resync its pages escape `seen`, so no sweep this time;
        // the marker stays and the next run resyncs again.
        interrupted = true;
        [entry] = await ctx.storage.getMeta([key]);
        continue;
      }
      entry = applied.entry;
      missed ||= applied.missed;
      guessAbsent = applied.absent && !missed;
      done += read.accepted.length;
      stats.pulled += read.accepted.length;
      stats.pages++;
      ctx.hub.emit({
        type: "pullPageApplied",
        kind,
        count: read.accepted.length,
        cursor: { updatedAt: read.end.updatedAt, id: read.end.id },
      });
      remaining = remainingAfter(page, remaining, caughtUp);
      ctx.hub.emit({
        type: "progress",
        phase: "pull",
        kind,
        done,
        total: remaining === null ? null : done + remaining,
      });
      if (caughtUp) break;
    }
  } finally {
    // Cancelled, not waited for: a transport that ignored the signal would
    // hold a failed or closed run until the server answered.
    if (ahead !== undefined) dropAhead(ahead);
  }
  if (seen !== null && !interrupted && (!firstPull || seen.size > 0)) {
    await sweep(ctx, table, seen, stats);
  }
}

/** Whether a table holds any record, tombstones included. */
async function holdsRecords(
  ctx: EngineContext,
  kind: string,
): Promise<boolean> {
  const [any] = await ctx.storage.listRecords(kind, {
    includeDeleted: true,
    limit: 1,
  });
  return any !== undefined;
}

/**
 * The items left after a page: what the page's `total` says beyond its own
 * items, else the last estimate less this page; none once caught up.
 * `null` while the server has told nothing.
 */
function remainingAfter(
  page: PullPage,
  before: number | null,
  caughtUp: boolean,
): number | null {
  // Another transport's total is checked as the REST one checks the wire's.
  const told = typeof page.total === "number" &&
      Number.isSafeInteger(page.total) && page.total >= page.items.length
    ? page.total
    : undefined;
  const estimate = told !== undefined
    ? told - page.items.length
    : before === null
    ? null
    : before - page.items.length;
  if (estimate === null) return null;
  return caughtUp ? 0 : Math.max(0, estimate);
}

/** A page requested before the cursor it was asked from was stored. */
interface Ahead {
  /** The cursor's value it was asked from, as JSON, and the limit. */
  readonly key: string;
  /** The page, or why it could not be had; never rejects. */
  readonly result: Promise<
    | { readonly ok: true; readonly fetched: Fetched }
    | { readonly ok: false; readonly error: unknown }
  >;
  /** Cancels the request. */
  readonly controller: AbortController;
}

/** A page, and the position it was requested from. */
interface Fetched {
  readonly page: PullPage;
  readonly from: PullFrom | null;
}

/** Requests the page after a cursor not stored yet (see {@linkcode Ahead}). */
function fetchAhead(
  ctx: EngineContext,
  table: TableConfig,
  request: { cursor: JsonValue; limit: number; signal: AbortSignal },
): Ahead {
  const { cursor, limit } = request;
  const controller = new AbortController();
  const signal = AbortSignal.any([request.signal, controller.signal]);
  const result = fetchPage(ctx, table, {
    cursor: parseCursor(cursor),
    limit,
    signal,
  }).then(
    (fetched) => ({ ok: true as const, fetched }),
    (error: unknown) => ({ ok: false as const, error }),
  );
  return { key: aheadKey(cursor, limit), result, controller };
}

/**
 * The page requested ahead, when it was asked from the cursor that stands
 * now with the same limit; `undefined` (and the request cancelled) when not.
 *
 * @throws What the request failed with.
 */
async function takeAhead(
  ahead: Ahead | undefined,
  cursor: JsonValue | undefined,
  limit: number,
): Promise<Fetched | undefined> {
  if (ahead === undefined) return undefined;
  if (cursor === undefined || ahead.key !== aheadKey(cursor, limit)) {
    dropAhead(ahead);
    return undefined;
  }
  const result = await ahead.result;
  if (!result.ok) throw result.error;
  return result.fetched;
}

/**
 * Cancels a request made ahead. Its outcome is dropped: `result` never
 * rejects, so nothing goes unhandled.
 */
function dropAhead(ahead: Ahead): void {
  ahead.controller.abort();
}

/** What a page requested ahead is matched by. */
function aheadKey(cursor: JsonValue, limit: number): string {
  return `${limit} ${JSON.stringify(cursor)}`;
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
