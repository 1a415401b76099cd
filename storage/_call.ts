/**
 * How an asynchronous storage adapter runs one contract call, shared by the
 * KV and IndexedDB storages: an aborted signal and the call's validation
 * reject it as they are, its work's failures other than the signal's reason
 * become the adapter's `StorageError`s, and the call is tracked until it
 * settles so that `close()` can wait for it. Never throws synchronously.
 *
 * @module
 */

/** One call. */
export interface Call<T> {
  /** The call's signal, if any. */
  readonly signal: AbortSignal | undefined;
  /** Validates, then returns the work (a throw rejects the call as is). */
  readonly prepare: () => () => Promise<T>;
  /** Turns a failure of the work into the adapter's error. */
  readonly failure: (error: unknown) => unknown;
  /** The adapter's calls in flight; the call stays in it until it settles. */
  readonly inFlight: Set<Promise<unknown>>;
}

/**
 * Runs a call.
 *
 * @param call The signal, validation and work, error mapping and tracking.
 * @returns What the work returns.
 */
export function runCall<T>(call: Call<T>): Promise<T> {
  const { signal, inFlight } = call;
  let work: () => Promise<T>;
  try {
    signal?.throwIfAborted();
    work = call.prepare();
  } catch (error) {
    return Promise.reject(error);
  }
  const promise = (async (): Promise<T> => {
    try {
      return await work();
    } catch (error) {
      if (signal?.aborted && error === signal.reason) throw error;
      throw call.failure(error);
    }
  })();
  inFlight.add(promise);
  const forget = (): void => {
    inFlight.delete(promise);
  };
  promise.then(forget, forget);
  return promise;
}
