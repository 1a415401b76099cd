/**
 * `deno task serve` (server/serve.ts) as a real process: bearer tokens
 * from flags and `SYNC_TOKENS` mapped to principals, `/health` open, a
 * loopback bind by default, and no non-loopback bind without auth unless
 * `--insecure`.
 *
 * @module
 */

import assert from "node:assert/strict";

const SERVE = new URL("../server/serve.ts", import.meta.url).href;

interface Running extends AsyncDisposable {
  /** The URL it printed, ending in `/`. */
  readonly url: string;
  /** Everything it printed on stdout up to the URL and the auth line. */
  readonly printed: string;
  /** Sends SIGINT and returns the exit code. */
  stop(): Promise<number>;
}

/** Starts the CLI on a free port and waits for it to print its URL. */
async function start(
  args: string[],
  env: Record<string, string> = {},
): Promise<Running> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SERVE, "--port", "0", "--db", ":memory:", ...args],
    env: { SYNC_TOKENS: "", ...env },
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let printed = "";
  while (!/Auth: .*\n/.test(printed)) {
    const { done, value } = await lines.read();
    if (done) break;
    printed += value;
  }
  const url = printed.match(/Listening on (http:\/\/\S+:\d+\/)/)?.[1];
  let stopped: Promise<number> | null = null;
  const stop = (): Promise<number> => {
    stopped ??= (async () => {
      child.kill("SIGINT");
      const status = await child.status;
      await lines.cancel();
      return status.code;
    })();
    return stopped;
  };
  if (url === undefined) {
    await stop();
    throw new Error(`Cannot start serve.ts: it printed ${printed}`);
  }
  return { url, printed, stop, [Symbol.asyncDispose]: () => stop().then() };
}

async function request(
  url: string,
  init: { method?: string; token?: string; body?: string } = {},
): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(url, {
    method: init.method ?? "GET",
    headers: init.token === undefined
      ? {}
      : { authorization: `Bearer ${init.token}` },
    ...(init.body === undefined ? {} : { body: init.body }),
  });
  return { status: response.status, body: await response.json() };
}

async function exitOf(
  args: string[],
): Promise<{ code: number; stderr: string; stdout: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SERVE, "--port", "0", "--db", ":memory:", ...args],
    env: { SYNC_TOKENS: "" },
    stdout: "piped",
    stderr: "piped",
    // A CLI that starts instead of refusing is killed: a failure, not a hang.
    signal: AbortSignal.timeout(10_000),
  }).output();
  return {
    code: output.code,
    stderr: new TextDecoder().decode(output.stderr),
    stdout: new TextDecoder().decode(output.stdout),
  };
}

const ALICE = "alice-token-0123456789";
const BOB = "bob-token-0123456789ab";

Deno.test("serve.ts: --token maps bearer tokens to principals; /health needs none", async () => {
  await using server = await start([
    "--token",
    `${ALICE}=alice`,
    "--token",
    `${BOB}=bob`,
  ]);
  assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  assert.match(server.printed, /Auth: bearer tokens for alice, bob/);
  assert.doesNotMatch(server.printed, /token-0123/);
  const health = await request(`${server.url}health`);
  assert.equal(health.status, 200);
  assert.equal(health.body.status, "ok");
  assert.equal(
    (health.body.limits as Record<string, unknown>).maxBatchOps,
    1000,
  );
  assert.equal((await request(`${server.url}todo`)).status, 401);
  assert.equal(
    (await request(`${server.url}todo`, { token: "wrong" })).status,
    401,
  );
  assert.equal(
    (await request(`${server.url}todo`, { token: ALICE.slice(0, -1) }))
      .status,
    401,
  );
  const put = await request(`${server.url}todo/1`, {
    method: "PUT",
    token: ALICE,
    body: '{"secret": "alice"}',
  });
  assert.equal(put.status, 201);
  const alice = await request(`${server.url}todo`, { token: ALICE });
  assert.deepEqual(
    (alice.body.items as Record<string, unknown>[]).map((item) => item.secret),
    ["alice"],
  );
  const bob = await request(`${server.url}todo`, { token: BOB });
  assert.deepEqual(bob.body.items, []);
  assert.equal(await server.stop(), 0);
});

