/**
 * The `autoPreserveMerge` vectors (ENGINE.md clauses 2, 14 and 16): inputs
 * and the exact expected result, key order included, with the fields each
 * side contributed and the conflicts reported.
 *
 * Sources: the original Dart library, offline_first_sync_drift (its
 * `ConflictUtils.preservingMerge` unit tests, the merge tests of its engine
 * suite and its scenario suite; test names quoted), and the rules of
 * clause 14 with neither a base nor changedFields, with a base only, and
 * with changedFields.
 *
 * Decided here: in a list merged without a base or changedFields, an item
 * whose `id` both lists hold is one item, in the server's position, merged
 * field by field by the same rule (local non-null values win, recursively).
 *
 * @module
 */

import type { JsonObject } from "../src/json.ts";

/** One vector: what goes in and exactly what comes out. */
export interface MergeVector {
  /** What the vector shows: the test name. */
  readonly name: string;
  /** Where the case comes from. */
  readonly source: "dart" | "clause 2" | "clause 14" | "clause 16";
  readonly local: JsonObject;
  readonly server: JsonObject;
  /** Absent: not passed. */
  readonly base?: JsonObject | null;
  /** Absent: not passed. */
  readonly changedFields?: readonly string[] | null;
  /** The merged record, in the expected key order. */
  readonly expected: JsonObject;
  readonly localFields: readonly string[];
  readonly serverFields: readonly string[];
  readonly conflicts: readonly string[];
}

/** Parses JSON so that `"__proto__"` becomes an own key, as on the wire. */
function json(text: string): JsonObject {
  return JSON.parse(text);
}

