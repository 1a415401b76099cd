/**
 * `@offline-first/sync/testing/backend`: the backend conformance kit. It
 * checks any server over HTTP against the wire contract (docs/contract.md),
 * so that a backend of your own proves it speaks what the REST transport
 * expects: keyset paging with shared timestamps, tombstones, the `410`
 * rule, idempotent replay and mismatch, `409`s neither applied nor stored,
 * batch order, the stated limits, tenancy with two credentials, and live
 * hints when `/health` advertises them.
 *
 * Each check is named, independent (its own kinds, named
 * `kit_<check>_<random>`, so it runs against a shared server), bounded in
 * time, and reports the rule it broke with what the server answered.
 * {@linkcode testBackend} returns the results; {@linkcode testBackendCases}
 * registers one `Deno.test` per check; `deno task conformance URL`
 * (`testing/backend_cli.ts`) prints one line per check.
 *
 * @example Checking the reference server over HTTP
 * ```ts
 * import { testBackend } from "@offline-first/sync/testing/backend";
 * import { bearerAuth, createSyncServer } from "@offline-first/sync/server";
 * import assert from "node:assert/strict";
 *
 * await using server = createSyncServer({
 *   auth: bearerAuth({ "token-a": "alice", "token-b": "bob" }),
 * });
 * await using http = Deno.serve(
 *   { port: 0, hostname: "127.0.0.1", onListen() {} },
 *   server.fetch,
 * );
 * const result = await testBackend(`http://127.0.0.1:${http.addr.port}`, {
 *   credentials: [
 *     { authorization: "Bearer token-a" },
 *     { authorization: "Bearer token-b" },
 *   ],
 * });
 * assert.equal(result.ok, true, JSON.stringify(result.checks, null, 1));
 * assert.equal(result.checks.find((c) => c.name === "tenancy")?.status, "pass");
 * ```
 *
 * @module
 */

import { BATCH_CHECKS } from "./_backend_batch.ts";
import {
  type BackendCheck,
  BackendCheckFailure,
  type BackendCheckName,
  BackendCheckSkip,
  createContext,
  type HealthInfo,
  isObject,
  readAnswer,
} from "./_backend_http.ts";
import { LIMIT_CHECKS } from "./_backend_limits.ts";
import { LIVE_CHECKS } from "./_backend_live.ts";
import { PAGING_CHECKS } from "./_backend_paging.ts";
import { TENANCY_CHECKS } from "./_backend_tenancy.ts";
import { WRITE_CHECKS } from "./_backend_writes.ts";

export type { BackendCheckName } from "./_backend_http.ts";

/** Every check, in the order they run. */
const CHECKS: readonly BackendCheck[] = [
  ...LIMIT_CHECKS.slice(0, 1),
  ...PAGING_CHECKS,
  ...WRITE_CHECKS,
  ...BATCH_CHECKS,
  ...LIMIT_CHECKS.slice(1),
  ...TENANCY_CHECKS,
  ...LIVE_CHECKS,
];

/** The names of every check, in the order they run. */
export const BACKEND_CHECKS: readonly BackendCheckName[] = CHECKS.map((
  check,
) => check.name);

/** Options for {@linkcode testBackend}. */
export interface TestBackendOptions {
  /**
   * Header sets, one per principal (such as
   * `{ authorization: "Bearer …" }`): the first is used by every check;
   * with two, the `tenancy` check runs (and a request without credentials
   * must be `401`). Without any, requests carry no credentials.
   *
   * @default {[]}
   */
  readonly credentials?: readonly Readonly<Record<string, string>>[];
  /**
   * Which checks run; the others are reported as skipped.
   *
   * @default {every check}
   */
  readonly checks?: readonly BackendCheckName[];
  /**
   * The longest one check may take, in ms; past it the check fails.
   *
   * @default {20000}
   */
  readonly timeoutMs?: number;
  /**
   * Removes every tombstone on the server (for the `gone` check's `410`
   * case); without it, `gone` only checks that a pull with no cursor never
   * gets `410`.
   *
   * @default {undefined}
   */
  readonly purgeTombstones?: () => Promise<void>;
  /**
   * The `fetch` every request goes through.
   *
   * @default {globalThis.fetch}
   */
  readonly fetch?: typeof fetch;
  /**
   * Aborts the run: the check in progress fails, later ones are skipped.
   *
   * @default {undefined}
   */
  readonly signal?: AbortSignal;
}

/** The outcome of one check. */
export interface BackendCheckResult {
  /** The check's name. */
  readonly name: BackendCheckName;
  /** The rule it checks, in one line. */
  readonly rule: string;
  /** Passed, failed, or skipped (the server or the options exclude it). */
  readonly status: "pass" | "fail" | "skip";
  /** Why it failed or was skipped, or a note on what passed. */
  readonly message: string;
  /** How long it took, in ms. */
  readonly durationMs: number;
}

