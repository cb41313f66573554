import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { importOnnx } from '../../compiler/onnx/import.js';
import { CleaveError } from '../../src/core/errors.js';
import '../../src/core/ops/index.js';
import { cli } from '../helpers/cli.js';
import { fixturePath } from '../helpers/fixtures.js';
import { bytesOf, floatInit, model, node, vi } from '../helpers/onnx.js';

const dir = mkdtempSync(join(tmpdir(), 'cleave-errors-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const write = (name: string, data: Uint8Array | string): string => {
  const f = join(dir, name);
  writeFileSync(f, data);
  return f;
};

const F = 1; // ONNX FLOAT

/** Each bad input: the file, and what the one-line message must say. */
const cases: [string, () => string, RegExp][] = [
  ['a missing file', () => join(dir, 'nope.onnx'), /nope\.onnx: no such file/],
  ['an empty file', () => write('empty.onnx', new Uint8Array()), /empty\.onnx: is empty, not an ONNX model/],
  ['a truncated model', () => write('truncated.onnx', readFileSync(fixturePath('gpt')).subarray(0, 5000)), /truncated\.onnx: is truncated or corrupt/],
  ['a text file', () => write('notes.onnx', 'these are my notes, not a model\n'), /notes\.onnx: is not an ONNX model/],
  ['a PNG image', () => write('image.onnx', new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13])), /image\.onnx: is (not an ONNX model|truncated or corrupt)/],
  [
    'unsupported ops (all listed)',
    () => write('unsupported.onnx', bytesOf(model({
      nodes: [
        node('Relu', ['x'], ['a'], 'ok_relu'),
        node('Acos', ['a'], ['b'], 'my_acos'),
        node('FusedGemm', ['b', 'b'], ['c'], 'fused', [], 'com.microsoft'),
        node('Det', ['c'], ['y'], 'my_det'),
      ],
      inputs: [vi('x', F, [2, 2])], outputs: [vi('y', F, [2, 2])],
      extraOpsets: [{ domain: 'com.microsoft', version: 1 }],
    }))),
    /3 nodes cannot be imported \(Acos, com\.microsoft:FusedGemm, Det\):\n  my_acos \(Acos\): op Acos is not supported\n  fused \(com\.microsoft:FusedGemm\): domain 'com\.microsoft' is not supported\n  my_det \(Det\)/,
  ],
  [
    'an unsupported opset',
    () => write('opset11.onnx', bytesOf(model({ nodes: [node('Relu', ['x'], ['y'], 'r')], inputs: [vi('x', F, [2])], outputs: [vi('y', F, [2])], opset: 11 }))),
    /opset11\.onnx: opset 11 is not supported \(cleave imports default-domain opsets 13–23/,
  ],
  [
    'an op newer than the opset',
    () => write('gelu13.onnx', bytesOf(model({ nodes: [node('Gelu', ['x'], ['y'], 'g')], inputs: [vi('x', F, [2])], outputs: [vi('y', F, [2])], opset: 13 }))),
    /g \(Gelu\): Gelu needs opset ≥ 20, the model imports 13/,
  ],
  [
    'a missing external-data file',
    () => {
      const sub = mkdtempSync(join(dir, 'ext-'));
      copyFileSync(fixturePath('gpt_external'), join(sub, 'gpt_external.onnx'));
      return join(sub, 'gpt_external.onnx');
    },
    /gpt_external\.onnx: initializer '[^']+': external data file 'gpt_external\.onnx\.data' is missing/,
  ],
  [
    'a shape mismatch',
    () => write('mismatch.onnx', bytesOf(model({
      nodes: [node('MatMul', ['x', 'w'], ['y'], '/layer/MatMul')],
      inputs: [vi('x', F, [2, 3])], outputs: [vi('y', F, [2, 5])],
      initializers: [floatInit('w', [4, 5])],
    }))),
    /node '\/layer\/MatMul': inner dimensions of MatMul do not match: \[2, 3\] and \[4, 5\]/,
  ],
  [
    'a declared shape that disagrees with the computed one',
    () => write('declared.onnx', bytesOf(model({
      nodes: [node('MatMul', ['x', 'w'], ['y'], 'mm')],
      inputs: [vi('x', F, [2, 4])], outputs: [vi('y', F, [2, 6])],
      initializers: [floatInit('w', [4, 5])],
    }))),
    /node 'mm' \(MatMul\): output 'y' is declared with shape \[2, 6\] but computes \[2, 5\]/,
  ],
  [
    'a cycle',
    () => write('cycle.onnx', bytesOf(model({
      nodes: [node('Add', ['x', 'b'], ['a'], 'first'), node('Relu', ['a'], ['b'], 'second'), node('Relu', ['a'], ['y'], 'out')],
      inputs: [vi('x', F, [2])], outputs: [vi('y', F, [2])],
    }))),
    /graph has a cycle: (first → second → first|second → first → second)/,
  ],
  [
    'an undefined input',
    () => write('undefined.onnx', bytesOf(model({ nodes: [node('Add', ['x', 'ghost'], ['y'], 'add')], inputs: [vi('x', F, [2])], outputs: [vi('y', F, [2])] }))),
    /node 'add' \(Add\): reads 'ghost', which no node, input or initializer defines/,
  ],
];

