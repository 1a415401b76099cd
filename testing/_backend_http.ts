/**
 * What every check of the backend kit shares: the HTTP calls a check makes
 * (each bounded by the check's signal, as one principal or none), the
 * failure it throws, and the assertions that word the contract's rule and
 * what the server answered. Private.
 *
 * @module
 */

/** A check's failure: its message says the rule and what was answered. */
export class BackendCheckFailure extends Error {
  /**
   * Creates the failure.
   *
   * @param message What broke the rule.
   */
  constructor(message: string) {
    super(message);
    this.name = "BackendCheckFailure";
  }
}

/** A check skipped because the server or the options exclude it. */
export class BackendCheckSkip extends Error {
  /**
   * Creates the skip.
   *
   * @param reason Why the check cannot run.
   */
  constructor(reason: string) {
    super(reason);
    this.name = "BackendCheckSkip";
  }
}

/** What `GET /health` said, as the checks read it. */
export interface HealthInfo {
  /** Whether `POST /batch` is served. */
  readonly batch: boolean;
  /** Whether `GET /live` is served. */
  readonly live: boolean;
  /** The stated limits (the contract's defaults where absent). */
  readonly limits: Readonly<Record<string, number>>;
}

/** One answer, read whole. */
export interface Answer {
  /** The status. */
  readonly status: number;
  /** The body as JSON, or `null` when empty or not JSON. */
  readonly json: unknown;
  /** The body's text. */
  readonly text: string;
  /** The headers. */
  readonly headers: Headers;
}

/** What one call carries. */
export interface CallOptions {
  /** The principal by index into the credentials; `null` sends none. */
  readonly as?: number | null;
  /** A JSON body (serialized) or a raw string. */
  readonly body?: unknown;
  /** Extra headers. */
  readonly headers?: Readonly<Record<string, string>>;
}

/** What a check runs with. */
export interface CheckContext {
  /** The base URL, without a trailing slash. */
  readonly base: string;
  /** A fresh kind for this check: `kit_<label>_<random>`. */
  kind(label: string): string;
  /** A fresh idempotency key. */
  key(): string;
  /** How many credentials the options gave (0 means none needed). */
  readonly principals: number;
  /** What `/health` said. */
  readonly health: HealthInfo;
  /** Aborts when the check's time is up. */
  readonly signal: AbortSignal;
  /** Sends one request, bounded by the check's signal. */
  call(method: string, path: string, options?: CallOptions): Promise<Answer>;
  /** Opens a request and returns the response unread (for `/live`). */
  open(method: string, path: string, options?: CallOptions): Promise<Response>;
  /** Removes tombstones on the server, when the options give a hook. */
  readonly purgeTombstones?: () => Promise<void>;
}

/** What {@linkcode createContext} needs. */
export interface ContextOptions {
  /** The base URL, without a trailing slash. */
  readonly base: string;
  /** One header set per principal. */
  readonly credentials: readonly Readonly<Record<string, string>>[];
  /** The `fetch` every request goes through. */
  readonly fetch: typeof fetch;
  /** What `/health` said. */
  readonly health: HealthInfo;
  /** Aborts when the check's time is up. */
  readonly signal: AbortSignal;
  /** The random part of this check's kinds and keys. */
  readonly suffix: string;
  /** Removes tombstones on the server, when the options give a hook. */
  readonly purgeTombstones?: () => Promise<void>;
}

/**
 * Builds the context of one check.
 *
 * @param options Base URL, credentials, fetch, health, signal, suffix.
 * @returns The context.
 */
