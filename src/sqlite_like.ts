/**
 * The structural interface of a synchronous SQLite driver, as much of it as
 * the SQLite adapters use. Deno's and Node's built-in `node:sqlite`
 * (`DatabaseSync`), Bun's `bun:sqlite` and better-sqlite3 all fit it, so the
 * published adapters never force one driver.
 *
 * @module
 */

/** A value SQLite accepts as a bound parameter. */
export type SqliteValue =
  | null
  | number
  | bigint
  | string
  | Uint8Array;

/** The result of running a statement that changes rows. */
export interface SqliteRunResult {
  /** How many rows changed. */
  readonly changes: number | bigint;
  /** The rowid of the last inserted row. */
  readonly lastInsertRowid: number | bigint;
}

/** A prepared statement. */
export interface SqliteStatementLike {
  /** Runs the statement, returning the change count. */
  run(...params: SqliteValue[]): SqliteRunResult;
  /** Returns the first row, or `undefined`. */
  get(...params: SqliteValue[]): unknown;
  /** Returns every row. */
  all(...params: SqliteValue[]): unknown[];
}

/** An open SQLite connection. */
export interface SqliteDatabaseLike {
  /** Runs one or more statements without results. */
  exec(sql: string): void;
  /** Compiles a statement. */
  prepare(sql: string): SqliteStatementLike;
  /** Closes the connection. */
  close(): void;
}
