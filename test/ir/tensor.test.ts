import { describe, expect, it } from 'vitest';
import { bf16ToFloat, floatToBf16, floatToHalf, halfToFloat, tensor, tensorFromBytes, tensorToBytes } from '../../src/core/ir/tensor.js';
import { erf } from '../../src/core/ops/math.js';

describe('half precision', () => {
  it('converts float16 exactly for representable values and rounds to nearest even', () => {
    for (const x of [0, 1, -2, 0.5, 65504, 6.103515625e-5, 5.960464477539063e-8, -0.333251953125]) expect(halfToFloat(floatToHalf(x))).toBe(x);
    expect(floatToHalf(1 + 2 ** -11)).toBe(floatToHalf(1)); // tie → even
    expect(floatToHalf(70000)).toBe(0x7c00); // overflow → inf
    expect(Number.isNaN(halfToFloat(floatToHalf(NaN)))).toBe(true);
  });

  it('converts bfloat16 with round to nearest even', () => {
    for (const x of [0, 1, -3.5, 2 ** 100]) expect(bf16ToFloat(floatToBf16(x))).toBe(x);
    expect(bf16ToFloat(floatToBf16(1 + 2 ** -8))).toBe(1);
    expect(bf16ToFloat(floatToBf16(1 + 3 * 2 ** -8))).toBe(1 + 2 ** -6);
  });
});

describe('byte images', () => {
  it.each(['float32', 'float64', 'float16', 'bfloat16', 'int64', 'int32', 'int8', 'uint8', 'bool'] as const)('round-trips %s', (dtype) => {
    const values = dtype === 'bool' ? [1, 0, 1] : [1, -2, 3].map((v) => (dtype === 'uint8' ? Math.abs(v) : v));
    const t = tensor(dtype, [3], values);
    expect(Array.from(tensorFromBytes(dtype, [3], tensorToBytes(t), 't').data)).toEqual(values);
  });

  it('saturates int64 extremes held as doubles', () => {
    const t = tensor('int64', [2], [2 ** 63, -(2 ** 63)]);
    const dv = new DataView(tensorToBytes(t).buffer);
    expect(dv.getBigInt64(0, true)).toBe(9223372036854775807n);
    expect(dv.getBigInt64(8, true)).toBe(-9223372036854775808n);
  });

  it('rejects a byte count that does not fit the shape', () => {
    expect(() => tensorFromBytes('float32', [2, 2], new Uint8Array(12), "initializer 'w'")).toThrow(/initializer 'w': float32 tensor of shape \[2, 2\] needs 16 bytes of data, found 12/);
  });
});

describe('erf', () => {
  it('matches reference values to 1e-14', () => {
    // Values from the closed-form series evaluated in high precision.
    const ref: [number, number][] = [[0, 0], [0.1, 0.1124629160182849], [0.5, 0.5204998778130465], [1, 0.8427007929497149], [2, 0.9953222650189527], [2.5, 0.999593047982555], [3, 0.9999779095030014], [4, 0.9999999845827421]];
    for (const [x, y] of ref) {
      expect(Math.abs(erf(x) - y)).toBeLessThan(1e-14);
      expect(Math.abs(erf(-x) + y)).toBeLessThan(1e-14);
    }
  });
});
