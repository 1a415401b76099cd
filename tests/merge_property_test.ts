import assert from "node:assert/strict";
import fc from "fast-check";
import {
  autoPreserveMerge,
  deepEqual,
  DEFAULT_SYSTEM_FIELDS,
  diffFields,
} from "../src/merge.ts";
import type { JsonObject, JsonValue } from "../src/json.ts";
import { protoTest } from "./_proto.ts";

// Property runs are reproducible: the seed is printed and FC_SEED replays it.
const seed = readSeed();
const numRuns = 300;
console.log(`merge properties: seed=${seed} (replay with FC_SEED=${seed})`);

function readSeed(): number {
  const text = Deno.env.get("FC_SEED");
  if (text === undefined || text === "") {
    return Math.floor(Math.random() * 2 ** 31);
  }
  const value = Number(text);
  if (!Number.isSafeInteger(value)) {
    throw new TypeError(
      `Cannot replay as FC_SEED is not an integer: current value is "${text}"`,
    );
  }
  return value;
}

// --- Oracles, independent of the module under test -------------------------

/**
 * A canonical text of a JSON value: sorted keys, own properties only,
 * present-`undefined` dropped, `"~"` for absent. Equal texts mean equal
 * values.
 */
function canon(value: JsonValue | undefined): string {
  if (value === undefined) return "~";
  if (typeof value !== "object" || value === null) return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canon).join(",")}]`;
  const keys = Object.keys(value).filter(function defined(key): boolean {
    return value[key] !== undefined;
  }).sort();
  return `{${
    keys.map(function entry(key): string {
      return `${JSON.stringify(key)}:${canon(value[key])}`;
    }).join(",")
  }}`;
}

/** Like {@linkcode canon}, but also records null prototypes and key order. */
function snapshot(value: unknown): string {
  if (typeof value !== "object" || value === null) {
    return value === undefined ? "~" : JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map(snapshot).join(",")}]`;
  const marker = Object.getPrototypeOf(value) === null ? "N" : "";
  const record = value as Record<string, unknown>;
  return `${marker}{${
    Object.keys(record).map(function entry(key): string {
      return `${JSON.stringify(key)}:${snapshot(record[key])}`;
    }).join(",")
  }}`;
}

function same(a: JsonValue | undefined, b: JsonValue | undefined): boolean {
  return canon(a) === canon(b);
}

function own(obj: JsonObject, key: string): JsonValue | undefined {
  return Object.hasOwn(obj, key) ? obj[key] : undefined;
}

/** Sets an own property even for `"__proto__"`. */
function put(obj: JsonObject, key: string, value: JsonValue): void {
  Object.defineProperty(obj, key, {
    value,
    enumerable: true,
    writable: true,
    configurable: true,
  });
}

function keysOf(...objects: (JsonObject | null)[]): string[] {
  const keys = new Set<string>();
  for (const obj of objects) {
    if (obj === null) continue;
    for (const key of Object.keys(obj)) {
      if (obj[key] !== undefined) keys.add(key);
    }
  }
  return [...keys];
}

function changedKeys(before: JsonObject, after: JsonObject): string[] {
  return keysOf(before, after).filter(function differs(key): boolean {
    return !same(own(before, key), own(after, key));
  });
}

function isPlainObject(value: JsonValue | undefined): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Asserts every object in `value` is a plain `{}` (prototype intact). */
function assertPlain(value: JsonValue | undefined): void {
  if (typeof value !== "object" || value === null) return;
  if (Array.isArray(value)) {
    assert.equal(Object.getPrototypeOf(value), Array.prototype);
    for (const item of value) assertPlain(item);
    return;
  }
  assert.equal(Object.getPrototypeOf(value), Object.prototype);
  for (const key of Object.keys(value)) assertPlain(value[key]);
}

