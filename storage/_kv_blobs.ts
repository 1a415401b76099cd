/**
 * The KV storage's large values: blobs of 64 KiB chunks, the tickets that
 * list them while they are written or discarded, and the collection of
 * what crashed writes left (see "Large values" in `storage/kv.ts`). Private
 * to `storage/kv.ts` and its helpers: not exported from the package.
 *
 * @module
 */

import { StorageError } from "../src/errors.ts";
import type { JsonValue } from "../src/json.ts";
import {
  ATOMIC_SLACK_BYTES,
  AtomicTally,
  KV_MAX_BATCH,
  KV_MAX_VALUE_BYTES,
} from "./_kv_limits.ts";
import {
  commitRetrying,
  decodeUtf8,
  encodeJson,
  type Envelope,
  type KvKeyspace,
} from "./_kv_keyspace.ts";
import { parseStored } from "./_stored.ts";

/** A blob as a ticket lists it. */
export interface BlobRef {
  /** The blob's id. */
  readonly id: string;
  /** How many chunks it has. */
  readonly n: number;
}

/** A ticket's value. */
interface Ticket {
  readonly state: "pending" | "garbage";
  /** When it was written (ms since epoch). */
  readonly at: number;
  readonly blobs: readonly BlobRef[];
}

/** A ticket and the blobs it lists. */
export interface TicketRef {
  /** The ticket's key. */
  readonly key: Deno.KvKey;
  /** The blobs. */
  readonly blobs: readonly BlobRef[];
}

/** A write's pre-written blobs, by the value each holds. */
export interface Prewrite<T> {
  /** The pending ticket that lists them. */
  readonly ticketKey: Deno.KvKey;
  /** The pending ticket's versionstamp. */
  readonly ticketVersionstamp: string;
  /** Each value's blob. */
  readonly blobs: ReadonlyMap<T, BlobRef>;
}

/**
 * A garbage ticket's value, listing blobs a write replaced.
 *
 * @param blobs The blobs.
 * @returns The ticket's bytes.
 */
export function garbageTicket(blobs: readonly BlobRef[]): Uint8Array {
  const ticket: Ticket = { state: "garbage", at: Date.now(), blobs };
  return encodeJson(ticket);
}

/**
 * A fresh ticket key.
 *
 * @param space The store.
 * @returns The key.
 */
export function newTicketKey(space: KvKeyspace): Deno.KvKey {
  return space.key("t", crypto.randomUUID());
}

/**
 * Reads the blob of a header; `undefined` when a chunk is missing.
 *
 * @param space The store.
 * @param header The header's envelope and key.
 * @returns The value.
 * @throws {StorageError} When the header or a chunk is not in the format.
 */
