// What a run's outcome means. A user-facing failure must be a clean error: exit 2 and one
// `cleave: …` message (indented continuation lines allowed: some errors list nodes), with no
// JavaScript error text leaking through. Everything else that is not a success is a finding.

export type Outcome = 'ok' | 'clean' | 'internal' | 'unclean' | 'crash' | 'hang' | 'oom' | 'wrong';
export const OUTCOMES: readonly Outcome[] = ['ok', 'clean', 'internal', 'unclean', 'crash', 'hang', 'oom', 'wrong'];
/** Outcomes the "done when" rules out. */
export const FINDING_OUTCOMES: ReadonlySet<Outcome> = new Set(['internal', 'unclean', 'crash', 'hang', 'oom', 'wrong']);

/** Text that only a JavaScript error (not a message written for a user) contains. */
const JS_ERROR_TEXT: readonly RegExp[] = [
  /\b(TypeError|ReferenceError|RangeError|SyntaxError|EvalError|URIError|AggregateError)\b/,
  /Cannot read propert(y|ies)/, /Cannot set propert(y|ies)/, /is not a function/, /is not iterable/, /is not a constructor/,
  /Invalid typed array length/, /Invalid array length/, /Array buffer allocation failed/, /Maximum call stack/,
  /^\s+at .+[:(].*\d+:\d+\)?$/m, /^\s+at (async )?\S+ \(/m, /\[object Object\]/, /\b(ENOENT|EISDIR|ENOTDIR|EACCES|EMFILE)\b:/,
  /Cannot convert a BigInt/, /Do not know how to serialize a BigInt/, /invalid array length/i, /Unexpected token .* in JSON/, /is not valid JSON/,
  /out of memory/i,
];

export function jsErrorText(s: string): string | undefined {
  for (const re of JS_ERROR_TEXT) {
    const m = re.exec(s);
    if (m) return m[0].trim();
  }
  return undefined;
}

/** What a run gave back, however it ran (a child process or the in-process worker). */
export interface RunRecord {
  code: number | null;
  signal?: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut?: boolean;
  rssKilled?: boolean;
  /** In-process only: an exception that escaped main (main catches everything, so this is a crash). */
  threw?: string;
}

export interface Verdict {
  outcome: Outcome;
  /** Why, in a line: the message seen or what is wrong with it. */
  why: string;
}

const OOM_TEXT = /JavaScript heap out of memory|Reached heap limit|ERR_WORKER_OUT_OF_MEMORY|Allocation failed - process out of memory/;

/** The error message of a failed command: the `cleave:` line and its indented continuation. */
export function errorMessage(stderr: string): string {
  const lines = stderr.split('\n');
  const at = lines.findIndex((l) => l.startsWith('cleave: '));
  if (at < 0) return stderr.trim().split('\n').slice(-3).join(' | ');
  return lines.slice(at, at + 4).join('\n').trim();
}

/** Classifies a run that did not succeed, or that did (then `checkOk` says whether its results are right). */
export function classify(r: RunRecord, checkOk?: () => string | undefined): Verdict {
  if (r.timedOut) return { outcome: 'hang', why: 'still running at the wall-clock bound' };
  if (r.rssKilled) return { outcome: 'oom', why: 'resident memory above the bound' };
  if (OOM_TEXT.test(r.stderr)) return { outcome: 'oom', why: OOM_TEXT.exec(r.stderr)![0] };
  if (r.threw !== undefined) return { outcome: 'crash', why: `escaped main: ${r.threw.split('\n')[0]}` };
  if (r.code === 0) {
    const wrong = checkOk?.();
    return wrong ? { outcome: 'wrong', why: wrong } : { outcome: 'ok', why: '' };
  }
  if (r.code === 2) {
    const lines = r.stderr.replace(/\n+$/, '').split('\n');
    const at = lines.findIndex((l) => l.startsWith('cleave: '));
    if (at < 0) return { outcome: 'unclean', why: `exit 2 without a 'cleave:' line: ${r.stderr.trim().slice(0, 300)}` };
    const before = lines.slice(0, at).filter((l) => l.trim() && !/^(note|warning): /.test(l));
    const after = lines.slice(at + 1).filter((l) => l.trim() && !/^ {2}\S/.test(l));
    const leak = jsErrorText(lines.slice(at).join('\n'));
    if (leak) return { outcome: 'unclean', why: `JavaScript error text in the message (${leak}): ${errorMessage(r.stderr).slice(0, 400)}` };
    if (before.length || after.length) return { outcome: 'unclean', why: `more than one message: ${[...before, ...after].slice(0, 3).join(' | ').slice(0, 300)}` };
    return { outcome: 'clean', why: lines[at]!.slice(0, 400) };
  }
  if (r.code === 1 && /cleave: internal error/.test(r.stderr)) return { outcome: 'internal', why: errorMessage(r.stderr).split('\n')[0]!.slice(0, 400) };
  return { outcome: 'crash', why: `exit ${r.code ?? r.signal}: ${r.stderr.trim().split('\n').slice(0, 6).join(' | ').slice(0, 400)}` };
}
