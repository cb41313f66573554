import type { Command } from 'commander';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeOnnx } from '../../compiler/onnx/export.js';
import { importOnnx } from '../../compiler/onnx/import.js';
import { fixturesDir } from '../../fixtures/generate.js';
import { CleaveError } from '../errors.js';
import { parameterStats } from '../ir/stats.js';
import { formatCount } from './format.js';
import { inspectModel, renderInspect } from './inspect.js';

/**
 * The main job on the bundled GPT fixture, as far as cleave goes today: import, inspect, export and
 * re-import. Later stages (compile, plan print, train) join here as they are built.
 */
export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('run the main job on the bundled GPT fixture')
    .option('--batch <n>', 'batch size', '4')
    .action((o: { batch: string }) => {
      const model = join(fixturesDir(), 'gpt.onnx');
      const batch = Number(o.batch);
      process.stdout.write(`== inspect ${model}\n`);
      process.stdout.write(renderInspect(inspectModel(model, { batch })));
      const g = importOnnx(model, { batch });
      const dir = mkdtempSync(join(tmpdir(), 'cleave-demo-'));
      try {
        const out = join(dir, 'gpt.roundtrip.onnx');
        writeOnnx(g, out);
        const back = importOnnx(out);
        const a = parameterStats(g).count, b = parameterStats(back).count;
        if (a !== b || back.nodes.length !== g.nodes.length) throw new CleaveError(`round trip changed the model: ${a} → ${b} parameters, ${g.nodes.length} → ${back.nodes.length} nodes`);
        process.stdout.write(`\n== export and re-import: ${formatCount(b)} parameters, ${back.nodes.length} nodes, unchanged\n`);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
}