/** Writes a marker into every object and array of a result. */
function mutateEverywhere(value: JsonValue | undefined): void {
  if (typeof value !== "object" || value === null) return;
  if (Array.isArray(value)) {
    for (const item of value) mutateEverywhere(item);
    value.push("mutated");
    return;
  }
  for (const key of Object.keys(value)) mutateEverywhere(value[key]);
  put(value, "mutated", true);
}

const SYSTEM = new Set(DEFAULT_SYSTEM_FIELDS);

// --- Arbitraries -----------------------------------------------------------

/**
 * A small key pool so that the sides often touch the same keys, with the
 * keys that prototype pollution rides on and two system fields.
 */
const KEYS = [
  "a",
  "b",
  "tags",
  "polluted",
  "__proto__",
  "constructor",
  "prototype",
  "toString",
  "id",
  "updated_at",
];
const keyArb = fc.constantFrom(...KEYS);

const leafArb: fc.Arbitrary<JsonValue> = fc.oneof(
  fc.constant(null),
  fc.boolean(),
  fc.integer({ min: -1, max: 2 }),
  fc.constantFrom("", "x", "y"),
);

interface NastyArbitraries {
  value: JsonValue;
  list: JsonValue[];
  object: JsonObject;
}

const { value: nastyValueArb } = fc.letrec<NastyArbitraries>(function build(
  tie: fc.LetrecTypedTie<NastyArbitraries>,
): fc.LetrecValue<NastyArbitraries> {
  return {
    value: fc.oneof(
      { depthSize: "small", maxDepth: 3 },
      leafArb,
      tie("list"),
      tie("object"),
    ),
    list: fc.array(tie("value"), { maxLength: 4 }),
    // May have a null prototype: the merge must accept any JSON-ish object.
    object: fc.dictionary(keyArb, tie("value"), { maxKeys: 4 }),
  };
});

/** JSON values made by `JSON.parse`, as records arrive from the network. */
function parsed<T>(arb: fc.Arbitrary<T>): fc.Arbitrary<T> {
  return arb.map(function roundTrip(value): T {
    return JSON.parse(JSON.stringify(value));
  });
}

// fast-check types its arrays readonly; the values are the same JSON.
const fcJsonArb = fc.jsonValue({ maxDepth: 2 }) as unknown as fc.Arbitrary<
  JsonValue
>;

const recordArb: fc.Arbitrary<JsonObject> = fc.oneof(
  fc.dictionary(keyArb, nastyValueArb, { maxKeys: 6 }),
  parsed(fc.dictionary(keyArb, nastyValueArb, { maxKeys: 6 })),
  // fast-check's own JSON generator, with keys of its choosing.
  fc.dictionary(fc.oneof(keyArb, fc.string()), fcJsonArb, { maxKeys: 4 }),
);

interface Edits {
  set: JsonObject;
  remove: string[];
}

const editsArb: fc.Arbitrary<Edits> = fc.record({
  set: fc.dictionary(keyArb, nastyValueArb, { maxKeys: 3 }),
  remove: fc.subarray(KEYS, { maxLength: 3 }),
});

function applyEdits(base: JsonObject, edits: Edits): JsonObject {
  const out: JsonObject = {};
  for (const key of Object.keys(base)) {
    const value = base[key];
    if (value !== undefined && !edits.remove.includes(key)) {
      put(out, key, value);
    }
  }
  for (const key of Object.keys(edits.set)) {
    const value = edits.set[key];
    if (value !== undefined) put(out, key, value);
  }
  return out;
}

/** A base and two independent edits of it: the shape of a real conflict. */
const scenarioArb = fc.record({
  base: recordArb,
  localEdits: editsArb,
  serverEdits: editsArb,
}).map(function derive({ base, localEdits, serverEdits }): {
  base: JsonObject;
  local: JsonObject;
  server: JsonObject;
} {
  return {
    base,
    local: applyEdits(base, localEdits),
    server: applyEdits(base, serverEdits),
  };
});

