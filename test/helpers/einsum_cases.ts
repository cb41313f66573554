// Einsum rows for the CUDA kernel (composed from strided copies, reductions and batched GEMMs):
// spread into test/helpers/cuda_cases.ts's KERNEL_CASES (emulated CUDA and test/gpu) and run on
// the host emulation by test/ops/einsum.test.ts. Each covers one path of src/core/ops/einsum.ts's kernel.
import type { KernelCase } from './cuda_cases.js';

const e = (equation: string, inputs: number[][], label?: string): KernelCase => ({ op: 'Einsum', inputs, attrs: { equation }, label: label ?? equation });

export const EINSUM_KERNEL_CASES: KernelCase[] = [
  e('ij,jk->ik', [[5, 7], [7, 9]], 'plain GEMM, no copies'),
  e('bij,bjk->bik', [[3, 5, 7], [3, 7, 4]], 'batched GEMM'),
  e('bhqd,bhkd->bhqk', [[2, 3, 5, 8], [2, 3, 6, 8]], 'attention scores: B read transposed'),
  e('bhqk,bhkd->bhqd', [[2, 3, 5, 6], [2, 3, 6, 8]], 'attention values'),
  e('bqhd,bkhd->bhqk', [[2, 5, 3, 8], [2, 6, 3, 8]], 'heads in the middle: both operands permuted'),
  e('ji,jk->ki', [[7, 5], [7, 4]], 'A read transposed, output permuted'),
  e('ij->ji', [[5, 7]], 'transpose'),
  e('ij->i', [[5, 7]], 'row sums'),
  e('ijk->ki', [[3, 4, 5]], 'sum then transpose'),
  e('ij->', [[5, 7]], 'total'),
  e('i,i->', [[33], [33]], 'dot'),
  e('i,j->ij', [[5], [6]], 'outer'),
  e('...ij,...jk->...ik', [[2, 3, 4, 5], [2, 3, 5, 6]], 'ellipsis'),
  e('...ij,...jk->...ik', [[2, 1, 4, 5], [1, 3, 5, 6]], 'ellipsis, size-1 broadcast'),
  e('ij,jk', [[5, 7], [7, 4]], 'implicit'),
  e('ij,jk,kl->il', [[3, 4], [4, 5], [5, 6]], 'three operands'),
  e('bn,anm,bm->ba', [[2, 3], [4, 3, 5], [2, 5]], 'bilinear, three operands'),
  e('ij,kl->j', [[3, 4], [5, 6]], 'letters summed before the product'),
];
