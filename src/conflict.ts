/**
 * Conflict strategies (ENGINE.md "Conflicts"): what the client does when the
 * server answers `409` because it holds a version the client did not edit.
 * Pure decisions: the engine applies them.
 *
 * @module
 */

import type { JsonObject } from "./json.ts";
import { autoPreserveMerge, type MergeResult } from "./merge.ts";

/** How a table resolves conflicts. */
export type ConflictStrategy =
  /** Field-level merge, then a forced write (the default). */
  | "autoPreserve"
  /** Take the server's record; drop the local op. */
  | "serverWins"
  /** Force the local data (or the local delete) onto the server. */
  | "clientWins"
  /** The later of the local edit and the server's `updated_at` wins. */
  | "lastWriteWins"
  /** Force `mergeFn(local, server)` onto the server. */
  | "merge"
  /** Ask the resolver; without one, defer to the conflict inbox. */
  | "manual";

/** The strategies, for validation and docs. */
export const CONFLICT_STRATEGIES: readonly ConflictStrategy[] = [
  "autoPreserve",
  "serverWins",
  "clientWins",
  "lastWriteWins",
  "merge",
  "manual",
];

/** A conflict, as a resolver sees it. */
export interface Conflict {
  /** The table. */
  readonly kind: string;
  /** The record's id. */
  readonly id: string;
  /** The conflicting op. */
  readonly opId: string;
  /** Whether the local op writes or deletes. */
  readonly opType: "upsert" | "delete";
  /** The local data the op carries; `null` for a local delete. */
  readonly local: JsonObject | null;
  /** The server's record; `null` when the server sent none. */
  readonly server: JsonObject | null;
  /** Whether the server's record is a tombstone. */
  readonly serverDeleted: boolean;
  /** The server version the client edited, when known. */
  readonly base: JsonObject | null;
  /** The fields the client changed; `null` when unknown. */
  readonly changedFields: readonly string[] | null;
  /** The client's clock at the local edit (ms), when known. */
  readonly localUpdatedAt: number | null;
  /** The server record's `updated_at`, when known. */
  readonly serverUpdatedAt: string | null;
}

/** What a resolver (or the app, through the conflict inbox) decides. */
export type Resolution =
  | { readonly type: "acceptServer" }
  | { readonly type: "acceptClient" }
  | { readonly type: "acceptMerged"; readonly data: JsonObject }
  | { readonly type: "defer" }
  | { readonly type: "discard" };

/** Decides a conflict for the `manual` strategy. */
export type ConflictResolver = (
  conflict: Conflict,
) => Resolution | Promise<Resolution>;

/** Combines local and server data for the `merge` strategy. */
export type MergeFunction = (
  local: JsonObject,
  server: JsonObject,
  conflict: Conflict,
) => JsonObject;

/**
 * Resolution constructors, for resolvers and the conflict inbox.
 *
 * @example A resolver that keeps the server's title and the local rest
 * ```ts
 * import { Resolutions, type ConflictResolver } from "@offline-first/sync";
 * import assert from "node:assert/strict";
 *
 * const resolver: ConflictResolver = (conflict) =>
 *   conflict.local === null || conflict.server === null
 *     ? Resolutions.defer()
 *     : Resolutions.acceptMerged({
 *       ...conflict.local,
 *       title: conflict.server.title ?? null,
 *     });
 * const resolution = await resolver({
 *   kind: "todos",
 *   id: "1",
 *   opId: "01",
 *   opType: "upsert",
 *   local: { id: "1", title: "mine", done: true },
 *   server: { id: "1", title: "theirs", done: false },
 *   serverDeleted: false,
 *   base: null,
 *   changedFields: null,
 *   localUpdatedAt: null,
 *   serverUpdatedAt: null,
 * });
 * assert.deepEqual(resolution, {
 *   type: "acceptMerged",
 *   data: { id: "1", title: "theirs", done: true },
 * });
 * ```
 */
export const Resolutions: {
  acceptServer(): Resolution;
  acceptClient(): Resolution;
  acceptMerged(data: JsonObject): Resolution;
  defer(): Resolution;
  discard(): Resolution;
} = {
  /**
   * Takes the server's record and drops the local op.
   *
   * @returns The resolution.
   */
  acceptServer(): Resolution {
    return { type: "acceptServer" };
  },
  /**
   * Forces the local data (or delete) onto the server.
   *
   * @returns The resolution.
   */
  acceptClient(): Resolution {
    return { type: "acceptClient" };
  },
  /**
   * Forces the given data onto the server.
   *
   * @param data The record to store.
   * @returns The resolution.
   */
  acceptMerged(data: JsonObject): Resolution {
    return { type: "acceptMerged", data };
  },
  /**
   * Parks the op in the conflict inbox for later.
   *
   * @returns The resolution.
   */
  defer(): Resolution {
    return { type: "defer" };
  },
  /**
   * Drops the local op; the local record becomes the server's.
   *
   * @returns The resolution.
   */
  discard(): Resolution {
    return { type: "discard" };
  },
};

/** The conflict settings of one table. */
export interface ConflictPolicy {
  /** The strategy. */
  readonly strategy: ConflictStrategy;
  /** The resolver for `manual`. */
  readonly resolver: ConflictResolver | undefined;
  /** The merge function for `merge`. */
  readonly mergeFn: MergeFunction | undefined;
  /** Fields that always come from the server. */
  readonly systemFields: readonly string[];
}