const DART: MergeVector[] = [
  {
    name: "merges non-conflicting fields",
    source: "dart",
    local: { name: "Local Name", mood: 5 },
    server: { name: "Server Name", energy: 7 },
    expected: { name: "Local Name", energy: 7, mood: 5 },
    localFields: ["mood", "name"],
    serverFields: ["energy"],
    conflicts: [],
  },
  {
    name: "keeps local changes when server has null",
    source: "dart",
    local: { notes: "My notes" },
    server: { notes: null, mood: 5 },
    expected: { notes: "My notes", mood: 5 },
    localFields: ["notes"],
    serverFields: ["mood"],
    conflicts: [],
  },
  {
    name: "keeps server value when local is null",
    source: "dart",
    local: { notes: null },
    server: { notes: "Server notes" },
    expected: { notes: "Server notes" },
    localFields: [],
    serverFields: ["notes"],
    conflicts: [],
  },
  {
    name: "both null values are skipped",
    source: "dart",
    local: { nullField: null },
    server: { nullField: null },
    expected: { nullField: null },
    localFields: [],
    serverFields: [],
    conflicts: [],
  },
  {
    name: "unions lists correctly",
    source: "dart",
    local: { tags: ["a", "b", "c"] },
    server: { tags: ["b", "d"] },
    expected: { tags: ["b", "d", "a", "c"] },
    localFields: ["tags"],
    serverFields: [],
    conflicts: [],
  },
  {
    name: "unions lists of objects by id",
    source: "dart",
    local: {
      items: [{ id: "1", name: "Local 1" }, { id: "3", name: "Local 3" }],
    },
    server: {
      items: [{ id: "1", name: "Server 1" }, { id: "2", name: "Server 2" }],
    },
    expected: {
      items: [
        { id: "1", name: "Local 1" },
        { id: "2", name: "Server 2" },
        { id: "3", name: "Local 3" },
      ],
    },
    localFields: ["items"],
    serverFields: [],
    conflicts: [],
  },
  {
    name: "respects changedFields",
    source: "dart",
    local: { name: "Local", mood: 10, notes: "Local notes" },
    server: { name: "Server", mood: 5, notes: "Server notes" },
    changedFields: ["mood"],
    expected: { name: "Server", mood: 10, notes: "Server notes" },
    localFields: ["mood"],
    serverFields: ["name", "notes"],
    conflicts: [],
  },
  {
    name: "empty changedFields means no local fields applied",
    source: "dart",
    local: { title: "Local", desc: "Local Desc" },
    server: { title: "Server", desc: "Server Desc" },
    changedFields: [],
    expected: { title: "Server", desc: "Server Desc" },
    localFields: [],
    serverFields: ["desc", "title"],
    conflicts: [],
  },
  {
    name: "null changedFields means all local fields applied",
    source: "dart",
    local: { title: "Local", desc: "Local Desc" },
    server: { title: "Server", desc: "Server Desc" },
    changedFields: null,
    expected: { title: "Local", desc: "Local Desc" },
    localFields: ["desc", "title"],
    serverFields: [],
    conflicts: [],
  },
  {
    name: "does not lose server data",
    source: "dart",
    local: { mood: 5 },
    server: { mood: 3, energy: 7, notes: "Server notes" },
    expected: { mood: 5, energy: 7, notes: "Server notes" },
    localFields: ["mood"],
    serverFields: ["energy", "notes"],
    conflicts: [],
  },
  {
    name: "handles nested objects",
    source: "dart",
    local: { settings: { theme: "dark", fontSize: 14 } },
    server: { settings: { theme: "light", language: "en" } },
    expected: { settings: { theme: "dark", language: "en", fontSize: 14 } },
    localFields: ["settings"],
    serverFields: [],
    conflicts: [],
  },
  {
    name: "preserves system fields from server",
    source: "dart",
    local: { id: "local-id", updatedAt: "2024-01-01T00:00:00Z", name: "Local" },
    server: {
      id: "server-id",
      updatedAt: "2024-01-02T00:00:00Z",
      name: "Server",
    },
    expected: {
      id: "server-id",
      updatedAt: "2024-01-02T00:00:00Z",
      name: "Local",
    },
    localFields: ["name"],
    serverFields: [],
    conflicts: [],
  },
  {
    name: "merges lists using preservingMerge (engine suite)",
    source: "dart",
    local: { id: "entity-1", name: "Client", tags: ["tag1", "tag2", "tag5"] },
    server: {
      id: "entity-1",
      name: "Original",
      tags: ["tag2", "tag3", "tag4"],
      updated_at: "2024-01-01T12:00:00.010Z",
    },
    expected: {
      id: "entity-1",
      name: "Client",
      tags: ["tag2", "tag3", "tag4", "tag1", "tag5"],
      updated_at: "2024-01-01T12:00:00.010Z",
    },
    localFields: ["name", "tags"],
    serverFields: [],
    conflicts: [],
  },
  {
    name: "deep merges nested objects with preservingMerge (engine suite)",
    source: "dart",
    local: {
      id: "entity-1",
      name: "Client",
      settings: {
        ui: { fontSize: 14, darkMode: true },
        features: ["feature1", "feature3"],
      },
    },
    server: {
      id: "entity-1",
      name: "Original",
      settings: {
        ui: { fontSize: 16, theme: "light" },
        features: ["feature1", "feature2"],
      },
    },
    expected: {
      id: "entity-1",
      name: "Client",
      settings: {
        ui: { fontSize: 14, theme: "light", darkMode: true },
        features: ["feature1", "feature2", "feature3"],
      },
    },
    localFields: ["name", "settings"],
    serverFields: [],
    conflicts: [],
  },
  {
    name: "a cleared field stays cleared, the server's change is kept (K1-2)",
    source: "dart",
    base: { id: "t", title: "a", description: "d", priority: 3 },
    local: { id: "t", title: "a", description: null, priority: 3 },
    server: { id: "t", title: "a", description: "d", priority: 1 },
    changedFields: ["description"],
    expected: { id: "t", title: "a", description: null, priority: 1 },
    localFields: ["description"],
    serverFields: ["priority"],
    conflicts: [],
  },
  {
    name: "id-less list items equal by value do not duplicate (K1-3)",
    source: "dart",
    local: json(
      '{"id": "todo-1", "checklist": [{"text": "milk", "done": false}]}',
    ),
    server: json(
      '{"id": "todo-1", "checklist": [{"done": false, "text": "milk"}]}',
    ),
    changedFields: ["checklist"],
    expected: { id: "todo-1", checklist: [{ done: false, text: "milk" }] },
    localFields: [],
    serverFields: [],
    conflicts: [],
  },
];

