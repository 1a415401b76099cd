import assert from "node:assert/strict";
import {
  cursorIdAfter,
  exceedsDepth,
  idempotencyKeyProblem,
  idProblem,
  kindProblem,
  WIRE_LIMITS,
} from "../src/limits.ts";

/** Nests `{ a: … }` `levels` objects deep, without recursion. */
function nested(levels: number): unknown {
  let value: unknown = 1;
  for (let i = 0; i < levels; i++) value = { a: value };
  return value;
}

/** Every valid id of up to two units over a small alphabet with surrogates. */
function sampleIds(): string[] {
  const alphabet = [
    "a",
    "\ud7ff",
    "\ud800",
    "\udbff",
    "\udc00",
    "\udfff",
    "\ue000",
    "\uffff",
  ];
  const out: string[] = [];
  for (const x of alphabet) {
    out.push(x);
    for (const y of alphabet) {
      out.push(x + y);
      for (const z of alphabet) out.push(x + y + z);
    }
  }
  return out;
}

Deno.test("idProblem() accepts 1 to 256 code points, astral ones included", () => {
  assert.equal(idProblem("a"), null);
  assert.equal(idProblem("x".repeat(256)), null);
  assert.equal(idProblem("😀".repeat(256)), null);
  assert.equal(idProblem("a/b?c#d %\u0000"), null);
  assert.match(
    idProblem("x".repeat(257))!,
    /longer than 256 characters \(257\)/,
  );
  assert.match(idProblem("😀".repeat(257))!, /longer than 256/);
  assert.match(idProblem("x".repeat(70_000))!, /longer than 256/);
});

Deno.test("idProblem() refuses lone surrogates, dot segments, empty and non-strings", () => {
  assert.match(idProblem("a\ud800")!, /lone surrogate at index 1/);
  assert.match(idProblem("\udc00a")!, /lone surrogate at index 0/);
  assert.match(idProblem("\ud800\ud800\udc00")!, /lone surrogate at index 0/);
  assert.match(idProblem(".")!, /dot segment/);
  assert.match(idProblem("..")!, /dot segment/);
  assert.equal(idProblem("..."), null);
  assert.match(idProblem("")!, /empty/);
  assert.match(idProblem(42)!, /not a string \(number\)/);
});

Deno.test("kindProblem() allows [A-Za-z0-9_-] up to 64 and no reserved route", () => {
  assert.equal(kindProblem("Todo_items-2"), null);
  assert.equal(kindProblem("k".repeat(64)), null);
  assert.match(kindProblem("k".repeat(65))!, /longer than 64/);
  for (const kind of ["health", "batch", "live"]) {
    assert.match(kindProblem(kind)!, /reserved/);
  }
  for (const kind of ["a/b", "a b", "ä", "a.b", "%2F"]) {
    assert.match(kindProblem(kind)!, /outside/, kind);
  }
  assert.match(kindProblem("")!, /empty/);
});

Deno.test("idempotencyKeyProblem() allows 1 to 255 visible ASCII characters", () => {
  assert.equal(idempotencyKeyProblem("!~" + "k".repeat(253)), null);
  assert.match(idempotencyKeyProblem("k".repeat(256))!, /longer than 255/);
  assert.match(idempotencyKeyProblem("a b")!, /index 1/);
  assert.match(idempotencyKeyProblem("é")!, /index 0/);
  assert.match(idempotencyKeyProblem("")!, /empty/);
});

Deno.test("exceedsDepth() counts containers from the value itself and stops past the limit", () => {
  assert.equal(exceedsDepth(1, 0), false);
  assert.equal(exceedsDepth({}, 0), true);
  assert.equal(exceedsDepth({}, 1), false);
  assert.equal(exceedsDepth(nested(64), 64), false);
  assert.equal(exceedsDepth(nested(65), 64), true);
  assert.equal(exceedsDepth([[[]]], 3), false);
  assert.equal(exceedsDepth([[[]]], 2), true);
  // Far deeper than any stack: the walk stops at the limit.
  assert.equal(exceedsDepth(nested(200_000)), true);
  const cycle: Record<string, unknown> = {};
  cycle.self = cycle;
  assert.equal(exceedsDepth(cycle), true);
  assert.equal(WIRE_LIMITS.maxDepth, 64);
});

Deno.test("cursorIdAfter() keeps valid ids and moves over-long ones past every id sharing their first 256 characters", () => {
  assert.equal(cursorIdAfter("todo-1"), "todo-1");
  assert.equal(cursorIdAfter("."), ".");
  assert.equal(cursorIdAfter(""), null);
  assert.equal(cursorIdAfter("x".repeat(70_000)), "x".repeat(255) + "y");
  assert.equal(cursorIdAfter("😀".repeat(300)), "😀".repeat(255) + "😁");
  // Carries over the last code point, and skips the surrogate range.
  const max = String.fromCodePoint(0x10ffff);
  assert.equal(
    cursorIdAfter("a".repeat(254) + max.repeat(3)),
    "a".repeat(253) + "b",
  );
  assert.equal(
    cursorIdAfter("a".repeat(255) + "\ud7ff" + "z"),
    "a".repeat(255) + "\ue000",
  );
  assert.equal(cursorIdAfter(max.repeat(257)), null);
  for (
    const long of [
      "x".repeat(70_000),
      "😀".repeat(300),
      "a".repeat(255) + "\ud7ffz",
    ]
  ) {
    const after = cursorIdAfter(long)!;
    assert.equal(idProblem(after), null);
    assert.ok(after > long, "the cursor is past the bad id itself");
  }
});

Deno.test("cursorIdAfter() orders every valid id the same as the bad id it stands for", () => {
  const all = sampleIds();
  const valid = all.filter((id) => idProblem(id) === null);
  for (const bad of all) {
    if (idProblem(bad) === null) continue;
    const after = cursorIdAfter(bad)!;
    assert.equal(idProblem(after), null, JSON.stringify(bad));
    assert.ok(after > bad, JSON.stringify(bad));
    for (const v of valid) {
      // Exactly one valid id may fall between (documented): the cursor itself.
      if (v === after) continue;
      assert.equal(
        v > after,
        v > bad,
        `${JSON.stringify(bad)} vs ${JSON.stringify(v)}`,
      );
    }
  }
  // Over-long ids: every valid id compares with the cut as with the original.
  const long = "b".repeat(255) + "c" + "a".repeat(10);
  const cut = cursorIdAfter(long)!;
  for (
    const v of [
      "b".repeat(256),
      "b".repeat(255) + "c",
      "b".repeat(255) + "e",
      "b".repeat(254) + "c",
      "c",
    ]
  ) {
    assert.equal(v > cut, v > long, v);
  }
  // The one valid id passed over (documented): the cursor itself.
  assert.equal(cut, "b".repeat(255) + "d");
});
