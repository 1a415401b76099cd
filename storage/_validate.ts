/**
 * The checks every storage adapter makes on its arguments, with the same
 * error types and messages in each (contract clause 5: a malformed mutation
 * rejects with a `TypeError`, a write beyond the capabilities with a
 * `StorageError`). Private to the package's adapters: not exported from it.
 * It depends only on the contract, so each adapter still depends on nothing
 * but the contract it implements and these files. The values' JSON is
 * checked by `_json.ts`.
 *
 * @module
 */

import { StorageError } from "../src/errors.ts";
import type { JsonObject, JsonValue } from "../src/json.ts";
import type {
  ListOpsOptions,
  ListRecordsOptions,
  Mutation,
  OpState,
  StorageCapabilities,
  StoredOp,
  StoredRecord,
  WritePrecondition,
} from "../src/storage.ts";
import {
  type CheckCache,
  checkJson,
  type CopyCache,
  copyCleanJson,
  copyJson,
  RecentChecks,
  RecentCopies,
} from "./_json.ts";
import { describe } from "../src/describe.ts";
import { utf8Length } from "./_text.ts";

/** Every op state, in the order the contract lists them. */
export const OP_STATES: ReadonlySet<string> = new Set<OpState>([
  "pending",
  "quarantined",
  "parked",
]);

/**
 * A mutation checked (and, when asked, copied), reduced to the item it
 * writes: `value` is `undefined` for a delete.
 */
export type CheckedMutation =
  | {
    readonly space: "record";
    readonly kind: string;
    readonly id: string;
    readonly opId: undefined;
    readonly key: undefined;
    readonly value: StoredRecord | undefined;
    readonly expect: WritePrecondition;
  }
  | {
    readonly space: "op";
    readonly kind: undefined;
    readonly id: undefined;
    readonly opId: string;
    readonly key: undefined;
    readonly value: StoredOp | undefined;
    readonly expect: WritePrecondition;
  }
  | {
    readonly space: "meta";
    readonly kind: undefined;
    readonly id: undefined;
    readonly opId: undefined;
    readonly key: string;
    readonly value: JsonValue | undefined;
    readonly expect: WritePrecondition;
  };

/** Options for {@linkcode checkMutations}. */
export interface CheckMutationsOptions {
  /**
   * Whether the checked values are deep copies (for an adapter that keeps
   * them as objects) or the caller's own objects (for one that only
   * serialises them).
   *
   * @default {false}
   */
  readonly copy?: boolean;
  /**
   * Whether to check the write's size against `maxWriteBytes`. An adapter
   * that serialises the values anyway may pass `false` and call
   * {@linkcode checkWriteBytes} with their sizes instead, sparing a second
   * serialisation of the whole write.
   *
   * @default {true}
   */
  readonly checkBytes?: boolean;
}

/**
 * Checks a write's mutations against the contract and the storage's limits,
 * before anything is applied, so that a write is refused whole.
 *
 * The order of the checks is part of the adapters' shared behaviour: the
 * array, the number of mutations, each mutation in order, the key lengths,
 * then the write's size.
 *
 * @param mutations The argument of `write()`.
 * @param capabilities The storage's limits.
 * @param options Whether to copy the values.
 * @returns One checked mutation per mutation, in order.
 * @throws {TypeError} When `mutations` is not an array or a mutation is
 * malformed.
 * @throws {StorageError} When the write exceeds a limit.
 */
