/**
 * What the server really answered: every `2xx` answer to a write, seen
 * between the server and the fault layer (so answers the fault layer then
 * drops count too). The verdicts read it: an acknowledged write is one the
 * server answered `2xx`; a write applied twice shows as two answers with
 * different `updated_at` for one idempotency key or one write mark. Works
 * for any backend, since it reads only the wire. Private.
 *
 * @module
 */

/** One write the server acknowledged. */
export interface Ack {
  /** The table. */
  readonly kind: string;
  /** The record's id. */
  readonly id: string;
  /** The write's mark (field `w`), or `null` for a delete. */
  readonly mark: string | null;
  /** The `updated_at` the server gave the write. */
  readonly updatedAt: string;
  /** Whether the write was a delete. */
  readonly deleted: boolean;
  /** The idempotency key the write carried, or `null`. */
  readonly key: string | null;
  /** The record as the server answered it. */
  readonly record: Record<string, unknown>;
}

/** The log of acknowledged writes of one run. */
export class Ledger {
  /** Every acknowledged write, replays included, in answer order. */
  readonly acks: Ack[] = [];
  /** `5xx` answers the server gave of its own, with their bodies. */
  readonly serverErrors: string[] = [];
  readonly #base: string;

  /**
   * Makes an empty ledger.
   *
   * @param base The backend's base URL (paths are read relative to it).
   */
  constructor(base: string) {
    this.#base = new URL(base).pathname.replace(/\/+$/, "");
  }

  /**
   * Reads one request and the server's real answer.
   *
   * @param request The request as sent (body already read: `body`).
   * @param body The request body text, or `null`.
   * @param status The answer's status.
   * @param text The answer's body text.
   */
  observe(
    request: Request,
    body: string | null,
    status: number,
    text: string,
  ): void {
    if (status >= 500 && status !== 503) {
      this.serverErrors.push(
        `${request.method} ${request.url}: ${status} ${text.slice(0, 300)}`,
      );
    }
    if (status < 200 || status >= 300 || request.method === "GET") return;
    const path = new URL(request.url).pathname.slice(this.#base.length);
    const key = request.headers.get("idempotency-key");
    if (request.method === "POST" && path === "/batch") {
      this.#batch(body, text);
      return;
    }
    const parts = path.split("/").filter((part) => part !== "");
    if (parts.length !== 2) return;
    const kind = decodeURIComponent(parts[0]!);
    const id = decodeURIComponent(parts[1]!);
    this.#add(kind, id, key, request.method === "DELETE", text);
  }

  #batch(body: string | null, text: string): void {
    let ops: unknown;
    let results: unknown;
    try {
      ops = (JSON.parse(body ?? "null") as { ops?: unknown })?.ops;
      results = (JSON.parse(text) as { results?: unknown })?.results;
    } catch {
      return;
    }
    if (!Array.isArray(ops) || !Array.isArray(results)) return;
    for (const result of results) {
      if (typeof result !== "object" || result === null) continue;
      const { opId, status, record } = result as Record<string, unknown>;
      if (typeof status !== "number" || status < 200 || status >= 300) continue;
      const op = ops.find((item) => item?.opId === opId) as
        | Record<string, unknown>
        | undefined;
      if (op === undefined) continue;
      this.#addRecord(
        String(op.kind),
        String(op.id),
        typeof opId === "string" ? opId : null,
        op.type === "delete",
        record,
      );
    }
  }

  #add(
    kind: string,
    id: string,
    key: string | null,
    deleted: boolean,
    text: string,
  ): void {
    let record: unknown = null;
    try {
      record = text === "" ? null : JSON.parse(text);
    } catch {
      return;
    }
    this.#addRecord(kind, id, key, deleted, record);
  }

  #addRecord(
    kind: string,
    id: string,
    key: string | null,
    deleted: boolean,
    record: unknown,
  ): void {
    if (typeof record !== "object" || record === null) return;
    const data = record as Record<string, unknown>;
    if (typeof data.updated_at !== "string") return;
    this.acks.push({
      kind,
      id,
      mark: deleted || typeof data.w !== "string" ? null : data.w,
      updatedAt: data.updated_at,
      deleted,
      key,
      record: data,
    });
  }
}
