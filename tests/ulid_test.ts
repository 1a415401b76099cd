import assert from "node:assert/strict";
import {
  decodeTime,
  isValid,
  monotonicFactory,
  ulid as referenceUlid,
} from "ulid";
import { createUlid, decodeUlidTime, isUlid } from "../src/ulid.ts";

Deno.test("createUlid() encodes the time as the npm ulid package does", () => {
  // Not 0: npm ulid tests its seed time by truthiness and takes Date.now().
  for (const time of [1, 1_469_918_176_385, Date.now(), 2 ** 48 - 1]) {
    const ours = createUlid({ now: () => time })();
    const theirs = referenceUlid(time);
    assert.equal(ours.slice(0, 10), theirs.slice(0, 10), `time ${time}`);
    assert.equal(decodeUlidTime(ours), time);
    assert.equal(decodeTime(ours), time);
    assert.ok(isValid(ours));
    assert.ok(isUlid(theirs));
  }
});

Deno.test("createUlid() is monotonic within one millisecond, like ulid's monotonicFactory", () => {
  const time = 1_700_000_000_000;
  const ours = createUlid({ now: () => time });
  const theirs = monotonicFactory();
  let previousOurs = "";
  let previousTheirs = "";
  for (let i = 0; i < 1000; i++) {
    const a = ours();
    const b = theirs(time);
    assert.ok(a > previousOurs, `${a} after ${previousOurs}`);
    assert.ok(b > previousTheirs);
    assert.equal(decodeTime(a), time);
    previousOurs = a;
    previousTheirs = b;
  }
});

Deno.test("createUlid() stays ordered when the clock goes back", () => {
  let time = 2_000_000;
  const ulid = createUlid({ now: () => time });
  const first = ulid();
  time = 1_000_000;
  const second = ulid();
  assert.ok(second > first);
});

Deno.test("createUlid() returns an id greater than the given floor", () => {
  const ulid = createUlid({ now: () => 1000 });
  const floor = createUlid({ now: () => 5000 })();
  const id = ulid(floor);
  assert.ok(id > floor);
  assert.ok(isUlid(id));
  assert.ok(ulid() > id, "later ids stay above the floor");
});

Deno.test("createUlid() uses the injected randomness", () => {
  const zeros = createUlid({ now: () => 0, random: (bytes) => bytes.fill(0) });
  assert.equal(zeros(), "00000000000000000000000000");
  assert.equal(zeros(), "00000000000000000000000001");
});

Deno.test("createUlid() rejects a time outside 48 bits", () => {
  assert.throws(() => createUlid({ now: () => -1 })(), RangeError);
  assert.throws(() => createUlid({ now: () => 2 ** 48 })(), RangeError);
});

Deno.test("isUlid() rejects malformed ids", () => {
  assert.equal(isUlid("01ARZ3NDEKTSV4RRFFQ69G5FAV"), true);
  assert.equal(isUlid("01ARZ3NDEKTSV4RRFFQ69G5FA"), false);
  assert.equal(isUlid("81ARZ3NDEKTSV4RRFFQ69G5FAV"), false);
  assert.equal(isUlid("01ARZ3NDEKTSV4RRFFQ69G5FAU"), false);
  assert.throws(() => decodeUlidTime("nope"), TypeError);
});

Deno.test("createUlid() honours a floor given within the same millisecond", () => {
  const ulid = createUlid({ now: () => 1000 });
  const first = ulid();
  const second = ulid();
  assert.ok(second > first);
  // Another factory's id, above ours in the same millisecond.
  const floor = first.slice(0, 10) + "Z".repeat(16);
  const third = ulid(floor);
  assert.ok(third > floor, `${third} after ${floor}`);
  assert.ok(isUlid(third));
  const fourth = ulid();
  assert.ok(fourth > third, "later ids stay above the floor");
  assert.ok(ulid(first) > fourth, "a floor below the last id changes nothing");
});

Deno.test("isUlid() takes the Crockford alphabet only", () => {
  assert.equal(isUlid("7ZZZZZZZZZZZZZZZZZZZZZZZZZ"), true);
  for (const bad of ["I", "L", "O", "U", "a", "z", "-", "é", "\u{1F600}"]) {
    assert.equal(isUlid(`01ARZ3NDEKTSV4RRFFQ69G5FA${bad}`), false, bad);
  }
  assert.equal(isUlid(42 as unknown as string), false);
});
