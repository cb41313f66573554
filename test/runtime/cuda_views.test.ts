// The CUDA device's view bookkeeping, on a host-memory stand-in for the addon: runs without a GPU.
import { describe, expect, it } from 'vitest';
import { Cuda } from '../../runtime/backends/cuda/device.js';
import { runCudaNode } from '../../runtime/backends/cuda/graph.js';
import type { NativeCuda } from '../../runtime/backends/cuda/native.js';
import { tensor } from '../../src/core/ir/tensor.js';
import { getOp } from '../../src/core/ops/index.js';

/** Memory calls kept in a map, so leaks and double frees show; any kernel call fails. */
function hostMemory(): { native: NativeCuda; freed: bigint[] } {
  const blocks = new Map<bigint, Uint8Array>();
  const freed: bigint[] = [];
  let next = 1n;
  const memory = {
    alloc: (bytes: number) => {
      const p = next++;
      blocks.set(p, new Uint8Array(bytes));
      return p;
    },
    free: (p: bigint) => {
      if (!blocks.delete(p)) throw new Error(`double free of ${p}`);
      freed.push(p);
    },
    upload: (p: bigint, d: ArrayBufferView) => blocks.get(p)!.set(new Uint8Array(d.buffer, d.byteOffset, d.byteLength)),
    download: (p: bigint, bytes: number) => blocks.get(p)!.slice(0, bytes).buffer,
  };
  const native = new Proxy(memory, {
    get: (t, k) => (k in t ? t[k as keyof typeof t] : () => { throw new Error(`kernel ${String(k)} is not in the host stand-in`); }),
  }) as unknown as NativeCuda;
  return { native, freed };
}

describe('CUDA views', () => {
  it('share their base\'s memory, which goes with the last tensor that refers to it', () => {
    const { native, freed } = hostMemory();
    const dev = new Cuda(native);
    const x = dev.upload(tensor('float32', [2, 3], [1, 2, 3, 4, 5, 6]));
    const v = dev.view(x, [3, 2]);
    expect(v.ptr).toBe(x.ptr);
    dev.free(x);
    dev.free(x); // a second free of one tensor must not drop its view's reference
    expect(freed).toEqual([]);
    expect(dev.allocations).toBe(1);
    const back = dev.download(v);
    expect(back.shape).toEqual([3, 2]);
    expect(Array.from(back.data)).toEqual([1, 2, 3, 4, 5, 6]);
    dev.free(v);
    expect(freed).toEqual([x.ptr]);
    expect(dev.allocations).toBe(0);
  });

  it('refuse a freed base or a shape of another size', () => {
    const dev = new Cuda(hostMemory().native);
    const y = dev.alloc('float32', [4]);
    expect(() => dev.view(y, [5])).toThrow(/cannot view \[4\] as \[5\]/);
    dev.free(y);
    expect(() => dev.view(y, [4])).toThrow(/view of a freed CUDA tensor/);
  });

  it('run Reshape without a kernel, and a failing kernel leaves no allocation behind', () => {
    const dev = new Cuda(hostMemory().native);
    const x = dev.upload(tensor('float32', [4, 6], Array.from({ length: 24 }, (_, i) => i)));
    const [r] = runCudaNode(dev, getOp('Reshape'), 'r', [x], [{ dtype: 'float32', shape: [2, 12] }], { shape: [2, 12] });
    expect(r!.ptr).toBe(x.ptr);
    expect(dev.allocations).toBe(1);
    // Relu needs its kernel, which the stand-in lacks: the output allocated for it must be freed.
    expect(() => runCudaNode(dev, getOp('Relu'), 'act', [r!], [{ dtype: 'float32', shape: [2, 12] }], {})).toThrow(/node 'act' \(Relu\) on CUDA: kernel unary/);
    expect(dev.allocations).toBe(1);
    // Shape has a CUDA kernel now: an op without one is made up from its entry.
    const { cuda: _, ...bare } = getOp('Shape', 'test');
    expect(() => runCudaNode(dev, bare, 's', [x], [{ dtype: 'int64', shape: [2] }], {})).toThrow(/node 's': op Shape has no CUDA kernel/);
  });
});
