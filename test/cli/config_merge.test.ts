// One merge rule for --config and flags: a flag given on the command line wins, the config beats
// the defaults; every SMP key both ways, and a bad value named by where it came from.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type CompileFlags, compileOptions } from '../../src/app/cli/compile_flags.js';
import '../../src/core/ops/index.js';
import { readPlan } from '../../src/core/plan/io.js';
import type { Plan } from '../../src/core/plan/types.js';
import { cliInProcess } from '../helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'cleave-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const config = (c: Record<string, unknown>): string => {
  const f = join(dir, `c${n++}.json`);
  writeFileSync(f, JSON.stringify(c));
  return f;
};
const MODEL = 'fixtures/gpt.onnx';
const stageOf = (node: string) => (p: Plan): number | undefined => p.nodes.find((x) => x.name === node)?.stage;

/** Compiles with the config and flags given, in this process, and reads the plan back. */
async function compiled(c: Record<string, unknown>, flags: string[] = []): Promise<Plan> {
  const out = join(dir, `p${n++}.plan`);
  const r = await cliInProcess(['compile', MODEL, '--config', config({ partitions: 2, microbatches: 4, ...c }), ...flags, '-o', out]);
  expect(r.code, r.stderr).toBe(0);
  return readPlan(out);
}

describe('each SMP key: the config beats the default, a flag beats the config (in the plan compile writes)', () => {
  const cases: [string, Record<string, unknown>, string[], (p: Plan) => unknown, unknown, unknown][] = [
    ['partitions', { partitions: 4 }, ['-p', '2'], (p) => p.world.pp, 4, 2],
    ['microbatches', { microbatches: 8 }, ['-m', '2'], (p) => p.schedule.microbatches, 8, 2],
    ['pipeline (SMP simple)', { pipeline: 'simple' }, ['--schedule', 'zb-h1'], (p) => p.schedule.name, 'gpipe', 'zb-h1'],
    ['virtual_stages', { pipeline: 'interleaved-1f1b', virtual_stages: 2 }, ['--virtual-stages', '3'], (p) => p.world.virtualStages, 2, 3],
    ['active_microbatches', { active_microbatches: 1 }, ['--active-microbatches', '2'], (p) => p.schedule.activeMicrobatches, 1, 2],
    ['dp', { dp: 2 }, ['--dp', '1'], (p) => p.world.dp, 2, 1],
    ['placement_strategy', { dp: 2, placement_strategy: 'spread' }, ['--placement', 'cluster'], (p) => p.world.placement, 'spread', 'cluster'],
    ['device', { device: 'a100' }, ['--device', 'h200'], (p) => p.schedule.device, 'a100', 'h200'],
    ['dtype', { dtype: 'bf16' }, ['--dtype', 'fp16'], (p) => p.model.dtypePolicy, 'bf16', 'fp16'],
    ['optimizer', { optimizer: 'sgd' }, ['--optimizer', 'adam'], (p) => p.model.optimizerConfig.kind, 'sgd', 'adam'],
    // Off, all but the annotated head stays on stage 0; on, the blocks are balanced over both.
    ['auto_partition', { auto_partition: false, assign: ['^/(lm_head|loss)=1'] }, ['--auto-partition'], stageOf('/h.1/attn/c_attn/Add'), 0, 1],
    // The flags' --assign replaces the config's rules (it does not add to them).
    ['default_partition', { auto_partition: false, default_partition: 1, assign: ['^/(Gather|Add)$=0'] }, ['--default-partition', '0', '--assign', '^/(lm_head|loss)=1'], stageOf('/h.0/attn/Split'), 1, 0],
    ['assign', { assign: ['^/h\\.0/mlp=0'] }, ['--assign', '^/h\\.0/attn/c_proj=1'], stageOf('/h.0/mlp/Gelu'), 0, 1],
  ];
  for (const [key, c, flags, read, fromConfig, fromFlag] of cases) {
    it(key, async () => {
      expect(read(await compiled(c))).toEqual(fromConfig);
      expect(read(await compiled(c, flags))).toEqual(fromFlag);
    });
  }
  it('the defaults where neither says', async () => {
    const p = await compiled({});
    expect([p.schedule.name, p.world.dp, p.world.placement, p.schedule.device, p.model.dtypePolicy, p.model.optimizerConfig.kind]).toEqual(['1f1b', 1, 'cluster', 'h100', 'fp32', 'adamw']);
  });
});

