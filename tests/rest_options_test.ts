/**
 * The REST transport's options: checked once, at construction, with a
 * `TypeError` or `RangeError` in std form.
 */

import assert from "node:assert/strict";
import {
  createRestTransport,
  type RestTransportOptions,
} from "../transport/rest.ts";
import { MAX_TIMER_MS } from "./_rest_fixtures.ts";

Deno.test("rest: createRestTransport() validates its options once", () => {
  const base = "http://127.0.0.1:1";
  const bad: [Partial<RestTransportOptions>, ErrorConstructor][] = [
    [{ baseUrl: "not a url" }, TypeError],
    [{ baseUrl: "ftp://example.com" }, TypeError],
    [{ baseUrl: "http://example.com/api?x=1" }, TypeError],
    [{ baseUrl: 42 as unknown as string }, TypeError],
    [{ fetch: "fetch" as unknown as typeof fetch }, TypeError],
    [{ token: "secret" as unknown as () => string }, TypeError],
    [{ batch: "yes" as unknown as boolean }, TypeError],
    [{ timeoutMs: 0 }, RangeError],
    [{ timeoutMs: "5" as unknown as number }, TypeError],
    [{ retry: { attempts: 0 } }, RangeError],
    [{ retry: { attempts: 1.5 } }, RangeError],
    [{ retry: { baseDelayMs: -1 } }, RangeError],
    [{ retry: { maxDelayMs: Infinity } }, RangeError],
    [{ batchSize: 0 }, RangeError],
    [{ concurrency: 0 }, RangeError],
    [{ random: 0.5 as unknown as () => number }, TypeError],
    [{ headers: [["bad header", "x"]] }, TypeError],
  ];
  for (const [options, type] of bad) {
    assert.throws(
      () => createRestTransport({ baseUrl: base, ...options }),
      (error: unknown) => {
        assert.ok(error instanceof type, `${JSON.stringify(options)}`);
        assert.match(
          (error as Error).message,
          /^Cannot create REST transport as '.+' .+: current value is /,
        );
        return true;
      },
    );
  }
  const transport = createRestTransport({
    baseUrl: new URL("http://127.0.0.1:1/api/"),
    timeoutMs: Infinity,
    retry: { attempts: 1, baseDelayMs: 0, maxDelayMs: 0 },
  });
  assert.equal(typeof transport.pull, "function");
});

Deno.test("rest: createRestTransport() validates maxResponseBytes, batchSize and every delay", () => {
  const bad: [Partial<RestTransportOptions>, ErrorConstructor][] = [
    [{ maxResponseBytes: 0 }, RangeError],
    [{ maxResponseBytes: 1.5 }, RangeError],
    [{ maxResponseBytes: Infinity }, RangeError],
    [{ maxResponseBytes: "1" as unknown as number }, TypeError],
    [{ batchSize: 1_001 }, RangeError],
    [{ timeoutMs: MAX_TIMER_MS + 1 }, RangeError],
    [{ timeoutMs: NaN }, RangeError],
    [{ retry: { baseDelayMs: MAX_TIMER_MS + 1 } }, RangeError],
    [{ retry: { maxDelayMs: MAX_TIMER_MS + 1 } }, RangeError],
    [{ retry: { maxDelayMs: NaN } }, RangeError],
    [{ retry: { baseDelayMs: "5" as unknown as number } }, TypeError],
  ];
  for (const [options, type] of bad) {
    assert.throws(
      () => createRestTransport({ baseUrl: "http://127.0.0.1:1", ...options }),
      (error: unknown) => {
        assert.ok(error instanceof type, JSON.stringify(options));
        assert.match(
          (error as Error).message,
          /^Cannot create REST transport as '.+' .+: current value is /,
        );
        return true;
      },
    );
  }
  createRestTransport({
    baseUrl: "http://127.0.0.1:1",
    maxResponseBytes: 1,
    batchSize: 1_000,
    timeoutMs: MAX_TIMER_MS,
    retry: { baseDelayMs: MAX_TIMER_MS, maxDelayMs: MAX_TIMER_MS },
  });
});

Deno.test("rest: the default fetch is called as a plain function, and looked up per call", async () => {
  // Browsers throw "Illegal invocation" when `fetch` runs with a `this`
  // other than the global object (or none); Deno does not, so this stands
  // in for the browser's check.
  const real = globalThis.fetch;
  const seen: string[] = [];
  const strict = function (
    this: unknown,
    input: RequestInfo | URL,
    _init?: RequestInit,
  ): Promise<Response> {
    if (this !== undefined && this !== globalThis) {
      return Promise.reject(new TypeError("Illegal invocation"));
    }
    seen.push(String(input));
    return Promise.resolve(
      Response.json({ items: [], nextPageToken: null }),
    );
  } as typeof fetch;
  const transport = createRestTransport({
    baseUrl: "http://sync.test",
    retry: { attempts: 1 },
  });
  try {
    globalThis.fetch = strict;
    const page = await transport.pull({
      kind: "todos",
      updatedSince: null,
      afterId: null,
      limit: 10,
      pageToken: null,
    });
    assert.deepEqual(page.items, []);
    assert.equal(seen.length, 1);
    assert.match(seen[0]!, /^http:\/\/sync\.test\/todos\?/);
  } finally {
    globalThis.fetch = real;
    await transport.close();
  }
});
