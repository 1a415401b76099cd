/**
 * The SQLite drain's storage work written by hand, on a copy of an outbox
 * the adapter filled (issue 14's floors): no engine, no adapter, only the
 * statements, each step of a round in a transaction as the adapter commits
 * it. `bench/outbox_bench.ts` adds each to bare requests as a floor row;
 * `bench/_sqlite_floor.ts` prints their stages.
 *
 * - {@linkcode byHand}: the adapter's own statements for a drain round: list
 *   the pending ops (and parse them), claim each (its JSON rewritten with
 *   `attempts + 1`, checked against its revision), read the records, settle
 *   each (delete the op, rewrite the record with its base).
 * - {@linkcode setBased}: a prototype of a storage contract with outbox
 *   verbs instead of generic mutations: an `attempts` column claimed by one
 *   `UPDATE` per round, settled by one ranged `DELETE` and, per record, an
 *   `UPDATE` of small columns (no JSON rewritten).
 * - {@linkcode leastDurable}: the least any durable outbox does: list, then
 *   one ranged `UPDATE` to claim a round and one to mark it sent, nothing
 *   per record.
 *
 * @module
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";

/** Ops per round by default: the engine's `pushBatchSize` in the benches. */
export const STEP = 1_000;

type Row = Record<string, unknown>;
/** Milliseconds per stage. */
export type Stages = Record<string, number>;

/** The drain floors by name. */
export const FLOORS = {
  "this layout by hand": byHand,
  "set-based outbox verbs (prototype)": setBased,
  "the least a durable outbox does": leastDurable,
} as const;

/**
 * Opens an outbox file as the adapter does (WAL, `synchronous = NORMAL`).
 *
 * @param path The file.
 * @returns The open database; close it.
 */
export function openOutboxFile(path: string): DatabaseSync {
  const db = new DatabaseSync(path);
  db.exec("PRAGMA journal_mode = WAL");
  db.exec("PRAGMA synchronous = NORMAL");
  return db;
}

/**
 * Runs `work` on a fresh copy of an outbox file, timing its stages.
 *
 * @param template The outbox file (closed, WAL checkpointed).
 * @param path Where to put the copy (left for the caller to remove).
 * @param work One of {@linkcode FLOORS}.
 * @param step Ops per round.
 * @returns Milliseconds per stage.
 */
export async function onCopy(
  template: string,
  path: string,
  work: (db: DatabaseSync, step: number) => Stages,
  step: number = STEP,
): Promise<Stages> {
  await Deno.copyFile(template, path);
  const db = openOutboxFile(path);
  try {
    return work(db, step);
  } finally {
    db.close();
  }
}

/** Times `run` into `stages[name]`, in a transaction when asked. */
function timed<T>(
  stages: Stages,
  name: string,
  run: () => T,
  db?: DatabaseSync,
): T {
  const started = performance.now();
  if (db !== undefined) db.exec("BEGIN IMMEDIATE");
  const result = run();
  if (db !== undefined) db.exec("COMMIT");
  stages[name] = (stages[name] ?? 0) + performance.now() - started;
  return result;
}

/** The adapter's statements for a drain round, by hand. */
export function byHand(db: DatabaseSync, step: number): Stages {
  const stages: Stages = { list: 0, claim: 0, "read records": 0, settle: 0 };
  const list = db.prepare(
    "SELECT op_id, kind, id, value, rev FROM ops WHERE op_id > ? AND state = 'pending' ORDER BY op_id LIMIT ?",
  );
  const claim = db.prepare(
    "UPDATE ops SET value = ?, rev = ? WHERE op_id = ? AND rev = ?",
  );
  const read = db.prepare(
    "SELECT value, rev FROM records WHERE kind = ? AND id = ?",
  );
  const remove = db.prepare("DELETE FROM ops WHERE op_id = ? AND rev = ?");
  const settle = db.prepare(
    "UPDATE records SET value = ?, deleted = 0, base_is_data = 1, rev = ? WHERE kind = ? AND id = ? AND rev = ?",
  );
  let rev = 1e9;
  let after: Uint8Array = new Uint8Array(0);
  for (;;) {
    const rows = timed(stages, "list", () => listed(list, after, step));
    if (rows.length === 0) return stages;
    after = rows.at(-1)!.row["op_id"] as Uint8Array;
    timed(stages, "claim", () => {
      for (const { row, op } of rows) {
        op["attempts"] = (op["attempts"] as number) + 1;
        claim.run(
          JSON.stringify(op),
          ++rev,
          row["op_id"] as Uint8Array,
          row["rev"] as number,
        );
        row["rev"] = rev;
      }
    }, db);
    const records = timed(stages, "read records", () =>
      rows.map(({ row }) => {
        const found = read.get(kindKey(row), idKey(row)) as Row;
        return {
          record: JSON.parse(found["value"] as string),
          rev: found["rev"] as number,
        };
      }));
    timed(stages, "settle", () => {
      for (let i = 0; i < rows.length; i++) {
        const { row, op } = rows[i]!;
        remove.run(row["op_id"] as Uint8Array, row["rev"] as number);
        const { record, rev: expected } = records[i]!;
        const { data: _, ...base } = {
          data: op["payload"],
          updatedAt: "2026-12-06T00:00:00.000Z",
          deleted: false,
        };
        settle.run(
          JSON.stringify({
            ...record,
            data: op["payload"],
            base,
            lastOpId: null,
          }),
          ++rev,
          kindKey(row),
          idKey(row),
          expected,
        );
      }
    }, db);
  }
}

