/**
 * The published conformance suite of the {@linkcode ServerStore} contract
 * (`server/store.ts`). A store is conformant when `testServerStore()` passes
 * on it: every MUST clause of the contract is stated here as a test, through
 * the `ServerStore` interface only, plus cases that run the reference server
 * over the store (tenancy through every route, the per-principal clock), so
 * it runs unchanged on stores it has never seen.
 *
 * Call it once at the top level of a test module. It registers one
 * `Deno.test` per clause, named `"<name>: <clause>"`; each case gets a fresh
 * store from `setup()`, establishes the state it then changes, and closes
 * the store and calls `teardown()` in a `finally`. The cases that need data
 * to survive a reopen are registered with `ignore: true` unless the store
 * declares `persistent` (and `setup()` gives `reopen`), so they show up as
 * ignored rather than as passes.
 *
 * @example Testing a store that persists
 * ```ts ignore
 * // tests/my_store_test.ts
 * import { testServerStore } from "@offline-first/sync/server/conformance";
 * import { openMyServerStore } from "./my_store.ts";
 *
 * testServerStore("mine", async () => {
 *   const path = await Deno.makeTempFile();
 *   return {
 *     store: await openMyServerStore(path),
 *     reopen: () => openMyServerStore(path),
 *     teardown: () => Deno.remove(path),
 *   };
 * }, { persistent: true });
 * ```
 *
 * @module
 */

import type { ServerStoreCase } from "./_conformance_kit.ts";
import { RECORD_CASES } from "./_conformance_records.ts";
import { SERVER_CASES } from "./_conformance_server.ts";
import { UPKEEP_CASES } from "./_conformance_upkeep.ts";
import { SHARED_CASES } from "./_conformance_shared.ts";
import { MANY_CASES } from "./_conformance_many.ts";
import type { ServerStoreSetup } from "./_conformance_kit.ts";
export type { ServerStoreSetup } from "./_conformance_kit.ts";

/** Options for {@linkcode testServerStore}: what the store declares. */
export interface TestServerStoreOptions {
  /**
   * Whether data survives a reopen; the reopen cases are ignored otherwise.
   *
   * @default {false}
   */
  readonly persistent?: boolean;
  /**
   * Whether the store is shared (implements `readClock()` and guards
   * `commit()`); the shared cases are ignored otherwise.
   *
   * @default {false}
   */
  readonly shared?: boolean;
}

/** Every case, in the order they are registered. */
const CASES: readonly ServerStoreCase[] = [
  ...RECORD_CASES,
  ...MANY_CASES,
  ...UPKEEP_CASES,
  ...SERVER_CASES,
  ...SHARED_CASES,
];

/**
 * Registers the server-store conformance suite as `Deno.test` cases named
 * `"<name>: <clause>"`. Call it at the top level of a test module: Deno only
 * collects tests registered while the module loads.
 *
 * @param name The store's name, the prefix of every case name.
 * @param setup Creates a fresh, empty store for one case.
 * @param options What the store declares.
 *
 * @example Running the suite on the memory store
 * ```ts ignore
 * // tests/server_memory_test.ts: registers tests, so it cannot run as a
 * // doc test (a doc test is itself a test, and tests do not nest)
 * import { testServerStore } from "@offline-first/sync/server/conformance";
 * import { createMemoryServerStore } from "@offline-first/sync/server/memory";
 *
 * testServerStore(
 *   "memory",
 *   () => Promise.resolve({ store: createMemoryServerStore() }),
 * );
 * ```
 */
export function testServerStore(
  name: string,
  setup: () => Promise<ServerStoreSetup>,
  options: TestServerStoreOptions = {},
): void {
  const persistent = options.persistent ?? false;
  const shared = options.shared ?? false;
  for (const testCase of CASES) {
    Deno.test({
      name: `${name}: ${testCase.title}`,
      ignore: (testCase.persistent === true && !persistent) ||
        (testCase.shared === true && !shared),
      async fn() {
        const context = await setup();
        try {
          await testCase.run(context.store, context);
        } finally {
          await context.store.close();
          await context.teardown?.();
        }
      },
    });
  }
}
