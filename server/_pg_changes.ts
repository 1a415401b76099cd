/**
 * The Postgres server store's change feed (`postgres.ts`): what a commit
 * sends with `pg_notify` inside its transaction (so Postgres delivers it at
 * the commit, and never for a commit rolled back), and the `LISTEN`ing
 * reader that turns the notifications of every instance into
 * {@linkcode StoreChange}s. Private to the store.
 *
 * A notification's payload is `{"n": namespace, "k": kinds, "o": origin}`,
 * JSON (which escapes NUL and lone surrogates, so any namespace or kind
 * travels as `text`). Postgres caps a payload below 8000 bytes: a commit
 * names as many of its kinds as fit, and a namespace that alone does not
 * fit is not told (live hints are lossy by contract).
 *
 * @module
 */

import { utf8Length } from "./_limits.ts";
import type { PgSql } from "./_pg_sql.ts";
import type { StoreChange } from "./store.ts";

/** The most bytes of a payload (Postgres refuses 8000 and more). */
export const MAX_PAYLOAD_BYTES = 7_900;
/** The most kinds one change names; more are left out. */
export const MAX_KINDS = 256;

/**
 * The channel a schema's commits are told on: one per schema, so stores of
 * two schemas in one database do not hear each other.
 *
 * @param schema The schema name (an identifier of at most 63 bytes).
 * @returns The channel name.
 */
export function channelOf(schema: string): string {
  // A channel is an identifier: at most 63 bytes.
  return `ofs_${schema}`.slice(0, 63);
}

/**
 * The payload that tells a commit, or `null` when it tells nothing.
 *
 * @param namespace The commit's namespace.
 * @param kinds The kinds it wrote records of.
 * @param origin The committing store object's id.
 * @returns The payload.
 */
export function changePayload(
  namespace: string,
  kinds: readonly string[],
  origin: string,
): string | null {
  if (kinds.length === 0) return null;
  const told: string[] = [];
  let payload: string | null = null;
  for (const kind of kinds.slice(0, MAX_KINDS)) {
    const next = JSON.stringify({
      n: namespace,
      k: [...told, kind],
      o: origin,
    });
    if (utf8Length(next) > MAX_PAYLOAD_BYTES) break;
    told.push(kind);
    payload = next;
  }
  return payload;
}

/** Reads a payload; `null` when it is not one of ours. */
function parsePayload(
  payload: string,
): { namespace: string; kinds: string[]; origin: string } | null {
  try {
    const value = JSON.parse(payload) as {
      n?: unknown;
      k?: unknown;
      o?: unknown;
    };
    if (
      typeof value.n !== "string" || !Array.isArray(value.k) ||
      typeof value.o !== "string"
    ) return null;
    const kinds = value.k.filter((kind): kind is string =>
      typeof kind === "string"
    );
    return { namespace: value.n, kinds, origin: value.o };
  } catch {
    return null;
  }
}

/**
 * The feed of one `changes()` call: it starts `LISTEN` at once (so a commit
 * told after the listen is registered is delivered), merges what arrives
 * while nobody reads per namespace (so a slow reader holds one change per
 * namespace, not one per commit), and ends when `signal` aborts.
 *
 * @param sql The pool (postgres.js keeps one connection for `LISTEN`).
 * @param channel The schema's channel.
 * @param origin The reading store object's id.
 * @param signal Ends the feed.
 * @returns The feed.
 */
export function listenChanges(
  sql: PgSql,
  channel: string,
  origin: string,
  signal: AbortSignal,
): AsyncIterable<StoreChange> {
  const pending = new Map<string, { kinds: Set<string>; local: boolean }>();
  let wake: (() => void) | null = null;
  const onNotify = (payload: string): void => {
    const change = parsePayload(payload);
    if (change === null || change.kinds.length === 0) return;
    let entry = pending.get(change.namespace);
    if (entry === undefined) {
      entry = { kinds: new Set(), local: true };
      pending.set(change.namespace, entry);
    }
    for (const kind of change.kinds) {
      if (entry.kinds.size >= MAX_KINDS) break;
      entry.kinds.add(kind);
    }
    if (change.origin !== origin) entry.local = false;
    wake?.();
  };
  let started = false;
  // Started at the call, not at the first read.
  const listening = signal.aborted ? null : sql.listen(channel, onNotify).then(
    (meta) => ({ meta, error: null }),
    (error: unknown) => ({ meta: null, error }),
  );
  const onAbort = (): void => {
    wake?.();
    // Aborted before anyone read: nobody else ends the listen.
    if (!started) {
      listening?.then(({ meta }) => meta?.unlisten()).catch(() => {});
    }
  };
  signal.addEventListener("abort", onAbort, { once: true });
  async function* feed(): AsyncGenerator<StoreChange> {
    started = true;
    if (listening === null) return;
    const { meta, error } = await listening;
    try {
      if (meta === null) {
        if (signal.aborted) return;
        throw error;
      }
      while (!signal.aborted) {
        if (pending.size === 0) {
          await new Promise<void>((resolve) => {
            wake = resolve;
          });
          wake = null;
          continue;
        }
        const [namespace, { kinds, local }] = pending.entries().next()
          .value!;
        pending.delete(namespace);
        yield { namespace, kinds: [...kinds], local };
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      // The pool may be ending already (the store closed).
      await meta?.unlisten().catch(() => {});
    }
  }
  return feed();
}
