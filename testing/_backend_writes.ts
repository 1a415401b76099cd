/**
 * The kit's write checks: idempotent replay (same key, same answer, no
 * second write), idempotency mismatch (same key, other body: `422`), and
 * `409`s that are neither applied nor stored. Private.
 *
 * @module
 */

import {
  type Answer,
  type BackendCheck,
  byId,
  type CheckContext,
  expect,
  expectError,
  expectStatus,
  isLive,
  isObject,
  pullAll,
  put,
  recordOf,
  remove,
  sameInstant,
  show,
} from "./_backend_http.ts";

/** The record a pull holds for an id, or `undefined`. */
async function pulled(
  context: CheckContext,
  kind: string,
  id: string,
): Promise<Record<string, unknown> | undefined> {
  return byId((await pullAll(context, kind)).items).get(id);
}

function sameAnswer(a: Answer, b: Answer): boolean {
  if (a.status !== b.status) return false;
  return JSON.stringify(a.json) === JSON.stringify(b.json) ||
    a.text === b.text;
}

const replay: BackendCheck = {
  name: "idempotent-replay",
  rule:
    "a repeated write with the same Idempotency-Key gets the stored answer and is not applied again",
  async run(context) {
    const kind = context.kind("replay");
    const key = context.key();
    const first = await put(context, kind, "r1", {
      v: 1,
      options: { key },
    });
    const stored = recordOf(first, "create a record with PUT");
    expectStatus(first, [201], "create a record with PUT");
    // Another write moves the record on; the replay must not undo it.
    const second = recordOf(
      await put(context, kind, "r1", { v: 2 }),
      "update a record with PUT",
    );
    const again = await put(context, kind, "r1", { v: 1, options: { key } });
    expect(
      sameAnswer(again, first),
      `Cannot replay a PUT with its Idempotency-Key as the server answers the stored response: current value is ${
        show(again)
      }, first answer ${show(first)}`,
    );
    const now = await pulled(context, kind, "r1");
    expect(
      now !== undefined && now.v === 2 &&
        sameInstant(now.updated_at, second.updated_at),
      `Cannot replay a PUT with its Idempotency-Key as it is not applied again: current value is ${
        JSON.stringify(now ?? null)
      }, wanted the later write ${JSON.stringify(second)} (first ${
        JSON.stringify(stored)
      })`,
    );
    // Deletes replay too: the second DELETE neither fails nor deletes anew.
    const deleteKey = context.key();
    const deleted = await remove(context, kind, "r1", { key: deleteKey });
    expectStatus(deleted, [200, 204], "delete a record");
    const tombstone = await pulled(context, kind, "r1");
    const revived = recordOf(
      await put(context, kind, "r1", { v: 3 }),
      "write a record again after its delete",
    );
    const deletedAgain = await remove(context, kind, "r1", { key: deleteKey });
    expect(
      sameAnswer(deletedAgain, deleted),
      `Cannot replay a DELETE with its Idempotency-Key as the server answers the stored response: current value is ${
        show(deletedAgain)
      }, first answer ${show(deleted)}`,
    );
    const last = await pulled(context, kind, "r1");
    expect(
      last !== undefined && last.v === 3 &&
        (last.deleted_at === undefined || last.deleted_at === null) &&
        sameInstant(last.updated_at, revived.updated_at),
      `Cannot replay a DELETE with its Idempotency-Key as it is not applied again: current value is ${
        JSON.stringify(last ?? null)
      } (tombstone was ${JSON.stringify(tombstone ?? null)})`,
    );
  },
};