describe('the keys the plan does not show, by the options compile gets', () => {
  const flags = (o: Partial<CompileFlags>): CompileFlags => ({ loss: 'auto', ...o });
  it('memory_weight', () => {
    const c = config({ partitions: 2, microbatches: 2, memory_weight: 0.3 });
    expect(compileOptions(MODEL, flags({ config: c })).memoryWeight).toBe(0.3);
    expect(compileOptions(MODEL, flags({ config: c, memoryWeight: '0.9' })).memoryWeight).toBe(0.9);
    expect(compileOptions(MODEL, flags({ partitions: 2, microbatches: 2 })).memoryWeight).toBeUndefined();
  });
  it('ddp: true needs a degree; false beside a degree in the config says both; a --dp flag wins over "ddp": false', () => {
    expect(() => compileOptions(MODEL, flags({ config: config({ partitions: 2, microbatches: 2, ddp: true }) }))).toThrow(/"ddp" in .*c\d+\.json is true: give the data-parallel degree with --dp D/);
    expect(compileOptions(MODEL, flags({ config: config({ partitions: 2, microbatches: 2, ddp: true, dp: 2 }) })).dp).toBe(2);
    expect(() => compileOptions(MODEL, flags({ config: config({ partitions: 2, microbatches: 2, ddp: false, dp: 2 }) }))).toThrow(/"ddp" in .* is false but "dp" in .* is 2/);
    expect(compileOptions(MODEL, flags({ dp: 2, config: config({ partitions: 2, microbatches: 2, ddp: false }) })).dp).toBe(2);
  });
  it('the model file\'s own config sits under --config and flags', () => {
    const c = config({ microbatches: 3 });
    const o = compileOptions(MODEL, flags({ config: c }), { partitions: 4, microbatches: 6, dtype: 'bf16' });
    expect([o.partitions, o.microbatches, o.policy]).toEqual([4, 3, 'bf16']);
    expect(compileOptions(MODEL, flags({ config: c, partitions: 2 }), { partitions: 4 }).partitions).toBe(2);
  });
});

describe('a bad value is refused naming where it came from, whichever that was', () => {
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ partitions: 2.5 }, /"partitions" in .*\.json must be a number of pipeline stages \(an integer ≥ 1\), got 2\.5/],
    [{ partitions: 0 }, /"partitions" in .* must be a number of pipeline stages \(an integer ≥ 1\), got 0/],
    [{ microbatches: -1 }, /"microbatches" in .* must be a number of microbatches \(an integer ≥ 1\), got -1/],
    [{ dp: 0 }, /"dp" in .* must be a data-parallel degree \(an integer ≥ 1\), got 0/],
    [{ virtual_stages: 1.5 }, /"virtual_stages" in .* must be a number of stages per rank/],
    [{ active_microbatches: 0 }, /"active_microbatches" in .* must be a number of microbatches in flight/],
    [{ memory_weight: 2 }, /"memory_weight" in .* must be a number in \[0, 1\], got 2/],
    [{ auto_partition: false, default_partition: 9 }, /"default_partition" in .* is stage 9; there are 2 stages \(0–1\)/],
    [{ auto_partition: false, default_partition: -1 }, /"default_partition" in .* must be a stage number \(an integer ≥ 0\), got -1/],
    [{ default_partition: 1 }, /"default_partition" in .* applies when auto partitioning is off/],
    [{ placement_strategy: 'diagonal', dp: 2 }, /"placement_strategy" in .* must be one of cluster, spread; got 'diagonal'/],
    [{ device: 'tpu' }, /"device" in .* must be one of .*; got 'tpu'/],
    [{ dtype: 'fp8' }, /"dtype" in .* must be one of fp32, bf16, fp16; got 'fp8'/],
    [{ pipeline: 'fast' }, /"pipeline" in .*: /],
    [{ optimizer: 'lion' }, /"optimizer" in .*: /],
  ];
  for (const [c, msg] of bad) {
    it(`config ${JSON.stringify(c)}`, async () => {
      const r = await cliInProcess(['compile', MODEL, '--config', config({ partitions: 2, microbatches: 2, ...c }), '-o', join(dir, 'never.plan')]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(msg);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    });
  }
  it('the same rule by flag names the flag', async () => {
    for (const [args, msg] of [
      [['--memory-weight', '2'], /--memory-weight must be a number in \[0, 1\], got '2'/],
      [['--no-auto-partition', '--default-partition', 'x'], /--default-partition must be a stage number \(an integer ≥ 0\), got 'x'/],
      [['--dtype', 'fp8'], /--dtype must be one of fp32, bf16, fp16; got 'fp8'/],
    ] as const) {
      const r = await cliInProcess(['compile', MODEL, '-p', '2', '-m', '2', ...args, '-o', join(dir, 'never.plan')]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(msg);
    }
  });
  it('partition takes the same rule', async () => {
    const r = await cliInProcess(['partition', MODEL, '--config', config({ partitions: 0 })]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/"partitions" in .* must be a number of pipeline stages/);
  });
});
