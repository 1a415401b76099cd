/**
 * The engine's settings, checked and resolved once: its numeric limits, the
 * conflict defaults of tables, and each registered table's configuration.
 *
 * @module
 */

import type { EngineLimits, TableConfig } from "./_context.ts";
import type { SyncEngineOptions } from "./_engine_options.ts";
import {
  CONFLICT_STRATEGIES,
  type ConflictResolver,
  type ConflictStrategy,
  type MergeFunction,
} from "./conflict.ts";
import { DEFAULT_SYSTEM_FIELDS } from "./merge.ts";
import type { StandardSchemaV1 } from "./schema.ts";
import type { TableOptions } from "./table.ts";

/** The conflict settings of tables that name none. */
export interface TableDefaults {
  /** The strategy. */
  readonly strategy: ConflictStrategy;
  /** The resolver of the `manual` strategy. */
  readonly resolver: ConflictResolver | undefined;
  /** The merge function of the `merge` strategy. */
  readonly mergeFn: MergeFunction | undefined;
}

/**
 * Resolves the engine's numeric limits.
 *
 * @param options The engine's options.
 * @returns The limits.
 * @throws {RangeError} When one is not a positive integer.
 */
export function resolveLimits(options: SyncEngineOptions): EngineLimits {
  return {
    pageSize: positiveInteger("pageSize", options.pageSize, 100),
    pushBatchSize: positiveInteger(
      "pushBatchSize",
      options.pushBatchSize,
      100,
    ),
    maxConflictRetries: positiveInteger(
      "maxConflictRetries",
      options.maxConflictRetries,
      3,
    ),
    writeRetries: positiveInteger("writeRetries", options.writeRetries, 20),
  };
}

/**
 * Resolves the conflict defaults of tables.
 *
 * @param options The engine's options.
 * @returns The defaults.
 * @throws {TypeError} When the strategy is unknown.
 */
export function resolveDefaults(options: SyncEngineOptions): TableDefaults {
  const strategy = options.strategy ?? "autoPreserve";
  assertStrategy(strategy);
  return {
    strategy,
    resolver: options.resolver,
    mergeFn: options.mergeFn,
  };
}

/**
 * Resolves a table's configuration.
 *
 * @param kind The table's kind.
 * @param options The table's options.
 * @param defaults The engine's conflict defaults.
 * @returns The configuration.
 * @throws {TypeError} When the strategy is unknown, or `merge` has no
 * `mergeFn`.
 */
export function configureTable<T>(
  kind: string,
  options: TableOptions<T>,
  defaults: TableDefaults,
): TableConfig {
  const strategy = options.strategy ?? defaults.strategy;
  assertStrategy(strategy);
  const fields = options.fields ?? {};
  const idField = fields.id ?? "id";
  const mergeFn = options.mergeFn ?? defaults.mergeFn;
  if (strategy === "merge" && mergeFn === undefined) {
    throw new TypeError(
      `Cannot register table '${kind}' as the merge strategy needs a mergeFn: current value is undefined`,
    );
  }
  const systemFields = [
    ...new Set([
      ...DEFAULT_SYSTEM_FIELDS,
      idField,
      ...(fields.updatedAt === undefined ? [] : [fields.updatedAt]),
      ...(fields.deletedAt === undefined ? [] : [fields.deletedAt]),
    ]),
  ];
  return {
    kind,
    schema: options.schema as StandardSchemaV1 | undefined,
    idField,
    updatedAtField: fields.updatedAt,
    deletedAtField: fields.deletedAt,
    coalesce: options.coalesce ?? true,
    policy: {
      strategy,
      resolver: options.resolver ?? defaults.resolver,
      mergeFn,
      systemFields,
    },
  };
}

function positiveInteger(
  name: string,
  value: number | undefined,
  fallback: number,
): number {
  const resolved = value ?? fallback;
  if (!Number.isInteger(resolved) || resolved < 1) {
    throw new RangeError(
      `Cannot create sync engine as ${name} is not a positive integer: current value is ${resolved}`,
    );
  }
  return resolved;
}

function assertStrategy(strategy: string): void {
  if (!CONFLICT_STRATEGIES.includes(strategy as ConflictStrategy)) {
    throw new TypeError(
      `Cannot use conflict strategy as it is unknown: current value is "${strategy}"`,
    );
  }
}
