/**
 * A bounded parser of `text/event-stream` text (the WHATWG server-sent
 * events format) for the live hints (CONTRACT.md §Live hint). The bytes come
 * from the network and are treated as hostile: a line longer than
 * {@linkcode MAX_SSE_LINE} is dropped unread, an event's data longer than
 * {@linkcode MAX_SSE_DATA} is dropped, and each drop is reported; nothing
 * grows without bound.
 *
 * @module
 */

/** The longest line kept, in UTF-16 code units; longer lines are dropped. */
export const MAX_SSE_LINE = 65_536;
/** The most data one event may carry, in UTF-16 code units. */
export const MAX_SSE_DATA = 65_536;

/** One dispatched event. */
export interface SseEvent {
  /** The `event:` field, `"message"` when absent. */
  readonly type: string;
  /** The `data:` lines joined with `\n`. */
  readonly data: string;
}

/** Parses a text/event-stream fed in chunks of decoded text. */
export class SseParser {
  /** The text of the line being read (without its end). */
  #line = "";
  /** Whether the current line passed the bound and is being skipped. */
  #skipping = false;
  /** Whether the previous chunk ended with CR (a CRLF may be split). */
  #afterCr = false;
  #type = "";
  #data: string[] = [];
  #dataLength = 0;
  #dataDropped = false;
  readonly #onProblem: (problem: string) => void;

  /**
   * A parser at the start of a stream.
   *
   * @param onProblem Told of each line or event dropped for its size.
   */
  constructor(onProblem: (problem: string) => void) {
    this.#onProblem = onProblem;
  }

  /**
   * Feeds decoded text.
   *
   * @param text The next chunk.
   * @returns The events it completed, in order.
   */
  push(text: string): SseEvent[] {
    const events: SseEvent[] = [];
    let start = 0;
    if (this.#afterCr && text.startsWith("\n")) start = 1;
    this.#afterCr = false;
    while (start < text.length) {
      const end = lineEnd(text, start);
      if (end === -1) {
        this.#append(text.slice(start));
        break;
      }
      this.#append(text.slice(start, end));
      this.#endLine(events);
      if (text[end] === "\r") {
        if (end + 1 === text.length) {
          this.#afterCr = true;
          start = end + 1;
          break;
        }
        start = text[end + 1] === "\n" ? end + 2 : end + 1;
      } else {
        start = end + 1;
      }
    }
    return events;
  }

  #append(part: string): void {
    if (this.#skipping) return;
    if (this.#line.length + part.length > MAX_SSE_LINE) {
      this.#skipping = true;
      this.#line = "";
      this.#onProblem(
        `a line is longer than ${MAX_SSE_LINE} characters (dropped)`,
      );
      return;
    }
    this.#line += part;
  }

  #endLine(events: SseEvent[]): void {
    const line = this.#line;
    const skipped = this.#skipping;
    this.#line = "";
    this.#skipping = false;
    if (skipped) return;
    if (line === "") {
      this.#dispatch(events);
      return;
    }
    if (line.startsWith(":")) return; // a comment: `: ping`
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") {
      this.#type = value;
    } else if (field === "data") {
      if (this.#dataDropped) return;
      this.#dataLength += value.length + 1;
      if (this.#dataLength > MAX_SSE_DATA) {
        this.#dataDropped = true;
        this.#data = [];
        this.#onProblem(
          `an event carries more than ${MAX_SSE_DATA} characters of data (dropped)`,
        );
        return;
      }
      this.#data.push(value);
    }
    // `id`, `retry` and unknown fields: nothing a hint needs.
  }

  #dispatch(events: SseEvent[]): void {
    const type = this.#type === "" ? "message" : this.#type;
    const hasData = this.#data.length > 0;
    const data = this.#data.join("\n");
    this.#type = "";
    this.#data = [];
    this.#dataLength = 0;
    this.#dataDropped = false;
    if (hasData) events.push({ type, data });
  }
}

const LINE_END = /[\r\n]/g;

/** The index of the next CR or LF at or after `from`, or -1. */
function lineEnd(text: string, from: number): number {
  // One regex scan: two `indexOf` calls would rescan to the end of a chunk
  // of many LF lines for a CR it does not have, quadratic in the chunk.
  LINE_END.lastIndex = from;
  return LINE_END.exec(text)?.index ?? -1;
}
