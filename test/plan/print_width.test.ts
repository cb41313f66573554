import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CompileOptions, compile } from '../../compiler/compile.js';
import { defaultWidth } from '../../src/app/cli/plan_print.js';
import { writePlan } from '../../src/core/plan/io.js';
import { MIN_WIDTH, fitTable, wrap } from '../../src/core/plan/render.js';
import '../../src/core/ops/index.js';
import { cli, cliInProcess } from '../helpers/cli.js';
import { fixturePath } from '../helpers/fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'cleave-print-width-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const base: CompileOptions = { model: fixturePath('gpt'), loss: 'auto', partitions: 2, microbatches: 4, schedule: '1f1b' };
const PLANS: Record<string, Partial<CompileOptions>> = {
  'pp 2': {},
  'pp 2 × dp 2': { dp: 2, batch: 8 },
  zbv: { schedule: 'zbv', virtualStages: 2 },
  interleaved: { schedule: 'interleaved-1f1b', virtualStages: 2 },
};
const files: Record<string, string> = {};
for (const [name, o] of Object.entries(PLANS)) {
  files[name] = join(dir, `${name.replace(/\W+/g, '_')}.plan`);
  writePlan(files[name], compile({ ...base, ...o }).plan);
}
/** A real measured trace of the pp 2 × dp 2 plan (it carries host phases as cleave run writes them). */
const trace = join(dir, 'dp2.json');
beforeAll(() => {
  const r = cli(['run', files['pp 2 × dp 2']!, '--steps', '2', '--trace', trace]);
  expect(r.code, r.stderr).toBe(0);
}, 60_000);

const chars = (l: string) => [...l].length;
const widest = (s: string) => Math.max(...s.split('\n').map(chars));
// In this process (plan print starts no rank): one process start per print made this file slow.
// Its stdout is the worker's pipe, not a terminal, as a child's is. Calls must not overlap.
const print = async (file: string, ...args: string[]): Promise<string> => {
  const r = await cliInProcess(['plan', 'print', file, ...args]);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout;
};
/** The lines of each chart's rows (`r0      |…|` and the communication row under it). */
const chartRows = (out: string) => out.split('\n').filter((l) => /^(r\d+ *| {8})\|.*\|$/.test(l));

describe('cleave plan print fits its width', () => {
  for (const [name, file] of Object.entries(files)) {
    it(`writes no line wider than --width: ${name}`, async () => {
      for (const w of [40, 60, 80, 120]) {
        const out = await print(file!, '--width', String(w));
        expect(widest(out), `${name} at ${w}:\n${out}`).toBeLessThanOrEqual(w);
        // The timeline takes the whole width.
        for (const row of chartRows(out)) expect(chars(row)).toBe(w);
        const rank = await print(file!, '--width', String(w), '--rank', '1');
        expect(widest(rank), `${name} --rank 1 at ${w}:\n${rank}`).toBeLessThanOrEqual(w);
      }
    });
  }

  it('fits the measured comparison, host phases, measured timeline and messages too', async () => {
    const svg = join(dir, 'long-name-of-a-timeline-picture-file.svg');
    for (const w of [40, 60, 80, 120]) {
      const out = await print(files['pp 2 × dp 2']!, '--width', String(w), '--measured', trace, '--svg', svg, '--trace', join(dir, 't.json'));
      expect(out).toMatch(/timeline \(measured\)/);
      expect(out).toMatch(/host phases of the same step/);
      expect(widest(out), `at ${w}:\n${out}`).toBeLessThanOrEqual(w);
    }
  });

  it('keeps every cell of a table that does not fit, moving or grouping columns', () => {
    const header = ['id', 'name', 'a', 'b', 'c'];
    const rows = [['0', 'a/very/long/name/of/a/value/that/goes/on', '1.000', '2.000', '3.000'], ['1', 'short', '4.000', '5.000', '6.000']];
    for (const w of [40, 50, 80]) {
      const t = fitTable(header, rows, w);
      expect(widest(t)).toBeLessThanOrEqual(w);
      // Every cell is still there, whole (names may wrap at a `/`).
      const flat = t.replace(/\n +/g, '');
      for (const cell of rows.flat()) expect(flat).toContain(cell);
    }
    expect(fitTable(header, rows, 200)).not.toContain('\n\n');
    expect(wrap('a bb ccc dddd', 6, '', '  ')).toEqual(['a bb', '  ccc', '  dddd']);
    expect(wrap('x'.repeat(12), 5)).toEqual(['xxxxx', 'xxxxx', 'xx']);
  });

  it('defaults to the terminal\'s width on a TTY, 96 otherwise; --width wins', async () => {
    expect(defaultWidth({ isTTY: true, columns: 70 })).toBe(70);
    expect(defaultWidth({ isTTY: true, columns: 200 })).toBe(200);
    expect(defaultWidth({ isTTY: true, columns: 20 })).toBe(MIN_WIDTH);
    expect(defaultWidth({ isTTY: true, columns: 0 })).toBe(96);
    expect(defaultWidth({ isTTY: true })).toBe(96);
    expect(defaultWidth({ isTTY: false, columns: 70 })).toBe(96);
    expect(defaultWidth({})).toBe(96);
    // Not a terminal (the test's pipe): 96.
    const out = await print(files['pp 2']!);
    expect(widest(out)).toBeLessThanOrEqual(96);
    for (const row of chartRows(out)) expect(chars(row)).toBe(96);
  });

  // A real terminal: util-linux `script` runs the CLI on a pseudo-terminal sized with stty.
  const script = spawnSync('script', ['--version'], { encoding: 'utf8' }).status === 0;
  it.runIf(script)('takes the width of a real terminal', () => {
    const run = (cols: number, ...args: string[]) => {
      const cmd = `stty cols ${cols} rows 40; ${JSON.stringify(process.execPath)} bin/cleave.js plan print ${JSON.stringify(files['pp 2 × dp 2']!)} ${args.join(' ')}`;
      const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { encoding: 'utf8', input: '' });
      expect(r.status, r.stderr).toBe(0);
      return r.stdout.replace(/\r/g, '');
    };
    for (const cols of [64, 100]) {
      const out = run(cols);
      expect(out).toMatch(/timeline \(predicted\)/);
      expect(widest(out)).toBeLessThanOrEqual(cols);
      for (const row of chartRows(out)) expect(chars(row)).toBe(cols);
    }
    const wide = run(64, '--width', '120');
    for (const row of chartRows(wide)) expect(chars(row)).toBe(120);
  });

  it('refuses a --width too narrow to draw, naming the flag and the minimum', async () => {
    for (const w of ['39', '10', '0', '-5', '60.5', 'wide']) {
      const r = await cliInProcess(['plan', 'print', files['pp 2']!, '--width', w]);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toContain(`cleave: --width must be a whole number of columns, at least 40 (narrower, the timeline and tables cannot be drawn readably), got '${w}'`);
    }
    expect((await cliInProcess(['plan', 'print', files['pp 2']!, '--width', '40'])).code).toBe(0);
  });
});

