import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type CompileOptions, compile } from '../../compiler/compile.js';
import '../../src/core/ops/index.js';
import { PLAN_LIMITS, checkPlan } from '../../src/core/plan/check.js';
import { decodePlan, encodePlan, readPlan, writePlan } from '../../src/core/plan/io.js';
import type { Plan } from '../../src/core/plan/types.js';
import { cli } from '../helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'cleave-check-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const opts = (o: Partial<CompileOptions>): CompileOptions => ({ model: 'fixtures/gpt.onnx', loss: 'auto', partitions: 2, microbatches: 4, schedule: '1f1b', ...o });
const copy = (p: Plan): Plan => structuredClone(p);

describe('every plan compile writes passes the run-time checks', () => {
  const cases: [string, Partial<CompileOptions>][] = [];
  for (const [schedule, v] of [['gpipe', 1], ['1f1b', 1], ['interleaved-1f1b', 2], ['zb-h1', 1], ['zbv', 2]] as const) {
    for (const p of [2, 4]) for (const dp of [1, 2]) cases.push([`gpt ${schedule} p ${p} dp ${dp}`, { schedule, virtualStages: v, partitions: p, dp, microbatches: 8 }]);
  }
  cases.push(['gpt on one rank', { partitions: 1 }]);
  cases.push(['cnn (BatchNorm state) p 2 dp 2', { model: 'fixtures/cnn.onnx', dp: 2 }]);
  cases.push(['PyTorch-exported GPT p 2', { model: 'fixtures/torch/torch_gpt.onnx' }]);
  cases.push(['PyTorch-exported CNN p 2 dp 2', { model: 'fixtures/torch/torch_cnn.onnx', dp: 2 }]);
  cases.push(['gpt bf16', { policy: 'bf16' }]);
  cases.push(['gpt fp16', { policy: 'fp16' }]);
  for (const [name, o] of cases) {
    it(name, () => {
      const { plan } = compile(opts(o));
      expect(() => checkPlan(decodePlan(encodePlan(plan), 'x.plan'), 'x.plan')).not.toThrow();
    });
  }
});

