/**
 * The SQLite storage's write planner: a write's checked mutations encoded
 * as statement parameters, its outcome decided where no row can change it,
 * and its steps planned (multi-row puts, single-statement checks, items
 * written several times), all before its transaction begins. It decides and
 * plans; `_sqlite_write.ts` commits. Private to `storage/sqlite.ts`: not
 * exported from the package.
 *
 * @module
 */

import type { SqliteValue } from "../src/sqlite_like.ts";
import type {
  StoredRecord,
  WritePrecondition,
  WriteResult,
} from "../src/storage.ts";
import type { KeyEncoder } from "./_sqlite_keys.ts";
import {
  type BatchType,
  META,
  OP,
  RECORD,
  type Space,
} from "./_sqlite_statements.ts";
import type { CheckedMutation } from "./_validate.ts";

/**
 * An expectation as the write applies it: `undefined` for none, `null` for
 * "absent", a number for a revision this storage can have issued, `false`
 * for a string it never issues (so it cannot hold).
 */
export type PlannedExpect = undefined | null | number | false;

/** A mutation checked and encoded, ready to run. */
export interface Planned {
  /** The item's space. */
  readonly space: Space;
  /** The item's name within its space: record id, op id or meta key. */
  readonly name: string;
  /** A record's kind; `undefined` in the other spaces. */
  readonly kind: string | undefined;
  /** The key columns' values. */
  readonly keys: SqliteValue[];
  /** The value columns' values; `undefined` for a delete. */
  readonly columns: SqliteValue[] | undefined;
  /** The expect, as the write applies it. */
  readonly expect: PlannedExpect;
}

/** One step of a write inside its transaction, in the write's order. */
export type Step =
  /**
   * Mutations of distinct items written once, in one space and of one
   * batch type (see `BatchType`): they share multi-row statements.
   */
  | {
    readonly type: "rows";
    readonly batch: BatchType;
    readonly rows: readonly Planned[];
  }
  /**
   * A delete of an item written once that expects it absent: a `DELETE`
   * that must remove nothing.
   */
  | { readonly type: "once"; readonly planned: Planned }
  /**
   * A mutation of an item written several times: when any of them has an
   * expect, the item's revision is read once, before its first mutation,
   * and every expect is checked against it (contract clause 2).
   */
  | {
    readonly type: "again";
    readonly planned: Planned;
    /** The item, within the write. */
    readonly item: string;
    /** Whether the item's mutations have an expect to check. */
    readonly checked: boolean;
  };

/** A write's steps, and what it leaves. */
export interface WriteSteps {
  /** The steps, in the write's order. */
  readonly steps: readonly Step[];
  /**
   * For each mutation, whether its item exists after the write (and has
   * the write's revision).
   */
  readonly puts: readonly boolean[];
}

/** The mutations of one item within a write, when there are several. */
interface Group {
  count: number;
  last: number;
  hasExpect: boolean;
}

/**
 * Encodes a write and decides what no row can change: an empty write
 * commits, and an expect of a revision this storage never issued fails.
 *
 * @param mutations The write's mutations, checked.
 * @param keys The key encoder.
 * @returns The write's result when decided, else its steps.
 */
export function planWrite(
  mutations: readonly CheckedMutation[],
  keys: KeyEncoder,
): WriteResult | WriteSteps {
  const plan = mutations.map((mutation) => planOf(mutation, keys));
  if (plan.length === 0) return { ok: true, revs: [] };
  // A revision this storage never issued cannot be current.
  if (plan.some((planned) => planned.expect === false)) return { ok: false };
  return planSteps(plan);
}

/**
 * Orders a write's mutations into steps (see {@linkcode Step}). Items
 * written once go into batches by space and type, whatever their place in
 * the write: each is checked against the state before the write and no
 * other mutation touches it, so their order cannot change the outcome (a
 * push's settle alternates an op's delete and its record's put, which
 * would otherwise leave batches of one). An item written several times
 * keeps the order of its mutations.
 */
function planSteps(plan: readonly Planned[]): WriteSteps {
  const groups = plan.length > 1 && hasRepeatedItem(plan)
    ? groupsOf(plan)
    : undefined;
  // By space and batch type (see BATCH_TYPES), in the order first met.
  const batches: (Planned[] | undefined)[] = [];
  const order: number[] = [];
  const steps: Step[] = [];
  for (const planned of plan) {
    const item = groups === undefined ? undefined : itemOf(planned);
    const group = item === undefined ? undefined : groups?.get(item);
    const type = batchOf(planned);
    if (group !== undefined && group.count > 1) {
      steps.push({
        type: "again",
        planned,
        item: item!,
        checked: group.hasExpect,
      });
    } else if (type === undefined) {
      steps.push({ type: "once", planned });
    } else {
      const slot = planned.space * BATCH_TYPES.length +
        BATCH_TYPES.indexOf(type);
      const rows = batches[slot];
      if (rows === undefined) {
        batches[slot] = [planned];
        order.push(slot);
      } else rows.push(planned);
    }
  }
  for (const slot of order) {
    const rows = batches[slot]!;
    steps.push({ type: "rows", batch: batchOf(rows[0]!)!, rows });
  }
  const puts = plan.map((planned) => {
    const last = groups?.get(itemOf(planned))?.last;
    return (last === undefined ? planned : plan[last]!).columns !== undefined;
  });
  return { steps, puts };
}