describe('cleave plan print\'s legend', () => {
  /** The glyphs a chart drew (its rows between the borders) and the legend lines under it. */
  function charts(out: string): { glyphs: Set<string>; legend: string }[] {
    const lines = out.split('\n');
    const found: { glyphs: Set<string>; legend: string }[] = [];
    for (let i = 0; i < lines.length; i++) {
      if (!/^rank +\|.*\|$/.test(lines[i]!)) continue;
      const glyphs = new Set<string>();
      let j = i + 1;
      for (; j < lines.length && /^(r\d+ *| {8})\|.*\|$/.test(lines[j]!); j++) for (const g of lines[j]!.slice(9, -1)) glyphs.add(g);
      const legend: string[] = [];
      for (; j < lines.length && lines[j]!.startsWith('         '); j++) legend.push(lines[j]!.trim());
      found.push({ glyphs, legend: legend.join('  ') });
    }
    return found;
  }
  const names = (legend: string) => new Set([...legend.matchAll(/(?:^|\s{2})(\S+) [a-z]/g)].map((m) => m[1]!));

  it('names every glyph its charts draw, predicted and measured, at every width', async () => {
    const seen = new Set<string>();
    const outs: string[] = [];
    for (const f of Object.values(files)) for (const w of [40, 96, 160]) outs.push(await print(f, '--width', String(w)));
    outs.push(await print(files['pp 2 × dp 2']!, '--measured', trace), await print(files['pp 2 × dp 2']!, '--measured', trace, '--width', '40'));
    for (const out of outs) {
      const cs = charts(out);
      expect(cs.length).toBeGreaterThan(0);
      for (const { glyphs, legend } of cs) {
        const named = names(legend);
        for (const g of glyphs) {
          seen.add(g);
          if (g === ' ') continue;
          if (/\d/.test(g)) expect(named.has('0-9'), `${legend}`).toBe(true);
          else expect(named.has(g), `glyph '${g}' missing from the legend: ${legend}`).toBe(true);
        }
        // And names nothing the chart did not draw.
        for (const n of named) if (n !== '0-9') expect(glyphs.has(n), `'${n}' in the legend but not drawn`).toBe(true);
      }
    }
    // The plans between them draw every glyph the printer has.
    for (const g of ['F', 'B', 'W', 'O', '.', '>', '<', 'A', '0']) expect(seen.has(g), g).toBe(true);
  }, 60_000);

  it('says what B is: the fused backward, or input grads where W is drawn apart', async () => {
    const fused = charts(await print(files['pp 2']!))[0]!.legend;
    expect(fused).toContain('B backward (input grads + weights)');
    expect(fused).not.toContain('W weight grads');
    const split = charts(await print(files.zbv!))[0]!.legend;
    expect(split).toContain('B backward (input grads)');
    expect(split).toContain('W weight grads');
  });
});

describe('cleave plan print --json', () => {
  it('prints the plan whatever the width, deterministically', async () => {
    const a = await print(files['pp 2']!, '--json'), b = await print(files['pp 2']!, '--json', '--width', '40');
    expect(a).toBe(b);
    const plan = JSON.parse(a) as { ranks: unknown[]; schedule: { device: string } };
    expect(plan.ranks).toHaveLength(2);
    expect(plan.schedule.device).toBe('h100');
    expect(await print(files.zbv!, '--width', '72')).toBe(await print(files.zbv!, '--width', '72'));
  });

  it('leaves errors errors: exit 2, the message on stderr, and on stdout only the CLI\'s JSON error (no plan)', () => {
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, '{ nope');
    const cases: [string[], RegExp][] = [
      [['--json', '--width', '30'], /--width must be a whole number of columns, at least 40/],
      [['--json', '--rank', '9'], /--rank 9 is not a rank of this plan \(0–1\)/],
      [['--json', '--measured', bad], /bad\.json: not a trace cleave run --trace wrote/],
    ];
    for (const [args, msg] of cases) {
      const r = cli(['plan', 'print', files['pp 2']!, ...args]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(msg);
      // --json's errors (src/app/cli/main.ts): one JSON line, the error alone, nothing of the plan before it.
      expect(r.stdout.trim().split('\n')).toHaveLength(1);
      const err = (JSON.parse(r.stdout) as { error: { message: string; exitCode: number; internal: boolean } }).error;
      expect(err.message).toMatch(msg);
      expect(err).toMatchObject({ exitCode: 2, internal: false });
    }
  });
});
