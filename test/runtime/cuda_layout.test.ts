import { describe, expect, it } from 'vitest';
import { collapseDims } from '../../runtime/backends/cuda/layout.js';

/** Every element's offset under (dims, strides), in index order: what a kernel reads. */
function offsets(dims: readonly number[], strides: readonly number[]): number[] {
  const out: number[] = [];
  const n = dims.reduce((a, b) => a * b, 1);
  for (let i = 0; i < n; i++) {
    let rem = i, off = 0;
    for (let d = dims.length - 1; d >= 0; d--) {
      off += (rem % dims[d]!) * strides[d]!;
      rem = Math.floor(rem / dims[d]!);
    }
    out.push(off);
  }
  return out;
}

describe('collapseDims', () => {
  const cases: [string, number[], number[][]][] = [
    ['same-shape add', [4, 8, 16], [[128, 16, 1], [128, 16, 1]]],
    ['bias over rows', [4, 8, 16], [[128, 16, 1], [0, 0, 1]]],
    ['scalar', [4, 8, 16], [[128, 16, 1], [0, 0, 0]]],
    ['mask over heads', [2, 3, 5, 5], [[75, 25, 5, 1], [0, 0, 5, 1]]],
    ['head transpose', [2, 3, 4, 5], [[60, 5, 15, 1]]],
    ['extent-1 dims', [1, 6, 1, 4], [[24, 4, 4, 1], [0, 0, 0, 1]]],
    ['all ones', [1, 1], [[1, 1]]],
  ];
  for (const [name, dims, strides] of cases) {
    it(`keeps every operand's offsets: ${name}`, () => {
      const c = collapseDims(dims, strides);
      strides.forEach((s, k) => expect(offsets(c.dims, c.strides[k]!)).toEqual(offsets(dims, s)));
      expect(c.dims.length).toBeLessThanOrEqual(Math.max(1, dims.length));
    });
  }

  it('merges what it can', () => {
    expect(collapseDims([4, 8, 16], [[128, 16, 1], [128, 16, 1]])).toEqual({ dims: [512], strides: [[1], [1]] });
    expect(collapseDims([4, 8, 16], [[128, 16, 1], [0, 0, 1]])).toEqual({ dims: [32, 16], strides: [[16, 1], [0, 1]] });
    expect(collapseDims([2, 3, 5, 5], [[75, 25, 5, 1], [0, 0, 5, 1]])).toEqual({ dims: [6, 25], strides: [[25, 1], [0, 1]] });
    // A transpose cannot merge its swapped axes.
    expect(collapseDims([2, 3, 4, 5], [[60, 5, 15, 1]]).dims).toEqual([2, 3, 4, 5]);
    expect(collapseDims([], [[]])).toEqual({ dims: [1], strides: [[0]] });
  });
});