const changedFieldsArb: fc.Arbitrary<string[] | null> = fc.option(
  fc.subarray(KEYS),
  { nil: null },
);

// --- autoPreserveMerge -----------------------------------------------------

protoTest(
  "autoPreserveMerge() keeps the server value of every field the client did not change",
  () => {
    fc.assert(
      fc.property(
        scenarioArb,
        fc.boolean(),
        function check({ base, local, server }, withBase): void {
          const changed = changedKeys(base, local);
          const { data } = autoPreserveMerge({
            local,
            server,
            base: withBase ? base : null,
            changedFields: changed,
          });
          for (const key of keysOf(base, local, server)) {
            if (changed.includes(key)) continue;
            assert.ok(same(own(data, key), own(server, key)), key);
          }
        },
      ),
      { seed, numRuns },
    );
  },
);

protoTest(
  "autoPreserveMerge() keeps the client value of every field only the client changed",
  () => {
    fc.assert(
      fc.property(scenarioArb, function check({ base, local, server }): void {
        const changed = changedKeys(base, local);
        const { data, conflictingFields } = autoPreserveMerge({
          local,
          server,
          base,
          changedFields: changed,
        });
        for (const key of changed) {
          if (SYSTEM.has(key) || !same(own(server, key), own(base, key))) {
            continue;
          }
          assert.ok(same(own(data, key), own(local, key)), key);
        }
        // Conflicts name only fields both sides changed, to different values.
        for (const path of conflictingFields) {
          const top = path.split(".")[0]!;
          assert.ok(changed.includes(top), path);
          assert.ok(!same(own(server, top), own(base, top)), path);
          assert.ok(!same(own(server, top), own(local, top)), path);
        }
      }),
      { seed, numRuns },
    );
  },
);

protoTest(
  "autoPreserveMerge() lets the client win and reports a scalar field both sides changed",
  () => {
    fc.assert(
      fc.property(scenarioArb, function check({ base, local, server }): void {
        const changed = changedKeys(base, local);
        const result = autoPreserveMerge({
          local,
          server,
          base,
          changedFields: changed,
        });
        for (const key of changed) {
          const localValue = own(local, key);
          const serverValue = own(server, key);
          const serverChanged = !same(serverValue, own(base, key));
          const bothContainers = (isPlainObject(localValue) &&
            isPlainObject(serverValue)) ||
            (Array.isArray(localValue) && Array.isArray(serverValue));
          if (
            SYSTEM.has(key) || !serverChanged || bothContainers ||
            same(localValue, serverValue)
          ) {
            continue;
          }
          assert.ok(same(own(result.data, key), localValue), key);
          assert.ok(result.conflictingFields.includes(key), key);
        }
      }),
      { seed, numRuns },
    );
  },
);

protoTest("autoPreserveMerge() of a record with itself is that record", () => {
  fc.assert(
    fc.property(
      recordArb,
      changedFieldsArb,
      fc.boolean(),
      function check(record, changedFields, withBase): void {
        const result = autoPreserveMerge({
          local: record,
          server: record,
          base: withBase ? record : null,
          changedFields,
        });
        assert.equal(canon(result.data), canon(record));
        assert.deepEqual(result.localFields, []);
        assert.deepEqual(result.serverFields, []);
        assert.deepEqual(result.conflictingFields, []);
      },
    ),
    { seed, numRuns },
  );
});

