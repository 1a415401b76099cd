import assert from "node:assert/strict";
import {
  autoPreserveMerge,
  deepEqual,
  DEFAULT_SYSTEM_FIELDS,
  diffFields,
} from "../src/merge.ts";
import type { JsonObject, JsonValue } from "../src/json.ts";
import { protoTest } from "./_proto.ts";

interface Fixture {
  name: string;
  local: JsonObject;
  server: JsonObject;
  base?: JsonObject | null;
  changedFields?: string[] | null;
  systemFields?: string[];
  data: JsonObject;
  localFields: string[];
  serverFields: string[];
  conflictingFields: string[];
}

const FIXTURES: Fixture[] = [
  {
    name: "keeps server fields the client did not change",
    local: { id: "1", name: "Ann", mood: "happy", energy: 1 },
    server: { id: "1", name: "Anna", mood: "ok", energy: 5 },
    changedFields: ["mood"],
    data: { id: "1", name: "Anna", mood: "happy", energy: 5 },
    localFields: ["mood"],
    serverFields: ["energy", "name"],
    conflictingFields: [],
  },
  {
    name: "keeps both sides' changes to different fields without a conflict",
    base: { mood: "ok", energy: 3, notes: "" },
    local: { mood: "great", energy: 3, notes: "slept well" },
    server: { mood: "ok", energy: 5, notes: "" },
    changedFields: ["mood", "notes"],
    data: { mood: "great", energy: 5, notes: "slept well" },
    localFields: ["mood", "notes"],
    serverFields: ["energy"],
    conflictingFields: [],
  },
  {
    name: "clears a field the client set to null",
    base: { name: "Ann", note: "x" },
    local: { name: "Ann", note: null },
    server: { name: "Ann", note: "x" },
    changedFields: ["note"],
    data: { name: "Ann", note: null },
    localFields: ["note"],
    serverFields: [],
    conflictingFields: [],
  },
  {
    name: "lets the client's falsy values win",
    local: { count: 0, flag: false, text: "", none: null },
    server: { count: 5, flag: true, text: "s", none: 1 },
    changedFields: ["count", "flag", "text", "none"],
    data: { count: 0, flag: false, text: "", none: null },
    localFields: ["count", "flag", "none", "text"],
    serverFields: [],
    conflictingFields: [],
  },
  {
    name: "merges nested objects field by field",
    base: {
      settings: { theme: "light", ui: { fontSize: 12, density: "normal" } },
    },
    local: {
      settings: { theme: "light", ui: { fontSize: 14, density: "normal" } },
    },
    server: {
      settings: { theme: "dark", ui: { fontSize: 12, density: "normal" } },
    },
    changedFields: ["settings"],
    data: {
      settings: { theme: "dark", ui: { fontSize: 14, density: "normal" } },
    },
    localFields: ["settings"],
    serverFields: [],
    conflictingFields: [],
  },
  {
    name: "reports a nested field both sides changed as a dotted path",
    base: { settings: { theme: "light", ui: { fontSize: 12, lang: "en" } } },
    local: { settings: { theme: "dark", ui: { fontSize: 14, lang: "en" } } },
    server: { settings: { theme: "blue", ui: { fontSize: 16, lang: "de" } } },
    changedFields: ["settings"],
    data: { settings: { theme: "dark", ui: { fontSize: 14, lang: "de" } } },
    localFields: ["settings"],
    serverFields: [],
    conflictingFields: ["settings.theme", "settings.ui.fontSize"],
  },
  {
    name: "merges nested objects without a base, local sub-fields winning",
    local: { settings: { theme: "dark", ui: { fontSize: 14 } } },
    server: { settings: { theme: "light", lang: "en", ui: { density: 1 } } },
    changedFields: ["settings"],
    data: {
      settings: { theme: "dark", lang: "en", ui: { density: 1, fontSize: 14 } },
    },
    localFields: ["settings"],
    serverFields: [],
    conflictingFields: [],
  },
  {
    name: "merges tag lists three-way with a base",
    base: { tags: ["a", "b", "c"] },
    local: { tags: ["a", "c", "d"] },
    server: { tags: ["a", "b", "c", "e"] },
    changedFields: ["tags"],
    data: { tags: ["a", "c", "e", "d"] },
    localFields: ["tags"],
    serverFields: [],
    conflictingFields: [],
  },
  {
    name: "merges tag lists three-way without duplicating an item both added",
    base: { tags: ["a"] },
    local: { tags: ["a", "x", "y"] },
    server: { tags: ["y", "a"] },
    changedFields: ["tags"],
    data: { tags: ["y", "a", "x"] },
    localFields: ["tags"],
    serverFields: [],
    conflictingFields: [],
  },
  {
    name: "unions tag lists without a base",
    local: { tags: ["a", "b", "d", "d"] },
    server: { tags: ["a", "c", "b"] },
    changedFields: ["tags"],
    data: { tags: ["a", "c", "b", "d"] },
    localFields: ["tags"],
    serverFields: [],
    conflictingFields: [],
  },
  {
    name: "merges lists of objects with id three-way",
    base: {
      items: [
        { id: 1, t: "one" },
        { id: 2, t: "two" },
        { id: 3, t: "three" },
        { id: 4, t: "four" },
      ],
    },
    // Local: modified 1, removed 2, added 5.
    local: {
      items: [
        { id: 1, t: "ONE" },
        { id: 3, t: "three" },
        { id: 4, t: "four" },
        { id: 5, t: "five" },
      ],
    },
    // Server: modified 3, removed 4, added 6.
    server: {
      items: [
        { id: 1, t: "one" },
        { id: 2, t: "two" },
        { id: 3, t: "THREE" },
        { id: 6, t: "six" },
      ],
    },
    changedFields: ["items"],
    data: {
      items: [
        { id: 1, t: "ONE" },
        { id: 3, t: "THREE" },
        { id: 6, t: "six" },
        { id: 5, t: "five" },
      ],
    },
    localFields: ["items"],
    serverFields: [],
    conflictingFields: [],
  },
  {
    name: "takes the local version of an item both sides modified",
    base: { items: [{ id: "a", t: "base" }, { id: "b", t: "b" }] },
    local: { items: [{ id: "a", t: "local" }, { id: "b", t: "b" }] },
    server: { items: [{ id: "a", t: "server" }, { id: "b", t: "b" }] },
    changedFields: ["items"],
    data: { items: [{ id: "a", t: "local" }, { id: "b", t: "b" }] },
    localFields: ["items"],
    serverFields: [],
    conflictingFields: ["items"],
  },
  {
    name: "drops an item the client removed even though the server edited it",
    base: { items: [{ id: 1, t: "one" }, { id: 2, t: "two" }] },
    local: { items: [{ id: 2, t: "two" }] },
    server: { items: [{ id: 1, t: "ONE" }, { id: 2, t: "two" }] },
    changedFields: ["items"],
    data: { items: [{ id: 2, t: "two" }] },
    localFields: ["items"],
    serverFields: [],
    conflictingFields: ["items"],
  },
  {
    name: "keeps an item the client edited even though the server removed it",
    base: { items: [{ id: 1, t: "one" }, { id: 2, t: "two" }] },
    local: { items: [{ id: 1, t: "ONE" }, { id: 2, t: "two" }] },
    server: { items: [{ id: 2, t: "two" }, { id: 3, t: "three" }] },
    changedFields: ["items"],
    data: {
      items: [{ id: 2, t: "two" }, { id: 3, t: "three" }, { id: 1, t: "ONE" }],
    },
    localFields: ["items"],
    serverFields: [],
    conflictingFields: ["items"],
  },
  {
    name:
      "unions lists of objects with id without a base, local versions winning",
    local: { items: [{ id: 2, t: "L" }, { id: 3, t: "three" }] },
    server: { items: [{ id: 1, t: "one" }, { id: 2, t: "S" }] },
    changedFields: ["items"],
    data: {
      items: [{ id: 1, t: "one" }, { id: 2, t: "L" }, { id: 3, t: "three" }],
    },
    localFields: ["items"],
    serverFields: [],
    conflictingFields: [],
  },
  {
    name: "lets the client win a scalar both sides changed and reports it",
    base: { title: "a", body: "x" },
    local: { title: "mine", body: "x" },
    server: { title: "theirs", body: "y" },
    changedFields: ["title"],
    data: { title: "mine", body: "y" },
    localFields: ["title"],
    serverFields: ["body"],
    conflictingFields: ["title"],
  },
  {
    name: "does not report the same change made on both sides",
    base: { title: "a" },
    local: { title: "b" },
    server: { title: "b" },
    changedFields: ["title"],
    data: { title: "b" },
    localFields: [],
    serverFields: [],
    conflictingFields: [],
  },
  {
    name: "reports a field both sides added with different values",
    base: {},
    local: { x: 1 },
    server: { x: 2 },
    changedFields: ["x"],
    data: { x: 1 },
    localFields: ["x"],
    serverFields: [],
    conflictingFields: ["x"],
  },
  {
    name: "removes a field the client removed",
    base: { name: "Ann", nick: "x" },
    local: { name: "Ann" },
    server: { name: "Ann", nick: "x" },
    changedFields: ["nick"],
    data: { name: "Ann" },
    localFields: ["nick"],
    serverFields: [],
    conflictingFields: [],
  },
  {
    name: "removes a field the client removed and reports a server edit of it",
    base: { nick: "x" },
    local: {},
    server: { nick: "y" },
    changedFields: ["nick"],
    data: {},
    localFields: ["nick"],
    serverFields: [],
    conflictingFields: ["nick"],
  },
  {
    name: "restores a field the client changed and the server removed",
    base: { nick: "x" },
    local: { nick: "y" },
    server: {},
    changedFields: ["nick"],
    data: { nick: "y" },
    localFields: ["nick"],
    serverFields: [],
    conflictingFields: ["nick"],
  },
  {
    name: "keeps a server removal of a field the client did not change",
    base: { a: 1, gone: 1 },
    local: { a: 2, gone: 1 },
    server: { a: 1 },
    changedFields: ["a"],
    data: { a: 2 },
    localFields: ["a"],
    serverFields: ["gone"],
    conflictingFields: [],
  },
  {
    name: "takes system fields from the server",
    base: { id: "1", updated_at: "t0", title: "a" },
    local: { id: "1", updated_at: "local", createdAt: "c", title: "b" },
    server: { id: "1", updated_at: "t1", title: "a" },
    changedFields: ["id", "updated_at", "createdAt", "title"],
    data: { id: "1", updated_at: "t1", title: "b" },
    localFields: ["title"],
    serverFields: [],
    conflictingFields: [],
  },
  {
    name: "uses the given systemFields instead of the default list",
    local: { id: "2", version: 1, title: "b" },
    server: { id: "1", version: 2, title: "a" },
    changedFields: ["id", "version", "title"],
    systemFields: ["version"],
    data: { id: "2", version: 2, title: "b" },
    localFields: ["id", "title"],
    serverFields: [],
    conflictingFields: [],
  },
  {
    name: "applies every non-null local field when changedFields is unknown",
    // No base: with one, the changes are the diff base → local (clause 14;
    // see the vectors in merge_vectors_test.ts).
    base: null,
    local: {
      name: "L",
      mood: null,
      energy: 2,
      count: 0,
      extra: "x",
      blank: null,
      updated_at: "L",
    },
    server: { name: "S", mood: "ok", energy: 2, count: 1, updated_at: "S" },
    changedFields: null,
    data: {
      name: "L",
      mood: "ok",
      energy: 2,
      count: 0,
      updated_at: "S",
      extra: "x",
    },
    localFields: ["count", "extra", "name"],
    serverFields: ["blank", "mood"],
    conflictingFields: [],
  },
  {
    name: "keeps __proto__, constructor and prototype as data fields",
    base: JSON.parse('{"__proto__": {"a": 1}, "constructor": 1}'),
    local: JSON.parse(
      '{"__proto__": {"a": 2, "polluted": true}, "constructor": 2, "prototype": {"x": 1}}',
    ),
    server: JSON.parse('{"__proto__": {"a": 1, "b": 3}, "constructor": 1}'),
    changedFields: ["__proto__", "constructor", "prototype"],
    data: JSON.parse(
      '{"__proto__": {"a": 2, "b": 3, "polluted": true}, "constructor": 2, "prototype": {"x": 1}}',
    ),
    localFields: ["__proto__", "constructor", "prototype"],
    serverFields: [],
    conflictingFields: [],
  },
];

