/**
 * Bringing a KV store that an earlier version of the KV storage wrote to
 * this version's layout, when it opens (see "Key layout" in
 * `storage/kv.ts`). Private to `storage/kv.ts`: not exported from the
 * package.
 *
 * @module
 */

import { StorageError } from "../src/errors.ts";
import {
  decodeText,
  ID_BUDGET,
  keyPart,
  KIND_BUDGET,
  sameBytes,
} from "./_kv_keys.ts";
import { KV_MAX_BATCH } from "./_kv_limits.ts";
import { deleteAll } from "./_kv_blobs.ts";
import {
  commitRetrying,
  encodeJson,
  type KvKeyspace,
  UNINDEXED_STATE,
} from "./_kv_keyspace.ts";

/** The version of the key layout, under `[...P, "f"]`. */
const LAYOUT_VERSION = 2;

/**
 * Deletes the by-state entries of pending ops that earlier versions wrote
 * (this one lists pending ops from their headers). Left alone, they would
 * only take space: nothing reads them.
 *
 * @param space The store.
 */
export async function dropPendingIndex(space: KvKeyspace): Promise<void> {
  const prefix = space.key("s", UNINDEXED_STATE);
  for (;;) {
    const keys: Deno.KvKey[] = [];
    const entries = space.kv.list<unknown>({ prefix }, {
      consistency: "strong",
      limit: KV_MAX_BATCH,
      batchSize: KV_MAX_BATCH,
    });
    for await (const entry of entries) keys.push(entry.key);
    if (keys.length === 0) return;
    await deleteAll(space, keys);
  }
}

/**
 * Brings a store that an earlier version wrote to this layout: moves every
 * record whose key would now differ (see `storage/kv.ts`) to its new key,
 * then writes the layout's version, which later opens find. Each move
 * checks that the version is still absent, so that a handle that opened
 * meanwhile, and already writes in this layout, never has a record moved
 * under it.
 *
 * @param space The store.
 * @param layout The layout version's entry, as read when opening.
 * @throws {StorageError} When a later version wrote the store.
 */
export async function upgradeLayout(
  space: KvKeyspace,
  layout: Deno.KvEntryMaybe<unknown>,
): Promise<void> {
  if (layout.versionstamp !== null) {
    const version = space.decodeJson(layout);
    if (typeof version !== "number") {
      throw space.formatError(layout.key, version);
    }
    if (version > LAYOUT_VERSION) {
      throw new StorageError(
        `Cannot open KV storage as a later version of this library wrote it: current value is layout ${version}`,
      );
    }
    return;
  }
  const unchanged = { key: space.layoutKey, versionstamp: null };
  const records = space.kv.list<unknown>({ prefix: space.key("r") }, {
    consistency: "strong",
    batchSize: KV_MAX_BATCH,
  });
  for await (const record of records) {
    const [kindPart, idPart] = record.key.slice(space.prefix.length + 1);
    if (!(kindPart instanceof Uint8Array && idPart instanceof Uint8Array)) {
      continue;
    }
    const key = space.key(
      "r",
      keyPart(decodeText(kindPart), KIND_BUDGET),
      keyPart(decodeText(idPart), ID_BUDGET),
    );
    if (sameBytes(key.at(-2), kindPart) && sameBytes(key.at(-1), idPart)) {
      continue;
    }
    const moved = await commitRetrying(
      space.kv.atomic()
        .check(unchanged, record, { key, versionstamp: null })
        .delete(record.key)
        .set(key, record.value),
    );
    if (moved.ok) continue;
    const now = await space.kv.get(space.layoutKey, { consistency: "strong" });
    // Another handle finished the upgrade; otherwise it moved this one.
    if (now.versionstamp !== null) return;
  }
  await commitRetrying(
    space.kv.atomic().check(unchanged).set(
      space.layoutKey,
      encodeJson(LAYOUT_VERSION),
    ),
  );
}
