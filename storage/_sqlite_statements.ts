/**
 * The SQLite storage's statements: how each item space is laid out, the
 * statements prepared once per connection, those prepared on demand by
 * shape (and cached), and how driver failures become errors. Private to
 * `storage/sqlite.ts` and its helpers: not exported from the package.
 *
 * @module
 */

import { StorageError, SyncError } from "../src/errors.ts";
import type {
  SqliteDatabaseLike,
  SqliteStatementLike,
} from "../src/sqlite_like.ts";
import { HELD_STATES } from "./_sqlite_schema.ts";

/** The record space, as an index into {@linkcode SqliteStatements.spaces}. */
export const RECORD = 0;
/** The op space. */
export const OP = 1;
/** The meta space. */
export const META = 2;
/** An item space. */
export type Space = typeof RECORD | typeof OP | typeof META;

/** How a space is laid out: its table, key columns and value columns. */
interface Layout {
  readonly table: string;
  readonly keys: readonly string[];
  readonly columns: readonly string[];
  /** What a read selects (see `_sqlite_rows.ts`). */
  readonly select: string;
}

/**
 * What a read of a record selects: the key and the `deleted` column too,
 * to check the JSON against them (contract clause 9).
 */
export const RECORD_SELECT = "value, rev, base_is_data, id, deleted";

/** What a read of an op selects: its indexed columns too, likewise. */
export const OP_SELECT = "value, rev, op_id, state, kind, id";

const LAYOUTS: readonly [Layout, Layout, Layout] = [
  {
    table: "records",
    keys: ["kind", "id"],
    columns: ["deleted", "base_is_data", "value"],
    select: RECORD_SELECT,
  },
  {
    table: "ops",
    keys: ["op_id"],
    columns: ["state", "kind", "id", "value"],
    select: OP_SELECT,
  },
  { table: "meta", keys: ["key"], columns: ["value"], select: "value, rev" },
];

/**
 * How a batch of mutations of distinct items runs, one multi-row statement
 * per chunk: puts expected absent (`insert`: `INSERT … ON CONFLICT DO
 * NOTHING`), puts without an expect (`upsert`), puts expected at a revision
 * (`update`: `UPDATE … FROM (VALUES …)` joined on key and revision), deletes
 * without an expect (`remove`) and deletes expected at a revision
 * (`removeIf`: `DELETE … WHERE (keys, rev) IN (VALUES …)`).
 */
export type BatchType = "insert" | "upsert" | "update" | "remove" | "removeIf";

/**
 * Whether a batch's every row must change one row for its expects to hold
 * (the others hold whatever they find).
 *
 * @param type The batch's type.
 * @returns Whether to count its changes.
 */
export function batchChecks(type: BatchType): boolean {
  return type === "insert" || type === "update" || type === "removeIf";
}

/** The statements that read and write one space. */
export interface SpaceStatements {
  /** `(keys) → { value, rev }` (records add `base_is_data`) */
  readonly get: SqliteStatementLike;
  /** `(keys, columns, rev)`: insert or replace. */
  readonly upsert: SqliteStatementLike;
  /** `(keys, columns, rev)`: insert unless the item exists. */
  readonly insert: SqliteStatementLike;
  /** `(columns, rev, keys, expected rev)`: replace if at the expected rev. */
  readonly update: SqliteStatementLike;
  /** `(keys)` */
  readonly remove: SqliteStatementLike;
  /** `(keys, expected rev)` */
  readonly removeIf: SqliteStatementLike;
}

/** The shape of a `listOps()` filter: which conditions it has. */
export interface OpsShape {
  /** How many states it lists; `undefined` for every state. */
  readonly states: number | undefined;
  /**
   * Whether the states it lists are all held ones (not `pending`): then
   * the partial index `ops_by_state` serves it.
   */
  readonly held: boolean;
  /** How many kinds; `undefined` for every kind. */
  readonly kinds: number | undefined;
  /** Whether it filters by record id. */
  readonly id: boolean;
  /** Whether it pages after an op id. */
  readonly after: boolean;
}

