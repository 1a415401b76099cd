/**
 * The reference server's pull, `GET /{kind}`: the query checked, one page
 * read from the store within the page's item and byte limits, and the next
 * page token with the pull's tombstone mark (see `_page_token.ts`).
 *
 * @module
 */

import { cursorIdAfter, WIRE_LIMITS } from "../src/limits.ts";
import { parseTimestamp } from "../src/timestamp.ts";
import type { ServerCore } from "./_core.ts";
import type { ListServerRecordsResult } from "./store.ts";
import { describe } from "../src/describe.ts";
import { utf8Length } from "./_limits.ts";
import { PAGE_ENVELOPE_BYTES, type ResolvedOptions } from "./_options.ts";
import {
  encodePageToken,
  isGone,
  readPageToken,
  requestBound,
} from "./_page_token.ts";
import { failure, type Reply } from "./_reply.ts";
import { pullMark, sharedPullMark } from "./_tenants.ts";

/** Where a pull reads: the principal's table and the query. */
export interface PullRoute {
  /** The principal. */
  readonly namespace: string;
  /** The table. */
  readonly kind: string;
  /** The query: cursor, limit, flags and page token. */
  readonly params: URLSearchParams;
}

/** A pull's query, checked. */
interface PullQuery {
  since: number | undefined;
  afterId: string | undefined;
  limit: number;
  includeDeleted: boolean;
}

/**
 * Answers a pull with one page of the principal's table.
 *
 * @param core The server.
 * @param route The principal, the kind and the query.
 * @returns The page, `400` for a bad query, or `410` for a cursor older
 * than the tombstone retention.
 */
export async function pullRequest(
  core: ServerCore,
  route: PullRoute,
): Promise<Reply> {
  const { namespace, kind, params } = route;
  const query = pullQuery(params, core.options);
  if ("status" in query) return query;
  const { since, afterId, limit, includeDeleted } = query;
  const pageToken = params.get("pageToken");
  // The keyset is authoritative: a token that does not agree is ignored.
  const token = pageToken === null
    ? null
    : readPageToken(pageToken, { since, afterId });

  await core.maintainIfDue();
  // Taken before the read: see _page_token.ts.
  let mark: number | null = null;
  if (since === undefined && core.store.readClock !== undefined) {
    mark = sharedPullMark((await core.store.readClock(namespace)).last);
  } else if (since === undefined) {
    const tenant = core.tenants.get(namespace);
    const stored = tenant.clock === null
      ? (await core.store.lastWrite(namespace))?.updatedAt ?? null
      : null;
    mark = pullMark(tenant, core.now(), stored);
  }
  const budget = core.options.maxPageBytes - PAGE_ENVELOPE_BYTES;
  const options: {
    since?: number;
    afterId?: string;
    limit: number;
    includeDeleted: boolean;
    maxBytes: number;
  } = {
    limit,
    includeDeleted,
    // Each item after the first costs a comma too.
    maxBytes: Math.max(1, budget - limit),
  };
  if (since !== undefined) options.since = since;
  if (afterId !== undefined) options.afterId = afterId;
  const page = await core.store.listRecords(namespace, kind, options);
  const bound = requestBound(since, token);
  if (isGone(bound, page.horizon)) {
    return failure(
      410,
      "gone",
      `Cannot pull as the cursor is older than the tombstone retention, run a full resync: current value is ${
        describe(params.get("updatedSince"))
      }`,
    );
  }
  const { items, count, truncated } = pageItems(page, { limit, budget });
  const last = page.records[count - 1];
  // The last page carries a token too when its last item is older than
  // the purge horizon: the client keeps the token with its cursor, and so
  // keeps the pull's bound. Without it, the next pull's cursor (that item's
  // `updated_at`) is older than the horizon: `410`, a resync that ends on
  // the same cursor, `410` again, forever.
  const next = last !== undefined &&
      (count === limit || truncated ||
        (page.horizon !== null && last.updatedAt < page.horizon))
    ? encodePageToken({
      since: last.updatedAt,
      afterId: last.id,
      mark: bound ?? mark!,
    })
    : null;
  return {
    status: 200,
    body: null,
    text: `{"items":${items},"nextPageToken":${JSON.stringify(next)}${
      // Advisory (docs/contract.md): only a count the page cannot contradict.
      page.total !== undefined && Number.isSafeInteger(page.total) &&
        page.total >= count
        ? `,"total":${page.total}`
        : ""}}`,
  };
}

