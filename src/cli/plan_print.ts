import type { Command } from 'commander';
import { CleaveError } from '../errors.js';
import { readPlan } from '../plan/io.js';
import { readHostPhases, readMeasured, renderComparison } from '../plan/measured.js';
import { renderPlan, renderRank } from '../plan/render.js';
import { planSvg, planTrace } from '../plan/visual.js';
import { writeFileAtomic } from '../util/fs.js';
import { positiveInt } from './options.js';

export function registerPlan(program: Command): void {
  const plan = program.command('plan').description('inspect a compiled plan');
  plan
    .command('print')
    .description('print a plan: header, stages, predicted timeline per rank, bubbles, memory')
    .argument('<plan>', 'plan file from cleave compile')
    .option('--rank <r>', 'list one rank\'s instructions')
    .option('--trace <file>', 'write a Perfetto / Chrome trace (JSON)')
    .option('--svg <file>', 'write the timeline as an SVG picture')
    .option('--width <columns>', 'width of the timeline', positiveInt('--width'), 96)
    .option('--measured <trace>', 'a trace from cleave run --trace: show predicted and measured side by side')
    .option('--json', 'print the plan as JSON')
    .action((file: string, o: { rank?: string; trace?: string; svg?: string; width: number; json?: boolean; measured?: string }) => {
      const p = readPlan(file);
      const measured = o.measured ? readMeasured(o.measured, p) : undefined;
      if (o.trace) writeFileAtomic(o.trace, JSON.stringify(planTrace(p)));
      if (o.svg) writeFileAtomic(o.svg, planSvg(p));
      if (o.json) {
        const values = p.values.map(({ data, ...v }) => ({ ...v, dataBytes: data?.length ?? 0 }));
        process.stdout.write(JSON.stringify({ ...p, values }, null, 1) + '\n');
        return;
      }
      if (o.rank !== undefined) {
        const r = Number(o.rank);
        if (!Number.isInteger(r) || r < 0 || r >= p.ranks.length) throw new CleaveError(`--rank ${o.rank} is not a rank of this plan (0–${p.ranks.length - 1})`);
        process.stdout.write(renderRank(p, r));
        return;
      }
      process.stdout.write(renderPlan(p, o.width));
      if (measured) process.stdout.write('\n' + renderComparison(p, measured, o.width, readHostPhases(o.measured!, p)));
      if (o.trace) process.stdout.write(`wrote trace ${o.trace} (open in ui.perfetto.dev or chrome://tracing)\n`);
      if (o.svg) process.stdout.write(`wrote timeline ${o.svg}\n`);
    });
}