export async function readBlob(
  space: KvKeyspace,
  header: { readonly envelope: Envelope; readonly key: Deno.KvKey },
): Promise<JsonValue | undefined> {
  const { envelope, key } = header;
  const { b: id, n: count, z: size } = envelope;
  if (
    typeof id !== "string" || typeof count !== "number" ||
    typeof size !== "number" || !Number.isSafeInteger(size) || size < 0
  ) {
    throw space.formatError(key, envelope);
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  let seen = 0;
  const chunks = space.kv.list<unknown>({ prefix: space.key("b", id) }, {
    consistency: "strong",
    batchSize: Math.min(count + 1, KV_MAX_BATCH),
  });
  for await (const chunk of chunks) {
    if (chunk.key.at(-1) !== seen || !(chunk.value instanceof Uint8Array)) {
      return undefined;
    }
    if (offset + chunk.value.length > size) {
      throw space.formatError(key, envelope);
    }
    bytes.set(chunk.value, offset);
    offset += chunk.value.length;
    seen++;
  }
  if (seen !== count || offset !== size) return undefined;
  return parseStored(decodeUtf8(bytes), () => space.name(key)) as JsonValue;
}

/**
 * Writes values as blobs under fresh ids, with the pending ticket that
 * lists them written first, so that every chunk a crash leaves is listed.
 * On failure, deletes what it wrote (or leaves it listed for vacuum).
 *
 * @param space The store.
 * @param values The values' JSON, by what each belongs to.
 * @returns The blobs and their ticket.
 * @throws {StorageError} When KV fails, or the fresh ticket exists.
 */
export async function prewriteBlobs<T>(
  space: KvKeyspace,
  values: ReadonlyMap<T, Uint8Array>,
): Promise<Prewrite<T>> {
  const ticketKey = newTicketKey(space);
  const blobs = new Map<T, BlobRef>();
  const chunks: { key: Deno.KvKey; value: Uint8Array }[] = [];
  for (const [owner, bytes] of values) {
    const id = crypto.randomUUID();
    const count = Math.ceil(bytes.length / KV_MAX_VALUE_BYTES);
    blobs.set(owner, { id, n: count });
    for (let index = 0; index < count; index++) {
      chunks.push({
        key: space.key("b", id, index),
        value: bytes.subarray(
          index * KV_MAX_VALUE_BYTES,
          (index + 1) * KV_MAX_VALUE_BYTES,
        ),
      });
    }
  }
  const ticket: Ticket = {
    state: "pending",
    at: Date.now(),
    blobs: [...blobs.values()],
  };
  try {
    let tally = new AtomicTally(space, ATOMIC_SLACK_BYTES);
    tally.check(ticketKey, null);
    tally.set(ticketKey, encodeJson(ticket));
    let ticketVersionstamp: string | undefined;
    for (const chunk of chunks) {
      if (!tally.fits(chunk.key, chunk.value.length)) {
        const versionstamp = await commitChunks(tally);
        ticketVersionstamp ??= versionstamp;
        tally = new AtomicTally(space, ATOMIC_SLACK_BYTES);
      }
      tally.set(chunk.key, chunk.value);
    }
    const last = await commitChunks(tally);
    return { ticketKey, ticketVersionstamp: ticketVersionstamp ?? last, blobs };
  } catch (error) {
    await discardQuietly(space, { key: ticketKey, blobs: ticket.blobs });
    throw error;
  }
}

/** Commits one operation of a pre-write; its versionstamp. */
async function commitChunks(tally: AtomicTally): Promise<string> {
  const result = await commitRetrying(tally.operation);
  if (!result.ok) {
    throw new StorageError(
      "Cannot write a large value as its fresh ticket already exists",
    );
  }
  return result.versionstamp;
}

/**
 * Deletes blobs and then the ticket that lists them.
 *
 * @param space The store.
 * @param ticket The ticket and its blobs.
 */
async function discard(space: KvKeyspace, ticket: TicketRef): Promise<void> {
  const keys: Deno.KvKey[] = [];
  for (const blob of ticket.blobs) {
    for (let index = 0; index < blob.n; index++) {
      keys.push(space.key("b", blob.id, index));
    }
  }
  keys.push(ticket.key);
  await deleteAll(space, keys);
}

/**
 * Deletes blobs and their ticket, leaving failures to vacuum(): the ticket
 * still lists the blobs then.
 *
 * @param space The store.
 * @param ticket The ticket and its blobs.
 */
export async function discardQuietly(
  space: KvKeyspace,
  ticket: TicketRef,
): Promise<void> {
  try {
    await discard(space, ticket);
  } catch {
    // The ticket still lists the blobs: vacuum() deletes them later.
  }
}

/**
 * Deletes keys in as few atomic operations as KV's limits allow.
 *
 * @param space The store.
 * @param keys The keys.
 */
export async function deleteAll(
  space: KvKeyspace,
  keys: readonly Deno.KvKey[],
): Promise<void> {
  let tally = new AtomicTally(space);
  for (const key of keys) {
    if (!tally.fits(key, 0)) {
      await commitRetrying(tally.operation);
      tally = new AtomicTally(space);
    }
    tally.delete(key);
  }
  await commitRetrying(tally.operation);
}

/**
 * Collects garbage tickets and abandoned pending ones.
 *
 * @param space The store.
 * @param options How old an abandoned pending ticket is, abort signal.
 * @returns How many blobs were deleted.
 */
export async function collectGarbage(
  space: KvKeyspace,
  options: { readonly graceMs: number; readonly signal?: AbortSignal },
): Promise<number> {
  let blobs = 0;
  const now = Date.now();
  const tickets = space.kv.list<unknown>({ prefix: space.key("t") }, {
    consistency: "strong",
  });
  for await (const entry of tickets) {
    options.signal?.throwIfAborted();
    const ticket = ticketOf(entry.value);
    // A ticket damaged outside this storage lists nothing it can trust:
    // it is left alone rather than keep the store from opening.
    if (ticket === undefined) continue;
    if (ticket.state === "pending") {
      if (now - ticket.at < options.graceMs) continue;
      // Marking it as garbage fails the writer's check of its ticket, so
      // no header can start referencing the blobs deleted below.
      const claimed = await commitRetrying(
        space.kv.atomic()
          .check(entry)
          .set(entry.key, encodeJson({ ...ticket, state: "garbage" })),
      );
      if (!claimed.ok) continue;
    }
    await discard(space, { key: entry.key, blobs: ticket.blobs });
    blobs += ticket.blobs.length;
  }
  return blobs;
}

/** A ticket's value, or `undefined` when it is not one. */
function ticketOf(value: unknown): Ticket | undefined {
  if (!(value instanceof Uint8Array)) return undefined;
  let ticket: Partial<Ticket>;
  try {
    ticket = JSON.parse(decodeUtf8(value));
  } catch {
    return undefined;
  }
  const valid = typeof ticket === "object" && ticket !== null &&
    (ticket.state === "pending" || ticket.state === "garbage") &&
    typeof ticket.at === "number" && Array.isArray(ticket.blobs) &&
    ticket.blobs.every((blob: Partial<BlobRef>) =>
      typeof blob === "object" && blob !== null &&
      typeof blob.id === "string" && Number.isSafeInteger(blob.n)
    );
  return valid ? ticket as Ticket : undefined;
}
