/**
 * Builders shared by the storage and outbox tests.
 *
 * @module
 */

import type { JsonObject } from "../src/json.ts";
import type { StoredOp } from "../src/storage.ts";
import type { PullPage, PullRequest } from "../src/transport.ts";

/**
 * A pending upsert op of record `1` in table `todo` that was never sent;
 * `fields` override any part of it.
 *
 * @param opId The op's id.
 * @param fields Fields to override.
 * @returns The op.
 */
export function pendingOp(
  opId: string,
  fields: Partial<StoredOp> = {},
): StoredOp {
  return {
    opId,
    kind: "todo",
    id: "1",
    type: "upsert",
    payload: { title: "x" },
    baseUpdatedAt: null,
    base: null,
    changedFields: null,
    createdAt: 0,
    editedAt: 0,
    attempts: 0,
    revision: 0,
    conflicts: 0,
    force: false,
    state: "pending",
    error: null,
    conflict: null,
    ...fields,
  };
}

/**
 * The page a keyset server answers: the rows after the request's cursor in
 * `(updated_at, id)` order (the rows' own order), at most `limit` of them.
 *
 * @param rows Every row, in `(updated_at, id)` order.
 * @param request The cursor and the limit.
 * @returns The page, with no token.
 */
export function keysetPage(
  rows: readonly JsonObject[],
  request: Pick<PullRequest, "updatedSince" | "afterId" | "limit">,
): PullPage {
  const since = request.updatedSince;
  const after = rows.filter(({ id, updated_at: at }) =>
    since === null || (at as string) > since ||
    (at === since && (id as string) > request.afterId!)
  );
  return { items: after.slice(0, request.limit), nextPageToken: null };
}
