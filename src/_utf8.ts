/**
 * Decoding UTF-8 from the network that tells invalid bytes apart, shared by
 * the REST transport and the reference server.
 *
 * @module
 */

const STRICT = new TextDecoder("utf-8", { fatal: true });
const LENIENT = new TextDecoder("utf-8");

/**
 * Decodes bytes as UTF-8, a leading BOM dropped (as `Response.text()`
 * does), and says whether they were valid.
 *
 * Deno's lenient decoder is about ten times faster than its fatal one (a
 * 225 kB body: 0.008 against 0.09 ms), so the bytes are decoded leniently
 * first: text without U+FFFD came from valid UTF-8, as an invalid sequence
 * always leaves one. Only text with U+FFFD, from bad bytes or from the
 * character itself, is decoded again, strictly, to tell which.
 *
 * @param bytes The bytes.
 * @returns The text (with U+FFFD in place of bad bytes) and whether any
 * byte was not UTF-8.
 */
export function decodeUtf8(
  bytes: Uint8Array,
): { text: string; malformed: boolean } {
  const text = LENIENT.decode(bytes);
  if (!text.includes("\uFFFD")) return { text, malformed: false };
  try {
    return { text: STRICT.decode(bytes), malformed: false };
  } catch {
    return { text, malformed: true };
  }
}
