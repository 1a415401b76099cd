import assert from "node:assert/strict";
import type { TableConfig } from "../src/_context.ts";
import { DEFAULT_SYSTEM_FIELDS } from "../src/merge.ts";
import {
  type LocalWritePlanInput,
  planLocalWrite,
} from "../src/_local_write.ts";
import { baseOf, planAck } from "../src/_settle.ts";
import type { StoredOp, StoredRecord, Versioned } from "../src/storage.ts";
import { createUlid } from "../src/ulid.ts";
import { pendingOp } from "./_fixtures.ts";

const table: TableConfig = {
  kind: "notes",
  schema: undefined,
  idField: "id",
  updatedAtField: undefined,
  deletedAtField: undefined,
  coalesce: true,
  policy: {
    strategy: "autoPreserve",
    resolver: undefined,
    mergeFn: undefined,
    systemFields: DEFAULT_SYSTEM_FIELDS,
  },
};

const T0 = "2025-03-01T10:00:00.000Z";

function record(
  overrides: Partial<StoredRecord> = {},
): Versioned<StoredRecord> {
  return {
    rev: "r1",
    value: {
      kind: "notes",
      id: "n",
      data: { id: "n", title: "a", body: "x", updated_at: T0 },
      deleted: false,
      base: {
        data: { id: "n", title: "a", body: "x", updated_at: T0 },
        updatedAt: T0,
        deleted: false,
      },
      lastOpId: null,
      localUpdatedAt: null,
      ...overrides,
    },
  };
}

function op(overrides: Partial<StoredOp> = {}): Versioned<StoredOp> {
  return {
    rev: "o1",
    value: pendingOp("01HZZZZZZZZZZZZZZZZZZZZZZZ", {
      kind: "notes",
      id: "n",
      payload: { id: "n", title: "b", body: "x", updated_at: T0 },
      baseUpdatedAt: T0,
      changedFields: ["title"],
      createdAt: 1,
      editedAt: 1,
      ...overrides,
    }),
  };
}

function input(overrides: Partial<LocalWritePlanInput>): LocalWritePlanInput {
  return {
    table,
    id: "n",
    current: record(),
    latest: undefined,
    latestIsOnly: false,
    intent: { type: "delete" },
    now: 1000,
    newOpId: createUlid({ now: () => 1000 }),
    ...overrides,
  };
}

function putOp(plan: ReturnType<typeof planLocalWrite>): StoredOp {
  const mutation = plan?.mutations.find((m) => m.type === "putOp");
  assert.ok(mutation?.type === "putOp");
  return mutation.op;
}

Deno.test("clause 1: planLocalWrite() commits the record and its op in one write", () => {
  const plan = planLocalWrite(input({
    intent: {
      type: "upsert",
      data: { id: "n", title: "b", body: "x", updated_at: T0 },
    },
  }));
  assert.ok(plan !== null);
  assert.deepEqual(plan.mutations.map((m) => m.type), ["putRecord", "putOp"]);
  const queued = putOp(plan);
  assert.equal(plan.record?.lastOpId, queued.opId);
  assert.equal(queued.baseUpdatedAt, T0);
  assert.deepEqual(queued.changedFields, ["title"]);
  const put = plan.mutations[0];
  assert.ok(put?.type === "putRecord");
  assert.equal(put.expect, "r1", "guards against a concurrent writer");
});

Deno.test("clause 2: an update that changes nothing enqueues nothing", () => {
  const plan = planLocalWrite(input({
    intent: {
      type: "upsert",
      data: { id: "n", title: "a", body: "x", updated_at: T0 },
      patchKeys: ["title"],
    },
  }));
  assert.equal(plan, null);
});

Deno.test("clause 2: changedFields are the keys of a patch that differ", () => {
  const plan = planLocalWrite(input({
    intent: {
      type: "upsert",
      data: { id: "n", title: "a", body: "y", updated_at: T0 },
      patchKeys: ["title", "body"],
    },
  }));
  assert.deepEqual(putOp(plan).changedFields, ["body"]);
});

Deno.test("clause 3: coalescing folds upsert+upsert into one upsert with the older base", () => {
  const latest = op();
  const plan = planLocalWrite(input({
    current: record({ lastOpId: latest.value.opId }),
    latest,
    intent: {
      type: "upsert",
      data: { id: "n", title: "b", body: "y", updated_at: T0 },
    },
  }));
  const folded = putOp(plan);
  assert.equal(folded.opId, latest.value.opId);
  assert.deepEqual(folded.payload, {
    id: "n",
    title: "b",
    body: "y",
    updated_at: T0,
  });
  assert.deepEqual(folded.changedFields, ["body", "title"]);
  assert.equal(folded.baseUpdatedAt, T0);
  const putOpMutation = plan?.mutations[1];
  assert.ok(putOpMutation?.type === "putOp");
  assert.equal(putOpMutation.expect, "o1");
});

Deno.test("clause 3: coalescing folds upsert+delete into a delete", () => {
  const latest = op();
  const plan = planLocalWrite(input({
    current: record({ lastOpId: latest.value.opId }),
    latest,
    intent: { type: "delete" },
  }));
  const folded = putOp(plan);
  assert.equal(folded.opId, latest.value.opId);
  assert.equal(folded.type, "delete");
  assert.equal(folded.payload, null);
  assert.equal(plan?.record?.deleted, true);
});

