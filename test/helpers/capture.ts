// The CLI's `main` run in this process with stdout and stderr captured, and the signal handlers it
// installs taken off again (so an interrupt of the test worker or the fuzz worker is not caught by
// them). Shared by the tests' in-process runner and the fuzz worker.

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

export interface Captured { code: number | null; stdout: string; stderr: string; error?: unknown }

/** Runs `run` with output captured; at most `limit` characters of each stream are kept. */
export async function captureMain(run: () => Promise<number>, limit = Infinity): Promise<Captured> {
  const before = new Map(SIGNALS.map((s) => [s, new Set(process.listeners(s))]));
  const out = process.stdout.write, err = process.stderr.write;
  let stdout = '', stderr = '';
  const capture = (add: (s: string) => void) => ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    add(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
    const cb = rest.find((x) => typeof x === 'function') as (() => void) | undefined;
    cb?.();
    return true;
  }) as typeof process.stdout.write;
  process.stdout.write = capture((s) => void (stdout.length < limit && (stdout += s)));
  process.stderr.write = capture((s) => void (stderr.length < limit && (stderr += s)));
  try {
    return { code: await run(), stdout, stderr };
  } catch (error) {
    return { code: null, stdout, stderr, error };
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
    for (const s of SIGNALS) for (const l of process.listeners(s)) if (!before.get(s)!.has(l)) process.off(s, l as (...a: unknown[]) => void);
  }
}
