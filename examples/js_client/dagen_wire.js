// dagen's wire protocol from Node.js, with stock tools only: @grpc/grpc-js for the
// calls, @grpc/proto-loader for the stub, protobufjs (which proto-loader is built
// on) to walk message types and to decode the error trailer.
//
// Everything here follows from the .proto files (the emitted <service>.proto and
// dagen's protos/dagen/v1/*.proto) and docs/other-languages.md:
//
//   * A function without arrays is a unary rpc: typed request in, typed response out.
//   * A function with arrays is a bidirectional stream of frames
//       <Fn>Input  { oneof frame { <Fn>Request  request  = 1; dagen.v1.Chunk chunk = 2; } }
//       <Fn>Output { oneof frame { <Fn>Response response = 1; dagen.v1.Chunk chunk = 2;
//                                  dagen.v1.Progress progress = 3 (only some functions); } }
//     Each direction sends its typed message first, in which every array is a
//     dagen.v1.NDArray header {id, dtype, shape, nbytes}, then Chunk frames
//     {array_id, start, shape, data} covering each array exactly once.
//   * A failed call ends with a non-OK status and the trailing metadata
//     "dagen-error-bin": a serialized dagen.v1.RemoteError.
"use strict";

const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { once } = require("node:events");
const protobuf = require("protobufjs");

const NDARRAY = ".dagen.v1.NDArray";
const ERROR_METADATA_KEY = "dagen-error-bin";
const DEFAULT_CHUNK_BYTES = 1 << 20; // what dagen itself sends; any size works
const HOST_ORDER = os.endianness() === "LE" ? "<" : ">";

// proto-loader options: keep the .proto's snake_case names, int64/uint64 as decimal
// strings (never a lossy JS number), bytes as Buffer, unset scalars as their
// defaults (proto3 `optional` fields stay undefined when unset, so presence shows),
// and a virtual field naming the member of each oneof that is set (frame.frame).
const LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
};

// -- loading the contract --------------------------------------------------------------------

/** A protobufjs Root with the contract and dagen's errors.proto, resolving imports
 *  through the same include folders as protoc's -I (the build folder, dagen's protos/). */
function loadRoot(protoFile, includeDirs) {
  const root = new protobuf.Root();
  root.resolvePath = (origin, target) => {
    if (path.isAbsolute(target) && fs.existsSync(target)) return target;
    for (const dir of includeDirs) {
      const candidate = path.join(dir, target);
      if (fs.existsSync(candidate)) return candidate;
    }
    return target; // google/protobuf/*.proto: protobufjs has them built in
  };
  root.loadSync([protoFile, "dagen/v1/errors.proto"], { keepCase: true });
  root.resolveAll();
  return root;
}

// -- dtypes ----------------------------------------------------------------------------------

// numpy dtype strings ("<f8", ">i4", "|b1", "<M8[ns]") for the element types a JS
// program has at hand. "get" reads one element from a DataView in either byte order.
const KINDS = {
  f8: { size: 8, get: (v, o, le) => v.getFloat64(o, le), typed: Float64Array },
  f4: { size: 4, get: (v, o, le) => v.getFloat32(o, le), typed: Float32Array },
  i8: { size: 8, get: (v, o, le) => v.getBigInt64(o, le), typed: BigInt64Array },
  u8: { size: 8, get: (v, o, le) => v.getBigUint64(o, le), typed: BigUint64Array },
  i4: { size: 4, get: (v, o, le) => v.getInt32(o, le), typed: Int32Array },
  u4: { size: 4, get: (v, o, le) => v.getUint32(o, le), typed: Uint32Array },
  i2: { size: 2, get: (v, o, le) => v.getInt16(o, le), typed: Int16Array },
  u2: { size: 2, get: (v, o, le) => v.getUint16(o, le), typed: Uint16Array },
  i1: { size: 1, get: (v, o) => v.getInt8(o), typed: Int8Array },
  u1: { size: 1, get: (v, o) => v.getUint8(o), typed: Uint8Array },
  b1: { size: 1, get: (v, o) => v.getUint8(o) !== 0, typed: Uint8Array },
  // datetime64 / timedelta64: int64 counts of the unit in brackets (NaT = min int64)
  M8: { size: 8, get: (v, o, le) => v.getBigInt64(o, le), typed: BigInt64Array },
  m8: { size: 8, get: (v, o, le) => v.getBigInt64(o, le), typed: BigInt64Array },
};

/** {order, kind, size, unit, get} of a dtype string; throws for what this example
 *  does not read (complex, strings: see docs/other-languages.md for their layout). */
