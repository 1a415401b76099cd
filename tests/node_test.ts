/**
 * Runs `tests/node/sync.ts` under Node 22 (from npm through npx; the
 * machine's Node may be older, without `node:sqlite`), straight from the
 * sources with `--experimental-strip-types`: the reference server on
 * `node:http` through `server/node.ts` over an SQLite server store, and two
 * client engines on `node:sqlite` storage syncing through it over HTTP until
 * they converge. Then, with the server still running under Node, the
 * backend conformance kit checks it from here.
 *
 * @module
 */

import assert from "node:assert/strict";
import { testBackend } from "../testing/backend.ts";
import { withTimeout } from "./_timeout.ts";

const NODE = "node@22";
const root = new URL("../", import.meta.url);

/** Reads a child's stdout line by line, without ever cancelling it. */
function lineReader(stream: ReadableStream<Uint8Array>): {
  next(): Promise<string | null>;
  drain(): Promise<string>;
} {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let ended = false;
  return {
    async next() {
      while (!buffer.includes("\n") && !ended) {
        const { value, done } = await reader.read();
        if (done) ended = true;
        else buffer += value;
      }
      if (buffer === "") return null;
      const newline = buffer.indexOf("\n");
      const line = newline < 0 ? buffer : buffer.slice(0, newline);
      buffer = newline < 0 ? "" : buffer.slice(newline + 1);
      return line;
    },
    async drain() {
      while (!ended) {
        const { value, done } = await reader.read();
        if (done) ended = true;
        else buffer += value;
      }
      return buffer;
    },
  };
}

Deno.test(
  "node: the server on node:http and two node:sqlite clients converge under Node 22; the kit passes against it",
  withTimeout(90_000, async () => {
    // Node 22 comes from the npm registry through npx: say so when it cannot.
    const version = await new Deno.Command("npx", {
      args: ["-y", NODE, "--version"],
      stdout: "piped",
      stderr: "piped",
    }).output().catch((error: unknown) => ({
      code: -1,
      stdout: new Uint8Array(),
      stderr: new TextEncoder().encode(String(error)),
    }));
    assert.equal(
      version.code,
      0,
      `Cannot run the Node test as \`npx -y ${NODE}\` failed (it needs Node.js with npm and the npm registry; .ci/run fetches it first): current value is ${
        new TextDecoder().decode(version.stderr).slice(0, 500)
      }`,
    );
    assert.match(new TextDecoder().decode(version.stdout), /^v22\./);

    const child = new Deno.Command("npx", {
      args: [
        "-y",
        NODE,
        "--experimental-strip-types",
        "--disable-warning=ExperimentalWarning",
        "tests/node/sync.ts",
        "--serve",
      ],
      cwd: root,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const stderr = new Response(child.stderr).text();
    const seen: string[] = [];
    const stdout = lineReader(child.stdout);
    let url: string | null = null;
    try {
      for (
        let line = await stdout.next();
        line !== null;
        line = await stdout.next()
      ) {
        seen.push(line);
        const match = /^node sync: serving (\S+)$/.exec(line);
        if (match !== null) {
          url = match[1]!;
          break;
        }
      }
      if (url === null) {
        assert.fail(
          `node exited before serving:\n${seen.join("\n")}\n${await stderr}`,
        );
      }
      assert.match(seen.join("\n"), /node sync: converged on Node v22\./);
      const started = performance.now();
      const result = await testBackend(url, {
        credentials: [
          { authorization: "Bearer node-smoke-alice-token" },
          { authorization: "Bearer node-smoke-bob-token-1" },
        ],
      });
      console.log(
        `backend kit against the server under Node: ${
          Math.round(performance.now() - started)
        } ms`,
      );
      assert.equal(
        result.ok,
        true,
        result.checks.map((c) => `${c.status} ${c.name}: ${c.message}`).join(
          "\n",
        ),
      );
      assert.equal(
        result.checks.find((check) => check.name === "tenancy")?.status,
        "pass",
      );
    } finally {
      await child.stdin.close().catch(() => {});
      await stdout.drain();
    }
    const status = await child.status;
    assert.equal(status.code, 0, `node failed:\n${await stderr}`);
  }),
);
