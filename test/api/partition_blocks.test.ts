import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type Compiled, compile } from '../../compiler/compile.js';
import { importOnnx } from '../../compiler/onnx/import.js';
import { runGraph } from '../../runtime/backends/cpu/interpreter.js';
import { compileOnFirstStep } from '../../src/app/api/first_step.js';
import { nn } from '../../src/app/api/index.js';
import type { Graph } from '../../src/core/ir/graph.js';
import { tensor } from '../../src/core/ir/tensor.js';
import '../../src/core/ops/index.js';
import { maxRelError } from '../helpers/compare.js';

const { Module, Linear, Embedding, LayerNorm, TransformerBlock, Sequential, partition, trace } = nn;
type SymTensor = nn.SymTensor;

const dir = mkdtempSync(join(tmpdir(), 'cleave-nn-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const V = 32, T = 8, D = 16;
const IDS = { input_ids: { dtype: 'int64' as const, shape: [2, T] } };

/** A small language model whose constructor puts its layers in partitions: `stages[i]` for layer i (undefined: none). */
class Lm extends Module {
  wte!: nn.Embedding;
  h: nn.TransformerBlock[] = [];
  ln_f!: nn.LayerNorm;
  head!: nn.Linear;
  constructor(stages: { embed?: number; layers: (number | undefined)[]; head?: number }) {
    super();
    const block = <R>(p: number | undefined, fn: () => R): R => (p === undefined ? fn() : partition(p, fn));
    block(stages.embed, () => { this.wte = new Embedding(V, D); });
    this.h = stages.layers.map((p) => block(p, () => new TransformerBlock({ dim: D, heads: 2 })));
    block(stages.head, () => {
      this.ln_f = new LayerNorm(D);
      this.head = new Linear(D, V, { bias: false });
    });
  }
  forward(ids: SymTensor): SymTensor {
    let x = this.wte.forward(ids);
    for (const b of this.h) x = b.forward(x);
    return this.head.forward(this.ln_f.forward(x));
  }
}

function compiled(g: Graph, o: { auto?: boolean; dflt?: number; p?: number } = {}): Compiled {
  return compile({ model: g.name, graph: g, loss: { kind: 'cross-entropy' }, partitions: o.p ?? 2, microbatches: 2, schedule: '1f1b', device: 'cpu', autoPartition: o.auto, defaultPartition: o.dflt });
}

/** Stage of every forward and loss node of the plan, keyed by the top-level module it runs in. */
function stagesByModule(c: Compiled): Map<string, Set<number>> {
  const out = new Map<string, Set<number>>();
  for (const n of c.training.graph.nodes) {
    const phase = n.meta['phase'];
    if (phase !== 'forward' && phase !== 'loss') continue;
    const top = n.scope.split('/').filter(Boolean)[0] ?? '';
    const set = out.get(top) ?? new Set<number>();
    set.add(c.partition.stageOf.get(n)!);
    out.set(top, set);
  }
  return out;
}
const flat = (m: Map<string, Set<number>>) => Object.fromEntries([...m].map(([k, s]) => [k, [...s].sort()]));

describe('partition blocks', () => {
  it('give exactly the stages written, with auto partitioning off or on', () => {
    const g = trace(new Lm({ embed: 0, layers: [0, 0, 1, 1], head: 1 }), IDS, { outputs: ['logits'] });
    const want = { wte: [0], 'h.0': [0], 'h.1': [0], 'h.2': [1], 'h.3': [1], ln_f: [1], head: [1], loss: [1] };
    expect(flat(stagesByModule(compiled(g, { auto: false })))).toEqual(want);
    expect(flat(stagesByModule(compiled(g)))).toEqual(want);
    // The backward work of each node goes with it.
    const c = compiled(g, { auto: false });
    for (const n of c.training.graph.nodes) {
      const of = n.meta['gradOf'];
      const fwd = typeof of === 'string' ? c.training.graph.nodes.find((x) => x.name === of) : undefined;
      if (fwd) expect(c.partition.stageOf.get(n), n.name).toBe(c.partition.stageOf.get(fwd));
    }
  });

  it('nest: the innermost block wins, and a module keeps the partition it was made in', () => {
    class Nested extends Module {
      enc!: nn.Sequential;
      mid = new Linear(D, D);
      head!: nn.Linear;
      tail!: nn.Linear;
      constructor() {
        super();
        partition(0, () => {
          this.enc = new Sequential(new Linear(D, D), new nn.ReLU());
          partition(2, () => { this.tail = new Linear(D, 4); });
          this.head = new Linear(D, D);
        });
      }
      forward(x: SymTensor): SymTensor {
        const h = this.head.forward(this.enc.forward(x));
        // mid was made outside any block: the forward's blocks place it, innermost first.
        const m = partition(2, () => partition(1, () => this.mid.forward(h).relu()));
        // tail was made in partition 2 (nested in 0): it runs there, even called from a block of 1.
        return partition(1, () => this.tail.forward(m));
      }
    }
    const g = trace(new Nested(), { x: { dtype: 'float32', shape: [4, D] } });
    expect(flat(stagesByModule(compiled(g, { auto: false, p: 3 })))).toEqual({ enc: [0], head: [0], mid: [1], '': [1], tail: [2], loss: [2] });
  });

  it('leave the rest to default_partition with auto partitioning off', () => {
    const head1 = trace(new Lm({ layers: [undefined, undefined], head: 1 }), IDS);
    expect(flat(stagesByModule(compiled(head1, { auto: false, dflt: 0 })))).toEqual({ wte: [0], 'h.0': [0], 'h.1': [0], ln_f: [1], head: [1], loss: [1] });
    const first0 = trace(new Lm({ embed: 0, layers: [0, undefined, undefined] }), IDS);
    expect(flat(stagesByModule(compiled(first0, { auto: false, dflt: 1 })))).toEqual({ wte: [0], 'h.0': [0], 'h.1': [1], 'h.2': [1], ln_f: [1], head: [1], loss: [1] });
    // With auto partitioning on, the partitioner places the unannotated layers after the annotated ones.
    const auto = flat(stagesByModule(compiled(first0)));
    expect(auto['wte']).toEqual([0]);
    expect(auto['head']).toEqual([1]);
  });

  it('that make a stage feed an earlier one are an error naming both modules', () => {
    expect(() => trace(new Lm({ embed: 0, layers: [1, 0], head: 1 }), IDS)).toThrow(
      /partitions out of order: module 'h\.1\.attn\.ln_1' \(partition 0\) uses what module 'h\.0' computes on partition 1 \(node '\/h\.0\/Add[_\d]*' → '\/h\.1\/attn\/ln_1\/LayerNormalization'\); a stage may only feed later stages: put module 'h\.1\.attn\.ln_1' in a partition ≥ 1, or module 'h\.0' in one ≤ 0/);
    // Through unannotated work in between: the error names the annotated ends.
    expect(() => trace(new Lm({ embed: 1, layers: [undefined], head: 0 }), IDS)).toThrow(/module 'ln_f' \(partition 0\) uses what module 'wte' computes on partition 1 \(node '\/wte\/Gather' → … → '\/ln_f\/LayerNormalization'\)/);
    // Unannotated work after a later stage, with auto partitioning off, lands on default_partition: the same error.
    const g = trace(new Lm({ embed: 1, layers: [undefined] }), IDS);
    expect(() => nn.checkStageOrder(g, 0)).toThrow(/partitions out of order: module 'h\.0\.attn\.ln_1' \(default_partition 0\) uses what module 'wte' computes on partition 1 \(node '\/wte\/Gather' → '\/h\.0\/attn\/ln_1\/LayerNormalization'\)/);
    const batch = { input_ids: tensor('int64', [4, T]), labels: tensor('int64', [4, T]) };
    expect(() => compileOnFirstStep(new Lm({ embed: 1, layers: [undefined] }), batch, { partitions: 2, microbatches: 2, auto_partition: false })).toThrow(/module 'h\.0\.attn\.ln_1' \(default_partition 0\) uses what module 'wte' computes on partition 1/);
  });

  it('report a parameter shared by two stages as a tied weight', () => {
    class Tied extends Module {
      wte!: nn.Embedding;
      head!: nn.Linear;
      constructor() {
        super();
        partition(0, () => { this.wte = new Embedding(V, D); });
        partition(1, () => { this.head = new Linear(D, V, { bias: false }); });
        this.head.weight = this.wte.weight;
      }
      forward(ids: SymTensor): SymTensor { return this.head.forward(this.wte.forward(ids).relu()); }
    }
    const g = trace(new Tied(), IDS);
    expect(g.params().map((p) => p.name)).toEqual(['wte.weight']);
    const c = compiled(g, { auto: false });
    expect(c.partition.tied).toEqual([{ param: 'wte.weight', stages: [0, 1] }]);
  });

  it('travel to ONNX as node metadata that the importer reads back', () => {
    const model = new Lm({ embed: 0, layers: [0, 1], head: 1 });
    const file = join(dir, 'lm.onnx');
    const g = nn.exportOnnx(model, { input_ids: { dtype: 'int64', shape: ['N', T] } }, file, { outputs: ['logits'], seed: 4 });
    const back = importOnnx(file, { batch: 3 });
    const stage = new Map(g.nodes.map((n) => [n.name, n.meta.partition]));
    expect(back.nodes.length).toBeGreaterThan(20);
    for (const n of back.nodes) expect(n.meta.partition, n.name).toBe(stage.get(n.name));
    const ids = tensor('int64', [3, T], Array.from({ length: 3 * T }, (_, i) => (i * 7) % V));
    const again = trace(model, { input_ids: { dtype: 'int64', shape: [3, T] } }, { outputs: ['logits'], seed: 4 });
    expect(maxRelError(runGraph(back, { input_ids: ids }).get('logits')!, runGraph(again, { input_ids: ids }).get('logits')!)).toBe(0);
  });
});
