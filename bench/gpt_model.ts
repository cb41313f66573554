// The benchmark GPT (24 layers, d 2048, 16 heads, seq 1024, vocab 50304 by default: pre-LN, learned
// positions, GELU-tanh MLP of 4d, untied LM head) and its random weights, shared by the single-GPU
// and the pipeline benchmarks so that both train the same model from the same numbers.
import { foldConstants } from '../compiler/passes/fold.js';
import { buildGpt } from '../fixtures/models.js';
import type { Graph } from '../src/core/ir/graph.js';
import type { Tensor } from '../src/core/ir/tensor.js';
import '../src/core/ops/index.js';

export interface GptConfig { layers: number; dim: number; heads: number; seq: number; vocab: number; micro: number }

export function benchGpt(c: GptConfig): Graph {
  const g = buildGpt({ vocab: c.vocab, seq: c.seq, dim: c.dim, heads: c.heads, layers: c.layers, tied: false, seed: 1, lazy: true, batch: c.micro, gelu: 'tanh' });
  // The causal mask is computed by ops on constants: fold it, as the importer would.
  foldConstants(g);
  return g;
}

/**
 * Random weights without a Box–Muller per element: one linear congruential stream over every
 * parameter in order, scaled like the builder's initializers. `keep` limits which tensors are
 * stored (a pipeline rank's own); the stream still runs over all, so every rank sees the same values.
 */
export function randomWeights(g: Graph, keep: (name: string) => boolean = () => true): Map<string, Tensor> {
  const weights = new Map<string, Tensor>();
  let state = 12345;
  for (const p of [...g.params(), ...g.states()]) {
    const n = (p.shape as number[]).reduce((a, b) => a * b, 1);
    const init = p.init!;
    const stored = keep(p.name);
    const data = stored ? new Float32Array(n) : undefined;
    if (init.kind === 'ones') data?.fill(1);
    else if (init.kind !== 'zeros') {
      const scale = init.kind === 'normal' ? init.std * Math.sqrt(3) : init.bound;
      for (let i = 0; i < n; i++) {
        state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
        if (data) data[i] = ((state / 4294967296) * 2 - 1) * scale;
      }
    }
    if (data) weights.set(p.name, { dtype: 'float32', shape: [...(p.shape as number[])], data });
  }
  return weights;
}
