/**
 * Runs the `autoPreserveMerge` vectors of `_merge_vectors.ts`: each must give
 * exactly its expected record (key order included), the fields each side
 * contributed and the conflicts, without touching its inputs or
 * `Object.prototype` (clause 16), under Node's `__proto__` setter.
 *
 * @module
 */

import assert from "node:assert/strict";
import { autoPreserveMerge } from "../src/merge.ts";
import type { JsonObject, JsonValue } from "../src/json.ts";
import { MERGE_VECTORS, type MergeVector } from "./_merge_vectors.ts";
import { protoTest } from "./_proto.ts";

/** Serializes with key order and prototypes, so both are compared. */
function exact(value: unknown): string {
  if (typeof value !== "object" || value === null) {
    return value === undefined ? "~" : JSON.stringify(value);
  }
  if (Array.isArray(value)) {
    assert.equal(Object.getPrototypeOf(value), Array.prototype);
    return `[${value.map(exact).join(",")}]`;
  }
  const marker = Object.getPrototypeOf(value) === Object.prototype ? "" : "!";
  const record = value as Record<string, unknown>;
  return `${marker}{${
    Object.keys(record).map(function entry(key): string {
      return `${JSON.stringify(key)}:${exact(record[key])}`;
    }).join(",")
  }}`;
}

/** Writes into every object and array of a result, `"__proto__"` safely. */
function mutateEverywhere(value: JsonValue | undefined): void {
  if (typeof value !== "object" || value === null) return;
  if (Array.isArray(value)) {
    for (const item of value) mutateEverywhere(item);
    value.push("mutated");
    return;
  }
  for (const key of Object.keys(value)) mutateEverywhere(value[key]);
  Object.defineProperty(value, "mutated", {
    value: true,
    enumerable: true,
    writable: true,
    configurable: true,
  });
}

function run(vector: MergeVector): ReturnType<typeof autoPreserveMerge> {
  return autoPreserveMerge({
    local: vector.local,
    server: vector.server,
    ...(vector.base === undefined ? {} : { base: vector.base }),
    ...(vector.changedFields === undefined
      ? {}
      : { changedFields: vector.changedFields }),
  });
}

const PROTOTYPE_NAMES = Object.getOwnPropertyNames(Object.prototype).sort()
  .join();

for (const vector of MERGE_VECTORS) {
  protoTest(`autoPreserveMerge() [${vector.source}] ${vector.name}`, () => {
    const inputs = [vector.local, vector.server, vector.base];
    const before = exact(inputs);
    const result = run(vector);

    assert.equal(exact(result.data), exact(vector.expected));
    assert.deepEqual(result.data, vector.expected);
    assert.deepEqual(result.localFields, vector.localFields, "localFields");
    assert.deepEqual(result.serverFields, vector.serverFields, "serverFields");
    assert.deepEqual(result.conflictingFields, vector.conflicts, "conflicts");

    assert.equal(
      Object.getOwnPropertyNames(Object.prototype).sort().join(),
      PROTOTYPE_NAMES,
    );
    assert.equal(({} as Record<string, unknown>)["polluted"], undefined);
    assert.equal(exact(inputs), before, "inputs were mutated");
    mutateEverywhere(result.data);
    assert.equal(exact(inputs), before, "the result shares structure");
  });
}

protoTest(
  "autoPreserveMerge() vectors cover every rule of clause 14 and the original library",
  () => {
    const sources = new Set(MERGE_VECTORS.map((vector) => vector.source));
    assert.deepEqual([...sources].sort(), [
      "clause 14",
      "clause 16",
      "clause 2",
      "dart",
    ]);
    const modes = new Set(MERGE_VECTORS.map(function mode(vector): string {
      const base = vector.base === undefined || vector.base === null;
      const changed = vector.changedFields === undefined ||
        vector.changedFields === null;
      return `${base ? "no base" : "base"}, ${
        changed ? "no changedFields" : "changedFields"
      }`;
    }));
    assert.equal(modes.size, 4, [...modes].join("; "));
    const names = new Set(MERGE_VECTORS.map((vector) => vector.name));
    assert.equal(names.size, MERGE_VECTORS.length, "duplicate vector names");
  },
);

function checklistRounds(changedFields: string[] | null): number[] {
  let checklist: JsonValue = [{ text: "milk", done: false }];
  const sizes: number[] = [];
  for (let round = 0; round < 4; round++) {
    // Both sides hold an equal, separately decoded copy, as after a JSON
    // round trip on each side.
    const local: JsonObject = { id: "todo-1", checklist: copy(checklist) };
    const server: JsonObject = { id: "todo-1", checklist: copy(checklist) };
    checklist = autoPreserveMerge({ local, server, changedFields }).data
      .checklist!;
    sizes.push((checklist as JsonValue[]).length);
  }
  return sizes;
}

function copy(value: JsonValue): JsonValue {
  return JSON.parse(JSON.stringify(value));
}

protoTest(
  "autoPreserveMerge() never grows an id-less list over repeated conflicts (the original library's K1-3)",
  () => {
    assert.deepEqual(checklistRounds(["checklist"]), [1, 1, 1, 1]);
    assert.deepEqual(checklistRounds(null), [1, 1, 1, 1]);
  },
);
