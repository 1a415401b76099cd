/**
 * The autoPreserve merge against what a user would otherwise pick:
 * `deepmerge`, `lodash.merge`, and a plain `{...server, ...local}` spread,
 * on the same inputs. Each group's figures are ratios to its baseline,
 * measured in the same run (`deno task bench`).
 *
 * Records: a realistic 20-field record (a nested settings object and a tag
 * list), and a 200-field record. Cases: changedFields known (the common
 * case: the engine always knows them), three-way with a base, and neither.
 *
 * @module
 */

import deepmerge from "npm:deepmerge@4.3.1";
import lodashMerge from "npm:lodash.merge@4.6.2";
import { autoPreserveMerge } from "../src/merge.ts";
import type { JsonObject } from "../src/json.ts";

interface Inputs {
  readonly base: JsonObject;
  readonly local: JsonObject;
  readonly server: JsonObject;
  readonly changedFields: readonly string[];
}

/** A 20-field record: scalars, a nested object, a tag list. */
function twentyFields(): Inputs {
  const base: JsonObject = {
    id: "r1",
    updated_at: "2025-03-01T10:00:00.000Z",
    created_at: "2025-02-01T10:00:00.000Z",
    mood: "ok",
    energy: 3,
    notes: "",
    tags: ["work", "health", "family"],
    settings: { theme: "light", ui: { fontSize: 12, dense: false } },
  };
  for (let i = 0; base && Object.keys(base).length < 20; i++) {
    base[`field${i}`] = i % 3 === 0 ? `text ${i}` : i;
  }
  const local: JsonObject = {
    ...base,
    mood: "great",
    notes: "ran 5k",
    tags: ["work", "health", "running"],
    settings: { theme: "light", ui: { fontSize: 14, dense: false } },
  };
  const server: JsonObject = {
    ...base,
    updated_at: "2025-03-01T11:00:00.000Z",
    energy: 5,
    tags: ["work", "health", "family", "travel"],
    settings: { theme: "dark", ui: { fontSize: 12, dense: false } },
  };
  return {
    base,
    local,
    server,
    changedFields: ["mood", "notes", "tags", "settings"],
  };
}

/** A 200-field flat record where the client changed 10 fields. */
function twoHundredFields(): Inputs {
  const base: JsonObject = { id: "r2", updated_at: "2025-03-01T10:00:00.000Z" };
  for (let i = 0; i < 198; i++) base[`f${i}`] = i % 2 === 0 ? `value ${i}` : i;
  const local: JsonObject = { ...base };
  const changedFields: string[] = [];
  for (let i = 0; i < 10; i++) {
    local[`f${i * 7}`] = `local ${i}`;
    changedFields.push(`f${i * 7}`);
  }
  const server: JsonObject = {
    ...base,
    updated_at: "2025-03-01T11:00:00.000Z",
  };
  for (let i = 0; i < 10; i++) server[`f${i * 11 + 1}`] = `server ${i}`;
  return { base, local, server, changedFields };
}

let sink: unknown;

for (
  const [size, make] of [["20 fields", twentyFields], [
    "200 fields",
    twoHundredFields,
  ]] as const
) {
  const { base, local, server, changedFields } = make();
  const group = `merge, ${size}`;
  Deno.bench({
    name: `baseline: deepmerge(server, local)`,
    group,
    baseline: true,
    fn() {
      sink = deepmerge(server, local);
    },
  });
  Deno.bench({
    name: "lodash.merge({}, server, local)",
    group,
    fn() {
      sink = lodashMerge({}, server, local);
    },
  });
  Deno.bench({
    name: "spread {...server, ...local}",
    group,
    fn() {
      sink = { ...server, ...local };
    },
  });
  Deno.bench({
    name: "autoPreserveMerge, changedFields known",
    group,
    fn() {
      sink = autoPreserveMerge({ local, server, changedFields });
    },
  });
  Deno.bench({
    name: "autoPreserveMerge, three-way with base",
    group,
    fn() {
      sink = autoPreserveMerge({ local, server, base, changedFields });
    },
  });
  Deno.bench({
    name: "autoPreserveMerge, neither known",
    group,
    fn() {
      sink = autoPreserveMerge({ local, server });
    },
  });
}

// Keeps the results alive so the engine cannot drop the work.
globalThis.addEventListener("unload", () => {
  if (sink === Symbol.for("never")) console.log(sink);
});
