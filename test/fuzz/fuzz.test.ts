// The fuzz campaigns in the suite (issue 18, item 10): a fixed-seed slice of `npm run fuzz` —
// mutated models through inspect and compile, corrupted plans through plan print and run,
// damaged checkpoints through run --resume and export — with no crash, hang, memory blow-up,
// internal error, unclean message or run that exits 0 with wrong results. About a minute on
// CI's 2 cores; the long run is bench/fuzz.ts (bench/README.md).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { findingsMarkdown, fuzz, outcomeTable } from './campaign.js';
import { classify } from './oracle.js';
import { Rng } from './prng.js';

const work = mkdtempSync(join(tmpdir(), 'cleave-fuzz-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('fuzz oracle', () => {
  it('tells a clean error from leaked JavaScript errors, internal errors and crashes', () => {
    expect(classify({ code: 2, stdout: '', stderr: "cleave: m.onnx: is truncated or corrupt\n" }).outcome).toBe('clean');
    expect(classify({ code: 2, stdout: '', stderr: 'cleave: m.onnx: 2 nodes cannot be imported (X):\n  a (X): op X is not supported\n  b (X): op X is not supported\n' }).outcome).toBe('clean');
    expect(classify({ code: 2, stdout: '', stderr: "cleave: Cannot read properties of undefined (reading 'dims')\n" }).outcome).toBe('unclean');
    expect(classify({ code: 2, stdout: '', stderr: 'cleave: bad\n    at f (/x/y.js:1:2)\n' }).outcome).toBe('unclean');
    expect(classify({ code: 1, stdout: '', stderr: 'cleave: internal error: x is not a function\n' }).outcome).toBe('internal');
    expect(classify({ code: 134, stdout: '', stderr: 'FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory' }).outcome).toBe('oom');
    expect(classify({ code: null, signal: 'SIGSEGV', stdout: '', stderr: '' }).outcome).toBe('crash');
    expect(classify({ code: null, stdout: '', stderr: '', timedOut: true }).outcome).toBe('hang');
    expect(classify({ code: 0, stdout: '{}', stderr: '' }, () => 'other losses').outcome).toBe('wrong');
  });

  it('draws the same case from the same seed and index', () => {
    const a = Rng.forCase(5, 'models', 17), b = Rng.forCase(5, 'models', 17), c = Rng.forCase(5, 'models', 18);
    const xs = (r: Rng): number[] => Array.from({ length: 8 }, () => r.int(1000));
    expect(xs(a)).toEqual(xs(b));
    expect(xs(Rng.forCase(5, 'models', 17))).not.toEqual(xs(c));
  });
});

describe('fuzz campaigns (seed 1)', () => {
  it('no mutated model, corrupted plan or damaged checkpoint crashes, hangs, blows up memory or succeeds wrongly', async () => {
    const rep = await fuzz({ seed: 1, models: 300, plans: 30, checkpoints: 8, workDir: work, cliSample: 0.03, compileShare: 0.4, concurrency: 2, quick: true });
    const total = Object.values(rep.counts).reduce((a, c) => a + Object.values(c).reduce((x, y) => x + y, 0), 0);
    expect(total).toBe(338);
    expect(rep.findings.length, `${outcomeTable(rep.counts)}\n\n${findingsMarkdown(rep, 1)}`).toBe(0);
  }, 240_000);
});