export function checkMutations(
  mutations: unknown,
  capabilities: StorageCapabilities,
  options: CheckMutationsOptions = {},
): CheckedMutation[] {
  if (!Array.isArray(mutations)) {
    throw new TypeError(
      `Cannot write mutations as they are not an array: current value is ${
        describe(mutations)
      }`,
    );
  }
  const { maxMutationsPerWrite, maxWriteBytes, maxKeyLength } = capabilities;
  if (mutations.length > maxMutationsPerWrite) {
    throw new StorageError(
      `Cannot write ${mutations.length} mutations as the storage accepts at most ${maxMutationsPerWrite} per write: current value is ${mutations.length}`,
    );
  }
  const copy = options.copy ?? false;
  const values: WriteValues = {
    copy,
    // Objects already checked in this write: the engine passes one object
    // as a record's data and as its base's data, or as its op's payload.
    seen: copy ? undefined : new RecentChecks(),
    // Copies made in this write, by source: the same object copies once, so
    // a record's data and its op's payload share one stored (immutable)
    // copy.
    copies: copy ? new RecentCopies() : undefined,
  };
  const checked: CheckedMutation[] = new Array(mutations.length);
  for (let index = 0; index < mutations.length; index++) {
    checked[index] = checkMutation(mutations[index], index, values);
  }
  if (maxKeyLength !== Infinity) {
    for (const mutation of checked) {
      const key = limitedKey(mutation);
      if (key !== undefined && key.length > maxKeyLength) {
        throw new StorageError(
          `Cannot write a key of ${key.length} characters as the storage accepts at most ${maxKeyLength}: current value is ${key.length}`,
        );
      }
    }
  }
  if (maxWriteBytes !== Infinity && (options.checkBytes ?? true)) {
    checkWriteBytes(mutations, maxWriteBytes);
  }
  return checked;
}

/**
 * Checks a write's size: the UTF-8 length of `JSON.stringify(mutations)`,
 * computed from the lengths of the values' JSON when the adapter knows
 * them, so that the values are not serialised a second time.
 *
 * @param mutations The mutations, already checked by
 * {@linkcode checkMutations}.
 * @param maxWriteBytes The storage's limit.
 * @param valueBytes The UTF-8 length of `JSON.stringify()` of the value of
 * mutation `index` (its `record`, `op` or `value`), or `undefined` when
 * the adapter does not know it.
 * @throws {StorageError} When the write exceeds the limit.
 */
export function checkWriteBytes(
  mutations: readonly Mutation[],
  maxWriteBytes: number,
  valueBytes: (index: number) => number | undefined = () => undefined,
): void {
  const bytes = writeBytes(mutations, valueBytes);
  if (bytes > maxWriteBytes) {
    throw new StorageError(
      `Cannot write ${bytes} bytes as the storage accepts at most ${maxWriteBytes} per write: current value is ${bytes}`,
    );
  }
}

/**
 * A write's size as {@linkcode checkWriteBytes} measures it: the UTF-8
 * length of `JSON.stringify(mutations)`, from the lengths of the values'
 * JSON where `valueBytes` gives them. Given upper bounds of those lengths,
 * it is an upper bound of the write's size.
 *
 * @param mutations The mutations, already checked by
 * {@linkcode checkMutations}.
 * @param valueBytes The UTF-8 length (or a bound of it) of the JSON of
 * mutation `index`'s value; `undefined` to serialise the value.
 * @returns The size in bytes.
 */
export function writeBytes(
  mutations: readonly Mutation[],
  valueBytes: (index: number) => number | undefined,
): number {
  if (typeof (mutations as { toJSON?: unknown }).toJSON === "function") {
    return utf8Length(JSON.stringify(mutations));
  }
  let bytes = 2 + Math.max(0, mutations.length - 1);
  for (let index = 0; index < mutations.length; index++) {
    bytes += mutationBytes(mutations[index]!, valueBytes(index));
  }
  return bytes;
}

/** The key of a mutation's value, which adapters serialise anyway. */
const VALUE_KEYS: Readonly<Record<string, string>> = {
  putRecord: "record",
  putOp: "op",
  putMeta: "value",
};

/**
 * The UTF-8 length of `JSON.stringify(mutation)`: its own keys as
 * `JSON.stringify` writes them, with the value's length given when known.
 * The parts join at ASCII characters, so their UTF-8 lengths add up.
 */
