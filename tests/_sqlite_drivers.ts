/**
 * Thin wrappers over `node:sqlite` that give it the shapes of other SQLite
 * drivers, or let a test watch and break it. They keep the real engine
 * underneath, so only the driver's surface differs.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type {
  SqliteDatabaseLike,
  SqliteStatementLike,
  SqliteValue,
} from "../src/sqlite_like.ts";

/** How a wrapper changes a driver. */
export interface DriverShape {
  /** What `get()` returns when there is no row. */
  readonly noRow?: null | undefined;
  /** Rewrites each returned row (e.g. BLOBs to Buffers). */
  readonly row?: (row: Record<string, unknown>) => Record<string, unknown>;
  /** Sees every statement prepared. */
  readonly onPrepare?: (sql: string) => void;
  /** Runs before every call of a statement; may throw to fail it. */
  readonly beforeCall?: (sql: string) => void;
}

/**
 * Wraps a connection so that it behaves like another driver.
 *
 * @param db The real connection.
 * @param shape What to change.
 * @returns A connection with the same database behind it.
 */
export function wrapDriver(
  db: SqliteDatabaseLike,
  shape: DriverShape,
): SqliteDatabaseLike {
  const mapRow = (row: unknown): unknown =>
    shape.row === undefined || row === null || row === undefined
      ? row
      : shape.row(row as Record<string, unknown>);
  return {
    exec(sql: string): void {
      shape.beforeCall?.(sql);
      db.exec(sql);
    },
    prepare(sql: string): SqliteStatementLike {
      shape.onPrepare?.(sql);
      const statement = db.prepare(sql);
      return {
        run(...params: SqliteValue[]) {
          shape.beforeCall?.(sql);
          return statement.run(...params);
        },
        get(...params: SqliteValue[]): unknown {
          shape.beforeCall?.(sql);
          const row = statement.get(...params);
          return row === undefined ? shape.noRow : mapRow(row);
        },
        all(...params: SqliteValue[]): unknown[] {
          shape.beforeCall?.(sql);
          return statement.all(...params).map(mapRow);
        },
      };
    },
    close(): void {
      db.close();
    },
  };
}

/**
 * The shape of `bun:sqlite`: `get()` returns `null` when there is no row.
 *
 * @param db The real connection.
 * @returns The wrapped connection.
 */
export function bunShaped(db: SqliteDatabaseLike): SqliteDatabaseLike {
  return wrapDriver(db, { noRow: null });
}

/**
 * The shape of better-sqlite3: BLOBs come back as Node `Buffer`s and rows
 * have `Object.prototype`.
 *
 * @param db The real connection.
 * @returns The wrapped connection.
 */
export function betterSqlite3Shaped(
  db: SqliteDatabaseLike,
): SqliteDatabaseLike {
  return wrapDriver(db, {
    row: (row) => {
      const copy: Record<string, unknown> = {};
      for (const [key, value] of Object.entries(row)) {
        copy[key] = value instanceof Uint8Array ? Buffer.from(value) : value;
      }
      return copy;
    },
  });
}
