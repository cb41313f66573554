import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { afterAll, describe, expect, it } from 'vitest';
import { type CompileOptions, compile } from '../../compiler/compile.js';
import { writePlan } from '../../src/core/plan/io.js';
import { measuredTrace } from '../../src/core/plan/measured.js';
import type { Plan } from '../../src/core/plan/types.js';
import { axisTicks } from '../../src/core/plan/visual.js';
import '../../src/core/ops/index.js';
import { cliInProcess } from '../helpers/cli.js';
import { fixturePath } from '../helpers/fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'cleave-svg-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const base: CompileOptions = { model: fixturePath('gpt'), loss: 'auto', partitions: 2, microbatches: 4, schedule: '1f1b' };
function planFile(name: string, o: Partial<CompileOptions>): { file: string; plan: Plan } {
  const plan = compile({ ...base, ...o }).plan;
  const file = join(dir, `${name}.plan`);
  writePlan(file, plan);
  return { file, plan };
}
const dp2 = planFile('dp2', { dp: 2, batch: 8 });
const interleaved = planFile('interleaved', { schedule: 'interleaved-1f1b', virtualStages: 2 });
const zbv = planFile('zbv', { schedule: 'zbv', virtualStages: 2 });

/** A measured trace of a plan as cleave run writes one: each instruction twice as long as predicted, 10 ms later. */
function fakeTrace(name: string, plan: Plan, ranOn?: Parameters<typeof measuredTrace>[3]): string {
  const times = plan.ranks.map((r) => r.instructions.map((i) => [10 + 2 * i.startMs, 10 + 2 * i.endMs] as [number, number]));
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify(measuredTrace(plan, times, [], ranOn)));
  return file;
}

type El = Record<string, unknown> & { '#text'?: string | number };
const all = (x: unknown): El[] => (x === undefined ? [] : ([x].flat() as El[]));
async function svgOf(file: string, ...args: string[]): Promise<{ root: El; gs: El[] }> {
  const svg = join(dir, `${Math.random().toString(36).slice(2)}.svg`);
  const r = await cliInProcess(['plan', 'print', file, '--svg', svg, ...args]);
  expect(r.code, r.stderr).toBe(0);
  const text = readFileSync(svg, 'utf8');
  expect(XMLValidator.validate(text)).toBe(true);
  const root = new XMLParser({ ignoreAttributes: false }).parse(text).svg as El;
  return { root, gs: all(root.g) };
}
const lanes = (gs: El[], timeline: string) => gs.filter((g) => g['@_class'] === 'lane' && g['@_data-timeline'] === timeline);
const text = (e: El) => String(e['#text'] ?? '');

/** The tick labels of one timeline's axis, as ms. */
function ticks(gs: El[], timeline: string): number[] {
  const axis = gs.find((g) => g['@_class'] === 'axis' && g['@_data-timeline'] === timeline);
  expect(axis, `an axis for the ${timeline} timeline`).toBeDefined();
  const labels = all(axis!.text).filter((t) => t['@_class'] === 'tick-label');
  return labels.map((t) => {
    expect(text(t)).toMatch(/^\d+(\.\d+)? ms$/);
    expect(Number(t['@_data-ms'])).toBe(parseFloat(text(t)));
    return parseFloat(text(t));
  });
}
function expectRound(values: number[], span: number): void {
  expect(values.length).toBeGreaterThanOrEqual(3);
  expect(values[0]).toBe(0);
  const step = values[1]! - values[0]!;
  const e = Math.floor(Math.log10(step) + 1e-9);
  const m = Number((step / 10 ** e).toFixed(6));
  expect([1, 2, 2.5, 5]).toContain(m);
  values.forEach((v, i) => {
    expect(v).toBeCloseTo(i * step, 9);
    if (i) expect(v).toBeGreaterThan(values[i - 1]!);
  });
  // The axis reaches the step's end, and not a whole tick past it.
  expect(values[values.length - 1]!).toBeGreaterThanOrEqual(span - 1e-9);
  expect(values[values.length - 2]!).toBeLessThan(span);
}