protoTest(
  "autoPreserveMerge() always takes system fields from the server",
  () => {
    fc.assert(
      fc.property(
        scenarioArb,
        fc.option(fc.subarray(KEYS), { nil: null }),
        fc.boolean(),
        function check({ base, local, server }, changedFields, withBase): void {
          // Claim the system fields changed too: they must still not win.
          const claimed = changedFields === null
            ? null
            : [...changedFields, ...DEFAULT_SYSTEM_FIELDS];
          const { data } = autoPreserveMerge({
            local,
            server,
            base: withBase ? base : null,
            changedFields: claimed,
          });
          for (const field of DEFAULT_SYSTEM_FIELDS) {
            assert.ok(same(own(data, field), own(server, field)), field);
          }
          const custom = autoPreserveMerge({
            local,
            server,
            changedFields: claimed,
            systemFields: ["a", "__proto__"],
          });
          for (const field of ["a", "__proto__"]) {
            assert.ok(same(own(custom.data, field), own(server, field)), field);
          }
        },
      ),
      { seed, numRuns },
    );
  },
);

protoTest("autoPreserveMerge() reports where each field came from", () => {
  fc.assert(
    fc.property(
      scenarioArb,
      changedFieldsArb,
      fc.boolean(),
      function check({ base, local, server }, changedFields, withBase): void {
        const result = autoPreserveMerge({
          local,
          server,
          base: withBase ? base : null,
          changedFields,
        });
        // System fields always come from the server and are never reported.
        const keys = keysOf(local, server, result.data).filter((key) =>
          !DEFAULT_SYSTEM_FIELDS.includes(key)
        );
        const expectedLocal = keys.filter(function fromLocal(key): boolean {
          return !same(own(result.data, key), own(server, key));
        }).sort();
        const expectedServer = keys.filter(function fromServer(key): boolean {
          return same(own(result.data, key), own(server, key)) &&
            !same(own(result.data, key), own(local, key));
        }).sort();
        assert.deepEqual(result.localFields, expectedLocal);
        assert.deepEqual(result.serverFields, expectedServer);
        // With a base, unknown changes are read off it and can conflict.
        if (!withBase) {
          assert.deepEqual(result.conflictingFields, []);
        }
      },
    ),
    { seed, numRuns },
  );
});

// --- Neither a base nor changedFields (clause 14) ---------------------------

/** Records whose lists hold items with ids, so both sides share some. */
const itemRecordArb: fc.Arbitrary<JsonObject> = fc.record({
  items: fc.array(
    fc.record({
      id: fc.integer({ min: 0, max: 3 }),
      v: leafArb,
      sub: fc.dictionary(keyArb, leafArb, { maxKeys: 2 }),
    }, { requiredKeys: ["id"] }),
    { maxLength: 4 },
  ),
}, { requiredKeys: [] }) as unknown as fc.Arbitrary<JsonObject>;

const twoWayRecordArb = fc.oneof(recordArb, itemRecordArb);

/** An item's identity as the merge sees it: its string or number id. */
function idOf(item: JsonValue): string | undefined {
  if (!isPlainObject(item)) return undefined;
  const id = own(item, "id");
  return typeof id === "string" || typeof id === "number"
    ? `${typeof id}:${id}`
    : undefined;
}

function identityOf(item: JsonValue): string {
  return idOf(item) ?? canon(item);
}

/**
 * Checks one merged value against the rule, as a specification: a local
 * value that is absent or `null` leaves the server's; a local scalar wins;
 * lists keep every item of both sides, and an item whose id both hold obeys
 * the rule again; objects obey it key by key; a type change lets the local
 * value win.
 */
function checkTwoWay(
  server: JsonValue | undefined,
  local: JsonValue | undefined,
  merged: JsonValue | undefined,
  path: string,
): void {
  if (local === undefined || local === null) {
    assert.ok(same(merged, server), `${path}: the server's value`);
  } else if (Array.isArray(local)) {
    if (!Array.isArray(server)) {
      assert.ok(same(merged, local), `${path}: the local list`);
      return;
    }
    assert.ok(Array.isArray(merged), path);
    const found = new Set(merged.map(identityOf));
    for (const item of [...server, ...local]) {
      assert.ok(found.has(identityOf(item)), `${path}: item ${canon(item)}`);
    }
    for (const serverItem of server) {
      const id = idOf(serverItem);
      if (id === undefined) continue;
      const first = (list: JsonValue[]) => list.find((i) => idOf(i) === id);
      if (first(server) !== serverItem) continue;
      checkTwoWay(serverItem, first(local), first(merged), `${path}[${id}]`);
    }
  } else if (isPlainObject(local)) {
    assert.ok(isPlainObject(merged), path);
    const serverObject = isPlainObject(server) ? server : {};
    for (const key of keysOf(serverObject, local, merged)) {
      checkTwoWay(
        own(serverObject, key),
        own(local, key),
        own(merged, key),
        `${path}.${key}`,
      );
    }
  } else {
    assert.ok(same(merged, local), `${path}: the local value`);
  }
}

