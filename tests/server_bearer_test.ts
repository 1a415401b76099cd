import assert from "node:assert/strict";
import {
  bearerAuth,
  createSyncServer,
  parseBearerTokens,
} from "../server/mod.ts";

const ALICE = "token-for-alice-0001";
const BOB = "token-for-bob-00001==";

Deno.test("parseBearerTokens: a string, a record and pairs give the same table", () => {
  const expected = [[ALICE, "alice"], [BOB, "bob"]];
  assert.deepEqual(
    parseBearerTokens(` ${ALICE}=alice ,, ${BOB}=bob `),
    expected,
  );
  assert.deepEqual(
    parseBearerTokens({ [ALICE]: "alice", [BOB]: "bob" }),
    expected,
  );
  assert.deepEqual(
    parseBearerTokens(new Map([[ALICE, "alice"], [BOB, "bob"]])),
    expected,
  );
});

Deno.test("parseBearerTokens: malformed pairs and repeated tokens are refused", () => {
  for (
    const bad of [
      "no-equals-sign",
      "=alice",
      `${ALICE}=`,
      `two words=alice`,
      `${ALICE}=al ice`,
      `${ALICE}=${"p".repeat(257)}`,
      [[ALICE, 7 as unknown as string]] as [string, string][],
    ]
  ) {
    assert.throws(() => parseBearerTokens(bad), TypeError, JSON.stringify(bad));
  }
  assert.throws(
    () => parseBearerTokens(`${ALICE}=alice,${ALICE}=bob`),
    /given twice/,
  );
  assert.throws(() => bearerAuth(""), /empty/);
  // A pair without `=` may be a pasted token: the error never shows it.
  assert.throws(
    () => parseBearerTokens("secret-token-value"),
    (error: Error) => !error.message.includes("secret-token-value"),
  );
});

Deno.test("bearerAuth: each token reaches its principal's namespace, others get 401", async () => {
  await using server = createSyncServer({
    auth: bearerAuth(`${ALICE}=alice,${BOB}=bob`),
  });
  const call = (token: string | null, method = "GET", body?: string) =>
    server.fetch(
      new Request(`http://localhost/todos${method === "GET" ? "" : "/1"}`, {
        method,
        ...(body === undefined ? {} : { body }),
        headers: token === null ? {} : { authorization: token },
      }),
    );
  assert.equal((await call(`Bearer ${ALICE}`, "PUT", '{"t":1}')).status, 201);
  const items = async (token: string) => {
    const response = await call(token);
    assert.equal(response.status, 200);
    return ((await response.json()).items as { id: string }[]).map((item) =>
      item.id
    );
  };
  assert.deepEqual(await items(`bearer ${ALICE}`), ["1"]);
  assert.deepEqual(await items(`Bearer ${BOB}`), []);
  for (
    const bad of [
      null,
      ALICE,
      `Bearer ${ALICE}x`,
      `Bearer  ${ALICE}`,
      `Basic ${ALICE}`,
    ]
  ) {
    const response = await call(bad);
    await response.body?.cancel();
    assert.equal(response.status, 401, String(bad));
  }
  const health = await server.fetch(new Request("http://localhost/health"));
  assert.equal(health.status, 200);
  await health.body?.cancel();
});
