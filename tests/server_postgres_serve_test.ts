/**
 * `deno task serve --postgres URL` as real processes, with the task's own
 * permissions: two of them on one database serve one set of records, the
 * schema is taken from `--postgres-schema`, and bad flags exit with code 2.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  DATABASE_URL,
  dropSchema,
  freshSchema,
  ignorePostgres,
} from "./_postgres.ts";
import { withTimeout } from "./_timeout.ts";

const IGNORE_POSTGRES = await ignorePostgres();
const SERVE = new URL("../server/serve.ts", import.meta.url).pathname;
/** The permissions of `deno task serve` (deno.json). */
const TASK_PERMISSIONS = (() => {
  const config = JSON.parse(
    Deno.readTextFileSync(new URL("../deno.json", import.meta.url)),
  ) as { tasks: { serve: string } };
  return config.tasks.serve.split(" ").filter((word) =>
    word.startsWith("--allow-")
  );
})();

/** Starts serve.ts; resolves with its URL once it listens. */
async function start(
  args: string[],
): Promise<{ url: string; stop: () => Promise<number> }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...TASK_PERMISSIONS, SERVE, "--port", "0", ...args],
    env: { SYNC_TOKENS: "" },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let printed = "";
  while (!/Auth: .*\n/.test(printed)) {
    const { done, value } = await lines.read();
    if (done) break;
    printed += value;
  }
  const stop = async (): Promise<number> => {
    try {
      child.kill("SIGINT");
    } catch {
      // Already gone.
    }
    const status = await child.status;
    await lines.cancel();
    return status.code;
  };
  const url = printed.match(/Listening on (http:\/\/\S+:\d+\/)/)?.[1];
  if (url === undefined) {
    await stop();
    throw new Error(`Cannot start serve.ts: it printed ${printed}`);
  }
  return { url, stop };
}

Deno.test({
  name:
    "postgres: deno task serve --postgres URL serves one database from two processes",
  ignore: IGNORE_POSTGRES,
  fn: withTimeout(60_000, async () => {
    const schema = freshSchema();
    const args = ["--postgres", DATABASE_URL, "--postgres-schema", schema];
    const [first, second] = await Promise.all([start(args), start(args)]);
    try {
      const put = await fetch(`${first.url}todo/1`, {
        method: "PUT",
        body: "{}",
      });
      await put.body?.cancel();
      assert.equal(put.status, 201);
      const page = await (await fetch(`${second.url}todo`)).json() as {
        items: { id: string }[];
      };
      assert.deepEqual(page.items.map((item) => item.id), ["1"]);
    } finally {
      assert.equal(await first.stop(), 0);
      assert.equal(await second.stop(), 0);
      await dropSchema(schema);
    }
  }),
});

Deno.test("serve.ts: bad --postgres flags exit with code 2", async () => {
  for (
    const args of [
      ["--postgres", "postgres://x/y", "--kv", "a.kv"],
      ["--postgres-schema", "s"],
    ]
  ) {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", ...TASK_PERMISSIONS, SERVE, "--port", "0", ...args],
      env: { SYNC_TOKENS: "" },
      stdout: "null",
      stderr: "piped",
      signal: AbortSignal.timeout(10_000),
    }).output();
    assert.equal(output.code, 2, args.join(" "));
  }
});
