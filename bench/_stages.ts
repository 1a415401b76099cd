/**
 * Per-stage timers for the profiling harnesses (`bench/_profile_drain.ts`,
 * `bench/_profile_pull.ts`): a storage and a transport wrapped so that each
 * call adds its time to a named stage.
 *
 * @module
 */

import type { Storage } from "../src/storage.ts";
import type { Transport } from "../src/transport.ts";

/** Milliseconds and calls of one stage. */
export interface Stage {
  ms: number;
  calls: number;
}

/** The storage calls the harnesses time. */
const TIMED = new Set<string | symbol>([
  "getRecords",
  "listRecords",
  "getOps",
  "listOps",
  "getMeta",
  "write",
]);

/** Named stages, each the time and count of the calls made in it. */
export class Stages {
  /** The stages by name, in the order first met. */
  readonly all = new Map<string, Stage>();

  /**
   * Runs a call, adding its time to a stage. The clock starts before the
   * call: an SQLite store works synchronously inside it.
   */
  timed<T>(name: string, run: () => Promise<T>): Promise<T> {
    const started = performance.now();
    return Promise.resolve().then(run).finally(() => {
      const stage = this.all.get(name) ?? { ms: 0, calls: 0 };
      stage.ms += performance.now() - started;
      stage.calls++;
      this.all.set(name, stage);
    });
  }

  /**
   * The storage, every read and write timed under the stage `stageOf`
   * names (by default `storage.<method>`).
   */
  storage(
    storage: Storage,
    stageOf: (method: string, args: unknown[]) => string = (method) =>
      `storage.${method}`,
  ): Storage {
    return new Proxy(storage, {
      get: (target, property, receiver) => {
        const value = Reflect.get(target, property, receiver);
        if (typeof value !== "function" || !TIMED.has(property)) return value;
        return (...args: unknown[]) =>
          this.timed(
            stageOf(String(property), args),
            () => value.apply(target, args),
          );
      },
    });
  }

  /** The transport, its `method` timed as `transport.<method>`. */
  transport(transport: Transport, method: "push" | "pull"): Transport {
    return new Proxy(transport, {
      get: (target, property, receiver) => {
        const value = Reflect.get(target, property, receiver);
        if (property !== method || typeof value !== "function") return value;
        return (...args: unknown[]) =>
          this.timed(`transport.${method}`, () => value.apply(target, args));
      },
    });
  }
}
