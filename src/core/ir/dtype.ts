import { CleaveError } from '../errors.js';

/** Element types cleave computes in. float64 exists for gradient checks; int8/uint8 only as constants. */
export type DType =
  | 'float32'
  | 'float16'
  | 'bfloat16'
  | 'float64'
  | 'int64'
  | 'int32'
  | 'int8'
  | 'uint8'
  | 'bool';

interface DTypeInfo {
  onnx: number;
  bytes: number;
  float: boolean;
}

// ONNX TensorProto.DataType codes (onnx.proto).
const INFO: Record<DType, DTypeInfo> = {
  float32: { onnx: 1, bytes: 4, float: true },
  uint8: { onnx: 2, bytes: 1, float: false },
  int8: { onnx: 3, bytes: 1, float: false },
  int32: { onnx: 6, bytes: 4, float: false },
  int64: { onnx: 7, bytes: 8, float: false },
  bool: { onnx: 9, bytes: 1, float: false },
  float16: { onnx: 10, bytes: 2, float: true },
  float64: { onnx: 11, bytes: 8, float: true },
  bfloat16: { onnx: 16, bytes: 2, float: true },
};

const BY_CODE = new Map<number, DType>(Object.entries(INFO).map(([k, v]) => [v.onnx, k as DType]));

const ONNX_NAMES: Record<number, string> = {
  4: 'uint16', 5: 'int16', 8: 'string', 12: 'uint32', 13: 'uint64', 14: 'complex64', 15: 'complex128',
  17: 'float8e4m3fn', 18: 'float8e4m3fnuz', 19: 'float8e5m2', 20: 'float8e5m2fnuz', 21: 'uint4', 22: 'int4',
};

/** A readable name for any ONNX element type code, supported or not. */
export const onnxTypeName = (code: number): string => BY_CODE.get(code) ?? ONNX_NAMES[code] ?? `onnx type ${code}`;

export function dtypeFromOnnx(code: number, where: string): DType {
  const d = BY_CODE.get(code);
  if (!d) {
    const name = ONNX_NAMES[code] ?? `code ${code}`;
    throw new CleaveError(`${where}: element type ${name} is not supported (cleave supports ${Object.keys(INFO).join(', ')})`);
  }
  return d;
}

export const dtypeToOnnx = (d: DType): number => INFO[d].onnx;
export const dtypeBytes = (d: DType): number => INFO[d].bytes;
export const isFloat = (d: DType): boolean => INFO[d].float;
export const isInteger = (d: DType): boolean => !INFO[d].float && d !== 'bool';
export const ALL_DTYPES = Object.keys(INFO) as DType[];
