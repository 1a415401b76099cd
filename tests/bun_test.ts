/**
 * Runs `tests/bun/smoke.ts` under Bun (installed from npm with npx), with the
 * package installed the way `bunx jsr add @offline-first/sync` installs it:
 * a folder under `node_modules/@offline-first/sync` with a `package.json`
 * whose `exports` mirror `deno.json`'s.
 *
 * @module
 */

import assert from "node:assert/strict";

const BUN = "bun@1.4.5";
const root = new URL("../", import.meta.url);

async function copyTree(from: URL, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const entry of Deno.readDir(from)) {
    const source = new URL(entry.name + (entry.isDirectory ? "/" : ""), from);
    if (entry.isDirectory) await copyTree(source, `${to}/${entry.name}`);
    else if (entry.name.endsWith(".ts")) {
      await Deno.copyFile(source, `${to}/${entry.name}`);
    }
  }
}

Deno.test("bun: two clients sync through the reference server on memory and SQLite storage", async () => {
  const config = JSON.parse(
    await Deno.readTextFile(new URL("deno.json", root)),
  );
  const dir = await Deno.makeTempDir({ prefix: "bun-smoke-" });
  try {
    const pkg = `${dir}/node_modules/@offline-first/sync`;
    for (const folder of ["src", "storage", "transport", "server"]) {
      await copyTree(new URL(`${folder}/`, root), `${pkg}/${folder}`);
    }
    await Deno.copyFile(new URL("mod.ts", root), `${pkg}/mod.ts`);
    await Deno.writeTextFile(
      `${pkg}/package.json`,
      JSON.stringify({
        name: config.name,
        version: config.version,
        type: "module",
        exports: config.exports,
      }),
    );
    await Deno.writeTextFile(
      `${dir}/package.json`,
      JSON.stringify({ type: "module" }),
    );
    await Deno.copyFile(new URL("tests/bun/smoke.ts", root), `${dir}/smoke.ts`);
    // Bun comes from the npm registry through npx: say so when it cannot.
    const npx = await new Deno.Command("npx", {
      args: ["-y", BUN, "--version"],
      stdout: "null",
      stderr: "piped",
    }).output().catch((error: unknown) => ({
      code: -1,
      stderr: new TextEncoder().encode(String(error)),
    }));
    assert.equal(
      npx.code,
      0,
      `Cannot run the Bun smoke test as \`npx -y ${BUN}\` failed (it needs Node.js with npm and the npm registry; .ci/run fetches it first): current value is ${
        new TextDecoder().decode(npx.stderr).slice(0, 500)
      }`,
    );
    const output = await new Deno.Command("npx", {
      args: ["-y", BUN, "run", "smoke.ts"],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    const stdout = new TextDecoder().decode(output.stdout);
    const stderr = new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 0, `bun failed:\n${stdout}\n${stderr}`);
    assert.match(stdout, /bun smoke memory: ok/);
    assert.match(stdout, /bun smoke sqlite: ok/);
    assert.match(stdout, /all ok on Bun 1\.4\.5/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
