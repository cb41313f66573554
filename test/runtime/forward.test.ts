import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { toFloat64 } from '../../compiler/passes/precision.js';
import { importOnnx } from '../../compiler/onnx/import.js';
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { decodeNpy, encodeNpy, readNpy, writeNpy } from '../../runtime/data/npy.js';
import { tensor } from '../../src/core/ir/tensor.js';
import '../../src/core/ops/index.js';
import { cli, cliInProcess } from '../helpers/cli.js';
import { BUILT, TORCH, fixturePath } from '../helpers/fixtures.js';
import { randomFeeds } from '../helpers/inputs.js';
import { maxRelError, runOrt } from '../helpers/ort.js';

const dir = mkdtempSync(join(tmpdir(), 'cleave-forward-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe.each([...BUILT, ...TORCH])('CPU forward of %s', (name) => {
  it('matches onnxruntime (max relative error ≤ 1e-5)', async () => {
    const g = importOnnx(fixturePath(name), { batch: 4 });
    const feeds = randomFeeds(g, 4, 3);
    const ref = await runOrt(fixturePath(name), feeds);
    const ours = runGraph(g, feeds);
    for (const [k, r] of Object.entries(ref)) expect(maxRelError(ours.get(k)!, r), k).toBeLessThanOrEqual(1e-5);
  });

  it('in float64 agrees with float32 to float32 precision', () => {
    const g = importOnnx(fixturePath(name), { batch: 2 });
    const feeds = randomFeeds(g, 2, 5);
    const g64 = toFloat64(g);
    const feeds64 = Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, t.dtype === 'float32' ? tensor('float64', t.shape, t.data) : t]));
    const a = runGraph(g, feeds), b = runGraph(g64, feeds64);
    for (const [k, t] of b) {
      expect(t.dtype).toBe('float64');
      expect(maxRelError(a.get(k)!, t)).toBeLessThan(1e-5);
    }
  });
});

describe('.npy files', () => {
  it('round-trip every supported dtype', () => {
    for (const dtype of ['float32', 'float64', 'int64', 'int32', 'uint8', 'bool'] as const) {
      const t = tensor(dtype, [2, 3], [1, 0, 1, 1, 0, 1]);
      const back = decodeNpy(encodeNpy(t), 'x.npy');
      expect(back.dtype).toBe(dtype);
      expect(back.shape).toEqual([2, 3]);
      expect(Array.from(back.data)).toEqual([1, 0, 1, 1, 0, 1]);
    }
  });

  it('read the header NumPy writes', () => {
    // np.save of np.arange(3, dtype='<i4'), byte for byte.
    const header = "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }";
    const padded = header + ' '.repeat(128 - 10 - header.length - 1) + '\n';
    const bytes = new Uint8Array(10 + padded.length + 12);
    bytes.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]);
    new DataView(bytes.buffer).setUint16(8, padded.length, true);
    bytes.set(new TextEncoder().encode(padded), 10);
    new DataView(bytes.buffer).setInt32(128, 0, true);
    new DataView(bytes.buffer).setInt32(132, 1, true);
    new DataView(bytes.buffer).setInt32(136, 2, true);
    const t = decodeNpy(bytes, 'np.npy');
    expect(t.dtype).toBe('int32');
    expect(Array.from(t.data)).toEqual([0, 1, 2]);
  });

  it('reject what they cannot hold', () => {
    expect(() => decodeNpy(new TextEncoder().encode('not numpy at all'), 'bad.npy')).toThrow(/bad\.npy: is not a \.npy file/);
    const f = encodeNpy(tensor('float32', [4], [1, 2, 3, 4]));
    expect(() => decodeNpy(f.subarray(0, f.length - 4), 'short.npy')).toThrow(/short\.npy: data is truncated/);
    const big = Buffer.from(Buffer.from(f).toString('latin1').replace("'<f4'", "'>f4'"), 'latin1');
    expect(() => decodeNpy(big, 'be.npy')).toThrow(/be\.npy: element type '>f4' is not supported/);
    expect(() => readNpy(join(dir, 'missing.npy'))).toThrow(/missing\.npy: no such file/);
  });
});

describe('cleave forward', () => {
  it('writes outputs that match onnxruntime and prints their statistics', async () => {
    const g = importOnnx(fixturePath('torch_gpt'), { batch: 2 });
    const feeds = randomFeeds(g, 2, 9);
    writeNpy(join(dir, 'ids.npy'), feeds['input_ids']!);
    const r = cli(['forward', fixturePath('torch_gpt'), '--input', `input_ids=${join(dir, 'ids.npy')}`, '--out', join(dir, 'out')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/output\s+float32\s+\[2, 16, 64\]\s+-?[\d.]+/);
    const ours = readNpy(join(dir, 'out', 'output.npy'));
    const ref = await runOrt(fixturePath('torch_gpt'), feeds);
    expect(maxRelError(ours, ref['output']!)).toBeLessThanOrEqual(1e-5);
  });

  it('names a missing input, a wrong dtype and a wrong shape', async () => {
    writeNpy(join(dir, 'f.npy'), tensor('float32', [2, 16], new Array(32).fill(0)));
    writeNpy(join(dir, 'x.npy'), tensor('float32', [2, 15], new Array(30).fill(0)));
    expect((await cliInProcess(['forward', fixturePath('mlp')])).stderr).toMatch(/input 'x' \(float32\[N, 16\]\) is not given/);
    expect((await cliInProcess(['forward', fixturePath('gpt'), '--input', `input_ids=${join(dir, 'f.npy')}`])).stderr).toMatch(/input 'input_ids' must be int64, got float32/);
    const r = await cliInProcess(['forward', fixturePath('mlp'), '--input', `x=${join(dir, 'x.npy')}`]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/input 'x' must have shape \[2, 16\], got \[2, 15\]/);
    writeFileSync(join(dir, 'junk.npy'), 'junk');
    expect((await cliInProcess(['forward', fixturePath('mlp'), '--input', `x=${join(dir, 'junk.npy')}`])).stderr).toMatch(/junk\.npy: is not a \.npy file/);
    expect(readFileSync(join(dir, 'f.npy')).length).toBeGreaterThan(0);
  });
});
