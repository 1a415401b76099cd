/**
 * Starts a Deno script as a real process and waits for it to print the URL
 * it listens on (`Listening on http://...`), for tests of the examples and
 * CLIs. Every wait is bounded; `stop()` sends a signal, and SIGKILL when the
 * process outlives the grace period.
 *
 * @module
 */

/** A running script. */
export interface Running extends AsyncDisposable {
  readonly child: Deno.ChildProcess;
  /** The URL it printed, without the trailing `/`. */
  readonly url: string;
  /** Everything it printed on stdout so far. */
  output(): string;
  /** Stops it (SIGTERM, then SIGKILL after 5 s) and returns the exit code. */
  stop(signal?: Deno.Signal): Promise<number>;
}

/** Options of {@linkcode startScript}. */
export interface StartOptions {
  readonly args?: readonly string[];
  readonly denoArgs?: readonly string[];
  readonly env?: Record<string, string>;
  /** How long to wait for the URL. @default {20000} */
  readonly timeoutMs?: number;
}

/**
 * Runs `deno run -A [denoArgs] script [args]` and waits for its URL.
 *
 * @throws {Error} When it exits or stays silent past the timeout.
 */
export async function startScript(
  script: URL,
  options: StartOptions = {},
): Promise<Running> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      ...(options.denoArgs ?? []),
      script.pathname,
      ...(options.args ?? []),
    ],
    env: options.env ?? {},
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let printed = "";
  let errors = "";
  const drain = async (
    stream: ReadableStream<Uint8Array>,
    sink: (text: string) => void,
  ) => {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      sink(text);
    }
  };
  const drained = Promise.all([
    drain(child.stdout, (text) => printed += text),
    drain(child.stderr, (text) => errors += text),
  ]).catch(() => {});
  let stopped: Promise<number> | null = null;
  const stop = (signal: Deno.Signal = "SIGTERM"): Promise<number> => {
    stopped ??= (async () => {
      try {
        child.kill(signal);
      } catch {
        // Exited already.
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const killed = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          try {
            child.kill("SIGKILL");
          } catch {
            // Exited meanwhile.
          }
          resolve();
        }, 5_000);
      });
      const status = await Promise.race([
        child.status,
        killed.then(() => child.status),
      ]);
      clearTimeout(timer);
      await drained;
      return status.code;
    })();
    return stopped;
  };
  const deadline = Date.now() + (options.timeoutMs ?? 20_000);
  let exited = false;
  child.status.then(() => exited = true);
  while (!/Listening on (http:\/\/\S+:\d+)\//.test(printed)) {
    if (exited || Date.now() > deadline) {
      await stop("SIGKILL");
      throw new Error(
        `Cannot start ${script.pathname}: it printed ${
          JSON.stringify(printed)
        } and ${JSON.stringify(errors.slice(-2000))}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const url = printed.match(/Listening on (http:\/\/\S+:\d+)\//)![1]!;
  return {
    child,
    url: url.replace("0.0.0.0", "127.0.0.1"),
    output: () => printed + errors,
    stop,
    [Symbol.asyncDispose]: () => stop().then(() => {}),
  };
}

/** Polls `check` every 25 ms until it returns a value other than undefined. */
export async function eventually<T>(
  check: () => Promise<T | undefined> | T | undefined,
  timeoutMs: number,
  what: string,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = null;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`, {
    cause: last,
  });
}
