#!/usr/bin/env python3
"""Checks the install manifests under manifests/ without a cluster.

    bash scripts/install-test-tools.sh      # once: kubernetes-validate, jsonschema, PyYAML, helm
    python3 tests/manifests/check.py

Builds every kustomize entry point (default, static-certs, default + each component,
e2e), validates built-in kinds with `kubernetes-validate --strict`, checks the Canary
CRD and the examples against it, lints and renders the Helm chart for a matrix of
values, compares RBAC with the table in README.md, and asserts the fields the design
fixes (security context, probes, webhooks, ...). Prints one line per check and ends
with `N passed, M failed`; exits 1 if anything failed. Writes only to a temporary
directory (certificates for static-certs included).

Environment: HELM (helm binary; default .tools/bin/helm, then PATH), KUBECTL (default
kubectl), CANARY_NOTIFIER_BIN (the operator binary for `certs`; default `cargo run -q --`).
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

try:
    import jsonschema
    import yaml
except ImportError as e:  # pragma: no cover - environment problem
    print(f"FAIL imports: {e}; run scripts/install-test-tools.sh")
    print("0 passed, 1 failed")
    sys.exit(1)

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
CHART = MANIFESTS / "helm" / "canary-notifier"
CRD_FILE = MANIFESTS / "components" / "crd" / "crd.yaml"
CHART_CRD_FILE = CHART / "files" / "crd.yaml"
CRD_HINT = "generate it with `cargo run -q -- crd > {}`"

NS = "canary-notifier"
NAME = "canary-notifier"
IMAGE = "ghcr.io/canary-notifier/canary-notifier:0.1.0"
POD_LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/component": "operator"}
SETTINGS_SECRET = "canary-notifier-settings"
TLS_SECRET = "canary-notifier-tls"
LEASE = "canary-notifier-leader"
# Kinds kubernetes-validate has no schema for; everything else must validate.
CUSTOM_KINDS = {"Canary", "ServiceMonitor", "PrometheusRule", "Issuer", "Certificate"}
# Kubernetes versions to validate against: the newest the validator knows, and the
# oldest the manifests support (lifecycle.preStop.sleep is on by default from 1.30).
K8S_VERSIONS = [None, "1.30.0"]

SLACK_URL = "https://hooks.slack.com/services/YOUR/SLACK/WEBHOOK"
TEAMS_URL = "https://outlook.office.com/webhook/YOUR/TEAMS/WEBHOOK"
EVENT_URL = "https://example.com/flagger-canary-event-webhook"


class Failed(Exception):
    pass


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def run(self, name: str, fn, *args, **kwargs):
        """Runs one check; returns fn's result, or None if it failed."""
        try:
            result = fn(*args, **kwargs)
        except Failed as e:
            self.failed += 1
            print(f"FAIL {name}: {e}", flush=True)
            return None
        except Exception as e:  # a bug in the check itself still counts as a failure
            self.failed += 1
            print(f"FAIL {name}: unexpected {type(e).__name__}: {e}", flush=True)
            traceback.print_exc(file=sys.stdout)
            return None
        self.passed += 1
        print(f"PASS {name}", flush=True)
        return result

    def section(self, title: str) -> None:
        print(f"\n== {title}", flush=True)


def expect(cond, message: str) -> None:
    if not cond:
        raise Failed(message)


def expect_eq(actual, expected, what: str) -> None:
    if actual != expected:
        raise Failed(f"{what}: expected {expected!r}, got {actual!r}")


def run(cmd: list[str], cwd: Path | None = None, timeout: int = 300) -> str:
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise Failed(f"{cmd[0]} not found; run scripts/install-test-tools.sh")
    except subprocess.TimeoutExpired:
        raise Failed(f"`{' '.join(cmd)}` timed out after {timeout}s")
    if p.returncode != 0:
        err = (p.stderr.strip() or p.stdout.strip()).splitlines()
        raise Failed(f"`{' '.join(cmd)}` exited {p.returncode}: " + " | ".join(err[-6:]))
    return p.stdout


def load_docs(text: str) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(text) if d]
    out = []
    for d in docs:
        if d.get("kind") == "List":
            out.extend(d.get("items") or [])
        else:
            out.append(d)
    return out


def dig(obj, *path):
    """obj[path[0]][path[1]]...; None where anything on the way is missing."""
    for key in path:
        if isinstance(obj, dict):
            obj = obj.get(key)
        elif isinstance(obj, list) and isinstance(key, int) and -len(obj) <= key < len(obj):
            obj = obj[key]
        else:
            return None
    return obj


def find(objs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objs if o.get("kind") == kind and (name is None or o["metadata"].get("name") == name)]


def one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = find(objs, kind, name)
    expect(len(found) == 1, f"expected exactly one {kind}{' ' + name if name else ''}, found {len(found)}")
    return found[0]


# ---------------------------------------------------------------- tools

def kubectl() -> str:
    return os.environ.get("KUBECTL", "kubectl")


def helm() -> str:
    if os.environ.get("HELM"):
        return os.environ["HELM"]
    local = ROOT / ".tools" / "bin" / "helm"
    if local.exists():
        return str(local)
    found = shutil.which("helm")
    if found:
        return found
    raise Failed("helm not found: run scripts/install-test-tools.sh (installs .tools/bin/helm) or set HELM")


def operator_cmd() -> list[str]:
    if os.environ.get("CANARY_NOTIFIER_BIN"):
        return [os.environ["CANARY_NOTIFIER_BIN"]]
    return ["cargo", "run", "-q", "--manifest-path", str(ROOT / "Cargo.toml"), "--"]


