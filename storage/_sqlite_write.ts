/**
 * The SQLite storage's commit: a planned write's steps (see
 * `_sqlite_plan.ts`) run in one `BEGIN IMMEDIATE` transaction, rolled back
 * whole when an expect fails, with one revision for every item the write
 * puts. Private to `storage/sqlite.ts`: not exported from the package.
 *
 * @module
 */

import type { SqliteValue } from "../src/sqlite_like.ts";
import type { WriteResult } from "../src/storage.ts";
import type {
  Planned,
  PlannedExpect,
  Step,
  WriteSteps,
} from "./_sqlite_plan.ts";
import { revisionOf } from "./_sqlite_rows.ts";
import { firstRow } from "./_sqlite_schema.ts";
import {
  batchChecks,
  type BatchType,
  changes,
  driverError,
  rollbackQuietly,
  type SqliteStatements,
} from "./_sqlite_statements.ts";

/**
 * How many revisions a connection reserves at once. One store-wide counter
 * (`sync_state.revision`, the highest revision any connection may have
 * issued) hands out blocks under the write lock, so revisions never repeat,
 * across connections, processes and reopens, even for a key deleted and
 * written again. Reserving a block instead of bumping the counter on every
 * write spares each write a page (about a fifth of a small write's cost);
 * 2^53 allows 9 billion blocks.
 */
const REVISION_BLOCK = 1_000_000;

/**
 * The most rows one multi-row statement writes. Beyond a few dozen, a
 * longer statement saves nothing more (measured with `node:sqlite`).
 */
const BATCH_ROWS = 32;

/** The revision a write took, and the block it reserved for it, if any. */
export interface Taken {
  /** The revision. */
  readonly revision: number;
  /** The end (exclusive) of a block the write reserved. */
  readonly blockEnd: number | undefined;
}

/** A connection's block of revisions. */
export class RevisionBlock {
  /** The next revision of this connection's committed block. */
  #next = 0;
  /** The end (exclusive) of this connection's committed block. */
  #end = 0;

