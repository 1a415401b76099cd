/**
 * What the run knows apart from the system under test: each client's last
 * local write of each record (the write that must not be lost), the marks
 * found parked in conflict inboxes and how they were resolved, and the
 * problems the run met (syncs over their timeout, heal syncs that failed
 * or made too many requests). Private.
 *
 * @module
 */

/** A client's last committed local write of one record. */
export interface LastWrite {
  /** The client. */
  readonly client: number;
  /** The table. */
  readonly kind: string;
  /** The record. */
  readonly id: string;
  /** The write's mark, or `null` for a delete. */
  readonly mark: string | null;
}

/** The run's own record of what happened. */
export class RunModel {
  /** Last local write per `client/kind/id`. */
  readonly lastWrites = new Map<string, LastWrite>();
  /** Marks seen in a conflict inbox, with the resolution the run chose. */
  readonly inboxMarks = new Map<string, "acceptClient" | "acceptServer">();
  /** Pending local writes a sync hid from the app (clause 11). */
  readonly hidden: string[] = [];
  /** Problems that make a client count as stuck. */
  readonly stuck: string[] = [];

  /**
   * Records a committed local write.
   *
   * @param write The write.
   */
  wrote(write: LastWrite): void {
    this.lastWrites.set(`${write.client}/${write.kind}/${write.id}`, write);
  }
}
