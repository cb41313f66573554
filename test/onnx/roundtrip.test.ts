import { describe, expect, it } from 'vitest';
import { encodeModel } from '../../src/core/onnx/codec.js';
import { exportModel } from '../../compiler/onnx/export.js';
import { importModel, importOnnx } from '../../compiler/onnx/import.js';
import { parameterStats } from '../../src/core/ir/stats.js';
import '../../src/core/ops/index.js';
import { BUILT, TORCH, fixturePath } from '../helpers/fixtures.js';
import { randomFeeds } from '../helpers/inputs.js';
import { maxRelError, runOrt } from '../helpers/ort.js';
import { decodeModel } from '../../src/core/onnx/codec.js';

describe.each([...BUILT, ...TORCH])('fixture %s', (name) => {
  const file = fixturePath(name);

  it('imports, re-exports, and the re-export computes what the original computes in onnxruntime', async () => {
    const batch = 3;
    const g = importOnnx(file, { batch });
    const feeds = randomFeeds(g, batch);
    const original = await runOrt(file, feeds);
    const bytes = encodeModel(exportModel(g).model);
    const again = await runOrt(bytes, feeds);
    expect(Object.keys(again).sort()).toEqual(Object.keys(original).sort());
    for (const [k, ref] of Object.entries(original)) {
      expect(again[k]!.shape).toEqual(ref.shape);
      expect(maxRelError(again[k]!, ref)).toBeLessThan(1e-5);
    }
    // Importing the re-export gives back the same graph: the round trip is a fixed point.
    const back = importModel(decodeModel(bytes, 'roundtrip'), { baseDir: '.', file: 'roundtrip' });
    expect(parameterStats(back)).toEqual(parameterStats(g));
    expect(back.nodes.map((n) => n.op)).toEqual(g.nodes.map((n) => n.op));
  });
});

describe.each(BUILT)('built fixture %s with a symbolic batch', (name) => {
  it('keeps the batch symbolic through import and export', async () => {
    const g = importOnnx(fixturePath(name));
    expect(g.inputs[0]!.shape[0]).toBe('N');
    const bytes = encodeModel(exportModel(g).model);
    for (const batch of [1, 5]) {
      const feeds = randomFeeds(g, batch);
      const [a, b] = [await runOrt(fixturePath(name), feeds), await runOrt(bytes, feeds)];
      for (const k of Object.keys(a)) expect(maxRelError(b[k]!, a[k]!)).toBeLessThan(1e-5);
    }
  });
});
