import assert from "node:assert/strict";
import { isTimestamp, parseTimestamp } from "../src/timestamp.ts";

Deno.test("parseTimestamp() reads ISO-8601 instants with a zone", () => {
  assert.equal(
    parseTimestamp("2025-03-01T10:00:00.000Z"),
    Date.UTC(2025, 2, 1, 10),
  );
  assert.equal(
    parseTimestamp("2024-02-29T23:59:59.999Z"),
    Date.UTC(2024, 1, 29, 23, 59, 59, 999),
  );
  assert.equal(
    parseTimestamp("2025-03-01T10:00:00Z"),
    Date.UTC(2025, 2, 1, 10),
  );
  assert.equal(
    parseTimestamp("2025-03-01T12:00:00.000+02:00"),
    Date.UTC(2025, 2, 1, 10),
  );
  assert.equal(
    parseTimestamp("0050-01-01T00:00:00.000Z"),
    Date.parse("0050-01-01T00:00:00.000Z"),
  );
});

Deno.test("parseTimestamp() refuses dates the calendar does not have and text without a zone", () => {
  for (
    const text of [
      "2025-02-29T00:00:00.000Z",
      "1900-02-29T00:00:00.000Z",
      "2025-04-31T00:00:00.000Z",
      "2025-13-01T00:00:00.000Z",
      "2025-03-01T24:00:00.000Z",
      "2025-03-01T10:60:00.000Z",
      "2025-03-01T10:00:00",
      "2025-3-01T10:00:00.000Z",
      "yesterday",
      "",
    ]
  ) {
    assert.equal(parseTimestamp(text), null, text);
    assert.equal(isTimestamp(text), false, text);
  }
  assert.equal(parseTimestamp(1740823200000), null);
  assert.equal(parseTimestamp(null), null);
});

Deno.test("parseTimestamp()'s fast path agrees with Date.parse on random canonical timestamps", () => {
  let seed = 12345;
  const random = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  const pad = (n: number, width: number): string =>
    String(n).padStart(width, "0");
  for (let i = 0; i < 20_000; i++) {
    const [y, mo, d, h, mi, s, ms] = [
      random(3000),
      random(14),
      random(33),
      random(26),
      random(62),
      random(62),
      random(1000),
    ];
    const text = `${pad(y, 4)}-${pad(mo, 2)}-${pad(d, 2)}T${pad(h, 2)}:${
      pad(mi, 2)
    }:${pad(s, 2)}.${pad(ms, 3)}Z`;
    const leap = (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
    const days = mo === 2
      ? (leap ? 29 : 28)
      : new Date(Date.UTC(2001, mo, 0)).getUTCDate();
    const valid = mo >= 1 && mo <= 12 && d >= 1 && d <= days && h <= 23 &&
      mi <= 59 &&
      s <= 59;
    assert.equal(parseTimestamp(text), valid ? Date.parse(text) : null, text);
  }
});
