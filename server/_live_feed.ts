/**
 * Live hints across instances: while a `GET /live` stream is open, the
 * server reads its shared store's change feed (`ServerStore.changes`) and
 * tells its {@linkcode LiveHub} of the commits other instances made. Its own
 * commits it tells at once (`_core.ts`), so changes the feed marks `local`
 * are skipped. A feed that fails is reported to `onError` and read again
 * after a backoff; nothing here rejects unhandled.
 *
 * @module
 */

import { ClosedError } from "../src/errors.ts";
import type { LiveHub } from "./_live.ts";
import type { ServerStore } from "./store.ts";

/** The first wait (ms) before a failed feed is read again; doubled, capped. */
const FIRST_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 5_000;

/** Reads a store's change feed into a hub while streams are open. */
export class LiveFeed {
  readonly #store: ServerStore;
  readonly #hub: () => LiveHub;
  readonly #onError: (error: unknown) => void;
  /** Ends the current reading, if any. */
  #stop: AbortController | null = null;
  /** The readings not yet over (one, and any stopping), awaited by close(). */
  readonly #running = new Set<Promise<void>>();
  #closed = false;

  /**
   * A feed reader, idle until {@linkcode LiveFeed.active} says so.
   *
   * @param store The store; without `changes()`, the reader stays idle.
   * @param hub The hub to tell (read lazily: the hub is built after this).
   * @param onError Where a failing feed is reported.
   */
  constructor(
    store: ServerStore,
    hub: () => LiveHub,
    onError: (error: unknown) => void,
  ) {
    this.#store = store;
    this.#hub = hub;
    this.#onError = onError;
  }

  /**
   * Starts reading when the first stream opens, stops when the last ends.
   *
   * @param on Whether any stream is open.
   */
  active(on: boolean): void {
    if (!on || this.#closed) {
      this.#stop?.abort();
      this.#stop = null;
      return;
    }
    if (this.#store.changes === undefined || this.#stop !== null) return;
    const stop = new AbortController();
    this.#stop = stop;
    const running: Promise<void> = this.#read(stop.signal).finally(() => {
      this.#running.delete(running);
    });
    this.#running.add(running);
  }

  /**
   * Stops reading for good and waits for the reading to end.
   *
   * @returns When no timer or read of the feed is left.
   */
  async close(): Promise<void> {
    this.#closed = true;
    this.#stop?.abort();
    this.#stop = null;
    await Promise.all([...this.#running]);
  }

  /** Reads the feed until `signal` aborts, restarting it after failures. */
  async #read(signal: AbortSignal): Promise<void> {
    let backoff = FIRST_BACKOFF_MS;
    while (!signal.aborted) {
      try {
        // Started synchronously here, so a commit right after the stream
        // opened is told.
        for await (const change of this.#store.changes!(signal)) {
          if (signal.aborted) break;
          if (change.local === true) continue;
          this.#hub().publish(change.namespace, change.kinds);
          backoff = FIRST_BACKOFF_MS;
        }
        if (signal.aborted) return;
      } catch (error) {
        // A closed store has no feed left to read.
        if (signal.aborted || error instanceof ClosedError) return;
        this.#report(error);
      }
      await sleep(backoff / 2 + Math.random() * backoff / 2, signal);
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    }
  }

  #report(error: unknown): void {
    try {
      this.#onError(error);
    } catch {
      // A failing error hook must not end the feed.
    }
  }
}

/** Waits `ms`, or less when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}
