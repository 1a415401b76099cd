/**
 * One pulled page (ENGINE.md clauses 10-12, 25): its items checked against
 * the wire limits, the skipped ones reported, and the rest applied with the
 * cursor in as many writes as the storage's limits require.
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
import { commitWithRetry } from "./_commit.ts";
import { cursorKey, type PullFrom } from "./_cursor.ts";
import type { SyncEvent, SyncStats } from "./events.ts";

/** The `change` event of a pulled record. */
type ChangeEvent = Extract<SyncEvent, { type: "change" }>;
import { isJsonObject, type JsonObject, type JsonValue } from "./json.ts";
import { byteLength } from "./_write.ts";
import type { Mutation, StoredRecord, Versioned } from "./storage.ts";

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
export function readPage(
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
      // A valid item is its own position (a RecordMeta is one).
      position = meta;
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
export function reportSkipped(
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
  /**
   * Whether to write the page's records as new without reading them first
   * (see {@linkcode applyPage}): what the table's last page found.
   */
  readonly guessAbsent: boolean;
}

/** A page applied: the new cursor entry, and what its records were. */
export interface AppliedPage {
  /** The cursor entry once the page landed. */
  readonly entry: Versioned<JsonValue> | undefined;
  /** Whether none of the page's records existed locally. */
  readonly absent: boolean;
  /** Whether a write of records guessed absent failed. */
  readonly missed: boolean;
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
 * With `guessAbsent` (the table's last page held no local record), a chunk
 * without tombstones is first written unread, every record as new
 * (`expect: null`): exactly the plan a read finding them all absent makes,
 * so when that write commits, the outcome is the same, without the read.
 * When a record exists after all (a local write since, a page the server
 * sends again), the write fails whole and the chunk is read and planned as
 * usual. A tombstone is never guessed: for an absent record it plans no
 * mutation at all, so nothing would check that the record is absent.
 *
 * @returns The new cursor entry, or `null` when another writer moved the
 * cursor first.
 */
export async function applyPage(
  ctx: EngineContext,
  table: TableConfig,
  plan: PagePlan,
): Promise<AppliedPage | null> {
  const { maxMutationsPerWrite, maxWriteBytes } = ctx.storage.capabilities;
  // One mutation per item plus the cursor's.
  const perWrite = Math.max(1, maxMutationsPerWrite - 1);
  let entry = plan.entry;
  let start = 0;
  let guess = plan.guessAbsent;
  let absent = true;
  let missed = false;
  /** Plans and writes the chunk from `start`; whether it committed. */
  const write = async (
    stop: number,
    locals: readonly (Versioned<StoredRecord> | undefined)[],
  ): Promise<boolean> => {
    const chunk = planChunk(table, {
      page: plan,
      start,
      stop,
      locals,
      expect: entry === undefined ? null : entry.rev,
      maxWriteBytes,
    });
    const result = await ctx.storage.write(chunk.mutations);
    if (!result.ok) return false;
    entry = { value: chunk.cursor.value, rev: result.revs.at(-1)! };
    for (const change of chunk.changes) ctx.hub.emit(change);
    start = chunk.end;
    return true;
  };
  do {
    const moved = await commitWithRetry<boolean>(ctx, {
      what: `apply pulled page of '${table.kind}'`,
      attempt: async () => {
        const stop = Math.min(plan.accepted.length, start + perWrite);
        if (guess && !hasTombstone(plan.accepted, start, stop)) {
          if (await write(stop, new Array(stop - start))) {
            return { ok: true, value: false };
          }
          guess = false;
          missed = true;
          absent = false;
        }
        const ids = plan.accepted.slice(start, stop).map((one) => one.meta.id);
        const locals = ids.length === 0
          ? []
          : await ctx.storage.getRecords(table.kind, ids);
        if (await write(stop, locals)) {
          if (locals.some((local) => local !== undefined)) absent = false;
          return { ok: true, value: false };
        }
        const [now] = await ctx.storage.getMeta([cursorKey(table.kind)]);
        // Another writer moved the cursor: the caller goes on from there.
        if (now?.rev !== entry?.rev) return { ok: true, value: true };
        return { ok: false };
      },
    });
    if (moved) return null;
  } while (start < plan.accepted.length);
  return { entry, absent, missed };
}

/**
 * The cursor a page leaves once every write of it landed: what
 * {@linkcode applyPage} stores last, so the next page can be requested
 * before this one is applied.
 *
 * @param page The page's furthest position and its token.
 * @returns The cursor's value.
 */
export function pageEndCursor(
  page: { readonly end: Position; readonly token: string | null },
): JsonObject {
  return {
    updatedAt: page.end.updatedAt,
    id: page.end.id,
    pageToken: page.token,
  };
}

/** Whether any item from `start` to `stop` is a tombstone. */
function hasTombstone(
  accepted: readonly AcceptedItem[],
  start: number,
  stop: number,
): boolean {
  for (let i = start; i < stop; i++) if (accepted[i]!.meta.deleted) return true;
  return false;
}

/** The input of {@linkcode planChunk}. */
interface ChunkInput {
  /** The page. */
  readonly page: PagePlan;
  /** The index of the chunk's first item. */
  readonly start: number;
  /** The index after the last item that may go in the chunk. */
  readonly stop: number;
  /** The local records of the items from `start` to `stop`. */
  readonly locals: readonly (Versioned<StoredRecord> | undefined)[];
  /** The revision the cursor is expected at. */
  readonly expect: string | null;
  /** The storage's `maxWriteBytes`. */
  readonly maxWriteBytes: number;
}

/** One write of a page: its items' mutations, then the cursor after them. */
interface Chunk {
  /** The mutations, the cursor's last. */
  readonly mutations: Mutation[];
  /** What the app sees once they commit. */
  readonly changes: ChangeEvent[];
  /** The cursor's mutation. */
  readonly cursor: Extract<Mutation, { type: "putMeta" }>;
  /** The index after the chunk's last item. */
  readonly end: number;
}

/**
 * Plans the items from `start` that fit one write, measured as the storage
 * measures a write (the JSON of the mutations); the cursor's own size
 * depends on the item it ends at, so it is measured last and the chunk
 * shrinks if the cursor does not fit. Pure.
 */
function planChunk(table: TableConfig, input: ChunkInput): Chunk {
  const { page, start, stop, locals, maxWriteBytes } = input;
  const { accepted } = page;
  const measure = Number.isFinite(maxWriteBytes);
  const cursorAt = (end: number): Extract<Mutation, { type: "putMeta" }> => {
    const value: JsonObject = end === accepted.length ? pageEndCursor(page) : {
      updatedAt: accepted[end - 1]!.after.updatedAt,
      id: accepted[end - 1]!.after.id,
      pageToken: null,
      pageStart: page.from === null ? null : { ...page.from },
    };
    return {
      type: "putMeta",
      key: cursorKey(table.kind),
      value,
      expect: input.expect,
    };
  };
  const mutations: Mutation[] = [];
  const changes: ChangeEvent[] = [];
  if (measure) {
    // Counting each item's JSON costs what serialising it costs (a fifth
    // of a KV pull): first the whole chunk, against a bound of its size.
    for (let i = start; i < stop; i++) {
      planItem(table, accepted[i]!, locals[i - start], mutations, changes);
    }
    const cursor = cursorAt(stop);
    mutations.push(cursor);
    if (jsonBound(mutations, maxWriteBytes) <= maxWriteBytes) {
      return { mutations, changes, cursor, end: stop };
    }
    mutations.length = 0;
    changes.length = 0;
  }
  // Per item planned (when measuring): where its mutations and changes
  // begin, and its size, so that the chunk can shrink from its end.
  const marks: { mutations: number; changes: number; size: number }[] = [];
  let bytes = 2;
  let end = start;
  for (; end < stop; end++) {
    const mark = { mutations: mutations.length, changes: changes.length };
    planItem(table, accepted[end]!, locals[end - start], mutations, changes);
    if (!measure) continue;
    const size = mutations.length > mark.mutations
      ? byteLength(mutations.slice(mark.mutations)) - 1
      : 0;
    if (marks.length > 0 && bytes + size > maxWriteBytes) {
      mutations.length = mark.mutations;
      changes.length = mark.changes;
      break;
    }
    marks.push({ ...mark, size });
    bytes += size;
  }
  let cursor = cursorAt(end);
  while (
    measure && marks.length > 1 &&
    bytes + byteLength([cursor]) - 1 > maxWriteBytes
  ) {
    const mark = marks.pop()!;
    mutations.length = mark.mutations;
    changes.length = mark.changes;
    bytes -= mark.size;
    end--;
    cursor = cursorAt(end);
  }
  mutations.push(cursor);
  return { mutations, changes, cursor, end };
}

/** Plans one pulled item (clauses 11, 12). */
function planItem(
  table: TableConfig,
  accepted: AcceptedItem,
  local: Versioned<StoredRecord> | undefined,
  mutations: Mutation[],
  changes: ChangeEvent[],
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
      type: "change",
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
    type: "change",
    kind: table.kind,
    id: meta.id,
    data: meta.deleted ? null : item,
    deleted: meta.deleted,
    origin: "pulled",
  });
}

/**
 * An upper bound of the UTF-8 length of `JSON.stringify(value)` for JSON
 * data, without serialising it: a UTF-16 unit takes at most 6 bytes (a
 * `\uXXXX` escape; UTF-8 itself takes at most 3 a unit), a number at most
 * 32 characters, `false` 5. Stops walking once past `limit`. What is no
 * JSON (`undefined`, a function) counts as the `null` it may become.
 *
 * @returns The bound, or a number above `limit` once it passes it.
 */
export function jsonBound(value: unknown, limit: number): number {
  switch (typeof value) {
    case "string":
      return 2 + 6 * value.length;
    case "number":
      return 32;
    case "object":
      break;
    default:
      return 5;
  }
  if (value === null) return 4;
  let bytes = 2;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length && bytes <= limit; i++) {
      bytes += jsonBound(value[i], limit - bytes) + 1;
    }
    return bytes;
  }
  for (const key in value) {
    if (bytes > limit) break;
    if (!Object.hasOwn(value, key)) continue;
    bytes += 4 + 6 * key.length +
      jsonBound((value as Record<string, unknown>)[key], limit - bytes);
  }
  return bytes;
}
