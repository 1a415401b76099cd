/**
 * The published source type-checks in a consumer project that keeps the
 * compiler's defaults (no `exactOptionalPropertyTypes`, no
 * `noUncheckedIndexedAccess`), not only under this repository's stricter
 * settings.
 *
 * @module
 */

import assert from "node:assert/strict";
import { withTimeout } from "./_timeout.ts";

const ROOT = new URL("../", import.meta.url);

Deno.test(
  "package: every export type-checks in a consumer with default compiler options",
  withTimeout(120_000, async () => {
    const config = JSON.parse(
      await Deno.readTextFile(new URL("deno.json", ROOT)),
    ) as { name: string; exports: Record<string, string> };
    const dir = await Deno.makeTempDir({ prefix: "consumer-" });
    try {
      const imports: Record<string, string> = {};
      const lines: string[] = [];
      for (const [key, path] of Object.entries(config.exports)) {
        const name = key === "."
          ? config.name
          : `${config.name}${key.slice(1)}`;
        imports[name] = new URL(path, ROOT).href;
        lines.push(`export * as m${lines.length} from "${name}";`);
      }
      await Deno.writeTextFile(
        `${dir}/deno.json`,
        JSON.stringify({ imports, unstable: ["kv"] }),
      );
      await Deno.writeTextFile(`${dir}/main.ts`, lines.join("\n") + "\n");
      const { code, stderr } = await new Deno.Command(Deno.execPath(), {
        args: ["check", "--quiet", "main.ts"],
        cwd: dir,
        env: { NO_COLOR: "1" },
        stdout: "null",
        stderr: "piped",
      }).output();
      assert.equal(code, 0, new TextDecoder().decode(stderr));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }),
);
