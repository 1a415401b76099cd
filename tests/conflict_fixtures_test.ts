/**
 * A fixture table per strategy: base, the server's version, the client's
 * version and its changed fields → the record both clients end with, and the
 * events the conflicting client emits. Each fixture runs end to end: the
 * server's version is written by a second client, the local one by the first
 * with its changed fields, and the first client's sync meets the conflict.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  type ConflictStrategy,
  type JsonObject,
  Resolutions,
  type SyncEngineOptions,
  type SyncEvent,
} from "../mod.ts";
import { createClient, startServer } from "./_harness.ts";

interface Fixture {
  readonly name: string;
  readonly strategy: ConflictStrategy;
  readonly engine?: Partial<SyncEngineOptions>;
  readonly base: JsonObject;
  readonly server: JsonObject;
  readonly local: JsonObject;
  readonly changedFields: readonly string[];
  readonly expected: JsonObject;
  /** The conflicting client's event types, in order (changes and pulls left out). */
  readonly events: readonly SyncEvent["type"][];
  /** For dataMerged: the fields reported. */
  readonly merged?: {
    local: string[];
    server: string[];
    conflicting: string[];
  };
}

const MERGED_EVENTS: SyncEvent["type"][] = [
  "conflictDetected",
  "dataMerged",
  "conflictResolved",
  "opPushed",
];

const FIXTURES: Fixture[] = [
  {
    name: "changedFields {mood} keeps the server's name and energy",
    strategy: "autoPreserve",
    base: { name: "Ada", mood: "ok", energy: 3 },
    server: { name: "Ada L.", mood: "ok", energy: 5 },
    local: { name: "Ada", mood: "great", energy: 3 },
    changedFields: ["mood"],
    expected: { name: "Ada L.", mood: "great", energy: 5 },
    events: MERGED_EVENTS,
    merged: { local: ["mood"], server: ["energy", "name"], conflicting: [] },
  },
  {
    name: "a local null in changedFields clears the field",
    strategy: "autoPreserve",
    base: { title: "t", note: "remember", done: false },
    server: { title: "t", note: "remember", done: true },
    local: { title: "t", note: null, done: false },
    changedFields: ["note"],
    expected: { title: "t", note: null, done: true },
    events: MERGED_EVENTS,
    merged: { local: ["note"], server: ["done"], conflicting: [] },
  },
  {
    name: "nested objects merge field by field",
    strategy: "autoPreserve",
    base: { settings: { theme: "light", ui: { fontSize: 12, dense: false } } },
    server: { settings: { theme: "dark", ui: { fontSize: 12, dense: false } } },
    local: { settings: { theme: "light", ui: { fontSize: 14, dense: false } } },
    changedFields: ["settings"],
    expected: {
      settings: { theme: "dark", ui: { fontSize: 14, dense: false } },
    },
    events: MERGED_EVENTS,
    merged: { local: ["settings"], server: [], conflicting: [] },
  },
  {
    name:
      "tag lists merge three-way: server list + local additions - local removals",
    strategy: "autoPreserve",
    base: { tags: ["a", "b", "c"] },
    server: { tags: ["a", "b", "c", "s"] },
    local: { tags: ["a", "c", "l"] },
    changedFields: ["tags"],
    expected: { tags: ["a", "c", "s", "l"] },
    events: MERGED_EVENTS,
    merged: { local: ["tags"], server: [], conflicting: [] },
  },
  {
    name: "lists of objects with id merge by id",
    strategy: "autoPreserve",
    base: { items: [{ id: 1, q: 1 }, { id: 2, q: 1 }] },
    server: { items: [{ id: 1, q: 1 }, { id: 2, q: 5 }, { id: 3, q: 1 }] },
    local: { items: [{ id: 1, q: 2 }, { id: 2, q: 1 }, { id: 4, q: 1 }] },
    changedFields: ["items"],
    expected: {
      items: [{ id: 1, q: 2 }, { id: 2, q: 5 }, { id: 3, q: 1 }, {
        id: 4,
        q: 1,
      }],
    },
    events: MERGED_EVENTS,
    merged: { local: ["items"], server: [], conflicting: [] },
  },
  {
    name: "a field both sides changed: local wins and is reported",
    strategy: "autoPreserve",
    base: { title: "t0", body: "b0" },
    server: { title: "server", body: "b0" },
    local: { title: "local", body: "b0" },
    changedFields: ["title"],
    expected: { title: "local", body: "b0" },
    events: MERGED_EVENTS,
    merged: { local: ["title"], server: [], conflicting: ["title"] },
  },
  {
    name: "serverWins takes the server's record",
    strategy: "serverWins",
    base: { title: "t0", body: "b0" },
    server: { title: "server", body: "b0" },
    local: { title: "t0", body: "local" },
    changedFields: ["body"],
    expected: { title: "server", body: "b0" },
    events: ["conflictDetected", "conflictResolved"],
  },
  {
    name: "clientWins forces the whole local record",
    strategy: "clientWins",
    base: { title: "t0", body: "b0" },
    server: { title: "server", body: "b0" },
    local: { title: "t0", body: "local" },
    changedFields: ["body"],
    expected: { title: "t0", body: "local" },
    events: ["conflictDetected", "conflictResolved", "opPushed"],
  },
  {
    name: "merge forces mergeFn(local, server)",
    strategy: "merge",
    engine: {
      mergeFn: (local, server) => ({
        ...server,
        body: `${local.body}+${server.title}`,
      }),
    },
    base: { title: "t0", body: "b0" },
    server: { title: "server", body: "b0" },
    local: { title: "t0", body: "local" },
    changedFields: ["body"],
    expected: { title: "server", body: "local+server" },
    events: ["conflictDetected", "conflictResolved", "opPushed"],
  },
  {
    name: "manual applies the resolver's acceptMerged",
    strategy: "manual",
    engine: {
      resolver: (conflict) =>
        Resolutions.acceptMerged({
          ...conflict.server!,
          body: `${conflict.local!.body} (resolved)`,
        }),
    },
    base: { title: "t0", body: "b0" },
    server: { title: "server", body: "b0" },
    local: { title: "t0", body: "local" },
    changedFields: ["body"],
    expected: { title: "server", body: "local (resolved)" },
    events: ["conflictDetected", "conflictResolved", "opPushed"],
  },
  {
    name: "manual without a resolver defers (the record keeps the local edit)",
    strategy: "manual",
    base: { title: "t0", body: "b0" },
    server: { title: "server", body: "b0" },
    local: { title: "t0", body: "local" },
    changedFields: ["body"],
    expected: { title: "t0", body: "local" },
    events: ["conflictDetected", "conflictDeferred"],
  },
];

