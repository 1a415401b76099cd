/**
 * The floor of the batch drain into an SQLite outbox (issue 14), measured in
 * one run: what the drain's storage work costs when written by hand, with no
 * engine and no adapter, against the bare `POST /batch` requests it rides
 * on.
 *
 * Three things run on copies of one outbox of `N` pending ops, filled
 * through `table.put()` (so the rows are exactly what the adapter stores):
 *
 * - **bare**: the same ops POSTed to the reference server in batches of
 *   1,000 by a bare `fetch` client (`bench/_drain.ts`), the baseline of
 *   `bench/outbox_bench.ts`;
 * - **this layout by hand**: the statements the adapter runs for one drain
 *   round, prepared once and run in a loop: list the pending ops (and parse
 *   them), claim each (its JSON rewritten with `attempts + 1`, checked
 *   against its revision), read the records, settle each (delete the op,
 *   rewrite the record with its base), a transaction per step of 1,000;
 * - **set-based outbox verbs**, a prototype of a storage contract with
 *   outbox verbs instead of generic mutations: an `attempts` column claimed
 *   by one `UPDATE` per round, settled by one ranged `DELETE` and, per
 *   record, an `UPDATE` of small columns (no JSON rewritten);
 * - **the least a durable outbox does**: list, then one ranged `UPDATE` to
 *   claim a round and one to mark it sent, nothing per record.
 *
 * It prints µs per op for each step and the ceiling each leaves: the share
 * of the bare rate a client could reach if the storage were all it did
 * (`bare ÷ (bare + storage)`), and its ops/s.
 *
 * ```sh
 * deno run -A bench/_sqlite_floor.ts            # 10,000 ops, 5 rounds
 * deno run -A bench/_sqlite_floor.ts 10000 7
 * ```
 *
 * @module
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";
import {
  bareBatch,
  createTemplate,
  DrainServer,
  readWireOps,
} from "./_drain.ts";

const N = Number(Deno.args[0] ?? "10000");
const ROUNDS = Number(Deno.args[1] ?? "5");
const STEP = 1_000;

type Row = Record<string, unknown>;
type Stages = Record<string, number>;

const dir = await Deno.makeTempDir({ prefix: "sqlite_floor_" });
try {
  const template = await createTemplate(`${dir}/template.sqlite`, {
    records: N,
    edits: N,
    coalesce: false,
  });
  const ops = await readWireOps(template, `${dir}/wire.sqlite`);

  const runs: {
    bare: number;
    layout: Stages;
    verbs: Stages;
    least: Stages;
  }[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    // Interleaved, so that a noisy moment hits all three alike.
    await using server = new DrainServer();
    const started = performance.now();
    const accepted = await bareBatch(server.url, ops, STEP);
    const bare = performance.now() - started;
    if (accepted !== N) throw new Error(`bare accepted ${accepted} of ${N}`);
    const layout = await onCopy(template.path, `${dir}/l${round}`, byHand);
    const verbs = await onCopy(template.path, `${dir}/v${round}`, setBased);
    const least = await onCopy(template.path, `${dir}/m${round}`, minimum);
    runs.push({ bare, layout, verbs, least });
  }

  const median = (values: number[]) =>
    values.sort((a, b) => a - b)[values.length >> 1]!;
  const perOp = (ms: number) => (1000 * ms) / N;
  const bare = perOp(median(runs.map((run) => run.bare)));
  console.log(
    `SQLite drain floor, ${N} ops, medians of ${ROUNDS} interleaved rounds (µs/op)`,
  );
  console.log(`  bare POST /batch of ${STEP}: ${bare.toFixed(1)}`);
  const names = {
    layout: "this layout by hand",
    verbs: "set-based outbox verbs (prototype)",
    least: "the least a durable outbox does",
  };
  for (const which of ["layout", "verbs", "least"] as const) {
    const stages = Object.keys(runs[0]![which]);
    const parts = stages.map((stage) => ({
      stage,
      us: perOp(median(runs.map((run) => run[which][stage]!))),
    }));
    const total = parts.reduce((sum, part) => sum + part.us, 0);
    const ceiling = bare / (bare + total);
    console.log(
      `  ${names[which]}: ${total.toFixed(1)} = ${
        parts.map((part) => `${part.stage} ${part.us.toFixed(1)}`).join(", ")
      }`,
    );
    console.log(
      `    ceiling with nothing else on the client: ${
        (100 * ceiling).toFixed(0)
      } % of bare, ${
        Math.round(1e6 / (bare + total)).toLocaleString("en-US")
      } ops/s`,
    );
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}

/** Runs `work` on a fresh copy of the outbox, timing its stages. */
async function onCopy(
  template: string,
  path: string,
  work: (db: DatabaseSync) => Stages,
): Promise<Stages> {
  await Deno.copyFile(template, path);
  const db = new DatabaseSync(path);
  try {
    db.exec("PRAGMA journal_mode = WAL");
    db.exec("PRAGMA synchronous = NORMAL");
    return work(db);
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
function byHand(db: DatabaseSync): Stages {
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
    const rows = timed(stages, "list", () => listed(list, after));
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
function setBased(db: DatabaseSync): Stages {
  const stages: Stages = { list: 0, claim: 0, settle: 0 };
  db.exec("ALTER TABLE ops ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0");
  db.exec("ALTER TABLE records ADD COLUMN base_updated_at TEXT");
  db.exec("ALTER TABLE records ADD COLUMN pending INTEGER NOT NULL DEFAULT 1");
  const list = db.prepare(
    "SELECT op_id, kind, id, value, attempts FROM ops WHERE op_id > ? AND state = 'pending' ORDER BY op_id LIMIT ?",
  );
  const claim = db.prepare(
    "UPDATE ops SET attempts = attempts + 1 WHERE op_id >= ? AND op_id <= ? AND state = 'pending'",
  );
  const remove = db.prepare(
    "DELETE FROM ops WHERE op_id >= ? AND op_id <= ? AND state = 'pending'",
  );
  const settle = db.prepare(
    "UPDATE records SET base_is_data = 1, base_updated_at = ?, pending = 0 WHERE kind = ? AND id = ?",
  );
  let after: Uint8Array = new Uint8Array(0);
  for (;;) {
    const rows = timed(stages, "list", () => listed(list, after));
    if (rows.length === 0) return stages;
    const first = rows[0]!.row["op_id"] as Uint8Array;
    after = rows.at(-1)!.row["op_id"] as Uint8Array;
    timed(stages, "claim", () => claim.run(first, after), db);
    timed(stages, "settle", () => {
      remove.run(first, after);
      for (const { row } of rows) {
        settle.run(
          "2026-12-06T00:00:00.000Z",
          row["kind"] as Uint8Array,
          row["id"] as Uint8Array,
        );
      }
    }, db);
  }
}

/**
 * The least any durable outbox does: list, claim the round with one ranged
 * `UPDATE`, settle it with one ranged `UPDATE` that marks its ops sent
 * (nothing per record: the base would be read off the sent op later).
 */
function minimum(db: DatabaseSync): Stages {
  const stages: Stages = { list: 0, claim: 0, settle: 0 };
  db.exec("ALTER TABLE ops ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0");
  const list = db.prepare(
    "SELECT op_id, value, attempts FROM ops WHERE op_id > ? AND state = 'pending' ORDER BY op_id LIMIT ?",
  );
  const claim = db.prepare(
    "UPDATE ops SET attempts = attempts + 1 WHERE op_id >= ? AND op_id <= ? AND state = 'pending'",
  );
  const settle = db.prepare(
    "UPDATE ops SET state = 'sent' WHERE op_id >= ? AND op_id <= ? AND state = 'pending'",
  );
  let after: Uint8Array = new Uint8Array(0);
  for (;;) {
    const rows = timed(stages, "list", () => listed(list, after));
    if (rows.length === 0) return stages;
    const first = rows[0]!.row["op_id"] as Uint8Array;
    after = rows.at(-1)!.row["op_id"] as Uint8Array;
    timed(stages, "claim", () => claim.run(first, after), db);
    timed(stages, "settle", () => settle.run(first, after), db);
  }
}

/** A page of pending ops after `after`, parsed. */
function listed(list: StatementSync, after: Uint8Array) {
  return (list.all(after, STEP) as Row[]).map((row) => ({
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
