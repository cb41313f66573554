import type { Command } from 'commander';
import { partitionModel } from '../../../compiler/compile.js';
import type { ScheduleName } from '../../../compiler/cost/memory.js';
import type { Partition } from '../../../compiler/partition/partition.js';
import { type CompileFlags, compileOptions, partitionFlags } from './compile_flags.js';
import { formatBytes, formatCount, table } from '../../core/util/format.js';

function short(name: string, width = 28): string {
  return name.length <= width ? name : `…${name.slice(name.length - width + 1)}`;
}

/** The microbatches the memory column holds activations for: `--batch` ÷ `-m`, as `compile` splits them. */
export interface PartitionBatch { microbatches: number; microbatchSize: number }

export function renderPartition(part: Partition, batch?: PartitionBatch): string {
  const rows = part.stages.map((s) => {
    const sent = s.sends.reduce((a, x) => a + x.bytes, 0);
    return [
      String(s.index), String(s.rank), String(s.nodes.length),
      `${short(s.nodes[0]?.name ?? '—')} → ${short(s.nodes[s.nodes.length - 1]?.name ?? '—')}`,
      formatCount(s.paramCount), s.fwdMs.toFixed(3), s.bwdMs.toFixed(3), s.commMs.toFixed(3),
      formatBytes(s.memory.total), s.sends.length ? `${s.sends.length} (${formatBytes(sent)})` : '—',
    ];
  });
  const lines = [
    `${part.mode} partition into ${part.stages.length} stages on ${part.device} (${(part.capacityBytes / 2 ** 30).toFixed(0)} GiB per stage)${batch ? `; ${batch.microbatches} microbatches of ${batch.microbatchSize}` : ''}`,
    table(['stage', 'rank', 'nodes', 'first → last node', 'params', 'fwd ms', 'bwd ms', 'comm ms', 'memory', 'sends'], rows),
    `imbalance ${part.imbalance.toFixed(3)} (slowest stage ÷ mean)`,
  ];
  if (part.tied.length) {
    lines.push(`tied parameters (a copy per stage, gradients all-reduced): ${part.tied.map((t) => `${t.param} on stages ${t.stages.join(', ')}`).join('; ')}`);
  }
  return lines.join('\n') + '\n';
}

export function partitionJson(part: Partition, batch?: PartitionBatch): unknown {
  return {
    mode: part.mode, device: part.device, ...batch, imbalance: part.imbalance, tied: part.tied,
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
  const cmd = program
    .command('partition')
    .description('split a model\'s training graph into pipeline stages, exactly as cleave compile does, and print the per-stage plan')
    .argument('<model>', 'ONNX model file');
  partitionFlags(cmd)
    .option('--optimizer <kind>', 'sgd, sgd-momentum, adam, adamw: the optimizer state memory holds (default adamw)')
    .option('--json', 'print the partition as JSON')
    .action((model: string, o: CompileFlags) => {
      const opts = compileOptions(model, o, {}, 'partition');
      const { partition, microbatch } = partitionModel({ ...opts, schedule: opts.schedule as ScheduleName });
      // Said, so that --batch reads as it does in compile: samples per step per replica, split into -m.
      const batch = { microbatches: opts.microbatches, microbatchSize: microbatch };
      process.stdout.write(o.json ? JSON.stringify(partitionJson(partition, batch), null, 2) + '\n' : renderPartition(partition, batch));
    });
}
