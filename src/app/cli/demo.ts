import type { Command } from 'commander';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTrainingGraph } from '../../../compiler/autodiff/training.js';
import { autoLoss } from '../../../compiler/autodiff/loss.js';
import { compile } from '../../../compiler/compile.js';
import { importOnnx } from '../../../compiler/onnx/import.js';
import { runGraph } from '../../../runtime/backends/cpu/interpreter.js';
import { runPlanCpu } from '../../../runtime/launch/cpu.js';
import { fixturesDir } from '../../../fixtures/generate.js';
import { CleaveError } from '../../core/errors.js';
import { tensor } from '../../core/ir/tensor.js';
import { getOp } from '../../core/ops/index.js';
import { readPlan, writePlan } from '../../core/plan/io.js';
import { renderPlan } from '../../core/plan/render.js';
import { exportCheckpoint } from './export.js';
import { formatFlops, table } from '../../core/util/format.js';
import { inspectModel, renderInspect } from './inspect.js';
import { positiveInt } from './options.js';
import { Progress } from './progress.js';

/**
 * The main job on the bundled GPT fixture: import and inspect it, derive its training graph,
 * compile a pipeline × data-parallel plan and print it, run the plan on CPU ranks for a few steps
 * with a checkpoint at the end, export the checkpoint as ONNX and check it computes what the
 * trained ranks hold.
 */
export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('run the main job on the bundled GPT fixture')
    .option('--steps <n>', 'training steps', positiveInt('--steps'), 40)
    .option('--json', 'print what each part found as one JSON object')
    .action(async (o: { steps: number; json?: boolean }) => {
      const model = join(fixturesDir(), 'gpt.onnx');
      const say = (s: string) => void (o.json || process.stdout.write(s));
      const report: Record<string, unknown> = { model };
      say(`== 1. import and inspect ${model}\n`);
      const inspected = inspectModel(model, { batch: 2 });
      report['inspect'] = { parameters: inspected.parameters.count, nodes: inspected.nodes, flops: inspected.flops };
      say(renderInspect(inspected));

      const g = importOnnx(model, { batch: 2 });
      const training = buildTrainingGraph(g, { loss: autoLoss(g) });
      const phases = new Map<string, { nodes: number; flops: number }>();
      for (const n of training.graph.nodes) {
        const c = getOp(n.op, n.name).cost({ node: n.name, inputs: n.inputs, numOutputs: n.outputs.length, attrs: n.attrs, consts: [] }, n.outputs);
        const r = phases.get(String(n.meta['phase'])) ?? { nodes: 0, flops: 0 };
        r.nodes++;
        r.flops += c.flops;
        phases.set(String(n.meta['phase']), r);
      }
      say(`\n== 2. training graph: cross-entropy loss, per microbatch of 2\n`);
      say(table(['phase', 'nodes', 'FLOPs'], [...phases].map(([k, r]) => [k, String(r.nodes), formatFlops(r.flops)])) + '\n');
      report['training'] = Object.fromEntries(phases);

      const dir = mkdtempSync(join(tmpdir(), 'cleave-demo-'));
      try {
        const planFile = join(dir, 'gpt.plan');
        writePlan(planFile, compile({ model, loss: 'auto', partitions: 2, microbatches: 4, schedule: 'zb-h1', dp: 2, batch: 8 }).plan);
        say(`\n== 3. compile a plan: 2 pipeline stages × 2 data-parallel replicas, zb-h1, 4 microbatches of 2 (cleave plan print)\n`);
        const plan = readPlan(planFile);
        say(renderPlan(plan, 88));
        report['plan'] = { world: plan.world, schedule: plan.schedule.name, microbatches: plan.schedule.microbatches, predictedStepMs: plan.prediction.stepMs };

        say(`\n== 4. run it on 4 CPU ranks (worker threads), ${o.steps} steps on the bundled task (cleave run)\n`);
        const progress = new Progress(o.steps, 'samples', !!o.json);
        let samples = 0;
        const run = await runPlanCpu({
          planFile, data: { kind: 'default' }, steps: o.steps, optimizer: { kind: 'adamw', lr: 1e-2 },
          schedule: { kind: 'cosine', warmup: 5, total: o.steps, minLr: 1e-3 }, clip: 1, saveEvery: o.steps, checkpointDir: join(dir, 'ckpt'), returnWeights: true,
        }, (r) => {
          samples += r.samples;
          progress.update(r.step, samples, `loss ${r.loss.toFixed(4)}`);
        });
        const secs = progress.stop();
        say(`loss ${run.steps[0]!.loss.toFixed(4)} → ${run.steps.at(-1)!.loss.toFixed(4)} in ${secs.toFixed(1)} s\n`);
        report['run'] = { steps: run.steps.length, firstLoss: run.steps[0]!.loss, finalLoss: run.steps.at(-1)!.loss, seconds: secs };

        const out = join(dir, 'gpt.trained.onnx');
        exportCheckpoint(run.checkpoints[0]!, out);
        const back = importOnnx(out, { batch: 2 });
        const trained = importOnnx(model, { batch: 2 });
        for (const p of [...trained.params(), ...trained.states()]) p.data = run.weights!.get(p.name)!;
        const ids = tensor('int64', [2, 16], Array.from({ length: 32 }, (_, i) => (3 + 5 * i) % 64));
        const a = runGraph(trained, { input_ids: ids }).get('logits')!, b = runGraph(back, { input_ids: ids }).get('logits')!;
        if (!a.data.every((x, i) => x === b.data[i])) throw new CleaveError('the exported model computes different logits from the trained ranks');
        say(`\n== 5. exported the checkpoint as one ONNX model (cleave export): same logits as the trained ranks\n`);
        report['export'] = { sameLogits: true };
        if (o.json) process.stdout.write(JSON.stringify(report) + '\n');
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
}