function mutationBytes(mutation: Mutation, valueBytes: number | undefined) {
  if (
    valueBytes === undefined ||
    typeof (mutation as { toJSON?: unknown }).toJSON === "function"
  ) {
    return utf8Length(JSON.stringify(mutation));
  }
  const valueKey = VALUE_KEYS[mutation.type];
  let bytes = 2;
  let members = 0;
  for (const key of Object.keys(mutation)) {
    let size: number;
    if (key === valueKey) size = valueBytes;
    else {
      const json: string | undefined = JSON.stringify(
        (mutation as unknown as Record<string, unknown>)[key],
      );
      // undefined, functions and symbols are left out.
      if (json === undefined) continue;
      size = utf8Length(json);
    }
    bytes += utf8Length(JSON.stringify(key)) + 1 + size;
    members++;
  }
  return bytes + Math.max(0, members - 1);
}

/**
 * The key a checked mutation writes under that `maxKeyLength` bounds: an op
 * id or a meta key. Kinds and record ids are not bound by it: every adapter
 * holds every kind and id the contract promises (contract clause 8).
 */
function limitedKey(mutation: CheckedMutation): string | undefined {
  switch (mutation.space) {
    case "record":
      return undefined;
    case "op":
      return mutation.opId;
    case "meta":
      return mutation.key;
  }
}

/** How a write's values are checked, and the objects it met so far. */
interface WriteValues {
  /** Whether the values are copied, or only checked. */
  readonly copy: boolean;
  /** Objects already found to be JSON, when only checking. */
  readonly seen: CheckCache | undefined;
  /** Copies already made, by source, when copying. */
  readonly copies: CopyCache | undefined;
}

/** `write mutation <index>`: built only for a message. */
function actionOf(index: number): string {
  return `write mutation ${index}`;
}

function checkMutation(
  mutation: Mutation,
  index: number,
  values: WriteValues,
): CheckedMutation {
  if (typeof mutation !== "object" || mutation === null) {
    throw new TypeError(
      `Cannot ${actionOf(index)} as it is not an object: current value is ${
        describe(mutation)
      }`,
    );
  }
  const expect = mutation.expect;
  if (expect !== undefined && expect !== null && typeof expect !== "string") {
    checkExpect(actionOf(index), expect);
  }
  switch (mutation.type) {
    case "putRecord": {
      const record = checkRoot(mutation.record, index, "record", values);
      const { kind, id, data, deleted } = record;
      if (
        typeof kind !== "string" || typeof id !== "string" ||
        typeof data !== "object" || data === null || Array.isArray(data) ||
        typeof deleted !== "boolean"
      ) {
        const action = actionOf(index);
        checkString(action, "record.kind", kind);
        checkString(action, "record.id", id);
        checkObject(action, "record.data", data);
        checkBoolean(action, "record.deleted", deleted);
      }
      // Every checked mutation has the same members in the same order, so
      // the adapters' loops over them read one shape.
      return {
        space: "record",
        kind: kind as string,
        id: id as string,
        opId: undefined,
        key: undefined,
        value: record as unknown as StoredRecord,
        expect,
      };
    }
    case "deleteRecord": {
      const { kind, id } = mutation;
      if (typeof kind !== "string" || typeof id !== "string") {
        checkString(actionOf(index), "kind", kind);
        checkString(actionOf(index), "id", id);
      }
      return {
        space: "record",
        kind,
        id,
        opId: undefined,
        key: undefined,
        value: undefined,
        expect,
      };
    }
    case "putOp": {
      const op = checkRoot(mutation.op, index, "op", values);
      const { opId, kind, id, state } = op;
      if (
        typeof opId !== "string" || typeof kind !== "string" ||
        typeof id !== "string"
      ) {
        const action = actionOf(index);
        checkString(action, "op.opId", opId);
        checkString(action, "op.kind", kind);
        checkString(action, "op.id", id);
      }
      if (typeof state !== "string" || !OP_STATES.has(state)) {
        throw new TypeError(
          `Cannot ${
            actionOf(index)
          } as 'op.state' is not an op state: current value is ${
            describe(state)
          }`,
        );
      }
      return {
        space: "op",
        kind: undefined,
        id: undefined,
        opId: opId as string,
        key: undefined,
        value: op as unknown as StoredOp,
        expect,
      };
    }
    case "deleteOp":
      if (typeof mutation.opId !== "string") {
        checkString(actionOf(index), "opId", mutation.opId);
      }
      return {
        space: "op",
        kind: undefined,
        id: undefined,
        opId: mutation.opId,
        key: undefined,
        value: undefined,
        expect,
      };
    case "putMeta": {
      if (typeof mutation.key !== "string") {
        checkString(actionOf(index), "key", mutation.key);
      }
      const value = checkValue(mutation.value, index, "value", values);
      return {
        space: "meta",
        kind: undefined,
        id: undefined,
        opId: undefined,
        key: mutation.key,
        value,
        expect,
      };
    }
    case "deleteMeta":
      if (typeof mutation.key !== "string") {
        checkString(actionOf(index), "key", mutation.key);
      }
      return {
        space: "meta",
        kind: undefined,
        id: undefined,
        opId: undefined,
        key: mutation.key,
        value: undefined,
        expect,
      };
    default:
      throw new TypeError(
        `Cannot ${
          actionOf(index)
        } as 'type' is not a mutation type: current value is ${
          describe((mutation as { type: unknown }).type)
        }`,
      );
  }
}

