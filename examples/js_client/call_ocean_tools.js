#!/usr/bin/env node
// Call every function of the ocean_tools example service (examples/ocean_tools.py)
// from Node.js over mutual TLS, with nothing but the emitted ocean_tools.proto,
// dagen's protos/dagen/v1/*.proto and stock gRPC/protobuf packages.
//
//   npm ci
//   node call_ocean_tools.js TARGET BUILD_DIR CERTS_DIR [--protos DIR] [--identity NAME]
//                            [--chunk-bytes N]
//
//   TARGET      host:port of `dagen serve examples/ocean_tools.py --certs CERTS_DIR`
//   BUILD_DIR   the folder `dagen build examples/ocean_tools.py -o BUILD_DIR` wrote
//               (it holds ocean_tools.proto)
//   CERTS_DIR   ca.crt and the identity's NAME.crt / NAME.key (`dagen certs client`)
//   --protos    dagen's protos/ folder (default: the one of this checkout, ../../protos)
//   --identity  the client certificate to present (default: alice)
//   --chunk-bytes  the largest chunk this client sends (default 1 MiB, as dagen does)
//
// Prints one JSON object per line and call: {"call": ..., "request": ..., "result": ...}
// or, for the call that fails on purpose, {"call": ..., "error": {code, details,
// remote_error}}. 64-bit integers are printed as numbers when they fit a JS number
// exactly (|n| <= 2**53), else as decimal strings; NaN and infinities as "NaN",
// "Infinity", "-Infinity". See docs/other-languages.md for the protocol.
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const wire = require("./dagen_wire");

// -- arguments -------------------------------------------------------------------------------

function parseArgs(argv) {
  const positional = [];
  const options = { protos: path.resolve(__dirname, "..", "..", "protos"), identity: "alice", chunkBytes: wire.DEFAULT_CHUNK_BYTES };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--protos") options.protos = argv[++i];
    else if (arg === "--identity") options.identity = argv[++i];
    else if (arg === "--chunk-bytes") options.chunkBytes = Number(argv[++i]);
    else if (arg.startsWith("--")) throw new Error(`unknown option ${arg}`);
    else positional.push(arg);
  }
  if (positional.length !== 3) {
    throw new Error("usage: node call_ocean_tools.js TARGET BUILD_DIR CERTS_DIR [--protos DIR] [--identity NAME] [--chunk-bytes N]");
  }
  const [target, build, certs] = positional;
  if (!(options.chunkBytes >= 1)) throw new Error("--chunk-bytes must be a positive number");
  return { target, build, certs, ...options };
}

// -- JSON output -----------------------------------------------------------------------------

function jsonable(value) {
  if (typeof value === "bigint") {
    return value <= BigInt(Number.MAX_SAFE_INTEGER) && value >= -BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value.toString();
  }
  if (typeof value === "number" && !Number.isFinite(value)) return String(value); // NaN, Infinity
  if (Array.isArray(value)) return value.map(jsonable);
  if (Buffer.isBuffer(value)) return value.toString("base64");
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, jsonable(v)]));
  }
  return value;
}

const print = (obj) => process.stdout.write(JSON.stringify(jsonable(obj)) + "\n");

// -- xarray messages -------------------------------------------------------------------------

/** A dagen.v1.DataArray message; its arrays' bytes go into `out` to follow as chunks. */
function dataArrayMessage(out, { name, dims, data, shape, dtype, coords = [], attrs = {} }) {
  return {
    name, // proto3 optional: leave undefined for a DataArray without a name
    variable: {
      dims,
      data: out.attach(data, shape, dtype),
      attrs: Object.entries(attrs).map(([key, text]) => ({ name: key, value: { string_value: text } })),
    },
    coords: coords.map((c) => ({
      name: c.name,
      variable: { dims: c.dims, data: out.attach(c.data, c.shape || [c.data.length], c.dtype), attrs: [] },
    })),
  };
}

