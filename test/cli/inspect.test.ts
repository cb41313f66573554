import { describe, expect, it } from 'vitest';
import { BUILT_FIXTURES } from '../../fixtures/models.js';
import { parameterStats } from '../../src/core/ir/stats.js';
import '../../src/core/ops/index.js';
import { cliInProcess } from '../helpers/cli.js';
import { TORCH, fixturePath, torchParamCounts } from '../helpers/fixtures.js';

interface Report { parameters: { count: number }; inputs: { shape: (number | string)[] }[]; ops: { op: string; count: number; flops: number }[]; scopes: { scope: string }[]; flops: number; unsupported: unknown[] }

const inspectJson = async (file: string, ...flags: string[]): Promise<Report> => {
  const r = await cliInProcess(['inspect', file, '--json', ...flags]);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Report;
};

describe('cleave inspect', () => {
  it.each(Object.keys(BUILT_FIXTURES))('counts the parameters of built fixture %s as the builder does', async (name) => {
    const built = BUILT_FIXTURES[name as keyof typeof BUILT_FIXTURES]();
    expect((await inspectJson(fixturePath(name))).parameters.count).toBe(parameterStats(built).count);
  });

  it('counts the external-data GPT like the inline one', async () => {
    expect((await inspectJson(fixturePath('gpt_external'))).parameters.count).toBe(parameterStats(BUILT_FIXTURES.gpt()).count);
  });

  it.each(TORCH)('counts the parameters of %s as PyTorch does', async (name) => {
    expect((await inspectJson(fixturePath(name))).parameters.count).toBe(torchParamCounts()[name]);
  });

  it('reports FLOPs that scale with the batch, and per-block scopes', async () => {
    const one = await inspectJson(fixturePath('gpt'));
    const four = await inspectJson(fixturePath('gpt'), '--batch', '4');
    expect(four.inputs[0]!.shape).toEqual([4, 16]);
    // The LM head's transposed weight does not scale with the batch; everything else does.
    expect(four.flops / one.flops).toBeGreaterThan(3.9);
    expect(four.flops / one.flops).toBeLessThanOrEqual(4);
    const mm = one.ops.find((o) => o.op === 'MatMul')!;
    // 2 layers × (qkv, q·k, p·v, proj, fc, fc2) + LM head, at batch 1, seq 16, dim 32, vocab 64.
    const T = 16, D = 32, V = 64;
    const perLayer = 2 * T * D * 3 * D + 2 * 4 * T * T * 8 * 2 + 2 * T * D * D + 2 * T * D * 4 * D * 2;
    expect(mm.flops).toBe(2 * perLayer + 2 * T * D * V);
    expect(one.scopes.map((s) => s.scope)).toEqual(expect.arrayContaining(['/h.0/', '/h.1/', '/ln_f/']));
  });

  it('prints aligned tables with units', async () => {
    const r = await cliInProcess(['inspect', fixturePath('cnn'), '--batch', '2']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/parameters\s+[\d,]+ \([\d.]+ KiB\) in \d+ tensors/);
    expect(r.stdout).toMatch(/state\s+/);
    expect(r.stdout).toMatch(/Conv\s+4\s+[\d.]+ [kM]FLOP/);
    expect(r.stdout).toMatch(/unsupported ops: none/);
  });

  it('prints the imported graph with --graph', async () => {
    const r = await cliInProcess(['inspect', fixturePath('mlp'), '--graph']);
    expect(r.stdout).toMatch(/graph mlp \(opset 13\)/);
    expect(r.stdout).toMatch(/%y = Gemm\(%\/fc1\/Relu_output_0, %fc2\.weight, %fc2\.bias\)/);
  });

  it('binds named dims with --dim', async () => {
    expect((await inspectJson(fixturePath('torch_gpt'), '--dim', 'batch=3')).inputs[0]!.shape).toEqual([3, 16]);
  });
});