/** Checks the object at the root of a mutation, copying it when asked. */
function checkRoot(
  value: unknown,
  index: number,
  name: string,
  values: WriteValues,
): JsonObject {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    checkObject(actionOf(index), name, value);
  }
  return checkValue(value, index, name, values) as JsonObject;
}

/** Checks a mutation's value as JSON, copying it when asked. */
function checkValue(
  value: unknown,
  index: number,
  name: string,
  values: WriteValues,
): JsonValue {
  if (values.copy) {
    const copy = copyCleanJson(value, values.copies);
    if (copy !== undefined) return copy;
    return copyJson(value, {
      action: actionOf(index),
      path: [name],
      copies: values.copies,
    });
  }
  checkJson(value, {
    action: actionOf(index),
    path: [name],
    seen: values.seen,
  });
  return value as JsonValue;
}

/** {@linkcode ListRecordsOptions} checked, with their defaults. */
export interface ResolvedListRecordsOptions {
  /** The most records to return; `Infinity` for all. */
  readonly limit: number;
  /** The paging cursor, if any. */
  readonly after: string | undefined;
  /** Whether deleted records are listed too. */
  readonly includeDeleted: boolean;
}

/**
 * Checks the options of `listRecords()` and applies their defaults.
 *
 * @param options The options as the caller gave them.
 * @returns The options, checked.
 * @throws {TypeError} When an option has the wrong type.
 * @throws {RangeError} When `limit` is out of range.
 */
export function resolveListRecordsOptions(
  options: ListRecordsOptions,
): ResolvedListRecordsOptions {
  const limit = resolveListLimit("list records", options.limit);
  const after = optionalString("list records", "after", options.after);
  const includeDeleted = options.includeDeleted ?? false;
  checkBoolean("list records", "includeDeleted", includeDeleted);
  return { limit, after, includeDeleted };
}

/** {@linkcode ListOpsOptions} checked, with their defaults. */
export interface ResolvedListOpsOptions {
  /** The most ops to return; `Infinity` for all. */
  readonly limit: number;
  /** The paging cursor, if any. */
  readonly after: string | undefined;
  /** The record id to filter by, if any. */
  readonly id: string | undefined;
  /** The states to filter by; `undefined` for all. */
  readonly states: ReadonlySet<string> | undefined;
  /** The kinds to filter by; `undefined` for all. */
  readonly kinds: ReadonlySet<string> | undefined;
}

/**
 * Checks the options of `listOps()` and applies their defaults.
 *
 * @param options The options as the caller gave them.
 * @returns The options, checked.
 * @throws {TypeError} When an option has the wrong type.
 * @throws {RangeError} When `limit` is out of range.
 */
