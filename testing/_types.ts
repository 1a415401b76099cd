/**
 * The chaos suite's option and result types, in a leaf module so every
 * part of the suite (runner, fault layer, verdicts, CLI) shares them.
 * Re-exported by `./mod.ts`.
 *
 * @module
 */

import type { ConflictStrategy } from "../src/conflict.ts";
import type { Storage } from "../src/storage.ts";
import type { ServerStore } from "../server/store.ts";

/** The client storages the suite opens by name. */
export type ChaosStorageName = "memory" | "sqlite" | "kv";

/** Where a client's storage lives, for {@linkcode ChaosStorageFactory}. */
export interface ChaosStorageContext {
  /** The client's number, from 0. */
  readonly client: number;
  /**
   * A directory of the client's own, the same on every reopen: a durable
   * storage opens its file here.
   */
  readonly dir: string;
  /** 0 on the first open, then one more on each reopen. */
  readonly generation: number;
}

/**
 * Opens a client's storage; called again with the same `client` and `dir`
 * on a reopen, when it must return a storage over the same data (a memory
 * storage cannot: return a fresh one and set `persistent: false`).
 */
export type ChaosStorageFactory = (
  context: ChaosStorageContext,
) => Promise<Storage>;

/**
 * The backend: `"embedded"` (the reference server over a memory store, in
 * process), `"embedded-sqlite"` (over an SQLite server store on a temporary
 * file, closed and reopened on server restarts), or the base URL of any
 * server that follows the wire contract.
 */
export type ChaosBackend = "embedded" | "embedded-sqlite" | string | URL;

/** Per-request fault rates (each a probability in `[0, 1]`). */
export interface FaultRates {
  /** The request is lost before it reaches the server. */
  readonly dropRequest: number;
  /** The server applies the request and its answer is lost. */
  readonly dropResponse: number;
  /** The request reaches the server twice. */
  readonly duplicate: number;
  /** The request waits a few ms, so concurrent requests reorder. */
  readonly delay: number;
  /** A `500`/`502`, before or after the server saw the request. */
  readonly serverError: number;
  /** A `429` with `Retry-After`. */
  readonly rateLimit: number;
  /** A `503` with `Retry-After`. */
  readonly unavailable: number;
  /** The client's token expires: `401` until it refreshes. */
  readonly expireToken: number;
  /** The answer's body is cut short (after the server applied it). */
  readonly truncate: number;
  /** The answer's body is replaced by garbage (after the server applied it). */
  readonly garbage: number;
  /** The connection is refused for a stretch of 3–12 requests (offline). */
  readonly offline: number;
}

/** Every kind of fault the suite injects and counts. */
export type FaultType =
  | keyof FaultRates
  | "clockSkew"
  | "serverRestart"
  | "tombstonePurge"
  | "clientReopen"
  | "processKill";

/** The named checks of a run. */
export type VerdictName =
  | "convergence"
  | "noLostWrite"
  | "exactlyOnce"
  | "noStuckClient"
  | "noServerError";

/** The outcome of one check. */
export interface Verdict {
  /** `"pass"`, `"fail"`, or `"unchecked"` when the backend cannot tell. */
  readonly status: "pass" | "fail" | "unchecked";
  /** What went wrong (first few problems), for a failure. */
  readonly detail: string;
}

/** One step of a run. Ids are small (`r0`…) so clients collide often. */
export type ChaosOp =
  | {
    readonly type: "put";
    readonly client: number;
    readonly kind: string;
    readonly id: string;
    /** A unique mark of this write, stored in field `w`. */
    readonly mark: string;
    readonly n: number;
  }
  | {
    readonly type: "patch";
    readonly client: number;
    readonly kind: string;
    readonly id: string;
    readonly mark: string;
    readonly n: number;
  }
  | {
    readonly type: "delete";
    readonly client: number;
    readonly kind: string;
    readonly id: string;
  }
  | {
    readonly type: "putMany";
    readonly client: number;
    readonly kind: string;
    readonly ids: readonly string[];
    readonly mark: string;
  }
  | { readonly type: "sync"; readonly client: number }
  | { readonly type: "reopen"; readonly client: number }
  | { readonly type: "skew"; readonly client: number; readonly ms: number }
  | { readonly type: "restart" }
  | { readonly type: "purge" };

