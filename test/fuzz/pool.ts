// The parent's side of the in-process runner (worker.ts): one child at a time, each command bounded
// in time and memory; a child that hangs, dies or grows past the bound is killed, the command is
// reported as such, and the next command gets a fresh child.
import { type ChildProcess, fork } from 'node:child_process';
import { join } from 'node:path';
import { type Bounds, repoRoot, rssMb } from './exec.js';
import type { RunRecord } from './oracle.js';
import { WORKER_PROTOCOL, type WorkerReply, type WorkerRequest } from './worker.js';

/** The compiled worker: the campaign's in-process runs use the build in dist/, as the CLI does. */
export const workerScript = (): string => join(repoRoot(), 'dist', 'test', 'fuzz', 'worker.js');

export class WorkerPool {
  private child: ChildProcess | undefined;
  private ready: Promise<void> | undefined;
  private stderr = '';
  private nextId = 1;
  /** Children started (1 + how many were replaced after a hang, a death or a blow-up). */
  starts = 0;

  constructor(private readonly bounds: Bounds) {}

  private start(): Promise<void> {
    this.starts++;
    this.stderr = '';
    const child = fork(workerScript(), [], {
      execArgv: [`--max-old-space-size=${this.bounds.heapMb}`], stdio: ['ignore', 'ignore', 'pipe', 'ipc'], serialization: 'advanced',
      env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' },
    });
    child.stderr!.on('data', (b: Buffer) => { if (this.stderr.length < 65536) this.stderr += b.toString('utf8'); });
    this.child = child;
    return new Promise((resolve, reject) => {
      const onMsg = (m: { ready?: number }): void => {
        if (m.ready !== WORKER_PROTOCOL) return;
        child.off('message', onMsg);
        resolve();
      };
      child.on('message', onMsg);
      child.once('exit', (code) => reject(new Error(`fuzz worker ${workerScript()} exited (${code}) before it was ready: ${this.stderr}`)));
    });
  }

  /** Runs `cleave ARGS` in the worker; a hang, a death or a blow-up comes back as such. */
  async run(args: readonly string[], timeoutMs: number, cwd?: string): Promise<RunRecord & { ms: number; peakRssMb: number }> {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) this.ready = this.start();
    await this.ready;
    const child = this.child!;
    const id = this.nextId++;
    const t0 = performance.now();
    this.stderr = '';
    return new Promise((resolve) => {
      let peak = 0, done = false;
      const finish = (r: RunRecord): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        clearInterval(poll);
        child.off('message', onMsg);
        child.off('exit', onExit);
        resolve({ ...r, ms: performance.now() - t0, peakRssMb: Math.round(peak) });
      };
      const kill = (): void => { child.kill('SIGKILL'); this.child = undefined; };
      const onMsg = (m: WorkerReply): void => {
        if (m.id !== id) return;
        finish({ code: m.code, stdout: m.stdout, stderr: m.stderr, ...(m.threw !== undefined ? { threw: m.threw } : {}) });
      };
      const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
        this.child = undefined;
        finish({ code, signal, stdout: '', stderr: this.stderr });
      };
      const timer = setTimeout(() => { kill(); finish({ code: null, stdout: '', stderr: this.stderr, timedOut: true }); }, timeoutMs);
      const poll = setInterval(() => {
        const r = rssMb(child.pid!);
        peak = Math.max(peak, r);
        if (r > this.bounds.maxRssMb) { kill(); finish({ code: null, stdout: '', stderr: this.stderr, rssKilled: true }); }
      }, 50);
      child.on('message', onMsg);
      child.on('exit', onExit);
      const req: WorkerRequest = { id, args: [...args], ...(cwd ? { cwd } : {}) };
      child.send(req);
    });
  }

  close(): void {
    this.child?.kill('SIGKILL');
    this.child = undefined;
  }
}