const mismatch: BackendCheck = {
  name: "idempotency-mismatch",
  rule:
    "the same Idempotency-Key with another body, path or method is 422 idempotency_mismatch and changes nothing",
  async run(context) {
    const kind = context.kind("mismatch");
    const key = context.key();
    const created = recordOf(
      await put(context, kind, "m1", { v: 1, options: { key } }),
      "create a record with PUT",
    );
    const otherBody = await put(context, kind, "m1", {
      v: 2,
      options: { key },
    });
    expectError(
      otherBody,
      422,
      "idempotency_mismatch",
      "reuse an Idempotency-Key with another body",
    );
    const otherPath = await put(context, kind, "m2", {
      v: 1,
      options: { key },
    });
    expectError(
      otherPath,
      422,
      "idempotency_mismatch",
      "reuse an Idempotency-Key on another path",
    );
    const otherMethod = await remove(context, kind, "m1", { key });
    expectError(
      otherMethod,
      422,
      "idempotency_mismatch",
      "reuse an Idempotency-Key with another method",
    );
    const items = byId((await pullAll(context, kind)).items);
    const m1 = items.get("m1");
    expect(
      m1 !== undefined && m1.v === 1 && isLive(m1) &&
        sameInstant(m1.updated_at, created.updated_at) && !items.has("m2"),
      `Cannot refuse a mismatched Idempotency-Key without applying it: current value is ${
        JSON.stringify([...items.values()])
      }`,
    );
  },
};

/** Fails unless a `409` body is the contract's, with the stored record. */
function expectConflict(
  answer: Answer,
  current: Record<string, unknown>,
  what: string,
): void {
  expectError(answer, 409, "conflict", what);
  const body = answer.json as Record<string, unknown>;
  const stored = isObject(body.current) ? body.current : body.serverData;
  expect(
    isObject(stored) && stored.id === current.id &&
      sameInstant(stored.updated_at, current.updated_at) &&
      sameInstant(body.serverTimestamp, current.updated_at),
    `Cannot ${what} as a 409 carries "current" (the record as stored now) and "serverTimestamp": current value is ${
      show(answer)
    }, stored ${JSON.stringify(current)}`,
  );
}

const conflict: BackendCheck = {
  name: "conflict-not-stored",
  rule:
    "a stale base is 409 with the current record; the write is not applied and the 409 is not stored under its key",
  async run(context) {
    const kind = context.kind("conflict");
    const v1 = recordOf(
      await put(context, kind, "c1", { v: 1 }),
      "create a record with PUT",
    );
    const v2 = recordOf(
      await put(context, kind, "c1", {
        v: 2,
        options: { base: v1.updated_at as string },
      }),
      "update a record with its current base",
    );
    const key = context.key();
    const stale = { v: 99, options: { key, base: v1.updated_at as string } };
    expectConflict(
      await put(context, kind, "c1", stale),
      v2,
      "update a record with a stale base",
    );
    let now = await pulled(context, kind, "c1");
    expect(
      now !== undefined && now.v === 2 &&
        sameInstant(now.updated_at, v2.updated_at),
      `Cannot answer 409 without applying the write: current value is ${
        JSON.stringify(now ?? null)
      }, wanted ${JSON.stringify(v2)}`,
    );
    // Move the record on: a stored 409 would replay the old "current".
    const v3 = recordOf(
      await put(context, kind, "c1", {
        v: 3,
        options: { base: v2.updated_at as string },
      }),
      "update a record with its current base",
    );
    expectConflict(
      await put(context, kind, "c1", stale),
      v3,
      "repeat a conflicting write with its Idempotency-Key (a 409 is never stored)",
    );
    const deleteKey = context.key();
    expectConflict(
      await remove(context, kind, "c1", {
        key: deleteKey,
        base: v1.updated_at as string,
      }),
      v3,
      "delete a record with a stale base",
    );
    now = await pulled(context, kind, "c1");
    expect(
      now !== undefined && now.v === 3 && isLive(now) &&
        sameInstant(now.updated_at, v3.updated_at),
      `Cannot answer 409 to a DELETE without applying it: current value is ${
        JSON.stringify(now ?? null)
      }, wanted ${JSON.stringify(v3)}`,
    );
    // A forced write after the 409 succeeds.
    const forced = await put(context, kind, "c1", {
      v: 4,
      options: { force: true, base: v1.updated_at as string },
    });
    expectStatus(forced, [200], "force an update with X-Force-Update: true");
  },
};

/** The write checks, in order. */
export const WRITE_CHECKS: readonly BackendCheck[] = [
  replay,
  mismatch,
  conflict,
];
