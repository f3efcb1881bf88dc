// Validates Gateway API objects against the schemas of @kubernetes-models/gateway-api (generated
// from sigs.k8s.io/gateway-api's types). Usage: node gateway_validate.mjs MODULES_DIR OBJECTS.json
// Prints one JSON array: [{kind, name, error}] with error null when the object is valid.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [modules, file] = process.argv.slice(2);
const objects = JSON.parse(readFileSync(file, "utf8"));
const results = [];
for (const obj of objects) {
  const [group, version] = obj.apiVersion.split("/");
  const path = join(modules, "@kubernetes-models/gateway-api", group, version, `${obj.kind}.js`);
  let error = null;
  try {
    const Model = (await import(pathToFileURL(path).href))[obj.kind];
    new Model(obj).validate();
  } catch (e) {
    error = String(e.message || e);
  }
  results.push({ kind: obj.kind, name: obj.metadata?.name, error });
}
console.log(JSON.stringify(results));
