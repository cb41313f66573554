import { buildTrainingGraph } from '../../compiler/autodiff/training.js';
import { toFloat64 } from '../../compiler/passes/precision.js';
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { Graph, type Node, type Value } from '../../src/core/ir/graph.js';
import type { Tensor } from '../../src/core/ir/tensor.js';
import { Rng } from '../../src/core/util/random.js';

export interface GradCheckResult {
  /** Worst normwise relative error over parameters: max|analytic − numeric| / max|numeric|. */
  f64: number;
  f32: number;
  checked: number;
}

/**
 * Central finite differences in float64 against the training graph's gradients in float64 and in
 * float32, on `samples` entries per parameter (all of them when fewer). `g` must end in a scalar
 * loss output named by `loss`.
 */
export function gradCheck(g: Graph, feeds: Record<string, Tensor>, opts: { samples?: number; h?: number; seed?: number; trainingMode?: boolean } = {}): GradCheckResult {
  const h = opts.h ?? 1e-6;
  const spec = { loss: { kind: 'output' as const, output: g.outputs[0]!.name }, trainingMode: opts.trainingMode ?? false };
  const g64 = toFloat64(g);
  const t64 = buildTrainingGraph(g64, spec);
  const t32 = buildTrainingGraph(g, spec);
  const feeds64 = Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, t.dtype === 'float32' ? { ...t, dtype: 'float64' as const, data: Float64Array.from(t.data) } : t]));
  const a64 = runGraph(t64.graph, feeds64);
  const a32 = runGraph(t32.graph, feeds);
  // Differences are taken on the training graph itself, so ops run in the same (training) form:
  // on the part of it that the loss depends on (its forward), which computes the loss node for node
  // as the whole graph does, without the backward work whose results the differences never read.
  const forward64 = lossGraph(t64.graph, t64.loss);
  const lossAt = (): number => runGraph(forward64, feeds64).get(t64.loss.name)!.data[0]!;
  const whole = a64.get(t64.loss.name)!.data[0]!;
  if (!Object.is(lossAt(), whole)) throw new Error(`gradCheck: the loss's own nodes give ${lossAt()}, the whole training graph ${whole}`);
  const rng = new Rng(opts.seed ?? 1);
  let f64 = 0, f32 = 0, checked = 0;
  for (const p of g64.params()) {
    const data = p.data!.data;
    const n = data.length;
    const idx = n <= (opts.samples ?? 16) ? [...Array(n).keys()] : Array.from({ length: opts.samples ?? 16 }, () => rng.int(n));
    const gradName = t64.grads.get(p.name)?.name;
    const an64 = gradName ? a64.get(gradName)!.data : new Float64Array(n);
    const an32 = gradName ? a32.get(t32.grads.get(p.name)!.name)!.data : new Float32Array(n);
    let diff64 = 0, diff32 = 0, scale = 0;
    for (const i of idx) {
      const x = data[i]!;
      data[i] = x + h;
      const up = lossAt();
      data[i] = x - h;
      const down = lossAt();
      data[i] = x;
      const num = (up - down) / (2 * h);
      diff64 = Math.max(diff64, Math.abs(an64[i]! - num));
      diff32 = Math.max(diff32, Math.abs(an32[i]! - num));
      scale = Math.max(scale, Math.abs(num));
      checked++;
    }
    const s = scale || 1;
    f64 = Math.max(f64, diff64 / s);
    f32 = Math.max(f32, diff32 / s);
  }
  return { f64, f32, checked };
}

/** `g` cut down to the nodes that `loss` depends on, in their order, with `loss` its only output. */
function lossGraph(g: Graph, loss: Value): Graph {
  const needed = new Set<Node>();
  const stack: Value[] = [loss];
  while (stack.length) {
    const n = stack.pop()!.producer;
    if (!n || needed.has(n)) continue;
    needed.add(n);
    for (const v of n.inputs) if (v) stack.push(v);
  }
  return Object.assign(Object.create(Graph.prototype) as Graph, g, { nodes: g.nodes.filter((n) => needed.has(n)), outputs: [loss] });
}
