import type { Command } from 'commander';
import { dirname } from 'node:path';
import { type LossSpec, autoLoss } from '../../compiler/autodiff/loss.js';
import { buildTrainingGraph } from '../../compiler/autodiff/training.js';
import { type OptimizerFamily, scheduleName } from '../../compiler/cost/memory.js';
import { DTYPE_POLICIES, type DtypePolicy, readMeasuredProfile } from '../../compiler/cost/model.js';
import { readModelFile } from '../../compiler/onnx/codec.js';
import { importModel } from '../../compiler/onnx/import.js';
import { type Partition, type PartitionOptions, partitionTraining } from '../../compiler/partition/partition.js';
import { type SmpConfig, readSmpConfig } from '../api/config.js';
import { CleaveError } from '../errors.js';
import { formatBytes, formatCount, table } from './format.js';
import { dimBinding, positiveInt } from './options.js';

const OPTIMIZERS: Record<string, OptimizerFamily> = { sgd: 'sgd', 'sgd-momentum': 'sgd-momentum', adam: 'adam', adamw: 'adamw' };

export interface PartitionFlags {
  partitions?: number; virtualStages?: number; memoryWeight?: string; device?: string; assign?: string[];
  autoPartition?: boolean; defaultPartition?: string; batch: number; microbatches?: number; schedule?: string;
  optimizer?: string; dtype?: string; profile?: string; loss: string; config?: string; dim?: Record<string, number>; json?: boolean;
}

/** Command-line flags over the config file over `base` (a model file's own config) over defaults. */
export function partitionOptions(o: PartitionFlags, base: SmpConfig = {}): PartitionOptions & { schedule: ReturnType<typeof scheduleName> } {
  const c: SmpConfig = { ...base, ...(o.config ? readSmpConfig(o.config) : {}) };
  const num = (flag: string, v: string | undefined): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n)) throw new CleaveError(`${flag} must be a number, got '${v}'`);
    return n;
  };
  const opt = o.optimizer ?? c.optimizer ?? 'adamw';
  if (!OPTIMIZERS[opt]) throw new CleaveError(`--optimizer must be one of ${Object.keys(OPTIMIZERS).join(', ')}; got '${opt}'`);
  const dtype = o.dtype ?? c.dtype ?? 'fp32';
  if (!(DTYPE_POLICIES as readonly string[]).includes(dtype)) throw new CleaveError(`--dtype must be ${DTYPE_POLICIES.join(', ')}; got '${dtype}'`);
  const partitions = o.partitions ?? c.partitions;
  if (partitions === undefined) throw new CleaveError('give the number of pipeline stages with -p N (or "partitions" in --config)');
  return {
    partitions,
    virtualStages: o.virtualStages ?? c.virtual_stages,
    memoryWeight: num('--memory-weight', o.memoryWeight) ?? c.memory_weight,
    device: o.device ?? c.device,
    assign: [...(c.assign ?? []), ...(o.assign ?? [])],
    autoPartition: o.autoPartition ?? c.auto_partition,
    defaultPartition: num('--default-partition', o.defaultPartition) ?? c.default_partition,
    microbatches: o.microbatches ?? c.microbatches,
    schedule: scheduleName(o.schedule ?? c.pipeline ?? '1f1b'),
    optimizer: OPTIMIZERS[opt],
    policy: dtype as DtypePolicy,
    measured: o.profile ? readMeasuredProfile(o.profile) : undefined,
  };
}

export function lossFromFlag(loss: string): LossSpec | 'auto' {
  if (loss === 'auto') return 'auto';
  if (loss === 'cross-entropy' || loss === 'mse' || loss === 'output') return { kind: loss };
  throw new CleaveError(`--loss must be one of auto, output, cross-entropy, mse; got '${loss}'`);
}

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

function short(name: string, width = 28): string {
  return name.length <= width ? name : `…${name.slice(name.length - width + 1)}`;
}

