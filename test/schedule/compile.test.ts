import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { afterAll, describe, expect, it } from 'vitest';
import { type CompileOptions, compile } from '../../compiler/compile.js';
import type { ScheduleName } from '../../compiler/cost/memory.js';
import { simulate } from '../../src/core/plan/simulate.js';
import { decodePlan, encodePlan } from '../../src/core/plan/io.js';
import { stageRank } from '../../compiler/schedule/pipeline.js';
import type { Plan } from '../../src/core/plan/types.js';
import '../../src/core/ops/index.js';
import { Rng } from '../../src/core/util/random.js';
import { cliInProcess } from '../helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'cleave-compile-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const GPT = 'fixtures/gpt.onnx';
const SCHEDULES: [ScheduleName, number][] = [['gpipe', 1], ['1f1b', 1], ['interleaved-1f1b', 2], ['zb-h1', 1], ['zbv', 2]];

const opts = (o: Partial<CompileOptions>): CompileOptions => ({ model: GPT, loss: 'auto', partitions: 2, microbatches: 4, schedule: '1f1b', ...o });

/** Re-runs the verifier on a plan's instruction lists (the compile already did once). */
function verify(plan: Plan): number {
  return simulate({
    ranks: plan.ranks.map((r) => r.instructions),
    groups: plan.groups, buckets: plan.buckets,
    tensors: plan.tensors.map((t) => ({ id: t.id, bytes: t.bytes, fromStage: t.fromStage, toStage: t.toStage, direction: t.direction })),
    stageRank: (s) => plan.stages[s]!.ppRank, ppRankOf: (w) => plan.ranks[w]!.ppRank,
    readers: (id) => {
      const t = plan.tensors[id]!;
      const s = plan.stages[t.toStage]!;
      const reads = (list: number[]) => list.some((n) => plan.nodes[n]!.inputs.includes(t.value));
      return [...(reads(s.forward) ? ['FORWARD' as const] : []), ...(reads(s.backwardB) ? ['BACKWARD_B' as const] : []), ...(reads(s.backwardW) ? ['BACKWARD_W' as const] : [])];
    },
    computeMs: () => 1, transferMs: () => 0.1, allreduceMs: () => 0.5,
  }).stepMs;
}

describe('every schedule compiles and verifies', () => {
  for (const [schedule, v] of SCHEDULES) for (const p of [2, 4]) for (const m of [p, 2 * p, 8]) for (const dp of [1, 2]) {
    it(`${schedule} p=${p} m=${m} dp=${dp}`, () => {
      const { plan } = compile(opts({ schedule, virtualStages: v, partitions: p, microbatches: m, dp }));
      expect(plan.ranks.length).toBe(p * dp);
      expect(verify(plan)).toBeGreaterThan(0);
      // Every stage runs every microbatch's forward and backward exactly once.
      for (const s of plan.stages) {
        const rank = plan.ranks.find((r) => r.ppRank === s.ppRank && r.dpRank === 0)!;
        const f = rank.instructions.filter((i) => i.kind === 'FORWARD' && i.stage === s.index).map((i) => i.mb).sort((a, b) => a - b);
        expect(f).toEqual([...Array(m).keys()]);
      }
      if (dp > 1) expect(plan.groups.some((g) => g.kind === 'dp' && g.ranks.length === dp)).toBe(true);
    });
  }
});

describe('random configurations (property-based)', () => {
  it('compile and verify for random p, m, v, dp, placement and schedule', () => {
    const rng = new Rng(2024);
    for (let trial = 0; trial < 24; trial++) {
      const [schedule, v0] = SCHEDULES[rng.int(SCHEDULES.length)]!;
      const p = 1 + rng.int(4);
      const v = schedule === 'interleaved-1f1b' ? 2 + rng.int(2) : v0;
      const m = schedule === 'interleaved-1f1b' ? p * (1 + rng.int(3)) : 1 + rng.int(9);
      const dp = 1 + rng.int(3);
      const placement = rng.next() < 0.5 ? 'cluster' : 'spread';
      const label = `${schedule} p=${p} v=${v} m=${m} dp=${dp} ${placement}`;
      const { plan } = compile(opts({ schedule, virtualStages: v, partitions: p, microbatches: m, dp, placement, memoryWeight: rng.next() }));
      expect(verify(plan), label).toBeGreaterThan(0);
      // Placement: cluster keeps a pipeline's ranks adjacent.
      if (placement === 'cluster') plan.ranks.forEach((r) => expect(r.rank).toBe(r.dpRank * p + r.ppRank));
      else plan.ranks.forEach((r) => expect(r.rank).toBe(r.ppRank * dp + r.dpRank));
    }
  });

  it('places zbv stages in a V and interleaved stages round-robin', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 7].map((s) => stageRank('zbv', s, 4))).toEqual([0, 1, 2, 3, 3, 2, 1, 0]);
    expect([0, 1, 2, 3, 4, 5].map((s) => stageRank('interleaved-1f1b', s, 3))).toEqual([0, 1, 2, 0, 1, 2]);
  });
});