function snapshot(value: unknown): string {
  return JSON.stringify(value);
}

for (const fixture of FIXTURES) {
  protoTest(`autoPreserveMerge() ${fixture.name}`, () => {
    const before = snapshot([fixture.local, fixture.server, fixture.base]);
    const result = autoPreserveMerge({
      local: fixture.local,
      server: fixture.server,
      ...(fixture.base === undefined ? {} : { base: fixture.base }),
      ...(fixture.changedFields === undefined
        ? {}
        : { changedFields: fixture.changedFields }),
      ...(fixture.systemFields === undefined
        ? {}
        : { systemFields: fixture.systemFields }),
    });
    assert.deepEqual(result.data, fixture.data);
    assert.ok(deepEqual(result.data, fixture.data));
    assert.deepEqual(result.localFields, fixture.localFields);
    assert.deepEqual(result.serverFields, fixture.serverFields);
    assert.deepEqual(result.conflictingFields, fixture.conflictingFields);
    assert.equal(Object.getPrototypeOf(result.data), Object.prototype);
    assert.equal(
      snapshot([fixture.local, fixture.server, fixture.base]),
      before,
      "inputs were mutated",
    );
  });
}

protoTest(
  "autoPreserveMerge() keeps server key order, then new local keys",
  () => {
    const result = autoPreserveMerge({
      local: { z: 1, b: 2, new: 3 },
      server: { b: 1, a: 1, z: 1 },
      changedFields: ["b", "new"],
    });
    assert.deepEqual(Object.keys(result.data), ["b", "a", "z", "new"]);
  },
);

