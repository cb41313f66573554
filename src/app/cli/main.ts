import { Command, CommanderError, Option } from 'commander';
import { CleaveError } from '../../core/errors.js';
import '../../core/ops/index.js';
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
import { installSignalHandlers } from './signals.js';
import { VERSION } from './version.js';

/**
 * Output to a pipe that closed (`cleave … | head`) ends the command quietly, with the exit code a
 * process killed by SIGPIPE has, instead of a stack trace.
 */
let pipesWatched = false;
function quietOnClosedPipe(): void {
  if (pipesWatched) return;
  pipesWatched = true;
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') process.exit(141);
      throw e;
    });
  }
}

/** Under --json an error is one JSON object on stdout too, so a program reading the stream sees why it ended. */
function reportError(json: boolean, message: string, exitCode: number, internal: boolean): void {
  if (json) process.stdout.write(JSON.stringify({ error: { message, exitCode, internal } }) + '\n');
}

/** Runs the CLI; returns the exit code (0 ok, 2 a user error, 1 a bug). */
export async function main(argv: readonly string[]): Promise<number> {
  const debug = argv.includes('--debug');
  const json = argv.includes('--json');
  quietOnClosedPipe();
  installSignalHandlers();
  const program = new Command('cleave')
    .description('Compile ONNX models into pipeline-parallel training plans and run them.')
    .version(VERSION, '-V, --version', 'print cleave\'s version')
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
    if (e instanceof CommanderError) {
      if (e.exitCode !== 0) reportError(json, e.message.replace(/^error: /, ''), 2, false);
      return e.exitCode === 0 ? 0 : 2;
    }
    if (e instanceof CleaveError) {
      if (!e.inJsonReport) reportError(json, e.message, 2, false);
      process.stderr.write(`cleave: ${e.message}\n`);
      if (debug) process.stderr.write(`${e.stack}\n`);
      return 2;
    }
    reportError(json, `internal error: ${(e as Error).message}`, 1, true);
    process.stderr.write(`cleave: internal error: ${(e as Error).message}\n${debug ? `${(e as Error).stack}\n` : '(run with --debug for the stack trace)\n'}`);
    return 1;
  }
}
