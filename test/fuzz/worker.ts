// The in-process runner: one long-lived child process that runs CLI commands through the CLI's own
// `main` (no process start per case), one at a time, as the campaign's parent asks over IPC. The
// parent bounds each command's time and memory and replaces this process if it hangs, dies or
// grows too large; that is how a hang or a blow-up in-process is still seen and survived.
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { captureMain } from '../helpers/capture.js';

export const WORKER_PROTOCOL = 1;

export interface WorkerRequest { id: number; args: string[]; cwd?: string }
export interface WorkerReply { id: number; code: number | null; stdout: string; stderr: string; threw?: string; ms: number }

const KEEP = 64 * 1024;
const clip = (s: string): string => (s.length > 2 * KEEP ? `${s.slice(0, KEEP)}\n…[${s.length - 2 * KEEP} characters left out]…\n${s.slice(-KEEP)}` : s);

async function serve(): Promise<void> {
  const { main } = await import('../../src/app/cli/main.js');
  const home = process.cwd();
  let queue = Promise.resolve();
  process.on('message', (m: WorkerRequest) => {
    queue = queue.then(async () => {
      const t0 = performance.now();
      const r = await captureMain(async () => {
        process.chdir(m.cwd ?? home);
        return main(m.args);
      }, 4 * KEEP);
      const e = r.error;
      const threw = e === undefined ? undefined : e instanceof Error ? `${e.name}: ${e.message}\n${e.stack ?? ''}` : String(e);
      const { code, stdout, stderr } = r;
      const reply: WorkerReply = { id: m.id, code, stdout: clip(stdout), stderr: clip(stderr), ms: performance.now() - t0, ...(threw !== undefined ? { threw } : {}) };
      process.send!(reply);
    });
  });
  process.send!({ ready: WORKER_PROTOCOL });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url) && process.send) void serve();
