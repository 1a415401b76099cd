/**
 * The checks every storage adapter makes on its arguments, with the same
 * error types and messages in each (contract clause 5: a malformed mutation
 * rejects with a `TypeError`, a write beyond the capabilities with a
 * `StorageError`). Private to the package's adapters: not exported from it.
 * It depends only on the contract, so each adapter still depends on nothing
 * but the contract it implements and this file.
 *
 * JSON is checked in two ways: {@linkcode checkJson} only validates, for an
 * adapter that serialises the value at once and so never keeps the caller's
 * object; {@linkcode copyJson} validates and deep-copies, for one that keeps
 * the value as an object. Both walk at most {@linkcode MAX_DEPTH} levels
 * deep, so their stack is bounded whatever the value: a deeper value is
 * refused with a `StorageError` rather than overflowing the stack.
 *
 * @module
 */

import { StorageError } from "../src/errors.ts";
import type { JsonObject, JsonValue } from "../src/json.ts";
import type {
  Expect,
  ListOpsOptions,
  ListRecordsOptions,
  Mutation,
  OpState,
  StorageCapabilities,
  StoredOp,
  StoredRecord,
} from "../src/storage.ts";

/**
 * How deep a value may nest: the value itself is level 1 when it is an
 * object or an array. The contract asks every adapter to hold 256 levels
 * (a record's data nests at most 64 by the wire contract, a few more around
 * it); ours refuse deeper values, since checking and copying them recurses
 * once per level.
 */
