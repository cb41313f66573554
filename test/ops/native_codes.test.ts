import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { NATIVE_CODES, nativeCode, nativeCodesHeader, nativeName } from '../../src/core/ops/native_codes.js';
import { HostCuda } from '../helpers/host_cuda.js';

// The native op codes come from one table: the header the kernels include is generated from it,
// every op of a family has its case in the kernels, and an unknown code is refused (never a default).

const src = (f: string): string => readFileSync(new URL(`../../native/src/${f}`, import.meta.url), 'utf8');
const kernels = src('kernels.cu') + src('kernels_extra.cu');

/** The body of the first function whose header contains `head` (to its closing brace at column 0). */
const body = (text: string, head: string): string => {
  const at = text.indexOf(head);
  expect(at, head).toBeGreaterThanOrEqual(0);
  return text.slice(at, text.indexOf('\n}\n', at));
};

describe('native op codes', () => {
  it('native/src/op_codes.h is generated from the registry table (npm run gen:codes rewrites it)', () => {
    expect(src('op_codes.h'), 'native/src/op_codes.h is stale: run npm run gen:codes').toBe(nativeCodesHeader());
  });

  it('every op of every family is named by its enum in the kernels, and no case is a bare number', () => {
    // Switches name every op as a case; the if-chains of logic and reduce leave one op to the last branch.
    const lastBranch: Record<string, string> = { logic: 'not', reduce: 'sum' };
    for (const [family, names] of Object.entries(NATIVE_CODES)) {
      for (const n of names) {
        if (lastBranch[family] === n) continue;
        const name = `${family.toUpperCase()}_${n.toUpperCase()}`;
        expect(kernels, `${family} '${n}'`).toMatch(new RegExp(lastBranch[family] ? `== ${name}\\b` : `case ${name}:`));
      }
    }
    for (const head of ['float apply_unary(', 'float apply_binary(', 'void compare_kernel(']) expect(body(kernels, head)).not.toMatch(/case \d+:/);
    expect(body(kernels, 'void logic_kernel(')).not.toMatch(/code == \d/);
    expect(body(kernels, 'void reduce_kernel(')).not.toMatch(/op == \d/);
  });

  it('the addon checks each family\'s code against its count before launching', () => {
    const addon = src('addon.cpp');
    for (const family of Object.keys(NATIVE_CODES)) expect(addon).toContain(`op_code(i[0], "${family}", ${family.toUpperCase()}_CODE_COUNT)`);
  });

  it('codes and names map both ways; an unknown code or name is an error', () => {
    expect(nativeCode('unary', 'clip')).toBe(17);
    expect(nativeName('binary', nativeCode('binary', 'max'))).toBe('max');
    expect(() => nativeName('unary', 20)).toThrow('unknown unary op code 20 (the registry\'s unary codes are 0–19)');
    expect(() => nativeCode('logic', 'xor' as never)).toThrow("no native logic op 'xor'");
  });

  it('the host emulation refuses an unknown code, as the addon does', () => {
    const n = new HostCuda().native;
    const x = n.alloc(16), y = n.alloc(16);
    expect(() => n.unary(25, 0, x, y, 4, 0, 0)).toThrow('unknown unary op code 25');
    expect(() => n.compare(-1, 0, x, x, y, [4], [1], [1])).toThrow('unknown compare op code -1');
  });
});
