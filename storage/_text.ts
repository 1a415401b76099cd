/**
 * Strings for error messages and sizes, shared by the storage adapters and
 * their private helpers. Private to the package: not exported from it.
 *
 * @module
 */

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
