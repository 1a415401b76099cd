/**
 * The change feed of the Deno KV server store (`kv.ts`): what every commit
 * writes so that other instances hear of it, and the reader that turns those
 * writes into {@linkcode StoreChange}s. Private to the store.
 *
 * ## Layout
 *
 * A commit that writes records adds, in the same atomic operation (or the
 * last part of a large commit), one change-log entry per 32 kinds under
 * `P, "l", at, uid, n` (`at` the writer's `Date.now()`, never going back
 * within one process; `uid` unique per commit, beginning with a per-process
 * sequence so that commits of one process in the same millisecond list in
 * commit order; `n` the entry's place in it) holding
 * `{ namespace, kinds, origin }`, with `expireIn` of a minute, and sets the
 * one head key `P, "lh"`. A blind set never conflicts, so commits of
 * different namespaces do not contend on the head.
 *
 * ## Reading
 *
 * Deno KV has no versionstamped keys, so the log is ordered by the writer's
 * clock, and a late or skewed writer may land slightly behind a reader's
 * position. The reader therefore lists from `SKEW_MS` before the newest
 * entry it saw and skips the entries it already delivered (a set of uids,
 * pruned with the window). It looks only when the head's versionstamp moved:
 * woken by `kv.watch([head])` where KV delivers it (Deno Deploy across
 * isolates; a local file only within one process), and by a poll of the
 * head every `pollMs` that works everywhere. Entries committed before the
 * feed started (versionstamp at or below the head's then, and older than
 * the call) are not delivered.
 *
 * @module
 */

import type { KvContext, Mutation } from "./_kv_commit.ts";
import type { ServerWrite, StoreChange } from "./store.ts";

/** How long a change-log entry lives. */
export const CHANGE_TTL_MS = 60_000;
/** How far behind the newest seen entry a reader lists again. */
export const SKEW_MS = 2_000;
/** The most kinds one change-log entry names. */
const KINDS_PER_ENTRY = 32;
/** The most kinds one commit logs; more are left out (hints are lossy). */
export const MAX_LOGGED_KINDS = 256;
/** A namespace longer than this (UTF-16 units) is not logged. */
const MAX_NAMESPACE_LENGTH = 8 * 1024;
/** The most entries one look lists; the rest waits for the next look. */
export const MAX_ENTRIES_PER_LOOK = 500;

/** The last `at` and sequence this process logged; see {@linkcode logClock}. */
let lastAt = 0;
let sequence = 0;

/**
 * The `at` and `uid` of one commit's change-log entries: `at` never below
 * the last one this process logged, `uid` a fixed-width base-36 sequence
 * (so same-millisecond commits of this process sort in commit order) and a
 * random part (so two processes never collide).
 */
function logClock(): { at: number; uid: string } {
  lastAt = Math.max(lastAt, Date.now());
  sequence = (sequence + 1) % 36 ** 8;
  const uid = `${
    sequence.toString(36).padStart(8, "0")
  }-${crypto.randomUUID()}`;
  return { at: lastAt, uid };
}

/** A change-log entry as kept under `P, "l", at, uid, n`. */
interface StoredChange {
  readonly namespace: string;
  readonly kinds: string[];
  /** The store object that committed it. */
  readonly origin: string;
}

/**
 * The change-log mutations of one commit: its entries and the head.
 *
 * @param context The store.
 * @param origin The committing store object's id.
 * @param namespace The commit's namespace.
 * @param writes The commit's writes.
 * @returns The mutations; none when no record is written.
 */
export function changeMutations(
  context: KvContext,
  origin: string,
  namespace: string,
  writes: readonly ServerWrite[],
): Mutation[] {
  if (namespace.length > MAX_NAMESPACE_LENGTH) return [];
  const kinds = new Set<string>();
  for (const write of writes) {
    if (write.type !== "record") continue;
    if (kinds.size >= MAX_LOGGED_KINDS) break;
    kinds.add(write.record.kind);
  }
  if (kinds.size === 0) return [];
  const all = [...kinds];
  const { at, uid } = logClock();
  const mutations: Mutation[] = [];
  for (let start = 0; start < all.length; start += KINDS_PER_ENTRY) {
    const value: StoredChange = {
      namespace,
      kinds: all.slice(start, start + KINDS_PER_ENTRY),
      origin,
    };
    mutations.push({
      type: "set",
      key: [...context.keys.all, "l", at, uid, start / KINDS_PER_ENTRY],
      value,
      expireIn: CHANGE_TTL_MS,
    });
  }
  mutations.push({ type: "set", key: changesHead(context), value: at });
  return mutations;
}

/** The options of {@linkcode readChanges}. */
export interface ReadChangesOptions {
  /** How often the head is polled, in ms. */
  readonly pollMs: number;
  /** Whether `kv.watch()` wakes the reader too. */
  readonly watch: boolean;
  /** The reading store object's id. */
  readonly origin: string;
  /** The most entries one look lists. */
  readonly maxEntries?: number;
}

/**
 * The committed changes of every instance, from now until `signal` aborts:
 * one {@linkcode StoreChange} per namespace per look, kinds merged.
 *
 * @param context The store.
 * @param signal Ends the feed.
 * @param options Poll interval and wake-ups.
 * @returns The feed.
 */
export function readChanges(
  context: KvContext,
  signal: AbortSignal,
  options: ReadChangesOptions,
): AsyncIterable<StoreChange> {
  // Taken at the call, so a commit made right after it is delivered even
  // before the first read of the head.
  const startedAt = Date.now();
  return feed(context, signal, options, startedAt);
}

