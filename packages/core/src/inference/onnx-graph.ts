import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;

/** ONNX IR version 8 (ONNX 1.10), the newest that the onnx-proto 8.0.1 schema describes. */
const IR_VERSION = 8;

/** Opset 13 has single-axis Softmax, which matches Keras' softmax over the last axis. */
export const OPSET_VERSION = 13;

const AttributeType = onnx.AttributeProto.AttributeType;
const DataType = onnx.TensorProto.DataType;

export type AttributeValue = number | readonly number[];

/** Attribute value with its ONNX type, which the encoding needs because INT and FLOAT attributes differ by tag. */
export interface TypedAttribute {
  readonly kind: 'int' | 'ints' | 'float';
  readonly value: AttributeValue;
}

export function intAttribute(value: number): TypedAttribute {
  return { kind: 'int', value };
}

export function intsAttribute(value: readonly number[]): TypedAttribute {
  return { kind: 'ints', value };
}

export function floatAttribute(value: number): TypedAttribute {
  return { kind: 'float', value };
}

/** Graph input or output: a float32 tensor whose first dimension is the symbolic batch size. */
export interface GraphValue {
  readonly name: string;
  /** Dimensions after the batch dimension. */
  readonly shape: readonly number[];
}

/**
 * Collects ONNX nodes and float32 initializers in topological order and encodes them as one
 * ModelProto. Names are made unique here, so callers can pass Keras layer names unchanged.
 */
export class OnnxGraphBuilder {
  private readonly nodes: InstanceType<typeof onnx.NodeProto>[] = [];
  private readonly initializers: InstanceType<typeof onnx.TensorProto>[] = [];
  private readonly usedNames = new Set<string>();

  /** Returns `base`, or `base_2`, `base_3`, … when `base` is taken. */
  uniqueName(base: string): string {
    let name = base;
    for (let suffix = 2; this.usedNames.has(name); suffix += 1) {
      name = `${base}_${suffix}`;
    }
    this.usedNames.add(name);
    return name;
  }

  /** Reserves a name that must stay exactly as given, such as a graph input or output. */
  reserveName(name: string): string {
    if (this.usedNames.has(name)) {
      throw new Error(`ONNX value name "${name}" is already in use.`);
    }
    this.usedNames.add(name);
    return name;
  }

  /** Adds a float32 constant and returns its unique name. */
  addInitializer(base: string, dims: readonly number[], values: Float32Array): string {
    const expectedLength = dims.reduce((product, dim) => product * dim, 1);
    if (values.length !== expectedLength) {
      throw new Error(`Initializer ${base} has ${values.length} values but shape [${dims.join(', ')}] needs ${expectedLength}.`);
    }

    const name = this.uniqueName(base);
    this.initializers.push(
      onnx.TensorProto.create({
        name,
        dims: [...dims],
        dataType: DataType.FLOAT,
        rawData: toLittleEndianBytes(values),
      }),
    );
    return name;
  }

  /** Adds one node whose single output gets a unique name derived from `outputBase`, and returns that name. */
  addNode(opType: string, inputs: readonly string[], outputBase: string, attributes: Record<string, TypedAttribute> = {}): string {
    const output = this.uniqueName(outputBase);
    this.addNodeWithOutput(opType, inputs, output, attributes);
    return output;
  }

  /** Adds one node writing to an output name that the caller reserved. */
  addNodeWithOutput(opType: string, inputs: readonly string[], output: string, attributes: Record<string, TypedAttribute> = {}): void {
    this.nodes.push(
      onnx.NodeProto.create({
        opType,
        name: `${output}/${opType}`,
        input: [...inputs],
        output: [output],
        attribute: Object.entries(attributes).map(([name, attribute]) => encodeAttribute(name, attribute)),
      }),
    );
  }

  /** Encodes the graph as a serialised ModelProto, ready for `InferenceSession.create(bytes)`. */
  encode(graphName: string, inputs: readonly GraphValue[], outputs: readonly GraphValue[]): Uint8Array {
    const graph = onnx.GraphProto.create({
      name: graphName,
      node: this.nodes,
      initializer: this.initializers,
      input: inputs.map(describeValue),
      output: outputs.map(describeValue),
    });

    const model = onnx.ModelProto.create({
      irVersion: IR_VERSION,
      producerName: 'cachefleet',
      opsetImport: [{ domain: '', version: OPSET_VERSION }],
      graph,
    });
    return onnx.ModelProto.encode(model).finish();
  }
}

function encodeAttribute(name: string, attribute: TypedAttribute): InstanceType<typeof onnx.AttributeProto> {
  switch (attribute.kind) {
    case 'int':
      return onnx.AttributeProto.create({ name, type: AttributeType.INT, i: attribute.value as number });
    case 'ints':
      return onnx.AttributeProto.create({ name, type: AttributeType.INTS, ints: [...(attribute.value as readonly number[])] });
    case 'float':
      return onnx.AttributeProto.create({ name, type: AttributeType.FLOAT, f: attribute.value as number });
  }
}

function describeValue(value: GraphValue): InstanceType<typeof onnx.ValueInfoProto> {
  const dims = [{ dimParam: 'batch' }, ...value.shape.map((dimValue) => ({ dimValue }))];
  return onnx.ValueInfoProto.create({
    name: value.name,
    type: { tensorType: { elemType: DataType.FLOAT, shape: { dim: dims } } },
  });
}

/** Encodes float32 values little-endian, as ONNX `raw_data` requires, whatever the host's byte order. */
function toLittleEndianBytes(values: Float32Array): Uint8Array {
  const bytes = new Uint8Array(values.length * 4);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < values.length; i += 1) {
    view.setFloat32(i * 4, values[i], true);
  }
  return bytes;
}