/** How many `listOps()` statement shapes stay prepared. */
const LIST_OPS_CACHE = 64;

/** A connection's statements: prepared at once, or on demand by shape. */
export class SqliteStatements {
  /** By space: {@linkcode RECORD}, {@linkcode OP}, {@linkcode META}. */
  readonly spaces: readonly [SpaceStatements, SpaceStatements, SpaceStatements];
  /** `BEGIN IMMEDIATE`, for writes. */
  readonly begin: SqliteStatementLike;
  /** `BEGIN`, for reads of several statements. */
  readonly beginRead: SqliteStatementLike;
  /** `COMMIT`. */
  readonly commit: SqliteStatementLike;
  /** `ROLLBACK`. */
  readonly rollback: SqliteStatementLike;
  /** Reserves the next block of revisions for this connection. */
  readonly reserve: SqliteStatementLike;
  /** By `includeDeleted` and whether `after` is given. */
  readonly listRecords: readonly SqliteStatementLike[];
  readonly #db: SqliteDatabaseLike;
  /** `listOps()` statements by shape, oldest first. */
  readonly #listOps = new Map<string, SqliteStatementLike>();
  /** `getRecords()` statements by the number of ids they read. */
  readonly #recordsIn = new Map<number, SqliteStatementLike>();
  /** Multi-row statements by space, batch type and number of rows. */
  readonly #batches = new Map<string, SqliteStatementLike>();
  /**
   * Whether this SQLite runs multi-row updates and deletes (`UPDATE … FROM`
   * needs 3.33, row values 3.15): otherwise those batches run row by row.
   */
  readonly rowBatches: boolean;

  /**
   * Prepares a connection's statements.
   *
   * @param db The connection.
   */
  constructor(db: SqliteDatabaseLike) {
    this.#db = db;
    this.spaces = [
      prepareSpace(db, RECORD),
      prepareSpace(db, OP),
      prepareSpace(db, META),
    ];
    // IMMEDIATE takes the write lock up front: a deferred transaction that
    // reads first and then writes fails at once with SQLITE_BUSY when
    // another connection wrote meanwhile, without waiting for busy_timeout.
    this.begin = db.prepare("BEGIN IMMEDIATE");
    this.beginRead = db.prepare("BEGIN");
    this.commit = db.prepare("COMMIT");
    this.rollback = db.prepare("ROLLBACK");
    this.reserve = db.prepare(
      "UPDATE sync_state SET revision = revision + ? RETURNING revision",
    );
    const listRecords = (live: boolean, after: boolean) =>
      db.prepare(
        `SELECT ${RECORD_SELECT} FROM records WHERE kind = ?${
          after ? " AND id > ?" : ""
        }${live ? " AND deleted = 0" : ""} ORDER BY id LIMIT ?`,
      );
    this.listRecords = [
      listRecords(true, false),
      listRecords(true, true),
      listRecords(false, false),
      listRecords(false, true),
    ];
    this.rowBatches = this.#prepares(batchSql(RECORD, "update", 1)) &&
      this.#prepares(batchSql(RECORD, "removeIf", 1));
  }