protoTest(
  "autoPreserveMerge() without a base or changedFields: non-null local values win at every depth, lists union, the server's other values stay",
  () => {
    fc.assert(
      fc.property(
        twoWayRecordArb,
        twoWayRecordArb,
        function check(local, server): void {
          const { data } = autoPreserveMerge({ local, server });
          for (const key of keysOf(local, server, data)) {
            if (SYSTEM.has(key)) {
              assert.ok(same(own(data, key), own(server, key)), key);
            } else {
              checkTwoWay(
                own(server, key),
                own(local, key),
                own(data, key),
                key,
              );
            }
          }
        },
      ),
      { seed, numRuns },
    );
  },
);

protoTest(
  "autoPreserveMerge() with a base and no changedFields merges as with changedFields = diffFields(base, local)",
  () => {
    fc.assert(
      fc.property(scenarioArb, function check({ base, local, server }): void {
        const derived = autoPreserveMerge({ local, server, base });
        const declared = autoPreserveMerge({
          local,
          server,
          base,
          changedFields: diffFields(base, local),
        });
        assert.equal(canon(derived.data), canon(declared.data));
        assert.deepEqual(derived.localFields, declared.localFields);
        assert.deepEqual(derived.serverFields, declared.serverFields);
        assert.deepEqual(derived.conflictingFields, declared.conflictingFields);
      }),
      { seed, numRuns },
    );
  },
);

// --- Three-way list laws ---------------------------------------------------

const TAGS = ["a", "b", "c", "d", "e", "f"];
const tagListArb = fc.shuffledSubarray(TAGS);

protoTest(
  "autoPreserveMerge() merges tag lists: server list minus local removals plus local additions",
  () => {
    fc.assert(
      fc.property(
        tagListArb,
        tagListArb,
        tagListArb,
        function check(base, local, server): void {
          const result = autoPreserveMerge({
            base: { tags: base },
            local: { tags: local },
            server: { tags: server },
            changedFields: ["tags"],
          });
          const merged = result.data["tags"] as string[];
          const added = local.filter(function isAdded(tag): boolean {
            return !base.includes(tag);
          });
          const removed = base.filter(function isRemoved(tag): boolean {
            return !local.includes(tag);
          });
          // Items the client added are present.
          for (const tag of added) assert.ok(merged.includes(tag), tag);
          // Items the client removed from the base are absent.
          for (const tag of removed) assert.ok(!merged.includes(tag), tag);
          // Items only the server added are present.
          for (const tag of server) {
            if (!base.includes(tag)) assert.ok(merged.includes(tag), tag);
          }
          // Items the server removed and the client kept stay removed.
          for (const tag of base) {
            if (local.includes(tag) && !server.includes(tag)) {
              assert.ok(!merged.includes(tag), tag);
            }
          }
          assert.equal(new Set(merged).size, merged.length, "duplicates");
          assert.deepEqual(result.conflictingFields, []);
          if (same(server, base)) {
            // The server did not touch the list: the client's list wins whole.
            assert.deepEqual(merged, local);
          } else {
            // Server order first, then additions in the client's order.
            const expected = server.filter(function kept(tag): boolean {
              return !removed.includes(tag);
            });
            for (const tag of added) {
              if (!expected.includes(tag)) expected.push(tag);
            }
            assert.deepEqual(merged, expected);
          }
        },
      ),
      { seed, numRuns },
    );
  },
);

