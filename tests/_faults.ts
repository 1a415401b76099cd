/**
 * Deterministic fault points for the atomicity tests: one counter of calls
 * that fails exactly the k-th call after it is armed, and wrappers that put
 * it in front of a `node:sqlite` connection (every statement), a `Deno.Kv`
 * (every atomic `commit()`, blob chunks included) and any `Storage` (every
 * call), and a deadline for tests that wait on a state. Not published
 * (underscore).
 *
 * @module
 */

import type { SqliteDatabaseLike } from "../src/sqlite_like.ts";
import type { Storage } from "../src/storage.ts";
import { wrapDriver } from "./_sqlite_drivers.ts";

/** What an injected fault throws. */
export class InjectedFault extends Error {
  /**
   * Constructs a new instance.
   *
   * @param where The call that failed.
   */
  constructor(where: string) {
    // No "locked" or "busy" in the text: the KV adapter retries those.
    super(`Cannot continue as a fault was injected: current value is ${where}`);
    this.name = "InjectedFault";
  }
}

/**
 * Where the k-th call fails: `"before"` it reaches the store (nothing
 * happened), or `"after"` it did its work (the answer was lost).
 */
export type FaultMode = "before" | "after";

/** A one-shot fault on the k-th call after {@linkcode FaultPoint.arm}. */
export class FaultPoint {
  #calls = 0;
  #target: number | null = null;
  #mode: FaultMode = "before";
  #fired = false;

  /** Calls seen since the point was made. */
  get calls(): number {
    return this.#calls;
  }

  /** Whether the armed fault went off. */
  get fired(): boolean {
    return this.#fired;
  }

  /** Whether armed faults go off before or after the call's work. */
  get mode(): FaultMode {
    return this.#mode;
  }

  /**
   * Makes the k-th call from now fail, once.
   *
   * @param k 1 for the next call.
   * @param mode Before or after the call's work.
   */
  arm(k: number, mode: FaultMode = "before"): void {
    this.#target = this.#calls + k;
    this.#mode = mode;
    this.#fired = false;
  }

  /** Lets every later call through. */
  disarm(): void {
    this.#target = null;
  }

  /**
   * Counts one call and tells whether it is the one to fail.
   *
   * @returns `true` for the armed call (once).
   */
  hit(): boolean {
    this.#calls++;
    if (this.#target !== this.#calls) return false;
    this.#target = null;
    this.#fired = true;
    return true;
  }

  /**
   * Runs an asynchronous call through the point.
   *
   * @param where What is called, for the error.
   * @param work The call.
   * @returns What the call resolves to.
   * @throws {InjectedFault} On the armed call.
   */
  async runAsync<T>(where: string, work: () => Promise<T>): Promise<T> {
    if (!this.hit()) return await work();
    if (this.#mode === "before") throw new InjectedFault(where);
    await work();
    throw new InjectedFault(where);
  }
}

/**
 * A connection whose statements (every `run`, `get`, `all` and `exec`) go
 * through `fault`. Only `"before"` faults make sense here: a statement
 * that ran inside a transaction is undone by its rollback anyway.
 *
 * @param db The real connection.
 * @param fault The fault point.
 * @returns The wrapped connection.
 */
export function faultyDriver(
  db: SqliteDatabaseLike,
  fault: FaultPoint,
): SqliteDatabaseLike {
  return wrapDriver(db, {
    beforeCall(sql) {
      if (fault.hit()) throw new InjectedFault(`statement "${sql}"`);
    },
  });
}

/**
 * A `Deno.Kv` whose atomic operations commit through `fault`: the KV
 * adapter's only way to change the store, for headers and blob chunks
 * alike. Reads pass through.
 *
 * @param kv The real KV.
 * @param fault The fault point.
 * @returns The wrapped KV.
 */
export function faultyKv(kv: Deno.Kv, fault: FaultPoint): Deno.Kv {
  return new Proxy(kv, {
    get(target, property) {
      if (property === "atomic") {
        return () => faultyAtomic(target.atomic(), fault);
      }
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

function faultyAtomic(
  operation: Deno.AtomicOperation,
  fault: FaultPoint,
): Deno.AtomicOperation {
  const proxy: Deno.AtomicOperation = new Proxy(operation, {
    get(target, property) {
      if (property === "commit") {
        return () => fault.runAsync("commit()", () => target.commit());
      }
      const value = Reflect.get(target, property, target);
      if (typeof value !== "function") return value;
      // The builder methods return the operation: keep returning the proxy.
      return (...args: unknown[]) => {
        const result = value.apply(target, args);
        return result === target ? proxy : result;
      };
    },
  });
  return proxy;
}

/**
 * A storage whose every call (reads and writes) goes through `fault`: the
 * points at which any adapter, the in-memory one included, can fail.
 *
 * @param storage The real storage.
 * @param fault The fault point.
 * @returns The wrapped storage; closing it closes `storage`.
 */
export function faultyStorage(storage: Storage, fault: FaultPoint): Storage {
  return {
    capabilities: storage.capabilities,
    getRecords: (kind, ids, options) =>
      fault.runAsync(
        "getRecords()",
        () => storage.getRecords(kind, ids, options),
      ),
    listRecords: (kind, options) =>
      fault.runAsync("listRecords()", () => storage.listRecords(kind, options)),
    getOps: (opIds, options) =>
      fault.runAsync("getOps()", () => storage.getOps(opIds, options)),
    listOps: (options) =>
      fault.runAsync("listOps()", () => storage.listOps(options)),
    getMeta: (keys, options) =>
      fault.runAsync("getMeta()", () => storage.getMeta(keys, options)),
    write: (mutations, options) =>
      fault.runAsync("write()", () => storage.write(mutations, options)),
    close: () => storage.close(),
    [Symbol.asyncDispose]: () => storage.close(),
  };
}

/**
 * Waits until `condition` holds, polling; rejects after `ms` so that a
 * state that never comes fails the test in seconds instead of hanging it.
 *
 * @param condition What to wait for.
 * @param what Names it in the error.
 * @param ms The deadline.
 * @throws {Error} When the deadline passes first.
 */
export async function until(
  condition: () => boolean,
  what: string,
  ms = 5_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${ms} ms waiting until ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}
