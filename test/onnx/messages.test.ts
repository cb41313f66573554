// Import's messages say what is wrong with the model, and no malformed model reaches JavaScript's own
// errors: duplicate names, negative dims, symbolic dims in gradients, IR versions and opsets, and a
// seeded loop of mutations of the fixtures that must end in success or a CleaveError.
import { readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildTrainingGraph } from '../../compiler/autodiff/training.js';
import { decodeModel } from '../../src/core/onnx/codec.js';
import { importModel } from '../../compiler/onnx/import.js';
import type { AttributeP, ModelP, NodeP, TensorP } from '../../src/core/onnx/proto.js';
import { ATTR } from '../../src/core/onnx/schema.js';
import { CleaveError } from '../../src/core/errors.js';
import type { Graph } from '../../src/core/ir/graph.js';
import { topoOrder } from '../../src/core/ir/order.js';
import '../../src/core/ops/index.js';
import { Rng } from '../../src/core/util/random.js';
import { fixturePath } from '../helpers/fixtures.js';
import { floatInit, intAttr, model, node, vi } from '../helpers/onnx.js';

const F = 1; // ONNX FLOAT
const src = { baseDir: '.', file: 'm.onnx' };
const load = (m: ModelP, opts = {}): Graph => importModel(m, src, opts);

/** Runs `f`, expecting a CleaveError whose message matches `re`; returns the message. */
function refused(f: () => unknown, re: RegExp): string {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(CleaveError);
    expect((e as Error).message).toMatch(re);
    return (e as Error).message;
  }
  throw new Error(`expected a CleaveError matching ${re}, but it succeeded`);
}

