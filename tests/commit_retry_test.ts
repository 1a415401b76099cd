/**
 * The one commit-with-retry helper (`src/_commit.ts`), made to lose races
 * deterministically: a storage whose next writes with a precondition answer
 * "a precondition failed" (`{ ok: false }`, nothing committed), as when
 * another writer got there first. A local write that loses some races
 * commits on a later attempt; one that loses `writeRetries` of them rejects
 * with a retryable `StorageError` and changes nothing.
 *
 * @module
 */

import assert from "node:assert/strict";
import { StorageError, SyncEngine } from "../mod.ts";
import type { Mutation, Storage, WriteResult } from "../src/storage.ts";
import type { Transport } from "../src/transport.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { withTimeout } from "./_timeout.ts";

/** A transport nothing is sent to: these tests never sync. */
const offline: Transport = {
  pull: () => Promise.reject(new Error("offline")),
  push: () => Promise.reject(new Error("offline")),
  close: () => Promise.resolve(),
  [Symbol.asyncDispose]: () => Promise.resolve(),
};

/** Makes the next `losses` writes that carry a precondition lose the race. */
function losing(
  inner: Storage,
): { storage: Storage; lose(n: number): void; lost(): number } {
  let losses = 0;
  let lost = 0;
  const storage = new Proxy(inner, {
    get(target, property, receiver) {
      if (property === "write") {
        return (mutations: readonly Mutation[], ...rest: unknown[]) => {
          const guarded = mutations.some((m) => "expect" in m);
          if (guarded && losses > 0) {
            losses--;
            lost++;
            return Promise.resolve<WriteResult>({ ok: false });
          }
          return (target.write as (...a: unknown[]) => Promise<WriteResult>)
            .call(target, mutations, ...rest);
        };
      }
      const value = Reflect.get(target, property, receiver);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return {
    storage,
    lose: (n) => {
      losses = n;
      lost = 0;
    },
    lost: () => lost,
  };
}

async function open(writeRetries?: number) {
  const inner = createMemoryStorage();
  const { storage, lose, lost } = losing(inner);
  const engine = new SyncEngine({
    storage,
    transport: offline,
    ...(writeRetries === undefined ? {} : { writeRetries }),
  });
  const items = engine.table("items");
  await items.put({ id: "a", v: 1 });
  return {
    inner,
    items,
    engine,
    lose,
    lost,
    async [Symbol.asyncDispose]() {
      await engine.close();
      await inner.close();
    },
  };
}

Deno.test(
  "commit retry: a local write that loses races commits on a later attempt",
  withTimeout(5_000, async () => {
    await using client = await open(3);
    // put() first tries its create guess (an extra attempt, see
    // src/_local_write.ts), then the helper's attempts: 3 losses leave one.
    client.lose(3);
    await client.items.put({ id: "a", v: 2 });
    assert.equal(client.lost(), 3);
    assert.deepEqual(await client.items.get("a"), { id: "a", v: 2 });
    // The write coalesced into the record's queued op: none lost, none extra.
    assert.equal(await client.engine.outbox.count(), 1);
  }),
);

Deno.test(
  "commit retry: writeRetries lost races reject with a retryable StorageError and change nothing",
  withTimeout(5_000, async () => {
    await using client = await open(3);
    client.lose(Infinity);
    await assert.rejects(
      client.items.put({ id: "a", v: 3 }),
      (error: unknown) => {
        assert.ok(error instanceof StorageError);
        assert.equal(error.retryable, true);
        assert.match(
          error.message,
          /as the store kept changing concurrently: current value is 3 attempts$/,
        );
        return true;
      },
    );
    // The create guess, then the helper's three attempts.
    assert.equal(client.lost(), 4);
    assert.deepEqual(await client.items.get("a"), { id: "a", v: 1 });
    assert.equal(await client.engine.outbox.count(), 1);
    // The default is 20 attempts.
    await using plain = await open();
    plain.lose(Infinity);
    await assert.rejects(plain.items.put({ id: "a", v: 4 }), StorageError);
    assert.equal(plain.lost(), 21);
    plain.lose(19);
    await plain.items.put({ id: "a", v: 4 });
    assert.deepEqual(await plain.items.get("a"), { id: "a", v: 4 });
  }),
);