/** Neither a base nor changedFields: the original library's rule. */
const NEITHER: MergeVector[] = [
  {
    name: "a null local value does not win, at any depth",
    source: "clause 14",
    local: { note: null, ui: { theme: null, size: 3 } },
    server: { note: "s", ui: { theme: "light", size: 2 } },
    expected: { note: "s", ui: { theme: "light", size: 3 } },
    localFields: ["ui"],
    serverFields: ["note"],
    conflicts: [],
  },
  {
    name: "a null local value the server lacks is dropped, at any depth",
    source: "clause 14",
    local: { gone: null, ui: { x: null, y: 1 }, list: [null] },
    server: { ui: {} },
    expected: { ui: { y: 1 }, list: [null] },
    localFields: ["list", "ui"],
    serverFields: ["gone"],
    conflicts: [],
  },
  {
    name: "falsy non-null local values win",
    source: "clause 14",
    local: { s: "", n: 0, b: false },
    server: { s: "x", n: 1, b: true },
    expected: { s: "", n: 0, b: false },
    localFields: ["b", "n", "s"],
    serverFields: [],
    conflicts: [],
  },
  {
    name:
      "lists of objects with id: server items first, same id merged field-wise, local additions appended",
    source: "clause 14",
    local: {
      items: [
        { id: "c", title: "C" },
        { id: "b", title: "B local", done: null, tags: ["x"] },
      ],
    },
    server: {
      items: [
        { id: "a", title: "A" },
        { id: "b", title: "B", done: true, note: "n", tags: ["y"] },
      ],
    },
    expected: {
      items: [
        { id: "a", title: "A" },
        { id: "b", title: "B local", done: true, note: "n", tags: ["y", "x"] },
        { id: "c", title: "C" },
      ],
    },
    localFields: ["items"],
    serverFields: [],
    conflicts: [],
  },
  {
    name:
      "lists with duplicate ids: the first of each side meet, the server's own duplicates stay",
    source: "clause 14",
    local: { items: [{ id: 1, v: "l1" }, { id: 1, v: "l2" }, { id: 2 }] },
    server: { items: [{ id: 1, v: "s1", w: 0 }, { id: 1, v: "s2" }] },
    expected: {
      items: [{ id: 1, v: "l1", w: 0 }, { id: 1, v: "s2" }, { id: 2 }],
    },
    localFields: ["items"],
    serverFields: [],
    conflicts: [],
  },
  {
    name: 'ids 1 and "1" are different items',
    source: "clause 14",
    local: { items: [{ id: "1", v: "l" }], tags: ["1"] },
    server: { items: [{ id: 1, v: "s" }], tags: [1] },
    expected: {
      items: [{ id: 1, v: "s" }, { id: "1", v: "l" }],
      tags: [1, "1"],
    },
    localFields: ["items", "tags"],
    serverFields: [],
    conflicts: [],
  },
  {
    name:
      "lists of scalars: the server's list, then each local item it lacks once (null and booleans are items)",
    source: "clause 14",
    local: { tags: [3, "a", 1, null, true, 3, "a"] },
    server: { tags: [1, 2, "a", 1] },
    expected: { tags: [1, 2, "a", 1, 3, null, true] },
    localFields: ["tags"],
    serverFields: [],
    conflicts: [],
  },
  {
    name: "id-less objects in lists are one item when deeply equal",
    source: "clause 14",
    local: { rows: [{ a: [1, { b: 2 }] }, { a: [1] }] },
    server: { rows: [{ a: [1, { b: 2 }] }, { a: 2 }] },
    expected: { rows: [{ a: [1, { b: 2 }] }, { a: 2 }, { a: [1] }] },
    localFields: ["rows"],
    serverFields: [],
    conflicts: [],
  },
  {
    name: "nested objects three levels deep merge recursively",
    source: "clause 14",
    local: {
      level1: {
        level2: { level3: { value: "local", shared: "L", gone: null } },
      },
    },
    server: {
      level1: {
        level2: { level3: { other: "server", shared: "S", gone: "S" } },
        side: 1,
      },
    },
    expected: {
      level1: {
        level2: {
          level3: { other: "server", shared: "L", gone: "S", value: "local" },
        },
        side: 1,
      },
    },
    localFields: ["level1"],
    serverFields: [],
    conflicts: [],
  },
  {
    name: "lists inside nested objects union, items with id merge inside them",
    source: "clause 14",
    local: {
      a: {
        b: {
          tags: ["x", "z"],
          rows: [{ id: 7, n: null, m: 1 }, { id: 9 }],
        },
      },
    },
    server: {
      a: {
        b: { tags: ["y", "x"], rows: [{ id: 7, n: 2, m: 0, k: true }] },
        c: [],
      },
    },
    expected: {
      a: {
        b: {
          tags: ["y", "x", "z"],
          rows: [{ id: 7, n: 2, m: 1, k: true }, { id: 9 }],
        },
        c: [],
      },
    },
    localFields: ["a"],
    serverFields: [],
    conflicts: [],
  },
  {
    name: "a type change lets the non-null local value win",
    source: "clause 14",
    local: {
      listVsObject: [1],
      objectVsScalar: { a: 1, b: null },
      objectVsList: { a: 1 },
      scalarVsObject: "s",
      scalarVsList: 0,
      listVsNull: ["x"],
      nested: { v: [2] },
    },
    server: {
      listVsObject: { a: 1 },
      objectVsScalar: 5,
      objectVsList: [1],
      scalarVsObject: { a: 1 },
      scalarVsList: [0],
      listVsNull: null,
      nested: { v: { w: 1 } },
    },
    expected: {
      listVsObject: [1],
      objectVsScalar: { a: 1 },
      objectVsList: { a: 1 },
      scalarVsObject: "s",
      scalarVsList: 0,
      listVsNull: ["x"],
      nested: { v: [2] },
    },
    localFields: [
      "listVsNull",
      "listVsObject",
      "nested",
      "objectVsList",
      "objectVsScalar",
      "scalarVsList",
      "scalarVsObject",
    ],
    serverFields: [],
    conflicts: [],
  },
  {
    name:
      "an empty local list removes nothing; an empty server list adds nothing",
    source: "clause 14",
    local: { a: [], b: ["x"], c: [], d: {} },
    server: { a: ["x"], b: [], c: [], d: { k: [] } },
    expected: { a: ["x"], b: ["x"], c: [], d: { k: [] } },
    localFields: ["b"],
    serverFields: ["a", "d"],
    conflicts: [],
  },
  {
    name: "system fields come from the server in both spellings",
    source: "clause 14",
    local: {
      id: "L",
      updated_at: "L",
      updatedAt: "L",
      created_at: "L",
      createdAt: "L",
      deleted_at: "L",
      deletedAt: "L",
      title: "L",
      meta: { updated_at: "L", id: "L" },
    },
    server: {
      id: "S",
      updated_at: "S",
      updatedAt: "S",
      created_at: "S",
      createdAt: "S",
      deleted_at: null,
      title: "S",
      meta: { updated_at: "S", id: "S" },
    },
    // Only the record's own (top-level) fields are system fields: inside
    // `meta` they are the user's data.
    expected: {
      id: "S",
      updated_at: "S",
      updatedAt: "S",
      created_at: "S",
      createdAt: "S",
      deleted_at: null,
      title: "L",
      meta: { updated_at: "L", id: "L" },
    },
    localFields: ["meta", "title"],
    serverFields: [],
    conflicts: [],
  },
  {
    name: "the server's key order first, then local-only keys in local order",
    source: "clause 14",
    local: { z: 1, n: { q: 1, b: 2 }, new2: 2, new1: 1 },
    server: { b: 0, n: { b: 0, a: 0 }, z: 0 },
    expected: { b: 0, n: { b: 2, a: 0, q: 1 }, z: 1, new2: 2, new1: 1 },
    localFields: ["n", "new1", "new2", "z"],
    serverFields: ["b"],
    conflicts: [],
  },
];

