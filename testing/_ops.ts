/**
 * The op list of a run, generated from its seed: a random mix of put,
 * patch, delete, putMany, sync and client reopen over a small id space (so
 * clients collide often), with run-level faults (clock skew, server
 * restart, tombstone purge) among them. Private.
 *
 * @module
 */

import { createPrng, deriveSeed } from "./_prng.ts";
import type { ChaosOp, EventRates } from "./_types.ts";

/** What the generator needs. */
export interface GenerateOptions {
  /** The run's seed. */
  readonly seed: number;
  /** How many ops. */
  readonly ops: number;
  /** How many clients. */
  readonly clients: number;
  /** The tables. */
  readonly kinds: readonly string[];
  /** Records per table. */
  readonly ids: number;
  /** Rates of the run-level faults. */
  readonly events: EventRates;
}

/**
 * Generates a run's ops.
 *
 * @param options The seed and the shape of the run.
 * @returns The ops.
 */
export function generateOps(options: GenerateOptions): ChaosOp[] {
  const random = createPrng(deriveSeed(options.seed, "ops"));
  const { events } = options;
  const ops: ChaosOp[] = [];
  const id = () => `r${random.int(0, options.ids - 1)}`;
  for (let i = 0; i < options.ops; i++) {
    const client = random.int(0, options.clients - 1);
    const kind = random.pick(options.kinds);
    const mark = `c${client}.${i}`;
    const roll = random.next();
    if (random.chance(events.restart)) {
      ops.push({ type: "restart" });
    } else if (random.chance(events.purge)) {
      ops.push({ type: "purge" });
    } else if (random.chance(events.skew)) {
      const ms = random.chance(0.3) ? 0 : random.int(-600_000, 600_000);
      ops.push({ type: "skew", client, ms });
    } else if (random.chance(events.reopen)) {
      ops.push({ type: "reopen", client });
    } else if (roll < 0.3) {
      ops.push({ type: "put", client, kind, id: id(), mark, n: i });
    } else if (roll < 0.5) {
      ops.push({ type: "patch", client, kind, id: id(), mark, n: i });
    } else if (roll < 0.62) {
      ops.push({ type: "delete", client, kind, id: id() });
    } else if (roll < 0.68) {
      const ids = [...new Set([id(), id(), id()])].sort();
      ops.push({ type: "putMany", client, kind, ids, mark });
    } else {
      ops.push({ type: "sync", client });
    }
  }
  return ops;
}

/**
 * One line per op, for a failure report.
 *
 * @param ops The ops.
 * @returns The text.
 */
export function formatOps(ops: readonly ChaosOp[]): string {
  return ops.map((op) => {
    switch (op.type) {
      case "put":
      case "patch":
        return `c${op.client} ${op.type} ${op.kind}/${op.id} w=${op.mark}`;
      case "delete":
        return `c${op.client} delete ${op.kind}/${op.id}`;
      case "putMany":
        return `c${op.client} putMany ${op.kind}/[${
          op.ids.join(",")
        }] w=${op.mark}`;
      case "sync":
      case "reopen":
        return `c${op.client} ${op.type}`;
      case "skew":
        return `c${op.client} skew ${op.ms} ms`;
      default:
        return op.type;
    }
  }).join("\n");
}