Deno.test("clause 3: create+delete of a record the server never saw leaves nothing at all", () => {
  const latest = op({ baseUpdatedAt: null });
  const plan = planLocalWrite(input({
    current: record({ base: null, lastOpId: latest.value.opId }),
    latest,
    latestIsOnly: true,
    intent: { type: "delete" },
  }));
  assert.deepEqual(plan?.mutations.map((m) => m.type), [
    "deleteRecord",
    "deleteOp",
  ]);
  assert.equal(plan?.record, null);
});

Deno.test("clause 3: an op that has been sent even once is frozen and later writes queue behind it", () => {
  const latest = op({ attempts: 1 });
  const plan = planLocalWrite(input({
    current: record({ lastOpId: latest.value.opId }),
    latest,
    intent: {
      type: "upsert",
      data: { id: "n", title: "c", body: "x", updated_at: T0 },
    },
  }));
  const queued = putOp(plan);
  assert.notEqual(queued.opId, latest.value.opId);
  assert.ok(queued.opId > latest.value.opId, "per-record FIFO order");
  assert.equal(queued.attempts, 0);
});

Deno.test("planLocalWrite() does not fold when coalescing is off", () => {
  const latest = op();
  const plan = planLocalWrite(input({
    table: { ...table, coalesce: false },
    current: record({ lastOpId: latest.value.opId }),
    latest,
    intent: {
      type: "upsert",
      data: { id: "n", title: "c", body: "x", updated_at: T0 },
    },
  }));
  assert.notEqual(putOp(plan).opId, latest.value.opId);
});

Deno.test("planLocalWrite() ignores a delete of an absent or deleted record", () => {
  assert.equal(planLocalWrite(input({ current: undefined })), null);
  assert.equal(
    planLocalWrite(input({ current: record({ deleted: true }) })),
    null,
  );
});

Deno.test("planLocalWrite() never counts system fields as changed", () => {
  const plan = planLocalWrite(input({
    current: undefined,
    intent: {
      type: "upsert",
      data: { id: "new", title: "t", created_at: "x" },
    },
    id: "new",
  }));
  assert.deepEqual(putOp(plan).changedFields, ["title"]);
});

Deno.test("clause 7: on success the queued ops' baseUpdatedAt moves to the returned record", () => {
  const first = op({ attempts: 1 });
  const later: Versioned<StoredOp> = {
    rev: "o2",
    value: { ...op().value, opId: "01J00000000000000000000000" },
  };
  const server = {
    id: "n",
    title: "b",
    body: "x",
    updated_at: "2025-03-01T11:00:00.000Z",
  };
  const plan = planAck(
    table,
    record({ lastOpId: later.value.opId }),
    first,
    [later],
    baseOf(table, server),
  );
  const rebased = (plan.follow ?? []).find((m) =>
    m.type === "putOp" && m.op.opId === later.value.opId
  );
  assert.ok(rebased?.type === "putOp");
  assert.equal(rebased.op.baseUpdatedAt, "2025-03-01T11:00:00.000Z");
  const put = plan.mutations.find((m) => m.type === "putRecord");
  assert.ok(put?.type === "putRecord");
  assert.equal(put.record.base?.updatedAt, "2025-03-01T11:00:00.000Z");
  assert.equal(put.record.data.title, "a", "local data waits for the later op");
  assert.ok(plan.mutations.some((m) => m.type === "deleteOp"));
});

Deno.test("clause 7: an op queued before its predecessor was re-formed by a conflict keeps its base", () => {
  // The first op was re-formed after a conflict: its base moved to the
  // server version it merged with; the later op still has the old lineage.
  const first = op({
    attempts: 2,
    force: true,
    revision: 1,
    baseUpdatedAt: "2025-03-01T10:30:00.000Z",
  });
  const later: Versioned<StoredOp> = {
    rev: "o2",
    value: { ...op().value, opId: "01J00000000000000000000000" },
  };
  const server = {
    id: "n",
    title: "m",
    updated_at: "2025-03-01T11:00:00.000Z",
  };
  const plan = planAck(
    table,
    record({ lastOpId: later.value.opId }),
    first,
    [later],
    baseOf(table, server),
  );
  assert.ok(
    ![...plan.mutations, ...plan.follow ?? []].some((m) => m.type === "putOp"),
    "it never saw the merge: it meets its own conflict",
  );
});

Deno.test("planAck() takes the server's record as local data when nothing else is queued", () => {
  const only = op({ attempts: 1 });
  const server = {
    id: "n",
    title: "b",
    body: "x",
    updated_at: "2025-03-01T11:00:00.000Z",
  };
  const plan = planAck(
    table,
    record({ lastOpId: only.value.opId }),
    only,
    [],
    baseOf(table, server),
  );
  const put = plan.mutations.find((m) => m.type === "putRecord");
  assert.ok(put?.type === "putRecord");
  assert.deepEqual(put.record.data, server);
  assert.equal(put.record.lastOpId, null);
});
