/**
 * Every strategy, end to end against the reference server: two clients edit
 * (or delete) the same record, the first syncs, the second edits a stale copy
 * and syncs, in both orders of the two clients; both clients end with the
 * server's record, and that record is the one the strategy promises.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  type ConflictStrategy,
  type JsonObject,
  Resolutions,
  type SyncEngineOptions,
} from "../mod.ts";
import { createClient, eventsOf, startServer } from "./_harness.ts";

type Edit = "edit" | "delete";

interface Scenario {
  /** What the first client to sync does. */
  readonly first: Edit;
  /** What the second client does to its stale copy. */
  readonly second: Edit;
}

const BASE = { id: "r", title: "t0", body: "b0", tags: ["a"] };

/** The first syncer changes the title and adds tag "x". */
function firstEdit(data: JsonObject): JsonObject {
  return { ...data, title: "t1", tags: [...(data.tags as string[]), "x"] };
}

/** The second syncer changes the body and adds tag "y". */
function secondEdit(data: JsonObject): JsonObject {
  return { ...data, body: "b2", tags: [...(data.tags as string[]), "y"] };
}

/** What each strategy promises; `null` = the record ends deleted. */
function expected(
  strategy: ConflictStrategy | "manual+inbox",
  { first, second }: Scenario,
): Omit<typeof BASE, "id"> | null {
  const firstWins = first === "delete"
    ? null
    : { title: "t1", body: "b0", tags: ["a", "x"] };
  const secondWins = second === "delete"
    ? null
    : { title: "t0", body: "b2", tags: ["a", "y"] };
  switch (strategy) {
    case "serverWins":
    case "manual+inbox": // the inbox is resolved with acceptServer
      return firstWins;
    case "clientWins":
    case "lastWriteWins": // the second edit happened after the first push
      return secondWins;
    case "autoPreserve":
    case "merge": // deletes fall back to autoPreserve's rules
      if (first === "edit" && second === "edit") {
        return strategy === "merge"
          ? { title: "t1", body: "b2", tags: ["a", "x"] } // mergeFn takes the server's tags
          : { title: "t1", body: "b2", tags: ["a", "x", "y"] };
      }
      // An edit beats a delete: no user's data is lost.
      return first === "edit" ? firstWins : secondWins;
    case "manual": // the resolver below: acceptClient for deletes, else merge
      if (second === "delete") return null;
      return first === "delete"
        ? { title: "t0", body: "b2", tags: ["a", "y"] }
        : { title: "t1", body: "b2", tags: ["a", "x", "y"] };
  }
}

function options(
  strategy: ConflictStrategy | "manual+inbox",
  clock: () => number,
): Partial<SyncEngineOptions> {
  const common = { clock: { now: clock } };
  switch (strategy) {
    case "merge":
      return {
        ...common,
        strategy,
        mergeFn: (local, server) => ({ ...server, body: local.body ?? null }),
      };
    case "manual":
      return {
        ...common,
        strategy,
        resolver: (conflict) => {
          if (conflict.opType === "delete") return Resolutions.acceptClient();
          const local = conflict.local!;
          const server = conflict.server!;
          const tags = [
            ...new Set([
              ...(server.tags as string[] ?? []),
              ...(local.tags as string[]),
            ]),
          ];
          return Resolutions.acceptMerged({
            ...server,
            body: local.body ?? null,
            tags,
          });
        },
      };
    case "manual+inbox":
      return { ...common, strategy: "manual" };
    default:
      return { ...common, strategy };
  }
}

const STRATEGIES = [
  "autoPreserve",
  "serverWins",
  "clientWins",
  "lastWriteWins",
  "merge",
  "manual",
  "manual+inbox",
] as const;
const SCENARIOS: Scenario[] = [
  { first: "edit", second: "edit" },
  { first: "delete", second: "edit" },
  { first: "edit", second: "delete" },
];

for (const strategy of STRATEGIES) {
  Deno.test(`strategies: ${strategy} converges on the record it promises`, async (t) => {
    for (const scenario of SCENARIOS) {
      for (const firstName of ["A", "B"] as const) {
        await t.step(
          `${scenario.first}/${scenario.second}, ${firstName} first`,
          async () => {
            // One timeline for server and clients, a second per step.
            let now = Date.parse("2025-03-01T10:00:00.000Z");
            const tick = (): number => now += 1000;
            await using server = startServer({ now: () => now });
            await using a = createClient(server.url, {
              engine: options(strategy, () => now),
            });
            await using b = createClient(server.url, {
              engine: options(strategy, () => now),
            });
            const [first, second] = firstName === "A" ? [a, b] : [b, a];
            const t1 = first.engine.table("records");
            const t2 = second.engine.table("records");

            await t1.put(BASE);
            await first.engine.sync();
            await second.engine.sync();
            tick();

            if (scenario.first === "edit") {
              await t1.put(firstEdit((await t1.get("r"))!));
            } else await t1.delete("r");
            tick();
            await first.engine.sync();
            tick();
            // The second client has not pulled: it edits a stale copy.
            if (scenario.second === "edit") {
              await t2.put(secondEdit((await t2.get("r"))!));
            } else await t2.delete("r");
            tick();
            await second.engine.sync();
            assert.ok(
              eventsOf(second.events, "conflictDetected").length >= 1,
              "the second sync met a conflict",
            );
            if (strategy === "manual+inbox") {
              const [parked] = await second.engine.conflicts.list();
              assert.ok(parked, "the conflict waits in the inbox");
              await second.engine.conflicts.resolve(
                parked.opId,
                Resolutions.acceptServer(),
              );
              await second.engine.sync();
            }
            tick();
            await first.engine.sync();

            const want = expected(strategy, scenario);
            for (
              const [name, client] of [["first", t1], ["second", t2]] as const
            ) {
              const got = await client.get("r");
              if (want === null) {
                assert.equal(got, undefined, `${name} client: deleted`);
              } else {
                assert.ok(
                  got !== undefined,
                  `${name} client: the record exists`,
                );
                const { id: _id, updated_at: _u, ...fields } = got;
                assert.deepEqual(fields, want, `${name} client`);
              }
            }
            assert.deepEqual(
              await t1.get("r", { includeDeleted: true }).then((r) =>
                r?.updated_at
              ),
              await t2.get("r", { includeDeleted: true }).then((r) =>
                r?.updated_at
              ),
              "both clients hold the server's version",
            );
            assert.equal(await a.engine.outbox.count(), 0);
            assert.equal(await b.engine.outbox.count(), 0);
          },
        );
      }
    }
  });
}