/** What the engine does about a conflict. */
export type ConflictDecision =
  /** Take the server's record locally; drop the op. */
  | { readonly type: "acceptServer" }
  /** Drop the op; take the server's record locally. */
  | { readonly type: "discard" }
  /** Park the op in the conflict inbox. */
  | { readonly type: "defer" }
  /** Re-send as a forced write: `data`, or a forced delete when `null`. */
  | {
    readonly type: "write";
    readonly resolution: "acceptClient" | "acceptMerged";
    readonly data: JsonObject | null;
    /** The field merge behind an `acceptMerged`, for the `dataMerged` event. */
    readonly merge?: MergeResult;
  };

/** Context for {@linkcode decideConflict}. */
export interface DecideOptions {
  /**
   * The measured skew of the client clock: server time minus client time,
   * in ms. `lastWriteWins` adds it to the local edit time.
   *
   * @default 0
   */
  readonly clockSkewMs?: number;
}

/**
 * Decides a conflict under a policy.
 *
 * Deletes follow the same strategies; where a strategy has no data to work
 * on (a local delete, a server tombstone), `autoPreserve` and `merge`
 * preserve data: a local edit of a record the server deleted is re-created,
 * and a local delete of a record the server edited keeps the server's edit.
 *
 * @param conflict The conflict.
 * @param policy The table's strategy, resolver and merge function.
 * @param options The measured clock skew.
 * @returns The decision.
 *
 * @example Deciding with serverWins
 * ```ts
 * import { decideConflict } from "./conflict.ts";
 * import assert from "node:assert/strict";
 *
 * const decision = await decideConflict({
 *   kind: "todos",
 *   id: "1",
 *   opId: "01",
 *   opType: "upsert",
 *   local: { id: "1", title: "mine" },
 *   server: { id: "1", title: "theirs" },
 *   serverDeleted: false,
 *   base: null,
 *   changedFields: ["title"],
 *   localUpdatedAt: null,
 *   serverUpdatedAt: null,
 * }, {
 *   strategy: "serverWins",
 *   resolver: undefined,
 *   mergeFn: undefined,
 *   systemFields: ["id"],
 * });
 * assert.equal(decision.type, "acceptServer");
 * ```
 */
export async function decideConflict(
  conflict: Conflict,
  policy: ConflictPolicy,
  options: DecideOptions = {},
): Promise<ConflictDecision> {
  switch (policy.strategy) {
    case "serverWins":
      return { type: "acceptServer" };
    case "clientWins":
      return acceptClient(conflict);
    case "lastWriteWins":
      return lastWriteWins(conflict, options.clockSkewMs ?? 0);
    case "merge":
      return mergeWith(conflict, policy);
    case "manual":
      return policy.resolver === undefined
        ? { type: "defer" }
        : fromResolution(conflict, await policy.resolver(conflict));
    case "autoPreserve":
      return autoPreserve(conflict, policy);
  }
}

/**
 * Turns an app's {@linkcode Resolution} into a decision.
 *
 * @param conflict The conflict.
 * @param resolution What the app decided.
 * @returns The decision.
 * @throws {TypeError} When the resolution is not one of the five forms.
 */
export function fromResolution(
  conflict: Conflict,
  resolution: Resolution,
): ConflictDecision {
  switch (resolution?.type) {
    case "acceptServer":
      return { type: "acceptServer" };
    case "acceptClient":
      return acceptClient(conflict);
    case "acceptMerged":
      return {
        type: "write",
        resolution: "acceptMerged",
        data: resolution.data,
      };
    case "defer":
      return { type: "defer" };
    case "discard":
      return { type: "discard" };
    default:
      throw new TypeError(
        `Cannot resolve conflict as the resolution is not acceptServer, acceptClient, acceptMerged, defer or discard: current value is ${
          JSON.stringify(resolution)
        }`,
      );
  }
}

function acceptClient(conflict: Conflict): ConflictDecision {
  return {
    type: "write",
    resolution: "acceptClient",
    data: conflict.opType === "delete" ? null : conflict.local,
  };
}

function lastWriteWins(
  conflict: Conflict,
  clockSkewMs: number,
): ConflictDecision {
  const serverTime = conflict.serverUpdatedAt === null
    ? Number.NaN
    : Date.parse(conflict.serverUpdatedAt);
  if (conflict.localUpdatedAt === null || Number.isNaN(serverTime)) {
    // Without both instants there is nothing to compare: ties go to the server.
    return { type: "acceptServer" };
  }
  const localTime = conflict.localUpdatedAt + clockSkewMs;
  return localTime > serverTime
    ? acceptClient(conflict)
    : { type: "acceptServer" };
}

function mergeWith(
  conflict: Conflict,
  policy: ConflictPolicy,
): ConflictDecision {
  if (
    policy.mergeFn === undefined || conflict.local === null ||
    conflict.server === null || conflict.serverDeleted
  ) {
    return autoPreserve(conflict, policy);
  }
  return {
    type: "write",
    resolution: "acceptMerged",
    data: policy.mergeFn(conflict.local, conflict.server, conflict),
  };
}

function autoPreserve(
  conflict: Conflict,
  policy: ConflictPolicy,
): ConflictDecision {
  if (conflict.opType === "delete") {
    // The server edited a record the client deleted: keeping the edit loses
    // nothing the user cannot delete again; forcing the delete would.
    return { type: "acceptServer" };
  }
  if (conflict.server === null || conflict.serverDeleted) {
    // The server deleted a record the client edited: re-create it with the
    // local data rather than lose the edit.
    return acceptClient(conflict);
  }
  const merge = autoPreserveMerge({
    local: conflict.local ?? {},
    server: conflict.server,
    base: conflict.base,
    changedFields: conflict.changedFields,
    systemFields: policy.systemFields,
  });
  return { type: "write", resolution: "acceptMerged", data: merge.data, merge };
}
