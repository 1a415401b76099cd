/**
 * The autoPreserve merge against a plain spread, on a realistic record.
 * Run with `deno task bench`; every figure is a ratio to the baseline of the
 * same group, measured in the same run.
 *
 * @module
 */

import { autoPreserveMerge } from "../src/merge.ts";

const base = {
  id: "r1",
  updated_at: "2025-03-01T10:00:00.000Z",
  mood: "ok",
  energy: 3,
  notes: "",
  tags: ["a", "b", "c"],
  settings: { theme: "light", ui: { fontSize: 12, dense: false } },
  ...Object.fromEntries(Array.from({ length: 13 }, (_, i) => [`f${i}`, i])),
};
const local = {
  ...base,
  mood: "great",
  tags: ["a", "b", "d"],
  settings: { ...base.settings, ui: { fontSize: 14, dense: false } },
};
const server = {
  ...base,
  updated_at: "2025-03-01T11:00:00.000Z",
  energy: 5,
  settings: { ...base.settings, theme: "dark" },
};
const changedFields = ["mood", "tags", "settings"];

Deno.bench({
  name: "spread {...server, ...local}",
  group: "merge 20 fields",
  baseline: true,
  fn() {
    const merged = { ...server, ...local };
    if (merged.id !== "r1") throw new Error("unreachable");
  },
});

Deno.bench({
  name: "autoPreserveMerge, changedFields known",
  group: "merge 20 fields",
  fn() {
    autoPreserveMerge({ local, server, changedFields });
  },
});

Deno.bench({
  name: "autoPreserveMerge, three-way with base",
  group: "merge 20 fields",
  fn() {
    autoPreserveMerge({ local, server, base, changedFields });
  },
});

Deno.bench({
  name: "autoPreserveMerge, changedFields unknown",
  group: "merge 20 fields",
  fn() {
    autoPreserveMerge({ local, server });
  },
});
