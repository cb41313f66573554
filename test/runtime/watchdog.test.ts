// The watchdog of CPU runs: a rank stuck in its compute (its thread blocked, as by a kernel that
// loops) can stop nothing by itself and its receives' timeouts cannot fire; the launcher sees its
// heartbeat stop and ends the run after --timeout, naming the rank, the step and the instruction,
// while the ranks waiting on it do not time out first and blame the wrong one.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compile } from '../../compiler/compile.js';
import { instructionLabel } from '../../runtime/executor/executor.js';
import { BUSY_MS, ProgressBoard } from '../../runtime/executor/progress.js';
import { runPlanCpu } from '../../runtime/launch/cpu.js';
import type { RunOptions } from '../../runtime/launch/options.js';
import { readPlan, writePlan } from '../../src/core/plan/io.js';
import type { Plan } from '../../src/core/plan/types.js';
import { fixturePath } from '../helpers/fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'cleave-watchdog-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function planFile(name: string, partitions: number): { file: string; plan: Plan } {
  const file = join(dir, `${name}.plan`);
  writePlan(file, compile({ model: fixturePath('gpt'), loss: 'auto', partitions, microbatches: 2, schedule: '1f1b', batch: 2 }).plan);
  return { file, plan: readPlan(file) };
}
const PP2 = planFile('pp2', 2), PP1 = planFile('pp1', 1);
const opts = (file: string, o: Partial<RunOptions>): RunOptions => ({ planFile: file, data: { kind: 'default' }, steps: 3, optimizer: { kind: 'adamw', lr: 1e-3 }, timeoutSeconds: 1, ...o });
const forward = (plan: Plan, rank: number, k = 0): number => plan.ranks[rank]!.instructions.map((ins, i) => [ins, i] as const).filter(([ins]) => ins.kind === 'FORWARD')[k]![1];
const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('a rank stuck in its compute', () => {
  for (const rank of [1, 0]) {
    it(`rank ${rank} of pp 2: the run stops after --timeout, naming it, the step and the instruction (not a rank waiting on it)`, async () => {
      const i = forward(PP2.plan, rank, 1);
      const label = instructionLabel(PP2.plan.ranks[rank]!.instructions[i]!);
      const t0 = Date.now();
      await expect(runPlanCpu(opts(PP2.file, { failAt: { rank, step: 2, instruction: i, hang: true } })))
        .rejects.toThrow(new RegExp(`^rank ${rank}: no progress for 1 s in ${escape(label)} \\(instruction ${i} of step 2\\); stopped \\(--timeout 1\\)$`));
      expect(Date.now() - t0).toBeLessThan(10_000);
    }, 20_000);
  }

  it('a one-rank run, which waits for no one: stopped the same way', async () => {
    const i = forward(PP1.plan, 0);
    const t0 = Date.now();
    await expect(runPlanCpu(opts(PP1.file, { failAt: { rank: 0, step: 1, instruction: i, hang: true } })))
      .rejects.toThrow(`rank 0: no progress for 1 s in ${instructionLabel(PP1.plan.ranks[0]!.instructions[i]!)} (instruction ${i} of step 1); stopped`);
    expect(Date.now() - t0).toBeLessThan(10_000);
  }, 20_000);

  it('leaves a run alone that waits between steps or computes in time', async () => {
    // 3 steps of 1 s limit: every instruction's compute takes milliseconds.
    const r = await runPlanCpu(opts(PP2.file, { steps: 3 }));
    expect(r.steps.map((s) => s.step)).toEqual([1, 2, 3]);
  }, 20_000);
});

describe('the progress board', () => {
  it('says where a rank is and how long its thread has been quiet; only a quiet rank inside a step is busy', async () => {
    const board = ProgressBoard.create(2);
    expect(board.read(0)).toMatchObject({ step: 0, instruction: -1, inStep: false });
    board.at(1, 4, 7);
    expect(board.read(1)).toMatchObject({ step: 4, instruction: 7, inStep: true });
    expect(board.read(1).quietMs).toBeLessThan(BUSY_MS);
    expect(board.someoneBusy()).toBe(false);
    await new Promise((r) => setTimeout(r, BUSY_MS + 50));
    expect(board.someoneBusy()).toBe(true);
    board.leave(1);
    expect(board.someoneBusy()).toBe(false);
    // Another thread's view of the same memory.
    const seen = new ProgressBoard(board.buffer, board.epoch);
    board.at(0, 2, 3);
    expect(seen.read(0)).toMatchObject({ step: 2, instruction: 3, inStep: true });
  });
});
