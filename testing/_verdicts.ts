/**
 * The named checks run after the heal phase: convergence, no lost
 * acknowledged write, exactly-once effect, no stuck client and no server
 * error of its own. Each returns a {@linkcode Verdict}. Private.
 *
 * @module
 */

import type { ConflictStrategy } from "../src/conflict.ts";
import type { Ledger } from "./_ledger.ts";
import type { RunModel } from "./_model.ts";
import type { Verdict } from "./_types.ts";

const MAX_PROBLEMS = 5;

function verdict(problems: readonly string[]): Verdict {
  if (problems.length === 0) return { status: "pass", detail: "" };
  const shown = problems.slice(0, MAX_PROBLEMS).join("; ");
  const more = problems.length > MAX_PROBLEMS
    ? ` (and ${problems.length - MAX_PROBLEMS} more)`
    : "";
  return { status: "fail", detail: shown + more };
}

/** Records as JSON with sorted keys, for comparing. */
export function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, item) => {
    if (typeof item !== "object" || item === null || Array.isArray(item)) {
      return item;
    }
    const sorted: Record<string, unknown> = {};
    for (const key of Object.keys(item).sort()) sorted[key] = item[key];
    return sorted;
  });
}

function isTombstone(record: Record<string, unknown>): boolean {
  return record.deleted_at !== undefined && record.deleted_at !== null;
}

/** A table's view, per client, and the server's. */
export interface Views {
  /** The server's records per table. */
  readonly server: ReadonlyMap<
    string,
    ReadonlyMap<string, Record<string, unknown>>
  >;
  /** Each client's records per table (tombstones included). */
  readonly clients: readonly ReadonlyMap<
    string,
    ReadonlyMap<string, Record<string, unknown>>
  >[];
}

/**
 * Convergence: every client's view equals the server's, per table: the
 * same live records with the same data and `updated_at`; a tombstone on
 * either side is a tombstone (or, once purged, absent) on the other.
 *
 * @param views The views.
 * @returns The verdict.
 */
export function checkConvergence(views: Views): Verdict {
  const problems: string[] = [];
  for (const [kind, server] of views.server) {
    views.clients.forEach((client, index) => {
      const local = client.get(kind) ?? new Map();
      const ids = new Set([...server.keys(), ...local.keys()]);
      for (const id of [...ids].sort()) {
        const s = server.get(id);
        const l = local.get(id);
        if (s !== undefined && l !== undefined) {
          if (canonical(s) !== canonical(l)) {
            problems.push(
              `c${index} ${kind}/${id}: client ${canonical(l)} ≠ server ${
                canonical(s)
              }`,
            );
          }
        } else if (s !== undefined && !isTombstone(s)) {
          problems.push(
            `c${index} ${kind}/${id}: missing, server has ${canonical(s)}`,
          );
        } else if (l !== undefined && !isTombstone(l)) {
          problems.push(
            `c${index} ${kind}/${id}: client has ${
              canonical(l)
            }, server has none`,
          );
        }
      }
    });
  }
  return verdict(problems);
}

/**
 * No lost acknowledged write. On the server: every write it acknowledged
 * is still there unless a later write replaced it (the final `updated_at`
 * is not older, and equal means the same write). On the clients: each
 * client's last write of a record reached the server, unless the table's
 * strategy may drop it (`serverWins`, `lastWriteWins`) or it was parked in
 * the inbox and resolved by taking the server's record. And no sync hid a
 * pending local write from the app (clause 11).
 *
 * @param model The run's model.
 * @param ledger The acknowledged writes.
 * @param views The final views.
 * @param strategies The tables' strategies.
 * @returns The verdict.
 */
