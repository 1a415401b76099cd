/**
 * The reference server's single writes, `PUT /{kind}/{id}` and
 * `DELETE /{kind}/{id}`, and {@linkcode applyWrite}, which a batch op runs
 * too: the idempotency key replayed or stored, the version check, the
 * schema, and the record staged in the namespace's write scope.
 *
 * @module
 */

import { ValidationError } from "../src/errors.ts";
import { isJsonObject, type JsonObject, setOwn } from "../src/json.ts";
import { validateWith } from "../src/schema.ts";
import type { ServerCore } from "./_core.ts";
import { fingerprintOf } from "./_fingerprint.ts";
import { describe } from "../src/describe.ts";
import { tooDeepRefusal } from "./_limits.ts";
import {
  conflict,
  failure,
  invalidBase,
  type Outcome,
  refusal,
  type Reply,
  tooLarge,
} from "./_reply.ts";
import {
  idempotencyKey,
  isTrue,
  parseBase,
  readBody,
  sortedParams,
  withinDepth,
  type WriteCall,
} from "./_wire.ts";
import type { WriteScope } from "./_write_scope.ts";
import type { ServerRecord } from "./store.ts";

/** The statuses the contract stores by idempotency key; never 401/403/409/429/5xx. */
const STORED_STATUSES: ReadonlySet<number> = new Set([400, 404, 413, 422]);

/** Where a single write goes: the principal's record, from the request. */
export interface RecordRoute {
  /** The principal. */
  readonly namespace: string;
  /** The request, for its body and headers. */
  readonly request: Request;
  /** The table. */
  readonly kind: string;
  /** The record's id. */
  readonly id: string;
  /** The query: `_baseUpdatedAt` of a DELETE, and what the fingerprint keeps. */
  readonly params: URLSearchParams;
}

/** A write staged in a namespace's scope. */
export interface Staged<C extends WriteCall = WriteCall> {
  /** The principal. */
  readonly namespace: string;
  /** The scope the write is staged in. */
  readonly scope: WriteScope;
  /** The write. */
  readonly call: C;
}

/** A write to apply with its idempotency key. */
export interface ScopedWrite extends Staged {
  /** `fingerprintOf(call)`, or `""` for a call without a key. */
  readonly fingerprint: string;
}

/**
 * Answers a single PUT or DELETE: reads it, hashes it outside the lock,
 * applies it in the namespace's scope and commits.
 *
 * @param core The server.
 * @param route The principal, the record and the request.
 * @returns The reply, marked `Idempotent-Replayed` when replayed.
 */
export async function writeRequest(
  core: ServerCore,
  route: RecordRoute,
): Promise<Reply> {
  const { namespace, request, kind, id, params } = route;
  const key = idempotencyKey(request.headers);
  if (typeof key === "object" && key !== null) return key;
  let call: WriteCall;
  if (request.method === "PUT") {
    call = {
      method: "PUT",
      kind,
      id,
      key,
      force: isTrue(request.headers.get("x-force-update")),
      body: withinDepth(await readBody(request, core.options.maxBodyBytes)),
      extra: sortedParams(params, null),
    };
  } else {
    const bases = params.getAll("_baseUpdatedAt");
    if (bases.length > 1) {
      return failure(
        400,
        "invalid_query",
        `Cannot delete record as '_baseUpdatedAt' is given more than once: current value is ${
          describe(bases)
        }`,
      );
    }
    call = {
      method: "DELETE",
      kind,
      id,
      key,
      force: isTrue(request.headers.get("x-force-delete")),
      base: bases[0] ?? null,
      extra: sortedParams(params, "_baseUpdatedAt"),
    };
  }
  // Hashed before the write lock: nothing under it waits for the digest.
  const fingerprint = call.key === null ? "" : fingerprintOf(call);
  const outcome = await core.inScope(
    namespace,
    async (scope) =>
      await applyWrite(core, { namespace, scope, call, fingerprint }),
  );
  return outcome.replayed
    ? { ...outcome, headers: { "idempotent-replayed": "true" } }
    : outcome;
}

/**
 * Applies one write with its idempotency key, replaying a stored answer.
 * `fingerprint` is `fingerprintOf(call)`, or `""` for a call without a key.
 *
 * @param core The server.
 * @param write The write, its scope and fingerprint.
 * @returns Its outcome, replayed or not.
 */
