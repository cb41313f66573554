import { Command, CommanderError, Option } from 'commander';
import { CleaveError } from '../errors.js';
import '../ops/index.js';
import { registerDemo } from './demo.js';
import { registerForward } from './forward.js';
import { registerInspect } from './inspect_cmd.js';
import { registerPartition } from './partition.js';
import { registerCompile } from './compile.js';
import { registerPlan } from './plan_print.js';
import { registerProfile } from './profile.js';
import { registerRun } from './run.js';
import { registerExport } from './export.js';
import { registerTrain } from './train.js';

/** Runs the CLI; returns the exit code (0 ok, 2 a user error, 1 a bug). */
export async function main(argv: readonly string[]): Promise<number> {
  const debug = argv.includes('--debug');
  const program = new Command('cleave')
    .description('Compile ONNX models into pipeline-parallel training plans and run them.')
    .addOption(new Option('--debug', 'show stack traces of errors'))
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })
    .showHelpAfterError('(run cleave --help for usage)');
  registerInspect(program);
  registerForward(program);
  registerTrain(program);
  registerPartition(program);
  registerCompile(program);
  registerPlan(program);
  registerRun(program);
  registerProfile(program);
  registerExport(program);
  registerDemo(program);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    if (e instanceof CleaveError) {
      process.stderr.write(`cleave: ${e.message}\n`);
      if (debug) process.stderr.write(`${e.stack}\n`);
      return 2;
    }
    process.stderr.write(`cleave: internal error: ${(e as Error).message}\n${debug ? `${(e as Error).stack}\n` : '(run with --debug for the stack trace)\n'}`);
    return 1;
  }
}
