// Each verdict of the chaos suite can fail: a deliberately broken server,
// store or client storage makes exactly the verdict that guards it fail.
// And the shrinker finds a minimal failing op list (testing/_shrink.ts).
import assert from "node:assert/strict";
import type { Storage } from "../src/storage.ts";
import type { ServerStore } from "../server/store.ts";
import {
  ChaosFailureError,
  type ChaosOp,
  runChaos,
  shrinkOps,
  testConvergence,
  type VerdictName,
} from "../testing/mod.ts";
import { withTimeout } from "./_timeout.ts";

const QUIET = {
  dropRequest: 0,
  dropResponse: 0,
  duplicate: 0,
  delay: 0,
  serverError: 0,
  rateLimit: 0,
  unavailable: 0,
  expireToken: 0,
  truncate: 0,
  garbage: 0,
  offline: 0,
};

/** Runs seeds until one fails; returns which verdicts failed. */
async function firstFailure(
  options: Omit<Parameters<typeof runChaos>[0], "seed">,
  seeds = 20,
): Promise<{ seed: number; failed: VerdictName[] }> {
  for (let seed = 1; seed <= seeds; seed++) {
    const result = await runChaos({ ...options, seed });
    const failed = (Object.keys(result.verdicts) as VerdictName[]).filter(
      (name) => result.verdicts[name].status === "fail",
    );
    if (failed.length > 0) return { seed, failed };
  }
  throw new Error(`no seed of 1-${seeds} failed`);
}

Deno.test(
  "chaos: a client storage that drops pulled records fails 'convergence'",
  withTimeout(60_000, async () => {
    const { failed } = await firstFailure({
      faults: QUIET,
      hooks: {
        storage(storage: Storage, client: number): Storage {
          if (client !== 1) return storage;
          return new Proxy(storage, {
            get(target, property) {
              if (property === "write") {
                // Records with no op: pulled (or acknowledged) versions.
                return (
                  mutations: Parameters<Storage["write"]>[0],
                  o?: Parameters<Storage["write"]>[1],
                ) =>
                  target.write(
                    mutations.filter((m) =>
                      !(m.type === "putRecord" && m.record.lastOpId === null &&
                        m.expect === null)
                    ),
                    o,
                  );
              }
              const value = Reflect.get(target, property, target);
              return typeof value === "function" ? value.bind(target) : value;
            },
          });
        },
      },
    });
    assert.ok(failed.includes("convergence"), failed.join());
  }),
);

Deno.test(
  "chaos: a server store that acknowledges writes and loses them fails 'noLostWrite'",
  withTimeout(60_000, async () => {
    let commits = 0;
    const { failed } = await firstFailure({
      faults: QUIET,
      hooks: {
        store(store: ServerStore): ServerStore {
          return {
            ...bind(store),
            commit(writes) {
              // Every 7th commit loses its records but keeps its keys.
              commits++;
              return store.commit(
                commits % 7 === 0
                  ? writes.filter((w) => w.type !== "record")
                  : writes,
              );
            },
          };
        },
      },
    });
    assert.ok(failed.includes("noLostWrite"), failed.join());
  }),
);

Deno.test(
  "chaos: a server that ignores Idempotency-Key fails 'exactlyOnce' when requests are duplicated",
  withTimeout(60_000, async () => {
    const { failed } = await firstFailure({
      faults: { ...QUIET, duplicate: 0.3, dropResponse: 0.2 },
      hooks: {
        server: (fetch) => (request) => {
          const headers = new Headers(request.headers);
          headers.delete("idempotency-key");
          const body = request.body;
          return fetch(
            new Request(request.url, {
              method: request.method,
              headers,
              body,
              signal: request.signal,
              // @ts-ignore: a streamed body needs it in Deno
              duplex: "half",
            }),
          );
        },
      },
      backend: "embedded",
      tables: { auto: "autoPreserve", client: "clientWins" },
    });
    assert.ok(failed.includes("exactlyOnce"), failed.join());
  }),
);

Deno.test(
  "chaos: a server that refuses one record's writes for good fails 'noStuckClient'",
  withTimeout(60_000, async () => {
    const { failed } = await firstFailure({
      faults: QUIET,
      tables: { auto: "autoPreserve" },
      hooks: {
        server: (fetch) => (request) =>
          request.method === "PUT" && request.url.endsWith("/auto/r0")
            ? Promise.resolve(Response.json({ error: "nope" }, { status: 422 }))
            : fetch(request),
      },
    });
    assert.ok(failed.includes("noStuckClient"), failed.join());
  }),
);