/** The outcome of {@linkcode testBackend}. */
export interface TestBackendResult {
  /** Whether no check failed. */
  readonly ok: boolean;
  /** One result per check, in the order they ran. */
  readonly checks: readonly BackendCheckResult[];
}

function suffix(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(5));
  return [...bytes].map((byte) => byte.toString(16).padStart(2, "0")).join(
    "",
  );
}

async function readHealth(
  base: string,
  fetcher: typeof fetch,
  bound: { signal: AbortSignal | undefined; timeoutMs: number },
): Promise<HealthInfo> {
  // Bounded like a check: a server that never answers must not hang the run.
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), bound.timeoutMs);
  const abort = () => controller.abort();
  bound.signal?.addEventListener("abort", abort, { once: true });
  try {
    const answer = await readAnswer(
      await fetcher(`${base}/health`, { signal: controller.signal }),
    );
    const body = isObject(answer.json) ? answer.json : {};
    const limits: Record<string, number> = {};
    if (isObject(body.limits)) {
      for (const [name, value] of Object.entries(body.limits)) {
        if (typeof value === "number") limits[name] = value;
      }
    }
    return { batch: body.batch === true, live: body.live === true, limits };
  } catch {
    // The health check reports it; the others run on the contract's defaults.
    return { batch: false, live: false, limits: {} };
  } finally {
    clearTimeout(timer);
    bound.signal?.removeEventListener("abort", abort);
  }
}

function resolveOptions(options: TestBackendOptions): {
  timeoutMs: number;
  only: ReadonlySet<string>;
} {
  const timeoutMs = options.timeoutMs ?? 20_000;
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs <= 0) {
    throw new RangeError(
      `Cannot test backend as 'timeoutMs' is not a positive integer: current value is ${timeoutMs}`,
    );
  }
  const only = new Set<string>(options.checks ?? BACKEND_CHECKS);
  for (const name of only) {
    if (!BACKEND_CHECKS.includes(name as BackendCheckName)) {
      throw new TypeError(
        `Cannot test backend as a check is unknown: current value is ${
          JSON.stringify(name)
        }`,
      );
    }
  }
  return { timeoutMs, only };
}

/** Runs one check under its own deadline. */
async function runCheck(
  check: BackendCheck,
  make: (signal: AbortSignal) => ReturnType<typeof createContext>,
  timeoutMs: number,
  outer: AbortSignal | undefined,
): Promise<Omit<BackendCheckResult, "durationMs">> {
  const controller = new AbortController();
  const abort = () => controller.abort(outer?.reason);
  outer?.addEventListener("abort", abort, { once: true });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const error = new BackendCheckFailure(
        `Cannot finish the check within its time bound: current value is ${timeoutMs} ms`,
      );
      controller.abort(error);
      reject(error);
    }, timeoutMs);
  });
  const base = { name: check.name, rule: check.rule };
  try {
    const note = await Promise.race([
      check.run(make(controller.signal)),
      deadline,
    ]);
    return { ...base, status: "pass", message: note ?? "" };
  } catch (error) {
    if (error instanceof BackendCheckSkip) {
      return { ...base, status: "skip", message: error.message };
    }
    const message = error instanceof BackendCheckFailure
      ? error.message
      : controller.signal.reason instanceof BackendCheckFailure
      ? controller.signal.reason.message
      : `Cannot finish the check as a request failed: current value is ${
        error instanceof Error
          ? `${error.name}: ${error.message}`
          : String(error)
      }`;
    return { ...base, status: "fail", message };
  } finally {
    clearTimeout(timer);
    outer?.removeEventListener("abort", abort);
    controller.abort();
  }
}

/**
 * Checks a server at a URL against the wire contract, one check after the
 * other, and returns every outcome. Never throws for a failing server: a
 * broken rule is a `"fail"` result with a message naming the rule and the
 * answer.
 *
 * @param url The server's base URL (routes below it: `/health`, `/{kind}`).
 * @param options Credentials, which checks, time bound, purge hook, fetch.
 * @returns The results, and whether all passed or were skipped.
 * @throws {RangeError} When `timeoutMs` is not a positive integer.
 * @throws {TypeError} When `checks` names an unknown check.
 *
 * @example Running two checks against the reference server
 * ```ts
 * import { testBackend } from "@offline-first/sync/testing/backend";
 * import { createSyncServer } from "@offline-first/sync/server";
 * import assert from "node:assert/strict";
 *
 * await using server = createSyncServer();
 * await using http = Deno.serve(
 *   { port: 0, hostname: "127.0.0.1", onListen() {} },
 *   server.fetch,
 * );
 * const result = await testBackend(`http://127.0.0.1:${http.addr.port}`, {
 *   checks: ["paging", "idempotent-replay"],
 * });
 * assert.deepEqual(
 *   result.checks.filter((c) => c.status === "pass").map((c) => c.name),
 *   ["paging", "idempotent-replay"],
 * );
 * ```
 */
