import { copyFileSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compile } from '../../compiler/compile.js';
import { importOnnx } from '../../compiler/onnx/import.js';
import type { Tensor } from '../../src/core/ir/tensor.js';
import { decodePlan, encodePlan, readPlan, writePlan } from '../../src/core/plan/io.js';
import type { Plan } from '../../src/core/plan/types.js';
import { type WeightReadStats, allWeightNames, rankWeightNames, readPlanWeights } from '../../src/core/plan/weights.js';
import { fixturePath } from '../helpers/fixtures.js';
import { bytesOf, model, node, vi } from '../helpers/onnx.js';
import '../../src/core/ops/index.js';

// The plan's weight references against the importer: a rank reads its parameters' bytes where the
// plan says they lie and gets what importing the whole model gives, bit for bit.

const dir = mkdtempSync(join(tmpdir(), 'cleave-weights-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const FILES = [
  ['gpt', fixturePath('gpt'), { kind: 'cross-entropy' as const }, 4],
  ['gpt_external', fixturePath('gpt_external'), { kind: 'cross-entropy' as const }, 4],
  ['cnn (BatchNorm states)', fixturePath('cnn'), 'auto' as const, 4],
  ['torch_gpt', fixturePath('torch_gpt'), 'auto' as const, 4],
  ['HF Llama (dynamo)', join(fixturePath('gpt'), '..', 'hf', 'llama_dynamo18raw.onnx'), 'auto' as const, 4],
] as const;

function compiled(file: string, loss: Parameters<typeof compile>[0]['loss'], batch: number, partitions = 2): { plan: Plan; planFile: string } {
  const planFile = join(dir, `${Math.random().toString(36).slice(2)}.plan`);
  writePlan(planFile, compile({ model: file, loss, partitions, microbatches: 2, batch, schedule: '1f1b' }).plan);
  return { plan: readPlan(planFile), planFile };
}

const bits = (t: Tensor): string => `${t.dtype}[${t.shape}]:${Buffer.from(new Float64Array(t.data).buffer).toString('base64')}`;

describe('weight references', () => {
  for (const [label, file, loss, batch] of FILES) {
    it(`${label}: every rank's own weights, read by reference, are the importer's bit for bit`, () => {
      const { plan, planFile } = compiled(file, loss, batch);
      const g = importOnnx(file, { batch: batch / 2 });
      const imported = new Map([...g.params(), ...g.states()].map((v) => [v.name, v.data!]));
      const names = allWeightNames(plan);
      expect(names.length).toBe(imported.size);
      expect(plan.values.filter((v) => names.includes(v.name)).every((v) => v.weight?.kind === 'bytes')).toBe(true);
      const seen = new Set<string>();
      let total = 0;
      for (const r of plan.ranks) {
        const stats: WeightReadStats = { referenced: 0, bytes: 0, byName: 0 };
        const mine = rankWeightNames(plan, r.rank);
        const got = readPlanWeights(plan, mine, { planFile }, stats);
        expect(stats).toMatchObject({ referenced: mine.length, byName: 0 });
        for (const [n, t] of got) expect(bits(t), n).toBe(bits(imported.get(n)!));
        mine.forEach((n) => seen.add(n));
        total += stats.bytes;
        // A rank reads no parameter its stages do not hold.
        const held = new Set(plan.stages.filter((s) => s.ppRank === r.ppRank).flatMap((s) => [...s.params, ...s.states.map((x) => x.state)]).map((v) => plan.values[v]!.name));
        expect(mine.filter((n) => !held.has(n))).toEqual([]);
        expect(stats.bytes).toBeLessThan(plan.values.filter((v) => v.weight?.kind === 'bytes').reduce((a, v) => a + (v.weight as { length: number }).length, 0));
      }
      expect([...seen].sort()).toEqual(names.sort());
      expect(total).toBeGreaterThan(0);
    });
  }

  it('external data: the references name the data file, relative to the model', () => {
    const { plan } = compiled(fixturePath('gpt_external'), { kind: 'cross-entropy' }, 4);
    const files = new Set(plan.values.flatMap((v) => (v.weight?.kind === 'bytes' ? [v.weight.file] : [])));
    // Small tensors stay in the model file, as the exporter left them.
    expect([...files].sort()).toEqual(['', 'gpt_external.onnx.data']);
  });

  it('survive the plan file: encoded and decoded alike', () => {
    const { plan } = compiled(fixturePath('gpt'), { kind: 'cross-entropy' }, 4);
    const back = decodePlan(encodePlan(plan), 'x.plan');
    expect(back.values.map((v) => v.weight ?? null)).toEqual(plan.values.map((v) => v.weight ?? null));
  });

  it('a model changed since compile is refused, naming the file and the parameter', () => {
    const m = join(dir, 'changed.onnx');
    copyFileSync(fixturePath('gpt'), m);
    const { plan, planFile } = compiled(m, { kind: 'cross-entropy' }, 4);
    const v = plan.values.find((x) => x.weight?.kind === 'bytes')!;
    const w = v.weight as { offset: number; length: number };
    const bytes = readFileSync(m);
    bytes[w.offset + (w.length >> 1)]! ^= 0x40;
    writeFileSync(m, bytes);
    expect(() => readPlanWeights(plan, [v.name], { planFile })).toThrow(new RegExp(`changed.onnx: the bytes of '${v.name.replace(/[.]/g, '\\.')}' at \\[\\d+, \\d+\\) are not those compiled: the model changed since .* was compiled`));
    // Other parameters still read: only what changed is refused.
    const other = plan.values.find((x) => x.weight?.kind === 'bytes' && x !== v && (x.weight as { offset: number }).offset > w.offset + w.length)!;
    expect(readPlanWeights(plan, [other.name], { planFile }).get(other.name)).toBeDefined();
  });

  it('truncated or missing external data is refused, naming the file', () => {
    const sub = mkdtempSync(join(dir, 'ext-'));
    copyFileSync(fixturePath('gpt_external'), join(sub, 'gpt_external.onnx'));
    copyFileSync(`${fixturePath('gpt_external')}.data`, join(sub, 'gpt_external.onnx.data'));
    const { plan, planFile } = compiled(join(sub, 'gpt_external.onnx'), { kind: 'cross-entropy' }, 4);
    const data = readFileSync(join(sub, 'gpt_external.onnx.data'));
    writeFileSync(join(sub, 'gpt_external.onnx.data'), data.subarray(0, data.length >> 1));
    expect(() => readPlanWeights(plan, allWeightNames(plan), { planFile })).toThrow(/gpt_external\.onnx\.data: is \d+ bytes, but '.+' lies at \[\d+, \d+\): the model changed since/);
    rmSync(join(sub, 'gpt_external.onnx.data'));
    expect(() => readPlanWeights(plan, allWeightNames(plan), { planFile })).toThrow(/gpt_external\.onnx: the plan's weights: external data file 'gpt_external\.onnx\.data' is missing \(looked for .*gpt_external\.onnx\.data\)/);
    // A data file that is a link out of the model's folder is no data file of the model.
    symlinkSync(`${fixturePath('gpt_external')}.data`, join(sub, 'gpt_external.onnx.data'));
    expect(() => readPlanWeights(plan, allWeightNames(plan), { planFile })).toThrow(/resolves to .*, outside the model's folder/);
  });

  it('values kept in typed fields are read by initializer name', () => {
    const m = join(dir, 'typed.onnx');
    const w = Array.from({ length: 12 }, (_, i) => (i - 6) / 7);
    writeFileSync(m, bytesOf(model({
      nodes: [node('MatMul', ['x', 'w'], ['y'], 'mm')],
      inputs: [vi('x', 1, ['batch', 4])], outputs: [vi('y', 1, ['batch', 3])],
      initializers: [{ name: 'w', dims: [4, 3], dataType: 1, floatData: w }],
    })));
    const { plan, planFile } = compiled(m, { kind: 'mse' }, 4, 1);
    expect(plan.values.find((v) => v.name === 'w')!.weight).toEqual({ kind: 'initializer', name: 'w' });
    const stats: WeightReadStats = { referenced: 0, bytes: 0, byName: 0 };
    expect(Array.from(readPlanWeights(plan, ['w'], { planFile }, stats).get('w')!.data)).toEqual(Array.from(Float32Array.from(w)));
    expect(stats).toEqual({ referenced: 0, bytes: 0, byName: 1 });
  });

  it('a plan without references (before version 6) reads its model by initializer name', () => {
    const { plan, planFile } = compiled(fixturePath('gpt'), { kind: 'cross-entropy' }, 4);
    const old = decodePlan(encodePlan({ ...plan, version: 5, values: plan.values.map(({ weight: _, ...v }) => v) }), planFile);
    const names = allWeightNames(plan);
    const stats: WeightReadStats = { referenced: 0, bytes: 0, byName: 0 };
    const a = readPlanWeights(old, names, { planFile }, stats), b = readPlanWeights(plan, names, { planFile });
    for (const n of names) expect(bits(a.get(n)!)).toBe(bits(b.get(n)!));
    expect(stats.byName).toBe(names.length);
  });

  it('--weights from another file: by name, and every missing initializer is listed', () => {
    const { plan, planFile } = compiled(fixturePath('gpt'), { kind: 'cross-entropy' }, 4);
    expect(() => readPlanWeights(plan, allWeightNames(plan), { planFile, from: fixturePath('mlp') })).toThrow(/mlp\.onnx: has no initializer '.+', '.+'.* and \d+ more, which the plan trains \(\d+ of \d+ missing\)/);
    const same = readPlanWeights(plan, allWeightNames(plan), { planFile, from: fixturePath('gpt') });
    expect(same.size).toBe(allWeightNames(plan).length);
  });

  it('names that are not the plan\'s parameters are refused', () => {
    const { plan, planFile } = compiled(fixturePath('gpt'), { kind: 'cross-entropy' }, 4);
    expect(() => readPlanWeights(plan, ['no.such.weight'], { planFile })).toThrow("the plan has no parameter or state 'no.such.weight'");
    expect(() => rankWeightNames(plan, 7)).toThrow('the plan has no rank 7 (its world has 2)');
  });
});
