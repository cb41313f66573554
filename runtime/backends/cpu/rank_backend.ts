import { CleaveError } from '../../../src/core/errors.js';
import { dtypeFromOnnx } from '../../../src/core/ir/dtype.js';
import type { Attrs } from '../../../src/core/ir/graph.js';
import { type Tensor, tensor, tensorFromBytes } from '../../../src/core/ir/tensor.js';
import { type OpDef, getOp } from '../../../src/core/ops/index.js';
import { attrsFromJson } from '../../../src/core/plan/attrs.js';
import { PROGRAMS, type StageProgram } from '../../../src/core/plan/programs.js';
import type { Instruction, Plan, PlanStage } from '../../../src/core/plan/types.js';
import type { Backend, Feeds, OptimizerOptions } from '../../executor/backend.js';
import { type OptimizerConfig, Optimizer, type ParamSlot } from '../../optim/optimizer.js';
import type { Transport } from '../../transport/transport.js';

interface Op { def: OpDef; name: string; attrs: Attrs; inputs: number[]; outputs: number[] }


export const messageTag = (tensor: number, mb: number): string => `tensor ${tensor} mb ${mb}`;

/**
 * One rank's CPU backend: holds the parameters and state of its stages, runs their programs on the
 * registry's kernels with one environment of values per microbatch, accumulates gradient
 * contributions in float64, and moves boundary tensors and gradient buckets over the transport.
 * (JavaScript owns memory here; the plan's arena offsets are for the CUDA backend.)
 */
export class CpuRankBackend implements Backend {
  private readonly programs = new Map<string, Op[]>();
  private readonly stages: PlanStage[];
  private readonly resident = new Map<number, Tensor>();
  private readonly grads = new Map<number, Float64Array>();
  private readonly env = new Map<number, Map<number, Tensor>>();
  private readonly lossByMb = new Map<number, number>();
  optimizer: Optimizer;
  /** Parameters this rank's gradient norm counts (a tied weight once, on its lowest rank). */
  private readonly owned = new Set<number>();

  constructor(readonly plan: Plan, readonly rank: number, private readonly transport: Transport, weights: ReadonlyMap<string, Tensor>, optimizer: OptimizerConfig) {
    const me = plan.ranks[rank]!;
    this.stages = plan.stages.filter((s) => s.ppRank === me.ppRank);
    this.optimizer = new Optimizer(optimizer);
    const ops = plan.nodes.map((n) => ({ def: getOp(n.op, `node '${n.name}'`), name: n.name, attrs: attrsFromJson(n.attrs), inputs: n.inputs, outputs: n.outputs }));
    for (const s of this.stages) {
      for (const k of ['forward', 'backwardB', 'backwardW'] as const) this.programs.set(`${s.index}:${k}`, s[k].map((i) => ops[i]!));
      // Parameters, state and constants the stage's programs read live on the rank for the whole run.
      for (const k of ['forward', 'backwardB', 'backwardW'] as const) {
        for (const i of s[k]) for (const v of plan.nodes[i]!.inputs) if (v >= 0) this.loadResident(v, weights);
      }
      for (const g of s.grads) {
        this.loadResident(g.param, weights);
        if (!this.grads.has(g.param)) this.grads.set(g.param, new Float64Array(this.resident.get(g.param)!.data.length));
      }
    }
    // A parameter held by several pipeline ranks is counted by the lowest of them.
    const holders = new Map<number, number>();
    for (const s of plan.stages) for (const g of s.grads) holders.set(g.param, Math.min(holders.get(g.param) ?? Infinity, s.ppRank));
    for (const p of this.grads.keys()) if (holders.get(p) === me.ppRank) this.owned.add(p);
  }

  private loadResident(v: number, weights: ReadonlyMap<string, Tensor>): void {
    if (this.resident.has(v)) return;
    const pv = this.plan.values[v]!;
    if (pv.kind === 'const') {
      const dtype = dtypeFromOnnx(pv.dtype, pv.name);
      this.resident.set(v, pv.data && pv.data.length ? tensorFromBytes(dtype, pv.shape, pv.data, pv.name) : tensor(dtype, pv.shape));
    } else if (pv.kind === 'param' || pv.kind === 'state') {
      const w = weights.get(pv.name);
      if (!w) throw new CleaveError(`rank ${this.rank}: the weights have no tensor '${pv.name}'`);
      if (w.shape.join() !== pv.shape.join()) throw new CleaveError(`rank ${this.rank}: weight '${pv.name}' has shape [${w.shape}], the plan expects [${pv.shape}]`);
      // Each rank owns its copy: tied copies on several ranks are updated alike.
      this.resident.set(v, { dtype: w.dtype, shape: [...w.shape], data: w.data.slice() });
    }
  }

  /** Replaces the optimizer (its state starts fresh). */
  configureOptimizer(config: OptimizerConfig): void {
    this.optimizer = new Optimizer(config);
  }