protoTest(
  "autoPreserveMerge() shares no objects or arrays with its inputs",
  () => {
    const local: JsonObject = { tags: ["a"], settings: { ui: { size: 1 } } };
    const server: JsonObject = { tags: ["b"], other: { deep: [1, { x: 1 }] } };
    const base: JsonObject = { tags: [] };
    const before = snapshot([local, server, base]);
    const { data } = autoPreserveMerge({
      local,
      server,
      base,
      changedFields: ["tags", "settings"],
    });
    mutateEverywhere(data);
    assert.equal(snapshot([local, server, base]), before);
  },
);

protoTest("autoPreserveMerge() without a base never reports a conflict", () => {
  const result = autoPreserveMerge({
    local: { title: "mine" },
    server: { title: "theirs" },
    base: null,
    changedFields: ["title"],
  });
  assert.deepEqual(result.data, { title: "mine" });
  assert.deepEqual(result.conflictingFields, []);
});

protoTest(
  "autoPreserveMerge() ignores a changed field absent on all sides",
  () => {
    const result = autoPreserveMerge({
      local: { a: 1 },
      server: { a: 1 },
      base: { a: 1 },
      changedFields: ["missing"],
    });
    assert.deepEqual(result, {
      data: { a: 1 },
      localFields: [],
      serverFields: [],
      conflictingFields: [],
    });
  },
);

