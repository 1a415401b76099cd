/**
 * The kit's pull checks: keyset paging (many items sharing one
 * `updated_at`, ids compared by UTF-16 code units), tombstones in pulls,
 * and the `410` rule. Private.
 *
 * @module
 */

import {
  type Answer,
  type BackendCheck,
  BackendCheckFailure,
  byId,
  type CheckContext,
  expect,
  expectStatus,
  isObject,
  pullAll,
  put,
  recordOf,
  remove,
  sameInstant,
  show,
} from "./_backend_http.ts";

/**
 * Ids that exercise encoding and order: `/ ? # %`, spaces, unicode, and a
 * pair ordered differently by UTF-16 code units (`"p😀" < "pｚ"`) than by
 * code points.
 */
const PAGING_IDS: readonly string[] = [
  "p-9",
  "p-8 space",
  "p/7?#%",
  "p-6 é",
  "pｚ",
  "p😀",
  "p-3",
  "p-2",
  "p-1",
];

/**
 * Orders items as the contract does: `updated_at` instant, then id by
 * UTF-16 code units.
 */
function compareKeys(
  a: Record<string, unknown>,
  b: Record<string, unknown>,
): number {
  const ta = Date.parse(a.updated_at as string);
  const tb = Date.parse(b.updated_at as string);
  if (ta !== tb) return ta - tb;
  const ia = a.id as string;
  const ib = b.id as string;
  return ia < ib ? -1 : ia > ib ? 1 : 0;
}

function keys(items: readonly Record<string, unknown>[]): string {
  return JSON.stringify(items.map((item) => `${item.updated_at} ${item.id}`));
}

/** Writes the paging ids: a batch when served (timestamps more likely shared). */
async function writeMany(
  context: CheckContext,
  kind: string,
  ids: readonly string[],
): Promise<void> {
  const half = context.health.batch ? Math.floor(ids.length / 2) : ids.length;
  for (const id of ids.slice(0, half)) {
    const answer = await put(context, kind, id, { n: 1 });
    expectStatus(answer, [201], `create ${JSON.stringify(id)} with PUT`);
  }
  const rest = ids.slice(half);
  if (rest.length === 0) return;
  const answer = await context.call("POST", "/batch", {
    body: {
      ops: rest.map((id) => ({
        opId: context.key(),
        kind,
        id,
        type: "upsert",
        payload: { id, n: 1 },
      })),
    },
  });
  expectStatus(answer, [200], "create records with POST /batch");
  const results = isObject(answer.json) ? answer.json.results : undefined;
  expect(
    Array.isArray(results) &&
      results.every((result) => isObject(result) && result.status === 201),
    `Cannot create records with POST /batch as each new record is answered 201: current value is ${
      show(answer)
    }`,
  );
}

/** Pulls with an explicit cursor, one page of up to 1,000. */
async function probe(
  context: CheckContext,
  kind: string,
  since: string,
  afterId: string | null,
): Promise<Record<string, unknown>[]> {
  const query = [
    "limit=1000",
    "includeDeleted=true",
    `updatedSince=${encodeURIComponent(since)}`,
  ];
  if (afterId !== null) query.push(`afterId=${encodeURIComponent(afterId)}`);
  const path = `/${encodeURIComponent(kind)}?${query.join("&")}`;
  const answer = await context.call("GET", path);
  expectStatus(answer, [200], `pull with a cursor (GET ${path})`);
  const items = isObject(answer.json) ? answer.json.items : undefined;
  expect(
    Array.isArray(items),
    `Cannot pull with a cursor (GET ${path}) as a page has items: current value is ${
      show(answer)
    }`,
  );
  return items as Record<string, unknown>[];
}

const paging: BackendCheck = {
  name: "paging",
  rule:
    "pulls page by the keyset (updated_at, id), items sharing one updated_at cross page boundaries exactly once",
  async run(context) {
    const kind = context.kind("paging");
    // In ascending order: a server may give ids written in order within
    // one millisecond the same updated_at (the reference server does).
    await writeMany(context, kind, [...PAGING_IDS].sort());
    const full = await pullAll(context, kind, { limit: 1000 });
    const sorted = [...full.items].sort(compareKeys);
    expect(
      full.items.length === PAGING_IDS.length &&
        new Set(full.items.map((item) => item.id)).size === PAGING_IDS.length,
      `Cannot pull every record once as ${PAGING_IDS.length} were written: current value is ${
        JSON.stringify(full.items.map((item) => item.id))
      }`,
    );
    expect(
      keys(full.items) === keys(sorted),
      `Cannot pull in (updated_at, id) order, ids by UTF-16 code units: current value is ${
        keys(full.items)
      }`,
    );
    for (const limit of [1, 2, 3]) {
      const paged = await pullAll(context, kind, { limit });
      expect(
        keys(paged.items) === keys(sorted),
        `Cannot page with limit=${limit} as every item comes exactly once, in order: current value is ${
          keys(paged.items)
        }, wanted ${keys(sorted)}`,
      );
    }
    // The keyset is authoritative: from any cursor, exactly what follows it.
    for (const [index, item] of sorted.entries()) {
      const since = item.updated_at as string;
      const after = await probe(context, kind, since, item.id as string);
      expect(
        keys(after) === keys(sorted.slice(index + 1)),
        `Cannot pull after the cursor (${since}, ${
          JSON.stringify(item.id)
        }) as the keyset gives every (updated_at, id) above it: current value is ${
          keys(after)
        }`,
      );
      // "p" sorts before every id: the items at `since` itself come too.
      const from = await probe(context, kind, since, "p");
      const wanted = sorted.filter((other) =>
        Date.parse(other.updated_at as string) >= Date.parse(since)
      );
      expect(
        keys(from) === keys(wanted),
        `Cannot pull after the cursor (${since}, "p") as items at that updated_at with a larger id follow it: current value is ${
          keys(from)
        }`,
      );
    }
    const stamps = new Set(
      sorted.map((item) => Date.parse(item.updated_at as string)),
    );
    return `${sorted.length} records, ${
      sorted.length - stamps.size
    } sharing a timestamp with another, paged by 1, 2, 3 and probed from every cursor`;
  },
};