Deno.test(
  "chaos: a server that answers 500 of its own fails 'noServerError'",
  withTimeout(60_000, async () => {
    let puts = 0;
    const { failed } = await firstFailure({
      faults: QUIET,
      hooks: {
        server: (fetch) => (request) =>
          request.method === "PUT" && ++puts === 3
            ? Promise.resolve(
              Response.json({ error: "internal" }, { status: 500 }),
            )
            : fetch(request),
      },
    });
    assert.deepEqual(failed, ["noServerError"]);
  }),
);

Deno.test(
  "chaos: testConvergence() throws the seed, the verdict and a shrunk op list that still fails",
  withTimeout(60_000, async () => {
    // The first PUT of auto/r1 in each run gets a 500 of the server's own.
    let puts = 0;
    const hooks = {
      store(store: ServerStore): ServerStore {
        puts = 0;
        return store;
      },
      server:
        (fetch: (request: Request) => Promise<Response>) =>
        (request: Request) =>
          request.method === "PUT" && request.url.endsWith("/auto/r1") &&
            ++puts === 1
            ? Promise.resolve(
              Response.json({ error: "internal" }, { status: 500 }),
            )
            : fetch(request),
    };
    const error = await testConvergence({ runs: 10, faults: QUIET, hooks })
      .then(() => null, (error) => error);
    assert.ok(error instanceof ChaosFailureError);
    assert.equal(error.verdict, "noServerError");
    assert.ok(error.ops.length < error.originalOps.length);
    assert.ok(error.ops.length <= 3, error.message);
    assert.match(
      error.message,
      /^Cannot pass chaos seed \d+ as verdict 'noServerError' failed: current value is /,
    );
    const replay = await runChaos({
      seed: error.seed,
      opList: error.ops,
      faults: QUIET,
      hooks,
    });
    assert.equal(replay.verdicts.noServerError.status, "fail");
  }),
);

Deno.test("chaos: shrinkOps() finds the two ops that together fail", async () => {
  const ops: ChaosOp[] = Array.from(
    { length: 40 },
    (_, i) => ({ type: "sync", client: i }),
  );
  const { ops: shrunk, tries } = await shrinkOps(ops, {
    fails: (list) =>
      Promise.resolve(
        list.some((op) => "client" in op && op.client === 7) &&
          list.some((op) => "client" in op && op.client === 31),
      ),
  });
  assert.deepEqual(shrunk, [
    { type: "sync", client: 7 },
    { type: "sync", client: 31 },
  ]);
  assert.ok(tries < 100, `${tries} tries`);
});

Deno.test("chaos: shrinkOps() keeps to its budget", async () => {
  const ops: ChaosOp[] = Array.from(
    { length: 40 },
    (_, i) => ({ type: "sync", client: i }),
  );
  let calls = 0;
  const { ops: shrunk, tries } = await shrinkOps(ops, {
    budget: 5,
    fails: () => {
      calls++;
      return Promise.resolve(false);
    },
  });
  assert.equal(calls, 5);
  assert.equal(tries, 5);
  assert.equal(shrunk.length, 40);
});

Deno.test("chaos: runChaos() refuses 1 client and 6 clients", async () => {
  await assert.rejects(() => runChaos({ seed: 1, clients: 1 }), RangeError);
  await assert.rejects(() => runChaos({ seed: 1, clients: 6 }), RangeError);
});

Deno.test(
  "chaos: the same seed replays the same ops and the same faults",
  withTimeout(30_000, async () => {
    const a = await runChaos({ seed: 77, ops: 20 });
    const b = await runChaos({ seed: 77, ops: 20 });
    assert.deepEqual(a.opList, b.opList);
    assert.deepEqual(a.faults, b.faults);
    assert.ok(Object.values(a.faults).reduce((x, y) => x + y, 0) > 0);
  }),
);

function bind(store: ServerStore): ServerStore {
  return {
    getRecord: (ns, kind, id) => store.getRecord(ns, kind, id),
    listRecords: (ns, kind, options) => store.listRecords(ns, kind, options),
    getIdempotency: (ns, key) => store.getIdempotency(ns, key),
    commit: (writes) => store.commit(writes),
    purge: (options) => store.purge(options),
    trimIdempotency: (ns, options) => store.trimIdempotency(ns, options),
    lastWrite: (ns) => store.lastWrite(ns),
    close: () => store.close(),
    [Symbol.asyncDispose]: () => store.close(),
  };
}
