import type { Command } from 'commander';
import { type CompileOptions, compile } from '../../../compiler/compile.js';
import { writeOnnx } from '../../../compiler/onnx/export.js';
import { lossSpec } from '../api/first_step.js';
import { isModelScript, loadModelFile, traceSpec } from '../api/model_file.js';
import { checkStageOrder } from '../api/nn/stages.js';
import { CleaveError } from '../../core/errors.js';
import type { Graph } from '../../core/ir/graph.js';
import { writePlan } from '../../core/plan/io.js';
import { describeOptimizer } from '../../core/plan/optimizer.js';
import { type CompileFlags, compileOptions, partitionFlags } from './compile_flags.js';
import { formatBytes, formatCount, table } from '../../core/util/format.js';
import { renderFusions } from './fusions.js';
import { optimizerOptions } from './optimizer_flags.js';
import { checkOutputFile } from './paths.js';
import { positiveInt } from './options.js';

interface CompileCommandFlags extends CompileFlags {
  out: string;
  onnx?: string;
}

/**
 * A model given as code is traced at the microbatch size and written as ONNX beside the plan: the
 * plan's source, which `cleave run` and `cleave export` read weights from.
 */
async function scriptOptions(file: string, o: CompileCommandFlags, onnx: string): Promise<CompileOptions & { graph: Graph }> {
  const spec = await loadModelFile(file);
  const opts = compileOptions(onnx, o, spec.config);
  const batch = opts.batch ?? opts.microbatches;
  if (!Number.isInteger(batch) || batch % opts.microbatches) throw new CleaveError(`--batch ${batch} does not divide into ${opts.microbatches} microbatches`);
  const graph = traceSpec(spec, file, batch / opts.microbatches, o.dim);
  if (opts.autoPartition === false) checkStageOrder(graph, opts.defaultPartition ?? 0);
  return { ...opts, graph, loss: o.loss === 'auto' && spec.loss !== undefined ? lossSpec(spec.loss) : opts.loss };
}

export function registerCompile(program: Command): void {
  const cmd = program
    .command('compile')
    .description('compile a model into a pipeline-parallel training plan')
    .argument('<model>', 'ONNX model file, or a JavaScript/TypeScript module exporting a model written with cleave\'s nn library');
  partitionFlags(cmd)
    .option('--dp <d>', 'data-parallel replicas', positiveInt('--dp'))
    .option('--placement <how>', 'cluster (a pipeline\'s ranks adjacent) or spread');
  optimizerOptions(cmd, 'recorded in the plan for cleave run')
    .requiredOption('-o, --out <file>', 'where to write the plan')
    .option('--onnx <file>', 'for a model given as code: where to write it traced, as ONNX (default: the plan\'s name with .onnx)')
    .option('--json', 'print the summary as JSON')
    .action(async (model: string, o: CompileCommandFlags) => {
      const t0 = performance.now();
      const script = isModelScript(model);
      if (o.onnx !== undefined && !script) throw new CleaveError(`--onnx names where a model given as code is written as ONNX; ${model} is ONNX already`);
      const onnx = script ? (o.onnx ?? `${o.out.replace(/\.plan$/, '')}.onnx`) : undefined;
      checkOutputFile('-o', o.out);
      checkOutputFile('--onnx', onnx);
      const opts = script ? await scriptOptions(model, o, onnx!) : compileOptions(model, o);
      const { plan, fusions } = compile(opts);
      if (script) writeOnnx((opts as CompileOptions & { graph: Graph }).graph, onnx!);
      writePlan(o.out, plan);
      const secs = (performance.now() - t0) / 1000;
      const w = plan.world;
      const peak = Math.max(...plan.ranks.map((r) => r.memory.arenaBytes));
      const bubble = Math.max(...plan.ranks.map((r) => r.bubble));
      if (o.json) {
        process.stdout.write(JSON.stringify({
          model, plan: o.out, onnx: onnx ?? null, seconds: secs, parameters: plan.model.parameters, nodes: plan.nodes.length, loss: JSON.parse(plan.model.loss) as unknown,
          world: w, schedule: plan.schedule, microbatchSize: plan.model.microbatchSize, dtypePolicy: plan.model.dtypePolicy, optimizer: plan.model.optimizerConfig,
          stages: plan.stages.map((s) => ({ stage: s.index, rank: s.ppRank, nodes: s.forward.length, fwdMs: s.fwdMs, bMs: s.bMs, wMs: s.wMs })),
          prediction: { ...plan.prediction, device: plan.schedule.device, worstBubble: bubble, peakBytesPerRank: peak },
          fusions,
        }) + '\n');
        return;
      }
      const lines = [
        `compiled ${model} → ${o.out} in ${secs.toFixed(2)} s`,
        ...(script ? [`traced ${model} → ${onnx} (${plan.model.microbatchSize} per microbatch; the plan's weights)`] : []),
        `${formatCount(plan.model.parameters)} parameters, ${plan.nodes.length} training-graph nodes, loss ${plan.model.loss}`,
        `world ${w.size} = ${w.pp} pipeline × ${w.dp} data parallel (${w.placement}); ${plan.schedule.name}, ${plan.schedule.microbatches} microbatches of ${plan.model.microbatchSize}`,
        `training: ${describeOptimizer(plan.model.optimizerConfig)}, ${plan.model.dtypePolicy}`,
        ...renderFusions(fusions),
        table(['stage', 'rank', 'nodes', 'F ms', 'B ms', 'W ms'], plan.stages.map((s) => [String(s.index), String(s.ppRank), String(s.forward.length), s.fwdMs.toFixed(3), s.bMs.toFixed(3), s.wMs.toFixed(3)])),
        `predicted step ${plan.prediction.stepMs.toFixed(3)} ms on ${plan.schedule.device}; worst bubble ${(100 * bubble).toFixed(1)}%; peak memory ${formatBytes(peak)} per rank`,
        `verified: every send meets its receive in order, inputs exist before use, collectives agree, memory plan sound`,
        `see it with: cleave plan print ${o.out}`,
      ];
      process.stdout.write(lines.join('\n') + '\n');
    });
}
