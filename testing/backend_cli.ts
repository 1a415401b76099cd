/**
 * `deno task conformance`: runs the backend conformance kit
 * (`testing/backend.ts`) against a server at a URL and prints one line per
 * check; the exit code is 1 when any check failed, 2 for bad arguments.
 *
 * ```sh
 * deno task conformance http://127.0.0.1:8787 [--token A --token B] \
 *   [--check paging --check tenancy] [--timeout 20000]
 * ```
 *
 * Each `--token` is one principal's bearer token (`Authorization: Bearer
 * <token>`); with two, the tenancy check runs. `--header "Name: value"`
 * adds a header to every principal's requests instead of, or with, tokens.
 *
 * @module
 */

import {
  BACKEND_CHECKS,
  type BackendCheckName,
  testBackend,
  type TestBackendOptions,
} from "./backend.ts";

/** A problem with the command line. */
class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

const USAGE =
  "Usage: deno task conformance URL [--token A --token B] [--header 'Name: value'] [--check NAME]... [--timeout MS]";

interface Arguments {
  url: string;
  options: TestBackendOptions;
}

function parse(args: readonly string[]): Arguments {
  const tokens: string[] = [];
  const headers: Record<string, string> = {};
  const checks: BackendCheckName[] = [];
  let url: string | undefined;
  let timeoutMs: number | undefined;
  for (let index = 0; index < args.length; index++) {
    const arg = args[index]!;
    if (!arg.startsWith("--")) {
      if (url !== undefined) {
        throw new UsageError(
          `Cannot take a second URL: current value is ${JSON.stringify(arg)}`,
        );
      }
      url = arg;
      continue;
    }
    const value = args[++index];
    if (value === undefined) {
      throw new UsageError(`Cannot read ${arg} as it has no value`);
    }
    if (arg === "--token") tokens.push(value);
    else if (arg === "--header") {
      const colon = value.indexOf(":");
      if (colon <= 0) {
        throw new UsageError(
          `Cannot read --header as it is "Name: value": current value is ${
            JSON.stringify(value)
          }`,
        );
      }
      headers[value.slice(0, colon).trim().toLowerCase()] = value.slice(
        colon + 1,
      ).trim();
    } else if (arg === "--check") {
      if (!BACKEND_CHECKS.includes(value as BackendCheckName)) {
        throw new UsageError(
          `Cannot run the check as it is not one of ${
            BACKEND_CHECKS.join(", ")
          }: current value is ${JSON.stringify(value)}`,
        );
      }
      checks.push(value as BackendCheckName);
    } else if (arg === "--timeout") {
      timeoutMs = Number(value);
      if (!Number.isSafeInteger(timeoutMs) || timeoutMs <= 0) {
        throw new UsageError(
          `Cannot read --timeout as it is a positive integer (ms): current value is ${value}`,
        );
      }
    } else {
      throw new UsageError(
        `Cannot read the option as it is unknown: current value is ${arg}`,
      );
    }
  }
  if (url === undefined) throw new UsageError("Cannot run without a URL");
  if (tokens.length > 2) {
    throw new UsageError(
      `Cannot use more than two --token: current value is ${tokens.length}`,
    );
  }
  const credentials = tokens.length === 0
    ? (Object.keys(headers).length === 0 ? [] : [headers])
    : tokens.map((token) => ({ ...headers, authorization: `Bearer ${token}` }));
  const options: TestBackendOptions = {
    credentials,
    ...(checks.length === 0 ? {} : { checks }),
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
  };
  return { url, options };
}

/**
 * Runs the kit from command-line arguments and prints one line per check.
 *
 * @param args The arguments (`Deno.args`).
 * @param print Where lines go.
 * @returns The exit code: 0 when no check failed, 1 when one did, 2 for bad
 * arguments.
 */
export async function runConformanceCli(
  args: readonly string[],
  print: (line: string) => void = console.log,
): Promise<number> {
  let parsed: Arguments;
  try {
    parsed = parse(args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    print(error.message);
    print(USAGE);
    return 2;
  }
  const result = await testBackend(parsed.url, parsed.options);
  const width = Math.max(...BACKEND_CHECKS.map((name) => name.length));
  for (const check of result.checks) {
    const label = { pass: "ok  ", fail: "FAIL", skip: "skip" }[check.status];
    const note = check.message === "" ? "" : `  ${check.message}`;
    print(
      `${label} ${check.name.padEnd(width)} ${
        String(check.durationMs).padStart(5)
      } ms${note}`,
    );
  }
  const failed = result.checks.filter((check) => check.status === "fail");
  print(
    failed.length === 0
      ? `all checks passed against ${parsed.url}`
      : `${failed.length} of ${result.checks.length} checks failed against ${parsed.url}`,
  );
  return failed.length === 0 ? 0 : 1;
}

if (import.meta.main) Deno.exit(await runConformanceCli(Deno.args));