describe('plan print --svg', () => {
  it('puts the time axis on round ticks', async () => {
    for (const span of [0.883, 1, 7, 12.5, 1419.572, 0.0042, 3.3e-7, 52_000]) {
      const { values, decimals } = axisTicks(span);
      expectRound(values, span);
      expect(values.length - 1).toBeLessThanOrEqual(10);
      // Labels carry no floating-point noise.
      for (const v of values) expect(Number(v.toFixed(decimals))).toBe(v);
    }
    expect(axisTicks(0.883).values).toEqual([0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]);
    expect(axisTicks(22).values).toEqual([0, 2.5, 5, 7.5, 10, 12.5, 15, 17.5, 20, 22.5]);
    const { gs } = await svgOf(dp2.file);
    expectRound(ticks(gs, 'predicted'), dp2.plan.prediction.stepMs);
  });

  it('names each lane by its world rank and its pipeline and data-parallel ranks', async () => {
    const { gs } = await svgOf(dp2.file);
    const ls = lanes(gs, 'predicted');
    expect(ls.map((g) => g['@_data-rank'])).toEqual(['0', '1', '2', '3']);
    const labels = ls.map((g) => text(all(g.text).find((t) => t['@_class'] === 'lane-label')!));
    expect(labels).toEqual(dp2.plan.ranks.map((r) => `rank ${r.rank} · pp ${r.ppRank} dp ${r.dpRank}`));
    expect(labels).toEqual(['rank 0 · pp 0 dp 0', 'rank 1 · pp 1 dp 0', 'rank 2 · pp 0 dp 1', 'rank 3 · pp 1 dp 1']);
    expect(lanes(gs, 'measured')).toHaveLength(0);
  });

  for (const [name, { file, plan }, stagesOfRank0] of [['interleaved', interleaved, ['0', '2']], ['zbv', zbv, ['0', '3']]] as const) {
    it(`tells a rank's virtual stages apart: ${name}`, async () => {
      const { gs } = await svgOf(file);
      const lane0 = lanes(gs, 'predicted').find((g) => g['@_data-rank'] === '0')!;
      const blocks = all(lane0.rect).filter((r) => r['@_class'] === 'block' && r['@_data-kind'] === 'FORWARD');
      const fillByStage = new Map<string, Set<string>>();
      for (const b of blocks) fillByStage.set(String(b['@_data-stage']), (fillByStage.get(String(b['@_data-stage'])) ?? new Set()).add(String(b['@_fill'])));
      expect([...fillByStage.keys()].sort()).toEqual([...stagesOfRank0]);
      // One fill per stage, different stages different fills.
      const fills = [...fillByStage.values()].map((s) => [...s]);
      for (const f of fills) expect(f).toHaveLength(1);
      expect(new Set(fills.flat()).size).toBe(2);
      // Each block wide enough to read names its stage.
      const stageLabels = new Set(all(lane0.text).filter((t) => t['@_class'] === 'block-stage').map(text));
      for (const s of stagesOfRank0) expect(stageLabels).toContain(`s${s}`);
      // The legend gives each virtual stage's shade.
      const legend = gs.find((g) => g['@_class'] === 'legend')!;
      const entries = all(legend.g).filter((e) => e['@_data-kind'] === 'FORWARD');
      expect(entries.map((e) => e['@_data-virtual-stage'])).toEqual(['0', '1']);
      const entryFill = (vs: string) => String(all(entries.find((e) => e['@_data-virtual-stage'] === vs)!.rect)[0]!['@_fill']);
      expect(fillByStage.get(stagesOfRank0[0])).toEqual(new Set([entryFill('0')]));
      expect(fillByStage.get(stagesOfRank0[1])).toEqual(new Set([entryFill('1')]));
      expect(entries.map((e) => text(all(e.text)[0]!))).toEqual(['forward, virtual stage 0', 'forward, virtual stage 1']);
      expect(plan.world.virtualStages).toBe(2);
    });
  }

  it('has a legend of every colour drawn', async () => {
    const { gs } = await svgOf(zbv.file);
    const legend = gs.find((g) => g['@_class'] === 'legend')!;
    const legendFills = new Set(all(legend.g).map((e) => String(all(e.rect)[0]!['@_fill'])));
    const drawn = new Set(lanes(gs, 'predicted').flatMap((l) => all(l.rect).filter((r) => r['@_class'] === 'block').map((r) => String(r['@_fill']))));
    for (const f of drawn) expect(legendFills, f).toContain(f);
    expect(all(legend.g).map((e) => e['@_data-kind'])).toContain('idle');
  });

  it('draws the measured timeline too with --measured', async () => {
    const trace = fakeTrace('dp2', dp2.plan, { backend: 'cpu', device: 'cpu' });
    const { gs, root } = await svgOf(dp2.file, '--measured', trace);
    expect(lanes(gs, 'predicted').map((g) => g['@_data-rank'])).toEqual(['0', '1', '2', '3']);
    const measured = lanes(gs, 'measured');
    expect(measured.map((g) => g['@_data-rank'])).toEqual(['0', '1', '2', '3']);
    expect(measured.map((g) => text(all(g.text).find((t) => t['@_class'] === 'lane-label')!))).toEqual(['rank 0 · pp 0 dp 0', 'rank 1 · pp 1 dp 0', 'rank 2 · pp 0 dp 1', 'rank 3 · pp 1 dp 1']);
    // Every instruction of each rank, with the measured times (twice the predicted span).
    measured.forEach((g, k) => expect(all(g.rect).filter((r) => r['@_class'] === 'block')).toHaveLength(dp2.plan.ranks[k]!.instructions.length));
    expectRound(ticks(gs, 'measured'), 2 * dp2.plan.prediction.stepMs);
    const titles = all(root.text).filter((t) => t['@_class'] === 'panel-title');
    expect(titles.map((t) => t['@_data-timeline'])).toEqual(['predicted', 'measured']);
    expect(text(titles[1]!)).toMatch(/^measured \(one step, ran on cpu\): step [\d.]+ ms$/);
    expect(text(titles[0]!)).toMatch(/^predicted \(costed for h100\): step [\d.]+ ms$/);
    // The measured lanes use the legend's colours.
    const legend = gs.find((g) => g['@_class'] === 'legend')!;
    const legendFills = new Set(all(legend.g).map((e) => String(all(e.rect)[0]!['@_fill'])));
    for (const l of measured) for (const r of all(l.rect).filter((x) => x['@_class'] === 'block')) expect(legendFills).toContain(String(r['@_fill']));
  });
});
