/**
 * The Web Lock election of engines sharing a store (`shared: { webLock }`,
 * ENGINE.md clause 26 for browsers): the lock's holder syncs, and when it
 * goes the next engine in the lock's queue takes the store's lease at once,
 * not after the lease runs out. Deno has the Web Locks API within one
 * process, as a browser has it within one origin; the browser demo test
 * (`web_demo_test.ts`) does the same with two Chromium tabs.
 *
 * @module
 */

import assert from "node:assert/strict";
import { SyncEngine } from "../mod.ts";
import { createMemoryStorage } from "../storage/memory.ts";
import { createRestTransport } from "../transport/rest.ts";
import { createSyncServer } from "../server/mod.ts";
import { LEASE_KEY } from "../src/_lease.ts";
import { withTimeout } from "./_timeout.ts";

/** The lease and the poll are far slower than any wait below. */
const SHARED = { leaseMs: 60_000, pollMs: 20_000 };

Deno.test("shared web lock: a bad name is refused", () => {
  const storage = createMemoryStorage();
  const transport = createRestTransport({ baseUrl: "http://sync.test" });
  for (const webLock of ["", 7]) {
    assert.throws(
      () =>
        new SyncEngine({
          storage,
          transport,
          shared: { webLock: webLock as string },
        }),
      /^TypeError: Cannot share storage as webLock is not a non-empty string/,
    );
  }
});

Deno.test(
  "shared web lock: one engine holds the lock and syncs; closing it hands over at once",
  withTimeout(20_000, async () => {
    await using storage = createMemoryStorage();
    await using server = createSyncServer();
    await using transport = createRestTransport({
      baseUrl: "http://sync.test",
      fetch: (input, init) => server.fetch(new Request(input, init)),
    });
    const webLock = `test-${crypto.randomUUID()}`;
    const open = (holder: string) => {
      const engine = new SyncEngine({
        storage,
        transport,
        shared: { ...SHARED, webLock, holder },
      });
      engine.table("todos");
      return engine;
    };
    const a = open("a");
    await a.sync(); // its first poll: it holds the lock and the lease
    assert.equal(a.role, "syncer");
    const b = open("b");
    try {
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.equal(b.role, "follower");
      const roles: string[] = [];
      b.on("role", ({ role }) => roles.push(role));
      const closedAt = Date.now();
      await a.close();
      const deadline = Date.now() + 5_000;
      const role = (): string => b.role;
      while (role() !== "syncer" && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      assert.equal(
        role(),
        "syncer",
        `no handover within 5 s (lease ${SHARED.leaseMs} ms, poll ${SHARED.pollMs} ms)`,
      );
      console.log(`web lock handover: ${Date.now() - closedAt} ms`);
      assert.deepEqual(roles, ["syncer"]);
      // The new syncer syncs: a write of its own reaches the server.
      await b.table("todos").put({ id: "t1", title: "after the handover" });
      assert.equal((await b.sync()).stats.pushed, 1);
    } finally {
      await b.close();
      await a.close();
    }
  }),
);

Deno.test(
  "shared web lock: the lock's new holder takes a lease left by a crashed holder at once",
  withTimeout(20_000, async () => {
    await using storage = createMemoryStorage();
    await using transport = createRestTransport({
      baseUrl: "http://sync.test",
    });
    // A tab that crashed: the browser freed its lock, its lease is still fresh.
    const left = await storage.write([{
      type: "putMeta",
      key: LEASE_KEY,
      value: { holder: "crashed", expiresAt: Date.now() + SHARED.leaseMs },
      expect: null,
    }]);
    assert.equal(left.ok, true);
    await using engine = new SyncEngine({
      storage,
      transport,
      shared: { ...SHARED, webLock: `test-${crypto.randomUUID()}` },
    });
    const deadline = Date.now() + 5_000;
    const role = (): string => engine.role;
    while (role() !== "syncer" && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.equal(role(), "syncer", "the stale lease was waited out");
  }),
);
