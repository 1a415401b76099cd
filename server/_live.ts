/**
 * Live hints (CONTRACT.md §Live hint): one `text/event-stream` per open
 * `GET /live`, fed by the server's own commits. A hint names kinds, never
 * records; a reader that falls behind gets one event naming every kind
 * changed meanwhile (the stream is pulled, so nothing piles up in it), and
 * an idle stream gets a `: ping` comment every heartbeat.
 *
 * @module
 */

const encoder = new TextEncoder();

/** The first bytes of every stream: a comment saying it is open. */
const OPENED = encoder.encode(": live\n\n");
/** The heartbeat comment. */
const PING = encoder.encode(": ping\n\n");
/**
 * The most kinds one event names; more changed kinds wait for the next
 * event. Also the most a stream holds pending: hints are lossy by contract
 * (clients keep an interval pull), memory is not.
 */
export const MAX_KINDS_PER_EVENT = 256;

/** The options of a {@linkcode LiveHub}. */
export interface LiveHubOptions {
  /** The longest a stream stays silent, in ms (a `: ping` after it). */
  readonly heartbeatMs: number;
  /** The most streams one principal may hold open. */
  readonly maxStreams: number;
  /**
   * Called with `true` when the first stream opens (synchronously, before
   * the stream is returned) and with `false` when the last one ends.
   */
  readonly onActive?: (active: boolean) => void;
}

/** One open stream. */
interface Subscriber {
  /** The kinds changed since the last event, in order of first change. */
  readonly pending: Set<string>;
  /** Ends the current wait, if the stream is waiting. */
  wake: (() => void) | null;
  /** Ends the stream from outside a read. */
  end: () => void;
  /** Whether the stream is over. */
  closed: boolean;
}

/** The open live streams of one server, by principal. */
export class LiveHub {
  readonly #options: LiveHubOptions;
  readonly #streams = new Map<string, Set<Subscriber>>();
  #closed = false;
  /** The open streams of every principal. */
  #open = 0;

  /**
   * Starts a hub with no stream.
   *
   * @param options Heartbeat and bound.
   */
  constructor(options: LiveHubOptions) {
    this.#options = options;
  }

  /**
   * The number of open streams of a principal, or of all principals.
   *
   * @param namespace The principal; absent, every principal.
   * @returns The count.
   */
  count(namespace?: string): number {
    if (namespace !== undefined) return this.#streams.get(namespace)?.size ?? 0;
    let total = 0;
    for (const set of this.#streams.values()) total += set.size;
    return total;
  }

  /**
   * Opens a stream for a principal.
   *
   * @param namespace The principal.
   * @returns The event stream, or `null` when the principal holds the most
   * streams it may (or the hub is closed).
   */
  open(namespace: string): ReadableStream<Uint8Array> | null {
    if (this.#closed) return null;
    let set = this.#streams.get(namespace);
    if (set === undefined) {
      set = new Set();
      this.#streams.set(namespace, set);
    }
    if (set.size >= this.#options.maxStreams) return null;
    const streams = this.#streams;
    const subscriber: Subscriber = {
      pending: new Set(),
      wake: null,
      end: () => {},
      closed: false,
    };
    const drop = (): void => {
      if (subscriber.closed) return;
      subscriber.closed = true;
      set.delete(subscriber);
      this.#active(-1);
      if (set.size === 0 && streams.get(namespace) === set) {
        streams.delete(namespace);
      }
      subscriber.wake?.();
    };
    set.add(subscriber);
    this.#active(+1);
    let opened = false;
    return new ReadableStream<Uint8Array>({
      start: (controller) => {
        subscriber.end = () => {
          drop();
          try {
            controller.close();
          } catch {
            // Already closed or errored: nothing to end.
          }
        };
      },
      pull: async (controller) => {
        if (!opened) {
          opened = true;
          controller.enqueue(OPENED);
          return;
        }
        if (subscriber.pending.size === 0 && !subscriber.closed) {
          await this.#wait(subscriber);
        }
        if (subscriber.closed) {
          subscriber.end();
          return;
        }
        controller.enqueue(next(subscriber.pending));
      },
      cancel: drop,
    }, { highWaterMark: 0 });
  }

  /**
   * Tells a principal's streams that kinds changed. Call after the commit.
   *
   * @param namespace The principal whose records changed.
   * @param kinds The kinds written.
   */
  publish(namespace: string, kinds: Iterable<string>): void {
    const set = this.#streams.get(namespace);
    if (set === undefined) return;
    const changed = [...new Set(kinds)];
    if (changed.length === 0) return;
    for (const subscriber of set) {
      for (const kind of changed) {
        if (subscriber.pending.size >= MAX_KINDS_PER_EVENT) break;
        subscriber.pending.add(kind);
      }
      subscriber.wake?.();
    }
  }

  /** Ends every stream; later `open()` calls return `null`. Idempotent. */
  close(): void {
    this.#closed = true;
    for (const set of [...this.#streams.values()]) {
      for (const subscriber of [...set]) subscriber.end();
    }
    this.#streams.clear();
  }

  /** Counts streams; tells `onActive` when the first opens or the last ends. */
  #active(delta: number): void {
    this.#open += delta;
    if (this.#open === (delta > 0 ? 1 : 0)) {
      this.#options.onActive?.(delta > 0);
    }
  }

  /** Waits for a change, the end of the stream, or the heartbeat. */
  #wait(subscriber: Subscriber): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        subscriber.wake = null;
        resolve();
      };
      const timer = setTimeout(done, this.#options.heartbeatMs);
      subscriber.wake = done;
    });
  }
}

/** The next chunk: an event naming the pending kinds, or a ping. */
function next(pending: Set<string>): Uint8Array {
  if (pending.size === 0) return PING;
  const kinds = [...pending];
  pending.clear();
  return encoder.encode(
    `event: change\ndata: ${JSON.stringify({ kinds })}\n\n`,
  );
}