describe('verification', () => {
  it('rejects a plan with one send removed, naming the stuck ranks', () => {
    const { plan } = compile(opts({ partitions: 4, microbatches: 4 }));
    const r1 = plan.ranks[1]!;
    const k = r1.instructions.findIndex((i) => i.kind === 'SEND' && i.peer === 2);
    r1.instructions.splice(k, 1);
    expect(() => verify(plan)).toThrow(/the plan (deadlocks|is inconsistent)/);
    expect(() => verify(plan)).toThrow(/rank 2 at instruction \d+: RECV tensor \d+ mb 0 from rank 1|receive #0 expects/);
  });

  it('rejects receives in a different order from the sends', () => {
    const { plan } = compile(opts({ partitions: 2, microbatches: 4 }));
    const list = plan.ranks[1]!.instructions;
    const a = list.findIndex((i) => i.kind === 'RECV' && i.mb === 0), b = list.findIndex((i) => i.kind === 'RECV' && i.mb === 1);
    [list[a], list[b]] = [list[b]!, list[a]!];
    expect(() => verify(plan)).toThrow(/channel rank 0 → rank 1: send #\d+ is tensor \d+ mb \d+ .* but receive #\d+ expects/);
  });

  it('rejects collectives that disagree across a group', () => {
    const { plan } = compile(opts({ partitions: 2, microbatches: 2, dp: 2 }));
    const r = plan.ranks.find((x) => x.instructions.filter((i) => i.kind === 'ALLREDUCE').length >= 2)!;
    const ar = r.instructions.map((x, i) => [x, i] as const).filter(([x]) => x.kind === 'ALLREDUCE');
    const [x0, x1] = [ar[0]![1], ar[1]![1]];
    [r.instructions[x0], r.instructions[x1]] = [r.instructions[x1]!, r.instructions[x0]!];
    expect(() => verify(plan)).toThrow(/collective #\d+ is bucket \d+ on some ranks and bucket \d+ on others|deadlocks/);
  });

  it('rejects work that reads a tensor before receiving it', () => {
    const { plan } = compile(opts({ partitions: 2, microbatches: 2 }));
    const list = plan.ranks[1]!.instructions;
    const recv = list.findIndex((i) => i.kind === 'RECV' && i.mb === 0);
    const [ins] = list.splice(recv, 1);
    list.push(ins!);
    expect(() => verify(plan)).toThrow(/rank 1 instruction \d+ \(FORWARD stage 1 mb 0\) reads tensor \d+ of microbatch 0, which it has not received/);
  });
});

describe('plan files', () => {
  it('round-trip through the protobuf format', () => {
    const { plan } = compile(opts({ schedule: 'zb-h1', partitions: 2, microbatches: 4, dp: 2 }));
    const back = decodePlan(encodePlan(plan), 'x.plan');
    expect(back.ranks.map((r) => r.instructions)).toEqual(plan.ranks.map((r) => r.instructions));
    expect(back.stages).toEqual(plan.stages);
    expect(back.tensors).toEqual(plan.tensors);
    expect(back.buckets).toEqual(plan.buckets);
    expect(back.nodes).toEqual(plan.nodes);
    expect(back.values.map((v) => v.name)).toEqual(plan.values.map((v) => v.name));
    expect(back.prediction).toEqual(plan.prediction);
    expect(back.model).toEqual(plan.model);
  });

  it('record the backward seed (since version 2); a version 1 plan reads with none', () => {
    const { plan } = compile(opts({ schedule: '1f1b', partitions: 2, microbatches: 2 }));
    const seed = plan.values[plan.model.lossSeedValue]!;
    expect(seed.name).toMatch(/loss_grad_seed/);
    expect(seed.kind).toBe('const');
    expect(decodePlan(encodePlan(plan), 'x.plan').model.lossSeedValue).toBe(plan.model.lossSeedValue);
    expect(decodePlan(encodePlan({ ...plan, version: 1 }), 'v1.plan').model.lossSeedValue).toBe(-1);
  });

  it('spell each phase one way: older plans\' backward-B and backward-W read as backwardB and backwardW', () => {
    const { plan } = compile(opts({}));
    const phases = (p: typeof plan) => new Set(p.nodes.map((n) => n.phase));
    expect(phases(plan)).toEqual(new Set(['forward', 'loss', 'backwardB', 'backwardW']));
    const old = { ...plan, version: 5, nodes: plan.nodes.map((n) => ({ ...n, phase: n.phase.replace(/^backward([BW])$/, 'backward-$1') })) };
    expect(phases(decodePlan(encodePlan(old), 'v5.plan'))).toEqual(phases(plan));
  });

  it('are refused when corrupt, foreign or from a newer cleave', () => {
    expect(() => decodePlan(new TextEncoder().encode('hello'), 'x.plan')).toThrow(/x\.plan: is not a cleave plan/);
    const { plan } = compile(opts({}));
    const bytes = encodePlan({ ...plan, version: 99 });
    expect(() => decodePlan(bytes, 'new.plan')).toThrow(/new\.plan: plan version 99 is newer than this cleave reads \(6\)/);
    const good = encodePlan(plan);
    expect(() => decodePlan(good.subarray(0, good.length / 2), 'cut.plan')).toThrow(/cut\.plan: the plan's checksum does not match its contents/);
    const old = encodePlan({ ...plan, version: 4 });
    expect(() => decodePlan(old.subarray(0, old.length / 2), 'cut4.plan')).toThrow(/cut4\.plan: the plan is truncated or corrupt/);
  });
});

describe('cleave compile and cleave plan print', () => {
  const planFile = join(dir, 'gpt.plan');

  it('compiles with a one-screen summary', async () => {
    const r = await cliInProcess(['compile', GPT, '-p', '2', '-m', '4', '--schedule', '1f1b', '-o', planFile]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/compiled fixtures\/gpt\.onnx → .*gpt\.plan in [\d.]+ s/);
    expect(r.stdout).toMatch(/predicted step [\d.]+ ms on h100; worst bubble [\d.]+%/);
    expect(r.stdout.split('\n').length).toBeLessThan(25);
  });

  it('prints the plan as the golden file has it', async () => {
    const r = await cliInProcess(['plan', 'print', planFile]);
    expect(r.code, r.stderr).toBe(0);
    await expect(r.stdout).toMatchFileSnapshot('../golden/gpt_1f1b_p2_m4.txt');
  });

  it('lists one rank\'s instructions', async () => {
    const r = await cliInProcess(['plan', 'print', planFile, '--rank', '1']);
    expect(r.stdout).toMatch(/rank 1 \(pipeline rank 1, replica 0\): \d+ instructions/);
    expect(r.stdout).toMatch(/RECV\s+1\s+0\s+[\d.]+\s+[\d.]+\s+\S+ \(activation, 2\.0 KiB\) ← rank 0/);
    expect((await cliInProcess(['plan', 'print', planFile, '--rank', '7'])).stderr).toMatch(/--rank 7 is not a rank of this plan \(0–1\)/);
  });

  it('writes an SVG with one lane per rank, and a Perfetto trace', async () => {
    const svg = join(dir, 't.svg'), trace = join(dir, 't.json');
    const p4 = join(dir, 'p4.plan');
    expect((await cliInProcess(['compile', GPT, '-p', '2', '-m', '4', '--dp', '2', '--schedule', 'zb-h1', '-o', p4])).code).toBe(0);
    const r = await cliInProcess(['plan', 'print', p4, '--svg', svg, '--trace', trace]);
    expect(r.code, r.stderr).toBe(0);
    const text = readFileSync(svg, 'utf8');
    expect(XMLValidator.validate(text)).toBe(true);
    const doc = new XMLParser({ ignoreAttributes: false }).parse(text);
    expect(doc.svg['@_xmlns']).toBe('http://www.w3.org/2000/svg');
    const lanes = [doc.svg.g].flat().filter((g: Record<string, string>) => g['@_class'] === 'lane');
    expect(lanes.map((g: Record<string, string>) => g['@_data-rank'])).toEqual(['0', '1', '2', '3']);
    const events = JSON.parse(readFileSync(trace, 'utf8')).traceEvents as { ph: string; pid: number }[];
    expect(new Set(events.filter((e) => e.ph === 'X').map((e) => e.pid))).toEqual(new Set([0, 1, 2, 3]));
  });

  it('reads SMP config names and rejects bad combinations', async () => {
    const cfg = join(dir, 'smp.json');
    writeFileSync(cfg, JSON.stringify({ partitions: 2, microbatches: 4, pipeline: 'simple', placement_strategy: 'spread', ddp: true, dp: 2 }));
    const out = join(dir, 'cfg.plan');
    const r = await cliInProcess(['compile', GPT, '--config', cfg, '-o', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/world 4 = 2 pipeline × 2 data parallel \(spread\); gpipe/);
    expect((await cliInProcess(['compile', GPT, '-p', '2', '-m', '3', '--schedule', 'interleaved-1f1b', '--virtual-stages', '2', '-o', out])).stderr).toMatch(/3 microbatches is not a multiple of 2/);
    expect((await cliInProcess(['compile', GPT, '-p', '2', '-o', out])).stderr).toMatch(/give the number of microbatches with -m M/);
    writeFileSync(cfg, JSON.stringify({ partitions: 2, microbatches: 4, ddp: true }));
    expect((await cliInProcess(['compile', GPT, '--config', cfg, '-o', out])).stderr).toMatch(/"ddp" in .* is true: give the data-parallel degree with --dp D/);
  });

  it('picks the fastest schedule that fits with --schedule auto', async () => {
    const out = join(dir, 'auto.plan');
    const r = await cliInProcess(['compile', GPT, '-p', '2', '-m', '4', '--schedule', 'auto', '-o', out]);
    expect(r.code, r.stderr).toBe(0);
    const { plan } = compile(opts({ schedule: 'auto' }));
    const others = SCHEDULES.map(([s, v]) => compile(opts({ schedule: s, virtualStages: v })).plan.prediction.stepMs);
    expect(plan.prediction.stepMs).toBeCloseTo(Math.min(...others), 9);
  });
});