async function* feed(
  context: KvContext,
  signal: AbortSignal,
  options: ReadChangesOptions,
  startedAt: number,
): AsyncGenerator<StoreChange> {
  if (signal.aborted) return;
  const { kv } = context;
  const head = changesHead(context);
  const maxEntries = options.maxEntries ?? MAX_ENTRIES_PER_LOOK;
  // Ends the watch and the wait when the caller aborts or stops iterating.
  const stop = new AbortController();
  const onAbort = (): void => stop.abort();
  signal.addEventListener("abort", onAbort);
  const waker = new Waker(stop.signal);
  const watching = options.watch
    ? watchHead(kv, head, waker, stop.signal)
    : null;
  try {
    const first = await kv.get(head);
    const floor = first.versionstamp ?? "";
    // The first look always lists: commits since the call may be older
    // than the head just read.
    let lastHead: string | null | undefined = undefined;
    let newest = startedAt;
    /** Where the next look lists from when the last one stopped at its bound. */
    let resume: Deno.KvKey | null = null;
    const seen = new Map<string, number>();
    while (!signal.aborted) {
      const now = await kv.get(head);
      if (signal.aborted) break;
      if (resume !== null || now.versionstamp !== lastHead) {
        lastHead = now.versionstamp;
        const prefix = [...context.keys.all, "l"];
        const start: Deno.KvKey = resume ?? [...prefix, newest - SKEW_MS];
        const changes = new Map<
          string,
          { kinds: Set<string>; local: boolean }
        >();
        let listed = 0;
        let last: Deno.KvKey | null = null;
        for await (
          const entry of kv.list<StoredChange>(
            { start, end: [...prefix, Infinity] },
            { limit: maxEntries, batchSize: Math.min(maxEntries, 500) },
          )
        ) {
          listed++;
          last = entry.key;
          const [at, commit, part] = entry.key.slice(-3);
          if (typeof at !== "number" || typeof commit !== "string") continue;
          const uid = `${commit}/${String(part)}`;
          if (seen.has(uid)) continue;
          seen.set(uid, at);
          if (at > newest) newest = at;
          const value = entry.value;
          if (entry.versionstamp <= floor && at < startedAt) continue;
          if (
            value === null || typeof value.namespace !== "string" ||
            !Array.isArray(value.kinds)
          ) continue;
          let change = changes.get(value.namespace);
          if (change === undefined) {
            change = { kinds: new Set(), local: true };
            changes.set(value.namespace, change);
          }
          for (const kind of value.kinds) {
            if (change.kinds.size >= MAX_LOGGED_KINDS) break;
            change.kinds.add(kind);
          }
          if (value.origin !== options.origin) change.local = false;
        }
        // The resume key sits inside the range: listing from it repeats
        // one seen entry, which is skipped.
        resume = listed >= maxEntries ? last : null;
        for (const [uid, at] of seen) {
          if (at < newest - 2 * SKEW_MS) seen.delete(uid);
        }
        for (const [namespace, { kinds, local }] of changes) {
          if (kinds.size === 0 || signal.aborted) continue;
          yield { namespace, kinds: [...kinds], local };
        }
        if (resume !== null) continue;
      }
      await waker.wait(options.pollMs);
    }
  } catch (error) {
    // The store closed its database under a read: the feed just ends.
    if (!signal.aborted) throw error;
  } finally {
    signal.removeEventListener("abort", onAbort);
    stop.abort();
    waker.stop();
    await watching;
  }
}

/** The head key every commit that logs a change sets. */
function changesHead(context: KvContext): Deno.KvKey {
  return [...context.keys.all, "lh"];
}

/** Wakes a waiting reader: on a timer, a watch event, or the abort. */
class Waker {
  readonly #signal: AbortSignal;
  #wake: (() => void) | null = null;
  /** A wake-up that came while nobody waited. */
  #woken = false;
  readonly #onAbort = (): void => this.wake();

  constructor(signal: AbortSignal) {
    this.#signal = signal;
    signal.addEventListener("abort", this.#onAbort);
  }

  /** Wakes the reader now, or at its next wait. */
  wake(): void {
    if (this.#wake === null) this.#woken = true;
    else this.#wake();
  }

  /** Waits for a wake-up or `ms`. */
  wait(ms: number): Promise<void> {
    if (this.#woken || this.#signal.aborted) {
      this.#woken = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#wake = null;
        resolve();
      };
      const timer = Number.isFinite(ms) ? setTimeout(done, ms) : undefined;
      this.#wake = done;
    });
  }

  /** Stops listening to the signal. */
  stop(): void {
    this.#signal.removeEventListener("abort", this.#onAbort);
  }
}

/**
 * Wakes the reader on every change of the head that `kv.watch()` delivers,
 * until the signal aborts. Where watch fails, the poll alone serves.
 */
async function watchHead(
  kv: Deno.Kv,
  head: Deno.KvKey,
  waker: Waker,
  signal: AbortSignal,
): Promise<void> {
  let reader: ReadableStreamDefaultReader<unknown> | null = null;
  const cancel = (): void => {
    reader?.cancel().catch(() => {});
  };
  signal.addEventListener("abort", cancel);
  try {
    reader = kv.watch([head]).getReader();
    if (signal.aborted) cancel();
    for (;;) {
      const { done } = await reader.read();
      if (done || signal.aborted) return;
      waker.wake();
    }
  } catch {
    // No watch here (or it broke): the poll of the head still serves.
  } finally {
    signal.removeEventListener("abort", cancel);
  }
}
