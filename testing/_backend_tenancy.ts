/**
 * The kit's tenancy check (CONTRACT.md §Tenancy), with two credentials:
 * neither principal sees, overwrites, deletes or learns of the other's
 * records (nor of its idempotency keys), and a request without a
 * credential is `401`. Private.
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
  put,
  recordOf,
  recordPath,
  remove,
  sameInstant,
  show,
} from "./_backend_http.ts";

const ALICE = 0;
const BOB = 1;

const tenancy: BackendCheck = {
  name: "tenancy",
  rule:
    "with two credentials, neither principal sees, overwrites, deletes or learns of the other's records; no credential is 401",
  async run(context) {
    if (context.principals < 2) {
      throw new BackendCheckSkip(
        "needs two credentials (options.credentials)",
      );
    }
    const kind = context.kind("tenancy");
    const key = context.key();
    const alice = recordOf(
      await put(context, kind, "shared-id", {
        owner: "alice",
        options: { as: ALICE, key },
      }),
      "create a record as the first principal",
    );
    const unauthenticated = await context.call("GET", `/${kind}`, {
      as: null,
    });
    expectStatus(unauthenticated, [401], "pull without a credential");
    const anonymousWrite = await put(context, kind, "anonymous", {
      options: { as: null },
    });
    expectStatus(anonymousWrite, [401], "write without a credential");

    const seen = await pullAll(context, kind, { as: BOB });
    expect(
      seen.items.length === 0,
      `Cannot pull as the second principal without seeing the first one's records: current value is ${
        JSON.stringify(seen.items)
      }`,
    );
    const deleted = await remove(context, kind, "shared-id", { as: BOB });
    expectStatus(
      deleted,
      [404],
      "delete the first principal's record as the second (it never existed for it)",
    );
    const conflicting = await put(context, kind, "shared-id", {
      owner: "bob",
      options: { as: BOB, base: "2000-01-01T00:00:00.000Z" },
    });
    expect(
      conflicting.status !== 409 &&
        !conflicting.text.includes("alice"),
      `Cannot write with a stale base as the second principal without learning of the first one's record: current value is ${
        show(conflicting)
      }`,
    );
    // The same idempotency key, another principal: its own write, not the
    // first principal's stored answer nor a mismatch.
    const bob = await put(context, kind, "shared-id", {
      owner: "bob",
      options: { as: BOB, key, force: true },
    });
    expectStatus(
      bob,
      [200, 201],
      "write the same id with the same Idempotency-Key as the second principal",
    );
    expect(
      isObject(bob.json) && bob.json.owner === "bob",
      `Cannot write as the second principal with the first one's Idempotency-Key as keys are scoped to the principal: current value is ${
        show(bob)
      }`,
    );
    const bobItems = byId((await pullAll(context, kind, { as: BOB })).items);
    expect(
      bobItems.get("shared-id")?.owner === "bob" && bobItems.size === 1,
      `Cannot pull as the second principal only its own record: current value is ${
        JSON.stringify([...bobItems.values()])
      }`,
    );
    const aliceItems = byId(
      (await pullAll(context, kind, { as: ALICE })).items,
    );
    const mine = aliceItems.get("shared-id");
    expect(
      aliceItems.size === 1 && mine !== undefined && mine.owner === "alice" &&
        isLive(mine) &&
        sameInstant(mine.updated_at, alice.updated_at),
      `Cannot keep the first principal's record untouched by the second: current value is ${
        JSON.stringify([...aliceItems.values()])
      }, wanted ${JSON.stringify(alice)}`,
    );
    // The batch route is tenant-scoped too.
    if (context.health.batch) {
      await put(context, kind, "alice-only", { options: { as: ALICE } });
      const batch = await context.call("POST", "/batch", {
        as: BOB,
        body: {
          ops: [{
            opId: context.key(),
            kind,
            id: "alice-only",
            type: "delete",
          }],
        },
      });
      expectStatus(batch, [200], "delete through POST /batch");
      const result = isObject(batch.json) && Array.isArray(batch.json.results)
        ? batch.json.results[0]
        : undefined;
      expect(
        isObject(result) && result.status === 404,
        `Cannot delete through POST /batch as the second principal without reaching the first one's records: current value is ${
          show(batch)
        }`,
      );
      const after = await context.call(
        "DELETE",
        recordPath(kind, "alice-only"),
        { as: BOB, headers: { "idempotency-key": context.key() } },
      );
      expectStatus(
        after,
        [404],
        "delete the first principal's record as the second",
      );
    }
  },
};

/** The tenancy checks. */
export const TENANCY_CHECKS: readonly BackendCheck[] = [tenancy];
