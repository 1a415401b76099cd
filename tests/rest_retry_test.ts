/**
 * The REST transport's retries: exponential backoff with a cap and full
 * jitter, `Retry-After` (and a huge one read as one hour), timeouts, network
 * errors, and a caller's abort, which is never retried.
 */

import assert from "node:assert/strict";
import { createRestTransport } from "../transport/rest.ts";
import { NetworkError, ServerError } from "../src/errors.ts";
import {
  json,
  type ScriptedHandler,
  sequence,
  startScriptedServer,
} from "./_scripted_server.ts";
import {
  connect,
  firstPull,
  HOUR_MS,
  HTTP_DATE,
  idOf,
  MAX_TIMER_MS,
  record,
  recordSleeps,
  upsert,
} from "./_rest_fixtures.ts";

/** Answers 503 then 429 with the given `Retry-After`, then an empty page. */
function retryAfterTwice(value: string): ScriptedHandler {
  return sequence(
    () => new Response("", { status: 503, headers: { "retry-after": value } }),
    () => new Response("", { status: 429, headers: { "retry-after": value } }),
    () => json({ items: [] }),
  );
}

Deno.test("rest: retries back off exponentially with a cap and full jitter", async () => {
  for (
    const [random, expected] of [
      [0.999, [100, 200, 400, 500, 500]],
      [0.5, [50, 100, 200, 250, 250]],
      [0, [0, 0, 0, 0, 0]],
    ] as const
  ) {
    const sleeps = recordSleeps();
    await using server = startScriptedServer(() =>
      new Response("", { status: 503 })
    );
    await using transport = connect(server, {
      sleep: sleeps.sleep,
      random: () => random,
      retry: { attempts: 6, baseDelayMs: 100, maxDelayMs: 500 },
    });
    await assert.rejects(transport.pull(firstPull()), ServerError);
    assert.deepEqual(sleeps.delays, expected, `random ${random}`);
    assert.equal(server.requests.length, 6);
  }
});

Deno.test("rest: retries honour Retry-After in seconds and as an HTTP date", async () => {
  const now = Date.parse(HTTP_DATE);
  const sleeps = recordSleeps();
  await using server = startScriptedServer(
    sequence(
      () => new Response("", { status: 503, headers: { "retry-after": "2" } }),
      () =>
        new Response("", {
          status: 429,
          headers: { "retry-after": new Date(now + 5000).toUTCString() },
        }),
      () => json({ items: [] }),
    ),
  );
  await using transport = connect(server, {
    sleep: sleeps.sleep,
    now: () => now,
    random: () => 0.999,
  });
  await transport.pull(firstPull());
  assert.deepEqual(sleeps.delays, [2000, 5000]);
});

Deno.test("rest: a Retry-After beyond maxDelayMs is reported without waiting", async () => {
  const sleeps = recordSleeps();
  await using server = startScriptedServer(() =>
    new Response("", { status: 429, headers: { "retry-after": "120" } })
  );
  await using transport = connect(server, {
    sleep: sleeps.sleep,
    retry: { maxDelayMs: 30_000 },
  });
  const [result] = await transport.push([upsert("a")]);
  assert.equal(result?.type, "retry");
  assert.equal(result?.type === "retry" && result.retryAfterMs, 120_000);
  await assert.rejects(transport.pull(firstPull()), (error: unknown) => {
    assert.ok(error instanceof ServerError);
    assert.equal(error.status, 429);
    assert.equal(error.retryAfterMs, 120_000);
    return true;
  });
  assert.equal(server.requests.length, 2);
  assert.deepEqual(sleeps.delays, []);
});

Deno.test("rest: a huge Retry-After is read as one hour: never a near-zero wait, never past the timer", async () => {
  const huge = [
    "99999999999999999999",
    "9".repeat(1_000),
    "Fri, 31 Dec 9999 23:59:59 GMT",
  ];
  for (const value of huge) {
    const sleeps = recordSleeps();
    await using server = startScriptedServer(retryAfterTwice(value));
    // Reported, not waited, under the default cap on waits.
    await using capped = connect(server, { sleep: sleeps.sleep });
    const [result] = await capped.push([upsert("a")]);
    assert.ok(result?.type === "retry", value.slice(0, 20));
    assert.equal(result.retryAfterMs, HOUR_MS, value.slice(0, 20));
    await assert.rejects(capped.pull(firstPull()), (error: unknown) => {
      assert.ok(error instanceof ServerError);
      assert.equal(error.retryAfterMs, HOUR_MS);
      return true;
    });
    assert.deepEqual(sleeps.delays, []);
    // Waited, when the cap on waits allows it: one hour, within the timer.
    await using fresh = startScriptedServer(retryAfterTwice(value));
    await using patient = connect(fresh, {
      sleep: sleeps.sleep,
      retry: { maxDelayMs: MAX_TIMER_MS },
    });
    await patient.pull(firstPull());
    assert.deepEqual(sleeps.delays, [HOUR_MS, HOUR_MS], value.slice(0, 20));
  }
});