export function createContext(options: ContextOptions): CheckContext {
  const { base, credentials, signal, suffix } = options;
  let keys = 0;
  function request(
    method: string,
    path: string,
    call: CallOptions,
  ): Promise<Response> {
    const headers: Record<string, string> = {};
    const as = call.as === undefined ? 0 : call.as;
    if (as !== null) Object.assign(headers, credentials[as] ?? {});
    let body: string | undefined;
    if (call.body !== undefined) {
      body = typeof call.body === "string"
        ? call.body
        : JSON.stringify(call.body);
      headers["content-type"] = "application/json";
    }
    Object.assign(headers, call.headers ?? {});
    const init: RequestInit = { method, headers, signal };
    if (body !== undefined) init.body = body;
    return options.fetch(`${base}${path}`, init);
  }
  const context: CheckContext = {
    base,
    kind: (label) => `kit_${label}_${suffix}`,
    key: () => `kit-${suffix}-${++keys}`,
    principals: credentials.length,
    health: options.health,
    signal,
    async call(method, path, call = {}) {
      const response = await request(method, path, call);
      return await readAnswer(response);
    },
    open: (method, path, call = {}) => request(method, path, call),
  };
  if (options.purgeTombstones !== undefined) {
    return { ...context, purgeTombstones: options.purgeTombstones };
  }
  return context;
}

/**
 * Reads a response whole.
 *
 * @param response The response.
 * @returns Its status, text, JSON and headers.
 */
export async function readAnswer(response: Response): Promise<Answer> {
  const text = await response.text();
  let json: unknown = null;
  try {
    json = text === "" ? null : JSON.parse(text);
  } catch {
    json = null;
  }
  return { status: response.status, json, text, headers: response.headers };
}

/**
 * The path of a record: kind and id percent-encoded, as the contract says.
 *
 * @param kind The kind.
 * @param id The id.
 * @returns `/kind/id`.
 */
export function recordPath(kind: string, id: string): string {
  return `/${encodeURIComponent(kind)}/${encodeURIComponent(id)}`;
}

/**
 * Shortens an answer for a message.
 *
 * @param answer The answer.
 * @returns `<status> <body, at most 300 characters>`.
 */
export function show(answer: Answer): string {
  const text = answer.text.length > 300
    ? `${answer.text.slice(0, 300)}…`
    : answer.text;
  return `${answer.status} ${text}`;
}

/**
 * Fails unless a condition holds.
 *
 * @param condition The condition.
 * @param message The rule and what was seen.
 * @throws {BackendCheckFailure} When it does not hold.
 */
export function expect(condition: boolean, message: string): asserts condition {
  if (!condition) throw new BackendCheckFailure(message);
}

/**
 * Fails unless an answer has one of the wanted statuses.
 *
 * @param answer The answer.
 * @param statuses The statuses the contract allows.
 * @param what The request, as a phrase (`"create a record with PUT"`).
 * @throws {BackendCheckFailure} Otherwise.
 */
export function expectStatus(
  answer: Answer,
  statuses: readonly number[],
  what: string,
): void {
  expect(
    statuses.includes(answer.status),
    `Cannot ${what} as the contract answers ${
      statuses.join(" or ")
    }: current value is ${show(answer)}`,
  );
}

/**
 * Fails unless an answer is a JSON error with a status and code.
 *
 * @param answer The answer.
 * @param status The status.
 * @param error The `error` code, or `null` for any.
 * @param what The request, as a phrase.
 * @throws {BackendCheckFailure} Otherwise.
 */
export function expectError(
  answer: Answer,
  status: number,
  error: string | null,
  what: string,
): void {
  const code = isObject(answer.json) ? answer.json.error : undefined;
  expect(
    answer.status === status && typeof code === "string" &&
      (error === null || code === error),
    `Cannot ${what} as the contract answers ${status}${
      error === null ? " with a JSON error" : ` ${error}`
    }: current value is ${show(answer)}`,
  );
}

/**
 * Whether a value is a plain JSON object.
 *
 * @param value The value.
 * @returns Whether it is.
 */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * The record in a write's answer (`200`/`201` body), or a failure.
 *
 * @param answer The answer.
 * @param what The request, as a phrase.
 * @returns The record.
 * @throws {BackendCheckFailure} When the body is no record.
 */
