/**
 * Timestamp validation shared by the engine and the reference server, so
 * both read the contract's timestamps by one rule: ISO-8601 with a time
 * zone, on a date the calendar has. A leaf module (no imports), not
 * exported from `mod.ts`.
 *
 * @module
 */

const TIMESTAMP =
  /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(?:Z|[+-](\d{2}):(\d{2}))$/;

/**
 * Parses an ISO-8601 date-time with a time zone that exists on the calendar
 * (`Date.parse` alone accepts `2025-02-30`).
 *
 * @param value The value.
 * @returns The instant in ms since the epoch, or `null` when `value` is not
 * such a timestamp.
 */
export function parseTimestamp(value: unknown): number | null {
  if (typeof value !== "string") return null;
  // Servers send the canonical form: parse it by hand, without a regular
  // expression, `Date` objects or `Date.parse` (a pull checks every item).
  if (value.length === 24 && value.charCodeAt(23) === 90 /* Z */) {
    const fast = parseCanonical(value);
    if (fast !== undefined) return fast;
  }
  const match = TIMESTAMP.exec(value);
  if (match === null) return null;
  const [year, month, day, hour, minute, second, zoneHour, zoneMinute] = match
    .slice(1).map((part) => part === undefined ? 0 : Number(part)) as number[];
  const days = new Date(Date.UTC(year!, month!, 0)).getUTCDate();
  if (
    month! < 1 || month! > 12 || day! < 1 || day! > days || hour! > 23 ||
    minute! > 59 || second! > 59 || zoneHour! > 23 || zoneMinute! > 59
  ) {
    return null;
  }
  const time = Date.parse(value);
  return Number.isNaN(time) ? null : time;
}

/**
 * Tells whether a value is an ISO-8601 date-time with a time zone that
 * exists on the calendar.
 *
 * @param value The value.
 * @returns `true` for a valid timestamp string.
 */
export function isTimestamp(value: unknown): boolean {
  return parseTimestamp(value) !== null;
}

const DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/** Reads `count` ASCII digits at `at`; -1 when one is not a digit. */
function digits(text: string, at: number, count: number): number {
  let out = 0;
  for (let i = at; i < at + count; i++) {
    const code = text.charCodeAt(i) - 48;
    if (code < 0 || code > 9) return -1;
    out = out * 10 + code;
  }
  return out;
}

/**
 * `YYYY-MM-DDTHH:MM:SS.sssZ`: the instant, `null` for an impossible date,
 * `undefined` when the text is not in exactly this form (the general path
 * decides then).
 */
function parseCanonical(text: string): number | null | undefined {
  if (
    text.charCodeAt(4) !== 45 || text.charCodeAt(7) !== 45 ||
    text.charCodeAt(10) !== 84 || text.charCodeAt(13) !== 58 ||
    text.charCodeAt(16) !== 58 || text.charCodeAt(19) !== 46
  ) {
    return undefined;
  }
  const year = digits(text, 0, 4);
  const month = digits(text, 5, 2);
  const day = digits(text, 8, 2);
  const hour = digits(text, 11, 2);
  const minute = digits(text, 14, 2);
  const second = digits(text, 17, 2);
  const ms = digits(text, 20, 3);
  // Date.UTC reads years 0-99 as 1900-1999: leave those to Date.parse.
  if ((year | month | day | hour | minute | second | ms) < 0 || year < 100) {
    return undefined;
  }
  if (
    month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 ||
    second > 59
  ) {
    return null;
  }
  const leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
  const days = month === 2 && leap ? 29 : DAYS[month - 1]!;
  if (day > days) return null;
  return Date.UTC(year, month - 1, day, hour, minute, second, ms);
}
