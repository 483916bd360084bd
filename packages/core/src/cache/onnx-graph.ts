import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;

// Opset 13 keeps `axes` of ReduceMax an attribute (it became an input in opset 18).
const OPSET_VERSION = 13;
const IR_VERSION = 7;

const FLOAT = onnx.TensorProto.DataType.FLOAT;
const INT64 = onnx.TensorProto.DataType.INT64;

/** Names of the inputs and the output of the fused scoring graph. */
export const SCORING_GRAPH_NAMES = {
  queries: 'queries',
  keys: 'keys',
  keyOneHot: 'key_one_hot',
  thetas: 'thetas',
  partials: 'partials',
} as const;

/** Names of the inputs and the output of the similarity-only graph used by the benchmark. */
export const SIMILARITY_GRAPH_NAMES = {
  queries: 'queries',
  keys: 'keys',
  similarities: 'similarities',
} as const;

type Dimension = string | number;
type AttributeProto = onnxProto.onnx.IAttributeProto;
type GraphProto = onnxProto.onnx.IGraphProto;
type NodeProto = onnxProto.onnx.INodeProto;

function tensorValueInfo(name: string, elemType: number, dims: readonly Dimension[]): onnxProto.onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((dim) => (typeof dim === 'string' ? { dimParam: dim } : { dimValue: dim })) },
      },
    },
  };
}

function int64Initializer(name: string, values: readonly number[]): onnxProto.onnx.ITensorProto {
  return { name, dataType: INT64, dims: [values.length], int64Data: [...values] };
}

function intAttribute(name: string, value: number): AttributeProto {
  return { name, type: onnx.AttributeProto.AttributeType.INT, i: value };
}

function intsAttribute(name: string, values: readonly number[]): AttributeProto {
  return { name, type: onnx.AttributeProto.AttributeType.INTS, ints: [...values] };
}

function graphAttribute(name: string, graph: GraphProto): AttributeProto {
  return { name, type: onnx.AttributeProto.AttributeType.GRAPH, g: graph };
}

function node(opType: string, inputs: readonly string[], outputs: readonly string[], attribute: AttributeProto[] = []): NodeProto {
  return { opType, input: [...inputs], output: [...outputs], name: outputs[0], attribute };
}

function encodeModel(graph: GraphProto): Uint8Array {
  const model = onnx.ModelProto.create({
    irVersion: IR_VERSION,
    producerName: 'cachefleet',
    opsetImport: [{ domain: '', version: OPSET_VERSION }],
    graph,
  });
  return onnx.ModelProto.encode(model).finish();
}

/**
 * Body of the Scan over thetas: one theta (a scalar) in, the per-class sums [B, C] of
 * exp(theta * centred) out. `centred` and `key_one_hot` come from the outer graph.
 */
function buildClassSumBody(): GraphProto {
  return {
    name: 'class_sums_for_one_theta',
    node: [
      node('Mul', ['centred', 'theta'], ['scaled']),
      node('Exp', ['scaled'], ['weights']),
      node('MatMul', ['weights', SCORING_GRAPH_NAMES.keyOneHot], ['theta_class_sums']),
    ],
    input: [tensorValueInfo('theta', FLOAT, [])],
    output: [tensorValueInfo('theta_class_sums', FLOAT, ['B', 'C'])],
  };
}

/**
 * Builds the fused scoring graph as serialised ONNX bytes. Every dimension is dynamic:
 * queries [B, D], keys [N, D], key_one_hot [N, C] (row k is the one-hot label of key k),
 * thetas [T]. The output partials [T, B, C] is
 *
 *   L[t][b][c] = log(sum over keys k of class c of exp(theta_t * (s[b][k] - m[b]))) + theta_t * m[b]
 *
 * with s = queries · keysᵀ and m[b] the maximum similarity of query b over the N keys. The shift
 * makes the largest term exp(0) = 1, so no theta overflows float32, and a class whose terms all
 * lie more than 87.3 nats below it underflows to -Infinity (see scoring-engine.ts).
 *
 * The exponentials run in a Scan over thetas, so each step touches one [B, N] tensor, which fits
 * in the L3 cache (4 MiB at the default blocks against 32 MiB on the measured AMD EPYC). Per block of B = 256 queries and N = 2,048 keys of dim 12,288 with T = 33
 * (onnxruntime-node 1.31.1, 2 threads), the Gemm alone took 30.2 ms, this graph 33.7 ms, and
 * one [T, B, N] tensor for all thetas at once (69 MB) 38.0 ms.
 */
export function buildScoringModel(): Uint8Array {
  const names = SCORING_GRAPH_NAMES;
  const nodes = [
    node('Gemm', [names.queries, names.keys], ['similarities'], [intAttribute('transB', 1)]),
    node('ReduceMax', ['similarities'], ['max_similarity'], [intsAttribute('axes', [1]), intAttribute('keepdims', 1)]),
    node('Sub', ['similarities', 'max_similarity'], ['centred']),
    node('Scan', [names.thetas], ['class_sums'], [intAttribute('num_scan_inputs', 1), graphAttribute('body', buildClassSumBody())]),
    node('Log', ['class_sums'], ['log_class_sums']),
    node('Reshape', [names.thetas, 'theta_column_shape'], ['theta_column']),
    node('Unsqueeze', ['max_similarity', 'axis_zero'], ['max_similarity_per_theta']),
    node('Mul', ['max_similarity_per_theta', 'theta_column'], ['shift']),
    node('Add', ['log_class_sums', 'shift'], [names.partials]),
  ];

  return encodeModel({
    name: 'cachefleet_cache_partials',
    node: nodes,
    initializer: [int64Initializer('theta_column_shape', [-1, 1, 1]), int64Initializer('axis_zero', [0])],
    input: [
      tensorValueInfo(names.queries, FLOAT, ['B', 'D']),
      tensorValueInfo(names.keys, FLOAT, ['N', 'D']),
      tensorValueInfo(names.keyOneHot, FLOAT, ['N', 'C']),
      tensorValueInfo(names.thetas, FLOAT, ['T']),
    ],
    output: [tensorValueInfo(names.partials, FLOAT, ['T', 'B', 'C'])],
  });
}

/**
 * Builds a graph with only the similarity GEMM, queries [B, D] · keys [N, D]ᵀ → [B, N]. The
 * benchmark uses it to separate the GEMM from the exponentials of the fused graph.
 */
export function buildSimilarityModel(): Uint8Array {
  const names = SIMILARITY_GRAPH_NAMES;

  return encodeModel({
    name: 'cachefleet_similarities',
    node: [node('Gemm', [names.queries, names.keys], [names.similarities], [intAttribute('transB', 1)])],
    input: [tensorValueInfo(names.queries, FLOAT, ['B', 'D']), tensorValueInfo(names.keys, FLOAT, ['N', 'D'])],
    output: [tensorValueInfo(names.similarities, FLOAT, ['B', 'N'])],
  });
}
