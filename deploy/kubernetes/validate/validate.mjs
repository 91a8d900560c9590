// Validates the Kubernetes manifests offline: builds the kustomize base
// (with `kubectl kustomize` when kubectl is installed, else from the files
// the kustomization lists), checks every resource against the Kubernetes
// and KEDA schemas shipped in kubernetes-models, and checks what the schemas
// cannot: the grace periods agree and the probes reach the listener.
//
//   cd deploy/kubernetes/validate && npm ci && node validate.mjs
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const base = join(root, "base");
const target = process.argv[2] ? join(root, process.argv[2]) : base;

function build() {
  try {
    const out = execFileSync("kubectl", ["kustomize", target], { encoding: "utf8" });
    console.log(`built ${target} with kubectl kustomize`);
    return out;
  } catch (e) {
    if (e.code !== "ENOENT") throw new Error(`kubectl kustomize failed: ${e.stderr || e.message}`);
  }
  if (target !== base) {
    console.log(`kubectl not installed: ${target} not built (only the base can be checked without it)`);
    process.exit(0);
  }
  console.log("kubectl not installed: validating the listed resources and generated ConfigMaps as written");
  const kustomization = parseAllDocuments(readFileSync(join(base, "kustomization.yaml"), "utf8"))[0].toJS();
  const docs = kustomization.resources.map((f) => readFileSync(join(base, f), "utf8"));
  for (const generator of kustomization.configMapGenerator ?? []) {
    const data = {};
    for (const entry of generator.files ?? []) {
      const [key, file] = entry.includes("=") ? entry.split("=") : [entry, entry];
      data[key] = readFileSync(join(base, file), "utf8");
    }
    docs.push(JSON.stringify({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: generator.name }, data }));
  }
  return docs.join("\n---\n");
}

/** The kubernetes-models class for a resource. */
async function model(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const path = group === "keda.sh"
    ? `@kubernetes-models/keda/keda.sh/${version}/${kind}`
    : `kubernetes-models/${group ? `${group}/` : ""}${version}/${kind}`;
  try {
    return (await import(path))[kind];
  } catch {
    throw new Error(`no schema for ${apiVersion} ${kind}`);
  }
}

const docs = parseAllDocuments(build())
  .map((d) => d.toJS())
  .filter((d) => d);
let failures = 0;
const seen = {};
for (const doc of docs) {
  const name = `${doc.kind}/${doc.metadata?.name}`;
  try {
    const Model = await model(doc.apiVersion, doc.kind);
    new Model(doc).validate();
    // The first of each kind, except that the worker's settings and the
    // ingress policy are the ones checked below (an overlay adds others:
    // a CA bundle, an egress policy).
    const settings = doc.kind === "ConfigMap" && doc.data?.["default.toml"] !== undefined;
    const ingress = doc.kind === "NetworkPolicy" && (doc.spec?.policyTypes ?? []).includes("Ingress");
    if (!(doc.kind in seen) || settings || ingress) seen[doc.kind] = doc;
    console.log(`ok    ${name}`);
  } catch (e) {
    failures += 1;
    console.log(`FAIL  ${name}: ${e.message}`);
  }
}

function check(ok, what) {
  console.log(`${ok ? "ok  " : "FAIL"}  ${what}`);
  if (!ok) failures += 1;
}

for (const kind of ["Deployment", "ServiceAccount", "PodDisruptionBudget", "ScaledObject", "TriggerAuthentication", "ConfigMap", "NetworkPolicy"]) {
  check(kind in seen, `the base has a ${kind}`);
}
const deployment = seen.Deployment;
if (deployment && seen.ConfigMap) {
  const pod = deployment.spec.template.spec;
  const toml = seen.ConfigMap.data["default.toml"];
  const grace = Number((toml.match(/shutdown_grace\s*=\s*"(\d+)s"/) || [])[1] ?? 20);
  check(pod.terminationGracePeriodSeconds > grace + 2,
    `terminationGracePeriodSeconds (${pod.terminationGracePeriodSeconds}) is above worker.shutdown_grace (${grace}s) plus time to flush acks`);
  const listen = (toml.match(/listen\s*=\s*"([^"]*)"/) || [])[1] ?? "";
  const container = pod.containers[0];
  const port = container.ports.find((p) => p.name === container.livenessProbe.httpGet.port);
  check(listen.startsWith("0.0.0.0:") && port && listen.endsWith(`:${port.containerPort}`),
    `server.listen (${listen}) is the probes' port on all interfaces`);
  check(container.securityContext.readOnlyRootFilesystem === true && pod.securityContext.runAsNonRoot === true,
    "read-only root filesystem, non-root user");
  check(seen.ServiceAccount?.metadata.annotations?.["iam.gke.io/gcp-service-account"]?.endsWith(".iam.gserviceaccount.com") === true,
    "the ServiceAccount is annotated for Workload Identity");
  check(seen.ScaledObject?.spec.scaleTargetRef.name === deployment.metadata.name,
    "the ScaledObject scales the Deployment");
  check(pod.automountServiceAccountToken === false,
    "no Kubernetes API token is mounted (automountServiceAccountToken: false)");
  // The memory limit covers what the flow-control settings let the worker
  // hold: about 30 MiB of its own, the payloads and their decoded events,
  // and one event being decoded (at most 16 times its size).
  const MiB = 1024 * 1024;
  const setting = (name, fallback) => Number((toml.match(new RegExp(`${name}\\s*=\\s*(\\d+)`)) || [])[1] ?? fallback);
  const heldBytes = setting("max_outstanding_bytes", 64 * MiB);
  const eventBytes = setting("max_event_bytes", MiB);
  const needed = 30 * MiB + 2 * heldBytes + 16 * eventBytes;
  const limit = container.resources?.limits?.memory ?? "";
  const limitBytes = Number((limit.match(/^(\d+)Mi$/) || [])[1] ?? 0) * MiB;
  check(limitBytes >= needed,
    `the memory limit (${limit}) covers what flow control lets the worker hold (${Math.ceil(needed / MiB)}Mi)`);
  const policy = seen.NetworkPolicy;
  const opsPort = port?.containerPort;
  const ingress = policy?.spec.ingress ?? [];
  check(policy?.spec.policyTypes?.includes("Ingress") === true
      && ingress.every((rule) => (rule.ports ?? []).length > 0 && rule.ports.every((p) => p.port === opsPort)),
    "ingress is denied but for the ops port");
}
if (failures > 0) {
  console.log(`${failures} problem(s)`);
  process.exit(1);
}
console.log("manifests valid");
