/**
 * A batch op's body, measured and hashed from its canonical JSON: the size
 * limit falls at the byte where `JSON.stringify` of the body a single PUT
 * would carry crosses it, and the fingerprint is the single PUT's.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { JsonObject } from "../src/json.ts";
import { createSyncServer } from "../server/mod.ts";
import { utf8Length } from "../server/_limits.ts";
import { type BatchBody, options, send, SpyStore } from "./_server_http.ts";

/** Payloads, and the base each op carries (or none). */
const CASES: [payload: JsonObject, base: string | null][] = [
  [{ b: 1, a: "x" }, null],
  [{ b: 1, a: "x" }, "2025-03-01T10:00:00.000Z"],
  [{}, "2025-03-01T10:00:00.000Z"],
  [{}, null],
  [{ text: "é€😀".repeat(9), n: 1e21, small: 1e-7 }, null],
  [
    { z: [{ y: "ü", x: null }], "10": true, "2": [1, 2] },
    "2025-03-01T10:00:00Z",
  ],
  [JSON.parse('{"__proto__":{"b":1,"a":2},"k":"\\u0000\\ud800"}'), null],
  // A payload's own `_baseUpdatedAt` without an op base is a base too.
  [{ _baseUpdatedAt: "2025-03-01T10:00:00.000Z", v: "é" }, null],
];

/** The body a single PUT of the op would carry. */
function bodyOf(payload: JsonObject, base: string | null): JsonObject {
  return base === null ? payload : { ...payload, _baseUpdatedAt: base };
}

Deno.test("batch measure: an op's body is too large exactly when JSON.stringify of its single-PUT body is", async () => {
  for (const [index, [payload, base]] of CASES.entries()) {
    const bytes = utf8Length(JSON.stringify(bodyOf(payload, base)));
    for (const max of [bytes, bytes - 1]) {
      await using server = createSyncServer(options({ maxBodyBytes: max }));
      const { body } = await send<BatchBody>(server, "POST", "/batch", {
        json: {
          ops: [{
            opId: "o",
            kind: "todo",
            id: "r",
            type: "upsert",
            payload,
            ...(base === null ? {} : { baseUpdatedAt: base }),
          }],
        },
      });
      const status = body.results[0]!.status;
      assert.equal(
        status === 413,
        max < bytes,
        `case ${index} at ${max} of ${bytes} bytes: ${status}`,
      );
    }
  }
});

Deno.test("batch measure: an op's fingerprint is the one of the single PUT it stands for", async () => {
  for (const [index, [payload, base]] of CASES.entries()) {
    const store = new SpyStore();
    await using server = createSyncServer(options({ store }));
    const fingerprint = () => {
      const write = store.commits.at(-1)!.find((w) => w.type === "idempotency");
      assert.ok(write?.type === "idempotency");
      return write.entry.fingerprint;
    };
    await send(server, "PUT", "/todo/single", {
      json: bodyOf(payload, base),
      headers: { "idempotency-key": "s" },
    });
    const single = fingerprint();
    await send(server, "POST", "/batch", {
      json: {
        ops: [{
          opId: "b",
          kind: "todo",
          id: "single",
          type: "upsert",
          payload,
          ...(base === null ? {} : { baseUpdatedAt: base }),
        }],
      },
    });
    assert.equal(fingerprint(), single, `case ${index}`);
  }
});