  /** Whether this connection compiles a statement (an older SQLite may not). */
  #prepares(sql: string): boolean {
    try {
      this.#db.prepare(sql);
      return true;
    } catch {
      return false;
    }
  }

  /** Drops the statements prepared on demand. */
  clear(): void {
    this.#listOps.clear();
    this.#recordsIn.clear();
    this.#batches.clear();
  }

  /**
   * The `getRecords()` statement for `size` ids (`kind = ? AND id IN (…)`).
   *
   * @param size How many ids.
   * @returns The statement.
   * @throws {StorageError} When the driver fails.
   */
  recordsIn(size: number): SqliteStatementLike {
    let statement = this.#recordsIn.get(size);
    if (statement === undefined) {
      try {
        statement = this.#db.prepare(
          `SELECT ${RECORD_SELECT} FROM records WHERE kind = ? AND id IN (${
            marks(size)
          })`,
        );
      } catch (error) {
        throw driverError("read records", error);
      }
      this.#recordsIn.set(size, statement);
    }
    return statement;
  }

  /**
   * The `listOps()` statement for one shape of filter. Its parameters are
   * the states, the kinds, the id and the cursor that the shape has, then
   * the limit.
   *
   * @param shape The filter's shape.
   * @returns The statement.
   * @throws {StorageError} When the driver fails.
   */
  listOps(shape: OpsShape): SqliteStatementLike {
    const { states, held, kinds, id, after } = shape;
    const name = `${states ?? "-"}/${held}/${kinds ?? "-"}/${id}/${after}`;
    let statement = this.#listOps.get(name);
    if (statement !== undefined) {
      // Most recently used last, so the oldest shape is evicted first.
      this.#listOps.delete(name);
      this.#listOps.set(name, statement);
      return statement;
    }
    const where: string[] = [];
    if (states !== undefined) {
      where.push(states === 1 ? "state = ?" : `state IN (${marks(states)})`);
      if (held) where.push(HELD_STATES);
    }
    if (kinds !== undefined) {
      where.push(kinds === 1 ? "kind = ?" : `kind IN (${marks(kinds)})`);
    }
    if (id) where.push("id = ?");
    if (after) where.push("op_id > ?");
    const sql = `SELECT ${OP_SELECT} FROM ops${
      where.length === 0 ? "" : ` WHERE ${where.join(" AND ")}`
    } ORDER BY op_id LIMIT ?`;
    try {
      statement = this.#db.prepare(sql);
    } catch (error) {
      throw driverError("list ops", error);
    }
    if (this.#listOps.size >= LIST_OPS_CACHE) {
      this.#listOps.delete(this.#listOps.keys().next().value!);
    }
    this.#listOps.set(name, statement);
    return statement;
  }

  /**
   * The multi-row statement of a batch of `rows` rows in a space. Its
   * parameters, per row in order: `insert` and `upsert` the keys, the value
   * columns and the revision; `update` the keys, the expected revision and
   * the value columns, after the write's revision first; `remove` the keys;
   * `removeIf` the keys and the expected revision.
   *
   * @param space The space.
   * @param shape The batch's type and its number of rows.
   * @returns The statement.
   */
  batch(
    space: Space,
    shape: { readonly type: BatchType; readonly rows: number },
  ): SqliteStatementLike {
    const { type, rows } = shape;
    const name = `${space}/${type}/${rows}`;
    let statement = this.#batches.get(name);
    if (statement === undefined) {
      statement = this.#db.prepare(batchSql(space, type, rows));
      this.#batches.set(name, statement);
    }
    return statement;
  }
}

/** The SQL of a multi-row batch (see {@linkcode SqliteStatements.batch}). */
function batchSql(space: Space, type: BatchType, rows: number): string {
  const { table, keys, columns } = LAYOUTS[space];
  const tuples = (width: number): string => {
    const row = `(${marks(width)})`;
    return Array.from({ length: rows }, () => row).join(", ");
  };
  switch (type) {
    case "insert":
    case "upsert": {
      const all = [...keys, ...columns, "rev"];
      return `INSERT INTO ${table} (${all.join(", ")}) VALUES ${
        tuples(all.length)
      } ${type === "insert" ? "ON CONFLICT DO NOTHING" : upsertClause(space)}`;
    }
    case "update": {
      // VALUES names its columns column1, column2, …: the keys, the
      // expected revision, then the value columns.
      const set = columns.map((column, i) =>
        `${column} = v.column${keys.length + 2 + i}`
      );
      const on = keys.map((key, i) => `${table}.${key} = v.column${i + 1}`);
      return `UPDATE ${table} SET ${set.join(", ")}, rev = ? FROM (VALUES ${
        tuples(keys.length + 1 + columns.length)
      }) AS v WHERE ${on.join(" AND ")} AND ${table}.rev = v.column${
        keys.length + 1
      }`;
    }
    case "remove":
      return `DELETE FROM ${table} WHERE (${keys.join(", ")}) IN (VALUES ${
        tuples(keys.length)
      })`;
    case "removeIf":
      return `DELETE FROM ${table} WHERE (${keys.join(", ")}, rev) IN (VALUES ${
        tuples(keys.length + 1)
      })`;
  }
}