export async function testBackend(
  url: string | URL,
  options: TestBackendOptions = {},
): Promise<TestBackendResult> {
  const { timeoutMs, only } = resolveOptions(options);
  const base = String(url).replace(/\/+$/, "");
  const fetcher = options.fetch ?? globalThis.fetch;
  const health = await readHealth(base, fetcher, {
    signal: options.signal,
    timeoutMs,
  });
  const results: BackendCheckResult[] = [];
  for (const check of CHECKS) {
    const skipped = !only.has(check.name)
      ? "not selected"
      : options.signal?.aborted
      ? "the run was aborted"
      : null;
    if (skipped !== null) {
      results.push({
        name: check.name,
        rule: check.rule,
        status: "skip",
        message: skipped,
        durationMs: 0,
      });
      continue;
    }
    const started = performance.now();
    const result = await runCheck(
      check,
      (signal) =>
        createContext({
          base,
          credentials: options.credentials ?? [],
          fetch: fetcher,
          health,
          signal,
          suffix: suffix(),
          ...(options.purgeTombstones === undefined
            ? {}
            : { purgeTombstones: options.purgeTombstones }),
        }),
      timeoutMs,
      options.signal,
    );
    results.push({
      ...result,
      durationMs: Math.round(performance.now() - started),
    });
  }
  return {
    ok: results.every((result) => result.status !== "fail"),
    checks: results,
  };
}

/** What the setup of {@linkcode testBackendCases} returns for one check. */
export interface BackendTarget {
  /** The server's base URL. */
  readonly url: string;
  /** The credentials, as {@linkcode TestBackendOptions.credentials}. */
  readonly credentials?: readonly Readonly<Record<string, string>>[];
  /** The purge hook, as {@linkcode TestBackendOptions.purgeTombstones}. */
  readonly purgeTombstones?: () => Promise<void>;
  /** Stops what the setup started, after the check. */
  readonly teardown?: () => Promise<void>;
}

/** Options for {@linkcode testBackendCases}. */
export type TestBackendCasesOptions = Omit<
  TestBackendOptions,
  "credentials" | "purgeTombstones" | "signal"
>;

/**
 * Registers the kit as `Deno.test` cases named `"<name>: <check>"`, one per
 * check; a check the server or the options exclude is registered as
 * ignored only when `options.checks` leaves it out, and otherwise passes
 * with its skip reason printed. Call it at the top level of a test module.
 *
 * @param name The backend's name, the prefix of every case name.
 * @param setup Starts (or names) the backend for one check.
 * @param options Which checks, time bound, fetch.
 *
 * @example Registering the kit for a server you start per check
 * ```ts ignore
 * // tests/my_backend_test.ts: registers tests, so it cannot run as a doc
 * // test (tests do not nest)
 * import { testBackendCases } from "@offline-first/sync/testing/backend";
 *
 * testBackendCases("my backend", () =>
 *   Promise.resolve({
 *     url: "http://127.0.0.1:8787",
 *     credentials: [
 *       { authorization: "Bearer token-a" },
 *       { authorization: "Bearer token-b" },
 *     ],
 *   }));
 * ```
 */
export function testBackendCases(
  name: string,
  setup: () => Promise<BackendTarget>,
  options: TestBackendCasesOptions = {},
): void {
  const { only } = resolveOptions(options);
  for (const check of CHECKS) {
    Deno.test({
      name: `${name}: ${check.name}`,
      ignore: !only.has(check.name),
      async fn() {
        const target = await setup();
        try {
          const run: TestBackendOptions = {
            ...options,
            checks: [check.name],
            ...(target.credentials === undefined
              ? {}
              : { credentials: target.credentials }),
            ...(target.purgeTombstones === undefined
              ? {}
              : { purgeTombstones: target.purgeTombstones }),
          };
          const result = await testBackend(target.url, run);
          const outcome = result.checks.find((one) => one.name === check.name)!;
          if (outcome.status === "fail") {
            throw new BackendCheckFailure(`${check.name}: ${outcome.message}`);
          }
          if (outcome.status === "skip") {
            console.log(`${name}: ${check.name} skipped: ${outcome.message}`);
          }
        } finally {
          await target.teardown?.();
        }
      },
    });
  }
}
