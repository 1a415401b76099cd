/**
 * The server-store conformance cases that run the reference server over the
 * store: tenancy through every route, and each principal's clock, live and
 * across a reopen.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { JsonObject, JsonValue } from "../src/json.ts";
import {
  bearerPrincipal,
  iso,
  type ServerStoreCase,
  T0,
} from "./_conformance_kit.ts";
import { createSyncServer, type SyncServer } from "./handler.ts";

/** An unexpected server error fails the test instead of hiding in a 500. */
function rethrowLater(error: unknown): void {
  setTimeout(() => {
    throw error;
  });
}

/** What {@linkcode callOf} answers. */
interface Called {
  readonly status: number;
  readonly body: JsonObject;
  readonly replayed: boolean;
}

/** Sends one request as a principal. */
type Call = (
  principal: string,
  method: string,
  target: string,
  json?: JsonValue,
  key?: string,
) => Promise<Called>;

/** A request helper for one server: principal, method, target, body, key. */
function callOf(server: SyncServer): Call {
  return async (principal, method, target, json, key) => {
    const headers: Record<string, string> = {
      authorization: `Bearer ${principal}`,
    };
    if (key !== undefined) headers["idempotency-key"] = key;
    const response = await server.fetch(
      new Request(`http://sync.test${target}`, {
        method,
        headers,
        ...(json === undefined ? {} : { body: JSON.stringify(json) }),
      }),
    );
    return {
      status: response.status,
      body: await response.json() as JsonObject,
      replayed: response.headers.get("idempotent-replayed") === "true",
    };
  };
}

/** Pulls a kind to its end, three at a time, following page tokens. */
async function pullEverything(
  call: Call,
  principal: string,
  query: Record<string, string>,
): Promise<JsonObject[]> {
  const items: JsonObject[] = [];
  let params: Record<string, string> = { limit: "3", ...query };
  for (let pages = 0; pages < 1000; pages++) {
    const { status, body } = await call(
      principal,
      "GET",
      `/todo?${new URLSearchParams(params)}`,
    );
    assert.equal(status, 200, JSON.stringify(body));
    const page = body.items as JsonObject[];
    items.push(...page);
    const last = page.at(-1);
    if (body.nextPageToken === null || last === undefined) return items;
    params = {
      ...params,
      updatedSince: String(last.updated_at),
      afterId: String(last.id),
      pageToken: String(body.nextPageToken),
    };
  }
  throw new Error("Cannot pull to the end as it never ends");
}

/** Whether a pull query's keyset selects a pulled item. */
function selectsItem(item: JsonObject, query: Record<string, string>): boolean {
  if (query.updatedSince === undefined) return true;
  const at = Date.parse(String(item.updated_at));
  const since = Date.parse(query.updatedSince);
  if (query.afterId === undefined) return at >= since;
  return at > since || (at === since && String(item.id) > query.afterId);
}