export function recordOf(
  answer: Answer,
  what: string,
): Record<string, unknown> {
  const record = answer.json;
  expect(
    isObject(record) && typeof record.id === "string" &&
      typeof record.updated_at === "string",
    `Cannot ${what} as a 2xx answer carries the stored record with id and updated_at: current value is ${
      show(answer)
    }`,
  );
  return record;
}

/** A pull's collected items and the pages it took. */
export interface PullResult {
  /** Every item, in the order received. */
  readonly items: Record<string, unknown>[];
  /** The number of pages. */
  readonly pages: number;
}

/** Options of {@linkcode pullAll}. */
export interface PullAllOptions {
  /** The principal. */
  readonly as?: number;
  /** The page size. */
  readonly limit?: number;
  /** A cursor from an earlier pull. */
  readonly since?: string;
  /** The cursor's id. */
  readonly afterId?: string;
  /** The most pages before giving up. */
  readonly maxPages?: number;
}

/**
 * Pulls a kind to the end, as the client does: keyset cursor from the last
 * item, `pageToken` when given, caught up on a short page without a token.
 *
 * @param context The check's context.
 * @param kind The kind.
 * @param options Principal, page size and cursor.
 * @returns The items and page count.
 * @throws {BackendCheckFailure} On a non-`200` page or a malformed one.
 */
export async function pullAll(
  context: CheckContext,
  kind: string,
  options: PullAllOptions = {},
): Promise<PullResult> {
  const limit = options.limit ?? 100;
  const maxPages = options.maxPages ?? 200;
  const items: Record<string, unknown>[] = [];
  let since = options.since;
  let afterId = options.afterId;
  let token: string | null = null;
  for (let pages = 1; pages <= maxPages; pages++) {
    const query = [`limit=${limit}`, "includeDeleted=true"];
    if (since !== undefined) {
      query.push(`updatedSince=${encodeURIComponent(since)}`);
    }
    if (afterId !== undefined) {
      query.push(`afterId=${encodeURIComponent(afterId)}`);
    }
    if (token !== null) query.push(`pageToken=${encodeURIComponent(token)}`);
    const path = `/${encodeURIComponent(kind)}?${query.join("&")}`;
    const answer = await context.call("GET", path, { as: options.as ?? 0 });
    const what = `pull page ${pages} of ${JSON.stringify(kind)} (GET ${path})`;
    expectStatus(answer, [200], what);
    const body = answer.json;
    expect(
      isObject(body) && Array.isArray(body.items) &&
        (body.nextPageToken === null || body.nextPageToken === undefined ||
          typeof body.nextPageToken === "string"),
      `Cannot ${what} as a page is {"items": [...], "nextPageToken": string | null}: current value is ${
        show(answer)
      }`,
    );
    const page = body.items as unknown[];
    expect(
      page.length <= limit,
      `Cannot ${what} as a page holds at most 'limit' items: current value is ${page.length} items for limit ${limit}`,
    );
    for (const item of page) {
      expect(
        isObject(item) && typeof item.id === "string" &&
          typeof item.updated_at === "string",
        `Cannot ${what} as every item has id and updated_at: current value is ${
          JSON.stringify(item)
        }`,
      );
      items.push(item);
    }
    token = typeof body.nextPageToken === "string" ? body.nextPageToken : null;
    // A token on an empty page moves no cursor: a client would loop.
    expect(
      page.length > 0 || token === null,
      `Cannot ${what} as a page that carries nextPageToken holds at least one item: current value is ${
        show(answer)
      }`,
    );
    const last = items[items.length - 1];
    if (page.length < limit && token === null) return { items, pages };
    if (last !== undefined) {
      since = last.updated_at as string;
      afterId = last.id as string;
    }
  }
  throw new BackendCheckFailure(
    `Cannot pull ${
      JSON.stringify(kind)
    } to the end as it took more than ${maxPages} pages: current value is ${items.length} items`,
  );
}