def kustomize(path: Path, load_none: bool = False) -> list[dict]:
    cmd = [kubectl(), "kustomize", str(path)]
    if load_none:
        cmd += ["--load-restrictor", "LoadRestrictionsNone"]
    return load_docs(run(cmd))


def kubernetes_validate(objs: list[dict], tmp: Path, label: str) -> None:
    builtin = [o for o in objs if o.get("kind") not in CUSTOM_KINDS]
    expect(builtin, "nothing to validate")
    path = tmp / f"validate-{re.sub(r'[^a-z0-9]+', '-', label.lower())}.yaml"
    path.write_text(yaml.safe_dump_all(builtin, sort_keys=False))
    problems = []
    for version in K8S_VERSIONS:
        cmd = [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet"]
        if version:
            cmd += ["-k", version]
        p = subprocess.run(cmd + [str(path)], capture_output=True, text=True, timeout=300)
        lines = (p.stdout + p.stderr).splitlines()
        bad = [l for l in lines if l.startswith("ERROR") or "Couldn't find schema" in l]
        if p.returncode != 0 and not bad:
            bad = lines[-3:] or [f"kubernetes-validate exited {p.returncode}"]
        problems += [l.replace(str(path), "") for l in bad]
    expect(not problems, f"{len(problems)} problem(s): " + " | ".join(problems[:6]))


# ---------------------------------------------------------------- kustomize builds

def crd_needed() -> None:
    expect(CRD_FILE.exists(), f"{CRD_FILE.relative_to(ROOT)} is missing; {CRD_HINT.format(CRD_FILE.relative_to(ROOT))}")


def overlay(tmp: Path, name: str, components: list[Path]) -> Path:
    """A temporary kustomization: manifests/default plus the given components."""
    d = tmp / "builds" / name
    d.mkdir(parents=True, exist_ok=True)
    rel = lambda p: os.path.relpath(p, d)  # kustomize refuses absolute paths
    (d / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [rel(MANIFESTS / "default")],
        "components": [rel(c) for c in components],
    }))
    return d


def settings_component_copy(tmp: Path) -> Path:
    """components/settings needs settings.env (git-ignored): build it from the example."""
    d = tmp / "settings-component"
    if not d.exists():
        shutil.copytree(MANIFESTS / "components" / "settings", d,
                        ignore=shutil.ignore_patterns("settings.env"))
        shutil.copy(d / "settings.env.example", d / "settings.env")
    return d


def static_certs_build(tmp: Path) -> tuple[list[dict], Path]:
    """Copies manifests/ into tmp, writes certificates beside it, builds static-certs."""
    work = tmp / "static-certs-tree"
    shutil.copytree(MANIFESTS, work / "manifests",
                    ignore=shutil.ignore_patterns("settings.env", "helm"))
    certs = work / "certs"
    run(operator_cmd() + ["certs", "--service", NAME, "--namespace", NS, "--out", str(certs)],
        cwd=ROOT, timeout=1200)
    for f in ("ca.crt", "tls.crt", "tls.key"):
        expect((certs / f).exists(), f"`canary-notifier certs` did not write {f}")
    return kustomize(work / "manifests" / "static-certs", load_none=True), certs


# ---------------------------------------------------------------- targeted assertions

def env_map(container: dict) -> dict:
    return {e["name"]: e for e in (container.get("env") or [])}