protoTest("autoPreserveMerge() does not pollute Object.prototype", () => {
  const local = JSON.parse(
    '{"__proto__": {"polluted": "yes"}, "constructor": {"prototype": {"polluted": "yes"}}}',
  );
  autoPreserveMerge({ local, server: {}, changedFields: null });
  autoPreserveMerge({
    local,
    server: JSON.parse('{"__proto__": {"x": 1}}'),
    base: {},
    changedFields: ["__proto__", "constructor"],
  });
  autoPreserveMerge({
    local,
    server: JSON.parse('{"__proto__": {"x": 1}}'),
    changedFields: ["__proto__", "constructor"],
  });
  assert.equal(({} as Record<string, unknown>)["polluted"], undefined);
  assert.equal(Object.hasOwn(Object.prototype, "polluted"), false);
});

protoTest(
  "autoPreserveMerge() rejects non-object records with a TypeError",
  () => {
    assert.throws(
      () =>
        autoPreserveMerge({
          local: [] as unknown as JsonObject,
          server: {},
        }),
      { name: "TypeError", message: /'local' is not an object/ },
    );
    assert.throws(
      () =>
        autoPreserveMerge({
          local: {},
          server: null as unknown as JsonObject,
        }),
      { name: "TypeError", message: /'server' is not an object: .* null$/ },
    );
    assert.throws(
      () =>
        autoPreserveMerge({
          local: {},
          server: {},
          base: "x" as unknown as JsonObject,
        }),
      { name: "TypeError", message: /'base' is neither an object nor null/ },
    );
  },
);

protoTest(
  "DEFAULT_SYSTEM_FIELDS lists the id and timestamps in both spellings",
  () => {
    assert.deepEqual([...DEFAULT_SYSTEM_FIELDS].sort(), [
      "createdAt",
      "created_at",
      "deletedAt",
      "deleted_at",
      "id",
      "updatedAt",
      "updated_at",
    ]);
    assert.ok(Object.isFrozen(DEFAULT_SYSTEM_FIELDS));
  },
);

protoTest("deepEqual() tells falsy values apart", () => {
  const falsy: (JsonValue | undefined)[] = ["", 0, false, null, undefined];
  for (const [i, a] of falsy.entries()) {
    for (const [j, b] of falsy.entries()) {
      assert.equal(deepEqual(a, b), i === j, `${String(a)} vs ${String(b)}`);
    }
  }
});

