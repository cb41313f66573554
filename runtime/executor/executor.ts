import { CleaveError } from '../../src/core/errors.js';
import { PROGRAMS, instructionLabel, readsBoundary } from '../../src/core/plan/programs.js';
import type { HostPhases } from '../../src/core/plan/measured.js';
import type { Instruction, Plan } from '../../src/core/plan/types.js';
import type { Transport } from '../transport/transport.js';
import type { Backend, Feeds, OptimizerOptions } from './backend.js';
import type { StepProgress } from './progress.js';

export { instructionLabel };

/**
 * Blocks this thread for good, as a kernel stuck in a loop would: only terminating the thread ends
 * it. It sleeps in short waits rather than spinning, so that a test of it leaves the cores alone.
 */
function hang(): never {
  const cell = new Int32Array(new SharedArrayBuffer(4));
  for (;;) Atomics.wait(cell, 0, 0, 50);
}

/**
 * Interprets one rank's instruction list against a Backend. Everything is issued in list order;
 * compute waits only for the receives that carry its own inputs (receives are posted early where
 * channel order asks for it), all-reduces run in the background until the optimizer step. Any
 * failure becomes an error naming the rank and the instruction.
 */
export class Executor {
  private readonly list: Instruction[];
  /**
   * With `record` on, when each instruction of the last step ran: wall-clock ms (time origin plus
   * performance.now, comparable across worker threads), [start, end] by instruction index.
   * Background work (receives, all-reduces) spans its post to its completion.
   */
  record = false;
  readonly times: ([number, number] | undefined)[] = [];
  /** For each compute instruction: the receives (by tensor:mb key) whose tensors it reads. */
  private readonly needs: string[][];

  /** Where this rank is, published as it goes (the CPU run's watchdog reads it). */
  progress?: StepProgress;
  /** Tests: at this instruction the rank hangs in its compute, as a kernel that loops would (the watchdog's test). */
  hangAt?: number;

  constructor(readonly plan: Plan, readonly rank: number, private readonly backend: Backend, private readonly transport: Transport, public failAt?: number) {
    this.list = plan.ranks[rank]!.instructions;
    this.needs = this.list.map((ins, i) => (PROGRAMS[ins.kind]
      ? this.list.slice(0, i).filter((x) => x.kind === 'RECV' && x.mb === ins.mb && readsBoundary(plan, ins, x.tensor)).map((x) => `${x.tensor}:${x.mb}`)
      : []));
  }

  private fail(i: number, e: unknown): never {
    const ins = this.list[i]!;
    const why = e instanceof Error ? e.message : String(e);
    const message = `rank ${this.rank} failed at instruction ${i} (${instructionLabel(ins)}): ${why}`;
    if (e instanceof CleaveError || !(e instanceof Error)) throw new CleaveError(message);
    // Anything else is a bug, and stays one (with its stack) for the CLI to report as internal.
    const bug = new Error(message);
    bug.stack = `${message}\n${e.stack ?? ''}`;
    throw bug;
  }

  /**
   * With `phases` on, what the host did in the last training step (`trainStep`), wall-clock ms on
   * the clock of `times`: issuing the instructions, the optimizer step (its waits included), the
   * wait for the device, sharing the losses.
   */
  phases?: HostPhases;

  /** Runs everything but the optimizer step for one step; microbatch k reads `feeds[k]`. */
  async step(feeds: readonly Feeds[]): Promise<Map<number, number>> {
    try {
      await this.issue(feeds);
      await this.backend.drain?.();
      return await this.shareLosses();
    } finally {
      this.progress?.leave();
    }
  }

  /**
   * A whole training step: the instructions, then the optimizer step queued behind them without
   * waiting for the device in between (a device backend goes from the last backward straight to
   * the update), then the losses once the device is done.
   */
  async trainStep(feeds: readonly Feeds[], o: OptimizerOptions): Promise<{ losses: Map<number, number>; gradNorm: number }> {
    const phases: HostPhases[number][] = [];
    const phase = async <T>(name: string, p: () => Promise<T>): Promise<T> => {
      const start = performance.timeOrigin + performance.now();
      const x = await p();
      phases.push({ name, start, end: performance.timeOrigin + performance.now() });
      return x;
    };
    try {
      await phase('issue', () => this.issue(feeds));
      const { gradNorm } = await phase('optimizer', () => this.optimizerStep(o));
      await phase('wait for device', async () => this.backend.drain?.());
      const losses = await phase('losses', () => this.shareLosses());
      if (this.phases) this.phases = phases;
      return { losses, gradNorm };
    } finally {
      this.progress?.leave();
    }
  }

