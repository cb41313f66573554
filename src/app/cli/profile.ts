import type { Command } from 'commander';
import { existsSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { profilePlan, writeMeasuredProfile } from '../../../runtime/launch/profile.js';
import { CleaveError } from '../../core/errors.js';
import { formatCount, formatPercent, table } from '../../core/util/format.js';
import { positiveInt } from './options.js';

interface ProfileFlags { out: string; steps: number; warmup: string; weights?: string; json?: boolean }

export function registerProfile(program: Command): void {
  program
    .command('profile')
    .description('time every op signature of a one-rank plan on the GPU; writes the measured profile that --profile of partition/compile reads')
    .argument('<plan>', 'plan file from cleave compile (--partitions 1)')
    .requiredOption('--out <file.json>', 'where the measured profile goes')
    .option('--steps <n>', 'training steps measured', positiveInt('--steps'), 3)
    .option('--warmup <n>', 'steps run first and not measured', '1')
    .option('--weights <model.onnx>', 'weights (default: the model the plan was compiled from)')
    .option('--json', 'print the per-op summary as JSON')
    .action(async (planFile: string, o: ProfileFlags) => {
      const warmup = Number(o.warmup);
      if (!Number.isInteger(warmup) || warmup < 0) throw new CleaveError(`--warmup must be a whole number ≥ 0, got '${o.warmup}'`);
      const out = resolve(o.out);
      // Checked before minutes of GPU work, not after.
      if (!existsSync(dirname(out)) || !statSync(dirname(out)).isDirectory()) throw new CleaveError(`--out ${o.out}: folder ${dirname(out)} does not exist`);
      if (existsSync(out) && statSync(out).isDirectory()) throw new CleaveError(`--out ${o.out} is a folder; give a file name`);
      const r = await profilePlan(planFile, { steps: o.steps, warmup, weights: o.weights });
      writeMeasuredProfile(out, r.profile);
      if (o.json) {
        console.log(JSON.stringify({ out, device: r.profile.device, signatures: Object.keys(r.profile.entries).length, byOp: r.byOp }));
        return;
      }
      const total = r.byOp.reduce((a, b) => a + b.ms, 0);
      console.log(`${r.profile.device ?? 'GPU'}: ${o.steps} step(s) of ${planFile}, every node synchronized and timed\n`);
      console.log(table(['op', 'launches', 'ms', 'share'], r.byOp.map((x) => [x.op, formatCount(x.launches), x.ms.toFixed(2), formatPercent(x.ms / total)])));
      console.log(`\n${Object.keys(r.profile.entries).length} signatures (${r.profile.policy}) written to ${o.out}`);
    });
}