/** The type of a {@linkcode ChaosOp}. */
export type ChaosOpType = ChaosOp["type"];

/** Hooks that break a part on purpose, to prove a verdict can fail. */
export interface ChaosHooks {
  /** Wraps the embedded server's `fetch` (after the fault layer). */
  readonly server?: (
    fetch: (request: Request) => Promise<Response>,
  ) => (request: Request) => Promise<Response>;
  /** Wraps the embedded server's store (on every open). */
  readonly store?: (store: ServerStore) => ServerStore;
  /** Wraps each client's storage (on every open). */
  readonly storage?: (storage: Storage, client: number) => Storage;
}

/** Options of {@linkcode runChaos}. */
export interface ChaosOptions {
  /** The seed: the same seed replays the same ops and fault schedule. */
  readonly seed: number;
  /**
   * The number of clients, 2 to 5.
   *
   * @default {3}
   */
  readonly clients?: number;
  /**
   * The number of ops to generate.
   *
   * @default {30}
   */
  readonly ops?: number;
  /**
   * The ops to run instead of generated ones (a replay or a shrunk list).
   *
   * @default {generated from the seed}
   */
  readonly opList?: readonly ChaosOp[];
  /**
   * Each client's storage, by name or factory.
   *
   * @default {"memory"}
   */
  readonly storage?: ChaosStorageName | ChaosStorageFactory;
  /**
   * The backend.
   *
   * @default {"embedded"}
   */
  readonly backend?: ChaosBackend;
  /**
   * Fault rates; missing ones take the default, `0` turns one off.
   *
   * @default {DEFAULT_FAULT_RATES}
   */
  readonly faults?: Partial<FaultRates>;
  /**
   * The tables and their strategies (`manual` without a resolver: defer).
   *
   * @default {one table per strategy}
   */
  readonly tables?: Readonly<Record<string, ConflictStrategy>>;
  /**
   * Records per table: a small id space makes conflicts common.
   *
   * @default {4}
   */
  readonly ids?: number;
  /**
   * The longest one `sync()` may take, in ms, before the run counts the
   * client as stuck.
   *
   * @default {15000}
   */
  readonly syncTimeoutMs?: number;
  /**
   * Sync rounds of every client after the chaos, until quiescent.
   *
   * @default {8}
   */
  readonly maxHealRounds?: number;
  /**
   * Rates of the run-level faults, per op: a client's clock skew, a server
   * restart, a tombstone purge, a client reopen.
   *
   * @default {{ skew: 0.03, restart: 0.02, purge: 0.02, reopen: 0.04 }}
   */
  readonly events?: Partial<EventRates>;
  /** Breaks a part on purpose (tests of the verdicts). */
  readonly hooks?: ChaosHooks;
}

/** Rates of the run-level faults, per generated op. */
export interface EventRates {
  /** A client's clock jumps by up to ±10 minutes. */
  readonly skew: number;
  /** The server restarts (closes its store and opens it again). */
  readonly restart: number;
  /** The server purges every tombstone. */
  readonly purge: number;
  /** A client closes its engine and storage and opens them again. */
  readonly reopen: number;
}

/** The result of one run: {@linkcode runChaos}. */
export interface ChaosResult {
  /** The seed. */
  readonly seed: number;
  /** Whether every checked verdict passed. */
  readonly ok: boolean;
  /** Each named check. */
  readonly verdicts: Readonly<Record<VerdictName, Verdict>>;
  /** The ops run, by type. */
  readonly opCounts: Readonly<Partial<Record<ChaosOpType, number>>>;
  /** The faults injected, by type. */
  readonly faults: Readonly<Partial<Record<FaultType, number>>>;
  /** HTTP requests the clients made (chaos and heal). */
  readonly requests: number;
  /** Sync rounds the heal phase took. */
  readonly healRounds: number;
  /** The ops that ran, to replay or shrink. */
  readonly opList: readonly ChaosOp[];
  /** Wall time of the run, in ms. */
  readonly durationMs: number;
}
