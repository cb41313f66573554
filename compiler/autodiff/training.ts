import { ModelBuilder } from '../../src/core/ir/builder.js';
import { CleaveError } from '../../src/core/errors.js';
import { cloneGraph } from '../../src/core/ir/clone.js';
import type { Graph, Value } from '../../src/core/ir/graph.js';
import { validateGraph } from '../../src/core/ir/validate.js';
import { getOp } from '../../src/core/ops/index.js';
import { backward, markInputAndWeightWork } from './backward.js';
import { type LossSpec, addLoss } from './loss.js';

export interface TrainingOptions {
  loss: LossSpec;
  /** Run ops in their training form (BatchNorm on batch statistics, Dropout dropping). Default true. */
  trainingMode?: boolean;
  /** A pass over the forward graph (this function's copy of it) before the loss and autodiff: fusions. */
  rewrite?: (g: Graph) => unknown;
}

/**
 * The training graph: the model's forward nodes (phase 'forward'), the loss ('loss'), and the
 * backward nodes ('backwardB' or 'backwardW'). Its outputs are the loss, then the gradient of each
 * parameter (`grad:NAME`), then updated state (`state:NAME`).
 */
export interface TrainingGraph {
  graph: Graph;
  loss: Value;
  labels?: Value;
  /** Parameter name → its gradient output. Parameters no gradient reaches are absent. */
  grads: Map<string, Value>;
  /** State name → its updated value. */
  stateUpdates: Map<string, Value>;
  /** The constant dLoss/dLoss = 1 that seeds the backward pass. */
  seed: Value;
}

/** Swaps ops that have a training form (BatchNorm, Dropout) for it. */
function toTrainingForm(g: Graph): void {
  for (const n of [...g.nodes]) {
    const def = getOp(n.op, `node '${n.name}'`);
    if (!def.training) continue;
    const { attrs, numOutputs } = def.training(n.attrs, n.outputs.length);
    const ctx = { node: n.name, inputs: n.inputs, numOutputs, attrs, consts: [] };
    const types = def.infer(ctx);
    g.replaceNode(n, {
      op: n.op, inputs: n.inputs, attrs, meta: n.meta,
      outputs: types.map((t, i) => ({ name: n.outputs[i]?.name ?? g.uniqueName(`${n.name}_output_${i}`), dtype: t.dtype, shape: t.shape })),
    });
  }
}

/**
 * The loss nodes take the partition of the output they read, when it has one: left unannotated,
 * they would go to default_partition with auto partitioning off — before the stage that makes
 * the output, which is a backward edge.
 */
function lossFollowsOutput(g: Graph): void {
  const lossNodes = g.nodes.filter((n) => n.meta['phase'] === 'loss');
  const stages = lossNodes.flatMap((n) => n.inputs.map((v) => v?.producer?.meta['phase'] === 'forward' ? v.producer.meta.partition : undefined))
    .filter((s): s is number => s !== undefined);
  if (!stages.length) return;
  const stage = Math.max(...stages);
  for (const n of lossNodes) if (n.meta.partition === undefined) n.meta.partition = stage;
}

export function buildTrainingGraph(inference: Graph, opts: TrainingOptions): TrainingGraph {
  const g = cloneGraph(inference);
  g.name = `${inference.name}.train`;
  if (opts.trainingMode !== false) toTrainingForm(g);
  opts.rewrite?.(g);
  for (const n of g.nodes) n.meta = { ...n.meta, phase: 'forward' };
  const b = new ModelBuilder(g);
  const { loss, labels } = b.within('/loss/', { phase: 'loss' }, () => addLoss(b, opts.loss));
  lossFollowsOutput(g);
  const params = g.params();
  if (!params.length) throw new CleaveError(`model '${inference.name}' has no trainable parameters`);
  const { grads, activationGrads, seed } = backward(b, loss, params);

  // State updates: each op that updates state gives its new value as an output.
  const stateUpdates = new Map<string, Value>();
  for (const n of g.nodes) {
    for (const [out, inp] of getOp(n.op, n.name).stateUpdates ?? []) {
      const s = n.inputs[inp];
      if (s?.kind === 'state' && n.outputs[out]) stateUpdates.set(s.name, n.outputs[out]!);
    }
  }
  g.outputs.length = 0;
  g.addOutput(loss);
  const gradOut = new Map<string, Value>();
  for (const [p, d] of grads) {
    // A gradient that is itself a parameter or input (d(x)/dx paths) gets an Identity to name it.
    const v = d.kind === 'node' && !g.outputs.includes(d) ? d : b.within('/grad/', { phase: 'backward' }, () => b.op('Identity', [d]));
    gradOut.set(p.name, b.output(v, g.uniqueName(`grad:${p.name}`)));
  }
  for (const [s, v] of stateUpdates) stateUpdates.set(s, b.output(v.kind === 'node' && !g.outputs.includes(v) ? v : b.op('Identity', [v]), g.uniqueName(`state:${s}`)));
  g.removeDeadCode();
  markInputAndWeightWork(g, activationGrads);
  validateGraph(g);
  return { graph: g, loss, labels, grads: gradOut, stateUpdates, seed };
}
