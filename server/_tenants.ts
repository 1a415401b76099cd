/**
 * What the reference server keeps per namespace (principal): its write
 * queue, its clock and the count of its stored idempotency keys. Writes of
 * one principal run one after another; writes of different principals never
 * wait for each other (CONTRACT.md §Limits: no request holds a lock that
 * every principal waits on), and one principal's clock never moves
 * another's timestamps.
 *
 * @module
 */

/** One namespace's state. */
export interface Tenant {
  /** The tail of the namespace's write queue. */
  tail: Promise<void>;
  /** The last assigned `updated_at`; `null` until read from the store. */
  clock: number | null;
  /** The id written last at `clock`; `null` when unknown. */
  lastId: string | null;
  /**
   * The least `updated_at` a write assigned from now on may get: raised to
   * every pull mark, so no later write (not even with a clock that steps
   * back) lands below a mark already handed out.
   */
  floor: number;
  /**
   * The least `updated_at` assigned by the write in progress and not yet
   * committed (invisible to reads), or `null`.
   */
  pending: number | null;
  /** The idempotency keys stored, as last counted; `null` when unknown. */
  keys: number | null;
  /** The oldest stored key's `expiresAt`, as last read. */
  oldestExpiresAt: number | null;
}

/** The namespaces of one server, each with its own write queue. */
export class Tenants {
  readonly #tenants = new Map<string, Tenant>();

  /**
   * The state of a namespace, created on first use.
   *
   * @param namespace The principal.
   * @returns Its state.
   */
  get(namespace: string): Tenant {
    let tenant = this.#tenants.get(namespace);
    if (tenant === undefined) {
      tenant = {
        tail: Promise.resolve(),
        clock: null,
        lastId: null,
        floor: -Infinity,
        pending: null,
        keys: null,
        oldestExpiresAt: null,
      };
      this.#tenants.set(namespace, tenant);
    }
    return tenant;
  }

  /**
   * Runs `work` after every earlier write of the namespace.
   *
   * @param namespace The principal.
   * @param work The write.
   * @returns What `work` returns.
   */
  exclusive<T>(namespace: string, work: () => Promise<T>): Promise<T> {
    const tenant = this.get(namespace);
    const run = tenant.tail.then(work);
    tenant.tail = run.then(ignore, ignore);
    return run;
  }

  /**
   * Waits until every write queued so far, in every namespace, settled.
   *
   * @returns When they settled.
   */
  async idle(): Promise<void> {
    await Promise.all([...this.#tenants.values()].map((t) => t.tail));
  }

  /** Forgets every key count (after a purge removed keys of any namespace). */
  forgetKeyCounts(): void {
    for (const tenant of this.#tenants.values()) {
      tenant.keys = null;
      tenant.oldestExpiresAt = null;
    }
  }
}

/**
 * The pull mark of a namespace: a lower bound on every `updated_at` the
 * namespace has not made visible yet (see `_page_token.ts`). It is
 * computed, and the floor raised to it, in one synchronous step before the
 * pull reads: the write in progress is below it only through `pending`,
 * which then bounds it; every later write gets at least the floor.
 *
 * The mark is past the clock (`clock + 1`), so a later write cannot share
 * its millisecond, and every purge horizon (one past a tombstone already
 * written) is at most the mark: the later pages of this pull can only get
 * `410` if a tombstone written after it began is purged before it ends. A
 * write after a first page thus moves to the next millisecond when the
 * clock has not: a bump per fresh pull, not per write.
 *
 * @param tenant The namespace's state.
 * @param now The server's `now()`.
 * @param stored The namespace's last `updated_at` in the store, needed when
 * `tenant.clock` is not loaded yet (read by the caller, never written to
 * `tenant`, whose clock only the write queue sets).
 * @returns The mark, in ms.
 */
export function pullMark(
  tenant: Tenant,
  now: number,
  stored: number | null,
): number {
  const clock = tenant.clock ?? stored ?? -Infinity;
  const mark = Math.max(Math.trunc(now), clock + 1, tenant.floor);
  tenant.floor = mark;
  return tenant.pending === null ? mark : Math.min(mark, tenant.pending);
}

function ignore(): void {}

/**
 * The pull mark over a shared store (see `pullMark()` and `_page_token.ts`),
 * taken from the namespace's stored clock `K`, read before the page: `K + 1`.
 * No in-process state is involved, since other instances write too. Every
 * record committed after the clock was read lands at or above the mark: a
 * commit over a shared store is guarded by the clock its writer read, which
 * is then the current one, so at least `K` (the clock never goes back); and
 * the writer gave its first record a later millisecond than that clock (a
 * shared scope starts with no last id), and the rest no earlier. Every
 * purge horizon of a tombstone written before is at most `K + 1`.
 *
 * @param last The namespace's newest write, read from the store before the
 * page, or `null` before its first record.
 * @returns The mark, in ms.
 */
export function sharedPullMark(
  last: { readonly updatedAt: number } | null,
): number {
  // No record yet: nothing was purged, so no horizon can exceed any mark.
  return last === null ? Number.MIN_SAFE_INTEGER : last.updatedAt + 1;
}