function parseDtype(text) {
  const m = /^([<>|=])([a-zA-Z])(\d+)(?:\[(\d*[a-zA-Z]+)\])?$/.exec(text);
  if (!m) throw new Error(`unsupported dtype ${JSON.stringify(text)}`);
  const [, order, letter, digits, unit] = m;
  const kind = KINDS[letter + digits];
  if (!kind) throw new Error(`this example does not handle dtype ${text}`);
  if (order === "=") throw new Error(`dtype ${text}: '=' (native) never travels; expected < > or |`);
  return { text, order, size: kind.size, unit: unit || "", get: kind.get, kind };
}

/** The dtype string of a typed array as it sits in this host's memory ("<f8" on
 *  x86 and ARM). Bool and datetime arrays need an explicit dtype: see Outgoing.attach. */
function dtypeOf(typed) {
  for (const code of ["f8", "f4", "i8", "u8", "i4", "u4", "i2", "u2", "i1", "u1"]) {
    const kind = KINDS[code];
    if (typed instanceof kind.typed) return `${kind.size === 1 ? "|" : HOST_ORDER}${code}`;
  }
  throw new Error(`no dtype for ${typed.constructor.name}`);
}

// -- int64 on the wire -----------------------------------------------------------------------

/** An int64/uint64 field read with longs: String, as a JS number; throws beyond 2**53. */
function toSafeNumber(value) {
  const big = BigInt(value);
  if (big > BigInt(Number.MAX_SAFE_INTEGER) || big < -BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new RangeError(`${value} does not fit in a JS number exactly`);
  }
  return Number(big);
}

const product = (xs) => xs.reduce((a, b) => a * b, 1);

// -- arrays out: headers and chunk frames ----------------------------------------------------

/**
 * Collects the arrays of one outgoing message: `attach` returns the NDArray header to
 * put in the message and remembers the bytes; `chunks()` then yields Chunk messages.
 */
class Outgoing {
  constructor(chunkBytes = DEFAULT_CHUNK_BYTES) {
    this.chunkBytes = chunkBytes;
    this.arrays = [];
  }

  /**
   * `typed` holds the elements in C order (last index fastest); `shape` defaults to
   * 1-d. `dtype` overrides the element type, e.g. "<M8[ns]" for a BigInt64Array of
   * nanoseconds or "|b1" for a Uint8Array of 0/1.
   */
  attach(typed, shape = [typed.length], dtype = dtypeOf(typed)) {
    const { size } = parseDtype(dtype);
    if (size !== typed.BYTES_PER_ELEMENT) {
      throw new Error(`dtype ${dtype} has ${size}-byte elements, ${typed.constructor.name} ${typed.BYTES_PER_ELEMENT}`);
    }
    if (product(shape) !== typed.length) {
      throw new Error(`shape [${shape}] does not hold ${typed.length} elements`);
    }
    if (size > 1 && dtype[0] !== HOST_ORDER) {
      throw new Error(`dtype ${dtype}: send the host's byte order (${HOST_ORDER})`);
    }
    const bytes = Buffer.from(typed.buffer, typed.byteOffset, typed.byteLength);
    const id = this.arrays.length + 1; // any uint32 unique within this message's arrays
    this.arrays.push({ id, shape, size, bytes });
    return {
      id,
      dtype,
      shape: shape.map(String), // int64: strings are exact
      nbytes: String(bytes.length),
    };
  }

  /** Chunk messages: C-order blocks of at most chunkBytes (at least one element), slabs
   *  along axis 0 when a row fits, as dagen sends them (any exact cover is accepted). */
  *chunks() {
    for (const a of this.arrays) yield* chunksOf(a.id, a.shape, a.size, a.bytes, this.chunkBytes);
  }
}

function blockShape(shape, itemsize, chunkBytes) {
  const block = [...shape];
  for (let axis = 0; axis < shape.length; axis++) {
    const trailing = product(shape.slice(axis + 1)) * itemsize;
    if (trailing <= chunkBytes) {
      block[axis] = Math.max(1, Math.min(shape[axis], Math.floor(chunkBytes / Math.max(trailing, 1))));
      break;
    }
    block[axis] = 1;
  }
  return block;
}

function* chunksOf(id, shape, itemsize, bytes, chunkBytes) {
  if (product(shape) === 0) return; // an empty array has no chunks
  const block = blockShape(shape, itemsize, chunkBytes);
  const strides = cStrides(shape, itemsize);
  for (const start of gridStarts(shape, block)) {
    const extent = start.map((s, i) => Math.min(block[i], shape[i] - s));
    yield {
      array_id: id,
      start: start.map(String),
      shape: extent.map(String),
      data: gather(bytes, shape, strides, start, extent, itemsize),
    };
  }
}

function* gridStarts(shape, block) {
  if (shape.length === 0) {
    yield []; // a 0-d array: one chunk, start [] and shape []
    return;
  }
  const start = shape.map(() => 0);
  for (;;) {
    yield [...start];
    let axis = shape.length - 1;
    while (axis >= 0) {
      start[axis] += block[axis];
      if (start[axis] < shape[axis]) break;
      start[axis] = 0;
      axis--;
    }
    if (axis < 0) return;
  }
}

