/**
 * Strings for error messages and sizes, shared by the storage adapters and
 * their private helpers. Private to the package: not exported from it.
 *
 * @module
 */

/**
 * Describes a value for an error message: strings quoted, objects by their
 * class, never their contents.
 *
 * @param value The value.
 * @returns The description.
 */
export function describe(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "bigint") return `${value}n`;
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object" && value !== null) {
    const name = Object.getPrototypeOf(value)?.constructor?.name;
    return typeof name === "string" && name !== "Object"
      ? `a ${name}`
      : "an object";
  }
  return String(value);
}

/**
 * The UTF-8 length of a string, without encoding it; a lone surrogate
 * counts as U+FFFD (3 bytes), as `TextEncoder` writes it.
 *
 * @param text The string.
 * @returns Its length in UTF-8 bytes.
 */
export function utf8Length(text: string): number {
  let bytes = text.length;
  for (let index = 0; index < text.length; index++) {
    const unit = text.charCodeAt(index);
    if (unit < 0x80) continue;
    if (unit < 0x800) bytes += 1;
    else if (
      unit >= 0xd800 && unit <= 0xdbff && index + 1 < text.length &&
      (text.charCodeAt(index + 1) & 0xfc00) === 0xdc00
    ) {
      // A surrogate pair: 4 bytes for 2 units.
      bytes += 2;
      index++;
    } else bytes += 2;
  }
  return bytes;
}

/**
 * A string for a message: quoted, and cut after 80 characters (an id may
 * be 70,000 long).
 *
 * @param text The string.
 * @returns The quoted text.
 */
export function shortText(text: string): string {
  return JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}…` : text);
}
