// Reference outputs of a TensorFlow.js graph model, computed by TF.js itself (a developer tool).
//
// The project rebuilds TF.js face models in TensorFlow from their weights (e.g.
// faceoff.faces.models.mobilefacenet); this tool runs the original model.json in TF.js, on the
// pure-JavaScript CPU backend, so the rebuilt network can be checked against it
// (tests/fixtures/tfjs_mobilefacenet.json was made with it). It is run by hand, never by the
// tests, and TF.js is installed outside the repository:
//
//   npm install --prefix /tmp/tfjs-ref --ignore-scripts @tensorflow/tfjs@4.22.0
//   M=~/.cache/faceoff/models
//   node tools/tfjs_reference.mjs --tfjs /tmp/tfjs-ref/node_modules \
//       --model $M/human-models-3.0.4-mobilefacenet.json \
//       --shard $M/human-models-3.0.4-mobilefacenet.bin \
//       --size 112 --offset 127.5 --scale 0.0078125 --output embeddings crop1.npy crop2.npy ...
//
// (--tfjs is the node_modules folder TF.js was installed into; default $NODE_PATH's first
// folder, which ES-module imports would not search by themselves.)
//
// Inputs are NumPy .npy files, uint8 or float32 (little-endian, C order), each (H, W, 3) or
// (N, H, W, 3) with H = W = --size, e.g. np.save("crop1.npy", rgb_uint8_crop). The pixels are
// fed exactly as stored, after x' = (x - offset) * scale per channel (--bgr swaps R and B
// first); nothing is resized. Examples:
//   mobilefacenet  --size 112 --offset 127.5 --scale 0.0078125 --output embeddings
//   faceres        --size 224 --offset 0 --scale 1 --output global_pooling/Mean
//   mobileface     --size 112 --offset 0 --scale 1 --output batchnorm0/add_1
// (the scaling each model expects is the caller's to know; these are the tool's arguments, not
// claims about the models).
//
// The model folder must hold model.json and the shard files its weightsManifest names; a cached
// asset (renamed human-models-3.0.4-NAME.bin) is found by --shard PATH (repeatable, in
// manifest order) instead. Prints one JSON object: the TF.js version, backend, model, output
// node, and per input file its outputs (one list of numbers per image).

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";

const { values: opts, positionals: files } = parseArgs({
  allowPositionals: true,
  options: {
    model: { type: "string" },
    shard: { type: "string", multiple: true },
    size: { type: "string", default: "112" },
    offset: { type: "string", default: "0" },
    scale: { type: "string", default: "1" },
    bgr: { type: "boolean", default: false },
    output: { type: "string" },
    tfjs: { type: "string" },
  },
});

function fail(message) {
  process.stderr.write(`tfjs_reference: ${message}\n`);
  process.exit(2);
}

if (!opts.model || !opts.output || files.length === 0) {
  fail("usage: --model model.json --output NODE [--size S --offset O --scale K --bgr] FILE.npy ...");
}
const size = Number(opts.size);
const offset = Number(opts.offset);
const scale = Number(opts.scale);
if (!Number.isInteger(size) || size <= 0 || !Number.isFinite(offset) || !Number.isFinite(scale)) {
  fail("--size must be a positive integer, --offset and --scale numbers");
}

const tfjsRoot = opts.tfjs ?? (process.env.NODE_PATH ?? "").split(":")[0];
if (!tfjsRoot) fail("say where @tensorflow/tfjs is installed: --tfjs DIR/node_modules or NODE_PATH");
const require = createRequire(join(resolve(tfjsRoot), "noop.js"));
const tf = require("@tensorflow/tfjs");

/** A .npy file as {shape, data: Float32Array} (uint8 or float32, little-endian, C order). */
function readNpy(path) {
  const buf = readFileSync(path);
  if (buf.subarray(0, 6).toString("latin1") !== "\x93NUMPY") fail(`${path}: not a .npy file`);
  const major = buf[6];
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = (major === 1 ? 10 : 12) + headerLen;
  const header = buf.subarray(major === 1 ? 10 : 12, start).toString("latin1");
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*True/.test(header);
  const shape = (/'shape':\s*\(([^)]*)\)/.exec(header)?.[1] ?? "")
    .split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  if (fortran) fail(`${path}: Fortran order is not supported`);
  const count = shape.reduce((a, b) => a * b, 1);
  const raw = buf.subarray(start);
  let data;
  if (descr === "|u1" || descr === "<u1") {
    data = Float32Array.from(raw.subarray(0, count));
  } else if (descr === "<f4") {
    data = new Float32Array(count);
    for (let i = 0; i < count; i++) data[i] = raw.readFloatLE(4 * i);
  } else {
    fail(`${path}: dtype ${descr} (only uint8 and little-endian float32)`);
  }
  if (raw.length < count * (descr === "<f4" ? 4 : 1)) fail(`${path}: truncated`);
  return { shape, data };
}

async function main() {
  await tf.setBackend("cpu");
  await tf.ready();
  const modelPath = resolve(opts.model);
  const json = JSON.parse(readFileSync(modelPath, "utf8"));
  const groups = json.weightsManifest;
  const shardPaths = opts.shard?.length
    ? opts.shard.map((p) => resolve(p))
    : groups.flatMap((g) => g.paths.map((p) => join(dirname(modelPath), p)));
  const shards = shardPaths.map((p) => readFileSync(p));
  const weightData = new Uint8Array(shards.reduce((n, s) => n + s.length, 0));
  let at = 0;
  for (const s of shards) {
    weightData.set(s, at);
    at += s.length;
  }
  const model = await tf.loadGraphModel(
    tf.io.fromMemory({
      modelTopology: json.modelTopology,
      weightSpecs: groups.flatMap((g) => g.weights),
      weightData: weightData.buffer,
      format: json.format,
      generatedBy: json.generatedBy,
      convertedBy: json.convertedBy,
    }),
  );
  const inputName = model.inputs[0].name;
  const results = [];
  for (const file of files) {
    const { shape, data } = readNpy(file);
    const batched = shape.length === 3 ? [1, ...shape] : shape;
    if (batched.length !== 4 || batched[1] !== size || batched[2] !== size || batched[3] !== 3) {
      fail(`${file}: shape (${shape}) is not (${size}, ${size}, 3) or (N, ${size}, ${size}, 3)`);
    }
    const pixels = new Float32Array(data.length);
    for (let i = 0; i < data.length; i += 3) {
      const [r, g, b] = opts.bgr ? [data[i + 2], data[i + 1], data[i]] : [data[i], data[i + 1], data[i + 2]];
      pixels[i] = (r - offset) * scale;
      pixels[i + 1] = (g - offset) * scale;
      pixels[i + 2] = (b - offset) * scale;
    }
    const input = tf.tensor4d(pixels, batched, "float32");
    const out = model.execute({ [inputName]: input }, opts.output);
    const values = await out.array();
    const rows = out.shape[0] === batched[0] ? values.map((v) => v.flat(Infinity)) : [values.flat(Infinity)];
    results.push({ file, shape: out.shape, outputs: rows });
    tf.dispose([input, out]);
  }
  process.stdout.write(
    JSON.stringify(
      {
        tfjs: tf.version.tfjs,
        backend: tf.getBackend(),
        model: opts.model,
        input: inputName,
        output: opts.output,
        offset,
        scale,
        bgr: opts.bgr,
        results,
      },
      null,
      1,
    ) + "\n",
  );
}

main().catch((err) => fail(err?.stack ?? String(err)));