Deno.test("serve.ts: SYNC_TOKENS adds tokens, also with '=' inside them", async () => {
  await using server = await start(["--token", `${ALICE}=alice`], {
    SYNC_TOKENS: " tok1=carol , dGVzdA===dave ",
  });
  for (const [token, expected] of [["tok1", 201], ["dGVzdA==", 201]]) {
    const put = await request(`${server.url}todo/x`, {
      method: "PUT",
      token: String(token),
      body: "{}",
    });
    assert.equal(put.status, expected, String(token));
  }
  const alice = await request(`${server.url}todo`, { token: ALICE });
  assert.deepEqual(alice.body.items, []);
  assert.equal(
    (await request(`${server.url}todo`, { token: "dGVzdA" })).status,
    401,
  );
});

Deno.test("serve.ts: a non-loopback --hostname without a token is refused with code 2 unless --insecure", async () => {
  for (const hostname of ["0.0.0.0", "::", "192.0.2.1", "example.com"]) {
    const refused = await exitOf(["--hostname", hostname]);
    assert.equal(refused.code, 2, hostname);
    assert.match(refused.stderr, /not a loopback address/);
    assert.match(refused.stderr, /--insecure/);
    assert.doesNotMatch(refused.stdout, /Listening/);
  }
  // A loopback name needs no token.
  for (const hostname of ["localhost", "127.0.0.2"]) {
    await using local = await start(["--hostname", hostname]);
    assert.match(local.printed, /Auth: none/);
  }
  {
    await using open = await start(["--hostname", "0.0.0.0", "--insecure"]);
    assert.match(open.printed, /Auth: none/);
    const port = new URL(open.url).port;
    const health = await request(`http://127.0.0.1:${port}/health`);
    assert.equal(health.status, 200);
  }
  {
    await using withToken = await start([
      "--hostname",
      "0.0.0.0",
      "--token",
      `${ALICE}=alice`,
    ]);
    const port = new URL(withToken.url).port;
    assert.equal((await request(`http://127.0.0.1:${port}/todo`)).status, 401);
    assert.equal(
      (await request(`http://127.0.0.1:${port}/todo`, { token: ALICE }))
        .status,
      200,
    );
  }
});

Deno.test("serve.ts: malformed tokens exit with code 2 and never echo the token", async () => {
  for (
    const args of [
      ["--token", "no-principal-here"],
      ["--token", "=alice"],
      ["--token", "secret-token-value="],
      ["--token", "with space=alice"],
      ["--token", `${ALICE}=alice`, "--token", `${ALICE}=bob`],
    ]
  ) {
    const { code, stderr } = await exitOf(args);
    assert.equal(code, 2, args.join(" "));
    assert.match(stderr, /Usage: /);
    assert.doesNotMatch(stderr, /secret-token-value|no-principal-here/);
    assert.doesNotMatch(stderr, new RegExp(ALICE));
  }
});

Deno.test("serve.ts: invalid flags print a message and exit with code 2", async () => {
  for (
    const args of [["--port", "abc"], ["--port", "70000"], ["--bogus"], [
      "extra",
    ]]
  ) {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", SERVE, ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(output.code, 2, args.join(" "));
    assert.match(new TextDecoder().decode(output.stderr), /Usage: /);
  }
});

Deno.test("serve.ts: prints its URL, serves the contract and stops on SIGINT", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SERVE, "--port", "0", "--db", ":memory:"],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let printed = "";
  while (!printed.includes("\n")) {
    const { done, value } = await lines.read();
    if (done) break;
    printed += value;
  }
  const url = printed.match(/Listening on (http:\/\/127\.0\.0\.1:\d+\/)/)?.[1];
  assert.ok(url !== undefined, printed);
  const health = await fetch(`${url}health`);
  assert.equal((await health.json()).status, "ok");
  const put = await fetch(`${url}todo/1`, { method: "PUT", body: "{}" });
  assert.equal(put.status, 201);
  await put.body?.cancel();
  child.kill("SIGINT");
  const status = await child.status;
  await lines.cancel();
  assert.equal(status.code, 0);
});

Deno.test("serve.ts: --kv serves on a KV file that a second process shares", async () => {
  const dir = await Deno.makeTempDir({ prefix: "serve-kv-" });
  try {
    await using first = await start(["--kv", `${dir}/sync.kv`]);
    await using second = await start(["--kv", `${dir}/sync.kv`]);
    const put = await request(`${first.url}todo/1`, {
      method: "PUT",
      body: "{}",
    });
    assert.equal(put.status, 201);
    const page = await request(`${second.url}todo`);
    assert.deepEqual(
      (page.body.items as { id: string }[]).map((item) => item.id),
      ["1"],
    );
    assert.equal((await exitOf(["--kv", ""])).code, 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
