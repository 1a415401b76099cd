/**
 * The Storage contract, for adapter authors: the types a storage implements
 * and the structural SQLite driver types. The published conformance suite
 * that proves an adapter is `@offline-first/sync/storage/conformance`; the
 * adapters that ship are `./storage/memory`, `./storage/sqlite`,
 * `./storage/kv` and `./storage/indexeddb` (browsers).
 *
 * @example Typing an adapter
 * ```ts
 * import type { Storage, StorageCapabilities } from "@offline-first/sync/storage";
 * import { createMemoryStorage } from "@offline-first/sync/storage/memory";
 * import assert from "node:assert/strict";
 *
 * const storage: Storage = createMemoryStorage();
 * const capabilities: StorageCapabilities = storage.capabilities;
 * assert.equal(capabilities.persistent, false);
 * await storage.close();
 * ```
 *
 * @module
 */
export type * from "../src/storage.ts";
export type * from "../src/sqlite_like.ts";
