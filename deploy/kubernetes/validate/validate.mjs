// Validates Kubernetes manifests (rendered by `kubectl kustomize`) against the JSON schemas of
// kubernetes-models (generated from the Kubernetes OpenAPI) and @kubernetes-models/prometheus-operator
// (generated from the prometheus-operator CRDs), more strictly than the schemas alone:
//
// - every document's apiVersion and kind must have a model: an unknown kind fails, it is never skipped;
// - unknown fields fail (the API server refuses them under kubectl's default --validate=strict, but the
//   schemas allow them): a field is known when the schema's validator looked it up, or when the schema
//   is a map (labels, data, resource quantities) whose keys it enumerated;
// - a set of documents must hang together: no two with the same kind, namespace and name; what the
//   Deployment names (service account, ConfigMap, PVC, Secret keys, probe ports) exists in the set, the
//   Service selects the Deployment's pods on a port the container has, the ServiceMonitor selects the
//   Service on one of its ports;
// - miaudit's Deployment keeps its contract (deploy/README.md): one replica, Recreate, non-root 10001,
//   read-only root, no capabilities, RuntimeDefault seccomp, probes on /healthz and /readyz, requests and
//   a memory limit, the data volume and /tmp, workload identity.
//
//   node validate.mjs [--external Kind/name]... FILE...   one set of documents from the files ("-": stdin)
//   node validate.mjs --self-test                         broken documents must fail, a good one pass
//
// Exit 0 when everything holds, 1 otherwise (each problem on its own line).

import { readFileSync } from "node:fs";
import { Model } from "@kubernetes-models/base";
import yaml from "js-yaml";

// The packages whose models this validator knows, by API group ("" is the core group).
const CRD_PACKAGES = { "monitoring.coreos.com": "@kubernetes-models/prometheus-operator" };

async function modelFor(apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string") return null;
  const slash = apiVersion.lastIndexOf("/");
  const group = slash < 0 ? "" : apiVersion.slice(0, slash);
  const pkg = CRD_PACKAGES[group] ?? "kubernetes-models";
  let mod;
  try {
    mod = await import(`${pkg}/${apiVersion}`);
  } catch {
    return null;
  }
  return (
    Object.values(mod).find(
      (c) => typeof c === "function" && c.prototype instanceof Model && c.apiVersion === apiVersion && c.kind === kind,
    ) ?? null
  );
}

// Runs the model's schema validator on a proxy of the document that records which fields the validator
// looked up and which objects' keys it enumerated; returns the schema's errors and the unknown fields.
function validateStrict(Ctor, doc) {
  const looked = new Map();
  const enumerated = new Set();
  const proxies = new WeakMap();
  const touch = (path, key) => {
    if (typeof key !== "string") return;
    if (!looked.has(path)) looked.set(path, new Set());
    looked.get(path).add(key);
  };
  const wrap = (value, path) => {
    if (value === null || typeof value !== "object") return value;
    if (proxies.has(value)) return proxies.get(value);
    const proxy = new Proxy(value, {
      get(target, key, receiver) {
        touch(path, key);
        const v = Reflect.get(target, key, receiver);
        return typeof key === "string" && Object.hasOwn(target, key) ? wrap(v, `${path}/${key}`) : v;
      },
      has(target, key) {
        touch(path, key);
        return Reflect.has(target, key);
      },
      ownKeys(target) {
        enumerated.add(path);
        return Reflect.ownKeys(target);
      },
    });
    proxies.set(value, proxy);
    return proxy;
  };
  const errors = [];
  try {
    Ctor.prototype.validate.call(wrap(doc, ""));
  } catch (e) {
    if (Array.isArray(e.errors)) {
      for (const err of e.errors) errors.push(`${err.instancePath || "/"} ${err.message}`);
    } else {
      errors.push(String(e.message ?? e));
    }
  }
  const walk = (value, path) => {
    if (value === null || typeof value !== "object") return;
    if (Array.isArray(value)) {
      value.forEach((v, i) => walk(v, `${path}/${i}`));
      return;
    }
    const seen = looked.get(path) ?? new Set();
    for (const key of Object.keys(value)) {
      if (!enumerated.has(path) && !seen.has(key)) errors.push(`${path}/${key} is not a field of ${Ctor.kind} (unknown field)`);
      else walk(value[key], `${path}/${key}`);
    }
  };
  walk(doc, "");
  return errors;
}

const id = (d) => `${d?.kind ?? "?"}/${d?.metadata?.namespace ? d.metadata.namespace + "/" : ""}${d?.metadata?.name ?? "?"}`;

const matches = (selector, labels) =>
  !!selector && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels?.[k] === v);