/**
 * The page's items as a JSON array, within `limit` items and `budget`
 * bytes (each item counted with a comma), counted again here, so a store
 * that ignores maxBytes cannot make the page larger (only the first item
 * may pass the budget alone). A UTF-16 unit takes at most 3 bytes of
 * UTF-8: when the whole array's text within that bound fits the budget,
 * it is serialised in one call and never counted byte by byte (counting
 * was a fifth of a page's cost). Otherwise item by item, counting exactly
 * once that bound no longer fits.
 */
function pageItems(
  page: ListServerRecordsResult,
  options: { limit: number; budget: number },
): { items: string; count: number; truncated: boolean } {
  const { limit, budget } = options;
  const records = page.records.length > limit
    ? page.records.slice(0, limit)
    : page.records;
  const whole = records.every((record) => typeof record.text === "string")
    ? `[${records.map((record) => record.text).join(",")}]`
    : JSON.stringify(records.map((record) => record.data));
  if (3 * whole.length <= budget) {
    return { items: whole, count: records.length, truncated: page.truncated };
  }
  const texts: string[] = [];
  let bytes = 0;
  let exact = false;
  let truncated = page.truncated;
  for (const record of records) {
    const text = typeof record.text === "string"
      ? record.text
      : JSON.stringify(record.data);
    if (!exact && bytes + 3 * text.length + 1 > budget) {
      exact = true;
      bytes = 0;
      for (const taken of texts) bytes += utf8Length(taken) + 1;
    }
    bytes += (exact ? utf8Length(text) : 3 * text.length) + 1;
    if (texts.length > 0 && bytes > budget) {
      truncated = true;
      break;
    }
    texts.push(text);
  }
  return { items: `[${texts.join(",")}]`, count: texts.length, truncated };
}

/** Reads and checks a pull's query, or the `400` that refuses it. */
function pullQuery(
  params: URLSearchParams,
  options: Pick<ResolvedOptions, "defaultPageSize" | "maxPageSize">,
): Reply | PullQuery {
  for (
    const name of [
      "updatedSince",
      "afterId",
      "limit",
      "includeDeleted",
      "pageToken",
    ]
  ) {
    const values = params.getAll(name);
    if (values.length > 1) {
      return failure(
        400,
        "invalid_query",
        `Cannot pull as '${name}' is given more than once: current value is ${
          describe(values)
        }`,
      );
    }
  }
  const sinceText = params.get("updatedSince");
  const since = sinceText === null ? undefined : parseTimestamp(sinceText);
  if (since === null) {
    return failure(
      400,
      "invalid_timestamp",
      `Cannot pull as 'updatedSince' is not an ISO-8601 timestamp with a timezone: current value is ${
        describe(sinceText)
      }`,
    );
  }
  const afterId = params.get("afterId") ?? undefined;
  // A cursor is an id within the limits, or what cursorIdAfter() makes of
  // one past them; `.` and `..` travel fine in a query.
  if (afterId !== undefined && cursorIdAfter(afterId) !== afterId) {
    return failure(
      400,
      "invalid_cursor",
      `Cannot pull as 'afterId' is not a cursor (1 to ${WIRE_LIMITS.maxIdLength} well-formed characters): current value is ${
        describe(afterId)
      }`,
    );
  }
  if (afterId !== undefined && since === undefined) {
    return failure(
      400,
      "invalid_query",
      `Cannot pull as 'afterId' needs 'updatedSince': current value is ${
        describe(afterId)
      }`,
    );
  }
  const limitText = params.get("limit");
  let limit = options.defaultPageSize;
  if (limitText !== null) {
    const parsed = /^[0-9]{1,15}$/.test(limitText) ? Number(limitText) : 0;
    if (parsed < 1) {
      return failure(
        400,
        "invalid_limit",
        `Cannot pull as 'limit' is not a positive integer: current value is ${
          describe(limitText)
        }`,
      );
    }
    limit = Math.min(parsed, options.maxPageSize);
  }
  const includeText = params.get("includeDeleted");
  if (
    includeText !== null && includeText !== "true" && includeText !== "false"
  ) {
    return failure(
      400,
      "invalid_query",
      `Cannot pull as 'includeDeleted' is neither "true" nor "false": current value is ${
        describe(includeText)
      }`,
    );
  }
  return { since, afterId, limit, includeDeleted: includeText !== "false" };
}