protoTest("deepEqual() compares objects by key, arrays by position", () => {
  assert.equal(deepEqual({ a: 1, b: [1, 2] }, { b: [1, 2], a: 1 }), true);
  assert.equal(deepEqual([1, 2], [2, 1]), false);
  assert.equal(deepEqual([1], [1, 1]), false);
  assert.equal(deepEqual({ a: { b: null } }, { a: { b: null } }), true);
  assert.equal(deepEqual({ a: { b: null } }, { a: {} }), false);
  assert.equal(deepEqual({}, []), false);
  assert.equal(deepEqual({ 0: 1 }, [1]), false);
  assert.equal(deepEqual({ a: 1 }, { a: 1, b: 2 }), false);
  assert.equal(deepEqual({ a: 1, b: 2 }, { a: 1 }), false);
});

protoTest("deepEqual() treats a present-undefined property as absent", () => {
  const present = { a: 1, b: undefined } as unknown as JsonObject;
  assert.equal(deepEqual(present, { a: 1 }), true);
  assert.equal(deepEqual({ a: 1 }, present), true);
  assert.equal(deepEqual({ b: null }, { b: undefined } as never), false);
});

protoTest("deepEqual() compares __proto__ and constructor as own keys", () => {
  const a = JSON.parse('{"__proto__": {"x": 1}}');
  const b = JSON.parse('{"__proto__": {"x": 2}}');
  assert.equal(deepEqual(a, b), false);
  assert.equal(deepEqual(a, JSON.parse('{"__proto__": {"x": 1}}')), true);
  assert.equal(deepEqual(a, {}), false);
  assert.equal(deepEqual({}, JSON.parse('{"constructor": 1}')), false);
  assert.equal(deepEqual({ constructor: 1 }, {}), false);
});

protoTest("diffFields() lists every field when there is no base", () => {
  assert.deepEqual(diffFields(null, { b: 1, a: null, c: "" }), [
    "a",
    "b",
    "c",
  ]);
  assert.deepEqual(diffFields(null, {}), []);
});

protoTest(
  "diffFields() lists changed, added and removed fields, sorted",
  () => {
    const before: JsonObject = {
      same: { deep: [1, 2] },
      changed: { deep: [1, 2] },
      removed: "x",
      zero: 0,
    };
    const after: JsonObject = {
      same: { deep: [1, 2] },
      changed: { deep: [2, 1] },
      added: false,
      zero: 0,
    };
    assert.deepEqual(diffFields(before, after), [
      "added",
      "changed",
      "removed",
    ]);
  },
);

protoTest("diffFields() tells falsy values apart", () => {
  assert.deepEqual(
    diffFields({ a: "", b: 0, c: false, d: null }, {
      a: 0,
      b: false,
      c: null,
      d: "",
    }),
    ["a", "b", "c", "d"],
  );
  assert.deepEqual(diffFields({ a: null }, {}), ["a"]);
  assert.deepEqual(diffFields({}, { a: null }), ["a"]);
});

protoTest(
  "diffFields() returns nothing for an update that changes nothing",
  () => {
    assert.deepEqual(
      diffFields({ a: [1, { b: 2 }] }, { a: [1, { b: 2 }] }),
      [],
    );
  },
);

protoTest("diffFields() treats a present-undefined property as absent", () => {
  const withUndefined = { a: 1, b: undefined } as unknown as JsonObject;
  assert.deepEqual(diffFields({ a: 1 }, withUndefined), []);
  assert.deepEqual(diffFields(withUndefined, { a: 1 }), []);
  assert.deepEqual(diffFields({ a: 1, b: 2 }, withUndefined), ["b"]);
  assert.deepEqual(diffFields(null, withUndefined), ["a"]);
});

protoTest("diffFields() compares __proto__ as an own key", () => {
  assert.deepEqual(
    diffFields({}, JSON.parse('{"__proto__": {"x": 1}, "toString": 1}')),
    ["__proto__", "toString"],
  );
  assert.deepEqual(diffFields(JSON.parse('{"__proto__": 1}'), {}), [
    "__proto__",
  ]);
});

/** Writes a marker into every object and array of a result. */
function mutateEverywhere(value: JsonValue): void {
  if (typeof value !== "object" || value === null) return;
  if (Array.isArray(value)) {
    for (const item of value) mutateEverywhere(item);
    value.push("mutated");
    return;
  }
  for (const key of Object.keys(value)) mutateEverywhere(value[key]!);
  value["mutated"] = true;
}
