/**
 * The published conformance suite of the {@linkcode Storage} contract. An
 * adapter is conformant when `testStorage()` passes on it; every MUST clause
 * of the contract is stated here as a test, and the suite talks to the
 * adapter only through the `Storage` interface and its declared
 * `capabilities`, so it runs unchanged on adapters it has never seen.
 *
 * Call it once at the top level of a test module and `await` it: the suite
 * opens one storage first to read its capabilities, then registers one
 * `Deno.test` per clause, named `"<name>: <clause>"`. Each case opens a fresh
 * storage with `setup()`, establishes the state it then changes, and closes
 * every handle and calls `teardown()` in a `finally`. Cases that the
 * adapter's capabilities exclude are registered with `ignore: true`, so they
 * show up as ignored rather than as passes:
 *
 * - limit cases, when the limit is `Infinity`;
 * - survival across reopen, unless `reopen` is given and
 *   `capabilities.persistent` is `true`;
 * - cases with two open handles, unless `reopen` is given and
 *   `capabilities.multiProcess` is `true`;
 * - the 1 MiB record, when `maxWriteBytes` is smaller than its write;
 * - the writes of `maxMutationsPerWrite` items with the longest kinds and
 *   ids (64 and 512 UTF-16 code units, clause 8 of the contract), when
 *   those writes exceed `maxWriteBytes`. With no limit on mutations they
 *   hold 64 items.
 *
 * The suite measures a write as the UTF-8 length of
 * `JSON.stringify(mutations)`, and it splits the writes that only establish
 * state into chunks that fit the declared limits, as the engine does. Apart
 * from the limit cases, cases that test one write on purpose need at most 6
 * mutations and about 2.5 KiB per write.
 *
 * @example Running the suite on an adapter
 * ```ts ignore
 * // tests/memory_storage_test.ts
 * import { createMemoryStorage } from "@offline-first/sync/storage/memory";
 * import { testStorage } from "@offline-first/sync/storage/conformance";
 *
 * await testStorage("memory", () => ({ storage: createMemoryStorage() }));
 * ```
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Storage } from "../src/storage.ts";
import {
  call,
  type Case,
  type Harness,
  type Profile,
} from "./_conformance_kit.ts";
import { CONCURRENCY_CASES } from "./_conformance_concurrency.ts";
import { KEY_CASES } from "./_conformance_keys.ts";
import { LIMIT_CASES } from "./_conformance_limits.ts";
import { LIST_CASES } from "./_conformance_lists.ts";
import { REOPEN_CASES } from "./_conformance_reopen.ts";
import { VALUE_CASES } from "./_conformance_values.ts";
import { WATCH_CASES } from "./_conformance_watch.ts";
import { WRITE_CASES } from "./_conformance_writes.ts";

/** What `setup()` returns: a fresh store and how to reach it again. */
export interface StorageSetup {
  /** A new, open, empty storage, used by one case only. */
  readonly storage: Storage;
  /**
   * Opens the same underlying store again. The suite closes the previous
   * handle before calling it to test survival across a restart; cases with
   * two open handles (run only when `capabilities.multiProcess` is `true`)
   * call it while the first handle is still open.
   */
  readonly reopen?: () => Promise<Storage>;
  /**
   * Releases what `setup()` acquired (temporary files, servers). Runs after
   * every handle of the case was closed.
   */
  readonly teardown?: () => Promise<void>;
}

/** Options for {@linkcode testStorage}. */
export interface TestStorageOptions {
  /**
   * Whether Deno's op sanitizer checks each case for leaked async ops.
   *
   * @default {true}
   */
  readonly sanitizeOps?: boolean;
  /**
   * Whether Deno's resource sanitizer checks each case for leaked
   * resources.
   *
   * @default {true}
   */
  readonly sanitizeResources?: boolean;
}

/**
 * Registers the storage conformance suite as `Deno.test` cases named
 * `"<name>: <clause>"`.
 *
 * `setup()` is called once right away to read the adapter's capabilities
 * (that storage is closed and torn down before any case runs), then once per
 * case. Await the returned promise at the top level of the test module:
 * Deno only collects tests registered while the module loads.
 *
 * @param name The adapter's name, the prefix of every case name.
 * @param setup Opens a fresh, empty storage for one case.
 * @param options Sanitizer settings.
 * @returns A promise that resolves once every case is registered.
 * @throws {Error} When `setup()` or the first storage's `close()` fails.
 *
 * @example Testing an adapter that persists
 * ```ts ignore
 * import { testStorage } from "@offline-first/sync/storage/conformance";
 * import { openMyStorage } from "./my_storage.ts";
 *
 * await testStorage("mine", async () => {
 *   const path = await Deno.makeTempFile();
 *   return {
 *     storage: await openMyStorage(path),
 *     reopen: () => openMyStorage(path),
 *     teardown: () => Deno.remove(path),
 *   };
 * });
 * ```
 */