protoTest("autoPreserveMerge() unions tag lists without a base", () => {
  fc.assert(
    fc.property(tagListArb, tagListArb, function check(local, server): void {
      const { data } = autoPreserveMerge({
        local: { tags: local },
        server: { tags: server },
        changedFields: ["tags"],
      });
      const expected = [...server];
      for (const tag of local) if (!expected.includes(tag)) expected.push(tag);
      assert.deepEqual(data["tags"], expected);
    }),
    { seed, numRuns },
  );
});

interface Item {
  id: number;
  v: string;
}

const itemListArb: fc.Arbitrary<Item[]> = fc.uniqueArray(
  fc.record({
    id: fc.integer({ min: 0, max: 5 }),
    v: fc.constantFrom("x", "y", "z"),
  }),
  {
    maxLength: 6,
    selector: function byId(item): number {
      return item.id;
    },
  },
);

/** Compares by canonical JSON: fast-check may make null-prototype records. */
function assertSame(actual: unknown, expected: unknown, message: string): void {
  assert.equal(
    canon(actual as JsonValue),
    canon(expected as JsonValue),
    message,
  );
}

function byId(list: readonly Item[], id: number): Item | undefined {
  return list.find(function match(item): boolean {
    return item.id === id;
  });
}

protoTest("autoPreserveMerge() merges lists of items by id three-way", () => {
  fc.assert(
    fc.property(
      itemListArb,
      itemListArb,
      itemListArb,
      function check(base, local, server): void {
        const result = autoPreserveMerge({
          base: { items: base as unknown as JsonValue },
          local: { items: local as unknown as JsonValue },
          server: { items: server as unknown as JsonValue },
          changedFields: ["items"],
        });
        const merged = result.data["items"] as unknown as Item[];
        const ids = merged.map(function idOf(item): number {
          return item.id;
        });
        assert.equal(new Set(ids).size, ids.length, "duplicate ids");
        if (same(server as never, base as never)) {
          assertSame(merged, local, "server unchanged");
          return;
        }
        let conflict = false;
        for (let id = 0; id <= 5; id++) {
          const b = byId(base, id);
          const l = byId(local, id);
          const s = byId(server, id);
          const got = byId(merged, id);
          const localChanged = !same(l as never, b as never);
          const serverChanged = !same(s as never, b as never);
          if (localChanged && serverChanged && !same(l as never, s as never)) {
            conflict = true;
          }
          if (b !== undefined && l === undefined) {
            // The client removed it: absent whatever the server did.
            assertSame(got, undefined, `removed ${id}`);
          } else if (l !== undefined && b === undefined) {
            // The client added it: present, the client's version.
            assertSame(got, l, `added ${id}`);
          } else if (s !== undefined && b === undefined) {
            // Only the server added it.
            assertSame(got, s, `server added ${id}`);
          } else if (b !== undefined && l !== undefined) {
            if (s === undefined) {
              // The server removed it: kept only if the client edited it.
              assertSame(got, localChanged ? l : undefined, `${id}`);
            } else {
              assertSame(got, localChanged ? l : s, `kept ${id}`);
            }
          } else {
            assertSame(got, undefined, `never existed ${id}`);
          }
        }
        assert.deepEqual(result.conflictingFields, conflict ? ["items"] : []);
      },
    ),
    { seed, numRuns },
  );
});

/** Tags and id-items, duplicates allowed: identity is the tag or the id. */
const mixedListArb: fc.Arbitrary<JsonValue[]> = fc.array(
  fc.oneof(
    fc.constantFrom<JsonValue>("a", "b", 1, null),
    fc.record({
      id: fc.integer({ min: 0, max: 2 }),
      v: fc.constantFrom("x", "y"),
    }) as fc.Arbitrary<JsonValue>,
  ),
  { maxLength: 6 },
);