// The relations inside one set of documents, and miaudit's Deployment contract.
function checkSet(docs, external) {
  const problems = [];
  const byKey = new Map();
  for (const d of docs) {
    const key = `${d.kind}/${d.metadata?.namespace ?? ""}/${d.metadata?.name}`;
    if (byKey.has(key)) problems.push(`${id(d)}: defined twice`);
    byKey.set(key, d);
  }
  const find = (kind, ns, name) =>
    byKey.get(`${kind}/${ns ?? ""}/${name}`) ?? (external.has(`${kind}/${name}`) ? { external: true } : undefined);
  const need = (d, kind, name, what) => {
    if (!find(kind, d.metadata?.namespace, name)) problems.push(`${id(d)}: ${what} names ${kind} "${name}", which is not in the set`);
  };

  const deployments = docs.filter((d) => d.kind === "Deployment");
  for (const d of deployments) {
    const pod = d.spec?.template?.spec ?? {};
    const podLabels = d.spec?.template?.metadata?.labels ?? {};
    if (!matches(d.spec?.selector?.matchLabels, podLabels)) problems.push(`${id(d)}: spec.selector does not select its own pod template`);
    if (pod.serviceAccountName) need(d, "ServiceAccount", pod.serviceAccountName, "spec.template.spec.serviceAccountName");
    for (const v of pod.volumes ?? []) {
      if (v.configMap) need(d, "ConfigMap", v.configMap.name, `volume ${v.name}`);
      if (v.secret) need(d, "Secret", v.secret.secretName, `volume ${v.name}`);
      if (v.persistentVolumeClaim) need(d, "PersistentVolumeClaim", v.persistentVolumeClaim.claimName, `volume ${v.name}`);
    }
    for (const c of pod.containers ?? []) {
      const portNames = new Set((c.ports ?? []).map((p) => p.name).filter(Boolean));
      const volumeNames = new Set((pod.volumes ?? []).map((v) => v.name));
      for (const m of c.volumeMounts ?? []) {
        if (!volumeNames.has(m.name)) problems.push(`${id(d)}: container ${c.name} mounts volume "${m.name}", which the pod does not have`);
      }
      for (const e of c.env ?? []) {
        const ref = e.valueFrom?.secretKeyRef ?? e.valueFrom?.configMapKeyRef;
        if (!ref) continue;
        const kind = e.valueFrom.secretKeyRef ? "Secret" : "ConfigMap";
        const target = find(kind, d.metadata?.namespace, ref.name);
        if (!target && !ref.optional) problems.push(`${id(d)}: env ${e.name} names ${kind} "${ref.name}", which is not in the set`);
        else if (target && !target.external) {
          const keys = { ...(target.data ?? {}), ...(target.stringData ?? {}) };
          if (!(ref.key in keys)) problems.push(`${id(d)}: env ${e.name} names key "${ref.key}", which ${kind} "${ref.name}" does not have`);
        }
      }
      for (const probe of ["startupProbe", "livenessProbe", "readinessProbe"]) {
        const port = c[probe]?.httpGet?.port;
        if (typeof port === "string" && !portNames.has(port)) problems.push(`${id(d)}: ${probe} uses port "${port}", which container ${c.name} does not name`);
      }
    }
  }

  const services = docs.filter((d) => d.kind === "Service");
  for (const s of services) {
    const pods = deployments.filter(
      (d) => d.metadata?.namespace === s.metadata?.namespace && matches(s.spec?.selector, d.spec?.template?.metadata?.labels),
    );
    if (pods.length === 0) problems.push(`${id(s)}: spec.selector selects no Deployment's pods in the set`);
    for (const p of s.spec?.ports ?? []) {
      if (typeof p.targetPort !== "string") continue;
      for (const d of pods) {
        const names = (d.spec.template.spec.containers ?? []).flatMap((c) => (c.ports ?? []).map((cp) => cp.name));
        if (!names.includes(p.targetPort)) problems.push(`${id(s)}: targetPort "${p.targetPort}" is not a port of ${id(d)}`);
      }
    }
  }

  for (const m of docs.filter((d) => d.kind === "ServiceMonitor")) {
    const selected = services.filter(
      (s) => s.metadata?.namespace === m.metadata?.namespace && matches(m.spec?.selector?.matchLabels, s.metadata?.labels),
    );
    if (selected.length === 0) problems.push(`${id(m)}: spec.selector selects no Service in its namespace`);
    for (const e of m.spec?.endpoints ?? []) {
      for (const s of selected) {
        if (!(s.spec?.ports ?? []).some((p) => p.name === e.port)) problems.push(`${id(m)}: endpoint port "${e.port}" is not a port name of ${id(s)}`);
      }
    }
  }

  // miaudit's own Deployment: what deploy/README.md promises.
  for (const d of deployments.filter((x) => x.metadata?.name === "miaudit")) {
    const pod = d.spec?.template?.spec ?? {};
    const c = (pod.containers ?? []).find((x) => x.name === "miaudit") ?? {};
    const sc = c.securityContext ?? {};
    const psc = pod.securityContext ?? {};
    const mount = (path) => (c.volumeMounts ?? []).find((m) => m.mountPath === path);
    const volume = (m) => (pod.volumes ?? []).find((v) => v.name === m?.name);
    const rules = [
      [d.spec?.replicas === 1, "spec.replicas is 1 (SQLite: one writer)"],
      [d.spec?.strategy?.type === "Recreate", "spec.strategy.type is Recreate (the old pod releases the volume first)"],
      [psc.runAsNonRoot === true && psc.runAsUser === 10001, "the pod runs as non-root user 10001"],
      [psc.fsGroup === 10001, "fsGroup 10001 makes the volume writable"],
      [(psc.seccompProfile ?? sc.seccompProfile)?.type === "RuntimeDefault", "seccompProfile RuntimeDefault"],
      [sc.allowPrivilegeEscalation === false, "allowPrivilegeEscalation false"],
      [sc.readOnlyRootFilesystem === true, "readOnlyRootFilesystem true"],
      [(sc.capabilities?.drop ?? []).includes("ALL") && !(sc.capabilities?.add ?? []).length, "all capabilities dropped, none added"],
      [c.livenessProbe?.httpGet?.path === "/healthz", "livenessProbe GET /healthz"],
      [c.readinessProbe?.httpGet?.path === "/readyz", "readinessProbe GET /readyz"],
      [!!c.resources?.requests?.memory && !!c.resources?.requests?.cpu && !!c.resources?.limits?.memory, "memory and CPU requests and a memory limit"],
      [!!volume(mount("/var/lib/miaudit"))?.persistentVolumeClaim, "/var/lib/miaudit is the PersistentVolumeClaim"],
      [!!volume(mount("/tmp"))?.emptyDir, "/tmp is an emptyDir"],
      [d.spec?.template?.metadata?.labels?.["azure.workload.identity/use"] === "true", 'pod label azure.workload.identity/use: "true"'],
      [(c.ports ?? []).some((p) => p.name === "http" && p.containerPort === 9464), "container port http is 9464"],
    ];
    for (const [ok, what] of rules) if (!ok) problems.push(`${id(d)}: miaudit's Deployment must keep: ${what}`);
    const sa = find("ServiceAccount", d.metadata?.namespace, pod.serviceAccountName);
    if (sa && !sa.external && !sa.metadata?.annotations?.["azure.workload.identity/client-id"]) {
      problems.push(`${id(sa)}: needs the annotation azure.workload.identity/client-id (workload identity)`);
    }
  }
  return problems;
}

