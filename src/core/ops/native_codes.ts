/**
 * The op codes the CUDA addon's kernels switch on, by family, in code order: the one place they
 * are defined. `native/src/op_codes.h` is generated from this table (`npm run gen:codes`; a test
 * fails while it is stale), the kernels name each case by its enum, and the addon refuses a code
 * outside a family's range rather than running some other op (or none).
 */
export const NATIVE_CODES = {
  unary: ['neg', 'abs', 'exp', 'log', 'sqrt', 'reciprocal', 'tanh', 'sigmoid', 'relu', 'leaky_relu', 'gelu', 'gelu_tanh', 'erf',
    'hard_sigmoid', 'hard_swish', 'floor', 'ceil', 'clip', 'sin', 'cos'],
  binary: ['add', 'sub', 'mul', 'div', 'pow', 'min', 'max'],
  /** Float operands into a bool: and/or treat non-zero as true. */
  compare: ['equal', 'less', 'greater', 'less_equal', 'greater_equal', 'and', 'or'],
  /** Bool operands. */
  logic: ['and', 'or', 'not'],
  reduce: ['sum', 'mean', 'max'],
} as const;

export type NativeFamily = keyof typeof NATIVE_CODES;
export type NativeOp<F extends NativeFamily> = (typeof NATIVE_CODES)[F][number];
export type UnaryOp = NativeOp<'unary'>;
export type BinaryOp = NativeOp<'binary'>;
export type CompareOp = NativeOp<'compare'>;
export type LogicOp = NativeOp<'logic'>;

/** Codes by family and name, looked up on every launch. */
const CODES = new Map(Object.entries(NATIVE_CODES).map(([f, names]) => [f, new Map(names.map((n, i) => [n as string, i]))]));

/** The code the addon's kernels know `name` of `family` by. */
export function nativeCode<F extends NativeFamily>(family: F, name: NativeOp<F>): number {
  const code = CODES.get(family)!.get(name);
  if (code === undefined) throw new Error(`no native ${family} op '${name}'`);
  return code;
}

/** The name of a code (the host emulation's dispatch); an unknown code is an error, never a default. */
export function nativeName<F extends NativeFamily>(family: F, code: number): NativeOp<F> {
  const name = (NATIVE_CODES[family] as readonly NativeOp<F>[])[code];
  if (name === undefined) throw new Error(`unknown ${family} op code ${code} (the registry's ${family} codes are 0–${NATIVE_CODES[family].length - 1})`);
  return name;
}

/** `native/src/op_codes.h`, as generated from the table. */
export function nativeCodesHeader(): string {
  const lines = [
    '// Generated from src/core/ops/native_codes.ts by `npm run gen:codes`: do not edit by hand.',
    '#pragma once',
    '',
  ];
  for (const [family, names] of Object.entries(NATIVE_CODES)) {
    const F = family.toUpperCase();
    lines.push(`enum ${family[0]!.toUpperCase()}${family.slice(1)}Code {`);
    names.forEach((n, i) => lines.push(`  ${F}_${n.toUpperCase()} = ${i},`));
    lines.push(`  ${F}_CODE_COUNT = ${names.length}`, '};', '');
  }
  return lines.join('\n');
}
