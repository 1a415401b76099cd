/**
 * Loaded before every test module (`deno test --preload`): gives every test a
 * timeout, so a hang fails in seconds instead of stalling CI. The default is
 * {@linkcode DEFAULT_TIMEOUT_MS}, or `TEST_TIMEOUT_MS` from the environment;
 * a test that needs longer wraps its function with `withTimeout()` from
 * `tests/_timeout.ts`.
 *
 * @module
 */

import { DEFAULT_TIMEOUT_MS, TIMEOUT } from "./_timeout.ts";

type TestFn = (t: Deno.TestContext) => void | Promise<void>;
type Timed = TestFn & { [TIMEOUT]?: number };

const envAllowed =
  Deno.permissions.querySync({ name: "env", variable: "TEST_TIMEOUT_MS" })
    .state === "granted";
const fromEnv = envAllowed ? Number(Deno.env.get("TEST_TIMEOUT_MS")) : NaN;
const fallback = Number.isFinite(fromEnv) && fromEnv > 0
  ? fromEnv
  : DEFAULT_TIMEOUT_MS;

function timed(fn: Timed, name: string): TestFn {
  const ms = fn[TIMEOUT] ?? fallback;
  const wrapped = async function (t: Deno.TestContext): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new Error(
              `Test timed out: "${name}" did not finish within ${ms} ms`,
            ),
          ),
        ms,
      );
    });
    try {
      await Promise.race([Promise.resolve().then(() => fn(t)), timeout]);
    } finally {
      clearTimeout(timer);
    }
  };
  Object.defineProperty(wrapped, "name", { value: fn.name });
  return wrapped;
}

function wrapArgs(args: unknown[]): unknown[] {
  const last = args.length - 1;
  if (typeof args[last] === "function") {
    const fn = args[last] as Timed;
    const first = args[0];
    const name = typeof first === "string"
      ? first
      : (first as { name?: string })?.name ?? fn.name;
    return [...args.slice(0, last), timed(fn, name)];
  }
  const definition = args[0] as Deno.TestDefinition;
  return [{ ...definition, fn: timed(definition.fn, definition.name) }];
}

const original = Deno.test;
function test(...args: unknown[]): void {
  return (original as (...a: unknown[]) => void)(...wrapArgs(args));
}
test.ignore = (...args: unknown[]): void =>
  (original.ignore as (...a: unknown[]) => void)(...wrapArgs(args));
test.only = (...args: unknown[]): void =>
  (original.only as (...a: unknown[]) => void)(...wrapArgs(args));
Object.defineProperty(Deno, "test", { value: test, configurable: true });
