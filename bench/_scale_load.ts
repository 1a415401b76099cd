/**
 * The client side of `bench/server_scale.ts`: concurrent clients pushing
 * batches and paging pulls against a list of server URLs (round-robin, a
 * client-side load balancer), with per-request latencies. Plain `fetch`,
 * whose connections are kept alive.
 *
 * @module
 */

/** One client: the server it talks to and the token of its principal. */
export interface Client {
  readonly url: string;
  readonly token: string;
  /** Its number, unique in the row (ids pushed carry it). */
  readonly index: number;
}

/** What one phase of one row measured. */
export interface PhaseResult {
  /** Ops applied (push) or records received (pull). */
  readonly items: number;
  readonly requests: number;
  /** Wall time of the phase in milliseconds. */
  readonly elapsedMs: number;
  /** Requests answered busy (503 or 429), retried after a wait. */
  readonly busy: number;
  /** Request latencies in milliseconds, sorted ascending. */
  readonly latencies: readonly number[];
}

/** The `p`-quantile (0 to 1) of sorted values, nearest rank. */
export function quantile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(
    sorted.length,
    Math.max(1, Math.ceil(p * sorted.length)),
  );
  return sorted[rank - 1]!;
}

function headers(token: string): Record<string, string> {
  return {
    authorization: `Bearer ${token}`,
    "content-type": "application/json",
  };
}

/**
 * How many requests the servers answered 503 or 429 (busy: retry later)
 * since {@linkcode takeBusy} last read it.
 */
const busy = { count: 0 };

/** Returns the busy answers counted so far and resets the count. */
export function takeBusy(): number {
  const count = busy.count;
  busy.count = 0;
  return count;
}

/** A unique prefix for the op ids of this process. */
const RUN = crypto.randomUUID().slice(0, 8);
let batchSeq = 0;

/**
 * Pushes one batch of `count` upserts of new records to `kind`.
 *
 * @returns How many ops the server applied: 0 when it answered busy
 * (counted for {@linkcode takeBusy}).
 * @throws {Error} On another status than 200, 429 or 503, or an op not
 * applied.
 */
export async function pushBatch(
  client: Client,
  kind: string,
  count: number,
  idPrefix: string,
): Promise<number> {
  const seq = batchSeq++;
  const ops = Array.from({ length: count }, (_, i) => {
    const id = `${idPrefix}-${client.index}-${seq}-${i}`;
    return {
      opId: `${RUN}-${id}`,
      kind,
      id,
      type: "upsert",
      payload: { id, title: `record ${i}`, done: false, n: i },
    };
  });
  const response = await fetch(`${client.url}/batch`, {
    method: "POST",
    headers: headers(client.token),
    body: JSON.stringify({ ops }),
  });
  const text = await response.text();
  if (response.status === 503 || response.status === 429) {
    // The server's "busy, retry later": a client waits Retry-After (capped
    // here at 1 s) and sends the same batch again; counted, not fatal.
    const wait = Number(response.headers.get("retry-after") ?? "1");
    await new Promise((resolve) =>
      setTimeout(resolve, Math.min(1, wait > 0 ? wait : 1) * 1000)
    );
    busy.count++;
    return 0;
  }
  if (response.status !== 200) {
    throw new Error(
      `Cannot push a batch as the server answered ${response.status}: current value is ${
        text.slice(0, 200)
      }`,
    );
  }
  const { results } = JSON.parse(text) as { results: { status: number }[] };
  const applied = results.filter((r) => r.status === 200 || r.status === 201)
    .length;
  if (applied !== count) {
    throw new Error(
      `Cannot push a batch as ops were refused: current value is ${
        JSON.stringify(results.find((r) => r.status >= 300))
      }`,
    );
  }
  return applied;
}

/**
 * Pages through `kind` to the end once, the way a client does: each page
 * after the first carries the keyset of the last record received
 * (`updatedSince`, `afterId`), which is authoritative, and the server's
 * `pageToken` as a hint.
 *
 * @returns The records received and the latency of each page request.
 */
export async function pullAll(
  client: Client,
  kind: string,
  limit: number,
  latencies: number[],
): Promise<{ records: number; requests: number }> {
  let token: string | null = null;
  let after: { updated_at: string; id: string } | null = null;
  let records = 0;
  let requests = 0;
  do {
    const query = new URLSearchParams({ limit: String(limit) });
    if (after !== null) {
      query.set("updatedSince", after.updated_at);
      query.set("afterId", after.id);
    }
    if (token !== null) query.set("pageToken", token);
    const started = performance.now();
    const response = await fetch(`${client.url}/${kind}?${query}`, {
      headers: headers(client.token),
    });
    const text = await response.text();
    if (response.status !== 200) {
      throw new Error(
        `Cannot pull as the server answered ${response.status}: current value is ${
          text.slice(0, 200)
        }`,
      );
    }
    const page = JSON.parse(text) as {
      items: { updated_at: string; id: string }[];
      nextPageToken: string | null;
    };
    latencies.push(performance.now() - started);
    records += page.items.length;
    requests++;
    token = page.nextPageToken;
    after = page.items.at(-1) ?? after;
  } while (token !== null);
  return { records, requests };
}

/** Runs `step` on every client in a loop until `durationMs` has passed. */
async function loop(
  clients: readonly Client[],
  durationMs: number,
  step: (client: Client, latencies: number[]) => Promise<
    { items: number; requests: number }
  >,
): Promise<PhaseResult> {
  const latencies: number[] = [];
  let items = 0;
  let requests = 0;
  takeBusy();
  const started = performance.now();
  const deadline = started + durationMs;
  await Promise.all(clients.map(async (client) => {
    while (performance.now() < deadline) {
      const done = await step(client, latencies);
      items += done.items;
      requests += done.requests;
    }
  }));
  const elapsedMs = performance.now() - started;
  latencies.sort((a, b) => a - b);
  return { items, requests, elapsedMs, busy: takeBusy(), latencies };
}

/** Every client pushes batches of `batch` new records for `durationMs`. */
export function pushPhase(
  clients: readonly Client[],
  durationMs: number,
  batch: number,
  idPrefix: string,
): Promise<PhaseResult> {
  return loop(clients, durationMs, async (client, latencies) => {
    const started = performance.now();
    const items = await pushBatch(client, "push", batch, idPrefix);
    if (items === 0) return { items, requests: 0 };
    latencies.push(performance.now() - started);
    return { items, requests: 1 };
  });
}

/** Every client pages through the `pull` table again and again. */
export function pullPhase(
  clients: readonly Client[],
  durationMs: number,
  limit: number,
): Promise<PhaseResult> {
  return loop(clients, durationMs, async (client, latencies) => {
    const { records, requests } = await pullAll(
      client,
      "pull",
      limit,
      latencies,
    );
    return { items: records, requests };
  });
}

/**
 * Fills the `pull` table of each client's principal with `records`
 * records, in batches of 1,000, 8 at a time.
 */
export async function fillPull(
  clients: readonly Client[],
  records: number,
): Promise<void> {
  const jobs: (() => Promise<number>)[] = [];
  for (const client of clients) {
    for (let done = 0; done < records; done += 1000) {
      const count = Math.min(1000, records - done);
      jobs.push(async () => {
        let applied = 0;
        while (applied === 0) {
          applied = await pushBatch(client, "pull", count, `fill${done}`);
        }
        return applied;
      });
    }
  }
  const workers = Array.from({ length: 8 }, async () => {
    for (let job = jobs.shift(); job !== undefined; job = jobs.shift()) {
      await job();
    }
  });
  await Promise.all(workers);
}