export function renderPartition(part: Partition): string {
  const rows = part.stages.map((s) => {
    const sent = s.sends.reduce((a, x) => a + x.bytes, 0);
    return [
      String(s.index), String(s.rank), String(s.nodes.length),
      `${short(s.nodes[0]?.name ?? '—')} → ${short(s.nodes[s.nodes.length - 1]?.name ?? '—')}`,
      formatCount(s.paramCount), s.fwdMs.toFixed(3), s.bwdMs.toFixed(3), s.commMs.toFixed(3),
      (s.memory.total / 2 ** 30).toFixed(3), s.sends.length ? `${s.sends.length} (${formatBytes(sent)})` : '—',
    ];
  });
  const lines = [
    `${part.mode} partition into ${part.stages.length} stages on ${part.device} (${(part.capacityBytes / 2 ** 30).toFixed(0)} GiB per stage)`,
    table(['stage', 'rank', 'nodes', 'first → last node', 'params', 'fwd ms', 'bwd ms', 'comm ms', 'memory GiB', 'sends'], rows),
    `imbalance ${part.imbalance.toFixed(3)} (slowest stage ÷ mean)`,
  ];
  if (part.tied.length) {
    lines.push(`tied parameters (a copy per stage, gradients all-reduced): ${part.tied.map((t) => `${t.param} on stages ${t.stages.join(', ')}`).join('; ')}`);
  }
  return lines.join('\n') + '\n';
}

export function partitionJson(part: Partition): unknown {
  return {
    mode: part.mode, device: part.device, imbalance: part.imbalance, tied: part.tied,
    stages: part.stages.map((s) => ({
      stage: s.index, rank: s.rank, nodes: s.nodes.length, backwardNodes: s.backward.length,
      first: s.nodes[0]?.name, last: s.nodes[s.nodes.length - 1]?.name,
      scopes: [...new Set(s.nodes.map((n) => n.scope.split('/').slice(0, 2).join('/') + '/'))],
      params: s.paramCount, fwdMs: s.fwdMs, bwdMs: s.bwdMs, commMs: s.commMs, memoryBytes: s.memory,
      sends: s.sends.map((x) => ({ value: x.value.name, to: x.to, bytes: x.bytes })),
    })),
  };
}

export function registerPartition(program: Command): void {
  program
    .command('partition')
    .description('split a model\'s training graph into pipeline stages and print the per-stage plan')
    .argument('<model>', 'ONNX model file')
    .option('-p, --partitions <n>', 'pipeline stages (SMP partitions)', positiveInt('-p'))
    .option('--virtual-stages <v>', 'stages per rank (interleaved schedules)', positiveInt('--virtual-stages'))
    .option('--memory-weight <w>', 'SMP memory_weight in [0, 1]: balance memory (1) or time (0); default 0.8')
    .option('--device <name>', 'cost profile: h100, h200, a100, cpu (default h100)')
    .option('--assign <regex=stage>', 'place nodes whose name matches on a stage (repeatable)', collect)
    .option('--auto-partition', 'place unannotated nodes automatically (default)')
    .option('--no-auto-partition', 'put unannotated nodes on --default-partition')
    .option('--default-partition <k>', 'stage for unannotated nodes when auto partitioning is off')
    .option('--batch <n>', 'microbatch size', positiveInt('--batch'), 1)
    .option('--microbatches <m>', 'microbatches per step (activations in flight)', positiveInt('--microbatches'))
    .option('--schedule <name>', 'gpipe, 1f1b, interleaved-1f1b, zb-h1, zbv (SMP: simple, interleaved)')
    .option('--optimizer <kind>', 'sgd, sgd-momentum, adam, adamw (optimizer state in memory)')
    .option('--dtype <policy>', 'fp32, bf16 (mixed precision), or fp16 (mixed precision with dynamic loss scaling)')
    .option('--profile <file>', 'measured op times (JSON) that override the estimates')
    .option('--loss <kind>', 'loss of the training graph: auto, output, cross-entropy, mse', 'auto')
    .option('--config <file>', 'SMP-style JSON config (partitions, microbatches, pipeline, auto_partition, …)')
    .option('--dim <name=size>', 'bind a named symbolic dimension (repeatable)', dimBinding)
    .option('--json', 'print the partition as JSON')
    .action((model: string, o: PartitionFlags) => {
      const opts = partitionOptions(o);
      const g = importModel(readModelFile(model), { baseDir: dirname(model), file: model }, { batch: o.batch, dims: o.dim });
      const loss = lossFromFlag(o.loss);
      const t = buildTrainingGraph(g, { loss: loss === 'auto' ? autoLoss(g) : loss });
      const part = partitionTraining(t, opts);
      process.stdout.write(o.json ? JSON.stringify(partitionJson(part), null, 2) + '\n' : renderPartition(part));
    });
}