/**
 * The items of a pull by id (the last one wins).
 *
 * @param items The items.
 * @returns A map from id to item.
 */
export function byId(
  items: readonly Record<string, unknown>[],
): Map<string, Record<string, unknown>> {
  return new Map(items.map((item) => [item.id as string, item]));
}

/**
 * Compares two instants at millisecond precision, as the contract does.
 *
 * @param a An ISO timestamp.
 * @param b Another.
 * @returns Whether they are the same instant.
 */
export function sameInstant(a: unknown, b: unknown): boolean {
  return typeof a === "string" && typeof b === "string" &&
    Date.parse(a) === Date.parse(b) && !Number.isNaN(Date.parse(a));
}

/** The names of the kit's checks, in the order they run. */
export type BackendCheckName =
  | "health"
  | "paging"
  | "tombstones"
  | "gone"
  | "idempotent-replay"
  | "idempotency-mismatch"
  | "conflict-not-stored"
  | "batch-order"
  | "limits"
  | "tenancy"
  | "live";

/** One rule of the contract, checked over HTTP. */
export interface BackendCheck {
  /** Its name. */
  readonly name: BackendCheckName;
  /** The rule it checks, in one line. */
  readonly rule: string;
  /**
   * Runs the check; throws {@linkcode BackendCheckFailure} or
   * {@linkcode BackendCheckSkip}, or returns a note for the report.
   */
  run(context: CheckContext): Promise<string | void>;
}

/** Options of {@linkcode put} and {@linkcode remove}. */
export interface WriteOptions {
  /** The principal. */
  readonly as?: number | null;
  /** The idempotency key; a fresh one when absent. */
  readonly key?: string;
  /** The base (`_baseUpdatedAt`). */
  readonly base?: string;
  /** Whether the write is forced. */
  readonly force?: boolean;
}

/**
 * `PUT /{kind}/{id}` with a record body.
 *
 * @param context The check's context.
 * @param kind The kind.
 * @param id The id.
 * @param fields The record's fields (and options under `options`).
 * @returns The answer.
 */
export function put(
  context: CheckContext,
  kind: string,
  id: string,
  fields: Record<string, unknown> & { options?: WriteOptions } = {},
): Promise<Answer> {
  const { options = {}, ...rest } = fields;
  const body: Record<string, unknown> = { id, ...rest };
  if (options.base !== undefined) body._baseUpdatedAt = options.base;
  const headers: Record<string, string> = {
    "idempotency-key": options.key ?? context.key(),
  };
  if (options.force === true) headers["x-force-update"] = "true";
  return context.call("PUT", recordPath(kind, id), {
    as: options.as === undefined ? 0 : options.as,
    body,
    headers,
  });
}

/**
 * `DELETE /{kind}/{id}`.
 *
 * @param context The check's context.
 * @param kind The kind.
 * @param id The id.
 * @param options Principal, key, base, force.
 * @returns The answer.
 */
export function remove(
  context: CheckContext,
  kind: string,
  id: string,
  options: WriteOptions = {},
): Promise<Answer> {
  const query = options.base === undefined
    ? ""
    : `?_baseUpdatedAt=${encodeURIComponent(options.base)}`;
  const headers: Record<string, string> = {
    "idempotency-key": options.key ?? context.key(),
  };
  if (options.force === true) headers["x-force-delete"] = "true";
  return context.call("DELETE", `${recordPath(kind, id)}${query}`, {
    as: options.as === undefined ? 0 : options.as,
    headers,
  });
}

/**
 * Whether a record is live: no `deleted_at`, or `null`.
 *
 * @param record The record.
 * @returns Whether it is not a tombstone.
 */
export function isLive(record: Record<string, unknown>): boolean {
  return record.deleted_at === undefined || record.deleted_at === null;
}
