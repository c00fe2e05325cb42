/**
 * Small helpers for writing ONNX graphs with the `onnx-proto` protobuf types: value names are plain strings, `op`
 * appends a node and returns its output names, tensors are stored as raw little-endian bytes.
 */
import onnxProto from "onnx-proto";

const { onnx } = onnxProto;

export const DataType = onnx.TensorProto.DataType;
export type DataType = onnxProto.onnx.TensorProto.DataType;

/** A dimension of a graph input or output: a size, or the name of a symbolic dimension. */
export type Dim = number | string;

/** Node attribute values: integers as number, integer lists as number[], floats wrapped so they cannot pass as ints. */
export type Attr = number | readonly number[] | string | { readonly float: number };

export type TensorData = Float32Array | BigInt64Array | Int32Array | Uint8Array;

export interface OpOptions {
  /** Number of outputs (default 1), or their exact names. */
  readonly outputs?: number | readonly string[];
  readonly domain?: string;
}

function dataTypeOf(data: TensorData): DataType {
  if (data instanceof Float32Array) return DataType.FLOAT;
  if (data instanceof BigInt64Array) return DataType.INT64;
  if (data instanceof Int32Array) return DataType.INT32;
  return DataType.UINT8;
}

function attribute(name: string, value: Attr): onnxProto.onnx.IAttributeProto {
  const type = onnx.AttributeProto.AttributeType;
  if (typeof value === "number") return { name, type: type.INT, i: value };
  if (typeof value === "string") return { name, type: type.STRING, s: new TextEncoder().encode(value) };
  if (Array.isArray(value)) return { name, type: type.INTS, ints: [...value] };
  return { name, type: type.FLOAT, f: (value as { float: number }).float };
}

function valueInfo(name: string, elemType: DataType, dims: readonly Dim[]): onnxProto.onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

/** A tensor stored in the graph. Its bytes are referenced, not copied, until the model is serialised. */
export interface Initializer {
  readonly name: string;
  readonly dims: readonly number[];
  readonly data: TensorData;
}

export class OnnxGraph {
  readonly nodes: onnxProto.onnx.INodeProto[] = [];
  readonly initializers: Initializer[] = [];
  readonly inputs: onnxProto.onnx.IValueInfoProto[] = [];
  readonly outputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly constants = new Map<string, string>();
  private counter = 0;

  /** Declares a graph input and returns its name. */
  input(name: string, elemType: DataType, dims: readonly Dim[]): string {
    this.inputs.push(valueInfo(name, elemType, dims));
    return name;
  }

  /** Declares a graph output; `name` must be produced by a node (use `op(..., { outputs: [name] })`). */
  output(name: string, elemType: DataType, dims: readonly Dim[]): void {
    this.outputs.push(valueInfo(name, elemType, dims));
  }

  /** Adds a weight tensor and returns its name. */
  initializer(name: string, data: TensorData, dims: readonly number[]): string {
    const count = dims.reduce((a, b) => a * b, 1);
    if (count !== data.length) throw new Error(`initializer ${name}: ${data.length} values for dims [${dims}]`);
    this.initializers.push({ name, dims, data });
    return name;
  }

  /** A small constant, shared by every node that asks for the same values. */
  constant(data: Float32Array | BigInt64Array, dims: readonly number[] = [data.length]): string {
    const key = `${dataTypeOf(data)}:${dims}:${data.join(",")}`;
    let name = this.constants.get(key);
    if (name === undefined) {
      name = this.initializer(`const_${this.constants.size}`, data, dims);
      this.constants.set(key, name);
    }
    return name;
  }

  /** int64 vector constant (shapes, axes, indices). */
  ints(values: readonly number[]): string {
    return this.constant(BigInt64Array.from(values, BigInt));
  }

  /** float32 scalar constant. */
  scalar(value: number): string {
    return this.constant(Float32Array.of(value), []);
  }

  /** Appends a node and returns the name of its first output (see `opN` for several). */
  op(opType: string, inputs: readonly string[], attrs: Record<string, Attr> = {}, options: OpOptions = {}): string {
    return this.opN(opType, inputs, attrs, options)[0];
  }

  /** Appends a node and returns the names of all its outputs. */
  opN(opType: string, inputs: readonly string[], attrs: Record<string, Attr> = {}, options: OpOptions = {}): string[] {
    const id = this.counter++;
    const outputs =
      typeof options.outputs === "object"
        ? [...options.outputs]
        : Array.from({ length: options.outputs ?? 1 }, (_, i) => `${opType}_${id}_${i}`);
    this.nodes.push({
      name: `${opType}_${id}`,
      opType,
      domain: options.domain ?? "",
      input: [...inputs],
      output: outputs,
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    });
    return outputs;
  }

  /** Total bytes of all initializers. */
  weightBytes(): number {
    return this.initializers.reduce((sum, t) => sum + t.data.byteLength, 0);
  }
}

export interface SerializeOptions {
  readonly graphName: string;
  readonly opset: number;
  /** Opset version of the com.microsoft domain, when the graph uses its operators. */
  readonly microsoftOpset?: number;
  readonly producer?: string;
  readonly docString?: string;
  /**
   * Name of the external data file (beside the model file) that receives every tensor of at least
   * `externalThreshold` bytes. Big models then avoid a second in-memory copy of their weights.
   */
  readonly externalDataFile?: string;
  readonly externalThreshold?: number;
}

export interface SerializedModel {
  /** The ModelProto bytes. */
  readonly model: Uint8Array;
  /** Chunks of the external data file, in order (empty when no tensor is stored externally). */
  readonly externalData: readonly Uint8Array[];
}

function bytesOf(data: TensorData): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

// ONNX external data offsets are aligned so that runtimes can memory-map tensors.
const EXTERNAL_ALIGNMENT = 64;

/** Serialises the graph into a ModelProto (IR version 8), optionally moving big tensors to an external data file. */
export function serializeModel(graph: OnnxGraph, options: SerializeOptions): SerializedModel {
  const externalData: Uint8Array[] = [];
  let offset = 0;
  const threshold = options.externalThreshold ?? 1024;
  const initializer = graph.initializers.map((t): onnxProto.onnx.ITensorProto => {
    const proto = { name: t.name, dims: [...t.dims], dataType: dataTypeOf(t.data) };
    const bytes = bytesOf(t.data);
    if (options.externalDataFile === undefined || bytes.byteLength < threshold) return { ...proto, rawData: bytes };
    const padding = (EXTERNAL_ALIGNMENT - (offset % EXTERNAL_ALIGNMENT)) % EXTERNAL_ALIGNMENT;
    if (padding > 0) externalData.push(new Uint8Array(padding));
    offset += padding;
    externalData.push(bytes);
    const entry = {
      ...proto,
      dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
      externalData: [
        { key: "location", value: options.externalDataFile },
        { key: "offset", value: String(offset) },
        { key: "length", value: String(bytes.byteLength) },
      ],
    };
    offset += bytes.byteLength;
    return entry;
  });
  const opsetImport = [{ domain: "", version: options.opset }];
  if (options.microsoftOpset !== undefined)
    opsetImport.push({ domain: "com.microsoft", version: options.microsoftOpset });
  const model = onnx.ModelProto.encode({
    irVersion: 8,
    producerName: options.producer ?? "specgate",
    docString: options.docString,
    opsetImport,
    graph: {
      name: options.graphName,
      node: graph.nodes,
      initializer,
      input: graph.inputs,
      output: graph.outputs,
    },
  }).finish();
  return { model, externalData };
}