  /**
   * The revision for a write: the block's next, or the first of a block
   * reserved now, inside the write's transaction.
   *
   * @param s The statements.
   * @returns The revision, and the block's end when one was reserved.
   */
  take(s: SqliteStatements): Taken {
    if (this.#next < this.#end) {
      return { revision: this.#next, blockEnd: undefined };
    }
    const last = Number(firstRow(s.reserve, REVISION_BLOCK)!["revision"]);
    return { revision: last - REVISION_BLOCK + 1, blockEnd: last + 1 };
  }

  /**
   * Takes over what a committed write took. Only a committed reservation
   * is this connection's: a rolled-back one may be handed to another
   * connection next.
   *
   * @param taken What the write took.
   */
  committed(taken: Taken): void {
    if (taken.blockEnd !== undefined) this.#end = taken.blockEnd;
    this.#next = taken.revision + 1;
  }
}

/** One write's transaction: its statements, its revision, what it read. */
interface Run {
  readonly s: SqliteStatements;
  readonly block: RevisionBlock;
  /** The revision, taken on first need. */
  taken: Taken | undefined;
  /** Revisions read before an item's first mutation, by item. */
  readonly before: Map<string, number | undefined>;
}

/**
 * Commits a write's steps in one transaction, or nothing if an expect
 * fails.
 *
 * @param s The statements.
 * @param write The steps, and the connection's block of revisions.
 * @returns The write's result.
 * @throws {StorageError} When the driver fails; nothing is committed.
 */
export function commitWrite(
  s: SqliteStatements,
  write: { readonly steps: WriteSteps; readonly block: RevisionBlock },
): WriteResult {
  try {
    s.begin.run();
  } catch (error) {
    throw driverError("write mutations", error);
  }
  try {
    const run: Run = {
      s,
      block: write.block,
      taken: undefined,
      before: new Map(),
    };
    if (!write.steps.steps.every((step) => runStep(run, step))) {
      s.rollback.run();
      return { ok: false };
    }
    s.commit.run();
    if (run.taken !== undefined) write.block.committed(run.taken);
    const rev = run.taken === undefined ? null : String(run.taken.revision);
    return { ok: true, revs: write.steps.puts.map((put) => put ? rev : null) };
  } catch (error) {
    rollbackQuietly(s);
    throw driverError("write mutations", error);
  }
}

/** The write's one revision for every item it puts. */
function revision(run: Run): number {
  run.taken ??= run.block.take(run.s);
  return run.taken.revision;
}

/** Runs a step; whether its expects held. */
function runStep(run: Run, step: Step): boolean {
  switch (step.type) {
    case "rows":
      return runRows(run, step);
    case "once": {
      // A delete expecting absence fails when it removes something.
      const { space, keys } = step.planned;
      return changes(run.s.spaces[space].remove.run(...keys)) === 0;
    }
    case "again":
      return writeAgain(run, step);
  }
}

/**
 * Runs a batch of mutations of distinct items with multi-row statements of
 * 32, 16, …, 1 rows (so at most six shapes per space and type are
 * prepared). A batch with expects fails when fewer rows changed than it
 * holds (an item not absent, or not at its expected revision), and the
 * write rolls back.
 */
function runRows(
  run: Run,
  step: { readonly batch: BatchType; readonly rows: readonly Planned[] },
): boolean {
  const { batch: type, rows } = step;
  if (!run.s.rowBatches && (type !== "insert" && type !== "upsert")) {
    return rows.every((planned) => runRow(run, type, planned));
  }
  const rev = type === "remove" || type === "removeIf" ? 0 : revision(run);
  let changed = 0;
  for (let start = 0; start < rows.length;) {
    let size = BATCH_ROWS;
    while (size > rows.length - start) size /= 2;
    const params: SqliteValue[] = type === "update" ? [rev] : [];
    const end = start + size;
    if (type === "insert" || type === "upsert") {
      for (let index = start; index < end; index++) {
        const { keys, columns } = rows[index]!;
        for (const key of keys) params.push(key);
        for (const column of columns!) params.push(column);
        params.push(rev);
      }
    } else {
      for (let index = start; index < end; index++) {
        const { keys, columns, expect } = rows[index]!;
        for (const key of keys) params.push(key);
        if (type === "remove") continue;
        params.push(expect as number);
        if (type === "update") {
          for (const column of columns!) params.push(column);
        }
      }
    }
    const statement = run.s.batch(rows[0]!.space, { type, rows: size });
    changed += changes(statement.run(...params));
    start += size;
  }
  return !batchChecks(type) || changed === rows.length;
}

/**
 * Runs one row of an update or delete batch alone, where the SQLite cannot
 * run them as multi-row statements.
 */
function runRow(run: Run, type: BatchType, planned: Planned): boolean {
  const { keys, columns, expect } = planned;
  const statements = run.s.spaces[planned.space];
  switch (type) {
    case "update":
      return changes(
        statements.update.run(
          ...columns!,
          revision(run),
          ...keys,
          expect as number,
        ),
      ) !== 0;
    case "removeIf":
      return changes(statements.removeIf.run(...keys, expect as number)) !==
        0;
    default:
      statements.remove.run(...keys);
      return true;
  }
}

/**
 * Writes an item the write touches several times, its expect checked
 * against the revision read before the item's first mutation.
 */
function writeAgain(
  run: Run,
  step: {
    readonly planned: Planned;
    readonly item: string;
    readonly checked: boolean;
  },
): boolean {
  const { planned: { space, keys, columns, expect }, item, checked } = step;
  const statements = run.s.spaces[space];
  if (checked) {
    if (!run.before.has(item)) {
      run.before.set(item, revisionOf(firstRow(statements.get, ...keys)));
    }
    if (!expectationHolds(expect, run.before.get(item))) return false;
  }
  if (columns === undefined) statements.remove.run(...keys);
  else statements.upsert.run(...keys, ...columns, revision(run));
  return true;
}

function expectationHolds(
  expect: PlannedExpect,
  rev: number | undefined,
): boolean {
  if (expect === undefined) return true;
  if (expect === null) return rev === undefined;
  return rev === expect;
}
