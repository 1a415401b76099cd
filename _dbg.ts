const child = new Deno.Command("npx", {
  args: ["-y","node@22","--experimental-strip-types","--disable-warning=ExperimentalWarning","tests/node/sync.ts","--serve"],
  stdin: "piped", stdout: "piped", stderr: "inherit",
}).spawn();
const t = performance.now();
for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) { console.log(Math.round(performance.now()-t), JSON.stringify(chunk)); if (chunk.includes("serving")) break; }
await child.stdin.close();
console.log(await child.status);
