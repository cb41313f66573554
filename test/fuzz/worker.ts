// The in-process runner: one long-lived child process that runs CLI commands through the CLI's own
// `main` (no process start per case), one at a time, as the campaign's parent asks over IPC. The
// parent bounds each command's time and memory and replaces this process if it hangs, dies or
// grows too large; that is how a hang or a blow-up in-process is still seen and survived.
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const WORKER_PROTOCOL = 1;

export interface WorkerRequest { id: number; args: string[]; cwd?: string }
export interface WorkerReply { id: number; code: number | null; stdout: string; stderr: string; threw?: string; ms: number }

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
const KEEP = 64 * 1024;
const clip = (s: string): string => (s.length > 2 * KEEP ? `${s.slice(0, KEEP)}\n…[${s.length - 2 * KEEP} characters left out]…\n${s.slice(-KEEP)}` : s);

async function serve(): Promise<void> {
  const { main } = await import('../../src/cli/main.js');
  const out = process.stdout.write.bind(process.stdout), err = process.stderr.write.bind(process.stderr);
  const home = process.cwd();
  let queue = Promise.resolve();
  process.on('message', (m: WorkerRequest) => {
    queue = queue.then(async () => {
      const before = new Map(SIGNALS.map((s) => [s, new Set(process.listeners(s))]));
      let stdout = '', stderr = '';
      const capture = (add: (s: string) => void) => ((chunk: string | Uint8Array, ...rest: unknown[]) => {
        add(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
        const cb = rest.find((x) => typeof x === 'function') as (() => void) | undefined;
        cb?.();
        return true;
      }) as typeof process.stdout.write;
      process.stdout.write = capture((s) => void (stdout.length < 4 * KEEP && (stdout += s)));
      process.stderr.write = capture((s) => void (stderr.length < 4 * KEEP && (stderr += s)));
      const t0 = performance.now();
      let code: number | null = null, threw: string | undefined;
      try {
        process.chdir(m.cwd ?? home);
        code = await main(m.args);
      } catch (e) {
        threw = e instanceof Error ? `${e.name}: ${e.message}\n${e.stack ?? ''}` : String(e);
      } finally {
        process.stdout.write = out;
        process.stderr.write = err;
        for (const s of SIGNALS) for (const l of process.listeners(s)) if (!before.get(s)!.has(l)) process.off(s, l as (...a: unknown[]) => void);
      }
      const reply: WorkerReply = { id: m.id, code, stdout: clip(stdout), stderr: clip(stderr), ms: performance.now() - t0, ...(threw !== undefined ? { threw } : {}) };
      process.send!(reply);
    });
  });
  process.send!({ ready: WORKER_PROTOCOL });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url) && process.send) void serve();
