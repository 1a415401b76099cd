/**
 * How the KV storage turns strings into key parts: `K` and `R` (see
 * `storage/kv.ts`), the record index's hash buckets and slots, and key
 * parts named for messages. Private to `storage/kv.ts`, its helpers and its
 * tests: not exported from the package. Part of the file format: nothing
 * here may change without a migration.
 *
 * `K(s)` encodes each UTF-16 code unit `u` of `s`: `u + 1` for `u < 0x7F`;
 * two bytes `0x80 + ⌊v / 255⌋, 1 + v % 255` for `v = u − 0x7F < 32385`;
 * else three bytes `0xFF, 1 + ⌊w / 255⌋, 1 + w % 255` for `w = v − 32385`.
 * The first byte tells the length, no byte is zero (so KV never escapes
 * one), and bytes compare like code units: KV's byte order of the keys is
 * JavaScript's `<` on the strings, which the contract requires, while KV's
 * own string parts would sort by UTF-8 (code points) instead.
 *
 * A kind or record id goes into a record's key through
 * {@linkcode keyPart}, which bounds its size: `K(s)` itself while it takes
 * at most `budget` bytes, else the longest prefix `p` of `s` whose `K(p)`
 * fits the budget, a `0xFF` byte, and 20 bytes of SHA-256 over `s`'s code
 * units (7 bits each, high bit set). The prefix keeps the order of keys
 * the order of ids, except among the ids cut at one prefix, which share
 * `K(p) 0xFF` and so sit together, after every other id that starts with
 * `p`: the longer ids cut there are exactly those whose next code unit does
 * not fit the rest of the budget, which are the widest, so the greatest
 * ones. Their group is sorted by id when listed. A hashed part is longer
 * than the budget and a full one is not, so the two never collide; two
 * hashed parts collide only if SHA-256 does.
 *
 * @module
 */

import { sha256 } from "./_sha256.ts";
import { describe } from "../src/describe.ts";
import { encodeUtf16 } from "../src/utf16.ts";

/** How many bytes of a kind's `K` its key part keeps whole: 64 wide units. */
export const KIND_BUDGET = 192;

/** How many bytes of a record id's `K` its key part keeps whole. */
export const ID_BUDGET = 256;

/** How many bytes of a hashed part carry the hash. */
const HASH_BYTES = 20;

/** The marker between a hashed part's prefix and its hash. */
const HASHED = 0xff;

/**
 * The most bytes {@linkcode keyPart} returns for a budget.
 *
 * @param budget The budget.
 * @returns Its size at most.
 */
export function keyPartBytes(budget: number): number {
  return budget + 1 + HASH_BYTES;
}

/** How many bytes `K` gives a code unit. */
function unitBytes(unit: number): number {
  return unit < 0x7f ? 1 : unit - 0x7f < 127 * 255 ? 2 : 3;
}

/**
 * Encodes a string as a key part whose bytes sort like its UTF-16 code
 * units, with no zero byte (see the module documentation).
 *
 * @param text The string.
 * @param units How many of its code units to encode.
 * @param room Extra bytes to allocate at the end.
 * @returns The bytes, with `room` zero bytes after them.
 */
export function encodeText(
  text: string,
  units: number = text.length,
  room = 0,
): Uint8Array {
  let length = 0;
  for (let index = 0; index < units; index++) {
    length += unitBytes(text.charCodeAt(index));
  }
  return fill(text, { units, length, room });
}

/**
 * `K` of the first `units` code units of `text`, `length` bytes long (as
 * counted), in a buffer with `room` zero bytes after them.
 */
function fill(
  text: string,
  size: {
    readonly units: number;
    readonly length: number;
    readonly room: number;
  },
): Uint8Array {
  const { units, length, room } = size;
  const out = new Uint8Array(length + room);
  // Most keys are ASCII: one byte each, without the general case's calls.
  if (length === units) {
    for (let index = 0; index < units; index++) {
      out[index] = text.charCodeAt(index) + 1;
    }
    return out;
  }
  let at = 0;
  for (let index = 0; index < units; index++) {
    const unit = text.charCodeAt(index);
    const bytes = unitBytes(unit);
    for (let byte = 0; byte < bytes; byte++) out[at++] = unitByte(unit, byte);
  }
  return out;
}

/** Byte `n` of `K`'s encoding of a code unit (see the module documentation). */
function unitByte(unit: number, n: number): number {
  if (unit < 0x7f) return unit + 1;
  const v = unit - 0x7f;
  if (v < 127 * 255) return n === 0 ? 0x80 + Math.floor(v / 255) : 1 + v % 255;
  const w = v - 127 * 255;
  return n === 0 ? 0xff : n === 1 ? 1 + Math.floor(w / 255) : 1 + w % 255;
}

/**
 * Decodes bytes written by {@linkcode encodeText}.
 *
 * @param part The bytes.
 * @returns The string.
 */
export function decodeText(part: Uint8Array): string {
  const units: number[] = [];
  for (let index = 0; index < part.length;) {
    const lead = part[index]!;
    if (lead < 0x80) {
      units.push(lead - 1);
      index += 1;
    } else if (lead < 0xff) {
      units.push(0x7f + (lead - 0x80) * 255 + (part[index + 1] ?? 1) - 1);
      index += 2;
    } else {
      units.push(
        0x7f + 127 * 255 + ((part[index + 1] ?? 1) - 1) * 255 +
          (part[index + 2] ?? 1) - 1,
      );
      index += 3;
    }
  }
  let text = "";
  for (let start = 0; start < units.length; start += 4096) {
    text += String.fromCharCode(...units.slice(start, start + 4096));
  }
  return text;
}

