import type { Command } from 'commander';
import { type CompileOptions, compile } from '../../compiler/compile.js';
import { writeOnnx } from '../../compiler/onnx/export.js';
import { type SmpConfig, readSmpConfig } from '../api/config.js';
import { lossSpec } from '../api/first_step.js';
import { isModelScript, loadModelFile, traceSpec } from '../api/model_file.js';
import { checkStageOrder } from '../api/nn/stages.js';
import { CleaveError } from '../errors.js';
import type { Graph } from '../ir/graph.js';
import { writePlan } from '../plan/io.js';
import { formatBytes, formatCount, table } from './format.js';
import { dimBinding, positiveInt } from './options.js';
import { type PartitionFlags, lossFromFlag, partitionOptions } from './partition.js';

interface CompileFlags extends Omit<PartitionFlags, 'batch'> {
  batch?: number;
  dp?: number;
  placement?: string;
  activeMicrobatches?: number;
  out?: string;
  onnx?: string;
}

/**
 * A model given as code is traced at the microbatch size and written as ONNX beside the plan: the
 * plan's source, which `cleave run` and `cleave export` read weights from.
 */
async function scriptOptions(file: string, o: CompileFlags): Promise<{ opts: CompileOptions & { graph: Graph }; onnx: string }> {
  const spec = await loadModelFile(file);
  const onnx = o.onnx ?? `${o.out!.replace(/\.plan$/, '')}.onnx`;
  const opts = compileOptions(onnx, o, spec.config);
  const batch = opts.batch ?? opts.microbatches;
  if (!Number.isInteger(batch) || batch % opts.microbatches) throw new CleaveError(`--batch ${batch} does not divide into ${opts.microbatches} microbatches`);
  const graph = traceSpec(spec, file, batch / opts.microbatches, o.dim);
  if (opts.autoPartition === false) checkStageOrder(graph, opts.defaultPartition ?? 0);
  return { opts: { ...opts, graph, loss: o.loss === 'auto' && spec.loss !== undefined ? lossSpec(spec.loss) : opts.loss }, onnx };
}

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

export function compileOptions(model: string, o: CompileFlags, modelConfig: SmpConfig = {}): CompileOptions {
  const c: SmpConfig = { ...modelConfig, ...(o.config ? readSmpConfig(o.config) : {}) };
  const base = partitionOptions({ ...o, batch: 1, schedule: o.schedule === 'auto' ? undefined : o.schedule }, modelConfig);
  const microbatches = o.microbatches ?? c.microbatches;
  if (microbatches === undefined) throw new CleaveError('give the number of microbatches with -m M (or "microbatches" in --config)');
  const placement = o.placement ?? c.placement_strategy ?? 'cluster';
  if (placement !== 'cluster' && placement !== 'spread') throw new CleaveError(`--placement must be cluster or spread; got '${placement}'`);
  const dp = o.dp ?? c.dp ?? 1;
  if (c.ddp === true && o.dp === undefined && c.dp === undefined) throw new CleaveError('"ddp": true needs the data-parallel degree: give --dp D (or "dp" in --config)');
  return {
    model, loss: lossFromFlag(o.loss), partitions: base.partitions, microbatches,
    batch: o.batch,
    schedule: o.schedule === 'auto' || (c.pipeline === 'auto' && !o.schedule) ? 'auto' : base.schedule,
    virtualStages: base.virtualStages, dp, placement, activeMicrobatches: o.activeMicrobatches ?? c.active_microbatches,
    memoryWeight: base.memoryWeight, autoPartition: base.autoPartition, defaultPartition: base.defaultPartition, assign: base.assign,
    device: base.device, policy: base.policy, optimizer: base.optimizer, measured: base.measured, dims: o.dim,
  };
}

