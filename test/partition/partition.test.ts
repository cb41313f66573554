import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildTrainingGraph, type TrainingGraph } from '../../compiler/autodiff/training.js';
import { encodeModel } from '../../src/core/onnx/codec.js';
import { exportModel } from '../../compiler/onnx/export.js';
import { importModel, importOnnx } from '../../compiler/onnx/import.js';
import { type PartitionOptions, partitionTraining } from '../../compiler/partition/partition.js';
import { GPT_DEFAULT, buildGpt } from '../../fixtures/models.js';
import { decodeModel } from '../../src/core/onnx/codec.js';
import '../../src/core/ops/index.js';
import { cliInProcess } from '../helpers/cli.js';
import { fixturePath } from '../helpers/fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'cleave-partition-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The GPT fixture's architecture with 8 blocks, at microbatch 4. */
function gpt8(): TrainingGraph {
  const g = buildGpt({ ...GPT_DEFAULT, layers: 8 });
  const bytes = encodeModel(exportModel(g).model);
  return buildTrainingGraph(importModel(decodeModel(bytes, 'gpt8'), { baseDir: '.', file: 'gpt8' }, { batch: 4 }), { loss: { kind: 'cross-entropy' } });
}
const t8 = gpt8();
const gpt = () => buildTrainingGraph(importOnnx(fixturePath('gpt'), { batch: 4 }), { loss: { kind: 'cross-entropy' } });
const part = (t: TrainingGraph, o: Partial<PartitionOptions>) => partitionTraining(t, { partitions: 2, ...o });

describe('auto partition', () => {
  it.each([2, 4, 8])('gives each of %i stages an equal share of the uniform blocks', (p) => {
    // Time balance on a profile where FLOPs dominate: each block's six matrix products are its work.
    const r = part(t8, { partitions: p, memoryWeight: 0, device: 'cpu' });
    const matmuls = r.stages.map((s) => s.nodes.filter((n) => n.op === 'MatMul' && n.name.startsWith('/h.')).length);
    expect(matmuls).toEqual(new Array(p).fill((6 * 8) / p));
    expect(r.stages[0]!.nodes[0]!.name).toBe('/Gather');
    expect(r.stages[p - 1]!.nodes.at(-1)!.op).toBe('SoftmaxCrossEntropyLoss');
    expect(r.imbalance).toBeLessThan(1.25);
  });

  it('reports the tied embedding / LM-head weight on the first and last stage', () => {
    const r = part(t8, { partitions: 4 });
    expect(r.tied).toEqual([{ param: 'wte.weight', stages: [0, 3] }]);
    expect(r.stages[0]!.params).toContain('wte.weight');
    expect(r.stages[3]!.params).toContain('wte.weight');
  });

  it('puts each backward node with the forward node it differentiates', () => {
    const r = part(t8, { partitions: 4 });
    for (const s of r.stages) for (const b of s.backward) {
      const of = b.meta['gradOf'];
      if (typeof of === 'string') expect(s.nodes.some((n) => n.name === of)).toBe(true);
    }
    const all = r.stages.reduce((a, s) => a + s.nodes.length + s.backward.length, 0);
    expect(all).toBe(t8.graph.nodes.length);
  });

  it('gives earlier stages less when memory matters and activations pile up there (1F1B)', () => {
    const time = part(t8, { partitions: 4, memoryWeight: 0, device: 'cpu', microbatches: 8 });
    const mem = part(t8, { partitions: 4, memoryWeight: 1, device: 'cpu', microbatches: 8 });
    const peak = (r: typeof time) => Math.max(...r.stages.map((s) => s.memory.total));
    expect(peak(mem)).toBeLessThanOrEqual(peak(time));
    expect(mem.stages[0]!.nodes.length).toBeLessThan(mem.stages[3]!.nodes.length);
  });

  it('splits into virtual stages that ranks take round-robin', () => {
    const r = part(t8, { partitions: 2, virtualStages: 2 });
    expect(r.stages.map((s) => s.rank)).toEqual([0, 1, 0, 1]);
  });
});

