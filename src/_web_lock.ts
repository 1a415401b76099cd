/**
 * The syncer election of a browser origin's tabs and workers (ENGINE.md
 * clause 26 for browsers): the Web Locks API grants one exclusive lock per
 * name per origin, queues the other requests, and hands the lock to the
 * next one the moment its holder's page closes or crashes. An engine with
 * `shared: { webLock }` takes the store's lease only while it holds this
 * lock, and takes it at once when the lock comes to it: no waiting out the
 * lease of a tab that is gone.
 *
 * @module
 */

/** The part of `navigator.locks` the election uses. */
interface LockManagerLike {
  request(
    name: string,
    options: { readonly mode: "exclusive"; readonly signal: AbortSignal },
    callback: () => Promise<void>,
  ): Promise<unknown>;
}

/**
 * The origin's Web Locks, or `undefined` where there are none (Deno, Node,
 * an insecure context).
 *
 * @returns The lock manager.
 */
export function webLocks(): LockManagerLike | undefined {
  const locks = (globalThis as { navigator?: { locks?: unknown } }).navigator
    ?.locks;
  return typeof (locks as LockManagerLike | undefined)?.request === "function"
    ? locks as LockManagerLike
    : undefined;
}

/** One engine's place in the queue for the syncer's Web Lock. */
export class WebLockGate {
  #held = false;
  #stop = new AbortController();
  #release: (() => void) | null = null;

  /**
   * Queues for the lock; `granted` is called when it comes.
   *
   * @param locks The lock manager.
   * @param name The lock's name.
   * @param granted Called once this engine holds the lock.
   */
  constructor(locks: LockManagerLike, name: string, granted: () => void) {
    locks.request(
      `offline-first-sync/syncer/${name}`,
      { mode: "exclusive", signal: this.#stop.signal },
      () =>
        new Promise<void>((resolve) => {
          if (this.#stop.signal.aborted) return resolve();
          this.#release = resolve;
          this.#held = true;
          granted();
        }),
    ).catch(() => {
      // Aborted by close() before it was granted.
    });
  }

  /** Whether this engine holds the lock. */
  get held(): boolean {
    return this.#held;
  }

  /** Leaves the queue, or gives the lock to the next engine. */
  close(): void {
    this.#held = false;
    this.#stop.abort();
    this.#release?.();
    this.#release = null;
  }
}