/** A dagen.v1.Value (an attribute) as plain JSON. */
function valueOf(v) {
  switch (v.kind) {
    case undefined:
    case "none":
      return null;
    case "int_value":
      return BigInt(v.int_value);
    case "list_value":
      return v.list_value.values.map(valueOf);
    case "map_value":
      return Object.fromEntries(v.map_value.keys.map((k, i) => [k, valueOf(v.map_value.values[i])]));
    case "array_value":
      return { dtype: v.array_value.dtype, shape: v.array_value.shape, data: v.array_value.data };
    default:
      return v[v.kind];
  }
}

/** A received dagen.v1.DataArray as plain JSON: values flat in C order. */
function dataArrayResult(msg, arrays) {
  const variable = (v) => {
    const a = arrays.array(v.data);
    return { dims: v.dims, dtype: a.dtype, shape: a.shape, values: a.values() };
  };
  return {
    name: msg.name === undefined ? null : msg.name,
    ...variable(msg.variable),
    attrs: Object.fromEntries(msg.variable.attrs.map((a) => [a.name, valueOf(a.value)])),
    coords: Object.fromEntries(msg.coords.map((c) => [c.name, variable(c.variable)])),
  };
}

// -- inputs ----------------------------------------------------------------------------------

// Exact arithmetic only (no Math.sin), so that the test can rebuild the same inputs.
function histogramValues(n) {
  const values = new Float64Array(n);
  for (let i = 0; i < n; i++) values[i] = ((i * 37) % 101) / 8 - 5;
  values[3] = NaN; // histogram() ignores NaNs
  return values;
}

function field(ny, nx, scale) {
  const data = new Float64Array(ny * nx);
  for (let i = 0; i < ny; i++) for (let j = 0; j < nx; j++) data[i * nx + j] = ((i * 7 + j * 3) % 11) * scale - j / 4;
  return data;
}

/** Month starts from 2000-01 as datetime64[ns]: int64 nanoseconds since 1970. */
function monthStarts(n) {
  const times = new BigInt64Array(n);
  for (let m = 0; m < n; m++) times[m] = BigInt(Date.UTC(2000, m, 1)) * 1000000n;
  return times;
}

