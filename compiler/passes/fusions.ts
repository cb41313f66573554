import type { Graph } from '../../src/ir/graph.js';
import { attentionFusion } from './attention.js';
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

/** Runs the forward-graph fusions (attention, rotary embeddings, RMSNorm) on `g`, adding what they did to `into`. */
export function fuseForward(g: Graph, into: FusionReport): void {
  const a = attentionFusion(g);
  for (const [rule, count] of a.rules) into.rules.push({ rule, count });
  into.unfused.push(...a.unfused);
  for (const [rule, count] of applyRules(g, rotaryRules())) into.rules.push({ rule, count });
  for (const [rule, count] of applyRules(g, NORM_RULES)) into.rules.push({ rule, count });
  g.removeDeadCode();
}
