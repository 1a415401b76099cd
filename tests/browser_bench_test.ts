/**
 * Keeps `bench/browser.ts` (the engine on IndexedDB in Chromium against raw
 * IndexedDB writes) from rotting: runs it once at the tiny size and checks
 * that it reports every group with a ratio.
 *
 * @module
 */

import assert from "node:assert/strict";
import { requireChromium } from "./_browser.ts";
import { withTimeout } from "./_timeout.ts";

Deno.test(
  "bench: browser.ts runs once at a tiny size in Chromium",
  withTimeout(120_000, async () => {
    await requireChromium();
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--lock=bench/deno.lock", "bench/browser.ts"],
      cwd: new URL("..", import.meta.url).pathname,
      env: { BENCH_SCALE: "tiny" },
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(110_000),
    }).output();
    const stdout = new TextDecoder().decode(output.stdout);
    assert.ok(output.success, new TextDecoder().decode(output.stderr));
    for (const group of ["enqueue:", "bulk:", "pull over HTTP"]) {
      assert.match(
        stdout,
        new RegExp(`${group}[^\\n]*\\n[^\\n]*ours ÷ baseline \\d`),
      );
    }
  }),
);