describe('a damaged plan is refused naming its first inconsistency', () => {
  const base = compile(opts({ partitions: 2, dp: 2, microbatches: 4 })).plan;
  const zb = compile(opts({ schedule: 'zb-h1', partitions: 2, microbatches: 4 })).plan;
  const refuse = (p: Plan, msg: RegExp): void => {
    expect(() => checkPlan(p, 'bad.plan')).toThrow(msg);
    try {
      checkPlan(p, 'bad.plan');
    } catch (e) {
      expect((e as Error).name).toBe('CleaveError');
      expect((e as Error).message).toMatch(/^bad\.plan: /);
    }
  };
  const indexOf = (p: Plan, r: number, kind: string): number => p.ranks[r]!.instructions.findIndex((i) => i.kind === kind);

  it('a BACKWARD dropped', () => {
    const p = copy(base);
    p.ranks[0]!.instructions.splice(indexOf(p, 0, 'BACKWARD'), 1);
    refuse(p, /rank 0 never runs the input-gradient work of stage 0 microbatch 0/);
  });
  it('a BACKWARD doubled', () => {
    const p = copy(base);
    const i = indexOf(p, 0, 'BACKWARD');
    p.ranks[0]!.instructions.splice(i, 0, { ...p.ranks[0]!.instructions[i]! });
    refuse(p, /rank 0 instruction \d+ \(BACKWARD stage 0 mb 0\) repeats work instruction \d+ did/);
  });
  it('a BACKWARD_W dropped in a split schedule', () => {
    const p = copy(zb);
    p.ranks[1]!.instructions.splice(indexOf(p, 1, 'BACKWARD_W'), 1);
    refuse(p, /rank 1 .*(never runs the weight-gradient work|comes before the weight-gradient work) of stage 1 microbatch 0/);
  });
  it('a changed rank field', () => {
    const p = copy(base);
    p.ranks[1]!.rank = 3;
    refuse(p, /rank 1 calls itself rank 3/);
  });
  it('two ranks at one place', () => {
    const p = copy(base);
    p.ranks[1]!.dpRank = p.ranks[0]!.dpRank;
    p.ranks[1]!.ppRank = p.ranks[0]!.ppRank;
    refuse(p, /rank 1 sits at pipeline rank 0, replica 0, as another rank does/);
  });
  it('a world of 0, of 4096 or of another size than its ranks', () => {
    refuse({ ...copy(base), world: { ...base.world, size: 0, pp: 0 } }, /its pipeline degree is 0/);
    refuse({ ...copy(base), world: { ...base.world, size: 4096, pp: 2048 } }, /its world has 4096 ranks but it lists 4/);
    refuse({ ...copy(base), world: { ...base.world, size: 8 } }, /its world has 8 ranks, not pp 2 × dp 2/);
    refuse({ ...copy(base), world: { ...base.world, size: 2 ** 20, pp: 2 ** 19 } }, /pipeline degree is 524288|past the bound of 65536/);
  });
  it('10⁸ microbatches, or microbatches the instructions do not run', () => {
    refuse({ ...copy(base), schedule: { ...base.schedule, microbatches: 1e8 } }, new RegExp(`100000000 microbatches a step \\(1 to ${PLAN_LIMITS.microbatches}\\)`));
    refuse({ ...copy(base), schedule: { ...base.schedule, microbatches: 8 } }, /rank 0 never runs the forward work of stage 0 microbatch 4/);
    refuse({ ...copy(base), schedule: { ...base.schedule, microbatches: 2 } }, /runs microbatch 2 of 2/);
  });
  it('a bucket scale of −1', () => {
    const p = copy(base);
    p.buckets[0]!.scale = -1;
    refuse(p, /bucket 0 scales its sum by -1; averaging over 2 replicas is 0\.5/);
  });
  it('a group emptied or not the gradient holders', () => {
    const p = copy(base);
    p.groups[0]!.ranks = [];
    refuse(p, /group 0 \((dp|tied)\) has no ranks/);
    const q = copy(base);
    q.groups[0]!.ranks = [0, 1];
    refuse(q, /bucket \d+ reduces '.*' over ranks 0, 1; its gradient is on ranks/);
  });
  it('an op\'s attributes changed', () => {
    const p = copy(base);
    // A Reshape to its shape reversed (two different sizes, so the reversed shape is another one).
    const t = p.nodes.findIndex((n) => n.op === 'Reshape' && (({ shape }: { shape?: number[] }) => !!shape && shape.length === 2 && shape.every((d) => d > 0) && shape[0] !== shape[1])(JSON.parse(n.attrs)));
    const shape = JSON.parse(p.nodes[t]!.attrs).shape as number[];
    p.nodes[t]!.attrs = JSON.stringify({ ...JSON.parse(p.nodes[t]!.attrs), shape: [...shape].reverse() });
    refuse(p, new RegExp(`node ${t} \\('.*', Reshape\\) makes output 0 of shape \\[.*\\] but the plan has`));
    const q = copy(base);
    q.nodes[t]!.attrs = '{"shape": [0, 1';
    refuse(q, /Reshape\): its attributes are not readable/);
    for (const [json, why] of [['[]', 'an array'], ['null', 'null'], ['42', 'number']] as const) {
      const a = copy(base);
      a.nodes[t]!.attrs = json;
      refuse(a, new RegExp(`Reshape\\): its attributes are not readable \\(attributes must be a JSON object, got ${why}\\)`));
    }
    const o = copy(base);
    o.nodes[t]!.attrs = JSON.stringify({ shape: { x: 1 } });
    refuse(o, /attribute 'shape' is an object but not a tensor/);
    const u = copy(base);
    u.nodes[t]!.attrs = JSON.stringify({ shape, stride: 2 });
    refuse(u, /Reshape has no attribute 'stride'/);
    // Shape-preserving changes the shapes cannot catch, the attribute's declared range does.
    const v = copy(base);
    const g = v.nodes.findIndex((n) => n.op === 'Softmax' || n.op === 'LayerNormalization');
    v.nodes[g]!.attrs = JSON.stringify({ ...JSON.parse(v.nodes[g]!.attrs), axis: 'last' });
    refuse(v, new RegExp(`node ${g} \\('.*', ${v.nodes[g]!.op}\\).*'axis'`));
  });
  it('a value\'s shape, an index or a size out of range', () => {
    const p = copy(base);
    const v = p.values.findIndex((x) => x.kind === 'param');
    p.values[v]!.shape = [-1, 4];
    refuse(p, new RegExp(`value ${v} \\('.*'\\) has shape \\[-1, 4\\]`));
    const q = copy(base);
    q.values[v]!.shape = [2 ** 30, 2 ** 30];
    refuse(q, /past the bound of 68719476736/);
    const r = copy(base);
    r.nodes[0]!.inputs = [r.values.length + 5];
    refuse(r, /node 0 .* reads value \d+ of \d+/);
    const s = copy(base);
    s.ranks[0]!.memory.arenaBytes = 2 ** 50;
    refuse(s, /rank 0's arena of 1125899906842624 bytes/);
    const t = copy(base);
    const send = indexOf(t, 0, 'SEND');
    t.ranks[0]!.instructions[send]!.peer = 0;
    refuse(t, /rank 0 instruction \d+ \(SEND tensor \d+ mb 0 to rank 0\) has rank 0 at its other end/);
    const u = copy(base);
    u.ranks[0]!.instructions[send]!.tensor = 99;
    refuse(u, /moves boundary tensor 99 of/);
  });
  it('what the run trains with: optimizer values, the loss and its classes, the seed, the microbatch', () => {
    for (const [k, x] of [['eps', Infinity], ['lr', NaN], ['beta2', -0.5], ['weightDecay', -1], ['lr', 0], ['beta1', 1]] as const) {
      const p = copy(base);
      p.model.optimizerConfig = { ...p.model.optimizerConfig, [k]: x };
      refuse(p, new RegExp(`its optimizer's ${k} is ${x}; it must be a number`));
    }
    refuse({ ...copy(base), model: { ...base.model, optimizer: 'lion' } }, /its optimizer family is 'lion'/);
    refuse({ ...copy(base), model: { ...base.model, loss: 'null' } }, /its loss is null, not one of output, cross-entropy, mse/);
    refuse({ ...copy(base), model: { ...base.model, loss: '{"kind"' } }, /its loss is not readable/);
    for (const classes of [5, 1, 2147483647]) refuse({ ...copy(base), model: { ...base.model, classes } }, new RegExp(`its cross-entropy loss reads ${classes} classes of 'logits', whose last dim is \\d+`));
    const seed = copy(base);
    seed.values[seed.model.lossSeedValue]!.data = undefined;
    refuse(seed, /value \d+ \('.*loss_grad_seed.*'\) holds 0 bytes of data for 4 by its shape/);
    const two = copy(base);
    two.values[two.model.lossSeedValue]!.data = new Uint8Array(new Float32Array([2]).buffer);
    refuse(two, /its backward seed '.*' is not the scalar 1/);
    refuse({ ...copy(base), model: { ...base.model, microbatchSize: base.model.microbatchSize + 1 } }, /is an input of shape \[\d+, \d+\]; its first dim must be the microbatch size, \d+/);
  });
  it('a required input dropped, a gradient list emptied, a name with a line break', () => {
    const p = copy(base);
    const k = p.nodes.findIndex((n) => n.op === 'Add');
    p.nodes[k]!.inputs[0] = -1;
    refuse(p, new RegExp(`node ${k} \\('.*', ${p.nodes[k]!.op}\\) lacks its input 0, which ${p.nodes[k]!.op} needs`));
    const q = copy(base);
    q.stages[0]!.grads = [];
    refuse(q, /which nothing reads \(not a node, a boundary tensor, a gradient, a state update or the loss\)/);
    const r = copy(base);
    r.nodes[3]!.op = 'Re\nlu';
    expect(() => checkPlan(r, 'bad.plan')).toThrow(/op Re\\u000alu is not one cleave runs/);
    try {
      checkPlan(r, 'bad.plan');
    } catch (e) {
      expect((e as Error).message).not.toMatch(/\n/);
    }
  });
  it('an unknown op, and a deadlock the simulator finds', () => {
    const p = copy(base);
    p.nodes[0]!.op = 'NoSuchOp';
    refuse(p, /node 0 \('.*', NoSuchOp\): op NoSuchOp is not one cleave runs/);
    // Swapping two receives on one channel: each list is complete, but the sends meet the wrong receives.
    const q = copy(base);
    const list = q.ranks[1]!.instructions;
    const recvs = list.flatMap((x, i) => (x.kind === 'RECV' && x.peer === 0 ? [i] : []));
    [list[recvs[0]!], list[recvs[1]!]] = [list[recvs[1]!]!, list[recvs[0]!]!];
    refuse(q, /bad\.plan: the plan (is inconsistent|deadlocks)/);
  });
});