describe('node names', () => {
  it('an unsupported op type and node name with line breaks stay on their lines, escaped', () => {
    const m = model({
      nodes: [node('Bad\nOp', ['x'], ['y'], 'n\u0005\n1')],
      inputs: [vi('x', F, [2])], outputs: [vi('y', F, [2])],
    });
    const msg = refused(() => load(m), /cannot be imported \(Bad\\u000aOp\):/);
    expect(msg.split('\n')).toEqual([
      'm.onnx: 1 node cannot be imported (Bad\\u000aOp):',
      '  n\\u0005\\u000a1 (Bad\\u000aOp): op Bad\\u000aOp is not supported',
    ]);
  });

  it('two nodes of one name are named as a duplicate, not as a cycle', () => {
    const m = model({
      nodes: [node('Relu', ['x'], ['a'], 'A'), node('Neg', ['a'], ['y'], 'A')],
      inputs: [vi('x', F, [2])], outputs: [vi('y', F, [2])],
    });
    const msg = refused(() => load(m), /m\.onnx: node name 'A' is used twice, by node #0 \(Relu\) and node #1 \(Neg\); node names must be unique/);
    expect(msg).not.toMatch(/cycle/);
  });

  it('unnamed nodes get names that do not collide with the names the file gives', () => {
    const m = model({
      nodes: [node('Relu', ['x'], ['a'], ''), node('Neg', ['a'], ['y'], 'Relu_0')],
      inputs: [vi('x', F, [2])], outputs: [vi('y', F, [2])],
    });
    const g = load(m);
    expect(g.nodes.map((n) => n.name).sort()).toEqual(['Relu_0', 'Relu_0_1']);
  });

  it('a value produced by two nodes names both', () => {
    const m = model({
      nodes: [node('Relu', ['x'], ['y'], 'r'), node('Neg', ['x'], ['y'], 'n')],
      inputs: [vi('x', F, [2])], outputs: [vi('y', F, [2])],
    });
    refused(() => load(m), /m\.onnx: value 'y' is produced by two nodes, 'r' \(Relu\) and 'n' \(Neg\)/);
  });

  it('a node output that redefines an input is named', () => {
    const m = model({ nodes: [node('Relu', ['x'], ['x'], 'r')], inputs: [vi('x', F, [2])], outputs: [vi('x', F, [2])] });
    refused(() => load(m), /node 'r' \(Relu\) produces 'x', which is already a graph input or initializer/);
  });

  it('topoOrder itself names a duplicate instead of calling it a cycle', () => {
    const items = [{ n: 'A', d: [] as string[] }, { n: 'A', d: ['A'] }];
    refused(() => topoOrder(items, (t) => t.n, (t) => t.d, 'g'), /^g: the name 'A' is used twice \(items #0 and #1\); names must be unique$/);
  });

  it('an initializer defined twice is named with the file', () => {
    const m = model({
      nodes: [node('Add', ['x', 'w'], ['y'], 'add')], inputs: [vi('x', F, [2])], outputs: [vi('y', F, [2])],
      initializers: [floatInit('w', [2]), floatInit('w', [2])],
    });
    refused(() => load(m), /^m\.onnx: initializer 'w' is defined twice$/);
  });

  it('a real cycle is still reported as one', () => {
    const m = model({
      nodes: [node('Relu', ['b'], ['a'], 'A'), node('Neg', ['a'], ['b'], 'B'), node('Abs', ['a'], ['y'], 'C')],
      inputs: [vi('x', F, [2])], outputs: [vi('y', F, [2])],
    });
    refused(() => load(m), /has a cycle: (A → B → A|B → A → B)/);
  });
});

describe('negative and impossible dims', () => {
  it('a negative dim of an input is refused naming the input', () => {
    const m = model({ nodes: [node('Relu', ['x'], ['y'], 'r')], inputs: [vi('x', F, [2, -1])], outputs: [vi('y', F, [2, 3])] });
    refused(() => load(m), /m\.onnx: value 'x' declares dimension 1 as -1; dims must be non-negative integers/);
  });

  it('a negative dim declared for an output is refused naming it', () => {
    const m = model({ nodes: [node('Relu', ['x'], ['y'], 'r')], inputs: [vi('x', F, [2, 3])], outputs: [vi('y', F, [-2, 3])] });
    refused(() => load(m), /value 'y' declares dimension 0 as -2/);
  });

  it('no FLOPs or bytes come out negative: the shape is refused before costs see it', () => {
    const m = model({
      nodes: [node('MatMul', ['x', 'w'], ['y'], 'mm')],
      inputs: [vi('x', F, [-4, 3])], outputs: [vi('y', F, [-4, 5])], initializers: [floatInit('w', [3, 5])],
    });
    refused(() => load(m), /value 'x' declares dimension 0 as -4/);
  });

  it('--batch and --dim must be non-negative integers', () => {
    const m = model({ nodes: [node('Relu', ['x'], ['y'], 'r')], inputs: [vi('x', F, ['N', 3])], outputs: [vi('y', F, ['N', 3])] });
    refused(() => load(m, { batch: -2 }), /--batch -2: the batch must be a non-negative integer/);
    refused(() => load(m, { dims: { N: 1.5 } }), /--dim N=1\.5: a dimension must be a non-negative integer/);
    expect(load(m, { dims: { N: 4 } }).inputs[0]!.shape).toEqual([4, 3]);
  });

  it('an initializer whose dims are not integers a tensor can have is refused', () => {
    const t: TensorP = { name: 'w', dims: [-3], dataType: F, rawData: new Uint8Array(12) };
    const m = model({ nodes: [node('Add', ['x', 'w'], ['y'], 'add')], inputs: [vi('x', F, [3])], outputs: [vi('y', F, [3])], initializers: [t] });
    refused(() => load(m), /initializer 'w': has invalid dims \[-3\] \(dims must be non-negative integers\)/);
  });
});

describe('symbolic feature dims in gradients', () => {
  const gemmModel = (): ModelP => model({
    nodes: [node('Gemm', ['x', 'w', 'b'], ['y'], 'fc', [intAttr('transB', 1)])],
    inputs: [vi('x', F, ['N', 'F'])], outputs: [vi('y', F, ['N', 3])],
    initializers: [floatInit('w', [3, 4]), floatInit('b', [3])],
  });

  it('a Gemm over a symbolic feature dim names the dim and the --dim that binds it', () => {
    const g = load(gemmModel(), { batch: 2 });
    const msg = refused(() => buildTrainingGraph(g, { loss: { kind: 'mse' } }),
      /node 'fc' \(Gemm\): the gradient for 'w' float32\[3, 4\] comes out as float32\[3, F\]: the symbolic dimension 'F' must be bound to train; import with --dim F=4/);
    expect(msg).not.toMatch(/gradient rule of/);
  });

  it('bound with --dim, the same model trains', () => {
    const g = load(gemmModel(), { batch: 2, dims: { F: 4 } });
    const t = buildTrainingGraph(g, { loss: { kind: 'mse' } });
    expect(t.grads.get('w')!.shape).toEqual([3, 4]);
  });
});

describe('IR versions and opsets', () => {
  const relu = (parts: { opset?: number; irVersion?: number }): ModelP =>
    model({ nodes: [node('Relu', ['x'], ['y'], 'r')], inputs: [vi('x', F, [2])], outputs: [vi('y', F, [2])], ...parts });

  it('IR versions 1 and 2, which name no opset, are refused saying so', () => {
    for (const ir of [1, 2]) {
      refused(() => load(relu({ irVersion: ir })), new RegExp(`m\\.onnx: ONNX IR version ${ir} is not supported \\(cleave reads IR version 3 and newer`));
    }
    expect(load(relu({ irVersion: 3 })).nodes).toHaveLength(1);
  });

  it('opsets 13 to 23 import, as README says; 12 and 24 are refused naming the range', () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    expect(readme).toMatch(/default-domain opsets 13–23/);
    for (const opset of [13, 21, 22, 23]) expect(load(relu({ opset })).nodes).toHaveLength(1);
    for (const opset of [12, 24]) refused(() => load(relu({ opset })), /opset \d+ is not supported \(cleave imports default-domain opsets 13–23/);
  });

  it('the fixtures import at opsets 22 and 23 as they do at their own', () => {
    for (const name of ['mlp', 'cnn', 'gpt']) {
      const file = fixturePath(name);
      const m = decodeModel(readFileSync(file), file);
      const base = importModel(m, { baseDir: dirname(file), file }, { batch: 2 });
      for (const opset of [22, 23]) {
        const m2 = { ...m, opsetImport: (m.opsetImport ?? []).map((o) => (o.domain ? o : { ...o, version: opset })) };
        const g = importModel(m2, { baseDir: dirname(file), file }, { batch: 2 });
        expect(g.nodes.map((n) => `${n.op}:${n.outputs.map((o) => o.type).join(',')}`)).toEqual(base.nodes.map((n) => `${n.op}:${n.outputs.map((o) => o.type).join(',')}`));
      }
    }
  });
});

// --- the mutation loop ------------------------------------------------------------------------

/** What JavaScript says when code meets a value it did not expect: never part of an import error. */
const JS_TEXT = /TypeError|ReferenceError|RangeError|Cannot read propert|is not iterable|is not a function|Invalid typed array length|Invalid array length|Maximum call stack|\bundefined\b|\[[^\]]*NaN[^\]]*\]/;

const HUGE = [0, -1, 1, 2, 2 ** 31, 2 ** 40, 2 ** 62, -(2 ** 62)];
const ATTR_TYPES = [ATTR.FLOAT, ATTR.INT, ATTR.STRING, ATTR.TENSOR, ATTR.GRAPH, ATTR.FLOATS, ATTR.INTS, ATTR.STRINGS, 0];
const OPS = ['Relu', 'Add', 'MatMul', 'Gemm', 'Reshape', 'Transpose', 'Concat', 'Gather', 'Slice', 'Conv', 'MaxPool', 'Softmax', 'Cast',
  'ConstantOfShape', 'Range', 'Expand', 'Tile', 'Split', 'LayerNormalization', 'Shape', 'Unsqueeze', 'ReduceMean', 'Where', 'Constant'];

/** Overwrites one int64 element of a raw-data initializer (the shapes, axes and indices exporters store). */
function pokeInt64(t: TensorP, rng: Rng): boolean {
  if (t.dataType !== 7 || !t.rawData || t.rawData.byteLength < 8) return false;
  const raw = new Uint8Array(t.rawData);
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  dv.setBigInt64(8 * rng.int(raw.byteLength / 8), BigInt(HUGE[rng.int(HUGE.length)]!), true);
  t.rawData = raw;
  return true;
}

function pick<T>(rng: Rng, xs: readonly T[]): T | undefined {
  return xs.length ? xs[rng.int(xs.length)] : undefined;
}

/** One random damage to a model; says which, for the failure message. */
function mutate(m: ModelP, rng: Rng): string {
  const g = m.graph!;
  const nodes = g.node ?? [];
  const n: NodeP | undefined = pick(rng, nodes);
  const attrs = nodes.flatMap((x) => (x.attribute ?? []).map((a) => [x, a] as const));
  const hit = pick(rng, attrs);
  const a: AttributeP | undefined = hit?.[1];
  switch (rng.int(14)) {
    case 0:
      if (!a) return 'none';
      a.type = pick(rng, ATTR_TYPES)!;
      return `attribute ${a.name} of ${hit![0].name} retyped to ${a.type}`;
    case 1:
      if (!a) return 'none';
      a.type = ATTR.INT;
      a.i = pick(rng, HUGE)!;
      return `attribute ${a.name} of ${hit![0].name} set to int ${a.i}`;
    case 2: {
      if (!a) return 'none';
      const v = pick(rng, HUGE)!;
      a.type = ATTR.INTS;
      a.ints = a.ints?.length ? a.ints.map((x, i) => (i === 0 ? v : x)) : [v];
      return `attribute ${a.name} of ${hit![0].name} set to ints ${a.ints.join(',')}`;
    }
    case 3:
      if (!n?.input?.length) return 'none';
      n.input.splice(rng.int(n.input.length), 1);
      return `an input of ${n.name} dropped`;
    case 4:
      if (!n?.input?.length) return 'none';
      n.input[rng.int(n.input.length)] = rng.next() < 0.5 ? '' : 'no_such_value';
      return `an input of ${n.name} renamed`;
    case 5:
      if (!n?.output?.length) return 'none';
      n.output[0] = pick(rng, nodes)?.output?.[0] ?? 'other';
      return `the output of ${n.name} renamed`;
    case 6:
      if (!n) return 'none';
      nodes.splice(rng.int(nodes.length + 1), 0, { ...structuredClone(n), name: rng.next() < 0.5 ? n.name : `${n.name}_copy` });
      return `${n.name} duplicated`;
    case 7: {
      const t = pick(rng, g.initializer ?? []);
      if (!t?.dims?.length) return 'none';
      t.dims[rng.int(t.dims.length)] = pick(rng, HUGE)!;
      return `initializer ${t.name} dims set to ${t.dims.join(',')}`;
    }
    case 8: {
      const inp = pick(rng, g.input ?? []);
      const dims = inp?.type?.tensorType?.shape?.dim;
      if (!dims?.length) return 'none';
      dims[rng.int(dims.length)] = { dimValue: pick(rng, HUGE)! };
      return `input ${inp!.name} dim set`;
    }
    case 9: {
      // Shape constants live in int64 initializers or in Constant nodes' tensors, by exporter.
      const inConstants = nodes.flatMap((x) => (x.attribute ?? []).flatMap((y) => (y.t?.dataType === 7 ? [y.t] : [])));
      const t = pick(rng, [...(g.initializer ?? []).filter((x) => x.dataType === 7), ...inConstants]);
      return t && pokeInt64(t, rng) ? `int64 tensor ${t.name ?? ''} poked` : 'none';
    }
    case 10:
      if (!n) return 'none';
      n.opType = pick(rng, OPS)!;
      return `${n.name} became ${n.opType}`;
    case 11:
      if (!a || !hit) return 'none';
      hit[0].attribute = (hit[0].attribute ?? []).filter((x) => x !== a);
      return `attribute ${a.name} of ${hit[0].name} removed`;
    case 12:
      if (!n) return 'none';
      nodes.splice(nodes.indexOf(n), 1);
      return `${n.name} deleted`;
    default: {
      const inp = pick(rng, g.input ?? []);
      if (!inp?.type?.tensorType) return 'none';
      inp.type.tensorType.elemType = pick(rng, [0, 1, 6, 7, 8, 9, 10, 11, 16, 99])!;
      return `input ${inp.name} retyped`;
    }
  }
}

describe('malformed models', () => {
  it('a few hundred seeded mutations of the fixtures end in success or a CleaveError without JavaScript error text', () => {
    const fixtures = ['mlp', 'cnn', 'torch_mlp', 'torch_cnn', 'gpt', 'torch_gpt'].map((name) => {
      const file = fixturePath(name);
      return { name, file, model: decodeModel(readFileSync(file), file) };
    });
    const rng = new Rng(Number(process.env.MUT_SEED ?? 18));
    const failures: string[] = [];
    let refusedCount = 0;
    const started = Date.now();
    const count = Number(process.env.MUT_COUNT ?? 400);
    for (let i = 0; i < count; i++) {
      // The GPT fixtures are the slowest to import: one mutation in four, the rest on the small models.
      const f = i % 8 === 3 ? fixtures[4]! : i % 8 === 7 ? fixtures[5]! : fixtures[i % 4]!;
      const m = structuredClone(f.model);
      const what = [mutate(m, rng), ...(rng.next() < 0.3 ? [mutate(m, rng)] : [])].join('; ');
      try {
        importModel(m, { baseDir: dirname(f.file), file: f.file }, { batch: 2 });
      } catch (e) {
        const msg = (e as Error).message;
        if (!(e instanceof CleaveError)) failures.push(`#${i} ${f.name} (${what}): ${(e as Error).name}: ${msg}`);
        else if (JS_TEXT.test(msg)) failures.push(`#${i} ${f.name} (${what}): JavaScript text in "${msg}"`);
        else if (msg.includes('\n') && !/cannot be imported/.test(msg)) failures.push(`#${i} ${f.name} (${what}): more than one line: "${msg}"`);
        else { refusedCount++; if (process.env.MUT_DEBUG) console.log(`#${i} ${f.name} (${what}): ${msg.slice(0, 200)}`); }
      }
    }
    expect(failures).toEqual([]);
    // The loop must exercise the error paths, not only mutations that change nothing.
    expect(refusedCount).toBeGreaterThan(count * 0.4);
    if (count === 400) expect(Date.now() - started).toBeLessThan(20_000);
  });
});