describe('manual and mixed partition', () => {
  const rules = ['/h\\.[0-3]/=0', '/h\\.[4-7]/=1', '^/Gather|^/Add$=0', '/ln_f/|/lm_head/|/loss/=1'];

  it('follows --assign rules with auto partitioning off', () => {
    const r = part(t8, { autoPartition: false, assign: rules });
    expect(r.mode).toBe('manual');
    expect(r.stages[0]!.nodes.every((n) => !/\/h\.[4-7]\//.test(n.name))).toBe(true);
    expect(r.stages[1]!.nodes.every((n) => !/\/h\.[0-3]\//.test(n.name))).toBe(true);
  });

  it('puts unannotated nodes on default_partition', () => {
    const r = part(gpt(), { partitions: 2, autoPartition: false, defaultPartition: 1, assign: ['^/Gather$=0', '^/Add$=0'] });
    expect(r.stages[0]!.nodes.map((n) => n.name)).toEqual(['/Gather', '/Add']);
    expect(r.stages[1]!.nodes.length).toBe(gpt().graph.nodes.filter((n) => n.meta['phase'] !== 'backwardB' && n.meta['phase'] !== 'backwardW').length - 2);
  });

  it('places unannotated nodes around annotated ones when auto partitioning is on', () => {
    const r = part(t8, { partitions: 4, assign: ['/h\\.7/=3', '/h\\.6/=3'] });
    expect(r.mode).toBe('mixed');
    const s3 = r.stages[3]!.nodes;
    expect(s3.filter((n) => /\/h\.[67]\//.test(n.name)).length).toBe(t8.graph.nodes.filter((n) => /^\/h\.[67]\//.test(n.name) && n.meta['phase'] === 'forward').length);
    expect(r.stages[2]!.nodes.some((n) => /\/h\.6\//.test(n.name))).toBe(false);
  });

  it('reads annotations from the ONNX file (metadata_props partition)', () => {
    const g = buildGpt({ ...GPT_DEFAULT, layers: 2 });
    for (const n of g.nodes) n.meta.partition = n.name.startsWith('/h.1/') || n.name.startsWith('/ln_f') || n.name.startsWith('/lm_head') ? 1 : 0;
    const file = join(dir, 'annotated.onnx');
    writeFileSync(file, encodeModel(exportModel(g).model));
    const t = buildTrainingGraph(importOnnx(file, { batch: 2 }), { loss: { kind: 'cross-entropy' } });
    const r = part(t, { autoPartition: false, defaultPartition: 1 });
    expect(r.stages[0]!.nodes.every((n) => !n.name.startsWith('/h.1/'))).toBe(true);
    expect(r.stages[1]!.nodes[0]!.name.startsWith('/h.1/')).toBe(true);
  });
});

describe('validation', () => {
  it('rejects an annotation out of range, naming the node', () => {
    expect(() => part(gpt(), { partitions: 2, assign: ['^/Gather$=5'] })).toThrow(/node '\/Gather' is placed on stage 5 by rule '\^\/Gather\$=5', but there are 2 stages \(0–1\)/);
  });

  it('rejects an empty stage', () => {
    expect(() => part(gpt(), { partitions: 3, autoPartition: false, defaultPartition: 0, assign: ['/lm_head/|/loss/|/ln_f/=2'] })).toThrow(/stage 1 has no nodes: every unannotated node goes to default_partition 0/);
  });

  it('rejects a backward edge, naming both nodes and stages', () => {
    expect(() => part(gpt(), { partitions: 2, autoPartition: false, defaultPartition: 0, assign: ['^/Gather$=1'] })).toThrow(/edge '\/Gather' → '\/Add' \(value '\/Gather_output_0'\) goes from stage 1 back to stage 0/);
  });

  it('rejects annotations that cannot be contiguous with auto partitioning', () => {
    expect(() => part(t8, { partitions: 2, assign: ['/h\\.0/=1', '/h\\.7/=0'] })).toThrow(/annotations cannot form contiguous stages: '\/h\.0\/[^']+' \(stage 1\) comes before '\/h\.7\/[^']+' \(stage 0\)/);
  });

  it('rejects a model that fits no split', () => {
    // 16 GiB CPU ranks cannot hold 2^33 microbatches of activations.
    expect(() => part(t8, { partitions: 2, device: 'cpu', schedule: 'gpipe', microbatches: 2 ** 33 })).toThrow(/no split fits in memory: the leanest needs [\d.]+ GiB on some stage, more than the 16\.00 GiB a stage has on cpu/);
  });

  it('rejects too many stages and bad rules and weights', () => {
    expect(() => part(gpt(), { partitions: 500 })).toThrow(/the model has \d+ forward nodes, too few for 500 stages/);
    expect(() => part(gpt(), { assign: ['h.0'] })).toThrow(/--assign 'h\.0': a rule is REGEX=STAGE/);
    expect(() => part(gpt(), { assign: ['(=1'] })).toThrow(/--assign '\(=1': Invalid regular expression/);
    expect(() => part(gpt(), { memoryWeight: 2 })).toThrow(/memory_weight must be in \[0, 1\], got 2/);
    expect(() => part(gpt(), { device: 'tpu' })).toThrow(/unknown device 'tpu' \(known: h100, h200, a100, cpu\)/);
  });
});

describe('cleave partition', () => {
  it('prints a per-stage table', async () => {
    const r = await cliInProcess(['partition', fixturePath('gpt'), '-p', '2', '--batch', '4']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/auto partition into 2 stages on h100 \(79 GiB per stage\)/);
    expect(r.stdout).toMatch(/stage\s+rank\s+nodes\s+first → last node\s+params\s+fwd ms\s+bwd ms\s+comm ms\s+memory\s+sends/);
    expect(r.stdout).toMatch(/\n\s+0\s+0\s+\d+\s+\/Gather → /);
    expect(r.stdout).toMatch(/imbalance 1\.\d{3} \(slowest stage ÷ mean\)/);
    expect(r.stdout).toMatch(/tied parameters \(a copy per stage, gradients all-reduced\): wte\.weight on stages 0, 1/);
  });

  it('reads an SMP config and prints JSON', async () => {
    const cfg = join(dir, 'smp.json');
    writeFileSync(cfg, JSON.stringify({ partitions: 2, microbatches: 4, pipeline: 'interleaved', auto_partition: true, memory_weight: 0.5 }));
    const r = await cliInProcess(['partition', fixturePath('gpt'), '--config', cfg, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.stages.length).toBe(2);
    expect(j.stages[0].first).toBe('/Gather');
    expect(j.stages[0].sends[0].to).toEqual([1]);
    writeFileSync(cfg, JSON.stringify({ partitions: 2, pipeline_parallel_degree: 2 }));
    expect((await cliInProcess(['partition', fixturePath('gpt'), '--config', cfg])).stderr).toMatch(/smp\.json: unknown parameter 'pipeline_parallel_degree' \(known: partitions, microbatches/);
    expect((await cliInProcess(['partition', fixturePath('gpt')])).stderr).toMatch(/give the number of pipeline stages with -p N/);
    expect((await cliInProcess(['partition', fixturePath('gpt'), '-p', '2', '--schedule', 'wave'])).stderr).toMatch(/unknown schedule 'wave'/);
  });
});