/** A base, no changedFields: the changes are the diff base → local. */
const BASE_ONLY: MergeVector[] = [
  {
    name:
      "with a base, changes are read off it: three-way lists, a field both changed reported",
    source: "clause 2",
    base: {
      title: "a",
      tags: ["x", "y"],
      n: 1,
      ui: { theme: "light", size: 1 },
    },
    local: {
      title: "mine",
      tags: ["x", "z"],
      n: 1,
      ui: { theme: "dark", size: 1 },
    },
    server: {
      title: "theirs",
      tags: ["x", "y", "w"],
      n: 2,
      ui: { theme: "light", size: 2 },
    },
    expected: {
      title: "mine",
      tags: ["x", "w", "z"],
      n: 2,
      ui: { theme: "dark", size: 2 },
    },
    localFields: ["tags", "title", "ui"],
    serverFields: ["n"],
    conflicts: ["title"],
  },
  {
    name: "with a base, a nested field both changed is reported by its path",
    source: "clause 2",
    base: { ui: { theme: "light", size: 1 } },
    local: { ui: { theme: "dark", size: 1 } },
    server: { ui: { theme: "blue", size: 2 } },
    expected: { ui: { theme: "dark", size: 2 } },
    localFields: ["ui"],
    serverFields: [],
    conflicts: ["ui.theme"],
  },
  {
    name:
      "with a base, the server's list stays when the client did not change it",
    source: "clause 2",
    base: { id: "e", name: "Original", tags: ["tag1", "tag2"] },
    local: { id: "e", name: "Client", tags: ["tag1", "tag2"] },
    server: { id: "e", name: "Original", tags: ["tag2", "tag3"] },
    expected: { id: "e", name: "Client", tags: ["tag2", "tag3"] },
    localFields: ["name"],
    serverFields: ["tags"],
    conflicts: [],
  },
  {
    name:
      "with a base, a list item the server removed stays removed (unlike the union)",
    source: "clause 2",
    base: { id: "e", name: "Original", tags: ["tag1", "tag2"] },
    local: { id: "e", name: "Client", tags: ["tag1", "tag2", "tag5"] },
    server: { id: "e", name: "Original", tags: ["tag2", "tag3", "tag4"] },
    expected: {
      id: "e",
      name: "Client",
      tags: ["tag2", "tag3", "tag4", "tag5"],
    },
    localFields: ["name", "tags"],
    serverFields: [],
    conflicts: [],
  },
  {
    name: "with a base, a null the client set wins and a removed field goes",
    source: "clause 2",
    base: { note: "b", gone: 1, keep: 1 },
    local: { note: null, keep: 1 },
    server: { note: "b", gone: 1, keep: 1, extra: "s" },
    expected: { note: null, keep: 1, extra: "s" },
    localFields: ["gone", "note"],
    serverFields: ["extra"],
    conflicts: [],
  },
  {
    name:
      "with a base, a null set against a server edit is a reported conflict",
    source: "clause 2",
    base: { note: "b" },
    local: { note: null },
    server: { note: "s" },
    expected: { note: null },
    localFields: ["note"],
    serverFields: [],
    conflicts: ["note"],
  },
  {
    name: "with a base and no local change, the server record is the result",
    source: "clause 2",
    base: { id: "1", a: 1, tags: ["x"] },
    local: { id: "1", a: 1, tags: ["x"] },
    server: { id: "1", a: 2, tags: [] },
    expected: { id: "1", a: 2, tags: [] },
    localFields: [],
    serverFields: ["a", "tags"],
    conflicts: [],
  },
  {
    name:
      "with a base, the original library's inputs follow the three-way rules",
    source: "clause 2",
    base: { name: "base", mood: "base" },
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
    expected: {
      name: "L",
      mood: null,
      energy: 2,
      count: 0,
      updated_at: "S",
      extra: "x",
      blank: null,
    },
    localFields: ["blank", "count", "extra", "mood", "name"],
    serverFields: [],
    conflicts: ["count", "mood", "name"],
  },
  {
    name: "with a base, system fields still come from the server",
    source: "clause 2",
    base: { id: "1", updatedAt: "B", deleted_at: null, t: "b" },
    local: { id: "1", updatedAt: "L", deleted_at: "L", t: "l" },
    server: { id: "1", updatedAt: "S", deleted_at: null, t: "b" },
    expected: { id: "1", updatedAt: "S", deleted_at: null, t: "l" },
    localFields: ["t"],
    serverFields: [],
    conflicts: [],
  },
];

