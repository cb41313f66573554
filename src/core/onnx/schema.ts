import protobuf from 'protobufjs';

/**
 * The ONNX protobuf messages cleave reads and writes, declared from the ONNX IR specification
 * (IR version 10: NodeProto metadata_props and device_configurations, external data, functions).
 * Field numbers follow onnx.proto. onnx.proto is proto2: repeated scalars are unpacked unless the
 * spec marks them packed, and the encoder follows that so other readers see what they expect.
 */
const unpacked = { packed: false };
const packed = { packed: true };

type Fields = Record<string, { type: string; id: number; rule?: 'repeated'; options?: Record<string, boolean> }>;
const msg = (fields: Fields, nested?: Record<string, unknown>): Record<string, unknown> => (nested ? { fields, nested } : { fields });
const rep = (type: string, id: number, options?: Record<string, boolean>) => ({ type, id, rule: 'repeated' as const, ...(options ? { options } : {}) });

const descriptor = {
  nested: {
    onnx: {
      nested: {
        AttributeProto: msg({
          name: { type: 'string', id: 1 },
          refAttrName: { type: 'string', id: 21 },
          docString: { type: 'string', id: 13 },
          type: { type: 'int32', id: 20 },
          f: { type: 'float', id: 2 },
          i: { type: 'int64', id: 3 },
          s: { type: 'bytes', id: 4 },
          t: { type: 'TensorProto', id: 5 },
          g: { type: 'GraphProto', id: 6 },
          sparseTensor: { type: 'SparseTensorProto', id: 22 },
          tp: { type: 'TypeProto', id: 14 },
          floats: rep('float', 7, unpacked),
          ints: rep('int64', 8, unpacked),
          strings: rep('bytes', 9),
          tensors: rep('TensorProto', 10),
          graphs: rep('GraphProto', 11),
          sparseTensors: rep('SparseTensorProto', 23),
          typeProtos: rep('TypeProto', 15),
        }),
        ValueInfoProto: msg({
          name: { type: 'string', id: 1 },
          type: { type: 'TypeProto', id: 2 },
          docString: { type: 'string', id: 3 },
          metadataProps: rep('StringStringEntryProto', 4),
        }),
        NodeProto: msg({
          input: rep('string', 1),
          output: rep('string', 2),
          name: { type: 'string', id: 3 },
          opType: { type: 'string', id: 4 },
          domain: { type: 'string', id: 7 },
          overload: { type: 'string', id: 8 },
          attribute: rep('AttributeProto', 5),
          docString: { type: 'string', id: 6 },
          metadataProps: rep('StringStringEntryProto', 9),
          deviceConfigurations: rep('NodeDeviceConfigurationProto', 10),
        }),
        IntIntListEntryProto: msg({ key: { type: 'int64', id: 1 }, value: rep('int64', 2, unpacked) }),
        NodeDeviceConfigurationProto: msg({
          configurationId: { type: 'string', id: 1 },
          shardingSpec: rep('ShardingSpecProto', 2),
          pipelineStage: { type: 'int32', id: 3 },
        }),
        ShardingSpecProto: msg({
          tensorName: { type: 'string', id: 1 },
          device: rep('int64', 2, unpacked),
          indexToDeviceGroupMap: rep('IntIntListEntryProto', 3),
          shardedDim: rep('ShardedDimProto', 4),
        }),
        ShardedDimProto: msg({ axis: { type: 'int64', id: 1 }, simpleSharding: rep('SimpleShardedDimProto', 2) }),
        SimpleShardedDimProto: {
          oneofs: { dim: { oneof: ['dimValue', 'dimParam'] } },
          fields: { dimValue: { type: 'int64', id: 1 }, dimParam: { type: 'string', id: 2 }, numShards: { type: 'int64', id: 3 } },
        },
        TrainingInfoProto: msg({
          initialization: { type: 'GraphProto', id: 1 },
          algorithm: { type: 'GraphProto', id: 2 },
          initializationBinding: rep('StringStringEntryProto', 3),
          updateBinding: rep('StringStringEntryProto', 4),
        }),
        ModelProto: msg({
          irVersion: { type: 'int64', id: 1 },
          opsetImport: rep('OperatorSetIdProto', 8),
          producerName: { type: 'string', id: 2 },
          producerVersion: { type: 'string', id: 3 },
          domain: { type: 'string', id: 4 },
          modelVersion: { type: 'int64', id: 5 },
          docString: { type: 'string', id: 6 },
          graph: { type: 'GraphProto', id: 7 },
          metadataProps: rep('StringStringEntryProto', 14),
          trainingInfo: rep('TrainingInfoProto', 20),
          functions: rep('FunctionProto', 25),
          configuration: rep('DeviceConfigurationProto', 26),
        }),
        DeviceConfigurationProto: msg({
          name: { type: 'string', id: 1 },
          numDevices: { type: 'int32', id: 2 },
          device: rep('string', 3),
        }),
        StringStringEntryProto: msg({ key: { type: 'string', id: 1 }, value: { type: 'string', id: 2 } }),
        TensorAnnotation: msg({ tensorName: { type: 'string', id: 1 }, quantParameterTensorNames: rep('StringStringEntryProto', 2) }),
        GraphProto: msg({
          node: rep('NodeProto', 1),
          name: { type: 'string', id: 2 },
          initializer: rep('TensorProto', 5),
          sparseInitializer: rep('SparseTensorProto', 15),
          docString: { type: 'string', id: 10 },
          input: rep('ValueInfoProto', 11),
          output: rep('ValueInfoProto', 12),
          valueInfo: rep('ValueInfoProto', 13),
          quantizationAnnotation: rep('TensorAnnotation', 14),
          metadataProps: rep('StringStringEntryProto', 16),
        }),
        TensorProto: msg(
          {
            dims: rep('int64', 1, unpacked),
            dataType: { type: 'int32', id: 2 },
            segment: { type: 'Segment', id: 3 },
            floatData: rep('float', 4, packed),
            int32Data: rep('int32', 5, packed),
            stringData: rep('bytes', 6),
            int64Data: rep('int64', 7, packed),
            name: { type: 'string', id: 8 },
            docString: { type: 'string', id: 12 },
            rawData: { type: 'bytes', id: 9 },
            externalData: rep('StringStringEntryProto', 13),
            dataLocation: { type: 'int32', id: 14 },
            doubleData: rep('double', 10, packed),
            uint64Data: rep('uint64', 11, packed),
            metadataProps: rep('StringStringEntryProto', 16),
          },
          { Segment: msg({ begin: { type: 'int64', id: 1 }, end: { type: 'int64', id: 2 } }) },
        ),
        SparseTensorProto: msg({
          values: { type: 'TensorProto', id: 1 },
          indices: { type: 'TensorProto', id: 2 },
          dims: rep('int64', 3, unpacked),
        }),
        TensorShapeProto: msg(
          { dim: rep('Dimension', 1) },
          {
            Dimension: {
              oneofs: { value: { oneof: ['dimValue', 'dimParam'] } },
              fields: { dimValue: { type: 'int64', id: 1 }, dimParam: { type: 'string', id: 2 }, denotation: { type: 'string', id: 3 } },
            },
          },
        ),
        TypeProto: {
          oneofs: { value: { oneof: ['tensorType', 'sequenceType', 'mapType', 'optionalType', 'sparseTensorType'] } },
          fields: {
            tensorType: { type: 'Tensor', id: 1 },
            sequenceType: { type: 'Sequence', id: 4 },
            mapType: { type: 'Map', id: 5 },
            optionalType: { type: 'Optional', id: 9 },
            sparseTensorType: { type: 'SparseTensor', id: 8 },
            denotation: { type: 'string', id: 6 },
          },
          nested: {
            Tensor: msg({ elemType: { type: 'int32', id: 1 }, shape: { type: 'TensorShapeProto', id: 2 } }),
            Sequence: msg({ elemType: { type: 'TypeProto', id: 1 } }),
            Map: msg({ keyType: { type: 'int32', id: 1 }, valueType: { type: 'TypeProto', id: 2 } }),
            Optional: msg({ elemType: { type: 'TypeProto', id: 1 } }),
            SparseTensor: msg({ elemType: { type: 'int32', id: 1 }, shape: { type: 'TensorShapeProto', id: 2 } }),
          },
        },
        OperatorSetIdProto: msg({ domain: { type: 'string', id: 1 }, version: { type: 'int64', id: 2 } }),
        FunctionProto: msg({
          name: { type: 'string', id: 1 },
          input: rep('string', 4),
          output: rep('string', 5),
          attribute: rep('string', 6),
          attributeProto: rep('AttributeProto', 11),
          node: rep('NodeProto', 7),
          docString: { type: 'string', id: 8 },
          opsetImport: rep('OperatorSetIdProto', 9),
          domain: { type: 'string', id: 10 },
          overload: { type: 'string', id: 13 },
          valueInfo: rep('ValueInfoProto', 12),
          metadataProps: rep('StringStringEntryProto', 14),
        }),
      },
    },
  },
};

// protobufjs reads JSON message descriptors as proto3 unless told otherwise, and proto3 drops
// zero-valued scalars on the wire (pipeline_stage 0 would vanish).
for (const m of Object.values(descriptor.nested.onnx.nested)) (m as Record<string, unknown>)['edition'] = 'proto2';
const root = protobuf.Root.fromJSON(descriptor as protobuf.INamespace);
export const ModelProtoType = root.lookupType('onnx.ModelProto');

/** ONNX AttributeProto.AttributeType codes. */
export const ATTR = { FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, GRAPH: 5, FLOATS: 6, INTS: 7, STRINGS: 8, TENSORS: 9, GRAPHS: 10 } as const;
