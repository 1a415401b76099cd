/**
 * Strings as the bytes of their UTF-16 code units, lone surrogates
 * included: the one such encoder of the package, a leaf module shared by
 * the storages and the server, not exported from `mod.ts`. The SQLite
 * storage and the SQLite server store keep their keys big-endian, so that
 * `memcmp` order on them is UTF-16 code-unit order (JavaScript's `<`); the
 * KV storage hashes long ids over them little-endian. All are part of a file
 * format. Not `TextEncoder`/`TextDecoder("utf-16be")`: they would replace
 * lone surrogates with U+FFFD.
 *
 * @module
 */

/** Options for {@linkcode encodeUtf16}. */
export interface EncodeUtf16Options {
  /**
   * Whether each code unit's low byte comes first.
   *
   * @default {false}
   */
  readonly littleEndian?: boolean;
  /**
   * Where to write the bytes, from its start: at least two bytes per code
   * unit. A view into a larger buffer spares an allocation per string.
   *
   * @default {a new array of exactly two bytes per code unit}
   */
  readonly into?: Uint8Array;
}

/**
 * Encodes a string's UTF-16 code units, two bytes each.
 *
 * @param text The string.
 * @param options Byte order, and where to write.
 * @returns The bytes: `options.into` when given.
 */
export function encodeUtf16(
  text: string,
  options: EncodeUtf16Options = {},
): Uint8Array {
  const bytes = options.into ?? new Uint8Array(text.length * 2);
  const high = options.littleEndian === true ? 1 : 0;
  const low = 1 - high;
  for (let index = 0; index < text.length; index++) {
    const unit = text.charCodeAt(index);
    bytes[index * 2 + high] = unit >>> 8;
    bytes[index * 2 + low] = unit & 0xff;
  }
  return bytes;
}

/**
 * Decodes big-endian bytes written by {@linkcode encodeUtf16}; a value
 * that is not bytes (a damaged row) becomes its `String()`.
 *
 * @param bytes The bytes.
 * @returns The string.
 */
export function decodeUtf16(bytes: unknown): string {
  if (!(bytes instanceof Uint8Array)) return String(bytes);
  const units = new Uint16Array(bytes.length >> 1);
  for (let index = 0; index < units.length; index++) {
    units[index] = (bytes[index * 2]! << 8) | bytes[index * 2 + 1]!;
  }
  let text = "";
  // Chunked: String.fromCharCode takes its units as call arguments.
  for (let start = 0; start < units.length; start += 8192) {
    text += String.fromCharCode(...units.subarray(start, start + 8192));
  }
  return text;
}

/**
 * Whether bytes are a string's big-endian encoding, without decoding them.
 *
 * @param bytes The bytes (any value).
 * @param text The string.
 * @returns Whether they are.
 */
export function isUtf16Of(bytes: unknown, text: string): boolean {
  if (!(bytes instanceof Uint8Array) || bytes.length !== text.length * 2) {
    return false;
  }
  for (let index = 0; index < text.length; index++) {
    const unit = text.charCodeAt(index);
    if (
      bytes[index * 2] !== unit >> 8 || bytes[index * 2 + 1] !== (unit & 0xff)
    ) {
      return false;
    }
  }
  return true;
}