export async function applyWrite(
  core: ServerCore,
  write: ScopedWrite,
): Promise<Outcome> {
  const { namespace, scope, call, fingerprint } = write;
  const now = core.now();
  let added = true;
  if (call.key !== null) {
    const entry = await scope.getIdempotency(namespace, call.key);
    added = entry === null;
    if (entry !== null && entry.expiresAt > now) {
      if (entry.fingerprint === fingerprint) {
        return { status: entry.status, body: entry.body, replayed: true };
      }
      return {
        ...failure(
          422,
          "idempotency_mismatch",
          `Cannot apply request as its idempotency key was used for another request: current value is ${
            describe(call.key)
          }`,
        ),
        replayed: false,
      };
    }
  }
  const reply = call.method === "PUT"
    ? await putRecord(core, { namespace, scope, call })
    : await deleteRecord(core, { namespace, scope, call });
  if (
    call.key !== null &&
    ((reply.status >= 200 && reply.status < 300) ||
      STORED_STATUSES.has(reply.status))
  ) {
    scope.putIdempotency(namespace, {
      key: call.key,
      fingerprint,
      status: reply.status,
      body: reply.body,
      expiresAt: Math.floor(now) + core.options.idempotencyRetentionMs,
    }, added);
  }
  return { ...reply, replayed: false };
}

/** Stages a PUT: checks, schema, version check, then the new record. */
async function putRecord(
  core: ServerCore,
  write: Staged<WriteCall & { method: "PUT" }>,
): Promise<Reply> {
  const { namespace, scope, call } = write;
  const { kind, id, body } = call;
  if (body.type === "too_large") return tooLarge(core.options.maxBodyBytes);
  if (body.type === "too_deep") {
    return refusal(tooDeepRefusal("store record"));
  }
  if (body.type === "text") {
    return failure(
      400,
      "invalid_body",
      `Cannot store record as the body is not JSON: current value is ${
        describe(body.text)
      }`,
    );
  }
  const value = body.value;
  if (!isJsonObject(value)) {
    return failure(
      400,
      "invalid_body",
      `Cannot store record as the body is not a JSON object: current value is ${
        describe(value)
      }`,
    );
  }
  if (Object.hasOwn(value, "id") && value.id !== id) {
    return failure(
      400,
      "id_mismatch",
      `Cannot store record as the body's id differs from the path's ${
        describe(id)
      }: current value is ${describe(value.id)}`,
    );
  }
  const base = parseBase(value._baseUpdatedAt);
  if (base === "invalid") return invalidBase(value._baseUpdatedAt);
  // Server-owned fields from the body are dropped: the server's win.
  const fields: JsonObject = { id };
  for (const name of Object.keys(value)) {
    if (
      name === "id" || name === "_baseUpdatedAt" || name === "updated_at" ||
      name === "deleted_at"
    ) {
      continue;
    }
    setOwn(fields, name, value[name]!);
  }
  const schema = Object.hasOwn(core.options.schemas, kind)
    ? core.options.schemas[kind]
    : undefined;
  if (schema !== undefined) {
    try {
      await validateWith(
        schema,
        structuredClone(fields),
        `record ${JSON.stringify(id)} of kind ${JSON.stringify(kind)}`,
      );
    } catch (error) {
      if (!(error instanceof ValidationError)) throw error;
      return {
        status: 422,
        body: {
          error: "validation",
          message: error.message,
          issues: error.issues.map((issue) => ({
            message: issue.message,
            path: issue.path.map((part) =>
              typeof part === "symbol" ? String(part) : part
            ),
          })),
        },
      };
    }
  }

  const current = await scope.getRecord(namespace, kind, id);
  if (
    current !== null && !call.force && base !== null &&
    (current.deletedAt !== null || base !== current.updatedAt)
  ) {
    return conflict(current, "update");
  }
  const ts = scope.nextTimestamp(
    core.now(),
    id,
    current?.updatedAt ?? null,
  );
  // `fields` is this write's own copy (the schema saw a clone of it).
  fields.updated_at = new Date(ts).toISOString();
  const record: ServerRecord = {
    kind,
    id,
    updatedAt: ts,
    deletedAt: null,
    data: fields,
  };
  scope.putRecord(namespace, record);
  return { status: current === null ? 201 : 200, body: record.data };
}

/** Stages a DELETE: version check, then the tombstone. */
async function deleteRecord(
  core: ServerCore,
  write: Staged<WriteCall & { method: "DELETE" }>,
): Promise<Reply> {
  const { namespace, scope, call } = write;
  const { kind, id } = call;
  const base = parseBase(call.base);
  if (base === "invalid") return invalidBase(call.base);
  const current = await scope.getRecord(namespace, kind, id);
  if (current === null) {
    return failure(
      404,
      "not_found",
      `Cannot delete record as it does not exist: current value is ${
        describe(id)
      }`,
    );
  }
  if (!call.force && base !== null && base !== current.updatedAt) {
    return conflict(current, "delete");
  }
  // Deleting a tombstone changes nothing: its deletion stands as it was.
  if (current.deletedAt !== null) return { status: 200, body: current.data };
  const ts = scope.nextTimestamp(core.now(), id, current.updatedAt);
  const stamp = new Date(ts).toISOString();
  const record: ServerRecord = {
    kind,
    id,
    updatedAt: ts,
    deletedAt: ts,
    data: { ...current.data, updated_at: stamp, deleted_at: stamp },
  };
  scope.putRecord(namespace, record);
  return { status: 200, body: record.data };
}