describe('plan files carry a checksum', () => {
  const { plan } = compile(opts({}));
  const file = join(dir, 'gpt.plan');
  writePlan(file, plan);

  it('written and verified; the read plan knows it', () => {
    const bytes = readFileSync(file);
    expect(new TextDecoder().decode(bytes.subarray(0, 90))).toMatch(/^CLEAVEPLAN\nsha256 [0-9a-f]{64}\n/);
    expect(readPlan(file).checksum).toMatch(/^[0-9a-f]{64}$/);
  });
  it('one flipped bit anywhere in the body, or a damaged checksum line, is refused', () => {
    const bytes = readFileSync(file);
    for (const at of [90, 200, Math.floor(bytes.length / 2), bytes.length - 1]) {
      const bad = Uint8Array.from(bytes);
      bad[at] ^= 0x10;
      expect(() => decodePlan(bad, 'flip.plan')).toThrow(/flip\.plan: the plan's checksum does not match its contents/);
    }
    const bad = Uint8Array.from(bytes);
    bad[20] = 'g'.charCodeAt(0);
    expect(() => decodePlan(bad, 'line.plan')).toThrow(/line\.plan: the plan's checksum line is damaged/);
    expect(() => decodePlan(bytes.subarray(0, bytes.length - 10), 'cut.plan')).toThrow(/cut\.plan: the plan's checksum does not match/);
  });
  it('a version 6 plan without the line is refused; a version 4 plan (before checksums) still reads', () => {
    const v6 = encodePlan(plan);
    const magic = 'CLEAVEPLAN\n'.length;
    const stripped = new Uint8Array([...v6.subarray(0, magic), ...v6.subarray(magic + 72)]);
    expect(() => decodePlan(stripped, 'strip.plan')).toThrow(/strip\.plan: a version 6 plan without its checksum line/);
    const v4 = decodePlan(encodePlan({ ...plan, version: 4 }), 'v4.plan');
    expect(v4.checksum).toBe('');
    expect(() => checkPlan(v4, 'v4.plan')).not.toThrow();
  });
});

describe('cleave plan print and cleave run refuse a bad plan before anything runs', () => {
  const { plan } = compile(opts({ model: 'fixtures/mlp.onnx', microbatches: 2 }));
  const good = join(dir, 'mlp.plan');
  writePlan(good, plan);
  const flipped = join(dir, 'flipped.plan');
  const bytes = Uint8Array.from(readFileSync(good));
  bytes[bytes.length - 3] ^= 1;
  writeFileSync(flipped, bytes);
  const forged = join(dir, 'forged.plan');
  const p = copy(plan);
  p.ranks[0]!.instructions = p.ranks[0]!.instructions.filter((i) => i.kind !== 'BACKWARD');
  writePlan(forged, p);

  for (const cmd of [['plan', 'print'], ['run']]) {
    it(`${cmd.join(' ')}: damaged bytes, and an inconsistent plan with a good checksum`, () => {
      for (const [file, msg] of [[flipped, /the plan's checksum does not match its contents/], [forged, /the plan is inconsistent: rank 0 never runs the input-gradient work of stage 0 microbatch 0/]] as const) {
        const r = cli([...cmd, file, ...(cmd[0] === 'run' ? ['--steps', '1'] : [])]);
        expect(r.code, r.stdout + r.stderr).toBe(2);
        expect(r.stderr).toMatch(msg);
        expect(r.stderr.trim().split('\n')).toHaveLength(1);
        expect(r.stdout).not.toMatch(/running|loss/);
      }
    });
  }
});
