/**
 * The demo: a reference server on an embedded SQLite file and two clients,
 * each with its own SQLite file, syncing over real HTTP. Client A edits `mood` and `notes` while offline,
 * client B meanwhile changes `energy`; after both sync, every field is kept
 * and both clients hold the server's merged record.
 *
 * Run with `deno task demo`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { SyncEngine, type SyncEvent } from "../mod.ts";
import { openSqliteStorage } from "../storage/sqlite.ts";
import { createRestTransport } from "../transport/rest.ts";
import { createSyncServer } from "../server/mod.ts";
import { openSqliteServerStore } from "../server/sqlite.ts";

const dir = await Deno.makeTempDir({ prefix: "offline-first-demo-" });
try {
  await run(dir);
} finally {
  await Deno.remove(dir, { recursive: true });
}

async function run(dir: string): Promise<void> {
  const dbPath = `${dir}/server.sqlite`;

  await using server = createSyncServer({
    store: await openSqliteServerStore(dbPath),
  });
  await using http = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    server.fetch,
  );
  const baseUrl = `http://127.0.0.1:${http.addr.port}`;
  console.log(`server  listening on ${baseUrl}, data in ${dbPath}`);
  console.log(
    `clients A and B keep their data in ${dir}/client-{A,B}.sqlite\n`,
  );

  function show(name: string, event: SyncEvent): void {
    const tag = name.padEnd(7);
    switch (event.type) {
      case "opPushed":
        console.log(
          `${tag} pushed ${event.opType} ${event.kind}/${event.id} -> ${event.status}`,
        );
        break;
      case "conflictDetected":
        console.log(
          `${tag} conflict on ${event.kind}/${event.id} (strategy ${event.strategy})`,
        );
        break;
      case "dataMerged":
        console.log(
          `${tag} merged ${event.kind}/${event.id}: kept local [${event.localFields}]` +
            `, kept server [${event.serverFields}], both changed [${event.conflictingFields}]`,
        );
        break;
      case "conflictResolved":
        console.log(
          `${tag} resolved ${event.kind}/${event.id} with ${event.resolution}`,
        );
        break;
      case "pullPageApplied":
        console.log(`${tag} pulled ${event.count} record(s) of ${event.kind}`);
        break;
      case "syncCompleted":
        console.log(
          `${tag} sync #${event.runId} ${event.ok ? "done" : "failed"}: ` +
            `pushed ${event.stats.pushed}, pulled ${event.stats.pulled}, conflicts ${event.stats.conflicts}`,
        );
        break;
      case "error":
        console.log(`${tag} error (${event.category}): ${event.error.message}`);
        break;
    }
  }

  async function client(name: string) {
    const storage = await openSqliteStorage(`${dir}/client-${name}.sqlite`);
    const transport = createRestTransport({ baseUrl });
    const engine = new SyncEngine({ storage, transport });
    for (
      const type of [
        "opPushed",
        "conflictDetected",
        "dataMerged",
        "conflictResolved",
        "pullPageApplied",
        "syncCompleted",
        "error",
      ] as const
    ) {
      engine.on(type, (event) => show(name, event));
    }
    return {
      engine,
      days: engine.table("days"),
      async [Symbol.asyncDispose]() {
        await engine.close();
        await transport.close();
        await storage.close();
      },
    };
  }

  await using a = await client("A");
  await using b = await client("B");

  console.log("A creates today's entry and syncs; B syncs and gets it");
  await a.days.put({ id: "2025-03-01", mood: "ok", energy: 3, notes: "" });
  await a.engine.sync();
  await b.engine.sync();

  console.log(
    "\nBoth go offline. A edits mood, then notes (three local writes):",
  );
  await a.days.update("2025-03-01", { mood: "good" });
  await a.days.update("2025-03-01", { mood: "great" });
  await a.days.update("2025-03-01", { notes: "ran 5k before work" });
  const queued = await a.engine.outbox.list();
  console.log(
    `A       outbox holds ${queued.length} op (writes coalesced), fields [${
      queued[0]?.changedFields
    }]`,
  );
  console.log("B changes energy");
  await b.days.update("2025-03-01", { energy: 5 });

  console.log("\nB comes online first, then A:");
  await b.engine.sync();
  await a.engine.sync();
  await b.engine.sync();

  const fromA = await a.days.get("2025-03-01");
  const fromB = await b.days.get("2025-03-01");
  console.log("\nfinal record on A:", fromA);
  console.log("final record on B:", fromB);
  assert.deepEqual(fromA, fromB);
  assert.equal(fromA?.mood, "great");
  assert.equal(fromA?.notes, "ran 5k before work");
  assert.equal(fromA?.energy, 5);
  console.log("\nEvery field survived: A's mood and notes, B's energy.");
}