export async function testStorage(
  name: string,
  setup: () => Promise<StorageSetup> | StorageSetup,
  options: TestStorageOptions = {},
): Promise<void> {
  const suite: Suite = {
    setup,
    registered: false,
    sanitizeOps: options.sanitizeOps ?? true,
    sanitizeResources: options.sanitizeResources ?? true,
  };
  // Registered before the first await, so that a suite whose promise was
  // not awaited fails loudly instead of silently losing its cases.
  register(suite, { name, testCase: FIRST_CASE, ignore: false });
  const profile = await probe(setup);
  for (const testCase of CASES) {
    const ignore = !(testCase.needs?.(profile) ?? true);
    register(suite, { name, testCase, ignore });
  }
  suite.registered = true;
}

interface Suite {
  readonly setup: () => Promise<StorageSetup> | StorageSetup;
  registered: boolean;
  readonly sanitizeOps: boolean;
  readonly sanitizeResources: boolean;
}

async function probe(
  setup: () => Promise<StorageSetup> | StorageSetup,
): Promise<Profile> {
  const { storage, reopen, teardown } = await setup();
  try {
    return {
      capabilities: { ...storage.capabilities },
      reopen: reopen !== undefined,
      watchMeta: typeof storage.watchMeta === "function",
    };
  } finally {
    try {
      await storage.close();
    } finally {
      await teardown?.();
    }
  }
}

function register(
  suite: Suite,
  registration: {
    readonly name: string;
    readonly testCase: Case;
    readonly ignore: boolean;
  },
): void {
  const { name, testCase, ignore } = registration;
  Deno.test({
    name: `${name}: ${testCase.clause}`,
    ignore,
    sanitizeOps: suite.sanitizeOps,
    sanitizeResources: suite.sanitizeResources,
    fn: () => runCase(suite, testCase),
  });
}

async function runCase(suite: Suite, testCase: Case): Promise<void> {
  const { storage, reopen, teardown } = await suite.setup();
  const handles: Storage[] = [storage];
  let current = storage;
  const open = async (): Promise<Storage> => {
    if (reopen === undefined) {
      assert.fail("Cannot reopen the storage as setup() gave no reopen()");
    }
    const handle = await reopen();
    handles.push(handle);
    return handle;
  };
  const harness: Harness = {
    get storage() {
      return current;
    },
    get registered() {
      return suite.registered;
    },
    async reopen(): Promise<Storage> {
      await current.close();
      current = await open();
      return current;
    },
    another: open,
  };
  try {
    await testCase.run(harness);
  } finally {
    try {
      for (const handle of handles) await handle.close();
    } finally {
      await teardown?.();
    }
  }
}

const FIRST_CASE: Case = {
  clause: "capabilities are declared as data",
  async run({ storage, registered }): Promise<void> {
    assert.ok(
      registered,
      "Cannot run the storage suite as testStorage() was not awaited: await it at the top level of the test module",
    );
    const capabilities = storage.capabilities;
    assert.equal(typeof capabilities.persistent, "boolean");
    assert.equal(typeof capabilities.multiProcess, "boolean");
    for (
      const limit of [
        "maxMutationsPerWrite",
        "maxWriteBytes",
        "maxKeyLength",
      ] as const
    ) {
      const value = capabilities[limit];
      assert.ok(
        value === Infinity || (Number.isInteger(value) && value > 0),
        `Expected ${limit} to be a positive integer or Infinity: current value is ${value}`,
      );
    }
    assert.deepEqual(await call("getMeta()", () => storage.getMeta([])), []);
  },
};

/** Every case after the first, topic by topic. */
const CASES: readonly Case[] = [
  ...VALUE_CASES,
  ...KEY_CASES,
  ...WRITE_CASES,
  ...LIST_CASES,
  ...LIMIT_CASES,
  ...REOPEN_CASES,
  ...CONCURRENCY_CASES,
  ...WATCH_CASES,
];