def check_deployment(objs: list[dict], cert_mode: str, settings_secret: str, settings_optional: bool,
                     image: str = IMAGE, namespace: str = NS) -> None:
    dep = one(objs, "Deployment", NAME)
    expect_eq(dep["metadata"].get("namespace"), namespace, "Deployment namespace")
    labels = dig(dep, "metadata", "labels") or {}
    for k, v in POD_LABELS.items():
        expect_eq(labels.get(k), v, f"Deployment label {k}")
    spec = dep["spec"]
    expect_eq(spec.get("replicas"), 2, "replicas")
    pod_labels = spec["template"]["metadata"]["labels"]
    for k, v in spec["selector"]["matchLabels"].items():
        expect_eq(pod_labels.get(k), v, f"pod label {k} (selector)")
    for k, v in POD_LABELS.items():
        expect_eq(pod_labels.get(k), v, f"pod label {k}")
    pod = spec["template"]["spec"]
    expect_eq(pod.get("serviceAccountName"), NAME, "serviceAccountName")
    expect_eq(pod.get("terminationGracePeriodSeconds"), 30, "terminationGracePeriodSeconds")
    psc = pod.get("securityContext") or {}
    expect_eq(psc.get("runAsNonRoot"), True, "pod runAsNonRoot")
    expect_eq(psc.get("runAsUser"), 65532, "pod runAsUser")
    expect_eq(psc.get("runAsGroup"), 65532, "pod runAsGroup")
    expect_eq(psc.get("seccompProfile"), {"type": "RuntimeDefault"}, "pod seccompProfile")
    terms = dig(pod, "affinity", "podAntiAffinity", "preferredDuringSchedulingIgnoredDuringExecution") or []
    expect(any(t["podAffinityTerm"].get("topologyKey") == "kubernetes.io/hostname" for t in terms),
           "no preferred podAntiAffinity on kubernetes.io/hostname")
    expect(len(pod["containers"]) == 1, "expected one container")
    c = pod["containers"][0]
    expect_eq(c["name"], NAME, "container name")
    expect_eq(c["image"], image, "image")
    expect_eq(c.get("args"), ["serve"], "args")
    expect("command" not in c, "command must not be set (the image's ENTRYPOINT runs)")
    env = env_map(c)
    expect_eq(dig(env, "POD_NAME", "valueFrom"), {"fieldRef": {"fieldPath": "metadata.name"}}, "POD_NAME")
    expect_eq(dig(env, "POD_NAMESPACE", "valueFrom"), {"fieldRef": {"fieldPath": "metadata.namespace"}},
              "POD_NAMESPACE")
    expect_eq(dig(env, "CANARY_NOTIFIER_LOG_FORMAT", "value"), "json", "CANARY_NOTIFIER_LOG_FORMAT")
    expect_eq(dig(env, "CANARY_NOTIFIER_CERT_MODE", "value"), cert_mode, "CANARY_NOTIFIER_CERT_MODE")
    expect_eq(dig(env, "CANARY_NOTIFIER_TLS_CERT_FILE", "value"), "/etc/canary-notifier/tls/tls.crt",
              "CANARY_NOTIFIER_TLS_CERT_FILE")
    expect_eq(dig(env, "CANARY_NOTIFIER_TLS_KEY_FILE", "value"), "/etc/canary-notifier/tls/tls.key",
              "CANARY_NOTIFIER_TLS_KEY_FILE")
    secret_names = [n for n in env if re.search(r"URL|TOKEN|SIGNING_KEY", n)]
    expect(not secret_names, f"secret settings must come from the Secret, not env: {secret_names}")
    ref = {"name": settings_secret}
    if settings_optional:
        ref["optional"] = True
    expect_eq(c.get("envFrom"), [{"secretRef": ref}], "envFrom")
    ports = {p["name"]: p["containerPort"] for p in (c.get("ports") or [])}
    expect_eq(ports, {"https": 8443, "http-metrics": 8080}, "container ports")
    expect_eq(dig(c, "readinessProbe", "httpGet", "path"), "/readyz", "readinessProbe path")
    expect_eq(dig(c, "readinessProbe", "httpGet", "port"), "http-metrics", "readinessProbe port")
    expect_eq(dig(c, "livenessProbe", "httpGet", "path"), "/healthz", "livenessProbe path")
    expect_eq(dig(c, "livenessProbe", "httpGet", "port"), "http-metrics", "livenessProbe port")
    expect_eq(dig(c, "lifecycle", "preStop"), {"sleep": {"seconds": 5}}, "preStop (sleep action, no shell)")
    res = c.get("resources") or {}
    expect_eq(res.get("requests"), {"cpu": "50m", "memory": "64Mi"}, "resources.requests")
    expect_eq(res.get("limits"), {"memory": "256Mi"}, "resources.limits")
    csc = c.get("securityContext") or {}
    expect_eq(csc.get("allowPrivilegeEscalation"), False, "allowPrivilegeEscalation")
    expect_eq(csc.get("readOnlyRootFilesystem"), True, "readOnlyRootFilesystem")
    expect_eq(csc.get("capabilities"), {"drop": ["ALL"]}, "capabilities")
    mounts = {m["name"]: m for m in (c.get("volumeMounts") or [])}
    expect_eq(dig(mounts, "tls", "mountPath"), "/etc/canary-notifier/tls", "tls mountPath")
    expect_eq(dig(mounts, "tls", "readOnly"), True, "tls mount readOnly")
    vols = {v["name"]: v for v in (pod.get("volumes") or [])}
    expect_eq(dig(vols, "tls", "secret"), {"secretName": TLS_SECRET, "optional": True}, "tls volume")


def check_service_pdb(objs: list[dict], namespace: str = NS) -> None:
    svc = one(objs, "Service", NAME)
    expect_eq(svc["metadata"].get("namespace"), namespace, "Service namespace")
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
    expect_eq(ports, {"https": (443, "https"), "http-metrics": (8080, "http-metrics")}, "Service ports")
    dep = one(objs, "Deployment", NAME)
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    for k, v in svc["spec"]["selector"].items():
        expect_eq(pod_labels.get(k), v, f"Service selector {k} matches the pods")
    pdb = one(objs, "PodDisruptionBudget", NAME)
    expect_eq(pdb["spec"].get("minAvailable"), 1, "PDB minAvailable")
    expect("maxUnavailable" not in pdb["spec"], "PDB must not also set maxUnavailable")
    for k, v in pdb["spec"]["selector"]["matchLabels"].items():
        expect_eq(pod_labels.get(k), v, f"PDB selector {k} matches the pods")


def check_webhooks(objs: list[dict], namespace: str = NS, ca_bundle: str | None = None,
                   inject_from: str | None = None) -> None:
    for kind, hook, path in (("MutatingWebhookConfiguration", "mutate.canary-notifier.dev", "/mutate"),
                             ("ValidatingWebhookConfiguration", "validate.canary-notifier.dev", "/validate")):
        cfg = one(objs, kind, NAME)
        hooks = cfg.get("webhooks") or []
        expect_eq([h["name"] for h in hooks], [hook], f"{kind} webhooks")
        h = hooks[0]
        cc = h["clientConfig"]
        expect_eq(cc.get("service"), {"name": NAME, "namespace": namespace, "path": path, "port": 443},
                  f"{kind} clientConfig.service")
        expect("url" not in cc, f"{kind}: clientConfig.url must not be set")
        expect_eq(h.get("rules"), [{"apiGroups": ["flagger.app"], "apiVersions": ["v1beta1"],
                                    "operations": ["CREATE", "UPDATE"], "resources": ["canaries"],
                                    "scope": "Namespaced"}], f"{kind} rules")
        expect_eq(h.get("sideEffects"), "None", f"{kind} sideEffects")
        expect_eq(h.get("admissionReviewVersions"), ["v1"], f"{kind} admissionReviewVersions")
        expect_eq(h.get("timeoutSeconds"), 5, f"{kind} timeoutSeconds")
        expect_eq(h.get("failurePolicy"), "Fail", f"{kind} failurePolicy")
        expect_eq(h.get("matchPolicy"), "Equivalent", f"{kind} matchPolicy")
        if ca_bundle is None:
            expect("caBundle" not in cc, f"{kind}: caBundle must not be set here (injected at run time)")
        else:
            expect_eq(re.sub(r"\s", "", cc.get("caBundle", "")), ca_bundle, f"{kind} caBundle")
        annotation = dig(cfg["metadata"], "annotations", "cert-manager.io/inject-ca-from")
        expect_eq(annotation, inject_from, f"{kind} cert-manager.io/inject-ca-from")