Deno.test("rest: a timeout is a retryable NetworkError", async () => {
  const gate = Promise.withResolvers<void>();
  const sleeps = recordSleeps();
  const server = startScriptedServer(async (request, index) => {
    if (index === 0 || idOf(request) === "slow") await gate.promise;
    return json({ items: [] });
  });
  try {
    const transport = connect(server, {
      sleep: sleeps.sleep,
      timeoutMs: 50,
      retry: { attempts: 2 },
    });
    // The first try times out, the second passes.
    const page = await transport.pull(firstPull());
    assert.deepEqual(page.items, []);
    assert.equal(sleeps.delays.length, 1);
    const [result] = await transport.push([upsert("slow")], {});
    assert.equal(result?.type, "retry");
    if (result?.type === "retry") {
      assert.ok(result.error instanceof NetworkError);
      assert.equal(result.error.retryable, true);
      assert.match(
        result.error.message,
        /^Cannot push the upsert of 'todos\/slow' as the request timed out: current value is 50 ms$/,
      );
    }
    await transport.close();
  } finally {
    gate.resolve();
    await server.close();
  }
});

Deno.test("rest: each request times out after timeoutMs from its own start", async () => {
  const gate = Promise.withResolvers<void>();
  const started = new Map<string, number>();
  const server = startScriptedServer(async (request) => {
    const id = idOf(request);
    started.set(id, performance.now());
    // "quick" answers before the timeout; the others hang.
    if (id === "quick") {
      await new Promise((resolve) => setTimeout(resolve, 300));
      return json(record(id), 201);
    }
    await gate.promise;
    return json(record(id), 201);
  });
  try {
    const transport = connect(server, {
      timeoutMs: 1_000,
      retry: { attempts: 1 },
      concurrency: 2,
    });
    // Wide margins: "quick" has 700 ms of slack on a loaded machine, and
    // the bounds below only need timers that never fire early.
    // Two in flight: "hang-a" and "quick" start together; "hang-b" starts
    // when "quick" is answered, so its deadline is 300 ms after "hang-a"'s.
    const results = await transport.push(
      [upsert("hang-a"), upsert("quick"), upsert("hang-b")],
    );
    const ended = performance.now();
    assert.equal(results[1]?.type, "ok");
    for (const index of [0, 2]) {
      const result = results[index];
      assert.equal(result?.type, "retry");
      if (result?.type === "retry") {
        assert.match(
          result.error.message,
          /as the request timed out: current value is 1000 ms$/,
        );
      }
    }
    // "hang-b" was not cut short at "hang-a"'s deadline.
    assert.ok(started.get("hang-b")! - started.get("hang-a")! >= 250);
    assert.ok(ended - started.get("hang-b")! >= 995);
    await transport.close();
  } finally {
    gate.resolve();
    await server.close();
  }
});

Deno.test("rest: a timeoutMs at the timer's maximum arms no timer past it", async () => {
  await using server = startScriptedServer(async () => {
    await new Promise((resolve) => setTimeout(resolve, 20));
    return json({ items: [record("a")] });
  });
  await using transport = connect(server, {
    timeoutMs: MAX_TIMER_MS,
    retry: { attempts: 1 },
  });
  // A longer timer would fire after 1 ms, and again, and again.
  const armed: number[] = [];
  const original = globalThis.setTimeout;
  globalThis.setTimeout = ((fn: () => void, ms?: number) => {
    armed.push(ms ?? 0);
    return original(fn, ms);
  }) as typeof setTimeout;
  try {
    const page = await transport.pull(firstPull());
    assert.deepEqual(page.items, [record("a")]);
  } finally {
    globalThis.setTimeout = original;
  }
  assert.ok(armed.length > 0);
  assert.ok(armed.every((ms) => ms <= MAX_TIMER_MS), `${armed}`);
});

Deno.test("rest: a network error is retried, then a retryable NetworkError", async () => {
  const gone = startScriptedServer(() => json({}));
  const url = gone.url;
  await gone.close();
  const sleeps = recordSleeps();
  await using transport = createRestTransport({
    baseUrl: url,
    batch: false,
    sleep: sleeps.sleep,
    retry: { attempts: 2 },
  });
  await assert.rejects(transport.pull(firstPull()), (error: unknown) => {
    assert.ok(error instanceof NetworkError);
    assert.equal(error.retryable, true);
    assert.equal(error.category, "network");
    return true;
  });
  const [result] = await transport.push([upsert("a")]);
  assert.ok(result?.type === "retry" && result.error instanceof NetworkError);
  assert.equal(sleeps.delays.length, 2);
});

Deno.test("rest: a caller abort rejects with its reason and is not retried", async () => {
  const gate = Promise.withResolvers<void>();
  const controller = new AbortController();
  const reason = new Error("user left");
  const sleeps = recordSleeps();
  const server = startScriptedServer(async () => {
    controller.abort(reason);
    await gate.promise;
    return json({ items: [] });
  });
  try {
    await using transport = connect(server, { sleep: sleeps.sleep });
    await assert.rejects(
      transport.pull(firstPull(), { signal: controller.signal }),
      (error: unknown) => error === reason,
    );
    await assert.rejects(
      transport.push([upsert("a")], { signal: controller.signal }),
      (error: unknown) => error === reason,
    );
    assert.equal(server.requests.length, 1);
    assert.deepEqual(sleeps.delays, []);
  } finally {
    gate.resolve();
    await server.close();
  }
});

Deno.test("rest: a caller abort during a backoff wait is not retried", async () => {
  const controller = new AbortController();
  const reason = new Error("stop");
  await using server = startScriptedServer(() =>
    new Response("", { status: 503 })
  );
  await using transport = connect(server, {
    sleep(_ms, signal): Promise<void> {
      controller.abort(reason);
      return signal?.aborted
        ? Promise.reject(signal.reason)
        : Promise.resolve();
    },
  });
  const results = transport.push([upsert("a")], { signal: controller.signal });
  await assert.rejects(results, (error: unknown) => error === reason);
  assert.equal(server.requests.length, 1);
});
