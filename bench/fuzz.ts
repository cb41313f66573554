// The long fuzz run (issue 18, item 10): mutated models, corrupted plans and damaged checkpoints
// against the CLI, each outcome classified (ok, clean error, internal error, unclean message,
// crash, hang, memory blow-up, wrong result), the counts printed as a table and every finding kept
// in a folder with its files, finding.json and repro.sh. See bench/README.md.
//
//   npm run fuzz -- [--seed N] [--models N] [--plans N] [--checkpoints N] [--out DIR] ...
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { findingsMarkdown, fuzz, outcomeTable } from '../test/fuzz/campaign.js';
import { repoRoot } from '../test/fuzz/exec.js';

const HELP = `usage: npm run fuzz -- [options]
  --seed N            seed of every mutation (default 1); case i is the same on every run with one seed
  --models N          mutated ONNX models (default 3000)
  --plans N           corrupted plans (default 500)
  --checkpoints N     damaged checkpoints (default 40)
  --start N           index of the first case of each campaign (default 0): to split a run in chunks
  --out DIR           where findings go: one folder per finding, findings.md, report.json (default fuzz-findings)
  --work DIR          scratch folder (default a temporary one)
  --cli-sample X      share of model cases also run through the CLI as a process (default 0.05)
  --compile-share X   share of models inspect accepts that are also compiled (default 0.5)
  --concurrency N     cases in flight (each runs one process at a time; default 1, at most 2 on CI)
  --markdown FILE     also write the findings as Markdown here
  --snapshot DIR      first build the sources into DIR (bin, dist, fixtures; node_modules linked) and fuzz that
                      frozen build: others rebuilding dist/ mid-run cannot turn cases into spurious crashes`;

function args(argv: string[]): Record<string, string> {
  const o: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--help' || a === '-h') { process.stdout.write(HELP + '\n'); process.exit(0); }
    if (!a.startsWith('--') || i + 1 >= argv.length) { process.stderr.write(`fuzz: bad argument '${a}'\n${HELP}\n`); process.exit(2); }
    o[a.slice(2)] = argv[++i]!;
  }
  return o;
}

function num(o: Record<string, string>, k: string, d: number): number {
  if (o[k] === undefined) return d;
  const n = Number(o[k]);
  if (!Number.isFinite(n) || n < 0) { process.stderr.write(`fuzz: --${k} must be a non-negative number, got '${o[k]}'\n`); process.exit(2); }
  return n;
}

const o = args(process.argv.slice(2));
const known = new Set(['seed', 'models', 'plans', 'checkpoints', 'start', 'out', 'work', 'cli-sample', 'compile-share', 'concurrency', 'markdown', 'snapshot']);
for (const k of Object.keys(o)) if (!known.has(k)) { process.stderr.write(`fuzz: unknown option --${k}\n${HELP}\n`); process.exit(2); }

/**
 * --snapshot DIR: compiles the sources into DIR (its own dist/, with bin/, package.json and the
 * fixtures beside it, node_modules linked) and runs this script from there, so the whole run uses
 * one consistent build of the code as it was at the start (a shared working tree's dist/ may be
 * rebuilt by someone else at any moment, and a half-written build fails as a crash).
 */
if (o['snapshot'] !== undefined) {
  const root = repoRoot(), snap = resolve(o['snapshot']);
  rmSync(snap, { recursive: true, force: true });
  mkdirSync(snap, { recursive: true });
  process.stderr.write(`fuzz: building a snapshot of ${root} in ${snap}\n`);
  const tsc = spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(root, 'tsconfig.json'), '--outDir', join(snap, 'dist')], { stdio: 'inherit' });
  if (tsc.status !== 0) { process.stderr.write('fuzz: the sources do not compile; no snapshot\n'); process.exit(2); }
  for (const f of ['bin', 'fixtures', 'package.json']) cpSync(join(root, f), join(snap, f), { recursive: true });
  symlinkSync(join(root, 'node_modules'), join(snap, 'node_modules'));
  const rest = process.argv.slice(2).filter((a, i, all) => a !== '--snapshot' && all[i - 1] !== '--snapshot');
  const r = spawnSync(process.execPath, [join(snap, 'dist', 'bench', 'fuzz.js'), ...rest], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}
const out = o['out'] ?? 'fuzz-findings';
mkdirSync(out, { recursive: true });
const t = new Date().toISOString();
const rep = await fuzz({
  seed: num(o, 'seed', 1), models: num(o, 'models', 3000), plans: num(o, 'plans', 500), checkpoints: num(o, 'checkpoints', 40),
  start: num(o, 'start', 0), workDir: o['work'] ?? join(tmpdir(), `cleave-fuzz-${process.pid}`), findingsDir: out,
  cliSample: num(o, 'cli-sample', 0.05), compileShare: num(o, 'compile-share', 0.5), concurrency: Math.min(2, Math.max(1, num(o, 'concurrency', 1))),
  log: (s) => process.stderr.write(`${s}\n`),
});
const md = findingsMarkdown(rep);
writeFileSync(join(out, 'findings.md'), md);
writeFileSync(join(out, 'report.json'), JSON.stringify({ started: t, seed: rep.seed, seconds: rep.seconds, campaignSeconds: rep.campaignSeconds, counts: rep.counts, workerStarts: rep.workerStarts, cases: rep.cases.map(({ commands, ...c }) => ({ ...c, commands: commands.map(({ output, ...x }) => x) })) }, null, 1) + '\n');
if (o['markdown']) writeFileSync(o['markdown'], md);
const per = Object.entries(rep.campaignSeconds).map(([c, s]) => `${c} ${s.toFixed(0)} s`).join(', ');
process.stdout.write(`${outcomeTable(rep.counts)}\n\n${rep.findings.length} findings in ${rep.seconds.toFixed(0)} s (${per}; seed ${rep.seed}); ${out}/findings.md\n`);
process.exitCode = rep.findings.length ? 1 : 0;