def check_no_crd(objs: list[dict]) -> None:
    expect(not find(objs, "CustomResourceDefinition"), "the default install must not include the CRD")


def check_namespaces(objs: list[dict], namespace: str = NS) -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration",
                      "ValidatingWebhookConfiguration", "CustomResourceDefinition"}
    wrong = [f"{o['kind']}/{o['metadata']['name']}={o['metadata'].get('namespace')}" for o in objs
             if o["kind"] not in cluster_scoped and o["metadata"].get("name") != "event-receiver"
             and o["metadata"].get("namespace") not in (namespace, "e2e")]
    expect(not wrong, f"objects outside namespace {namespace}: {wrong}")


# ---------------------------------------------------------------- RBAC

def readme_rbac() -> dict[str, set[tuple[str, str, str]]]:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- rbac:begin -->(.*?)<!-- rbac:end -->", text, re.S)
    expect(m, "README.md has no <!-- rbac:begin --> ... <!-- rbac:end --> section")
    table: dict[str, set] = {"cluster": set(), "namespace": set()}
    rows = 0
    for line in m.group(1).splitlines():
        line = line.strip()
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) < 4 or cells[0].lower() == "scope" or set(cells[0]) <= set("-: "):
            continue
        scope = cells[0].lower()
        expect(scope in table, f"README RBAC row with unknown scope {cells[0]!r}")
        group = cells[1].strip("`").strip()
        group = "" if group in ('""', "''", "core") else group
        resource = cells[2].strip("`").strip()
        verbs = [v.strip().strip("`") for v in cells[3].split(",") if v.strip()]
        expect(verbs, f"README RBAC row without verbs: {line}")
        for verb in verbs:
            table[scope].add((group, resource, verb))
        rows += 1
    expect(rows, "README RBAC table has no rows")
    return table


# Which rules must be limited to which object names (create cannot be limited).
RESOURCE_NAMES = {
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"): NAME,
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"): NAME,
    ("coordination.k8s.io", "leases"): LEASE,
    ("", "secrets"): TLS_SECRET,
}


def granted(role: dict, kind: str) -> set[tuple[str, str, str]]:
    out = set()
    for i, rule in enumerate(role.get("rules") or []):
        where = f"{kind} rule {i}"
        expect(not rule.get("nonResourceURLs"), f"{where}: nonResourceURLs are not in the README table")
        for field in ("apiGroups", "resources", "verbs"):
            expect("*" not in rule.get(field, []), f"{where}: wildcard in {field}")
        names = rule.get("resourceNames")
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                want = RESOURCE_NAMES.get((g, r))
                for v in rule["verbs"]:
                    if v == "create":
                        expect(not names, f"{where}: create with resourceNames never matches; split the rule")
                    elif want is not None:
                        expect_eq(names, [want], f"{where}: resourceNames for {v} {g or 'core'}/{r}")
                    else:
                        expect(not names, f"{where}: unexpected resourceNames for {g or 'core'}/{r}")
                    out.add((g, r, v))
    return out