for (const fixture of FIXTURES) {
  Deno.test(`conflict fixture (${fixture.strategy}): ${fixture.name}`, async () => {
    let now = Date.parse("2025-03-01T10:00:00.000Z");
    await using server = startServer({ now: () => now });
    await using a = createClient(server.url, {
      engine: {
        strategy: fixture.strategy,
        clock: { now: () => now },
        ...fixture.engine,
      },
    });
    await using b = createClient(server.url);
    const tableA = a.engine.table("fixtures");
    const tableB = b.engine.table("fixtures");
    await tableA.put({ id: "f", ...fixture.base });
    await a.engine.sync();
    await b.engine.sync();
    now += 1000;
    await tableB.put({ id: "f", ...fixture.server });
    await b.engine.sync();
    now += 1000;
    await tableA.put({ id: "f", ...fixture.local }, {
      changedFields: fixture.changedFields,
    });
    a.events.length = 0;
    await a.engine.sync();

    const { id: _id, updated_at: _u, ...got } = (await tableA.get("f"))!;
    assert.deepEqual(got, fixture.expected, "the record the strategy promises");
    const types = a.events
      .map((event) => event.type)
      .filter((type) =>
        type !== "change" && type !== "pullPageApplied" &&
        type !== "syncCompleted"
      );
    assert.deepEqual(types, fixture.events);
    if (fixture.merged !== undefined) {
      const merged = a.events.find((e) => e.type === "dataMerged");
      assert.ok(merged?.type === "dataMerged");
      assert.deepEqual(
        {
          local: merged.localFields,
          server: merged.serverFields,
          conflicting: merged.conflictingFields,
        },
        fixture.merged,
      );
    }
    if (!fixture.events.includes("conflictDeferred")) {
      await b.engine.sync();
      assert.deepEqual(
        await tableB.get("f"),
        await tableA.get("f"),
        "both clients agree",
      );
    }
  });
}