/** The prototype: an attempts column, set-based claim and settle. */
export function setBased(db: DatabaseSync, step: number): Stages {
  db.exec("ALTER TABLE records ADD COLUMN base_updated_at TEXT");
  db.exec("ALTER TABLE records ADD COLUMN pending INTEGER NOT NULL DEFAULT 1");
  const remove = db.prepare(
    "DELETE FROM ops WHERE op_id >= ? AND op_id <= ? AND state = 'pending'",
  );
  const settle = db.prepare(
    "UPDATE records SET base_is_data = 1, base_updated_at = ?, pending = 0 WHERE kind = ? AND id = ?",
  );
  return rangedRounds(db, step, (first, last, rows) => {
    remove.run(first, last);
    for (const { row } of rows) {
      settle.run(
        "2026-12-06T00:00:00.000Z",
        row["kind"] as Uint8Array,
        row["id"] as Uint8Array,
      );
    }
  });
}

/**
 * The least any durable outbox does: list, claim the round with one ranged
 * `UPDATE`, settle it with one ranged `UPDATE` that marks its ops sent
 * (nothing per record: the base would be read off the sent op later).
 */
export function leastDurable(db: DatabaseSync, step: number): Stages {
  const settle = db.prepare(
    "UPDATE ops SET state = 'sent' WHERE op_id >= ? AND op_id <= ? AND state = 'pending'",
  );
  return rangedRounds(db, step, (first, last) => settle.run(first, last));
}

/**
 * Drains in rounds of `step` ops with an `attempts` column: list a round,
 * claim it with one ranged `UPDATE`, then `settle` it, each step in a
 * transaction of its own.
 */
function rangedRounds(
  db: DatabaseSync,
  step: number,
  settle: (first: Uint8Array, last: Uint8Array, rows: Listed[]) => void,
): Stages {
  const stages: Stages = { list: 0, claim: 0, settle: 0 };
  db.exec("ALTER TABLE ops ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0");
  const list = db.prepare(
    "SELECT op_id, kind, id, value, attempts FROM ops WHERE op_id > ? AND state = 'pending' ORDER BY op_id LIMIT ?",
  );
  const claim = db.prepare(
    "UPDATE ops SET attempts = attempts + 1 WHERE op_id >= ? AND op_id <= ? AND state = 'pending'",
  );
  let after: Uint8Array = new Uint8Array(0);
  for (;;) {
    const rows = timed(stages, "list", () => listed(list, after, step));
    if (rows.length === 0) return stages;
    const first = rows[0]!.row["op_id"] as Uint8Array;
    const last = rows.at(-1)!.row["op_id"] as Uint8Array;
    after = last;
    timed(stages, "claim", () => claim.run(first, last), db);
    timed(stages, "settle", () => settle(first, last, rows), db);
  }
}

/** An op row listed, and its value parsed. */
interface Listed {
  readonly row: Row;
  readonly op: Row;
}

/** A page of pending ops after `after`, parsed. */
function listed(
  list: StatementSync,
  after: Uint8Array,
  step: number,
): Listed[] {
  return (list.all(after, step) as Row[]).map((row) => ({
    row,
    op: JSON.parse(row["value"] as string) as Row,
  }));
}

/** The op row's kind and id keys, as the records table stores them. */
function kindKey(row: Row): Uint8Array {
  return row["kind"] as Uint8Array;
}
function idKey(row: Row): Uint8Array {
  return row["id"] as Uint8Array;
}
