/**
 * Clause 5 as the server sees it: the ops of one record arrive one at a
 * time (never two in flight, never two in one batch) and are applied in the
 * order they were queued, while other records go on. A watcher in front of
 * the reference server holds the first op of a record until another op
 * arrives, so an engine that sent the next op of that record early would be
 * caught with both in flight.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createClient, startServer, type TestServer } from "./_harness.ts";

/** One op as it crossed the wire. */
interface WireOp {
  readonly id: string;
  /** The payload's `n`, or `"delete"`. */
  readonly n: unknown;
}

/** What the watcher saw. */
interface FifoLog {
  /** Per record, the ops the server accepted, in order. */
  readonly applied: Map<string, unknown[]>;
  /** Every breach of per-record FIFO. */
  readonly violations: string[];
}

interface WatchOptions {
  /** The record whose first op is held until another op arrives. */
  readonly hold: string;
  /** Answers the first op of this record with 503 (not applied). */
  readonly failFirstOf?: string;
}

function wireOps(seen: { path: string; method: string; body: string }) {
  if (seen.path === "/batch") {
    const { ops } = JSON.parse(seen.body) as {
      ops: { id: string; type: string; payload?: { n?: unknown } }[];
    };
    return ops.map((op): WireOp => ({
      id: op.id,
      n: op.type === "delete" ? "delete" : op.payload?.n,
    }));
  }
  const id = decodeURIComponent(seen.path.split("/")[2] ?? "");
  return [{
    id,
    n: seen.method === "DELETE" ? "delete" : JSON.parse(seen.body).n,
  }];
}

/** Whether a response (single or batch result) means the op was applied. */
function appliedStatuses(
  seen: { path: string },
  response: Response,
  body: string,
): boolean[] {
  if (seen.path !== "/batch") return [response.ok];
  if (!response.ok) return [];
  const { results } = JSON.parse(body) as { results: { status: number }[] };
  return results.map((result) => result.status >= 200 && result.status < 300);
}

function watchFifo(server: TestServer, options: WatchOptions): FifoLog {
  const applied = new Map<string, unknown[]>();
  const violations: string[] = [];
  const inFlight = new Set<string>();
  let arrival = Promise.withResolvers<void>();
  let held = false;
  let failed = false;
  server.intercept(async (request, seen, next) => {
    if (seen.method === "GET") return undefined;
    const ops = wireOps(seen);
    const ids = ops.map((op) => op.id);
    for (const [i, id] of ids.entries()) {
      if (ids.indexOf(id) !== i) {
        violations.push(`two ops of "${id}" in one request`);
      }
      if (inFlight.has(id)) {
        violations.push(`"${id}" sent while its previous op was in flight`);
      }
    }
    ids.forEach((id) => inFlight.add(id));
    arrival.resolve();
    arrival = Promise.withResolvers<void>();
    try {
      // A batch holds a whole round (and the transport sends batches one
      // after the other): only single-op requests can overlap.
      if (!held && seen.path !== "/batch" && ids.includes(options.hold)) {
        held = true;
        // Until another op arrives: a correct engine sends other records'
        // heads meanwhile; the timer only spares an engine that sends one
        // op at a time.
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          arrival.promise,
          new Promise((resolve) => timer = setTimeout(resolve, 250)),
        ]);
        clearTimeout(timer);
      }
      if (!failed && ids.includes(options.failFirstOf ?? "")) {
        failed = true;
        return Response.json({ error: "unavailable" }, { status: 503 });
      }
      const response = await next(request);
      const body = await response.text();
      appliedStatuses(seen, response, body).forEach((ok, i) => {
        const op = ops[i]!;
        if (!ok) return;
        const list = applied.get(op.id) ?? [];
        list.push(op.n);
        applied.set(op.id, list);
      });
      return new Response(body, {
        status: response.status,
        headers: response.headers,
      });
    } finally {
      ids.forEach((id) => inFlight.delete(id));
    }
  });
  return { applied, violations };
}

for (const batch of [false, true]) {
  Deno.test(`fifo: clause 5, the ops of one record reach the server one at a time and in queue order (batch ${batch})`, async () => {
    await using server = startServer();
    await using a = createClient(server.url, {
      transport: { batch, retry: { attempts: 1 } },
    });
    const log = a.engine.table("log", { coalesce: false });
    // Interleaved in the outbox: r0 s0 r1 s1 r2 r3.
    await log.put({ id: "r", n: 0 });
    await log.put({ id: "s", n: 0 });
    await log.update("r", { n: 1 });
    await log.update("s", { n: 1 });
    await log.update("r", { n: 2 });
    await log.delete("r");
    assert.equal(await a.engine.outbox.count(), 6);
    const watched = watchFifo(server, { hold: "r" });

    const { stats } = await a.engine.sync();
    assert.deepEqual(watched.violations, []);
    assert.deepEqual(watched.applied.get("r"), [0, 1, 2, "delete"]);
    assert.deepEqual(watched.applied.get("s"), [0, 1]);
    assert.equal(stats.pushed, 6);
    assert.equal(stats.conflicts, 0, "each op was rebased onto the one before");
    assert.equal(await a.engine.outbox.count(), 0);
    assert.equal(await log.get("r"), undefined);
    assert.equal((await log.get("s"))?.n, 1);
  });

  Deno.test(`fifo: clause 5, ops queued behind an op that failed wait for it, in order (batch ${batch})`, async () => {
    await using server = startServer();
    await using a = createClient(server.url, {
      transport: { batch, retry: { attempts: 1 } },
    });
    const log = a.engine.table("log", { coalesce: false });
    await log.put({ id: "r", n: 0 });
    await log.put({ id: "s", n: 0 });
    await log.update("r", { n: 1 });
    await log.update("s", { n: 1 });
    await log.update("r", { n: 2 });
    const watched = watchFifo(server, { hold: "r", failFirstOf: "r" });

    await a.engine.sync(); // r's first op fails: r waits for the next run
    assert.deepEqual(watched.violations, []);
    assert.equal(watched.applied.get("r"), undefined, "nothing of r jumped");
    await a.engine.sync();
    assert.deepEqual(watched.violations, []);
    assert.deepEqual(watched.applied.get("r"), [0, 1, 2]);
    assert.deepEqual(watched.applied.get("s"), [0, 1]);
    assert.equal(await a.engine.outbox.count(), 0);
    assert.equal((await log.get("r"))?.n, 2);
  });
}
