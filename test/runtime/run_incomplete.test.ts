// A run ends as a success only when every rank finished every step: a rank that stops early (here,
// waiting on a message its peer's corrupted plan never sends) makes the run fail, naming it.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compile } from '../../compiler/compile.js';
import { runPlanCpu } from '../../runtime/launch/cpu.js';
import { CleaveError } from '../../src/core/errors.js';
import { writePlan } from '../../src/core/plan/io.js';
import { cli } from '../helpers/cli.js';
import { fixturePath } from '../helpers/fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'cleave-incomplete-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('a run with a rank that cannot finish', () => {
  it('fails naming a rank instead of ending as a success', async () => {
    const plan = compile({ model: fixturePath('gpt'), loss: 'auto', partitions: 2, microbatches: 2 }).plan;
    // Rank 0 sends nothing: rank 1 waits for activations no one sends, and rank 0 for gradients.
    // Whichever notices first (a receive's timeout, or a rank that ended without reporting done) names its rank.
    plan.ranks[0]!.instructions = plan.ranks[0]!.instructions.filter((i) => i.kind !== 'SEND');
    const file = join(dir, 'nosend.plan');
    writePlan(file, plan);
    await expect(runPlanCpu({ planFile: file, data: { kind: 'default' }, steps: 2, optimizer: { kind: 'adamw', lr: 1e-3 }, timeoutSeconds: 2 })).rejects.toThrow(/rank [01] (ended without finishing its steps|failed at instruction \d+ \(RECV .*waited \d+ s)/);
  });

  it('refuses a plan whose world has no ranks', async () => {
    const plan = compile({ model: fixturePath('gpt'), loss: 'auto', partitions: 1, microbatches: 1 }).plan;
    plan.world.size = 0;
    const file = join(dir, 'empty.plan');
    writePlan(file, plan);
    expect(() => runPlanCpu({ planFile: file, data: { kind: 'default' }, steps: 1, optimizer: { kind: 'adamw', lr: 1e-3 } })).toThrow(/world has 0 ranks but lists 1/);
  });
});

describe('a failure inside a rank', () => {
  it('that is a bug stays one: not a user error, with the rank named and its stack kept', async () => {
    // runPlanCpu itself does not re-check plans (the CLI does, before it): a node missing its input
    // makes the kernel fail as a bug would.
    const plan = compile({ model: fixturePath('gpt'), loss: 'auto', partitions: 1, microbatches: 1 }).plan;
    const add = plan.nodes.findIndex((n) => n.op === 'Add');
    plan.nodes[add]!.inputs[0] = -1;
    const file = join(dir, 'bug.plan');
    writePlan(file, plan);
    const e = await runPlanCpu({ planFile: file, data: { kind: 'default' }, steps: 1, optimizer: { kind: 'adamw', lr: 1e-3 } }).catch((x: unknown) => x as Error);
    expect(e).toBeInstanceOf(Error);
    expect(e).not.toBeInstanceOf(CleaveError);
    expect(e.message).toMatch(/^rank 0 failed at instruction 0 \(FORWARD stage 0 mb 0\): /);
    expect(e.stack).toMatch(/in the rank: /);
  });

  it('through the CLI: a bad plan is refused before any rank starts (exit 2), a bug in a rank is an internal error (exit 1)', () => {
    const plan = compile({ model: fixturePath('gpt'), loss: 'auto', partitions: 1, microbatches: 1 }).plan;
    plan.nodes[plan.nodes.findIndex((n) => n.op === 'Add')]!.inputs[0] = -1;
    const file = join(dir, 'bug2.plan');
    writePlan(file, plan);
    const r = cli(['run', file, '--steps', '1']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/the plan is inconsistent: node \d+ \('.*', Add\) lacks its input 0/);
    expect(r.stderr).not.toMatch(/Cannot read properties/);
  });
});