function prepareSpace(db: SqliteDatabaseLike, space: Space): SpaceStatements {
  const { table, keys, columns, select } = LAYOUTS[space];
  const all = [...keys, ...columns, "rev"];
  const values = all.map(() => "?").join(", ");
  const byKey = keys.map((key) => `${key} = ?`).join(" AND ");
  const insert = `INSERT INTO ${table} (${all.join(", ")}) VALUES (${values})`;
  return {
    get: db.prepare(`SELECT ${select} FROM ${table} WHERE ${byKey}`),
    upsert: db.prepare(`${insert} ${upsertClause(space)}`),
    insert: db.prepare(`${insert} ON CONFLICT DO NOTHING`),
    update: db.prepare(
      `UPDATE ${table} SET ${
        [...columns, "rev"].map((column) => `${column} = ?`).join(", ")
      } WHERE ${byKey} AND rev = ?`,
    ),
    remove: db.prepare(`DELETE FROM ${table} WHERE ${byKey}`),
    removeIf: db.prepare(`DELETE FROM ${table} WHERE ${byKey} AND rev = ?`),
  };
}

/** `ON CONFLICT … DO UPDATE` that replaces a space's value columns. */
function upsertClause(space: Space): string {
  const { keys, columns } = LAYOUTS[space];
  return `ON CONFLICT (${keys.join(", ")}) DO UPDATE SET ${
    [...columns, "rev"].map((column) => `${column} = excluded.${column}`)
      .join(", ")
  }`;
}

/**
 * Placeholders for a statement.
 *
 * @param count How many.
 * @returns `?, ?, …`.
 */
export function marks(count: number): string {
  return Array.from({ length: count }, () => "?").join(", ");
}

/**
 * A listing's limit as SQLite takes it: its "no limit" is a negative LIMIT;
 * a number beyond 2^53 would bind as a REAL, which LIMIT refuses.
 *
 * @param limit The limit.
 * @returns The parameter.
 */
export function sqlLimit(limit: number): number {
  return limit > Number.MAX_SAFE_INTEGER ? -1 : limit;
}

/**
 * How many rows a statement changed.
 *
 * @param result The driver's result.
 * @returns The count.
 */
export function changes(result: { readonly changes: number | bigint }): number {
  return Number(result.changes);
}

/**
 * Ends the connection's transaction after a failure. SQLite may have rolled
 * back already (SQLITE_FULL, SQLITE_IOERR), or never begun: the first error
 * is the one worth reporting, so this one is dropped.
 *
 * @param s The statements.
 */
export function rollbackQuietly(s: SqliteStatements): void {
  try {
    s.rollback.run();
  } catch {
    // See above.
  }
}

/**
 * Wraps a driver failure, marking lock timeouts as retryable.
 *
 * @param action What failed, for the message.
 * @param error What the driver threw.
 * @returns The error to throw.
 */
export function driverError(action: string, error: unknown): unknown {
  if (error instanceof SyncError) return error;
  return new StorageError(
    `Cannot ${action} as SQLite failed: ${messageOf(error)}`,
    { cause: error, retryable: isBusy(error) },
  );
}

/**
 * Whether SQLite gave up waiting for a lock. Drivers report it differently:
 * `code: "SQLITE_BUSY"` (bun:sqlite, better-sqlite3), `errcode: 5` or only
 * the message (node:sqlite).
 */
function isBusy(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  const { code, errcode, message } = error as {
    code?: unknown;
    errcode?: unknown;
    message?: unknown;
  };
  if (typeof code === "string" && /^SQLITE_(BUSY|LOCKED)/.test(code)) {
    return true;
  }
  if (typeof errcode === "number" && [5, 6].includes(errcode & 0xff)) {
    return true;
  }
  return typeof message === "string" &&
    /database (table )?is locked/.test(message);
}

/**
 * A thrown value's message.
 *
 * @param error The value.
 * @returns Its message, or its string.
 */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