// -- the calls -------------------------------------------------------------------------------

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const includeDirs = [path.resolve(args.build), path.resolve(args.protos)];

  // The stub, from the .proto alone (as protoc -I BUILD -I PROTOS ocean_tools.proto).
  const definition = protoLoader.loadSync("ocean_tools.proto", { ...wire.LOADER_OPTIONS, includeDirs });
  const { OceanTools } = grpc.loadPackageDefinition(definition).ocean_tools;
  // The same files through protobufjs' reflection: to find the NDArray headers in a
  // response and to decode the dagen.v1.RemoteError trailer.
  const root = wire.loadRoot("ocean_tools.proto", includeDirs);
  const responseType = (name) => root.lookupType(`ocean_tools.${name}Response`);

  const read = (name) => fs.readFileSync(path.join(args.certs, name));
  const credentials = grpc.credentials.createSsl(read("ca.crt"), read(`${args.identity}.key`), read(`${args.identity}.crt`));
  const client = new OceanTools(args.target, credentials, {
    // dagen servers send chunks of at most --chunk-size (<= 32 MiB); allow what dagen allows.
    "grpc.max_receive_message_length": 64 << 20,
    "grpc.max_send_message_length": 64 << 20,
  });
  const deadline = () => Date.now() + 60_000;
  const options = () => ({ deadline: deadline() });

  try {
    // (a) unary: a function without arrays.
    {
      const request = { temperature: 10.0, salinity: 35.0, pressure: 100.0 };
      const reply = await wire.unaryCall(client, "SeaWaterDensity", request, options());
      print({ call: "SeaWaterDensity", request, result: reply.result });
    }

    // (b) streaming: an ndarray in, an ndarray out.
    {
      const out = new wire.Outgoing(args.chunkBytes);
      const values = histogramValues(1000);
      const request = { values: out.attach(values), bins: "8" }; // int64: a decimal string is exact
      // weights (ndarray | None) stays unset: None.
      const { response, arrays, chunksSent, chunksReceived } = await wire.streamingCall(
        client, "Histogram", request, out, responseType("Histogram"), options());
      const result = arrays.array(response.result);
      if (!/^[<>]i8$/.test(result.dtype)) throw new Error(`expected int64 counts, got ${result.dtype}`);
      const counts = result.typed(); // a BigInt64Array
      print({
        call: "Histogram",
        request: { values: Array.from(values), bins: 8 },
        result: { dtype: result.dtype, shape: result.shape, values: Array.from(counts), type: counts.constructor.name },
        chunks: { sent: chunksSent, received: chunksReceived },
      });
    }

    // (c) streaming: an xarray.DataArray in and out.
    {
      const out = new wire.Outgoing(args.chunkBytes);
      const lat = Float64Array.of(-30, 0, 30);
      const lon = Float64Array.of(0, 90, 180, 270);
      const data = field(lat.length, lon.length, 1.5);
      const da = dataArrayMessage(out, {
        name: "sst", dims: ["lat", "lon"], data, shape: [lat.length, lon.length],
        attrs: { units: "degC" },
        coords: [{ name: "lat", dims: ["lat"], data: lat }, { name: "lon", dims: ["lon"], data: lon }],
      });
      const { response, arrays, chunksSent } = await wire.streamingCall(
        client, "ZonalMean", { da, lon: "lon" }, out, responseType("ZonalMean"), options());
      print({
        call: "ZonalMean",
        request: { name: "sst", dims: ["lat", "lon"], values: Array.from(data), lat: Array.from(lat), lon: Array.from(lon), attrs: { units: "degC" } },
        result: dataArrayResult(response.result, arrays),
        chunks: { sent: chunksSent },
      });
    }

    // (d) a function that raises: the error's type and message arrive in the trailer.
    {
      const request = { temperature: 10.0, salinity: -1.0 };
      try {
        await wire.unaryCall(client, "SeaWaterDensity", request, options());
        throw new Error("SeaWaterDensity with a negative salinity did not fail");
      } catch (err) {
        if (err.code === undefined) throw err;
        const codeName = Object.keys(grpc.status).find((k) => grpc.status[k] === err.code);
        print({ call: "SeaWaterDensity", request, error: { code: err.code, code_name: codeName, details: err.details, remote_error: wire.remoteError(root, err) } });
      }
    }

    // (e) unary with a list and a dict (StringMapValue wraps dict | None). A dict is a
    // repeated {key, value} entry, in the dict's order (the bytes of a proto map).
    {
      const units = { sst: "degC" };
      const entries = (object) => Object.entries(object).map(([key, value]) => ({ key, value }));
      const request = { names: ["sst", "sss"], units: { value: entries(units) } };
      const reply = await wire.unaryCall(client, "Describe", request, options());
      const result = Object.fromEntries(reply.result.map((e) => [e.key, e.value]));
      print({ call: "Describe", request: { names: request.names, units: { value: units } }, result });
    }

    // (f) streaming with a datetime64 coordinate: climatology() and anomaly().
    for (const method of ["Climatology", "Anomaly"]) {
      const out = new wire.Outgoing(args.chunkBytes);
      const time = monthStarts(24);
      const lat = Float64Array.of(-10, 0, 10);
      const data = field(time.length, lat.length, 0.5);
      const da = dataArrayMessage(out, {
        name: "sst", dims: ["time", "lat"], data, shape: [time.length, lat.length],
        attrs: { units: "degC" },
        coords: [{ name: "time", dims: ["time"], data: time, dtype: `${wire.HOST_ORDER}M8[ns]` }, { name: "lat", dims: ["lat"], data: lat }],
      });
      const { response, arrays } = await wire.streamingCall(client, method, { da }, out, responseType(method), options()); // dim: default "time"
      print({
        call: method,
        request: { name: "sst", dims: ["time", "lat"], values: Array.from(data), time_ns: Array.from(time), lat: Array.from(lat), attrs: { units: "degC" } },
        result: dataArrayResult(response.result, arrays),
      });
    }
  } finally {
    client.close();
  }
}

main().catch((err) => {
  const remote = err && err.metadata ? err.metadata.get("dagen-error-bin") : [];
  process.stderr.write(`call_ocean_tools.js: ${err && err.stack ? err.stack : err}\n`);
  if (err && err.code !== undefined) process.stderr.write(`gRPC status ${err.code}: ${err.details}${remote.length ? " (dagen-error-bin trailer present)" : ""}\n`);
  process.exit(1);
});