describe('bad input', () => {
  it.each(cases)('%s: the importer names the problem', (_, make, message) => {
    const file = make();
    expect(() => importOnnx(file)).toThrow(CleaveError);
    expect(() => importOnnx(file)).toThrow(message);
  });

  it.each(cases)('%s: `cleave inspect` prints one message and exits 2, no stack trace', (_, make, message) => {
    const file = make();
    const r = cli(['inspect', file]);
    expect(r.code).toBe(2);
    expect(r.stderr + r.stdout).toMatch(message);
    expect(r.stderr).not.toMatch(/^\s+at /m);
  });

  it('under --json, unsupported ops give one object: the report and the error beside it', () => {
    const r = cli(['inspect', join(dir, 'unsupported.onnx'), '--json']);
    expect(r.code).toBe(2);
    const out = JSON.parse(r.stdout) as { unsupported: { node: string }[]; error: { message: string; exitCode: number } };
    expect(out.unsupported.map((u) => u.node)).toEqual(['my_acos', 'fused', 'my_det']);
    expect(out.error.exitCode).toBe(2);
    expect(out.error.message).toMatch(/3 nodes cannot be imported/);
  });

  describe('external data must be a regular file inside the model folder', () => {
    /** gpt_external.onnx in a fresh folder, its data file made by `place` (given the data's path). */
    const withData = (place: (data: string, sub: string) => void): string => {
      const sub = mkdtempSync(join(dir, 'extdata-'));
      copyFileSync(fixturePath('gpt_external'), join(sub, 'gpt_external.onnx'));
      place(join(sub, 'gpt_external.onnx.data'), sub);
      return join(sub, 'gpt_external.onnx');
    };
    const real = `${fixturePath('gpt_external')}.data`;

    it('refuses a symlink that leads outside the folder, naming where it leads', () => {
      const file = withData((data) => symlinkSync(real, data));
      expect(() => importOnnx(file)).toThrow(/external data file 'gpt_external\.onnx\.data' resolves to .*fixtures\/gpt_external\.onnx\.data, outside the model's folder/);
    });

    it('takes a symlink to a file inside the folder, with the same weights', () => {
      const file = withData((data, sub) => {
        copyFileSync(real, join(sub, 'weights.bin'));
        symlinkSync('weights.bin', data);
      });
      const a = importOnnx(file), b = importOnnx(fixturePath('gpt_external'));
      expect(a.params().map((p) => [...p.data!.data.slice(0, 4)])).toEqual(b.params().map((p) => [...p.data!.data.slice(0, 4)]));
    });

    it('refuses a folder and a FIFO (which would block the import)', () => {
      expect(() => importOnnx(withData((data) => mkdirSync(data)))).toThrow(/gpt_external\.onnx\.data' \(.*\) is not a regular file/);
      const fifo = withData((data) => execFileSync('mkfifo', [data]));
      expect(() => importOnnx(fifo)).toThrow(/is not a regular file/);
    });
  });

  it('--debug adds the stack trace', () => {
    const r = cli(['inspect', join(dir, 'nope.onnx'), '--debug']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^\s+at /m);
  });

  it('rejects bad flags with exit code 2', () => {
    expect(cli(['inspect', fixturePath('mlp'), '--batch', '0']).code).toBe(2);
    expect(cli(['inspect', fixturePath('mlp'), '--dim', 'batch']).stderr).toMatch(/--dim takes NAME=SIZE/);
    expect(cli(['inspect']).code).toBe(2);
    expect(cli(['frobnicate']).code).toBe(2);
  });
});
