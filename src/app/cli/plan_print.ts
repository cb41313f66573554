import type { Command } from 'commander';
import { CleaveError } from '../../core/errors.js';
import { checkPlan } from '../../core/plan/check.js';
import { readPlan } from '../../core/plan/io.js';
import { PROFILE_NAMES } from '../../../compiler/cost/profiles.js';
import { deviceNote, readHostPhases, readMeasured, renderComparison } from '../../core/plan/measured.js';
import { DEFAULT_WIDTH, MIN_WIDTH, renderPlan, renderRank, wrap } from '../../core/plan/render.js';
import { planSvg, planTrace } from '../../core/plan/visual.js';
import { writeFileAtomic } from '../../core/util/fs.js';
import { checkOutputFile } from './paths.js';

/** `--width`: whole columns, at least MIN_WIDTH (narrower, the timeline and tables cannot be drawn readably). */
export function widthFlag(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < MIN_WIDTH) {
    throw new CleaveError(`--width must be a whole number of columns, at least ${MIN_WIDTH} (narrower, the timeline and tables cannot be drawn readably), got '${v}'`);
  }
  return n;
}

/**
 * The width to print at without `--width`: a terminal's own (`columns`, at least MIN_WIDTH),
 * DEFAULT_WIDTH where stdout is not a terminal or does not say.
 */
export function defaultWidth(out: { readonly isTTY?: boolean; readonly columns?: number }): number {
  if (!out.isTTY || !out.columns || !Number.isFinite(out.columns) || out.columns <= 0) return DEFAULT_WIDTH;
  return Math.max(MIN_WIDTH, Math.floor(out.columns));
}

export function registerPlan(program: Command): void {
  const plan = program.command('plan').description('inspect a compiled plan');
  plan
    .command('print')
    .description('print a plan: header, stages, predicted timeline per rank, bubbles, memory')
    .argument('<plan>', 'plan file from cleave compile')
    .option('--rank <r>', 'list one rank\'s instructions')
    .option('--trace <file>', 'write a Perfetto / Chrome trace (JSON)')
    .option('--svg <file>', 'write the timeline as an SVG picture (with --measured, the measured one too)')
    .option('--width <columns>', `width of the output in columns, at least ${MIN_WIDTH} (default: the terminal's, ${DEFAULT_WIDTH} when not a terminal)`, widthFlag)
    .option('--measured <trace>', 'a trace from cleave run --trace: show predicted and measured side by side')
    .option('--json', 'print the plan as JSON')
    .action((file: string, o: { rank?: string; trace?: string; svg?: string; width?: number; json?: boolean; measured?: string }) => {
      const width = o.width ?? defaultWidth(process.stdout);
      // Both outputs checked before either is written: a bad --svg used to fail as an internal error
      // (ENOENT from the write) after --trace had been written.
      checkOutputFile('--trace', o.trace);
      checkOutputFile('--svg', o.svg);
      const p = readPlan(file);
      checkPlan(p, file);
      const measured = o.measured ? readMeasured(o.measured, p) : undefined;
      let rank: number | undefined;
      if (o.rank !== undefined) {
        rank = Number(o.rank);
        if (!Number.isInteger(rank) || rank < 0 || rank >= p.ranks.length) throw new CleaveError(`--rank ${o.rank} is not a rank of this plan (0–${p.ranks.length - 1})`);
      }
      if (o.trace) writeFileAtomic(o.trace, JSON.stringify(planTrace(p)));
      if (o.svg) writeFileAtomic(o.svg, planSvg(p, measured));
      if (o.json) {
        const values = p.values.map(({ data, ...v }) => ({ ...v, dataBytes: data?.length ?? 0 }));
        process.stdout.write(JSON.stringify({ ...p, values }, null, 1) + '\n');
        return;
      }
      if (rank !== undefined) {
        process.stdout.write(renderRank(p, rank, width));
        return;
      }
      process.stdout.write(renderPlan(p, width));
      if (measured) process.stdout.write('\n' + renderComparison(p, measured, width, readHostPhases(o.measured!, p), deviceNote(p, measured.ranOn, PROFILE_NAMES)));
      const say = (s: string) => process.stdout.write(wrap(s, width, '', '  ').join('\n') + '\n');
      if (o.trace) say(`wrote trace ${o.trace} (open in ui.perfetto.dev or chrome://tracing)`);
      if (o.svg) say(`wrote timeline ${o.svg}`);
    });
}
