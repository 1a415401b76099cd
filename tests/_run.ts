/**
 * `deno task test`: runs the whole suite (every test, the doc examples and
 * the README's code blocks) with Deno's dot reporter and prints it compactly,
 * so a green run fits on a screen: dots are packed into rows, everything else
 * (errors, failures, the summary, what tests print) passes through as is.
 * Arguments are passed on to `deno test` (`deno task test tests/x_test.ts`).
 * The exit code is `deno test`'s.
 *
 * @module
 */

const ROW = 100;
const args = Deno.args.length > 0 ? Deno.args : ["."];
const child = new Deno.Command(Deno.execPath(), {
  args: [
    "test",
    "--allow-all",
    "--doc",
    "--parallel",
    "--quiet",
    "--preload",
    "tests/_preload.ts",
    "--reporter=dot",
    // The tests' npm packages (zod, fast-check, ulid) stay out of the
    // library's lock file: the demo and the library download none.
    "--lock=tests/deno.lock",
    ...args,
  ],
  stdout: "piped",
  stderr: "inherit",
}).spawn();

const encoder = new TextEncoder();
let row = "";
let pending = "";
function flushRow(): void {
  if (row === "") return;
  Deno.stdout.writeSync(encoder.encode(row + "\n"));
  row = "";
}
function line(text: string): void {
  // Blank lines separate the dot reporter's marks: drop them inside a row.
  if (text === "" && row !== "") return;
  // The marks: "." passed, "," ignored, "!" failed.
  if (/^[.,!]+$/.test(text)) {
    row += text;
    while (row.length >= ROW) {
      Deno.stdout.writeSync(encoder.encode(row.slice(0, ROW) + "\n"));
      row = row.slice(ROW);
    }
    return;
  }
  flushRow();
  Deno.stdout.writeSync(encoder.encode(text + "\n"));
}
for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
  pending += chunk;
  const lines = pending.split("\n");
  pending = lines.pop()!;
  for (const text of lines) line(text);
}
if (pending !== "") line(pending);
flushRow();
Deno.exit((await child.status).code);
