import type { Command } from 'commander';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { importOnnx } from '../../compiler/onnx/import.js';
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { prepareJob, runStep, saveTrained } from '../../runtime/train/job.js';
import { compile } from '../../compiler/compile.js';
import { readPlan, writePlan } from '../plan/io.js';
import { renderPlan } from '../plan/render.js';
import { fixturesDir } from '../../fixtures/generate.js';
import { CleaveError } from '../errors.js';
import { getOp } from '../ops/index.js';
import { formatFlops, table } from './format.js';
import { inspectModel, renderInspect } from './inspect.js';
import { positiveInt } from './options.js';
import { Progress } from './progress.js';

/**
 * The main job on the bundled GPT fixture, as far as cleave goes today: import and inspect it,
 * derive its training graph, compile and print a pipeline plan, train it on the bundled task, save
 * and reload the trained model. Running the plan on several ranks joins here when it is built.
 */
export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('run the main job on the bundled GPT fixture')
    .option('--steps <n>', 'training steps', positiveInt('--steps'), 60)
    .action((o: { steps: number }) => {
      const model = join(fixturesDir(), 'gpt.onnx');
      const [batch, microbatches] = [8, 2];
      const say = (s: string) => process.stdout.write(s);
      say(`== 1. import and inspect ${model}\n`);
      say(renderInspect(inspectModel(model, { batch })));

      const p = prepareJob({ model, loss: 'auto', steps: o.steps, batch, microbatches, optimizer: { kind: 'adamw', lr: 1e-2 }, schedule: { kind: 'cosine', warmup: 5, total: o.steps, minLr: 1e-3 } });
      const phases = new Map<string, { nodes: number; flops: number }>();
      for (const n of p.training.graph.nodes) {
        const c = getOp(n.op, n.name).cost({ node: n.name, inputs: n.inputs, numOutputs: n.outputs.length, attrs: n.attrs, consts: [] }, n.outputs);
        const r = phases.get(String(n.meta['phase'])) ?? { nodes: 0, flops: 0 };
        r.nodes++;
        r.flops += c.flops;
        phases.set(String(n.meta['phase']), r);
      }
      say(`\n== 2. training graph: ${p.lossSpec.kind} loss, per microbatch of ${p.microbatch}\n`);
      say(table(['phase', 'nodes', 'FLOPs'], [...phases].map(([k, r]) => [k, String(r.nodes), formatFlops(r.flops)])) + '\n');

      // Compile a pipeline plan: 2 ranks × 2 data-parallel replicas, zero-bubble schedule, and print it.
      const dir0 = mkdtempSync(join(tmpdir(), 'cleave-demo-plan-'));
      try {
        const planFile = join(dir0, 'gpt.plan');
        const { plan } = compile({ model, loss: 'auto', partitions: 2, microbatches: 4, schedule: 'zb-h1', dp: 2, batch: 8 });
        writePlan(planFile, plan);
        say(`\n== 3. compile a plan: 2 pipeline stages × 2 data-parallel replicas, zb-h1, 4 microbatches (cleave plan print)\n`);
        say(renderPlan(readPlan(planFile), 88));
      } finally {
        rmSync(dir0, { recursive: true, force: true });
      }

      say(`\n== 4. train ${o.steps} steps, batch ${batch} = ${microbatches} microbatches × ${p.microbatch}, adamw, on ${p.data.description}\n`);
      const progress = new Progress(o.steps, 'samples');
      let first = NaN, last = NaN;
      for (let s = 0; s < o.steps; s++) {
        const r = runStep(p);
        if (s === 0) first = r.loss;
        last = r.loss;
        progress.update(r.step, r.step * batch, `loss ${r.loss.toFixed(4)}`);
      }
      const secs = progress.stop();
      say(`loss ${first.toFixed(4)} → ${last.toFixed(4)} in ${secs.toFixed(1)} s\n`);

      const dir = mkdtempSync(join(tmpdir(), 'cleave-demo-'));
      try {
        const out = join(dir, 'gpt.trained.onnx');
        saveTrained(p, out);
        const back = importOnnx(out, { batch: p.microbatch });
        const feeds = Object.fromEntries(Object.entries(p.data.next(p.microbatch)).filter(([k]) => back.inputs.some((v) => v.name === k)));
        const a = runGraph(p.graph, feeds).get('logits')!, b = runGraph(back, feeds).get('logits')!;
        const same = a.data.every((x, i) => x === b.data[i]);
        if (!same) throw new CleaveError('the saved model computes different logits from the trained one');
        say(`\n== 5. saved the trained model as ONNX and loaded it back: same logits\n`);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
}