function cStrides(shape, itemsize) {
  const strides = new Array(shape.length);
  let s = itemsize;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

/** Visit each contiguous run (along the last axis) of the block [start, start+extent):
 *  fn(byteOffsetInArray, byteLength, byteOffsetInBlock). */
function forEachRun(strides, start, extent, itemsize, fn) {
  const nd = extent.length;
  if (nd === 0) {
    fn(0, itemsize, 0);
    return;
  }
  const runBytes = extent[nd - 1] * itemsize;
  const index = start.slice(0, nd - 1);
  let done = 0;
  for (;;) {
    let offset = start[nd - 1] * strides[nd - 1];
    for (let i = 0; i < nd - 1; i++) offset += index[i] * strides[i];
    fn(offset, runBytes, done);
    done += runBytes;
    let axis = nd - 2;
    while (axis >= 0) {
      index[axis] += 1;
      if (index[axis] < start[axis] + extent[axis]) break;
      index[axis] = start[axis];
      axis--;
    }
    if (axis < 0) return;
  }
}

function gather(bytes, shape, strides, start, extent, itemsize) {
  const n = product(extent) * itemsize;
  if (extent.every((e, i) => i === 0 || e === shape[i])) { // whole rows: no copy
    const offset = start.length ? start[0] * strides[0] : 0;
    return bytes.subarray(offset, offset + n);
  }
  const out = Buffer.allocUnsafe(n);
  forEachRun(strides, start, extent, itemsize, (from, len, to) => bytes.copy(out, to, from, from + len));
  return out;
}

// -- arrays in: allocate from headers, place chunks, check the cover -------------------------

/** The NDArray headers inside a decoded message, at any depth (fields, repeated
 *  fields, map values), found through the message's type. */
function* headersIn(type, obj) {
  if (obj === null || obj === undefined) return;
  for (const field of type.fieldsArray) {
    const sub = field.resolvedType;
    if (!(sub instanceof protobuf.Type)) continue;
    const value = obj[field.name];
    if (value === null || value === undefined) continue;
    const items = field.map ? Object.values(value) : field.repeated ? value : [value];
    for (const item of items) {
      if (sub.fullName === NDARRAY) yield item;
      else yield* headersIn(sub, item);
    }
  }
}

class ArraySink {
  /** `limits`: what the peer may declare, checked before anything is allocated. */
  constructor({ maxArrayBytes = 2 ** 31, maxCallBytes = 2 ** 32, maxNdim = 32 } = {}) {
    this.limits = { maxArrayBytes, maxCallBytes, maxNdim };
    this.targets = new Map();
    this.total = 0;
  }

  allocate(header) {
    const id = header.id;
    if (this.targets.has(id)) throw new Error(`array id ${id} is declared twice`);
    if (header.codec) throw new Error(`array ${id}: unsupported codec ${header.codec}`);
    const dtype = parseDtype(header.dtype);
    const shape = header.shape.map(toSafeNumber);
    if (shape.length > this.limits.maxNdim || shape.some((n) => n < 0)) {
      throw new Error(`array ${id}: unacceptable shape [${shape}]`);
    }
    const nbytes = product(shape) * dtype.size;
    if (nbytes !== toSafeNumber(header.nbytes)) {
      throw new Error(`array ${id}: shape [${shape}] of ${header.dtype} is ${nbytes} bytes, header says ${header.nbytes}`);
    }
    if (nbytes > this.limits.maxArrayBytes || this.total + nbytes > this.limits.maxCallBytes) {
      throw new Error(`array ${id}: ${nbytes} bytes exceed this client's limits`);
    }
    this.total += nbytes;
    this.targets.set(id, {
      header,
      dtype,
      shape,
      bytes: Buffer.alloc(nbytes),
      strides: cStrides(shape, dtype.size),
      seen: new Uint8Array(product(shape)), // one flag per element: no overlap, no gap
      remaining: product(shape),
    });
  }

  write(chunk) {
    const t = this.targets.get(chunk.array_id);
    if (!t) throw new Error(`chunk for undeclared array id ${chunk.array_id}`);
    const start = chunk.start.map(toSafeNumber);
    const extent = chunk.shape.map(toSafeNumber);
    const nd = t.shape.length;
    if (start.length !== nd || extent.length !== nd) throw new Error(`array ${chunk.array_id}: chunk rank differs from the array's`);
    extent.forEach((n, i) => {
      if (n <= 0 || start[i] < 0 || start[i] + n > t.shape[i]) {
        throw new Error(`array ${chunk.array_id}: chunk at [${start}] of shape [${extent}] lies outside [${t.shape}]`);
      }
    });
    const count = product(extent);
    if (chunk.data.length !== count * t.dtype.size) throw new Error(`array ${chunk.array_id}: chunk carries ${chunk.data.length} bytes, expected ${count * t.dtype.size}`);
    const size = t.dtype.size;
    forEachRun(t.strides, start, extent, size, (to, len, from) => {
      const first = to / size;
      for (let e = first; e < first + len / size; e++) {
        if (t.seen[e]) throw new Error(`array ${chunk.array_id}: chunk at [${start}] overlaps one already received`);
        t.seen[e] = 1;
      }
      chunk.data.copy(t.bytes, to, from, from + len);
    });
    t.remaining -= count;
  }

  finish() {
    for (const [id, t] of this.targets) {
      if (t.remaining) throw new Error(`array ${id}: the stream ended with ${t.remaining} elements missing`);
    }
  }

  /** The received array of a header: {dtype, shape, bytes, values(), typed()}.
   *  values(): the elements in C order, each read in the header's byte order (BigInt
   *  for 64-bit integers and datetime64/timedelta64 counts, booleans for "|b1");
   *  typed(): the same in a typed array (BigInt64Array for "<i8", Float64Array for
   *  "<f8", ...), in this host's byte order. */
  array(header) {
    const t = this.targets.get(header.id);
    if (!t) throw new Error(`no array with id ${header.id} was declared`);
    const little = t.dtype.order !== ">";
    const view = new DataView(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength);
    const values = () => {
      const out = new Array(t.bytes.length / t.dtype.size);
      for (let i = 0; i < out.length; i++) out[i] = t.dtype.get(view, i * t.dtype.size, little);
      return out;
    };
    return {
      dtype: header.dtype,
      shape: t.shape,
      bytes: t.bytes,
      values,
      typed: () => t.dtype.kind.typed.from(values(), (v) => (typeof v === "boolean" ? Number(v) : v)),
    };
  }
}

// -- one streaming call ----------------------------------------------------------------------

/**
 * Call a streaming rpc: send {request} then its chunks (respecting back-pressure),
 * half-close, and read {response} then its chunks. Resolves {response, arrays,
 * chunksSent, chunksReceived} where arrays.array(header) gives each received array. `outputType` is the
 * protobufjs Type of <Fn>Response (to find its NDArray headers).
 */
async function streamingCall(stub, method, request, outgoing, outputType, { deadline, onProgress } = {}) {
  const call = stub[method]({ deadline });
  let chunksSent = 0;
  const write = async () => {
    const frames = [{ request }, ...Array.from(outgoing.chunks(), (chunk) => ({ chunk }))];
    for (const frame of frames) {
      if (!call.write(frame)) await once(call, "drain");
    }
    chunksSent = frames.length - 1;
    call.end(); // half-close: the server starts once it has every chunk
  };
  const read = async () => {
    let response = null;
    let chunksReceived = 0;
    const sink = new ArraySink();
    for await (const frame of call) {
      if (frame.frame === "progress") {
        if (response !== null) throw new Error("progress frame after the response");
        if (onProgress) onProgress(frame.progress);
      } else if (frame.frame === "response") {
        if (response !== null) throw new Error("a second response message arrived");
        response = frame.response;
        for (const header of headersIn(outputType, response)) sink.allocate(header);
      } else if (frame.frame === "chunk") {
        if (response === null) throw new Error("a chunk arrived before the response");
        sink.write(frame.chunk);
        chunksReceived += 1;
      } else {
        throw new Error(`unexpected frame ${JSON.stringify(frame.frame)}`);
      }
    }
    if (response === null) throw new Error("the stream ended before the response");
    sink.finish();
    return { response, arrays: sink, chunksReceived };
  };
  try {
    const [, result] = await Promise.all([write(), read()]);
    return { ...result, chunksSent };
  } catch (err) {
    call.cancel(); // a local failure: stop the server's work too (no-op once ended)
    throw err;
  }
}

/** A unary call as a promise. */
function unaryCall(stub, method, request, { deadline } = {}) {
  return new Promise((resolve, reject) => {
    stub[method](request, { deadline }, (err, reply) => (err ? reject(err) : resolve(reply)));
  });
}

/** The dagen.v1.RemoteError of a failed call (grpc-js ServiceError), or null. */
function remoteError(root, err) {
  const values = err && err.metadata ? err.metadata.get(ERROR_METADATA_KEY) : [];
  if (!values.length) return null;
  const type = root.lookupType("dagen.v1.RemoteError");
  return type.toObject(type.decode(values[0]), { defaults: true });
}

module.exports = {
  LOADER_OPTIONS,
  DEFAULT_CHUNK_BYTES,
  HOST_ORDER,
  loadRoot,
  parseDtype,
  toSafeNumber,
  Outgoing,
  ArraySink,
  headersIn,
  streamingCall,
  unaryCall,
  remoteError,
};