/**
 * A kind's or record id's key part: `K(text)` within the budget, else a
 * prefix and a hash (see the module documentation).
 *
 * @param text The string.
 * @param budget The most bytes of `K` kept; at least 3.
 * @returns The key part, at most {@linkcode keyPartBytes} long.
 */
export function keyPart(text: string, budget: number): Uint8Array {
  let bytes = 0;
  let units = 0;
  for (; units < text.length; units++) {
    const size = unitBytes(text.charCodeAt(units));
    if (bytes + size > budget) break;
    bytes += size;
  }
  if (units === text.length) {
    return fill(text, { units, length: bytes, room: 0 });
  }
  const part = fill(text, { units, length: bytes, room: 1 + HASH_BYTES });
  part[bytes] = HASHED;
  // The hash covers the code units, low byte first.
  const digest = sha256(encodeUtf16(text, { littleEndian: true }));
  for (let index = 0; index < HASH_BYTES; index++) {
    part[bytes + 1 + index] = 0x80 | digest[index]!;
  }
  return part;
}

/**
 * The group a hashed key part belongs to: its prefix and marker, which
 * every id cut at that prefix shares, and which sorts before all of them.
 *
 * @param part A key part written by {@linkcode keyPart}.
 * @param budget The budget it was written with.
 * @returns The group's bytes, or `undefined` for a full part.
 */
export function hashedGroup(
  part: Uint8Array,
  budget: number,
): Uint8Array | undefined {
  return part.length > budget
    ? part.subarray(0, part.length - HASH_BYTES)
    : undefined;
}

/**
 * Whether a key part is the one {@linkcode keyPart} gives a string, without
 * encoding a full part.
 *
 * @param part The key part.
 * @param text The string.
 * @param budget The budget.
 * @returns Whether they match.
 */
export function partMatches(
  part: Uint8Array,
  text: string,
  budget: number,
): boolean {
  if (part.length > budget) return sameBytes(part, keyPart(text, budget));
  let offset = 0;
  for (let index = 0; index < text.length; index++) {
    const unit = text.charCodeAt(index);
    if (unit < 0x7f) {
      if (part[offset++] !== unit + 1) return false;
      continue;
    }
    const size = unitBytes(unit);
    for (let byte = 0; byte < size; byte++) {
      if (part[offset++] !== unitByte(unit, byte)) return false;
    }
  }
  return offset === part.length;
}

/**
 * Whether a key part holds exactly these bytes.
 *
 * @param part The key part (any type).
 * @param bytes The bytes.
 * @returns Whether they are equal.
 */
export function sameBytes(
  part: Deno.KvKeyPart | undefined,
  bytes: Uint8Array,
): boolean {
  if (!(part instanceof Uint8Array) || part.length !== bytes.length) {
    return false;
  }
  for (let index = 0; index < bytes.length; index++) {
    if (part[index] !== bytes[index]) return false;
  }
  return true;
}

/**
 * Whether a key part starts with these bytes.
 *
 * @param part The key part (any type).
 * @param head The bytes.
 * @returns Whether it does.
 */
export function startsWith(
  part: Deno.KvKeyPart | undefined,
  head: Uint8Array,
): boolean {
  if (!(part instanceof Uint8Array) || part.length < head.length) return false;
  for (let index = 0; index < head.length; index++) {
    if (part[index] !== head[index]) return false;
  }
  return true;
}

/**
 * 64-bit FNV-1a over a string's UTF-16 code units (low byte first), cut to
 * its top 53 bits: the record index's bucket. Computed on four 16-bit limbs
 * because JavaScript numbers hold 53 bits. Part of the file format: it must
 * never change.
 *
 * @param text The string (a record id).
 * @returns The bucket, an exact number.
 */
export function hashText(text: string): number {
  let h0 = 0x2325;
  let h1 = 0x8422;
  let h2 = 0x9ce4;
  let h3 = 0xcbf2;
  for (let index = 0; index < text.length * 2; index++) {
    const unit = text.charCodeAt(index >>> 1);
    h0 ^= index & 1 ? unit >>> 8 : unit & 0xff;
    // Times the FNV prime 2^40 + 0x1b3.
    const t0 = h0 * 0x1b3;
    const t1 = h1 * 0x1b3;
    const t2 = h2 * 0x1b3 + (h0 << 8);
    const t3 = h3 * 0x1b3 + (h1 << 8);
    h0 = t0 & 0xffff;
    const c1 = t1 + (t0 >>> 16);
    h1 = c1 & 0xffff;
    const c2 = t2 + (c1 >>> 16);
    h2 = c2 & 0xffff;
    h3 = (t3 + (c2 >>> 16)) & 0xffff;
  }
  return ((h3 * 0x10000 + h2) * 0x10000 + h1) * 32 + (h0 >>> 11);
}

/**
 * A random 53-bit integer: an op's slot in the record index.
 *
 * @returns The slot.
 */
export function randomSlot(): number {
  const words = crypto.getRandomValues(new Uint32Array(2));
  return (words[0]! & 0x1fffff) * 0x100000000 + words[1]!;
}

/**
 * A kind's or id's key part for a message: the text, or for a hashed part
 * the prefix it keeps, followed by an ellipsis.
 *
 * @param part The key part.
 * @param budget The budget it was written with.
 * @returns The quoted text.
 */
export function partText(
  part: Deno.KvKeyPart | undefined,
  budget: number,
): string {
  if (!(part instanceof Uint8Array)) return Deno.inspect(part);
  const group = hashedGroup(part, budget);
  if (group === undefined) return describe(decodeText(part));
  return describe(`${decodeText(group.subarray(0, -1))}…`);
}
