/**
 * Plain-object views of the ONNX messages as cleave uses them (decoded with longs as numbers and
 * bytes as Uint8Array). Only fields cleave reads or writes are typed.
 */
export interface StringStringEntry { key?: string; value?: string }
export interface OperatorSetId { domain?: string; version?: number }

export interface TensorP {
  dims?: number[];
  dataType?: number;
  floatData?: number[];
  int32Data?: number[];
  int64Data?: number[];
  doubleData?: number[];
  uint64Data?: number[];
  stringData?: Uint8Array[];
  name?: string;
  rawData?: Uint8Array;
  externalData?: StringStringEntry[];
  dataLocation?: number;
  segment?: unknown;
}

export interface Dimension { dimValue?: number; dimParam?: string }
export interface TypeP {
  tensorType?: { elemType?: number; shape?: { dim?: Dimension[] } };
  sequenceType?: unknown;
  mapType?: unknown;
  optionalType?: unknown;
  sparseTensorType?: unknown;
}
export interface ValueInfoP { name?: string; type?: TypeP; docString?: string }

export interface AttributeP {
  name?: string;
  refAttrName?: string;
  type?: number;
  f?: number;
  i?: number;
  s?: Uint8Array;
  t?: TensorP;
  g?: GraphP;
  floats?: number[];
  ints?: number[];
  strings?: Uint8Array[];
  tensors?: TensorP[];
  graphs?: GraphP[];
}

export interface NodeDeviceConfigurationP { configurationId?: string; pipelineStage?: number }

export interface NodeP {
  input?: string[];
  output?: string[];
  name?: string;
  opType?: string;
  domain?: string;
  attribute?: AttributeP[];
  docString?: string;
  metadataProps?: StringStringEntry[];
  deviceConfigurations?: NodeDeviceConfigurationP[];
}

export interface GraphP {
  node?: NodeP[];
  name?: string;
  initializer?: TensorP[];
  sparseInitializer?: unknown[];
  input?: ValueInfoP[];
  output?: ValueInfoP[];
  valueInfo?: ValueInfoP[];
  metadataProps?: StringStringEntry[];
}

export interface FunctionP {
  name?: string;
  domain?: string;
  overload?: string;
  input?: string[];
  output?: string[];
  attribute?: string[];
  attributeProto?: AttributeP[];
  node?: NodeP[];
  opsetImport?: OperatorSetId[];
}

export interface ModelP {
  irVersion?: number;
  opsetImport?: OperatorSetId[];
  producerName?: string;
  producerVersion?: string;
  domain?: string;
  modelVersion?: number;
  docString?: string;
  graph?: GraphP;
  metadataProps?: StringStringEntry[];
  functions?: FunctionP[];
}
