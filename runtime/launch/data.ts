import { dtypeFromOnnx } from '../../src/core/ir/dtype.js';
import { Value } from '../../src/core/ir/graph.js';
import { type Tensor, tensor } from '../../src/core/ir/tensor.js';
import type { Plan } from '../../src/core/plan/types.js';
import { CleaveError } from '../../src/core/errors.js';
import { type DataSource, type DataSpec, defaultTask, openData } from '../data/sources.js';
import type { Feeds } from '../executor/backend.js';
import type { RunOptions } from './options.js';

/** The plan's inputs (and labels), as the data sources want them described. */
export function dataSpec(plan: Plan): DataSpec {
  const asValue = (i: number) => {
    const v = plan.values[i]!;
    return new Value(v.name, dtypeFromOnnx(v.dtype, v.name), v.shape, 'input');
  };
  const inputs = plan.values.map((v, i) => [v, i] as const).filter(([v, i]) => v.kind === 'input' && i !== plan.model.labelsValue).map(([, i]) => asValue(i));
  const labels = plan.model.labelsValue >= 0 ? asValue(plan.model.labelsValue) : undefined;
  const lossKind = (JSON.parse(plan.model.loss) as { kind: 'output' | 'cross-entropy' | 'mse' }).kind;
  return { inputs, labels, lossKind };
}

/** Rows [from, from + n) of every tensor in a batch. */
export function rows(batch: Record<string, Tensor>, from: number, n: number): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [k, t] of Object.entries(batch)) {
    const row = t.data.length / t.shape[0]!;
    out[k] = tensor(t.dtype, [n, ...t.shape.slice(1)], t.data.subarray(from * row, (from + n) * row));
  }
  return out;
}


/**
 * The data a replica draws: the bundled task or the --data file, seeded by its data-parallel rank
 * (a folder of arrays sharded by it); none when the run's batches are given.
 */
export function replicaSource(plan: Plan, o: RunOptions, dpRank: number): DataSource | undefined {
  const spec = dataSpec(plan);
  const seed = (o.seed ?? 0) + 7919 * dpRank;
  const vocab = plan.model.classes || 2;
  if (o.data.kind === 'default') return defaultTask(spec, { vocab, classes: vocab, seed });
  if (o.data.kind === 'path') return openData(o.data.path, spec, { tokenType: o.data.tokenType, vocab, seed, shard: dpRank, shards: plan.world.dp });
  return undefined;
}

/** A replica's feeds for step `step` (from 0), by microbatch: its rows of the given batch, or its source's next. */
export function stepFeeds(plan: Plan, o: RunOptions, source: DataSource | undefined, dpRank: number, step: number): Feeds[] {
  const m = plan.schedule.microbatches, mb = plan.model.microbatchSize, B = m * mb;
  let batch: Record<string, Tensor>;
  if (o.data.kind === 'batches') {
    const global = o.data.batches[step];
    if (!global) throw new CleaveError(`no batch given for step ${step + 1}`);
    batch = rows(global, dpRank * B, B);
  } else batch = source!.next(B);
  return Array.from({ length: m }, (_, k) => rows(batch, k * mb, mb));
}
