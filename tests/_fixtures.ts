/**
 * Builders shared by the storage and outbox tests.
 *
 * @module
 */

import type { StoredOp } from "../src/storage.ts";

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
