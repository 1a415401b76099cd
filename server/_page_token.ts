/**
 * The reference server's page tokens and the `410` rule they carry
 * (CONTRACT.md, Pull: `410` only for a cursor the client brought from an
 * earlier pull; the later pages of a pull that began with no cursor never
 * get it, so a full resync always finishes).
 *
 * ## Why a mark, and why it is safe
 *
 * A pull must answer `410` when the client may have missed the deletion of a
 * record it holds because the tombstone was purged. Purges keep, per kind, a
 * horizon `H`: every purged tombstone had `updated_at < H`. So `410` is due
 * exactly when a tombstone the client still needs may be older than `H`.
 *
 * Call `M` a lower bound on the `updated_at` of every tombstone the client
 * may still need. Then `M >= H` proves none of them was purged, and the page
 * can be served. Two bounds are known:
 *
 * - The keyset cursor `updatedSince`: what the client holds came from pages
 *   before its cursor, and a deletion committed after such a page lands
 *   after every record committed before it (the server's commit-ordered
 *   clock), so its tombstone is at or after the cursor. This is the classic
 *   rule `updatedSince >= H`.
 * - The mark `S` of a pull that began with no cursor: the client then holds
 *   only what this pull delivered (the resync sweeps the rest), so it needs
 *   only the tombstones of deletions committed after the pull's first read.
 *   The server computes `S` before that read as a lower bound on every
 *   `updated_at` it has not yet made visible (the write in progress, one
 *   past the clock, `now()`; later writes never go below it: see
 *   `pullMark()`), and puts it in every token of the pull. Such a tombstone
 *   can only have been purged if the horizon passed `S`, that is, if it was
 *   written after the pull began and purged before it ended.
 *
 * `S` would be wrong for a pull that began with a cursor: the client also
 * holds records from earlier pulls, whose tombstones may predate `S`. Such a
 * pull gets no `S`: its bound is its cursor (the first bullet), which is
 * also the mark its tokens carry.
 *
 * The bound of a page is the larger of the two that apply, and the next
 * token carries it on, so each later page of the pull (and a resumed pull
 * that brings the token back) keeps it. Without the mark, page 2 of a fresh
 * pull has a cursor older than any purged tombstone and gets `410`, the
 * resync starts over, and gets `410` on page 2 again, forever.
 *
 * A token is an unsigned hint: one that does not decode, or names another
 * keyset position than `updatedSince`/`afterId`, is ignored (the keyset is
 * authoritative). A forged mark can only make its own principal miss its own
 * deletions; it reveals nothing of another's.
 *
 * @module
 */

/** The version tag of the tokens this module writes. */
const VERSION = 2;

/** A token longer than this is not ours (ours stay under 2 KiB). */
const MAX_TOKEN_LENGTH = 4096;

/** What a page token names. */
export interface PageToken {
  /** The keyset position it continues from: the last item's `updated_at`. */
  readonly since: number;
  /** The last item's id. */
  readonly afterId: string;
  /** The pull's tombstone bound `M` (see the module doc). */
  readonly mark: number;
}

/**
 * Writes a page token: base64url of `[2, since, afterId, mark]`.
 *
 * @param token The position and mark.
 * @returns The token text (ASCII).
 */
export function encodePageToken(token: PageToken): string {
  // JSON.stringify escapes lone surrogates, so the text is ASCII-safe.
  const bytes = new TextEncoder().encode(
    JSON.stringify([VERSION, token.since, token.afterId, token.mark]),
  );
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(
    /=+$/,
    "",
  );
}

/**
 * Reads a page token, if it is one of ours and agrees with the request's
 * keyset; otherwise the request is served as if it had none.
 *
 * @param text The `pageToken` query parameter.
 * @param keyset The request's `updatedSince` (ms) and `afterId`.
 * @returns The token, or `null`.
 */
export function readPageToken(
  text: string,
  keyset: {
    readonly since: number | undefined;
    readonly afterId: string | undefined;
  },
): PageToken | null {
  const token = decode(text);
  if (
    token === null || keyset.since !== token.since ||
    keyset.afterId !== token.afterId
  ) {
    return null;
  }
  return token;
}

/**
 * The tombstone bound `M` of a page request (see the module doc).
 *
 * @param since The request's `updatedSince` (ms), if any.
 * @param token The agreeing token, if any.
 * @returns The bound, or `null` for a pull that began with no cursor.
 */
export function requestBound(
  since: number | undefined,
  token: PageToken | null,
): number | null {
  if (since === undefined) return null;
  return token === null ? since : Math.max(since, token.mark);
}

/**
 * Tells whether a page must be answered `410`: its tombstone bound is older
 * than the kind's purge horizon.
 *
 * @param bound The page's bound from {@linkcode requestBound}.
 * @param horizon The kind's horizon, or `null` when nothing was purged.
 * @returns `true` for `410`.
 */
export function isGone(bound: number | null, horizon: number | null): boolean {
  return bound !== null && horizon !== null && bound < horizon;
}

function decode(text: string): PageToken | null {
  if (text.length > MAX_TOKEN_LENGTH || !/^[A-Za-z0-9_-]*$/.test(text)) {
    return null;
  }
  try {
    const binary = atob(text.replaceAll("-", "+").replaceAll("_", "/"));
    const bytes = Uint8Array.from(binary, (char) => char.charCodeAt(0));
    const value: unknown = JSON.parse(
      new TextDecoder("utf-8", { fatal: true }).decode(bytes),
    );
    if (
      Array.isArray(value) && value.length === 4 && value[0] === VERSION &&
      Number.isSafeInteger(value[1]) && typeof value[2] === "string" &&
      Number.isSafeInteger(value[3])
    ) {
      return { since: value[1], afterId: value[2], mark: value[3] };
    }
  } catch {
    // Malformed base64, UTF-8 or JSON: not one of ours.
  }
  return null;
}
