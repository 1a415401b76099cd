/**
 * The storage conformance suite: the optional `watchMeta()`, for storages
 * that have it: a committed write of a watched meta entry is told, and the
 * iteration ends when its signal aborts or the storage closes. Storages
 * without it skip these cases.
 *
 * Part of the published suite (`storage/conformance.ts`), not exported
 * from the package on its own; it depends only on the storage contract.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type Case, commit, putMeta } from "./_conformance_kit.ts";

/** How long a hint may take before the case fails. */
const HINT_MS = 5_000;

/** `promise`, or a rejection naming `what` after `ms`. */
async function within<T>(
  ms: number,
  what: string,
  promise: Promise<T>,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new assert.AssertionError({ message: `${what} within ${ms} ms` }),
            ),
          ms,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** The cases on `watchMeta()`, in order. */
export const WATCH_CASES: readonly Case[] = [
  {
    clause: "watchMeta() tells of a committed write of a watched meta entry",
    needs: (profile) => profile.watchMeta,
    async run({ storage }): Promise<void> {
      const stop = new AbortController();
      try {
        const hints = storage.watchMeta!(["watched", "other"], {
          signal: stop.signal,
        })[Symbol.asyncIterator]();
        const next = hints.next();
        // The watch may start after the call returns: write until told.
        let told = false;
        next.then(() => told = true, () => {});
        for (let n = 1; !told && n <= HINT_MS / 50; n++) {
          await commit(storage, [putMeta("watched", n)]);
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        const first = await within(HINT_MS, "expected a hint", next);
        assert.equal(first.done, false, "the iteration ended instead");
      } finally {
        stop.abort();
      }
    },
  },
  {
    clause: "watchMeta() ends when its signal aborts",
    needs: (profile) => profile.watchMeta,
    async run({ storage }): Promise<void> {
      const stop = new AbortController();
      const hints = storage.watchMeta!(["watched"], { signal: stop.signal })[
        Symbol.asyncIterator
      ]();
      const next = hints.next();
      stop.abort();
      const end = await within(HINT_MS, "expected the end", next);
      assert.equal(end.done, true);
    },
  },
  {
    clause: "watchMeta() ends when the storage closes",
    needs: (profile) => profile.watchMeta,
    async run({ storage }): Promise<void> {
      const stop = new AbortController();
      try {
        const hints = storage.watchMeta!(["watched"], {
          signal: stop.signal,
        })[Symbol.asyncIterator]();
        const next = hints.next();
        await storage.close();
        const end = await within(HINT_MS, "expected the end", next);
        assert.equal(end.done, true);
      } finally {
        stop.abort();
      }
    },
  },
];