/** The cases, in the order they are registered. */
export const SERVER_CASES: readonly ServerStoreCase[] = [
  {
    title:
      "tenancy: through the server, a principal never reads, changes or learns of another's records",
    async run(store) {
      let now = T0;
      await using server = createSyncServer({
        store,
        auth: bearerPrincipal,
        now: () => now,
        onError: rethrowLater,
      });
      const call = callOf(server);
      // Alice and Bob write the same ids in the same milliseconds, Bob's
      // interleaving Alice's in keyset order; some become tombstones.
      for (const owner of ["alice", "bob"]) {
        for (let index = 0; index < 12; index++) {
          now = T0 + 10 * Math.floor(index / 4);
          const id = owner === "bob" && index % 3 === 0
            ? `r${index}b`
            : `r${index}`;
          assert.equal(
            (await call(owner, "PUT", `/todo/${id}`, { owner, index })).status,
            201,
          );
          if (index % 4 === 1) {
            assert.equal(
              (await call(owner, "DELETE", `/todo/${id}`)).status,
              200,
            );
          }
        }
      }
      now = T0 + 100;
      const alice = await pullEverything(call, "alice", {});
      const bob = await pullEverything(call, "bob", {});
      assert.equal(alice.length, 12);
      assert.equal(bob.length, 12);
      // Every query shape, paged three at a time with page tokens.
      for (
        const query of [
          {},
          { includeDeleted: "false" },
          { updatedSince: iso(T0 + 10) },
          { updatedSince: iso(T0), afterId: "r1" },
          {
            updatedSince: iso(T0 + 10),
            afterId: "r5",
            includeDeleted: "false",
          },
          // Typed, so it checks without exactOptionalPropertyTypes too.
        ] as Record<string, string>[]
      ) {
        for (
          const [owner, everything] of [["alice", alice], ["bob", bob]] as const
        ) {
          const items = await pullEverything(call, owner, query);
          const expected = everything.filter((item) =>
            selectsItem(item, query) &&
            (query.includeDeleted !== "false" || item.deleted_at === undefined)
          );
          assert.ok(expected.length > 0, JSON.stringify(query));
          assert.deepEqual(
            items,
            expected,
            `${owner} ${JSON.stringify(query)}`,
          );
          assert.ok(items.every((item) => item.owner === owner));
        }
      }
      // A base on Alice's version, her id: Bob creates his own (no 409 leak).
      const stale = await call("bob", "PUT", "/todo/r0", {
        mine: true,
        _baseUpdatedAt: String(alice[0]!.updated_at),
      });
      assert.equal(stale.status, 201);
      assert.equal(stale.body.owner, undefined);
      // An id only Alice has is unknown to Bob, single or batched.
      assert.equal((await call("bob", "DELETE", "/todo/r3")).status, 404);
      const batch = await call("bob", "POST", "/batch", {
        ops: [
          { opId: "b1", kind: "todo", id: "r6", type: "delete" },
          { opId: "b2", kind: "todo", id: "r9", type: "upsert", payload: {} },
          {
            opId: "b3",
            kind: "todo",
            id: "r3",
            type: "upsert",
            payload: {},
            baseUpdatedAt: iso(T0),
          },
        ],
      });
      assert.deepEqual(
        (batch.body.results as JsonObject[]).map((result) => result.status),
        [404, 201, 201],
      );
      // Idempotency keys are per principal: Alice's "k" is not Bob's.
      const first = await call("alice", "PUT", "/todo/k", { v: 1 }, "k");
      assert.equal(first.status, 201);
      const other = await call("bob", "PUT", "/todo/other", { v: 2 }, "k");
      assert.equal(other.status, 201);
      assert.equal(other.replayed, false);
      const same = await call("bob", "PUT", "/todo/k", { v: 1 }, "k");
      assert.equal(same.status, 422, "Bob's own key, used for another request");
      const replay = await call("alice", "PUT", "/todo/k", { v: 1 }, "k");
      assert.equal(replay.replayed, true);
      assert.deepEqual(replay.body, first.body);
      const batchKey = await call("bob", "POST", "/batch", {
        ops: [{ opId: "k2", kind: "todo", id: "k", type: "delete" }],
      });
      const aliceKey = await call(
        "alice",
        "DELETE",
        "/todo/k",
        undefined,
        "k2",
      );
      assert.equal(aliceKey.replayed, false);
      assert.equal(
        (batchKey.body.results as JsonObject[])[0]?.status,
        404,
        "Bob never had /todo/k",
      );
      // Alice's records are as she left them (but for her own /todo/k).
      const after = await pullEverything(call, "alice", {});
      assert.deepEqual(
        after.filter((item) => item.id !== "k"),
        alice,
      );
    },
  },
  {
    title:
      "clock: one principal's burst of writes does not move another's updated_at",
    async run(store) {
      await using server = createSyncServer({
        store,
        auth: bearerPrincipal,
        now: () => T0,
        onError: rethrowLater,
      });
      const call = callOf(server);
      // Under a frozen clock each id below the last moves Alice 1 ms on.
      for (let index = 299; index >= 0; index--) {
        await call(
          "alice",
          "PUT",
          `/todo/${String(index).padStart(3, "0")}`,
          {},
        );
      }
      const last = await call("alice", "PUT", "/todo/000", {});
      assert.equal(last.body.updated_at, iso(T0 + 300));
      assert.equal(
        (await call("bob", "PUT", "/todo/zzz", {})).body.updated_at,
        iso(T0),
      );
      const batch = await call("bob", "POST", "/batch", {
        ops: [{
          opId: "o",
          kind: "note",
          id: "a",
          type: "upsert",
          payload: {},
        }],
      });
      assert.equal(
        ((batch.body.results as JsonObject[])[0]?.record as JsonObject)
          .updated_at,
        iso(T0 + 1),
      );
      assert.deepEqual(await store.lastWrite("bob"), {
        updatedAt: T0 + 1,
        id: "a",
      });
      assert.deepEqual(await store.lastWrite("alice"), {
        updatedAt: T0 + 300,
        id: "000",
      });
    },
  },
  {
    title: "clock: each principal's clock and last id survive a reopen",
    persistent: true,
    async run(store, context) {
      {
        const server = createSyncServer({
          store,
          auth: bearerPrincipal,
          now: () => T0,
          onError: rethrowLater,
        });
        const call = callOf(server);
        for (const id of ["c", "b", "a"]) {
          await call("alice", "PUT", `/todo/${id}`, {});
        }
        await call("bob", "PUT", "/todo/m", {});
        await server.close();
      }
      assert.ok(context.reopen !== undefined);
      // The clock went back an hour while the server was down.
      await using server = createSyncServer({
        store: await context.reopen(),
        auth: bearerPrincipal,
        now: () => T0 - 3_600_000,
        onError: rethrowLater,
      });
      const call = callOf(server);
      // Over a shared store (readClock) a write always moves past the clock
      // it read, even with an id after the clock's last one: its pull marks
      // come from the stored clock alone (`sharedPullMark()`).
      const shared = store.readClock !== undefined ? 1 : 0;
      // Alice's last write was (T0 + 2, "a"): "b" moves on, "z" may share it.
      assert.equal(
        (await call("alice", "PUT", "/todo/z", {})).body.updated_at,
        iso(T0 + 2 + shared),
      );
      assert.equal(
        (await call("alice", "PUT", "/todo/b", {})).body.updated_at,
        iso(T0 + 3 + shared),
      );
      // Bob's clock is his own: (T0, "m").
      assert.equal(
        (await call("bob", "PUT", "/todo/n", {})).body.updated_at,
        iso(T0 + shared),
      );
      assert.equal(
        (await call("bob", "PUT", "/todo/a", {})).body.updated_at,
        iso(T0 + 1 + shared),
      );
    },
  },
];
