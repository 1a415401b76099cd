/**
 * Timestamp validation shared by the engine and the REST transport. Private
 * to the package (underscore): not exported from `mod.ts`.
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
