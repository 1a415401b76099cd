/**
 * The checks an adapter makes on what it reads back. A stored item is
 * hostile like any input: a file edited by hand, another program sharing
 * the database, a disk that flipped a bit. Its JSON must parse and have the
 * shape of a {@linkcode StoredRecord} or {@linkcode StoredOp}, under the
 * key it was read by; otherwise the read rejects with a `StorageError`
 * naming the item, rather than crash later in the engine or return a value
 * that is silently wrong. Private to the package's adapters: not exported
 * from it.
 *
 * Only the shape the engine relies on is checked (every field's type, one
 * level into the nested objects), not the depth of the app's data.
 *
 * @module
 */

import { StorageError } from "../src/errors.ts";
import type { JsonObject } from "../src/json.ts";
import type { RecordBase, StoredOp, StoredRecord } from "../src/storage.ts";
import { copyJson, MAX_DEPTH } from "./_json.ts";
import { describe } from "../src/describe.ts";
import { OP_STATES } from "./_validate.ts";

/**
 * The stored item, for a message (`record "1" of kind "todo"`), or a
 * function that names it: reads build the name only on failure.
 */
export type ItemName = string | (() => string);

function nameOf(item: ItemName): string {
  return typeof item === "string" ? item : item();
}

/**
 * Parses stored JSON text.
 *
 * @param text The stored text.
 * @param item The item it belongs to, for the message (`record "1" of kind
 * "todo"`).
 * @returns The parsed value.
 * @throws {StorageError} When the text is not JSON.
 */
export function parseStored(text: unknown, item: ItemName): unknown {
  if (typeof text !== "string") {
    throw new StorageError(
      `Cannot read ${
        nameOf(item)
      } as its stored value is not text: current value is ${describe(text)}`,
    );
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new StorageError(
      `Cannot read ${
        nameOf(item)
      } as its stored value is not valid JSON: current value is ${
        excerpt(text)
      }`,
      { cause: error },
    );
  }
}

