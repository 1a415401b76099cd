/**
 * Keeps `bench/server_scale.ts` from rotting: runs it once at a tiny size
 * (`BENCH_SCALE=tiny`: a second per phase, 4 clients apart and shared) on
 * every setup, real server processes included. The Postgres rows are left
 * out, with the reason printed, when no Postgres answers at `DATABASE_URL`,
 * unless `CI_REQUIRE_POSTGRES=1`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { DATABASE_URL, ignorePostgres, REQUIRE_POSTGRES } from "./_postgres.ts";
import { withTimeout } from "./_timeout.ts";

const root = new URL("../", import.meta.url);
const noPostgres = await ignorePostgres();

Deno.test(
  "bench: server_scale.ts runs once at a tiny size on every setup",
  withTimeout(90_000, async () => {
    const json = await Deno.makeTempFile({ suffix: ".json" });
    try {
      const output = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "--lock=bench/deno.lock",
          "bench/server_scale.ts",
          "--json",
          json,
          ...(noPostgres ? ["--no-postgres"] : []),
          ...(REQUIRE_POSTGRES ? ["--require-postgres"] : []),
        ],
        cwd: root,
        env: { BENCH_SCALE: "tiny", NO_COLOR: "1", DATABASE_URL },
        stdout: "piped",
        stderr: "piped",
        // Bounded: the child is killed before the test's own timeout.
        signal: AbortSignal.timeout(85_000),
      }).output();
      const text = new TextDecoder().decode(output.stdout) +
        new TextDecoder().decode(output.stderr);
      assert.equal(output.code, 0, text);
      assert.match(text, /\| setup +\| clients \| principals \| +ops\/s \|/);
      assert.match(text, /\| setup +\| clients \| principals \| records\/s \|/);
      const rows = JSON.parse(await Deno.readTextFile(json)) as {
        setup: string;
        shared: boolean;
        pushOpsPerSecond: number;
        pullRecordsPerSecond: number;
      }[];
      const setups = new Set(rows.map((row) => row.setup));
      assert.equal(setups.size, noPostgres ? 4 : 7, [...setups].join(", "));
      assert.equal(rows.filter((row) => row.shared).length, setups.size);
      for (const row of rows) {
        assert.ok(row.pushOpsPerSecond > 0, `${row.setup} pushed`);
        assert.ok(row.pullRecordsPerSecond > 0, `${row.setup} pulled`);
      }
    } finally {
      await Deno.remove(json).catch(() => {});
    }
  }),
);