/** Every batch type, each with its slot among a space's batches. */
const BATCH_TYPES: readonly BatchType[] = [
  "insert",
  "upsert",
  "update",
  "remove",
  "removeIf",
];

/**
 * The batch a mutation of an item written once can join; `undefined` for a
 * delete expecting absence (rare: it runs alone).
 */
function batchOf(planned: Planned): BatchType | undefined {
  const { columns, expect } = planned;
  if (columns === undefined) {
    if (expect === undefined) return "remove";
    return expect === null ? undefined : "removeIf";
  }
  if (expect === undefined) return "upsert";
  return expect === null ? "insert" : "update";
}

/** The mutations of each item of a write that repeats some. */
function groupsOf(plan: readonly Planned[]): Map<string, Group> {
  const groups = new Map<string, Group>();
  plan.forEach((planned, index) => {
    const item = itemOf(planned);
    const group = groups.get(item);
    const hasExpect = planned.expect !== undefined;
    if (group === undefined) {
      groups.set(item, { count: 1, last: index, hasExpect });
    } else {
      group.count++;
      group.last = index;
      group.hasExpect ||= hasExpect;
    }
  });
  return groups;
}

/**
 * Whether a plan writes some item more than once. Most writes (a page of
 * pulled records, a put) do not, and then need no groups.
 */
function hasRepeatedItem(plan: readonly Planned[]): boolean {
  // Names strictly increasing within each space and kind are distinct: a
  // pass of comparisons, where a set would hash every fresh string (about
  // 300 ns each, a few percent of a pull).
  const last = new Map<string | Space, string>();
  let increasing = true;
  for (const planned of plan) {
    const scope = planned.kind ?? planned.space;
    const previous = last.get(scope);
    if (previous !== undefined && !(previous < planned.name)) {
      increasing = false;
      break;
    }
    last.set(scope, planned.name);
  }
  if (increasing) return false;
  // By space and kind, so that no item string is built for it.
  const names = new Map<string | Space, Set<string>>();
  for (const planned of plan) {
    const scope = planned.kind ?? planned.space;
    let seen = names.get(scope);
    if (seen === undefined) names.set(scope, seen = new Set());
    else if (seen.has(planned.name)) return true;
    seen.add(planned.name);
  }
  return false;
}

/**
 * Identifies an item within a write; a record's kind length keeps
 * `("a", "bc")` from `("ab", "c")`.
 */
function itemOf(planned: Planned): string {
  const { space, kind, name } = planned;
  if (space === RECORD) return `r${kind!.length}:${kind}${name}`;
  return `${space === OP ? "o" : "m"}${name}`;
}

/** Encodes a checked mutation as the statements' parameters. */
function planOf(mutation: CheckedMutation, encode: KeyEncoder): Planned {
  const expect = plannedExpect(mutation.expect);
  if (mutation.space === "record") {
    const { kind, id, value } = mutation;
    return {
      space: RECORD,
      name: id,
      kind,
      keys: [encode.kind(kind), encode.key(id)],
      columns: value === undefined ? undefined : recordColumns(value),
      expect,
    };
  }
  const name = mutation.space === "op" ? mutation.opId : mutation.key;
  return {
    space: mutation.space === "op" ? OP : META,
    name,
    kind: undefined,
    keys: [encode.key(name)],
    columns: valueColumns(mutation, encode),
    expect,
  };
}

/** An op's or meta entry's value columns; `undefined` for a delete. */
function valueColumns(
  mutation: Exclude<CheckedMutation, { readonly space: "record" }>,
  encode: KeyEncoder,
): SqliteValue[] | undefined {
  if (mutation.space === "meta") {
    const { value } = mutation;
    return value === undefined ? undefined : [JSON.stringify(value)];
  }
  const { value } = mutation;
  return value === undefined ? undefined : [
    value.state,
    encode.key(value.kind),
    encode.key(value.id),
    JSON.stringify(value),
  ];
}

/**
 * A record's value columns: `deleted`, `base_is_data` and the JSON. A base
 * whose data is the record's own data object (the engine passes one object
 * for both when a pulled record has no local edits) is stored without it:
 * the same JSON twice would double the row. Only the same object counts:
 * comparing distinct objects would cost what storing them costs.
 */
function recordColumns(record: StoredRecord): SqliteValue[] {
  const base = record.base as StoredRecord["base"] | undefined;
  if (
    typeof base === "object" && base !== null && base.data === record.data
  ) {
    const { data: _, ...rest } = base;
    return [
      record.deleted ? 1 : 0,
      1,
      JSON.stringify({ ...record, base: rest }),
    ];
  }
  return [record.deleted ? 1 : 0, 0, JSON.stringify(record)];
}

function plannedExpect(expect: WritePrecondition): PlannedExpect {
  if (typeof expect !== "string") return expect;
  // Revisions are the counter in decimal; anything else was not issued.
  if (!/^[1-9][0-9]{0,15}$/.test(expect)) return false;
  const rev = Number(expect);
  return Number.isSafeInteger(rev) ? rev : false;
}