def check_rbac(objs: list[dict], namespace: str = NS) -> None:
    table = readme_rbac()
    expect_eq(sorted(o["metadata"]["name"] for o in find(objs, "ClusterRole")), [NAME], "ClusterRoles")
    expect_eq(sorted(f"{o['metadata'].get('namespace')}/{o['metadata']['name']}" for o in find(objs, "Role")),
              [f"{namespace}/{NAME}"], "Roles")
    for role_kind, scope in (("ClusterRole", "cluster"), ("Role", "namespace")):
        got = granted(one(objs, role_kind, NAME), role_kind)
        extra, missing = got - table[scope], table[scope] - got
        fmt = lambda s: ", ".join(f"{v} {g or 'core'}/{r}" for g, r, v in sorted(s))
        diff = ([f"extra: {fmt(extra)}"] if extra else []) + ([f"missing: {fmt(missing)}"] if missing else [])
        expect(not diff, f"{role_kind} differs from README ({scope} rows): " + "; ".join(diff))
    subject = [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}]
    crb = one(objs, "ClusterRoleBinding", NAME)
    expect_eq(crb["roleRef"], {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
              "ClusterRoleBinding roleRef")
    expect_eq(crb["subjects"], subject, "ClusterRoleBinding subjects")
    rb = one(objs, "RoleBinding", NAME)
    expect_eq(rb["metadata"].get("namespace"), namespace, "RoleBinding namespace")
    expect_eq(rb["roleRef"], {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
              "RoleBinding roleRef")
    expect_eq(rb["subjects"], subject, "RoleBinding subjects")
    sa = one(objs, "ServiceAccount", NAME)
    expect_eq(sa["metadata"].get("namespace"), namespace, "ServiceAccount namespace")


# ---------------------------------------------------------------- components

def check_cert_manager(objs: list[dict], namespace: str = NS) -> None:
    c = one(objs, "Deployment", NAME)["spec"]["template"]["spec"]["containers"][0]
    expect_eq(dig(env_map(c), "CANARY_NOTIFIER_CERT_MODE", "value"), "files", "CANARY_NOTIFIER_CERT_MODE")
    check_webhooks(objs, namespace, inject_from=f"{namespace}/{NAME}")
    cert = one(objs, "Certificate", NAME)
    expect_eq(cert["metadata"].get("namespace"), namespace, "Certificate namespace")
    expect_eq(cert["spec"].get("secretName"), TLS_SECRET, "Certificate secretName")
    expect_eq(sorted(cert["spec"].get("dnsNames") or []),
              [f"{NAME}.{namespace}.svc", f"{NAME}.{namespace}.svc.cluster.local"], "Certificate dnsNames")
    issuer = one(objs, "Issuer", cert["spec"]["issuerRef"]["name"])
    expect_eq(issuer["metadata"].get("namespace"), namespace, "Issuer namespace")
    expect("selfSigned" in issuer["spec"], "Issuer is not selfSigned")
    expect_eq(cert["spec"]["issuerRef"].get("kind", "Issuer"), "Issuer", "Certificate issuerRef.kind")


def check_prometheus(objs: list[dict], namespace: str = NS) -> None:
    sm = one(objs, "ServiceMonitor", NAME)
    expect_eq(sm["metadata"].get("namespace"), namespace, "ServiceMonitor namespace")
    expect_eq([(e.get("port"), e.get("path")) for e in sm["spec"]["endpoints"]], [("http-metrics", "/metrics")],
              "ServiceMonitor endpoints")
    svc_labels = dig(one(objs, "Service", NAME), "metadata", "labels") or {}
    for k, v in sm["spec"]["selector"]["matchLabels"].items():
        expect_eq(svc_labels.get(k), v, f"ServiceMonitor selector {k} matches the Service")
    rule = one(objs, "PrometheusRule", NAME)
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if r.get("alert") == "canary_rollback"]
    expect(len(alerts) == 1, "no canary_rollback alert")
    a = alerts[0]
    expect_eq(a.get("expr"), "flagger_canary_status > 1", "canary_rollback expr")
    expect_eq(a.get("for"), "1m", "canary_rollback for")
    expect_eq(a.get("labels"), {"severity": "warning"}, "canary_rollback labels")
    expect_eq(a.get("annotations"), {"summary": "Canary failed",
                                     "description": "Workload {{ $labels.name }} namespace {{ $labels.namespace }}"},
              "canary_rollback annotations")


def check_settings_component(objs: list[dict]) -> None:
    s = one(objs, "Secret", SETTINGS_SECRET)
    expect_eq(s["metadata"].get("namespace"), NS, "settings Secret namespace")
    data = {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}
    expect_eq(data.get("SLACK_URL"), SLACK_URL, "SLACK_URL from settings.env.example")
    check_deployment(objs, "self-managed", SETTINGS_SECRET, True)


def check_static_certs(objs: list[dict], certs: Path) -> None:
    s = one(objs, "Secret", TLS_SECRET)
    expect_eq(s["metadata"].get("namespace"), NS, "TLS Secret namespace")
    expect_eq(s.get("type"), "kubernetes.io/tls", "TLS Secret type")
    data = {k: re.sub(r"\s", "", v) for k, v in (s.get("data") or {}).items()}
    expect_eq(sorted(data), ["ca.crt", "tls.crt", "tls.key"], "TLS Secret keys")
    for f in data:
        expect_eq(base64.b64decode(data[f]), (certs / f).read_bytes(), f"TLS Secret {f} content")
    check_webhooks(objs, ca_bundle=data["ca.crt"])
    check_deployment(objs, "files", SETTINGS_SECRET, True)


def check_e2e(objs: list[dict]) -> None:
    one(objs, "CustomResourceDefinition")
    dep = one(objs, "Deployment", NAME)
    c = dep["spec"]["template"]["spec"]["containers"][0]
    expect_eq(c["image"], "ghcr.io/canary-notifier/canary-notifier:e2e", "e2e image")
    expect_eq(dig(env_map(c), "CANARY_NOTIFIER_EVENTS_FROM", "value"), "transitions",
              "CANARY_NOTIFIER_EVENTS_FROM")
    one(objs, "Deployment", "event-receiver")
    svc = one(objs, "Service", "event-receiver")
    # The good canary's event webhook must point at this Service.
    good = yaml.safe_load((ROOT / "tests/manifests/fixtures/canary-good.yaml").read_text())
    url = good["spec"]["analysis"]["webhooks"][0]["url"]
    host = f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc.cluster.local"
    expect(url.startswith(f"http://{host}/"), f"canary-good.yaml webhook {url} does not target {host}")


# ---------------------------------------------------------------- CRD and examples

def load_crd() -> dict:
    crd_needed()
    docs = load_docs(CRD_FILE.read_text())
    expect(len(docs) == 1, f"{CRD_FILE.relative_to(ROOT)}: expected one document, found {len(docs)}")
    return docs[0]


def check_crd_shape(crd: dict) -> None:
    expect_eq(crd.get("apiVersion"), "apiextensions.k8s.io/v1", "CRD apiVersion")
    expect_eq(crd.get("kind"), "CustomResourceDefinition", "CRD kind")
    expect_eq(crd["metadata"].get("name"), "canaries.flagger.app", "CRD name")
    spec = crd["spec"]
    expect_eq(spec.get("group"), "flagger.app", "CRD group")
    expect_eq(spec.get("scope"), "Namespaced", "CRD scope")
    expect_eq(dig(spec, "names", "kind"), "Canary", "CRD names.kind")
    expect_eq(dig(spec, "names", "plural"), "canaries", "CRD names.plural")
    v = [x for x in (spec.get("versions") or []) if x.get("name") == "v1beta1"]
    expect(len(v) == 1, "CRD has no v1beta1 version")
    expect(v[0].get("served") and v[0].get("storage"), "v1beta1 must be served and the storage version")
    # Flagger writes status through the subresource (and the e2e workflow patches it).
    expect("status" in (v[0].get("subresources") or {}), "v1beta1 has no status subresource")
    expect(dig(v[0], "schema", "openAPIV3Schema"), "v1beta1 has no openAPIV3Schema")


def to_json_schema(s, structural: bool = True):
    """OpenAPI v3 (Kubernetes flavour) to JSON Schema draft 4.

    Unknown fields are rejected where Kubernetes would prune them (kubectl validates
    strictly), unless x-kubernetes-preserve-unknown-fields allows them.
    """
    if isinstance(s, list):
        return [to_json_schema(x, structural) for x in s]
    if not isinstance(s, dict):
        return s
    out = {}
    for k, v in s.items():
        if k.startswith("x-kubernetes-") or k == "nullable":
            continue
        if k in ("properties", "patternProperties", "definitions"):
            out[k] = {name: to_json_schema(sub, structural) for name, sub in v.items()}
        elif k in ("items", "additionalProperties"):
            out[k] = to_json_schema(v, structural) if isinstance(v, (dict, list)) else v
        elif k in ("allOf", "anyOf", "oneOf", "not"):
            out[k] = to_json_schema(v, False)  # value validations, not structure
        else:
            out[k] = v
    if s.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out = {"allOf": [out, {"type": ["integer", "string"]}]} if out else {"type": ["integer", "string"]}
    if s.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else out["type"] + ["null"]
    if (structural and out.get("type") == "object" and "properties" in out
            and "additionalProperties" not in out and not s.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def canary_schema(crd: dict) -> dict:
    v = [x for x in crd["spec"]["versions"] if x["name"] == "v1beta1"][0]
    root = copy.deepcopy(v["schema"]["openAPIV3Schema"])
    # The API server always accepts these at the root, declared or not.
    props = root.setdefault("properties", {})
    props.setdefault("apiVersion", {"type": "string"})
    props.setdefault("kind", {"type": "string"})
    props.setdefault("metadata", {"type": "object"})
    schema = to_json_schema(root)
    jsonschema.Draft4Validator.check_schema(schema)
    return schema


def schema_errors(schema: dict, canary: dict) -> list[str]:
    errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(canary), key=lambda e: [str(p) for p in e.path])
    return [f"{'.'.join(str(p) for p in e.path) or '(root)'}: {e.message}" for e in errors]


def apply_patch(obj: dict, patch: list[dict]) -> dict:
    """Applies the add/replace/remove operations of an admission JSON Patch."""
    obj = copy.deepcopy(obj)
    for op in patch:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = obj
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        if op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if op["op"] == "add":
                    parent.insert(index, op["value"])
                else:
                    parent[index] = op["value"]
            else:
                parent[last] = op["value"]
        elif op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        else:
            raise Failed(f"unsupported patch op {op['op']}")
    return obj


def admission_decisions(files: list[Path]) -> dict[tuple[str, int], dict]:
    """`canary-notifier check --output json`: what the webhooks decide for each canary."""
    cmd = operator_cmd() + ["check", "--output", "json"] + [str(f.relative_to(ROOT)) for f in files]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    expect(p.returncode in (0, 1), f"`{' '.join(cmd)}` exited {p.returncode}: {p.stderr.strip()[-400:]}")
    return {(d["file"], d["document"]): d for d in json.loads(p.stdout)}


def check_canary(schema: dict, canary: dict, decision: dict) -> str | None:
    """The API server checks the schema after mutating admission and before validating
    admission: what admission allows must pass the schema once defaulted, and what it
    denies should reach the validating webhook, whose message names the fix."""
    patched = apply_patch(canary, decision.get("patch") or [])
    errors = schema_errors(schema, patched)
    if decision["allowed"]:
        expect(not errors, "admission allows it but the CRD schema rejects it: " + "; ".join(errors[:5]))
        return None
    return "; ".join(errors) if errors else None


# ---------------------------------------------------------------- Helm

def helm_render(tmp: Path, release: str, sets: list[str], namespace: str | None = None) -> list[dict]:
    args = []
    for s in sets:
        args += ["--set", s]
    if namespace:
        args += ["--namespace", namespace]
    run([helm(), "lint", "--strict", str(CHART)] + args)
    text = run([helm(), "template", release, str(CHART)] + args)
    return load_docs(text)


def helm_checks(checks: Checks, tmp: Path) -> None:
    seeds = {
        "seed slack": ([f"slack.url={SLACK_URL}", "slack.channel=general", "slack.user=flagger"],
                       {"SLACK_URL": SLACK_URL}),
        "seed msteams": ([f"msteams.url={TEAMS_URL}"], {"MSTEAMS_URL": TEAMS_URL}),
        "seed event webhook": ([f"eventWebhook={EVENT_URL}"], {"EVENT_WEBHOOK_URL": EVENT_URL}),
    }
    all_urls = [SLACK_URL, TEAMS_URL, EVENT_URL]

    def seed(sets, expected):
        objs = helm_render(tmp, "canary-notifier", sets, NS)
        secret = one(objs, "Secret", SETTINGS_SECRET)
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        data.update(secret.get("stringData") or {})
        expect_eq(data, expected, "settings Secret data")
        for dep in find(objs, "Deployment"):
            dumped = json.dumps(dep)
            leaked = [u for u in all_urls if u in dumped]
            expect(not leaked, f"Deployment {dep['metadata']['name']} contains {leaked}")
        check_deployment(objs, "self-managed", SETTINGS_SECRET, False)
        c = one(objs, "Deployment", NAME)["spec"]["template"]["spec"]["containers"][0]
        env = env_map(c)
        if "slack.channel=general" in sets:
            expect_eq(dig(env, "CANARY_NOTIFIER_SLACK_CHANNEL", "value"), "general", "slack channel env")
            expect_eq(dig(env, "CANARY_NOTIFIER_SLACK_USER", "value"), "flagger", "slack user env")
        check_service_pdb(objs)
        check_webhooks(objs)
        check_rbac(objs)
        check_no_crd(objs)
        return objs

    for name, (sets, expected) in seeds.items():
        objs = checks.run(f"helm {name}: lint, template, Secret carries the URL, pod spec does not", seed, sets,
                          expected)
        if objs:
            checks.run(f"helm {name}: kubernetes-validate --strict", kubernetes_validate, objs, tmp, f"helm-{name}")

    def existing_secret():
        objs = helm_render(tmp, "canary-notifier", ["existingSecret=my-settings", f"slack.url={SLACK_URL}"], NS)
        expect(not find(objs, "Secret"), "no Secret may be rendered with existingSecret")
        expect(SLACK_URL not in json.dumps(objs), "slack.url leaked into the rendered manifests")
        check_deployment(objs, "self-managed", "my-settings", False)
        return objs

    def cert_manager():
        objs = helm_render(tmp, "canary-notifier", ["certificates.mode=cert-manager"], NS)
        check_deployment(objs, "files", SETTINGS_SECRET, False)
        check_cert_manager(objs)
        return objs

    def monitoring():
        objs = helm_render(tmp, "canary-notifier", ["prometheusRule.enabled=true", "serviceMonitor.enabled=true"], NS)
        check_prometheus(objs)
        return objs

    def other_namespace():
        objs = helm_render(tmp, "canary-notifier", [f"slack.url={SLACK_URL}", "slack.channel=ops",
                                                    "certificates.mode=cert-manager"], "flagger-system")
        check_webhooks(objs, "flagger-system", inject_from=f"flagger-system/{NAME}")
        check_service_pdb(objs, "flagger-system")
        check_rbac(objs, "flagger-system")
        check_cert_manager(objs, "flagger-system")
        check_namespaces(objs, "flagger-system")
        return objs

    def defaults_only():
        objs = helm_render(tmp, "canary-notifier", [], NS)
        secret = one(objs, "Secret", SETTINGS_SECRET)
        expect(not secret.get("data"), "the settings Secret must be empty without values")
        expect(not find(objs, "ServiceMonitor") and not find(objs, "PrometheusRule") and not find(objs, "Certificate"),
               "optional objects rendered by default")
        check_no_crd(objs)
        return objs

    def single_replica():
        objs = helm_render(tmp, "canary-notifier", ["replicas=1", "image.tag=0.2.0",
                                                    "image.repository=registry.example/cn"], NS)
        expect(not find(objs, "PodDisruptionBudget"), "a PDB with minAvailable 1 would block drains of 1 replica")
        c = one(objs, "Deployment", NAME)["spec"]["template"]["spec"]["containers"][0]
        expect_eq(c["image"], "registry.example/cn:0.2.0", "image override")
        return objs

    def crd_create():
        expect(CHART_CRD_FILE.exists(),
               f"{CHART_CRD_FILE.relative_to(ROOT)} is missing; {CRD_HINT.format(CHART_CRD_FILE.relative_to(ROOT))}")
        objs = helm_render(tmp, "canary-notifier", ["crd.create=true"], NS)
        crd = one(objs, "CustomResourceDefinition", "canaries.flagger.app")
        expect_eq(dig(crd["metadata"], "annotations", "helm.sh/resource-policy"), "keep",
                  "CRD helm.sh/resource-policy")
        return objs

    def bad_mode():
        try:
            run([helm(), "template", "canary-notifier", str(CHART), "--set", "certificates.mode=vault"])
        except Failed as e:
            expect("certificates.mode" in str(e), f"unclear error: {e}")
            return
        raise Failed("certificates.mode=vault was accepted")

    for name, fn in (("existingSecret", existing_secret), ("certificates.mode=cert-manager", cert_manager),
                     ("prometheusRule + serviceMonitor", monitoring), ("release namespace flagger-system", other_namespace),
                     ("defaults", defaults_only), ("replicas=1 + image override", single_replica),
                     ("crd.create=true", crd_create)):
        objs = checks.run(f"helm {name}: lint, template, assertions", fn)
        if objs:
            checks.run(f"helm {name}: kubernetes-validate --strict", kubernetes_validate, objs, tmp, f"helm-{name}")
    checks.run("helm certificates.mode=vault is refused with a clear message", bad_mode)


# ---------------------------------------------------------------- main

def main() -> int:
    checks = Checks()
    with tempfile.TemporaryDirectory(prefix="canary-notifier-manifests-") as t:
        tmp = Path(t)

        checks.section("1-2, 5-6. kustomize builds, kubernetes-validate --strict, RBAC, fields")
        components = MANIFESTS / "components"
        default = checks.run("build manifests/default", kustomize, MANIFESTS / "default")
        if default:
            checks.run("default: kubernetes-validate --strict", kubernetes_validate, default, tmp, "default")
            checks.run("default: no CRD, no settings Secret (never overwrites the user's)",
                       lambda: (check_no_crd(default),
                                expect(not find(default, "Secret"), "default must not create Secrets")))
            checks.run("default: everything in namespace canary-notifier", check_namespaces, default)
            checks.run("default: RBAC grants exactly the README table", check_rbac, default)
            checks.run("default: Deployment (security context, probes, preStop, env, volumes)", check_deployment,
                       default, "self-managed", SETTINGS_SECRET, True)
            checks.run("default: Service and PodDisruptionBudget", check_service_pdb, default)
            checks.run("default: webhook configurations", check_webhooks, default)

        result = checks.run("build manifests/static-certs (certificates generated in a temporary copy)",
                            static_certs_build, tmp)
        if result:
            objs, certs = result
            checks.run("static-certs: kubernetes-validate --strict", kubernetes_validate, objs, tmp, "static-certs")
            checks.run("static-certs: TLS Secret, caBundle from ca.crt, CERT_MODE=files", check_static_certs,
                       objs, certs)
            checks.run("static-certs: RBAC grants exactly the README table", check_rbac, objs)

        combos = {
            "crd": ([components / "crd"], lambda o: one(o, "CustomResourceDefinition", "canaries.flagger.app")),
            "cert-manager": ([components / "cert-manager"], check_cert_manager),
            "prometheus": ([components / "prometheus"], check_prometheus),
            "settings": ([settings_component_copy(tmp)], check_settings_component),
            "all components": ([components / "crd", components / "cert-manager", components / "prometheus",
                                settings_component_copy(tmp)], None),
        }
        for name, (comps, assertion) in combos.items():
            def build(comps=comps, name=name):
                if components / "crd" in comps:
                    crd_needed()
                return kustomize(overlay(tmp, name.replace(" ", "-"), comps))
            objs = checks.run(f"build default + {name}", build)
            if objs:
                checks.run(f"default + {name}: kubernetes-validate --strict", kubernetes_validate, objs, tmp, name)
                checks.run(f"default + {name}: RBAC unchanged", check_rbac, objs)
                if assertion:
                    checks.run(f"default + {name}: assertions", assertion, objs)

        def e2e_build():
            crd_needed()
            return kustomize(MANIFESTS / "e2e")
        objs = checks.run("build manifests/e2e", e2e_build)
        if objs:
            checks.run("e2e: kubernetes-validate --strict", kubernetes_validate, objs, tmp, "e2e")
            checks.run("e2e: CRD, image tag, events from transitions, receiver", check_e2e, objs)

        checks.section("3. Canary CRD and examples")
        crd = checks.run(f"{CRD_FILE.relative_to(ROOT)} exists and is one document", load_crd)
        if crd:
            checks.run("CRD: kubernetes-validate --strict", kubernetes_validate, [crd], tmp, "crd")
            checks.run("CRD: canaries.flagger.app v1beta1, served, storage, status subresource", check_crd_shape, crd)
            schema = checks.run("CRD: v1beta1 openAPIV3Schema translates to a valid JSON Schema", canary_schema, crd)
            sources = [ROOT / "examples" / "canaries.yaml",
                       ROOT / "tests/manifests/fixtures/canary-good.yaml",
                       ROOT / "tests/manifests/fixtures/canary-bad.yaml"]
            decisions = checks.run("admission decisions for the example canaries (canary-notifier check)",
                                   admission_decisions, sources)
            if schema and decisions:
                for src in sources:
                    rel = str(src.relative_to(ROOT))
                    for i, doc in enumerate(yaml.safe_load_all(src.read_text()), 1):
                        if not doc or doc.get("kind") != "Canary":
                            continue
                        m = doc.get("metadata") or {}
                        label = f"{rel}#{i} Canary {m.get('namespace')}/{m.get('name')}"
                        decision = decisions.get((rel, i))
                        if decision is None:
                            checks.run(f"CRD schema: {label}", expect, False,
                                       "`canary-notifier check` did not report this canary")
                            continue
                        if src.name == "canary-bad.yaml":
                            # e2e asserts the validating webhook's message: the schema must not
                            # reject this canary first.
                            def bad_reaches_webhook(doc=doc, decision=decision):
                                expect(not decision["allowed"], "admission allows it")
                                early = check_canary(schema, doc, decision)
                                expect(early is None, f"the CRD schema rejects it before the webhook: {early}")
                            checks.run(f"CRD schema lets {label} (denied) reach the validating webhook",
                                       bad_reaches_webhook)
                            continue
                        if decision["allowed"]:
                            checks.run(f"CRD schema accepts {label} (allowed by admission, after its defaults)",
                                       check_canary, schema, doc, decision)
                            continue
                        # Denied on purpose: nothing to pass, but say who would answer first.
                        early = check_canary(schema, doc, decision)
                        print(f"INFO {label} is denied by admission; " + (
                            f"the API server's schema check answers before the validating webhook: {early}"
                            if early else "the schema lets it through to the validating webhook"))

        def chart_copy_identical():
            crd_needed()
            expect(CHART_CRD_FILE.exists(), f"{CHART_CRD_FILE.relative_to(ROOT)} is missing; "
                   f"{CRD_HINT.format(CHART_CRD_FILE.relative_to(ROOT))}")
            expect(CHART_CRD_FILE.read_bytes() == CRD_FILE.read_bytes(),
                   f"{CHART_CRD_FILE.relative_to(ROOT)} differs from {CRD_FILE.relative_to(ROOT)}; regenerate both")
        checks.run("Helm chart files/crd.yaml is identical to components/crd/crd.yaml", chart_copy_identical)

        checks.section("4. Helm chart")
        helm_checks(checks, tmp)

    print(f"\n{checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
