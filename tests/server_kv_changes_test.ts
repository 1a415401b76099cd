/**
 * The Deno KV server store's change feed (`changes()`, `_kv_changes.ts`):
 * a commit through one store object shows up in the feed of another opened
 * on the same file, in order, marked `local` only for the reader's own
 * commits; bounded per entry and per look; ended by close.
 *
 * @module
 */

import assert from "node:assert/strict";
import { openKvServerStore } from "../server/kv.ts";
import type { ServerStore, StoreChange } from "../server/mod.ts";
import { serverRecord } from "../server/_conformance_kit.ts";
import { KvKeys } from "../server/_kv_keys.ts";
import { commitNamespace } from "../server/_kv_commit.ts";
import {
  changeMutations,
  MAX_LOGGED_KINDS,
  readChanges,
} from "../server/_kv_changes.ts";
import { withTimeout } from "./_timeout.ts";

/** A feed read one change at a time. */
class Feed {
  readonly #iterator: AsyncIterator<StoreChange>;
  readonly stop = new AbortController();

  constructor(open: (signal: AbortSignal) => AsyncIterable<StoreChange>) {
    this.#iterator = open(this.stop.signal)[Symbol.asyncIterator]();
  }

  async next(): Promise<StoreChange | null> {
    const { value, done } = await this.#iterator.next();
    return done ? null : value;
  }

  async end(): Promise<void> {
    this.stop.abort();
    assert.equal(await this.next(), null);
  }
}

async function put(
  store: ServerStore,
  namespace: string,
  kinds: string[],
  id = crypto.randomUUID(),
): Promise<void> {
  await store.commit(
    kinds.map((kind) => ({
      type: "record" as const,
      namespace,
      record: serverRecord(kind, id, Date.now()),
    })),
  );
}

async function withTwoStores(
  fn: (one: ServerStore, two: ServerStore, path: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sync-kv-changes-" });
  try {
    const path = `${dir}/store.kv`;
    await using one = await openKvServerStore(path, { changesPollMs: 20 });
    await using two = await openKvServerStore(path, { changesPollMs: 20 });
    await fn(one, two, path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test(
  "kv changes: a commit through one store object reaches another's feed, in order",
  withTimeout(10_000, async () => {
    await withTwoStores(async (one, two) => {
      await put(one, "alice", ["before"]);
      const feed = new Feed((signal) => two.changes!(signal));
      for (let index = 0; index < 5; index++) {
        await put(one, index % 2 === 0 ? "alice" : "bob", [`k${index}`]);
        assert.deepEqual(await feed.next(), {
          namespace: index % 2 === 0 ? "alice" : "bob",
          kinds: [`k${index}`],
          local: false,
        });
      }
      // A burst: kinds of one namespace merged, in order of first change.
      await put(one, "alice", ["x"]);
      await put(one, "alice", ["y", "x"]);
      await put(one, "alice", ["z"]);
      const kinds: string[] = [];
      while (kinds.length < 3) {
        const change = await feed.next();
        assert.equal(change?.namespace, "alice");
        for (const kind of change!.kinds) {
          if (!kinds.includes(kind)) kinds.push(kind);
        }
      }
      assert.deepEqual(kinds, ["x", "y", "z"]);
      // The reader's own commit is marked local.
      await put(two, "carol", ["mine"]);
      assert.deepEqual(await feed.next(), {
        namespace: "carol",
        kinds: ["mine"],
        local: true,
      });
      await feed.end();
    });
  }),
);

Deno.test(
  "kv changes: an idempotency-only commit tells nothing; close ends every feed",
  withTimeout(10_000, async () => {
    await withTwoStores(async (one, two) => {
      const feed = new Feed((signal) => two.changes!(signal));
      await one.commit([{
        type: "idempotency",
        namespace: "alice",
        entry: {
          key: "k",
          fingerprint: "f",
          status: 200,
          body: null,
          expiresAt: Date.now() + 60_000,
        },
      }]);
      await put(one, "alice", ["after"]);
      assert.deepEqual(await feed.next(), {
        namespace: "alice",
        kinds: ["after"],
        local: false,
      });
      const pending = feed.next();
      await two.close();
      assert.equal(await pending, null);
      assert.throws(() => two.changes!(new AbortController().signal), /closed/);
    });
  }),
);

Deno.test(
  "kv changes: kinds per commit and entries per look are bounded, none lost past the entry bound",
  withTimeout(15_000, async () => {
    await using kv = await Deno.openKv(":memory:");
    const context = { kv, keys: new KvKeys(["sync-server"]), origin: "w" };
    const stop = new AbortController();
    const iterator = readChanges(context, stop.signal, {
      pollMs: 10,
      watch: false,
      origin: "r",
      maxEntries: 4,
    })[Symbol.asyncIterator]();
    // The feed starts at its first read.
    const first = iterator.next();
    const many = Array.from({ length: 300 }, (_, index) => `kind${index}`);
    await commitNamespace(
      context,
      "alice",
      many.map((kind) => ({
        type: "record",
        namespace: "alice",
        record: serverRecord(kind, "1", 1),
      })),
      undefined,
    );
    // 256 kinds in 8 entries, 4 entries per look: two changes.
    const wide = [...((await first).value as StoreChange).kinds];
    while (wide.length < MAX_LOGGED_KINDS) {
      const { value } = await iterator.next();
      assert.equal((value as StoreChange).namespace, "alice");
      wide.push(...(value as StoreChange).kinds);
    }
    assert.deepEqual(wide, many.slice(0, MAX_LOGGED_KINDS));
    // 12 commits, read 4 entries per look: all arrive, none twice.
    for (let index = 0; index < 12; index++) {
      await commitNamespace(context, `ns${index}`, [{
        type: "record",
        namespace: `ns${index}`,
        record: serverRecord("todo", "1", 1),
      }], undefined);
    }
    const seen: string[] = [];
    while (seen.length < 12) {
      const { value } = await iterator.next();
      seen.push((value as StoreChange).namespace);
    }
    assert.deepEqual(
      seen.toSorted(),
      Array.from({ length: 12 }, (_, index) => `ns${index}`).toSorted(),
    );
    stop.abort();
    assert.equal((await iterator.next()).done, true);
  }),
);

Deno.test(
  "kv changes: one process's commits in the same millisecond, or with the clock set back, log in commit order",
  withTimeout(5_000, async () => {
    await using kv = await Deno.openKv(":memory:");
    const context = { kv, keys: new KvKeys(["sync-server"]), origin: "w" };
    const now = Date.now;
    // A frozen clock, then one that goes back a second.
    const clocks = [1_000_000, 1_000_000, 1_000_000, 999_000, 999_000];
    const keys: Deno.KvKey[] = [];
    try {
      for (let round = 0; round < 8; round++) {
        for (const at of clocks) {
          Date.now = () => at;
          const [entry] = changeMutations(context, "w", "alice", [{
            type: "record",
            namespace: "alice",
            record: serverRecord("todo", "1", 1),
          }]);
          keys.push(entry!.key);
        }
      }
    } finally {
      Date.now = now;
    }
    // KV lists keys in this order; the log must list them as committed.
    for (const [index, key] of keys.entries()) {
      await kv.set(["order", ...key.slice(-3)], index);
    }
    const listed: number[] = [];
    for await (const entry of kv.list<number>({ prefix: ["order"] })) {
      listed.push(entry.value);
    }
    assert.deepEqual(listed, keys.map((_, index) => index));
  }),
);