const tombstones: BackendCheck = {
  name: "tombstones",
  rule:
    "DELETE is soft: the tombstone comes in pulls with deleted_at and a newer updated_at; 404 for an id that never existed",
  async run(context) {
    const kind = context.kind("tombstones");
    const created = recordOf(
      await put(context, kind, "t1", { title: "to delete" }),
      "create a record with PUT",
    );
    await put(context, kind, "t2", { title: "stays" });
    const deleted = await remove(context, kind, "t1", {
      base: created.updated_at as string,
    });
    expectStatus(deleted, [200, 204], "delete a record with its base");
    if (deleted.status === 200) {
      const body = recordOf(deleted, "delete a record");
      expect(
        typeof body.deleted_at === "string",
        `Cannot delete a record as a 200 answer carries the tombstone with deleted_at: current value is ${
          show(deleted)
        }`,
      );
    }
    const items = byId((await pullAll(context, kind, { limit: 1 })).items);
    const tombstone = items.get("t1");
    expect(
      tombstone !== undefined && typeof tombstone.deleted_at === "string" &&
        !Number.isNaN(Date.parse(tombstone.deleted_at)),
      `Cannot pull a deletion as the tombstone comes with deleted_at: current value is ${
        JSON.stringify(tombstone ?? null)
      }`,
    );
    expect(
      Date.parse(tombstone.updated_at as string) >
        Date.parse(created.updated_at as string),
      `Cannot pull a deletion as it bumps updated_at: current value is ${
        JSON.stringify(tombstone)
      } after ${JSON.stringify(created)}`,
    );
    expect(
      items.get("t2")?.deleted_at === undefined ||
        items.get("t2")?.deleted_at === null,
      `Cannot pull a live record as it has no deleted_at: current value is ${
        JSON.stringify(items.get("t2") ?? null)
      }`,
    );
    // A client that pulled before the delete learns of it from its cursor.
    const later = byId(
      (await pullAll(context, kind, {
        since: created.updated_at as string,
        afterId: "t1",
      })).items,
    );
    expect(
      typeof later.get("t1")?.deleted_at === "string",
      `Cannot pull a deletion from a cursor taken before it: current value is ${
        JSON.stringify([...later.values()])
      }`,
    );
    const never = await remove(context, kind, "never-existed");
    expectStatus(never, [404], "delete an id that never existed");
    const stale = await put(context, kind, "t1", {
      title: "revived?",
      options: { base: created.updated_at as string },
    });
    expectStatus(stale, [409], "update a tombstone with the base it had");
  },
};

/** The first pull without a cursor, to the end: never `410`. */
async function freshPullNeverGone(
  context: CheckContext,
  kind: string,
): Promise<void> {
  try {
    await pullAll(context, kind, { limit: 1 });
  } catch (error) {
    if (error instanceof BackendCheckFailure && / 410 /.test(error.message)) {
      throw new BackendCheckFailure(
        `Cannot answer a pull that began with no cursor with 410 on a later page as a full resync must finish: ${error.message}`,
      );
    }
    throw error;
  }
}

const gone: BackendCheck = {
  name: "gone",
  rule:
    "410 only for a cursor older than purged tombstones, never for the pages of a pull that began with no cursor",
  async run(context) {
    const kind = context.kind("gone");
    const first = recordOf(
      await put(context, kind, "g1", {}),
      "create a record with PUT",
    );
    recordOf(await put(context, kind, "g2", {}), "create a record with PUT");
    recordOf(await put(context, kind, "g3", {}), "create a record with PUT");
    expectStatus(
      await remove(context, kind, "g2"),
      [200, 204],
      "delete a record",
    );
    await freshPullNeverGone(context, kind);
    if (context.purgeTombstones === undefined) {
      return "no purgeTombstones hook: only checked that a pull with no cursor never gets 410";
    }
    await context.purgeTombstones();
    await freshPullNeverGone(context, kind);
    // The cursor predates the purged tombstone of g2: the client would miss
    // that deletion, so the server must say 410.
    const query = `updatedSince=${
      encodeURIComponent(first.updated_at as string)
    }&afterId=g1&limit=10&includeDeleted=true`;
    const answer: Answer = await context.call(
      "GET",
      `/${encodeURIComponent(kind)}?${query}`,
    );
    expectStatus(
      answer,
      [410],
      "pull from a cursor older than a purged tombstone",
    );
    const g1 = byId((await pullAll(context, kind)).items).get("g1");
    expect(
      g1 !== undefined && sameInstant(g1.updated_at, first.updated_at),
      `Cannot keep a live record through a tombstone purge: current value is ${
        JSON.stringify(g1 ?? null)
      }`,
    );
    return "410 for a cursor older than a purged tombstone";
  },
};

/** The pull checks, in order. */
export const PAGING_CHECKS: readonly BackendCheck[] = [
  paging,
  tombstones,
  gone,
];
