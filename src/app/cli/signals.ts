/**
 * Ctrl-C and SIGTERM (Slurm, torchrun, a user's `kill`) end a command cleanly: each registered
 * handler runs — progress bars give back the cursor and line wrapping, runs stop their ranks and
 * say where they got to — then the process exits with 128 + the signal's number, as shells expect.
 * A second signal while the handlers run exits at once.
 */
type Handler = (signal: NodeJS.Signals) => void | Promise<void>;

const handlers = new Set<Handler>();
let installed = false;
let stopping = false;

const CODES: Partial<Record<NodeJS.Signals, number>> = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 };

/** Runs `fn` if the process is interrupted before the returned function is called. */
export function onInterrupt(fn: Handler): () => void {
  handlers.add(fn);
  return () => handlers.delete(fn);
}

async function interrupted(signal: NodeJS.Signals): Promise<void> {
  const code = CODES[signal] ?? 1;
  if (stopping) process.exit(code);
  stopping = true;
  // The newest handler first: a run's report comes after its progress bar is gone.
  for (const h of [...handlers].reverse()) {
    try {
      await h(signal);
    } catch {
      // Stopping must not fail on the way out; the exit code says it was interrupted.
    }
  }
  process.exit(code);
}

/** Installs the handlers once per process (the CLI's entry does it). */
export function installSignalHandlers(): void {
  if (installed) return;
  installed = true;
  for (const s of Object.keys(CODES) as NodeJS.Signals[]) process.on(s, (sig: NodeJS.Signals) => void interrupted(sig));
}