  /** Parameters and state of this rank, by name (for checkpoints and export). */
  tensors(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const [v, t] of this.resident) {
      const pv = this.plan.values[v]!;
      if (pv.kind === 'param' || pv.kind === 'state') out.set(pv.name, t);
    }
    return out;
  }

  beginStep(): void {
    for (const g of this.grads.values()) g.fill(0);
    this.env.clear();
    this.lossByMb.clear();
  }

  private envOf(mb: number): Map<number, Tensor> {
    let e = this.env.get(mb);
    if (!e) this.env.set(mb, (e = new Map()));
    return e;
  }

  async compute(ins: Instruction, feeds: Feeds): Promise<void> {
    const env = this.envOf(ins.stage === -1 ? 0 : ins.mb);
    const stage = this.plan.stages[ins.stage]!;
    const read = (v: number): Tensor | null => {
      if (v < 0) return null;
      const t = env.get(v) ?? this.resident.get(v) ?? this.envShared(v, ins.mb);
      if (t) return t;
      const pv = this.plan.values[v]!;
      if (pv.kind === 'input') {
        const f = feeds[pv.name];
        if (!f) throw new CleaveError(`the batch has no input '${pv.name}'`);
        return f;
      }
      throw new CleaveError(`value '${pv.name}' of microbatch ${ins.mb} is not on this rank`);
    };
    for (const k of PROGRAMS[ins.kind]!) {
      for (const op of this.programs.get(`${ins.stage}:${k}`)!) {
        const outs = op.def.cpu!(op.inputs.map(read), op.attrs, op.outputs.length);
        op.outputs.forEach((v, i) => env.set(v, outs[i]!));
      }
    }
    // Gradient contributions made by what just ran are summed over microbatches.
    for (const g of stage.grads) {
      const t = env.get(g.value);
      if (!t || !PROGRAMS[ins.kind]!.some((k) => this.producedIn(stage, k, g.value))) continue;
      const acc = this.grads.get(g.param)!;
      for (let i = 0; i < acc.length; i++) acc[i]! += t.data[i]!;
    }
    if (ins.kind === 'FORWARD') {
      for (const s of stage.states) {
        const t = env.get(s.value);
        if (t) this.resident.get(s.state)!.data.set(t.data);
      }
      const loss = env.get(this.plan.model.lossValue);
      if (loss && this.producedIn(stage, 'forward', this.plan.model.lossValue)) this.lossByMb.set(ins.mb, loss.data[0]!);
    }
  }

  private readonly producers = new Map<string, Set<number>>();
  private producedIn(stage: PlanStage, k: StageProgram, v: number): boolean {
    const key = `${stage.index}:${k}`;
    let set = this.producers.get(key);
    if (!set) {
      set = new Set(stage[k].flatMap((i) => this.plan.nodes[i]!.outputs));
      this.producers.set(key, set);
    }
    return set.has(v);
  }

  /** Values produced by another stage of this same rank (interleaved and V placements). */
  private envShared(v: number, mb: number): Tensor | undefined {
    return this.env.get(mb)?.get(v);
  }

  async send(ins: Instruction): Promise<void> {
    const t = this.plan.tensors[ins.tensor]!;
    const data = this.env.get(ins.mb)?.get(t.value);
    if (!data) throw new CleaveError(`tensor ${ins.tensor} ('${this.plan.values[t.value]!.name}') of microbatch ${ins.mb} has not been computed`);
    this.transport.send(ins.peer, messageTag(ins.tensor, ins.mb), data.data as Float32Array);
  }

  async recv(ins: Instruction): Promise<void> {
    const t = this.plan.tensors[ins.tensor]!;
    const pv = this.plan.values[t.value]!;
    const view = await this.transport.recv(ins.peer, messageTag(ins.tensor, ins.mb));
    const dtype = dtypeFromOnnx(pv.dtype, pv.name);
    this.envOf(ins.mb).set(t.value, { dtype, shape: pv.shape, data: view as Float32Array });
  }

  async allreduce(ins: Instruction): Promise<void> {
    const b = this.plan.buckets[ins.bucket]!;
    const g = this.plan.groups[ins.group]!;
    const params = b.params.filter((p) => this.grads.has(p));
    const flat = new Float64Array(params.reduce((a, p) => a + this.grads.get(p)!.length, 0));
    let o = 0;
    for (const p of params) { flat.set(this.grads.get(p)!, o); o += this.grads.get(p)!.length; }
    await this.transport.allreduce(g.ranks, `bucket ${b.id}`, flat);
    o = 0;
    for (const p of params) {
      const acc = this.grads.get(p)!;
      for (let i = 0; i < acc.length; i++) acc[i] = flat[o + i]! * b.scale;
      o += acc.length;
    }
  }

  losses(): Map<number, number> {
    return this.lossByMb;
  }

  async optimizerStep(o: OptimizerOptions): Promise<{ gradNorm: number }> {
    const m = this.plan.schedule.microbatches;
    for (const acc of this.grads.values()) for (let i = 0; i < acc.length; i++) acc[i]! /= m;
    // Global norm: each rank's owned squared norm, summed over every rank; replicas are identical.
    let sq = 0;
    for (const p of this.owned) for (const x of this.grads.get(p)!) sq += x * x;
    const total = new Float64Array([sq / this.plan.world.dp]);
    await this.transport.allreduce([...Array(this.plan.world.size).keys()], 'gradient norm', total);
    const norm = Math.sqrt(total[0]!);
    if (o.clip !== undefined) {
      const coef = o.clip / (norm + 1e-6);
      if (coef < 1) for (const acc of this.grads.values()) for (let i = 0; i < acc.length; i++) acc[i]! *= coef;
    }
    const slots: ParamSlot[] = [...this.grads].map(([p, grad]) => ({ name: this.plan.values[p]!.name, value: this.resident.get(p)!.data as Float32Array, grad }));
    this.optimizer.step(slots, o.lr);
    return { gradNorm: norm };
  }
}