// Validates one set of documents; returns the problems, one line each.
export async function validateDocs(docs, { external = new Set(), log = () => {} } = {}) {
  const problems = [];
  const valid = [];
  for (const [i, d] of docs.entries()) {
    if (d === null || typeof d !== "object" || Array.isArray(d)) {
      problems.push(`document ${i + 1}: not a mapping`);
      continue;
    }
    const Ctor = await modelFor(d.apiVersion, d.kind);
    if (!Ctor) {
      problems.push(`${id(d)}: unknown kind ${d.kind} in ${d.apiVersion} (no model; add its package to validate.mjs)`);
      continue;
    }
    if (!d.metadata?.name) problems.push(`${id(d)}: metadata.name is missing`);
    const errors = validateStrict(Ctor, d);
    for (const e of errors) problems.push(`${id(d)}: ${e}`);
    if (errors.length === 0) log(`ok   ${d.apiVersion} ${id(d)}`);
    valid.push(d);
  }
  return problems.concat(checkSet(valid, external));
}

function readDocs(file) {
  const text = readFileSync(file === "-" ? 0 : file, "utf8");
  return yaml.loadAll(text).filter((d) => d !== null && d !== undefined);
}

// Broken documents, each of which must fail with the message given, and a good set that must pass.
async function selfTest() {
  const pod = (container = {}, extra = {}) => ({
    metadata: { labels: { app: "x" } },
    spec: { containers: [{ name: "c", image: "i", ports: [{ name: "http", containerPort: 80 }], ...container }], ...extra },
  });
  const deployment = (spec = {}, template = pod()) => ({
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: "x", namespace: "n" },
    spec: { selector: { matchLabels: { app: "x" } }, template, ...spec },
  });
  const service = (spec = {}) => ({
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: "x", namespace: "n", labels: { app: "x" } },
    spec: { selector: { app: "x" }, ports: [{ name: "http", port: 80, targetPort: "http" }], ...spec },
  });
  const monitor = (endpoint = {}) => ({
    apiVersion: "monitoring.coreos.com/v1",
    kind: "ServiceMonitor",
    metadata: { name: "x", namespace: "n" },
    spec: { selector: { matchLabels: { app: "x" } }, endpoints: [{ port: "http", interval: "60s", ...endpoint }] },
  });
  const cases = [
    ["an unknown kind", [{ apiVersion: "v1", kind: "Deplyment", metadata: { name: "x" } }], "unknown kind"],
    ["an unknown API group", [{ apiVersion: "example.com/v1", kind: "Widget", metadata: { name: "x" } }], "unknown kind"],
    ["an unknown field (a typo)", [deployment({}, pod({ securityContext: { readOnlyRootFileSystem: true } })), service()], "readOnlyRootFileSystem is not a field"],
    ["an unknown field at the top of a spec", [deployment({ replica: 1 }), service()], "/spec/replica is not a field"],
    ["a wrong type", [deployment(), service({ ports: [{ name: "http", port: "http" }] })], "/spec/ports/0/port must be integer"],
    ["a missing required field", [deployment({}, pod({ name: undefined }))], "must have required property name"],
    ["a CRD field against its pattern", [deployment(), service(), monitor({ interval: "1 minute" })], "/spec/endpoints/0/interval must match pattern"],
    ["an unknown CRD field", [deployment(), service(), monitor({ scrapeInterval: "60s" })], "scrapeInterval is not a field"],
    [
      "a PrometheusRule's for",
      [{ apiVersion: "monitoring.coreos.com/v1", kind: "PrometheusRule", metadata: { name: "x" }, spec: { groups: [{ name: "g", rules: [{ alert: "A", expr: "up == 0", for: "5 minutes" }] }] } }],
      "/for must match pattern",
    ],
    ["a Service selecting nothing", [deployment(), service({ selector: { app: "y" } })], "selects no Deployment"],
    ["a ServiceMonitor on a port the Service lacks", [deployment(), service(), monitor({ port: "metrics" })], 'endpoint port "metrics"'],
    ["a missing ConfigMap", [deployment({}, pod({}, { volumes: [{ name: "cfg", configMap: { name: "nope" } }] }))], 'ConfigMap "nope"'],
    ["a duplicate", [service(), service(), deployment()], "defined twice"],
    ["miaudit's Deployment with RollingUpdate", [{ ...deployment({ replicas: 1, strategy: { type: "RollingUpdate" } }), metadata: { name: "miaudit", namespace: "n" } }], "Recreate"],
  ];
  let failed = 0;
  for (const [what, docs, expected] of cases) {
    const problems = await validateDocs(docs.map((d) => JSON.parse(JSON.stringify(d))));
    const hit = problems.some((p) => p.includes(expected));
    if (!hit) {
      failed++;
      console.log(`FAIL self-test: ${what} was not caught (wanted "${expected}"; got: ${problems.join(" | ") || "no problem"})`);
    } else {
      console.log(`ok   self-test: ${what} fails: ${problems.find((p) => p.includes(expected))}`);
    }
  }
  const good = await validateDocs([deployment(), service(), monitor()]);
  if (good.length) {
    failed++;
    console.log(`FAIL self-test: a good set was refused: ${good.join(" | ")}`);
  } else {
    console.log("ok   self-test: a good set passes");
  }
  return failed;
}

async function main(argv) {
  if (argv[0] === "--self-test") {
    const failed = await selfTest();
    console.log(failed ? `self-test: ${failed} case(s) wrong` : "self-test: the validator fails what it must");
    return failed ? 1 : 0;
  }
  const external = new Set();
  const files = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--external") external.add(argv[++i]);
    else files.push(argv[i]);
  }
  if (files.length === 0) {
    console.error("usage: node validate.mjs [--external Kind/name]... FILE... | --self-test");
    return 2;
  }
  let docs;
  try {
    docs = files.flatMap(readDocs);
  } catch (e) {
    console.log(`not YAML: ${e.message}`);
    return 1;
  }
  if (docs.length === 0) {
    console.log("no documents");
    return 1;
  }
  const problems = await validateDocs(docs, { external, log: (line) => console.log(line) });
  for (const p of problems) console.log(`FAIL ${p}`);
  console.log(`${docs.length} documents, ${problems.length} problem(s)`);
  return problems.length ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));