export function checkNoLostWrite(
  model: RunModel,
  ledger: Ledger,
  views: Views,
  strategies: Readonly<Record<string, ConflictStrategy>>,
): Verdict {
  const problems: string[] = [...model.hidden];
  const acked = new Set<string>();
  for (const ack of ledger.acks) {
    if (ack.mark !== null) acked.add(`${ack.kind}/${ack.id}/${ack.mark}`);
    const final = views.server.get(ack.kind)?.get(ack.id);
    const at = Date.parse(ack.updatedAt);
    if (final === undefined) {
      // A purge removes tombstones: absent is right after a later delete.
      const deletedLater = ledger.acks.some((other) =>
        other.deleted && other.kind === ack.kind && other.id === ack.id &&
        Date.parse(other.updatedAt) >= at
      );
      if (!deletedLater) {
        problems.push(
          `server lost ${ack.kind}/${ack.id} (acknowledged ${ack.mark} at ${ack.updatedAt})`,
        );
      }
      continue;
    }
    const finalAt = Date.parse(String(final.updated_at));
    if (finalAt < at) {
      problems.push(
        `server's ${ack.kind}/${ack.id} went back from ${ack.updatedAt} to ${final.updated_at}`,
      );
    } else if (finalAt === at) {
      if (
        ack.deleted !== isTombstone(final) ||
        (ack.mark !== null && final.w !== ack.mark)
      ) {
        problems.push(
          `server's ${ack.kind}/${ack.id} at ${ack.updatedAt} is ${
            canonical(final)
          }, acknowledged ${canonical(ack.record)}`,
        );
      }
    }
  }
  for (const write of model.lastWrites.values()) {
    if (write.mark === null) continue;
    const strategy = strategies[write.kind];
    if (strategy === "serverWins" || strategy === "lastWriteWins") continue;
    if (acked.has(`${write.kind}/${write.id}/${write.mark}`)) continue;
    const resolution = model.inboxMarks.get(write.mark);
    if (resolution === "acceptServer") continue;
    problems.push(
      `c${write.client}'s last write ${write.kind}/${write.id} w=${write.mark} (${strategy}) never reached the server${
        resolution === undefined ? "" : ` (parked, resolved ${resolution})`
      }`,
    );
  }
  return verdict(problems);
}

/**
 * Exactly-once effect: no idempotency key and no write mark was applied
 * twice (two acknowledgements with different `updated_at`; a replay gives
 * back the same one).
 *
 * @param ledger The acknowledged writes.
 * @returns The verdict.
 */
export function checkExactlyOnce(ledger: Ledger): Verdict {
  const problems: string[] = [];
  const byKey = new Map<string, Set<string>>();
  const byMark = new Map<string, Set<string>>();
  for (const ack of ledger.acks) {
    if (ack.key !== null) {
      const key = `${ack.key}`;
      const seen = byKey.get(key) ?? new Set();
      seen.add(ack.updatedAt);
      byKey.set(key, seen);
    }
    if (ack.mark !== null) {
      const mark = `${ack.kind}/${ack.id}/${ack.mark}`;
      const seen = byMark.get(mark) ?? new Set();
      seen.add(ack.updatedAt);
      byMark.set(mark, seen);
    }
  }
  for (const [key, seen] of byKey) {
    if (seen.size > 1) {
      problems.push(
        `key ${key} applied ${seen.size} times (${[...seen].join(", ")})`,
      );
    }
  }
  for (const [mark, seen] of byMark) {
    if (seen.size > 1) {
      problems.push(
        `write ${mark} applied ${seen.size} times (${[...seen].join(", ")})`,
      );
    }
  }
  return verdict(problems);
}

/**
 * No stuck client: the model's problems (a sync over its timeout, a heal
 * sync that failed or made too many requests, no quiescence) plus ops left
 * in any client's outbox or inbox.
 *
 * @param model The run's model.
 * @param leftovers Ops left per client (`c0: 2 pending` …).
 * @returns The verdict.
 */
export function checkNoStuckClient(
  model: RunModel,
  leftovers: readonly string[],
): Verdict {
  return verdict([...model.stuck, ...leftovers]);
}

/**
 * No server error of its own: no `5xx` (but `503`) from the server and no
 * call of its `onError` hook.
 *
 * @param ledger The server's errors.
 * @returns The verdict.
 */
export function checkNoServerError(ledger: Ledger): Verdict {
  return verdict(ledger.serverErrors);
}
