// A stand-in for MNIST that needs no download: ten fixed random 12 × 12 "digits", each sample one
// of them plus noise. The prototypes are the same on every rank (the task is one task); the
// samples differ per data-parallel replica, as shards of a real data set would.
import { type Tensor, tensor } from '../src/app/api/index.js'; // in a project of your own: from 'cleave'
import { CLASSES, IMAGE } from './mnist_model.js';

/** Uniform numbers in [0, 1) from a 32-bit seed (mulberry32), and normals by Box–Muller. */
function generator(seed: number): { uniform(): number; normal(): number } {
  let s = seed >>> 0;
  const uniform = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  return { uniform, normal: () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform()) };
}

export function syntheticDigits(replica: number, noise = 0.8): { next(batch: number): Record<string, Tensor> } {
  const pixels = IMAGE * IMAGE;
  const proto = generator(1234);
  const prototypes = Array.from({ length: CLASSES }, () => Float64Array.from({ length: pixels }, () => proto.normal()));
  const rng = generator(1 + replica);
  return {
    next(batch) {
      const image = tensor('float32', [batch, 1, IMAGE, IMAGE]), labels = tensor('int64', [batch]);
      for (let b = 0; b < batch; b++) {
        const c = Math.floor(rng.uniform() * CLASSES);
        labels.data[b] = c;
        for (let i = 0; i < pixels; i++) image.data[b * pixels + i] = prototypes[c]![i]! + noise * rng.normal();
      }
      return { image, labels };
    },
  };
}