export const MAX_DEPTH = 256;

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
    readonly value: StoredRecord | undefined;
    readonly expect: Expect;
  }
  | {
    readonly space: "op";
    readonly opId: string;
    readonly value: StoredOp | undefined;
    readonly expect: Expect;
  }
  | {
    readonly space: "meta";
    readonly key: string;
    readonly value: JsonValue | undefined;
    readonly expect: Expect;
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
  // Objects already checked in this write: the engine passes one object
  // for a record's data and its base's data, or its op's payload.
  const seen = copy ? undefined : new Set<object>();
  // Copies made in this write, by source: the same object copies once, so a
  // record's data and its op's payload share one stored (immutable) copy.
  const copies = copy ? new Map<object, JsonValue>() : undefined;
  const checked = mutations.map((mutation, index) =>
    checkMutation(mutation, index, copy, seen, copies)
  );
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
  let bytes = 2 + Math.max(0, mutations.length - 1);
  if (typeof (mutations as { toJSON?: unknown }).toJSON === "function") {
    bytes = utf8Length(JSON.stringify(mutations));
  } else {
    for (let index = 0; index < mutations.length; index++) {
      bytes += mutationBytes(mutations[index]!, valueBytes(index));
    }
  }
  if (bytes > maxWriteBytes) {
    throw new StorageError(
      `Cannot write ${bytes} bytes as the storage accepts at most ${maxWriteBytes} per write: current value is ${bytes}`,
    );
  }
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

function checkMutation(
  mutation: Mutation,
  index: number,
  copy: boolean,
  seen: Set<object> | undefined,
  copies: Map<object, JsonValue> | undefined,
): CheckedMutation {
  const action = `write mutation ${index}`;
  if (typeof mutation !== "object" || mutation === null) {
    throw new TypeError(
      `Cannot ${action} as it is not an object: current value is ${
        describe(mutation)
      }`,
    );
  }
  const expect = checkExpect(action, mutation.expect);
  switch (mutation.type) {
    case "putRecord": {
      const record = checkRoot(
        action,
        "record",
        mutation.record,
        copy,
        seen,
        copies,
      );
      checkString(action, "record.kind", record["kind"]);
      checkString(action, "record.id", record["id"]);
      checkObject(action, "record.data", record["data"]);
      checkBoolean(action, "record.deleted", record["deleted"]);
      const value = record as unknown as StoredRecord;
      return { space: "record", kind: value.kind, id: value.id, value, expect };
    }
    case "deleteRecord":
      checkString(action, "kind", mutation.kind);
      checkString(action, "id", mutation.id);
      return {
        space: "record",
        kind: mutation.kind,
        id: mutation.id,
        value: undefined,
        expect,
      };
    case "putOp": {
      const op = checkRoot(action, "op", mutation.op, copy, seen, copies);
      checkString(action, "op.opId", op["opId"]);
      checkString(action, "op.kind", op["kind"]);
      checkString(action, "op.id", op["id"]);
      if (typeof op["state"] !== "string" || !OP_STATES.has(op["state"])) {
        throw new TypeError(
          `Cannot ${action} as 'op.state' is not an op state: current value is ${
            describe(op["state"])
          }`,
        );
      }
      const value = op as unknown as StoredOp;
      return { space: "op", opId: value.opId, value, expect };
    }
    case "deleteOp":
      checkString(action, "opId", mutation.opId);
      return { space: "op", opId: mutation.opId, value: undefined, expect };
    case "putMeta": {
      checkString(action, "key", mutation.key);
      let value: JsonValue = mutation.value;
      if (copy) value = copyJson(value, action, ["value"], new Set(), copies);
      else checkJson(value, action, ["value"], new Set(), seen);
      return { space: "meta", key: mutation.key, value, expect };
    }
    case "deleteMeta":
      checkString(action, "key", mutation.key);
      return { space: "meta", key: mutation.key, value: undefined, expect };
    default:
      throw new TypeError(
        `Cannot ${action} as 'type' is not a mutation type: current value is ${
          describe((mutation as { type: unknown }).type)
        }`,
      );
  }
}

/** Checks the object at the root of a mutation, copying it when asked. */
function checkRoot(
  action: string,
  name: string,
  value: unknown,
  copy: boolean,
  seen: Set<object> | undefined,
  copies: Map<object, JsonValue> | undefined,
): JsonObject {
  checkObject(action, name, value);
  if (copy) {
    return copyJson(value, action, [name], new Set(), copies) as JsonObject;
  }
  checkJson(value, action, [name], new Set(), seen);
  return value as JsonObject;
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
export function checkExpect(action: string, expect: unknown): Expect {
  if (expect === undefined || expect === null || typeof expect === "string") {
    return expect;
  }
  throw new TypeError(
    `Cannot ${action} as 'expect' is not a revision, null or undefined: current value is ${
      describe(expect)
    }`,
  );
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
    throw new TypeError(
      `Cannot ${action} as '${name}' is not a string: current value is ${
        describe(value)
      }`,
    );
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
    throw new TypeError(
      `Cannot ${action} as '${name}' is not an array: current value is ${
        describe(values)
      }`,
    );
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
    throw new TypeError(
      `Cannot ${action} as '${name}' is not an object: current value is ${
        describe(value)
      }`,
    );
  }
}

/** Checks that a value is a boolean. */
function checkBoolean(
  action: string,
  name: string,
  value: unknown,
): void {
  if (typeof value !== "boolean") {
    throw new TypeError(
      `Cannot ${action} as '${name}' is not a boolean: current value is ${
        describe(value)
      }`,
    );
  }
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

/**
 * Checks that a value is JSON that `JSON.stringify` writes faithfully: no
 * `undefined`, functions, symbols, bigints, non-finite numbers, cycles, or
 * objects other than plain ones and arrays (a `Date` or `Map` would be
 * written as something else and read back different). Copies nothing.
 *
 * @param value The value to check.
 * @param action What the caller was doing, for the message.
 * @param path Where the value is, for the message; restored on return.
 * @param ancestors The objects being checked around the value (cycles).
 * @param seen Objects of the same write already found to be such JSON,
 * skipped when met again (the engine passes one object as a record's data
 * and its base's data); objects near the root are added once checked. The
 * checks of a write run synchronously, so nothing changes them meanwhile.
 * @throws {TypeError} When it is not such JSON.
 * @throws {StorageError} When it nests deeper than {@linkcode MAX_DEPTH}.
 */
export function checkJson(
  value: unknown,
  action: string,
  path: (string | number)[] = [],
  ancestors: Set<object> = new Set(),
  seen?: Set<object>,
): void {
  // The common case, valid JSON, is checked without tracking the path or
  // the ancestors; only a failure walks again to say where and why.
  if (ancestors.size === 0 && isJson(value, 0, seen)) return;
  explainJson(value, action, path, ancestors);
}

/**
 * Whether a value is JSON as {@linkcode checkJson} means it, at most
 * {@linkcode MAX_DEPTH} levels deep. A cycle makes a value infinitely deep,
 * so it fails here too; {@linkcode explainJson} then tells which it is.
 *
 * @param depth How many objects and arrays hold the value.
 */
function isJson(
  value: unknown,
  depth: number,
  seen: Set<object> | undefined,
): boolean {
  switch (typeof value) {
    case "string":
    case "boolean":
      return true;
    case "number":
      return Number.isFinite(value);
    case "object": {
      if (value === null) return true;
      if (depth >= MAX_DEPTH) return false;
      // Only near the root: deeper, a lookup would cost what it saves.
      const near = seen !== undefined && depth <= 2;
      if (near && seen.has(value)) return true;
      if (Array.isArray(value)) {
        for (let index = 0; index < value.length; index++) {
          if (!isJson(value[index], depth + 1, seen)) return false;
        }
      } else {
        const prototype = Object.getPrototypeOf(value);
        if (prototype !== Object.prototype && prototype !== null) return false;
        const source = value as Record<string, unknown>;
        for (const key of Object.keys(source)) {
          if (!isJson(source[key], depth + 1, seen)) return false;
        }
      }
      if (near) seen.add(value);
      return true;
    }
    default:
      return false;
  }
}

/**
 * Walks a value as {@linkcode checkJson} does, throwing where it fails. The
 * ancestors are the objects and arrays that hold the value, so their count
 * is its depth.
 */
function explainJson(
  value: unknown,
  action: string,
  path: (string | number)[],
  ancestors: Set<object>,
): void {
  switch (typeof value) {
    case "string":
    case "boolean":
      return;
    case "number":
      if (Number.isFinite(value)) return;
      break;
    case "object": {
      if (value === null) return;
      if (ancestors.has(value)) break;
      if (ancestors.size >= MAX_DEPTH) throw tooDeep(action, path);
      if (Array.isArray(value)) {
        ancestors.add(value);
        for (let index = 0; index < value.length; index++) {
          path.push(index);
          explainJson(value[index], action, path, ancestors);
          path.pop();
        }
        ancestors.delete(value);
        return;
      }
      const prototype = Object.getPrototypeOf(value);
      if (prototype !== Object.prototype && prototype !== null) break;
      ancestors.add(value);
      const source = value as Record<string, unknown>;
      for (const key of Object.keys(source)) {
        path.push(key);
        explainJson(source[key], action, path, ancestors);
        path.pop();
      }
      ancestors.delete(value);
      return;
    }
  }
  throw notJson(value, action, path);
}

/**
 * Deep-copies a JSON value, checking it as {@linkcode checkJson} does.
 * Objects are rebuilt with data properties only, so a `__proto__` key stays
 * an own data key and never becomes a prototype (contract clause 3).
 *
 * @param value The value to copy.
 * @param action What the caller was doing, for the message.
 * @param path Where the value is, for the message; restored on return.
 * @param ancestors The objects being copied around the value (cycles).
 * @param copies Copies already made, by source object: a source met again
 * returns its copy (copies are shared, never with `value`'s objects).
 * @returns The copy, sharing nothing with `value`.
 * @throws {TypeError} When it is not such JSON.
 * @throws {StorageError} When it nests deeper than {@linkcode MAX_DEPTH}.
 */
export function copyJson(
  value: unknown,
  action?: string,
  path: (string | number)[] = [],
  ancestors: Set<object> = new Set(),
  copies?: Map<object, JsonValue>,
): JsonValue {
  switch (typeof value) {
    case "string":
    case "boolean":
      return value;
    case "number":
      if (Number.isFinite(value)) return value;
      break;
    case "object": {
      if (value === null) return null;
      if (ancestors.has(value)) break;
      const known = copies?.get(value);
      if (known !== undefined) return known;
      // The ancestors hold the value: their count is its depth.
      if (ancestors.size >= MAX_DEPTH) {
        throw tooDeep(action ?? "copy value", path);
      }
      if (Array.isArray(value)) {
        ancestors.add(value);
        const copy: JsonValue[] = new Array(value.length);
        for (let index = 0; index < value.length; index++) {
          path.push(index);
          copy[index] = copyJson(value[index], action, path, ancestors, copies);
          path.pop();
        }
        ancestors.delete(value);
        copies?.set(value, copy);
        return copy;
      }
      const prototype = Object.getPrototypeOf(value);
      if (prototype !== Object.prototype && prototype !== null) break;
      ancestors.add(value);
      const source = value as Record<string, unknown>;
      const copy: JsonObject = {};
      for (const key of Object.keys(source)) {
        path.push(key);
        const item = copyJson(source[key], action, path, ancestors, copies);
        path.pop();
        if (key === "__proto__") {
          Object.defineProperty(copy, key, {
            value: item,
            writable: true,
            enumerable: true,
            configurable: true,
          });
        } else {
          copy[key] = item;
        }
      }
      ancestors.delete(value);
      copies?.set(value, copy);
      return copy;
    }
  }
  throw notJson(value, action ?? "copy value", path);
}

/**
 * The error for a value nested deeper than {@linkcode MAX_DEPTH}; it names
 * the root only, since the path to the deepest level is that long.
 */
function tooDeep(
  action: string,
  path: readonly (string | number)[],
): StorageError {
  const root = path.length === 0 ? "value" : String(path[0]);
  return new StorageError(
    `Cannot ${action} as '${root}' nests more than ${MAX_DEPTH} levels deep: current value is at least ${
      MAX_DEPTH + 1
    } levels`,
  );
}

function notJson(
  value: unknown,
  action: string,
  path: readonly (string | number)[],
): TypeError {
  return new TypeError(
    `Cannot ${action} as '${
      path.join(".")
    }' is not a JSON value: current value is ${describe(value)}`,
  );
}

/**
 * Describes a value for an error message: strings quoted, objects by their
 * class, never their contents.
 *
 * @param value The value.
 * @returns The description.
 */
export function describe(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "bigint") return `${value}n`;
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object" && value !== null) {
    const name = Object.getPrototypeOf(value)?.constructor?.name;
    return typeof name === "string" && name !== "Object"
      ? `a ${name}`
      : "an object";
  }
  return String(value);
}

/**
 * The UTF-8 length of a string, without encoding it; a lone surrogate
 * counts as U+FFFD (3 bytes), as `TextEncoder` writes it.
 *
 * @param text The string.
 * @returns Its length in UTF-8 bytes.
 */
export function utf8Length(text: string): number {
  let bytes = text.length;
  for (let index = 0; index < text.length; index++) {
    const unit = text.charCodeAt(index);
    if (unit < 0x80) continue;
    if (unit < 0x800) bytes += 1;
    else if (
      unit >= 0xd800 && unit <= 0xdbff && index + 1 < text.length &&
      (text.charCodeAt(index + 1) & 0xfc00) === 0xdc00
    ) {
      // A surrogate pair: 4 bytes for 2 units.
      bytes += 2;
      index++;
    } else bytes += 2;
  }
  return bytes;
}