/** The start of a stored text, for a message. */
function excerpt(text: string): string {
  return JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}…` : text);
}

/** The fields of a record and what each must be. */
const RECORD_FIELDS: readonly (readonly [string, Kind])[] = [
  ["kind", "string"],
  ["id", "string"],
  ["data", "object"],
  ["deleted", "boolean"],
  ["base", "object or null"],
  ["lastOpId", "string or null"],
  ["localUpdatedAt", "number or null"],
];

const BASE_FIELDS: readonly (readonly [string, Kind])[] = [
  ["data", "object"],
  ["updatedAt", "string"],
  ["deleted", "boolean"],
];

const OP_FIELDS: readonly (readonly [string, Kind])[] = [
  ["opId", "string"],
  ["kind", "string"],
  ["id", "string"],
  ["type", "op type"],
  ["payload", "object or null"],
  ["baseUpdatedAt", "string or null"],
  ["base", "object or null"],
  ["changedFields", "list of strings or null"],
  ["createdAt", "number"],
  ["editedAt", "number"],
  ["attempts", "number"],
  ["revision", "number"],
  ["conflicts", "number"],
  ["force", "boolean"],
  ["state", "op state"],
  ["error", "object or null"],
  ["conflict", "object or null"],
];

const ERROR_FIELDS: readonly (readonly [string, Kind])[] = [
  ["category", "string"],
  ["message", "string"],
  ["status", "number or null"],
  ["code", "string or null"],
  ["at", "number"],
];

const CONFLICT_FIELDS: readonly (readonly [string, Kind])[] = [
  ["server", "object or null"],
  ["serverUpdatedAt", "string or null"],
  ["local", "object or null"],
  ["base", "object or null"],
  ["detectedAt", "number"],
];

type Kind =
  | "string"
  | "object"
  | "boolean"
  | "number"
  | "object or null"
  | "string or null"
  | "number or null"
  | "list of strings or null"
  | "op type"
  | "op state";

/** What a stored record must be, beyond its shape. */
export interface StoredRecordOptions {
  /** The kind it was read under, if known. */
  readonly kind?: string | undefined;
  /** The id it was read under, if known. */
  readonly id?: string | undefined;
  /**
   * Whether the record was stored without its base's data, which is its
   * own data (the base is then an object without `data`).
   */
  readonly baseIsData?: boolean;
}

/**
 * Checks that a value read back is a {@linkcode StoredRecord} of the kind
 * and id it was read under.
 *
 * @param value The parsed value.
 * @param item The item, or what names it, for the message.
 * @param options The kind and id it must have, and how its base is stored.
 * @returns The value, typed.
 * @throws {StorageError} When it is not such a record.
 */
export function storedRecord(
  value: unknown,
  item: ItemName,
  options: StoredRecordOptions = {},
): StoredRecord {
  const baseIsData = options.baseIsData === true;
  if (!isRecord(value, baseIsData)) {
    // Only a failure walks the fields again, to say which one is wrong.
    checkFields(value, { item, path: "", fields: RECORD_FIELDS });
    // Its own fields passed: then its base is what failed.
    checkFields((value as StoredRecord).base, {
      item,
      path: "base.",
      fields: baseIsData ? BASE_FIELDS.slice(1) : BASE_FIELDS,
    });
  }
  const record = value as StoredRecord;
  checkIdentity(item, {
    name: "kind",
    actual: record.kind,
    expected: options.kind,
  });
  checkIdentity(item, { name: "id", actual: record.id, expected: options.id });
  return record;
}

/**
 * Gives a record stored without its base's data (which is its own data)
 * that data back, as a copy, so that data and base share no objects. The
 * base's own keys follow `data`, as the engine builds a base.
 *
 * @param record The record, checked with `baseIsData`.
 * @param item The item, or what names it, for the message.
 * @returns The record, whole.
 * @throws {StorageError} When its data nests too deep to copy.
 */
export function withBaseData(
  record: StoredRecord,
  item: ItemName,
): StoredRecord {
  let data: JsonObject;
  try {
    data = copyJson(record.data) as JsonObject;
  } catch (error) {
    // Parsed JSON is JSON: only its depth can fail the copy.
    throw new StorageError(
      `Cannot read ${
        nameOf(item)
      } as its stored 'data' nests more than ${MAX_DEPTH} levels deep: current value is at least ${
        MAX_DEPTH + 1
      } levels`,
      { cause: error },
    );
  }
  const base = record.base as Omit<RecordBase, "data">;
  (record as { base: RecordBase }).base = { data, ...base };
  return record;
}

/**
 * Checks that a value read back is a {@linkcode StoredOp} with the op id it
 * was read under.
 *
 * @param value The parsed value.
 * @param item The item, or what names it, for the message.
 * @param opId The op id it must have, if known.
 * @returns The value, typed.
 * @throws {StorageError} When it is not such an op.
 */
export function storedOp(
  value: unknown,
  item: ItemName,
  opId?: string,
): StoredOp {
  if (!isOp(value)) {
    // Only a failure walks the fields again, to say which one is wrong.
    checkFields(value, { item, path: "", fields: OP_FIELDS });
    const { error, conflict } = value as StoredOp;
    if (error !== null) {
      checkFields(error, { item, path: "error.", fields: ERROR_FIELDS });
    }
    if (conflict !== null) {
      checkFields(conflict, {
        item,
        path: "conflict.",
        fields: CONFLICT_FIELDS,
      });
    }
  }
  const op = value as StoredOp;
  checkIdentity(item, { name: "opId", actual: op.opId, expected: opId });
  return op;
}

// The fast checks below read fields directly: none of their names is a
// property of Object.prototype, so a missing field reads as undefined.

/** Whether a value has a stored record's shape (the fields above). */
function isRecord(value: unknown, baseIsData: boolean): boolean {
  if (!isObject(value)) return false;
  const record = value as Record<string, unknown>;
  const base = record["base"] as Record<string, unknown> | null;
  return typeof record["kind"] === "string" &&
    typeof record["id"] === "string" && isObject(record["data"]) &&
    typeof record["deleted"] === "boolean" &&
    (record["lastOpId"] === null || typeof record["lastOpId"] === "string") &&
    (record["localUpdatedAt"] === null ||
      typeof record["localUpdatedAt"] === "number") &&
    (base === null ||
      (isObject(base) && (baseIsData || isObject(base["data"])) &&
        typeof base["updatedAt"] === "string" &&
        typeof base["deleted"] === "boolean"));
}

/** Whether a value has a stored op's shape (the fields above). */
function isOp(value: unknown): boolean {
  if (!isObject(value)) return false;
  const op = value as Record<string, unknown>;
  const error = op["error"] as Record<string, unknown> | null;
  const conflict = op["conflict"] as Record<string, unknown> | null;
  return typeof op["opId"] === "string" && typeof op["kind"] === "string" &&
    typeof op["id"] === "string" &&
    (op["type"] === "upsert" || op["type"] === "delete") &&
    (op["payload"] === null || isObject(op["payload"])) &&
    (op["baseUpdatedAt"] === null ||
      typeof op["baseUpdatedAt"] === "string") &&
    (op["base"] === null || isObject(op["base"])) &&
    hasKind(op["changedFields"], "list of strings or null") &&
    typeof op["createdAt"] === "number" &&
    typeof op["editedAt"] === "number" &&
    typeof op["attempts"] === "number" &&
    typeof op["revision"] === "number" &&
    typeof op["conflicts"] === "number" && typeof op["force"] === "boolean" &&
    typeof op["state"] === "string" && OP_STATES.has(op["state"]) &&
    (error === null ||
      (isObject(error) && typeof error["category"] === "string" &&
        typeof error["message"] === "string" &&
        (error["status"] === null || typeof error["status"] === "number") &&
        (error["code"] === null || typeof error["code"] === "string") &&
        typeof error["at"] === "number")) &&
    (conflict === null ||
      (isObject(conflict) &&
        (conflict["server"] === null || isObject(conflict["server"])) &&
        (conflict["serverUpdatedAt"] === null ||
          typeof conflict["serverUpdatedAt"] === "string") &&
        (conflict["local"] === null || isObject(conflict["local"])) &&
        (conflict["base"] === null || isObject(conflict["base"])) &&
        typeof conflict["detectedAt"] === "number"));
}

function checkFields(
  value: unknown,
  shape: {
    readonly item: ItemName;
    readonly path: string;
    readonly fields: readonly (readonly [string, Kind])[];
  },
): void {
  const { item, path, fields } = shape;
  if (!isObject(value)) {
    throw new StorageError(
      `Cannot read ${nameOf(item)} as its stored ${
        path === "" ? "value" : `'${path.slice(0, -1)}'`
      } is not an object: current value is ${describe(value)}`,
    );
  }
  const source = value as Record<string, unknown>;
  for (const [name, kind] of fields) {
    const field = Object.hasOwn(source, name) ? source[name] : undefined;
    if (!hasKind(field, kind)) {
      throw new StorageError(
        `Cannot read ${nameOf(item)} as its stored '${path}${name}' is not ${
          /^[aeiou]/.test(kind) ? "an" : "a"
        } ${kind}: current value is ${describe(field)}`,
      );
    }
  }
}

function hasKind(value: unknown, kind: Kind): boolean {
  switch (kind) {
    case "string":
      return typeof value === "string";
    case "object":
      return isObject(value);
    case "boolean":
      return typeof value === "boolean";
    case "number":
      return typeof value === "number";
    case "object or null":
      return value === null || isObject(value);
    case "string or null":
      return value === null || typeof value === "string";
    case "number or null":
      return value === null || typeof value === "number";
    case "list of strings or null":
      return value === null ||
        (Array.isArray(value) &&
          value.every((item) => typeof item === "string"));
    case "op type":
      return value === "upsert" || value === "delete";
    case "op state":
      return typeof value === "string" && OP_STATES.has(value);
  }
}

function isObject(value: unknown): boolean {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A value stored under another key is as wrong as a corrupt one. */
function checkIdentity(
  item: ItemName,
  field: {
    readonly name: string;
    readonly actual: string;
    readonly expected: string | undefined;
  },
): void {
  const { name, actual, expected } = field;
  if (expected !== undefined && actual !== expected) {
    throw misplaced(item, name, actual);
  }
}

/**
 * The error for an item whose stored value names another key than the one
 * it was read under.
 *
 * @param item The item, or what names it, for the message.
 * @param name The field that disagrees with the key.
 * @param actual The field's stored value.
 * @returns The error.
 */
export function misplaced(
  item: ItemName,
  name: string,
  actual: string,
): StorageError {
  return new StorageError(
    `Cannot read ${
      nameOf(item)
    } as its stored '${name}' is not the one it is stored under: current value is ${
      describe(actual)
    }`,
  );
}

/**
 * Names a record for a message.
 *
 * @param kind The record's kind.
 * @param id The record's id, or a description of it.
 * @returns `record "1" of kind "todo"`.
 */
export function recordItem(kind: string, id: string): string {
  return `record ${describe(id)} of kind ${describe(kind)}`;
}
