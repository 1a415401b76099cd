/**
 * The kit's batch check: `POST /batch` applies its ops in order, each as
 * its single request would be (later ops see earlier ones), answers one
 * result per op in op order, and replays by op id. Private.
 *
 * @module
 */

import {
  type BackendCheck,
  BackendCheckSkip,
  byId,
  expect,
  expectStatus,
  isLive,
  isObject,
  pullAll,
  show,
} from "./_backend_http.ts";

const STALE = "2000-01-01T00:00:00.000Z";

/** Whether a replayed result is the stored one (extra fields aside). */
function sameResult(replayed: unknown, stored: unknown): boolean {
  return isObject(replayed) && isObject(stored) &&
    replayed.opId === stored.opId && replayed.status === stored.status &&
    JSON.stringify(replayed.record) === JSON.stringify(stored.record);
}

const batchOrder: BackendCheck = {
  name: "batch-order",
  rule:
    "POST /batch applies ops in order (later ops see earlier ones) and answers one result per op in op order",
  async run(context) {
    if (!context.health.batch) {
      throw new BackendCheckSkip("GET /health does not advertise batch");
    }
    const kind = context.kind("batch");
    const opIds = [1, 2, 3, 4, 5, 6].map(() => context.key());
    const ops = [
      // Creates x; the next op sees it, so its stale base is a conflict.
      { opId: opIds[0], kind, id: "x", type: "upsert", payload: { v: 1 } },
      {
        opId: opIds[1],
        kind,
        id: "x",
        type: "upsert",
        payload: { v: 2 },
        baseUpdatedAt: STALE,
      },
      // y does not exist yet: 404; then it is created and deleted.
      { opId: opIds[2], kind, id: "y", type: "delete" },
      { opId: opIds[3], kind, id: "y", type: "upsert", payload: { v: 1 } },
      { opId: opIds[4], kind, id: "y", type: "delete" },
      // Forced over x: applies after op 1.
      {
        opId: opIds[5],
        kind,
        id: "x",
        type: "upsert",
        payload: { v: 6 },
        force: true,
        baseUpdatedAt: STALE,
      },
    ];
    const wanted = [[201], [409], [404], [201], [200, 204], [200]];
    const answer = await context.call("POST", "/batch", { body: { ops } });
    expectStatus(answer, [200], "apply a batch with POST /batch");
    const results = isObject(answer.json) ? answer.json.results : undefined;
    expect(
      Array.isArray(results) && results.length === ops.length,
      `Cannot apply a batch as the answer has one result per op: current value is ${
        show(answer)
      }`,
    );
    for (const [index, result] of (results as unknown[]).entries()) {
      expect(
        isObject(result) && result.opId === opIds[index] &&
          wanted[index]!.includes(result.status as number),
        `Cannot apply batch op ${index + 1} in order as the contract answers ${
          wanted[index]!.join(" or ")
        } for opId ${JSON.stringify(opIds[index])}: current value is ${
          JSON.stringify(result)
        } (results ${JSON.stringify(results)})`,
      );
    }
    const items = byId((await pullAll(context, kind)).items);
    const x = items.get("x");
    const y = items.get("y");
    expect(
      x !== undefined && x.v === 6 && isLive(x) &&
        y !== undefined && typeof y.deleted_at === "string",
      `Cannot apply a batch in order as x ends forced to v 6 and y deleted: current value is ${
        JSON.stringify([...items.values()])
      }`,
    );
    // Each op is idempotent by its opId: a replay applies nothing again.
    const again = await context.call("POST", "/batch", { body: { ops } });
    expectStatus(again, [200], "replay a batch");
    const replayed = isObject(again.json) ? again.json.results : undefined;
    const stored = results as Record<string, unknown>[];
    expect(
      Array.isArray(replayed) && replayed.length === ops.length &&
        [0, 2, 3, 4, 5].every((index) =>
          sameResult(replayed[index], stored[index])
        ),
      `Cannot replay a batch as each applied op answers its stored result: current value is ${
        show(again)
      }, first ${JSON.stringify(stored)}`,
    );
    const after = byId((await pullAll(context, kind)).items);
    expect(
      JSON.stringify(after.get("x")) === JSON.stringify(x) &&
        JSON.stringify(after.get("y")) === JSON.stringify(y),
      `Cannot replay a batch without applying it again: current value is ${
        JSON.stringify([...after.values()])
      }`,
    );
  },
};

/** The batch checks. */
export const BATCH_CHECKS: readonly BackendCheck[] = [batchOrder];
