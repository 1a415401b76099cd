/**
 * The kit's live-hint check (CONTRACT.md §Live hint), run when `/health`
 * advertises `live`: `GET /live` is a `text/event-stream` that gets
 * `event: change` naming a kind after a write to it, and, with two
 * credentials, never names the other principal's kinds. Private.
 *
 * @module
 */

import {
  type BackendCheck,
  BackendCheckFailure,
  BackendCheckSkip,
  type CheckContext,
  expect,
  put,
  recordOf,
} from "./_backend_http.ts";

/** How long one write waits for its hint before writing again. */
const HINT_WAIT_MS = 2000;

/** An open live stream, parsed into the kinds of its change events. */
interface LiveStream {
  /** Every kind named so far, in order. */
  readonly kinds: string[];
  /** Resolves when a change event names `kind`, or after `ms` with false. */
  waitFor(kind: string, ms: number): Promise<boolean>;
  /** Stops reading. */
  close(): Promise<void>;
}

async function openLive(
  context: CheckContext,
  as: number,
): Promise<LiveStream> {
  const response = await context.open("GET", "/live", {
    as,
    headers: { accept: "text/event-stream" },
  });
  const type = response.headers.get("content-type") ?? "";
  if (response.status !== 200 || !type.startsWith("text/event-stream")) {
    await response.body?.cancel();
    throw new BackendCheckFailure(
      `Cannot open GET /live as the contract answers 200 text/event-stream: current value is ${response.status} ${
        JSON.stringify(type)
      }`,
    );
  }
  const kinds: string[] = [];
  const waiters = new Set<() => void>();
  const reader = response.body!.pipeThrough(new TextDecoderStream())
    .getReader();
  const reading = (async () => {
    let buffer = "";
    let event = "message";
    let data: string[] = [];
    while (true) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let newline: number;
      while ((newline = buffer.search(/\r\n|\n|\r/)) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(
          newline + (buffer[newline] === "\r" &&
              buffer[newline + 1] === "\n"
            ? 2
            : 1),
        );
        if (line === "") {
          if (event === "change") {
            try {
              const parsed = JSON.parse(data.join("\n"));
              if (Array.isArray(parsed?.kinds)) kinds.push(...parsed.kinds);
            } catch {
              // A hint that is not JSON names nothing.
            }
            for (const check of [...waiters]) check();
          }
          event = "message";
          data = [];
        } else if (line.startsWith("event:")) {
          event = line.slice(6).trim();
        } else if (line.startsWith("data:")) {
          data.push(line.slice(5).replace(/^ /, ""));
        }
      }
    }
  })().catch(() => {});
  return {
    kinds,
    waitFor(kind, ms) {
      if (kinds.includes(kind)) return Promise.resolve(true);
      return new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => {
          waiters.delete(check);
          resolve(false);
        }, ms);
        function check() {
          if (!kinds.includes(kind)) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve(true);
        }
        waiters.add(check);
      });
    },
    async close() {
      await reader.cancel().catch(() => {});
      await reading;
    },
  };
}

/** Writes to a kind until its hint arrives (hints may be lost), bounded. */
async function writeUntilHinted(
  context: CheckContext,
  stream: LiveStream,
  kind: string,
  as: number,
): Promise<void> {
  for (let attempt = 1; attempt <= 3; attempt++) {
    recordOf(
      await put(context, kind, `live-${attempt}`, { options: { as } }),
      "create a record with PUT",
    );
    if (await stream.waitFor(kind, HINT_WAIT_MS)) return;
  }
  throw new BackendCheckFailure(
    `Cannot hint a write on GET /live as an "event: change" names its kind: current value is ${
      JSON.stringify(stream.kinds)
    } after 3 writes to ${JSON.stringify(kind)}`,
  );
}

const live: BackendCheck = {
  name: "live",
  rule:
    "when /health advertises live, GET /live gets an event: change naming the kind after a write, only for its principal",
  async run(context) {
    if (!context.health.live) {
      throw new BackendCheckSkip("GET /health does not advertise live");
    }
    const mine = context.kind("live");
    const first = await openLive(context, 0);
    const second = context.principals >= 2 ? await openLive(context, 1) : null;
    try {
      await writeUntilHinted(context, first, mine, 0);
      if (second === null) return "one credential: tenancy of hints unchecked";
      const theirs = context.kind("live2");
      await writeUntilHinted(context, second, theirs, 1);
      expect(
        !second.kinds.includes(mine),
        `Cannot hint a write on GET /live only to its principal: current value is ${
          JSON.stringify(second.kinds)
        } on the second principal's stream, naming the first one's kind ${
          JSON.stringify(mine)
        }`,
      );
      return "each stream named its own principal's kinds only";
    } finally {
      await first.close();
      await second?.close();
    }
  },
};

/** The live checks. */
export const LIVE_CHECKS: readonly BackendCheck[] = [live];
