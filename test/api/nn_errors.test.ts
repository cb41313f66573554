import { describe, expect, it } from 'vitest';
import { compileOnFirstStep } from '../../src/app/api/first_step.js';
import { compileOptionsOf } from '../../src/app/api/config.js';
import { nn } from '../../src/app/api/index.js';
import { tensor } from '../../src/core/ir/tensor.js';
import '../../src/core/ops/index.js';

const { Module, Linear, Parameter, partition, trace } = nn;
type SymTensor = nn.SymTensor;

const X = { x: { dtype: 'float32' as const, shape: [2, 4] } };

class Fc extends Module {
  fc = new Linear(4, 3);
  forward(x: SymTensor): SymTensor { return this.fc.forward(x); }
}

describe('module library errors', () => {
  it('reject bad partition blocks', () => {
    expect(() => partition(-1, () => 0)).toThrow(/partition\(-1\): a partition is a stage index, a non-negative integer/);
    expect(() => partition(1.5, () => 0)).toThrow(/partition\(1\.5\)/);
    expect(() => partition(0, async () => 0)).toThrow(/partition\(0, fn\): fn returned a promise; partition blocks are synchronous/);
    // The block closes even when its body throws.
    expect(() => partition(3, () => { throw new Error('boom'); })).toThrow('boom');
    expect(new Fc().partition).toBeUndefined();
  });

  it('reject forward code outside a trace, and traces inside traces', () => {
    const m = new Fc();
    expect(() => m.forward(undefined as unknown as SymTensor)).toThrow(/Fc\.forward: forward code runs on symbolic tensors while a model is traced/);
    expect(() => new Parameter([2]).add(1)).toThrow(/Add: forward code runs on symbolic tensors while a model is traced/);
    class Nests extends Module {
      fc = new Fc();
      forward(x: SymTensor): SymTensor {
        trace(this.fc, X);
        return x;
      }
    }
    expect(() => trace(new Nests(), X)).toThrow(/a model is already being traced: traces do not nest/);
    let kept: SymTensor | undefined;
    class Keeps extends Module {
      fc = new Linear(4, 4);
      forward(x: SymTensor): SymTensor { return this.fc.forward(kept ?? (kept = x)); }
    }
    trace(new Keeps(), X);
    expect(() => trace(new Keeps(), X)).toThrow(/tensor 'x' belongs to another trace; tensors do not outlive the trace that made them/);
  });

  it('name parameters and modules that are not part of the model', () => {
    class Stray extends Module {
      forward(x: SymTensor): SymTensor { return x.matmul(new Parameter([4, 4], { normal: 1 })); }
    }
    expect(() => trace(new Stray(), X)).toThrow(/a Parameter of shape \[4, 4\] is used in forward but is no module's property/);
    class Inline extends Module {
      forward(x: SymTensor): SymTensor { return new Linear(4, 2).forward(new nn.ReLU().forward(x)); }
    }
    expect(() => trace(new Inline(), X)).toThrow(/a Linear with parameters runs in forward but is not part of the model: assign it to a module's property \(this\.fc = new Linear\(…\)\)/);
  });

  it('check inputs, outputs and what is traced', () => {
    expect(() => trace(new Fc(), { x: { dtype: 'float8' as 'float32', shape: [2, 4] } })).toThrow(/input 'x': unknown dtype 'float8'/);
    expect(() => trace(new Fc(), { x: { dtype: 'float32', shape: [2, 0] } })).toThrow(/input 'x': shape \[2, 0\] must list positive sizes or symbol names/);
    class Returns extends Module {
      forward(x: SymTensor): SymTensor { return [x.relu(), 3] as unknown as SymTensor; }
    }
    expect(() => trace(new Returns(), X)).toThrow(/Returns\.forward must return a tensor, a list of tensors or a record of them; got 3/);
    expect(() => trace(new Fc(), X, { outputs: ['a', 'b'] })).toThrow(/Fc\.forward returned 1 output, but 2 names were given/);
    class Two extends Module {
      forward(x: SymTensor): SymTensor[] { return [x.relu(), x.tanh()]; }
    }
    expect(() => trace(new Two(), X, { outputs: ['a'] })).toThrow(/Two\.forward returned 2 outputs, but 1 name was given/);
    expect(trace(new Two(), X).outputs.map((v) => v.name)).toEqual(['output_0', 'output_1']);
    expect(() => trace({ forward: () => 0 } as unknown as nn.Model, X)).toThrow(/trace: expected an nn\.Module, got Object/);
    expect(() => trace({ [Symbol.for('cleave.nn.Module')]: true } as unknown as nn.Model, X)).toThrow(/the model's modules come from another copy of cleave/);
    class NoForward extends Module {}
    expect(() => trace(new NoForward() as unknown as nn.Model, X)).toThrow(/NoForward has no forward method/);
    // Shape errors name the node, whose name is the module's path.
    expect(() => trace(new Fc(), { x: { dtype: 'float32', shape: [2, 5] } })).toThrow(/\/fc\/Gemm/);
  });

  it('check layer arguments', () => {
    expect(() => new Linear(0, 3)).toThrow(/Linear\(0, 3\): inFeatures must be a positive integer, got 0/);
    expect(() => new nn.Embedding(10, 2.5)).toThrow(/Embedding\(10, 2\.5\): dim must be a positive integer/);
    expect(() => new nn.Conv2d(3, 8, 3, { groups: 2 })).toThrow(/Conv2d\(3, 8\): channels must divide into 2 groups/);
    expect(() => new nn.Conv2d(3, 8, [3, 0])).toThrow(/Conv2d\(3, 8\): kernel must be positive integers, got \[3,0\]/);
    expect(() => new nn.MaxPool2d(2, { padding: -1 })).toThrow(/MaxPool2d: padding must be non-negative integers/);
    expect(() => new nn.AdaptiveAvgPool2d(2)).toThrow(/AdaptiveAvgPool2d\(2\): only an output of 1 × 1/);
    expect(() => new nn.Dropout(1)).toThrow(/Dropout\(1\): p must be in \[0, 1\)/);
    expect(() => new nn.GELU('fast' as 'tanh')).toThrow(/GELU: approximate must be 'none' or 'tanh', got 'fast'/);
    expect(() => new nn.BatchNorm2d(4, { momentum: 2 })).toThrow(/BatchNorm2d\(4\): momentum must be in \[0, 1\], got 2/);
    expect(() => new nn.CausalSelfAttention({ dim: 10, heads: 3 })).toThrow(/CausalSelfAttention: dim 10 does not divide into 3 heads/);
    expect(() => new Parameter([2, -1])).toThrow(/Parameter of shape \[2, -1\]: dimensions must be positive integers/);
    expect(() => new nn.Sequential(new Fc(), 3 as unknown as nn.Layer)).toThrow(/Sequential: '1' is not a module/);
  });

  it('check inputs at forward time, naming the layer', () => {
    class Ln extends Module {
      ln = new nn.LayerNorm(8);
      forward(x: SymTensor): SymTensor { return this.ln.forward(x); }
    }
    expect(() => trace(new Ln(), X)).toThrow(/LayerNorm\(8\): the input's last dimension is 4/);
    class Bn extends Module {
      bn = new nn.BatchNorm2d(4);
      forward(x: SymTensor): SymTensor { return this.bn.forward(x); }
    }
    expect(() => trace(new Bn(), X)).toThrow(/BatchNorm2d\(4\): expects an input of rank 4, got shape \[2, 4\]/);
    const gpt = new nn.GPT({ vocab: 8, seq: 4, dim: 8, heads: 2, layers: 1 });
    expect(() => trace(gpt, { ids: { dtype: 'int64', shape: [1, 5] } })).toThrow(/GPT: input ids has 5 positions; the model has 4/);
    expect(() => trace(gpt, { ids: { dtype: 'int64', shape: [1, 'T'] } })).toThrow(/GPT: input ids has T positions/);
    // A shorter input takes the first rows of the position table.
    expect(trace(gpt, { ids: { dtype: 'int64', shape: [1, 3] } }).outputs[0]!.shape).toEqual([1, 3, 8]);
    class Swap extends Module {
      forward(x: SymTensor): SymTensor { return x.transpose(0, 2); }
    }
    expect(() => trace(new Swap(), X)).toThrow(/transpose\(0, 2\): a tensor of shape \[2, 4\] has no such axes/);
  });

  it('load state dicts by name, strictly unless told', () => {
    const m = new Fc();
    expect(m.namedParameters().map(([n]) => n)).toEqual(['fc.weight', 'fc.bias']);
    expect(m.parameterCount()).toBe(15);
    const w = tensor('float32', [3, 4]), b = tensor('float32', [3]);
    expect(() => m.loadStateDict({ 'fc.weight': w })).toThrow(/loadStateDict: missing fc\.bias \(strict: false loads what matches\)/);
    expect(() => m.loadStateDict({ 'fc.weight': w, 'fc.bias': b, extra: b })).toThrow(/loadStateDict: unexpected extra/);
    expect(() => m.loadStateDict({ 'fc.weight': b, 'fc.bias': b })).toThrow(/loadStateDict: 'fc\.weight' has shape \[3\]; the model's Fc expects \[3, 4\]/);
    m.loadStateDict(new Map([['fc.weight', w]]), { strict: false });
    expect(m.fc.weight.data).toBe(w);
    m.fc.weight.data = tensor('float32', [4, 4]);
    expect(() => trace(m, X)).toThrow(/parameter 'fc\.weight': its data has shape \[4, 4\], the module declares \[3, 4\]/);
  });

  it('check what the first step traces and compiles', () => {
    const ok = { x: tensor('float32', [4, 4]), labels: tensor('int64', [4]) };
    expect(() => compileOnFirstStep(new Fc(), { x: ok.x }, { loss: 'cross-entropy' })).toThrow(/the batch has no 'labels' entry for the loss's labels \(entries: x\)/);
    expect(() => compileOnFirstStep(new Fc(), { x: ok.x }, {})).toThrow(/the cross-entropy loss needs labels: the batch has no 'labels' entry/);
    expect(() => compileOnFirstStep(new Fc(), ok, { inputs: ['image'] })).toThrow(/the batch has no entry 'image' for the model's input \(entries: x, labels\)/);
    expect(() => compileOnFirstStep(new Fc(), ok, { microbatches: 8 })).toThrow(/the first batch has 4 samples, fewer than the 8 microbatches/);
    expect(() => compileOnFirstStep(new Fc(), ok, { loss: 'hinge' as 'mse' })).toThrow(/loss must be auto, output, cross-entropy or mse, got 'hinge'/);
    const c = compileOnFirstStep(new Fc(), ok, { microbatches: 2, seed: 3 });
    expect(c.plan.model.microbatchSize).toBe(2);
    expect([...c.weights.keys()]).toEqual(['fc.weight', 'fc.bias']);
  });

  it('check SMP configs in their own terms', () => {
    expect(() => compileOptionsOf({ partitions: 0 }, 'cfg')).toThrow(/cfg: "partitions" must be an integer ≥ 1, got 0/);
    expect(() => compileOptionsOf({ ddp: true }, 'cfg')).toThrow(/cfg: "ddp": true needs the data-parallel degree: give "dp"/);
    expect(() => compileOptionsOf({ placement_strategy: 'far' }, 'cfg')).toThrow(/"placement_strategy" must be cluster or spread, got 'far'/);
    expect(() => compileOptionsOf({ dtype: 'fp8' }, 'cfg')).toThrow(/"dtype" must be one of fp32, bf16, fp16, got 'fp8'/);
    expect(() => compileOptionsOf({ optimizer: 'lion' }, 'cfg')).toThrow(/"optimizer" must be one of sgd, sgd-momentum, adam, adamw, got 'lion'/);
    expect(() => compileOptionsOf({ partitions: 2, default_partition: 2 }, 'cfg')).toThrow(/"default_partition" 2 is out of range: there are 2 stages/);
    expect(() => compileOptionsOf({ pipeline: 'wave' }, 'cfg')).toThrow(/unknown schedule 'wave'/);
    expect(compileOptionsOf({ partitions: 2, pipeline: 'simple', dp: 2 }, 'cfg')).toMatchObject({ partitions: 2, dp: 2, schedule: 'gpipe', microbatches: 1, device: 'cpu' });
  });
});
