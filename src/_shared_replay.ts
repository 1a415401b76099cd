/**
 * Replaying other engines' feed entries on a shared store (ENGINE.md clause
 * 26): their changes become `change` events read from the store, their
 * settled ops settle this engine's waits. Used by `_shared.ts`.
 *
 * @module
 */

import type { EventHub } from "./events.ts";
import type { FeedBody } from "./_feed.ts";
import type { JsonValue } from "./json.ts";
import type { OutcomeRegistry } from "./_outcomes.ts";
import type { WriteOutcome } from "./outcome.ts";
import { readFeedOutcomes, rebuildOutcome } from "./_shared_outcomes.ts";
import type { Storage } from "./storage.ts";

/** What replaying needs from its engine. */
export interface ReplayHost {
  readonly storage: Storage;
  readonly hub: EventHub;
  readonly outcomes: OutcomeRegistry;
}

/** Records read per `getRecords` call while replaying changes. */
const CHUNK = 100;

/** Replays other engines' feed entries as this engine's events. */
export class FeedReplay {
  /**
   * Set while a replayed event or outcome is delivered, so that the
   * coordinator does not announce it back to the feed.
   */
  replaying = false;
  readonly #host: ReplayHost;
  readonly #report: (error: unknown) => void;

  /**
   * Constructs a new instance.
   *
   * @param host The engine's storage, events and outcomes.
   * @param report Where a failed read goes (an `error` event).
   */
  constructor(host: ReplayHost, report: (error: unknown) => void) {
    this.#host = host;
    this.#report = report;
  }

  /**
   * Settles this engine's waits on ops another engine settled, each
   * outcome rebuilt from the store; a failed read leaves the wait for the
   * op's next settlement (or the engine's close).
   *
   * @param list The entry's outcomes, as read from the store.
   */
  async outcomes(list: unknown): Promise<void> {
    const outcomes = this.#host.outcomes;
    for (const item of readFeedOutcomes(list as JsonValue)) {
      if (!outcomes.has(item.opId)) continue;
      let outcome: WriteOutcome | null;
      try {
        outcome = await rebuildOutcome(this.#host.storage, item);
      } catch (error) {
        this.#report(error);
        continue;
      }
      if (outcome === null) continue;
      this.replaying = true;
      try {
        outcomes.settle(item.opId, outcome);
      } finally {
        this.replaying = false;
      }
    }
  }

  /**
   * Emits another engine's changes as `change` events, read from the store.
   *
   * @param changes The entry's changes.
   * @throws {StorageError} When the records could not be read.
   */
  async changes(
    changes: Extract<FeedBody, { changes: unknown }>["changes"],
  ): Promise<void> {
    const { origin, kinds } = changes;
    for (const [kind, ids] of Object.entries(kinds)) {
      if (ids === "*" || !Array.isArray(ids)) {
        this.missed([kind]);
        continue;
      }
      const names = strings(ids);
      for (let start = 0; start < names.length; start += CHUNK) {
        const chunk = names.slice(start, start + CHUNK);
        const records = await this.#host.storage.getRecords(kind, chunk);
        this.replaying = true;
        try {
          records.forEach((record, index) => {
            const gone = record === undefined || record.value.deleted;
            this.#host.hub.emit({
              type: "change",
              kind,
              id: chunk[index]!,
              data: gone ? null : record.value.data,
              deleted: gone,
              origin: origin === "local" ? "remote" : origin,
            });
          });
        } finally {
          this.replaying = false;
        }
      }
    }
  }

  /**
   * Tells watchers that changes were missed: they re-read.
   *
   * @param kinds The tables, or `null` for all.
   */
  missed(kinds: string[] | null): void {
    this.#host.hub.emit({ type: "changesMissed", kinds });
  }
}

/**
 * The strings of a list read from the store.
 *
 * @param list The list.
 * @returns Its strings, in order.
 */
export function strings(list: readonly unknown[]): string[] {
  return list.filter((item): item is string => typeof item === "string");
}
