// Partitions a GPT-2-XL-shaped model (48 layers, d 1600, 25 heads, seq 1024, vocab 50257; about
// 1.56 B parameters held as lazy initializers, no weight data) into 8 pipeline stages, and times
// each phase. Usage: npm run bench:partition -- [stages] [layers]
import { cpus } from 'node:os';
import { buildTrainingGraph } from '../compiler/autodiff/training.js';
import { partitionTraining } from '../compiler/partition/partition.js';
import { buildGpt } from '../fixtures/models.js';
import { renderPartition } from '../src/app/cli/partition.js';
import { parameterStats } from '../src/core/ir/stats.js';
import '../src/core/ops/index.js';

const [stagesArg = '8', layersArg = '48'] = process.argv.slice(2);
const stages = Number(stagesArg), layers = Number(layersArg);

const t0 = performance.now();
const g = buildGpt({ vocab: 50257, seq: 1024, dim: 1600, heads: 25, layers, tied: true, seed: 0, lazy: true, batch: 1 });
const t1 = performance.now();
const t = buildTrainingGraph(g, { loss: { kind: 'cross-entropy' } });
const t2 = performance.now();
const part = partitionTraining(t, { partitions: stages, device: 'h100', policy: 'bf16', optimizer: 'adamw', microbatches: 4 * stages });
const t3 = performance.now();

const cpu = cpus();
process.stdout.write(`GPT-2-XL shape: ${layers} layers, ${parameterStats(g).count.toLocaleString('en-US')} parameters (lazy), ` +
  `${g.nodes.length} forward nodes, ${t.graph.nodes.length} training-graph nodes\n`);
process.stdout.write(`machine: ${cpu[0]?.model ?? 'unknown CPU'} × ${cpu.length} cores, Node ${process.versions.node}\n\n`);
process.stdout.write(renderPartition(part));
process.stdout.write(`\nbuild ${(t1 - t0).toFixed(0)} ms, autodiff ${(t2 - t1).toFixed(0)} ms, partition into ${stages} stages ${(t3 - t2).toFixed(0)} ms\n`);
