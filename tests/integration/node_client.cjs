// A Node.js client of the contract: @grpc/grpc-js with @grpc/proto-loader loading protos/ at run
// time (no generated code), as an app in another language would use it. Run by
// tests/integration/test_sdk.py with NODE_PATH=.venv/node/node_modules.
// Usage: node node_client.cjs DETECTOR MASKER PHOTO PROTOS_DIR GOOGLE_RPC_PROTOS_DIR
// Prints one JSON object with what each call returned.
const fs = require("node:fs");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const [detectorAddress, maskerAddress, photoPath, protosDir, rpcDir] = process.argv.slice(2);
const definition = protoLoader.loadSync(["faceoff/v1/detector.proto", "faceoff/v1/masker.proto"], {
  includeDirs: [protosDir],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
});
const v1 = grpc.loadPackageDefinition(definition).faceoff.v1;
const detector = new v1.Detector(detectorAddress, grpc.credentials.createInsecure());
const masker = new v1.Masker(maskerAddress, grpc.credentials.createInsecure(), {
  "grpc.max_receive_message_length": 64 << 20,
});

// google.rpc.Status and its details, from googleapis-common-protos' .proto files
const rpc = new protobuf.Root();
rpc.resolvePath = (origin, target) =>
  target.startsWith("google/rpc/") ? path.join(rpcDir, path.basename(target)) : target;
rpc.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });
const Status = rpc.lookupType("google.rpc.Status");

function call(client, method, request, deadlineSeconds) {
  const deadline = new Date(Date.now() + deadlineSeconds * 1000);
  return new Promise((resolve) => {
    client[method](request, { deadline }, (error, reply) => resolve({ error, reply }));
  });
}

function richStatus(error) {
  const raw = error.metadata.get("grpc-status-details-bin")[0];
  if (!raw) return null;
  const status = Status.decode(raw);
  const out = { code: status.code, message: status.message, details: {} };
  // each detail is a google.protobuf.Any naming its type
  for (const any of status.details) {
    const type = rpc.lookupType(any.type_url.split("/").pop()); // e.g. google.rpc.BadRequest
    out.details[type.name] = type.toObject(type.decode(any.value));
  }
  return out;
}

(async () => {
  const photo = fs.readFileSync(photoPath);
  const result = {};
  const detected = await call(detector, "Detect", { image: { data: photo } }, 120);
  if (detected.error) throw detected.error;
  result.detect = {
    width: detected.reply.width,
    height: detected.reply.height,
    faces: detected.reply.faces.length,
    box: detected.reply.faces[0].box,
  };
  const protectedPhoto = await call(
    masker,
    "Protect",
    { image: { data: photo }, options: { profile: "low", iterations: 2, seed: 1 } },
    600,
  );
  if (protectedPhoto.error) throw protectedPhoto.error;
  result.protect = {
    bytes: protectedPhoto.reply.image.data.length,
    format: protectedPhoto.reply.image.format,
    faces: protectedPhoto.reply.faces.length,
    profile: protectedPhoto.reply.profile,
  };
  const refused = await call(
    detector,
    "Detect",
    { image: { data: photo }, options: { min_confidence: 1.5 } },
    60,
  );
  result.refusal = {
    code: refused.error && refused.error.code,
    details: refused.error && refused.error.details,
    status: refused.error && richStatus(refused.error),
  };
  console.log(JSON.stringify(result));
  detector.close();
  masker.close();
})().catch((error) => {
  console.error(String(error && error.stack ? error.stack : error));
  process.exit(1);
});