/** changedFields known: today's behaviour, pinned next to the new rule. */
const CHANGED: MergeVector[] = [
  {
    name: "with changedFields, an explicit null wins",
    source: "clause 14",
    local: { note: null, other: null },
    server: { note: "s", other: "s" },
    changedFields: ["note"],
    expected: { note: null, other: "s" },
    localFields: ["note"],
    serverFields: ["other"],
    conflicts: [],
  },
  {
    name: "with changedFields and no base, a nested null wins too",
    source: "clause 14",
    local: { ui: { theme: null } },
    server: { ui: { theme: "light", size: 2 } },
    changedFields: ["ui"],
    expected: { ui: { theme: null, size: 2 } },
    localFields: ["ui"],
    serverFields: [],
    conflicts: [],
  },
  {
    name:
      "with changedFields and no base, an item whose id both lists hold is the client's item",
    source: "clause 14",
    local: { items: [{ id: "b", title: "B local", done: null }] },
    server: { items: [{ id: "a" }, { id: "b", title: "B", note: "n" }] },
    changedFields: ["items"],
    expected: {
      items: [{ id: "a" }, { id: "b", title: "B local", done: null }],
    },
    localFields: ["items"],
    serverFields: [],
    conflicts: [],
  },
];

/** Clause 16: prototype keys are data, at every depth and in every mode. */
const PROTOTYPE_KEYS: MergeVector[] = [
  {
    name: "__proto__, constructor and prototype merge as data without a base",
    source: "clause 16",
    local: json(
      '{"__proto__": {"polluted": true, "a": 2}, "constructor": {"prototype": {"polluted": true}}, "prototype": [1], "toString": null}',
    ),
    server: json(
      '{"__proto__": {"a": 1, "b": 3}, "constructor": 1, "prototype": [2], "toString": "s"}',
    ),
    expected: json(
      '{"__proto__": {"a": 2, "b": 3, "polluted": true}, "constructor": {"prototype": {"polluted": true}}, "prototype": [2, 1], "toString": "s"}',
    ),
    localFields: ["__proto__", "constructor", "prototype"],
    serverFields: ["toString"],
    conflicts: [],
  },
  {
    name: "prototype keys inside list items and local-only objects stay data",
    source: "clause 16",
    local: json(
      '{"items": [{"id": 1, "__proto__": {"x": 1}, "constructor": null}], "fresh": {"__proto__": {"polluted": true}, "prototype": {"polluted": true}}}',
    ),
    server: json(
      '{"items": [{"id": 1, "__proto__": {"y": 2}, "constructor": "c"}]}',
    ),
    expected: json(
      '{"items": [{"id": 1, "__proto__": {"y": 2, "x": 1}, "constructor": "c"}], "fresh": {"__proto__": {"polluted": true}, "prototype": {"polluted": true}}}',
    ),
    localFields: ["fresh", "items"],
    serverFields: [],
    conflicts: [],
  },
  {
    name: "prototype keys are diffed against the base like any field",
    source: "clause 16",
    base: json('{"__proto__": {"a": 1}, "constructor": 1}'),
    local: json('{"__proto__": {"a": 2}, "constructor": 1}'),
    server: json('{"__proto__": {"a": 3}, "constructor": 2}'),
    expected: json('{"__proto__": {"a": 2}, "constructor": 2}'),
    localFields: ["__proto__"],
    serverFields: ["constructor"],
    conflicts: ["__proto__.a"],
  },
];

/** Every vector, grouped by rule. */
export const MERGE_VECTORS: readonly MergeVector[] = [
  ...DART,
  ...NEITHER,
  ...BASE_ONLY,
  ...CHANGED,
  ...PROTOTYPE_KEYS,
];
