import type { Graph } from '../../src/core/ir/graph.js';
import { CANONICAL, attentionFusion } from './attention.js';
import { GELU_RULES } from './gelu.js';
import { GEMM_ROWS } from './gemm.js';
import { GLU_RULES } from './glu.js';
import { NORM_RULES } from './norms.js';
import { applyRules } from './rewrite.js';
import { rotaryRules } from './rotary.js';
import type { Frozen } from './buffers.js';

/** What a compile rewrote: each rule with its count, the buffers made constants, and what it left unfused. */
export interface FusionReport {
  /** Rule name → how often it applied, in the order the passes ran. */
  rules: { rule: string; count: number }[];
  /** Initializers the import made constants by their role (rotary tables, masks). */
  frozen: readonly Frozen[];
  /** Attention-like subgraphs (a Softmax over scores) left as written, with the reason. */
  unfused: { node: string; scope: string; reason: string }[];
  /** Parameters the exporter made by folding computations on the model's own (trained as they are). */
  folded: readonly string[];
}

export const emptyFusionReport = (frozen: readonly Frozen[] = [], folded: readonly string[] = []): FusionReport => ({ rules: [], frozen, unfused: [], folded });

/**
 * Runs the forward-graph fusions on `g`, adding what they did to `into`: rotary embeddings first
 * (moved onto the rows before the head split), then attention (its rows read the scores as
 * exporters write them), the canonical and product rows again over what the attention rows left
 * (a head merge's transposes against the model's own), then RMSNorm, GELU and the gated MLP units.
 */
export function fuseForward(g: Graph, into: FusionReport): void {
  // Rotary first: moved before the head split, it leaves q and k rows the attention reads in place.
  const rope = applyRules(g, rotaryRules());
  const a = attentionFusion(g);
  const add = (counts: ReadonlyMap<string, number>): void => {
    for (const [rule, count] of counts) {
      const had = into.rules.find((r) => r.rule === rule);
      if (had) had.count += count;
      else into.rules.push({ rule, count });
    }
  };
  add(rope);
  add(a.rules);
  into.unfused.push(...a.unfused);
  add(applyRules(g, [...CANONICAL, ...GEMM_ROWS]));
  add(applyRules(g, NORM_RULES));
  add(applyRules(g, GELU_RULES));
  add(applyRules(g, GLU_RULES));
  g.removeDeadCode();
}