export function resolveListOpsOptions(
  options: ListOpsOptions,
): ResolvedListOpsOptions {
  return {
    limit: resolveListLimit("list ops", options.limit),
    after: optionalString("list ops", "after", options.after),
    id: optionalString("list ops", "id", options.id),
    states: optionalSet("list ops", "states", options.states),
    kinds: optionalSet("list ops", "kinds", options.kinds),
  };
}

/**
 * Checks a mutation's `expect`.
 *
 * @param action What the caller was doing, for the message.
 * @param expect The value to check.
 * @returns The expect.
 * @throws {TypeError} When it is not a string, `null` or `undefined`.
 */
export function checkExpect(
  action: string,
  expect: unknown,
): WritePrecondition {
  if (expect === undefined || expect === null || typeof expect === "string") {
    return expect;
  }
  throw notA("a revision, null or undefined", {
    action,
    name: "expect",
    value: expect,
  });
}

/**
 * Checks that an argument is a string.
 *
 * @param action What the caller was doing, for the message.
 * @param name The argument's name, for the message.
 * @param value The value to check.
 * @throws {TypeError} When it is not a string.
 */
export function checkString(
  action: string,
  name: string,
  value: unknown,
): asserts value is string {
  if (typeof value !== "string") {
    throw notA("a string", { action, name, value });
  }
}

/**
 * Checks that an argument is an array of strings.
 *
 * @param action What the caller was doing, for the message.
 * @param name The argument's name, for the message.
 * @param values The value to check.
 * @throws {TypeError} When it is not an array, or an item is not a string.
 */
export function checkStrings(
  action: string,
  name: string,
  values: unknown,
): void {
  if (!Array.isArray(values)) {
    throw notA("an array", { action, name, value: values });
  }
  values.forEach((value, index) =>
    checkString(action, `${name}[${index}]`, value)
  );
}

/**
 * Checks that a value is an object and not an array (nor `null`).
 *
 * @param action What the caller was doing, for the message.
 * @param name The value's name, for the message.
 * @param value The value to check.
 * @throws {TypeError} When it is not an object.
 */
export function checkObject(
  action: string,
  name: string,
  value: unknown,
): void {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw notA("an object", { action, name, value });
  }
}

/** Checks that a value is a boolean. */
function checkBoolean(
  action: string,
  name: string,
  value: unknown,
): void {
  if (typeof value !== "boolean") {
    throw notA("a boolean", { action, name, value });
  }
}

/** An argument, for {@linkcode notA}. */
export interface Argument {
  /** What the caller was doing. */
  readonly action: string;
  /** The argument's name. */
  readonly name: string;
  /** Its value. */
  readonly value: unknown;
}

/**
 * The error for an argument of the wrong type.
 *
 * @param expected What it should be (`"a string"`).
 * @param argument What the caller was doing, the argument's name and value.
 * @returns The error.
 */
export function notA(
  expected: string,
  { action, name, value }: Argument,
): TypeError {
  return new TypeError(
    `Cannot ${action} as '${name}' is not ${expected}: current value is ${
      describe(value)
    }`,
  );
}

/** Checks an optional string argument. */
function optionalString(
  action: string,
  name: string,
  value: unknown,
): string | undefined {
  if (value !== undefined) checkString(action, name, value);
  return value;
}

/** Checks an optional list of strings (a `listOps()` filter). */
function optionalSet(
  action: string,
  name: string,
  values: readonly string[] | undefined,
): ReadonlySet<string> | undefined {
  if (values === undefined) return undefined;
  checkStrings(action, name, values);
  return new Set(values);
}

/** Resolves a listing's `limit`: `Infinity` when absent. */
function resolveListLimit(action: string, limit: unknown): number {
  if (limit === undefined) return Infinity;
  if (
    typeof limit !== "number" ||
    !(limit === Infinity || (Number.isInteger(limit) && limit >= 0))
  ) {
    throw new RangeError(
      `Cannot ${action} as 'limit' is not a non-negative integer or Infinity: current value is ${
        describe(limit)
      }`,
    );
  }
  return limit;
}
