/**
 * Dimension collapsing for the CUDA kernels' index arithmetic. A kernel pays a division per
 * dimension per element, so a [B, T, D] + [D] bias add should reach the device as [B·T, D] and a
 * same-shape add as one flat dimension: adjacent dimensions merge wherever every operand steps
 * through them as one (its outer stride is its inner stride times the inner extent), and extent-1
 * dimensions go. The element order is unchanged, so outputs written in index order stay correct.
 */
export interface Collapsed {
  dims: number[];
  /** One stride list per operand, in the order given. */
  strides: number[][];
}

export function collapseDims(dims: readonly number[], strides: readonly (readonly number[])[]): Collapsed {
  const keep = dims.map((_, i) => i).filter((i) => dims[i] !== 1);
  const outDims: number[] = [];
  const outStrides: number[][] = strides.map(() => []);
  for (const i of keep) {
    const last = outDims.length - 1;
    // Dimension i merges into the previous kept one when, for every operand, stepping the previous
    // by one equals stepping i through its whole extent.
    if (last >= 0 && strides.every((s, k) => outStrides[k]![last] === s[i]! * dims[i]!)) {
      outDims[last]! *= dims[i]!;
      strides.forEach((s, k) => (outStrides[k]![last] = s[i]!));
    } else {
      outDims.push(dims[i]!);
      strides.forEach((s, k) => outStrides[k]!.push(s[i]!));
    }
  }
  if (!outDims.length) return { dims: [1], strides: strides.map(() => [0]) };
  return { dims: outDims, strides: outStrides };
}