  /** Issues the step's instructions but the optimizer step, and waits for what runs in the background. */
  private async issue(feeds: readonly Feeds[]): Promise<void> {
    this.times.length = 0;
    const now = (): number => performance.timeOrigin + performance.now();
    const timed = <T>(i: number, p: Promise<T>): Promise<T> => {
      if (!this.record) return p;
      const t0 = now();
      return p.then((x) => {
        this.times[i] = [t0, now()];
        return x;
      });
    };
    this.backend.beginStep(feeds);
    const recvs = new Map<string, Promise<void>>();
    const background: Promise<void>[] = [];
    for (let i = 0; i < this.list.length; i++) {
      const ins = this.list[i]!;
      if (ins.kind === 'OPTIMIZER_STEP') continue;
      this.progress?.at(i);
      if (i === this.failAt) this.fail(i, new Error('injected failure'));
      try {
        switch (ins.kind) {
          case 'RECV': {
            const p = timed(i, this.backend.recv(ins)).catch((e) => this.fail(i, e));
            p.catch(() => undefined); // awaited below or by its reader; never an unhandled rejection
            recvs.set(`${ins.tensor}:${ins.mb}`, p);
            background.push(p);
            break;
          }
          case 'SEND': await timed(i, this.backend.send(ins)); break;
          case 'ALLREDUCE': {
            const p = timed(i, this.backend.allreduce(ins)).catch((e) => this.fail(i, e));
            p.catch(() => undefined);
            background.push(p);
            break;
          }
          default: {
            await Promise.all(this.needs[i]!.map((k) => recvs.get(k)));
            const f = feeds[ins.mb];
            if (!f) throw new CleaveError(`no data for microbatch ${ins.mb}`);
            this.progress?.at(i);
            if (i === this.hangAt) hang();
            await timed(i, this.backend.compute(ins, f));
          }
        }
      } catch (e) {
        if (e instanceof CleaveError && e.message.startsWith(`rank ${this.rank} failed`)) throw e;
        this.fail(i, e);
      }
    }
    await Promise.all(background);
  }

  /** Every rank of a pipeline gets the losses its last stage computed (SMP returns step outputs everywhere). */
  private async shareLosses(): Promise<Map<number, number>> {
    const me = this.plan.ranks[this.rank]!;
    const lastStage = this.plan.stages[this.plan.stages.length - 1]!;
    const owner = this.plan.ranks.find((r) => r.ppRank === lastStage.ppRank && r.dpRank === me.dpRank)!.rank;
    const m = this.plan.schedule.microbatches;
    if (owner === this.rank) {
      const l = this.backend.losses();
      const arr = Float64Array.from({ length: m }, (_, k) => l.get(k) ?? NaN);
      for (const r of this.plan.ranks) if (r.dpRank === me.dpRank && r.rank !== this.rank) this.transport.send(r.rank, 'losses', arr);
      return l;
    }
    const arr = (await this.transport.recv(owner, 'losses')) as Float64Array;
    return new Map(Array.from(arr, (x, k) => [k, x]));
  }

  async optimizerStep(o: OptimizerOptions): Promise<{ gradNorm: number }> {
    const i = this.list.findIndex((x) => x.kind === 'OPTIMIZER_STEP');
    this.progress?.at(i);
    if (i === this.failAt) this.fail(i, new Error('injected failure'));
    try {
      const t0 = performance.timeOrigin + performance.now();
      const r = await this.backend.optimizerStep(o);
      if (this.record && i >= 0) this.times[i] = [t0, performance.timeOrigin + performance.now()];
      return r;
    } catch (e) {
      this.fail(i, e);
    }
  }
}
