/**
 * The REST transport's object: the {@linkcode Transport} that
 * `createRestTransport()` returns. It runs each call (the caller's signal,
 * close, the call's session) and hands pulls and pushes to their modules.
 *
 * @module
 */

import { ClosedError } from "../src/errors.ts";
import type {
  LiveCallOptions,
  LiveHint,
  PullPage,
  PullRequest,
  PushOp,
  PushResult,
  Transport,
  TransportCallOptions,
} from "../src/transport.ts";
import { BatchSupport, pushBatches } from "./_rest_batch.ts";
import type { ResolvedOptions } from "./_rest_options.ts";
import { readLive } from "./_rest_live.ts";
import { pullAction, pullPage } from "./_rest_pull.ts";
import { planPush, pushEach } from "./_rest_push.ts";
import { type Call, TokenSession } from "./_rest_session.ts";
import { RequestSignals } from "./_rest_signals.ts";
import { ServerDates } from "./_rest_wire.ts";

/** What a call runs under: its action, for messages, and the caller's signal. */
interface RunOptions {
  readonly action: string;
  readonly signal: AbortSignal | undefined;
}

/** A {@linkcode Transport} over `fetch`, as the wire contract describes. */
export class RestTransport implements Transport {
  readonly #options: ResolvedOptions;
  #closed = false;
  readonly #closing = new AbortController();
  readonly #inflight = new Set<Promise<unknown>>();
  readonly #batch: BatchSupport;
  readonly #dates = new ServerDates();

  /** A transport with the resolved options. */
  constructor(options: ResolvedOptions) {
    this.#options = options;
    this.#batch = new BatchSupport(options, this.#closing.signal);
  }

  async pull(
    request: PullRequest,
    options: TransportCallOptions = {},
  ): Promise<PullPage> {
    const action = pullAction(request);
    return await this.#run(
      { action, signal: options.signal },
      (call) => pullPage(call, request),
    );
  }

  async push(
    ops: readonly PushOp[],
    options: TransportCallOptions = {},
  ): Promise<PushResult[]> {
    const count = Array.isArray(ops) ? ops.length : 0;
    const action = `push ${count} ops`;
    return await this.#run({ action, signal: options.signal }, async (call) => {
      const work = planPush(ops);
      if (work.indices.length === 0) return work.results;
      if (await this.#batch.use(call)) {
        await pushBatches(call, work);
      } else {
        await pushEach(call, work);
      }
      return work.results;
    });
  }

  async *live(options: LiveCallOptions): AsyncGenerator<LiveHint> {
    if (this.#closed) {
      throw new ClosedError(
        "Cannot read live hints as the transport is closed",
      );
    }
    const signal = AbortSignal.any([this.#closing.signal, options.signal]);
    // close() waits for the stream's request to end, as for any call.
    const ended = Promise.withResolvers<void>();
    this.#inflight.add(ended.promise);
    try {
      yield* readLive(this.#options, {
        signal,
        onProblem: options.onProblem,
      });
    } finally {
      ended.resolve();
      this.#inflight.delete(ended.promise);
    }
    if (this.#closed && !options.signal.aborted) {
      throw new ClosedError(
        "Cannot read live hints as the transport was closed",
      );
    }
  }

  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#closing.abort(
        new ClosedError("Cannot continue the request as the transport closed"),
      );
    }
    await Promise.allSettled([...this.#inflight]);
  }

  /** Closes the transport, as {@linkcode RestTransport.close} does. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * Runs one call: rejects after close, links the caller's signal, and turns
   * what an abort left behind into the caller's reason or a `ClosedError`.
   */
  async #run<T>(
    run: RunOptions,
    body: (call: Call) => Promise<T>,
  ): Promise<T> {
    const { action, signal } = run;
    if (this.#closed) {
      throw new ClosedError(`Cannot ${action} as the transport is closed`);
    }
    signal?.throwIfAborted();
    const abort = new AbortController();
    const signals = [this.#closing.signal, abort.signal];
    if (signal !== undefined) signals.push(signal);
    const callSignal = AbortSignal.any(signals);
    const call: Call = {
      action,
      options: this.#options,
      dates: this.#dates,
      signal: callSignal,
      requests: new RequestSignals(callSignal, this.#options.timeoutMs),
      abort,
      auth: new TokenSession(this.#options.token),
      stop: null,
    };
    const task = body(call);
    this.#inflight.add(task);
    try {
      return await task;
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      if (this.#closed) {
        throw new ClosedError(`Cannot ${action} as the transport was closed`);
      }
      throw error;
    } finally {
      // Every request of the call has ended: the call's body awaits them.
      call.requests.close();
      this.#inflight.delete(task);
    }
  }
}
