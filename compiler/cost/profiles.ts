import { CleaveError } from '../../src/core/errors.js';

/**
 * What the cost model knows of a device: achievable (not peak) rates, measured the way training
 * kernels reach them — dense tensor-core GEMMs at ~70% of peak, streaming kernels at ~85% of the
 * memory bandwidth — plus the fixed cost of launching one kernel, and the links between devices.
 */
export interface DeviceProfile {
  readonly name: string;
  readonly description: string;
  /** Achievable FLOP/s by compute dtype. */
  readonly flops: { readonly float32: number; readonly bfloat16: number; readonly float16: number; readonly float64: number };
  /** Achievable memory bandwidth, bytes/s. */
  readonly bandwidth: number;
  /** Seconds per kernel launch (per node). */
  readonly launch: number;
  /** Usable memory per device, bytes. */
  readonly memory: number;
  /** Link to a pipeline neighbour on the same host, and across hosts, bytes/s; per-message latency. */
  readonly link: { readonly intraHost: number; readonly interHost: number; readonly latency: number };
}

const T = 1e12, G = 1e9, GiB = 2 ** 30;

const H100: DeviceProfile = {
  name: 'h100', description: 'NVIDIA H100 SXM 80 GB, NVLink 4',
  // Peak: 989 TFLOP/s bf16 dense, 67 TFLOP/s fp32 (CUDA cores), 3.35 TB/s HBM3.
  flops: { float32: 50 * T, bfloat16: 690 * T, float16: 690 * T, float64: 50 * T },
  bandwidth: 2.8 * T, launch: 4e-6, memory: 79 * GiB,
  // NVLink 4: 450 GB/s per direction; 400 Gb/s InfiniBand per GPU between hosts.
  link: { intraHost: 360 * G, interHost: 40 * G, latency: 10e-6 },
};

export const PROFILES: Readonly<Record<string, DeviceProfile>> = {
  h100: H100,
  // The H100's compute with HBM3e: 4.8 TB/s.
  h200: { ...H100, name: 'h200', description: 'NVIDIA H200 SXM 141 GB, NVLink 4', bandwidth: 4.0 * T, memory: 139 * GiB },
  a100: {
    name: 'a100', description: 'NVIDIA A100 SXM 80 GB, NVLink 3',
    // Peak: 312 TFLOP/s bf16, 19.5 TFLOP/s fp32, 2.0 TB/s HBM2e.
    flops: { float32: 15 * T, bfloat16: 220 * T, float16: 220 * T, float64: 15 * T },
    bandwidth: 1.6 * T, launch: 5e-6, memory: 79 * GiB,
    // NVLink 3: 300 GB/s per direction; 200 Gb/s InfiniBand per GPU between hosts.
    link: { intraHost: 240 * G, interHost: 20 * G, latency: 10e-6 },
  },
  cpu: {
    name: 'cpu', description: "cleave's CPU reference runtime, one worker thread per rank",
    // Measured on the reference backend's kernels (bench/cpu_forward.ts): plain JS loops.
    flops: { float32: 0.6 * G, bfloat16: 0.6 * G, float16: 0.6 * G, float64: 0.6 * G },
    bandwidth: 4 * G, launch: 20e-6, memory: 16 * GiB,
    // Ranks are threads of one process sharing memory.
    link: { intraHost: 4 * G, interHost: 1 * G, latency: 20e-6 },
  },
};

export const PROFILE_NAMES: readonly string[] = Object.keys(PROFILES);

export function deviceProfile(name: string): DeviceProfile {
  const p = PROFILES[name.toLowerCase()];
  if (!p) throw new CleaveError(`unknown device '${name}' (known: ${Object.keys(PROFILES).join(', ')})`);
  return p;
}
