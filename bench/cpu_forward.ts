// CPU forward time of a fixture on cleave's reference backend beside onnxruntime-node, same machine,
// same process, same inputs. Usage: npm run bench:cpu-forward -- [fixture] [batch] [repeats]
import { cpus } from 'node:os';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { importOnnx } from '../compiler/onnx/import.js';
import { fixturesDir } from '../fixtures/generate.js';
import { runGraph } from '../runtime/backends/cpu/interpreter.js';
import { tensor } from '../src/core/ir/tensor.js';
import '../src/core/ops/index.js';
import { Rng } from '../src/core/util/random.js';
import { table } from '../src/core/util/format.js';

const [name = 'gpt', batchArg = '8', repeatsArg = '30'] = process.argv.slice(2);
const batch = Number(batchArg), repeats = Number(repeatsArg);
const file = name.endsWith('.onnx') ? name : join(fixturesDir(), `${name}.onnx`);

const g = importOnnx(file, { batch });
const rng = new Rng(1);
const feeds = Object.fromEntries(g.inputs.map((v) => {
  const shape = v.shape as number[];
  const n = shape.reduce((a, b) => a * b, 1);
  return [v.name, tensor(v.dtype, shape, Array.from({ length: n }, () => (v.dtype === 'int64' ? rng.int(64) : rng.normal())))];
}));

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function time(fn: () => unknown): number {
  for (let i = 0; i < 3; i++) fn(); // warm-up: JIT, caches
  const ts: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    fn();
    ts.push(performance.now() - t0);
  }
  return median(ts);
}

async function main(): Promise<void> {
  const cleaveMs = time(() => runGraph(g, feeds));
  // onnxruntime with its default CPU settings, given the same thread budget as the machine.
  const session = await ort.InferenceSession.create(file);
  const ortFeeds = Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, t.dtype === 'int64'
    ? new ort.Tensor('int64', BigInt64Array.from(Array.from(t.data, (x) => BigInt(x))), [...t.shape])
    : new ort.Tensor('float32', Float32Array.from(t.data), [...t.shape])]));
  for (let i = 0; i < 3; i++) await session.run(ortFeeds);
  const ts: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    await session.run(ortFeeds);
    ts.push(performance.now() - t0);
  }
  const ortMs = median(ts);
  const cpu = cpus();
  process.stdout.write(`CPU forward, ${file}, batch ${batch}, median of ${repeats}\n`);
  process.stdout.write(`machine: ${cpu[0]?.model ?? 'unknown CPU'} × ${cpu.length} cores, Node ${process.versions.node}\n\n`);
  process.stdout.write(table(['runtime', 'ms per forward', 'samples/s', 'vs onnxruntime'], [
    ['cleave (CPU reference)', cleaveMs.toFixed(2), (batch / cleaveMs * 1000).toFixed(0), `${(cleaveMs / ortMs).toFixed(1)}× slower`],
    ['onnxruntime-node', ortMs.toFixed(2), (batch / ortMs * 1000).toFixed(0), '1.0×'],
  ]) + '\n');
  await session.release();
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).message}\n`);
  process.exitCode = 1;
});