function identity(item: JsonValue): string {
  if (isPlainObject(item) && typeof item["id"] === "number") {
    return `id:${item["id"]}`;
  }
  return canon(item);
}

function countBy(list: readonly JsonValue[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const item of list) {
    counts.set(identity(item), (counts.get(identity(item)) ?? 0) + 1);
  }
  return counts;
}

protoTest("autoPreserveMerge() introduces no duplicate list items", () => {
  fc.assert(
    fc.property(
      mixedListArb,
      mixedListArb,
      mixedListArb,
      fc.boolean(),
      function check(base, local, server, withBase): void {
        const { data } = autoPreserveMerge({
          base: withBase ? { list: base } : null,
          local: { list: local },
          server: { list: server },
          changedFields: ["list"],
        });
        const merged = data["list"] as JsonValue[];
        const serverCounts = countBy(server);
        const localCounts = countBy(local);
        // Each item appears at most as often as one side already had it;
        // when the lists are actually merged (the server changed its list,
        // or there is no base), a local item adds at most one copy.
        const merging = !withBase || !same(server, base);
        for (const [key, count] of countBy(merged)) {
          const fromServer = serverCounts.get(key) ?? 0;
          const fromLocal = localCounts.get(key) ?? 0;
          const allowed = merging
            ? Math.max(fromServer, Math.min(fromLocal, 1))
            : Math.max(fromServer, fromLocal);
          assert.ok(count <= allowed, `${key} appears ${count} times`);
        }
      },
    ),
    { seed, numRuns },
  );
});

// --- deepEqual, diffFields ------------------------------------------------

protoTest("deepEqual() agrees with canonical JSON", () => {
  fc.assert(
    fc.property(nastyValueArb, nastyValueArb, function check(a, b): void {
      assert.equal(deepEqual(a, b), canon(a) === canon(b));
      assert.equal(deepEqual(a, parsedCopy(a)), true);
    }),
    { seed, numRuns },
  );
});

function parsedCopy(value: JsonValue): JsonValue {
  return JSON.parse(JSON.stringify(value));
}

protoTest("diffFields() lists exactly the top-level fields that differ", () => {
  fc.assert(
    fc.property(scenarioArb, function check({ base, local }): void {
      assert.deepEqual(
        diffFields(base, local),
        changedKeys(base, local).sort(),
      );
      assert.deepEqual(diffFields(local, local), []);
      assert.deepEqual(diffFields(null, local), keysOf(local).sort());
    }),
    { seed, numRuns },
  );
});

// --- Prototype safety and purity ------------------------------------------

protoTest(
  "clause 16: merging untrusted keys never changes Object.prototype or the inputs",
  () => {
    const prototypeNames = Object.getOwnPropertyNames(Object.prototype).sort()
      .join();
    fc.assert(
      fc.property(
        scenarioArb,
        recordArb,
        changedFieldsArb,
        function check({ base, local, server }, other, changedFields): void {
          const inputs = [base, local, server, other];
          const before = snapshot(inputs);
          const results: JsonValue[] = [];
          for (const withBase of [true, false]) {
            const result = autoPreserveMerge({
              local,
              server,
              base: withBase ? base : null,
              changedFields,
            });
            results.push(result.data);
          }
          diffFields(base, local);
          deepEqual(local, server);

          assert.equal(
            Object.getOwnPropertyNames(Object.prototype).sort().join(),
            prototypeNames,
          );
          assert.equal(({} as Record<string, unknown>)["polluted"], undefined);
          assert.equal(snapshot(inputs), before, "inputs were mutated");
          for (const result of results) assertPlain(result);
          // Results share nothing with the inputs.
          for (const result of results) mutateEverywhere(result);
          assert.equal(snapshot(inputs), before, "results share structure");
        },
      ),
      { seed, numRuns },
    );
  },
);