export function registerCompile(program: Command): void {
  program
    .command('compile')
    .description('compile a model into a pipeline-parallel training plan')
    .argument('<model>', 'ONNX model file, or a JavaScript module exporting a model written with cleave\'s nn library')
    .option('-p, --partitions <n>', 'pipeline ranks (SMP partitions)', positiveInt('-p'))
    .option('-m, --microbatches <m>', 'microbatches per step', positiveInt('-m'))
    .option('--schedule <name>', 'gpipe, 1f1b, interleaved-1f1b, zb-h1, zbv, or auto (SMP: simple, interleaved)')
    .option('--virtual-stages <v>', 'stages per rank (interleaved-1f1b ≥ 2; zbv 2)', positiveInt('--virtual-stages'))
    .option('--dp <d>', 'data-parallel replicas', positiveInt('--dp'))
    .option('--placement <how>', 'cluster (a pipeline\'s ranks adjacent) or spread')
    .option('--active-microbatches <n>', 'microbatches in flight per rank: below the pipeline ranks a cap; above them, room for zb-h1/zbv to fill their bubble with memory', positiveInt('--active-microbatches'))
    .option('--batch <n>', 'samples per step per replica (default: one per microbatch)', positiveInt('--batch'))
    .option('--loss <kind>', 'auto, output, cross-entropy, mse', 'auto')
    .option('--memory-weight <w>', 'SMP memory_weight in [0, 1]')
    .option('--device <name>', 'cost profile: h100, h200, a100, cpu')
    .option('--dtype <policy>', 'fp32, bf16 (mixed precision), or fp16 (mixed precision with dynamic loss scaling)')
    .option('--optimizer <kind>', 'sgd, sgd-momentum, adam, adamw')
    .option('--assign <regex=stage>', 'place matching nodes on a stage (repeatable)', collect)
    .option('--no-auto-partition', 'put unannotated nodes on --default-partition')
    .option('--default-partition <k>', 'stage for unannotated nodes when auto partitioning is off')
    .option('--profile <file>', 'measured op times that override the estimates')
    .option('--config <file>', 'SMP-style JSON config')
    .option('--dim <name=size>', 'bind a named symbolic dimension (repeatable)', dimBinding)
    .requiredOption('-o, --out <file>', 'where to write the plan')
    .option('--onnx <file>', 'for a model given as code: where to write it traced, as ONNX (default: the plan\'s name with .onnx)')
    .action(async (model: string, o: CompileFlags) => {
      const t0 = performance.now();
      const script = isModelScript(model) ? await scriptOptions(model, o) : undefined;
      const opts = script?.opts ?? compileOptions(model, o);
      const { plan } = compile(opts);
      if (script) writeOnnx(script.opts.graph, script.onnx);
      writePlan(o.out!, plan);
      const secs = (performance.now() - t0) / 1000;
      const w = plan.world;
      const lines = [
        `compiled ${model} → ${o.out} in ${secs.toFixed(2)} s`,
        ...(script ? [`traced ${model} → ${script.onnx} (${plan.model.microbatchSize} per microbatch; the plan's weights)`] : []),
        `${formatCount(plan.model.parameters)} parameters, ${plan.nodes.length} training-graph nodes, loss ${plan.model.loss}`,
        `world ${w.size} = ${w.pp} pipeline × ${w.dp} data parallel (${w.placement}); ${plan.schedule.name}, ${plan.schedule.microbatches} microbatches of ${plan.model.microbatchSize}`,
        table(['stage', 'rank', 'nodes', 'F ms', 'B ms', 'W ms'], plan.stages.map((s) => [String(s.index), String(s.ppRank), String(s.forward.length), s.fwdMs.toFixed(3), s.bMs.toFixed(3), s.wMs.toFixed(3)])),
        `predicted step ${plan.prediction.stepMs.toFixed(3)} ms on ${plan.schedule.device}; worst bubble ${(100 * Math.max(...plan.ranks.map((r) => r.bubble))).toFixed(1)}%; peak memory ${formatBytes(Math.max(...plan.ranks.map((r) => r.memory.arenaBytes)))} per rank`,
        `verified: every send meets its receive in order, inputs exist before use, collectives agree, memory plan sound`,
        `see it with: cleave plan print ${o.out}`,
      ];
      process.stdout.write(lines.join('\n') + '\n');
    });
}
