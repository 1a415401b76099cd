/**
 * A table's pull cursor (ENGINE.md clause 10): where its pull stands, as
 * stored in the metadata, and the position it names.
 *
 * @module
 */

import type { Position } from "./_context.ts";
import { isJsonObject, type JsonObject, type JsonValue } from "./json.ts";
import { parseTimestamp } from "./timestamp.ts";

/** A request position: a cursor and the token the server gave with it. */
export interface PullFrom {
  /** The `updated_at` of the last item passed. */
  readonly updatedAt: string;
  /** The id of the last item passed, or a valid stand-in past it. */
  readonly id: string;
  /** The server's hint for the next page, when it gave one. */
  readonly pageToken: string | null;
}

/** Where a table's pull stands: the last item passed and the page hint. */
export interface PullCursor extends PullFrom {
  /**
   * Present on a cursor that ends part of a page applied in several writes:
   * where that page was requested from (`null`: from no cursor). The
   * middle of a page has no token (the server's token names the page's
   * end), so a pull resumed there after a crash may meet `410` where the
   * page's own request, which may carry the server's mark of a pull that
   * began with no cursor, would not: it then goes back to that request.
   */
  readonly pageStart?: PullFrom | null;
}

/**
 * The metadata key of a table's cursor.
 *
 * @param kind The table.
 * @returns The key.
 */
export function cursorKey(kind: string): string {
  return `cursor/${kind}`;
}

/** Reads a stored request position, or `undefined` when malformed. */
function parseFrom(value: JsonValue | undefined): PullFrom | undefined {
  if (
    !isJsonObject(value) || typeof value.updatedAt !== "string" ||
    typeof value.id !== "string" || parseTimestamp(value.updatedAt) === null
  ) {
    return undefined;
  }
  return {
    updatedAt: value.updatedAt,
    id: value.id,
    pageToken: typeof value.pageToken === "string" ? value.pageToken : null,
  };
}

/** Reads and validates a stored cursor. */
export function parseCursor(value: JsonValue | undefined): PullCursor | null {
  const from = parseFrom(value);
  if (from === undefined) return null;
  const object = value as JsonObject;
  if (!Object.hasOwn(object, "pageStart")) return from;
  const pageStart = object.pageStart === null
    ? null
    : parseFrom(object.pageStart);
  return pageStart === undefined ? from : { ...from, pageStart };
}

/** The position a request position names. */
export function positionOf(from: PullFrom | null): Position | null {
  if (from === null) return null;
  return {
    updatedAt: from.updatedAt,
    time: parseTimestamp(from.updatedAt)!,
    id: from.id,
  };
}
