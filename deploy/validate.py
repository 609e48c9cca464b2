#!/usr/bin/env python3
"""Validates the Kubernetes manifests under deploy/kubernetes, offline.

    python deploy/validate.py              # the manifests of this repository
    python deploy/validate.py --self-test  # also proves that broken manifests are refused

Needs PyPI's kubernetes-validate (it ships the Kubernetes JSON schemas, so nothing is
downloaded); scripts/test.sh installs it into the test venv and runs this before the cargo
steps. Every check that fails is printed, and the exit code is 1 when any did.

What is checked:
- every document of every *.yaml file (multi-document files included) against the schemas of
  each version in KUBERNETES_VERSIONS, strictly (unknown fields are errors); a kind or
  apiVersion without a schema is an error too (the library's own CLI only warns);
- YAML that loads at all, with no key given twice in one mapping (PyYAML silently keeps the last);
- each directory's kustomization.yaml lists exactly the manifest files beside it (and every
  directory holding manifests has one), and every file it lists exists;
- references between objects: selectors match their pod templates, Services select some pods
  and their named target ports exist, probes name existing ports, ConfigMaps, Secrets and
  PersistentVolumeClaims referred to exist, HPAs and PDBs point at a workload;
- the ConfigMap's core.toml and edge.toml parse as TOML and use only keys that
  config/core.example.toml and config/edge.example.toml document (both servers refuse unknown
  keys at start).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

try:
    import kubernetes_validate
    from kubernetes_validate import utils as kv
except ImportError:  # pragma: no cover - the message is the point
    sys.exit(
        "deploy/validate.py: the Python package kubernetes-validate is missing "
        "(scripts/test.sh installs it into its venv: pip install kubernetes-validate)"
    )

# The oldest Kubernetes the manifests promise to run on (gRPC probes are GA since 1.27,
# autoscaling/v2 since 1.23, policy/v1 since 1.21) and the newest the package ships.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}
# Tables whose next level is a name of the operator's choosing, not a key.
FREE_TABLES = ("llm.providers.",)
FREE_ARRAYS = ("llm.models", "llm.agents")


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


class Checker:
    def __init__(self, root: Path, quiet: bool = False):
        self.root = root
        self.quiet = quiet
        self.errors: list[str] = []
        # (file, document) for every Kubernetes object found.
        self.objects: list[tuple[Path, dict]] = []

    def error(self, message: str) -> None:
        self.errors.append(message)
        print(f"ERROR {message}", file=sys.stderr)

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root.parent.parent))
        except ValueError:
            return str(path)

    # -- files and kustomizations -------------------------------------------------------

    def run(self) -> bool:
        if not self.root.is_dir():
            self.error(f"{self.root} does not exist")
            return False
        files = sorted(
            p for p in self.root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
        )
        if not files:
            self.error(f"no manifests under {self.rel(self.root)}")
        for path in files:
            if path.name in ("kustomization.yaml", "kustomization.yml"):
                continue
            self.load(path)
        self.kustomizations(files)
        self.references()
        self.settings_files()
        return not self.errors

    def load(self, path: Path) -> None:
        try:
            docs = list(yaml.load_all(path.read_text(), Loader=UniqueKeyLoader))
        except yaml.YAMLError as err:
            self.error(f"{self.rel(path)}: not valid YAML: {err}")
            return
        docs = [d for d in docs if d is not None]
        if not docs:
            self.error(f"{self.rel(path)}: no Kubernetes object in it")
        for index, doc in enumerate(docs):
            where = f"{self.rel(path)} (document {index + 1})"
            if not isinstance(doc, dict) or not all(k in doc for k in ("apiVersion", "kind")):
                self.error(f"{where}: not a Kubernetes object (apiVersion and kind needed)")
                continue
            name = (doc.get("metadata") or {}).get("name")
            if not name:
                self.error(f"{where}: {doc['kind']} without metadata.name")
                continue
            where = f"{self.rel(path)}: {doc['kind']}/{name}"
            for version in KUBERNETES_VERSIONS:
                try:
                    kv.validate(doc, version, strict=True)
                except kv.ValidationError as err:
                    field = ".".join(str(p) for p in err.path) or "(top level)"
                    self.error(f"{where}: Kubernetes {version}, strict: {field}: {err.message}")
                except kv.SchemaNotFoundError as err:
                    self.error(f"{where}: Kubernetes {version}: {err.message}")
                except kv.VersionNotSupportedError:
                    self.error(
                        f"kubernetes-validate {kubernetes_validate.__version__} has no schemas "
                        f"for Kubernetes {version}"
                    )
            self.objects.append((path, doc))
            if not self.quiet:
                print(f"ok    {where} ({', '.join(KUBERNETES_VERSIONS)}, strict)")

    def kustomizations(self, files: list[Path]) -> None:
        manifest_dirs = {p.parent for p in files if not p.name.startswith("kustomization.")}
        for directory in sorted(manifest_dirs | {self.root}):
            kfile = directory / "kustomization.yaml"
            if not kfile.is_file():
                self.error(f"{self.rel(directory)} holds manifests but no kustomization.yaml")
                continue
            try:
                kust = yaml.load(kfile.read_text(), Loader=UniqueKeyLoader) or {}
            except yaml.YAMLError as err:
                self.error(f"{self.rel(kfile)}: not valid YAML: {err}")
                continue
            if kust.get("kind") != "Kustomization" or not str(
                kust.get("apiVersion", "")
            ).startswith("kustomize.config.k8s.io/"):
                self.error(f"{self.rel(kfile)}: not a kustomize.config.k8s.io Kustomization")
            listed = kust.get("resources") or []
            if not isinstance(listed, list):
                self.error(f"{self.rel(kfile)}: resources is not a list")
                continue
            listed_files = set()
            for entry in listed:
                target = (directory / str(entry)).resolve()
                if target.is_file():
                    listed_files.add(target)
                elif target.is_dir():
                    if not (target / "kustomization.yaml").is_file():
                        self.error(f"{self.rel(kfile)}: lists {entry}, a folder without kustomization.yaml")
                else:
                    self.error(f"{self.rel(kfile)}: lists {entry}, which does not exist")
            if len(listed) != len(set(map(str, listed))):
                self.error(f"{self.rel(kfile)}: lists a resource twice")
            present = {
                p.resolve()
                for p in files
                if p.parent == directory and not p.name.startswith("kustomization.")
            }
            for missing in sorted(present - listed_files):
                self.error(f"{self.rel(kfile)}: does not list {missing.name}")
            if not self.quiet:
                print(f"ok    {self.rel(kfile)} lists {len(listed)} resources")

    # -- references between objects ------------------------------------------------------

    def named(self, kind: str) -> dict[str, dict]:
        return {d["metadata"]["name"]: d for _, d in self.objects if d["kind"] == kind}

    @staticmethod
    def pod_spec(doc: dict) -> dict | None:
        if doc["kind"] in WORKLOADS:
            return ((doc.get("spec") or {}).get("template") or {}).get("spec")
        if doc["kind"] == "Pod":
            return doc.get("spec")
        return None

    @staticmethod
    def pod_labels(doc: dict) -> dict:
        return (((doc.get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
            "labels"
        ) or {}

    def references(self) -> None:
        configmaps = self.named("ConfigMap")
        secrets = self.named("Secret")
        claims = self.named("PersistentVolumeClaim")
        workloads = [d for _, d in self.objects if d["kind"] in WORKLOADS]
        for path, doc in self.objects:
            kind, name = doc["kind"], doc["metadata"]["name"]
            where = f"{self.rel(path)}: {kind}/{name}"
            spec = doc.get("spec") or {}
            if kind in WORKLOADS and kind != "Job":
                selector = (spec.get("selector") or {}).get("matchLabels") or {}
                labels = self.pod_labels(doc)
                if not selector or any(labels.get(k) != v for k, v in selector.items()):
                    self.error(f"{where}: selector {selector} does not match the pod labels {labels}")
            pod = self.pod_spec(doc)
            if pod:
                claim_templates = {
                    (t.get("metadata") or {}).get("name")
                    for t in spec.get("volumeClaimTemplates") or []
                }
                self.check_pod(where, pod, configmaps, secrets, claims, claim_templates)
            if kind == "Service" and spec.get("selector"):
                selected = [
                    w
                    for w in workloads
                    if all(self.pod_labels(w).get(k) == v for k, v in spec["selector"].items())
                ]
                if not selected:
                    self.error(f"{where}: selector {spec['selector']} matches no pod template")
                ports = {
                    p.get("name")
                    for w in selected
                    for c in (self.pod_spec(w) or {}).get("containers") or []
                    for p in c.get("ports") or []
                }
                for port in spec.get("ports") or []:
                    target = port.get("targetPort")
                    if isinstance(target, str) and target not in ports:
                        self.error(f"{where}: targetPort {target!r} is no container port of the pods it selects")
            if kind == "StatefulSet" and spec.get("serviceName") not in self.named("Service"):
                self.error(f"{where}: serviceName {spec.get('serviceName')!r} is no Service here")
            if kind == "HorizontalPodAutoscaler":
                ref = spec.get("scaleTargetRef") or {}
                if not any(
                    w["kind"] == ref.get("kind") and w["metadata"]["name"] == ref.get("name")
                    for w in workloads
                ):
                    self.error(f"{where}: scaleTargetRef {ref.get('kind')}/{ref.get('name')} does not exist")
                if spec.get("minReplicas", 1) > spec.get("maxReplicas", 0):
                    self.error(f"{where}: minReplicas above maxReplicas")
            if kind == "PodDisruptionBudget":
                selector = (spec.get("selector") or {}).get("matchLabels") or {}
                if not any(
                    all(self.pod_labels(w).get(k) == v for k, v in selector.items())
                    for w in workloads
                    if w["kind"] != "Job"
                ):
                    self.error(f"{where}: selector {selector} matches no workload")

    def check_pod(self, where, pod, configmaps, secrets, claims, claim_templates) -> None:
        volumes = {v.get("name"): v for v in pod.get("volumes") or []}
        for volume in volumes.values():
            if "configMap" in volume:
                ref = volume["configMap"]
                cm = configmaps.get(ref.get("name"))
                if cm is None and not ref.get("optional"):
                    self.error(f"{where}: volume {volume['name']}: ConfigMap {ref.get('name')!r} does not exist")
                for item in ref.get("items") or []:
                    if cm is not None and item.get("key") not in (cm.get("data") or {}):
                        self.error(f"{where}: ConfigMap {ref.get('name')} has no key {item.get('key')!r}")
            if "secret" in volume:
                ref = volume["secret"]
                if ref.get("secretName") not in secrets and not ref.get("optional"):
                    self.error(f"{where}: Secret {ref.get('secretName')!r} does not exist")
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"].get("claimName")
                if claim not in claims:
                    self.error(f"{where}: PersistentVolumeClaim {claim!r} does not exist")
        for container in (pod.get("initContainers") or []) + (pod.get("containers") or []):
            cwhere = f"{where}: container {container.get('name')}"
            ports = {p.get("name") for p in container.get("ports") or []}
            for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = container.get(probe_name) or {}
                for handler in ("httpGet", "tcpSocket", "grpc"):
                    port = (probe.get(handler) or {}).get("port")
                    if isinstance(port, str) and port not in ports:
                        self.error(f"{cwhere}: {probe_name} names port {port!r}, which it does not have")
            for mount in container.get("volumeMounts") or []:
                if mount.get("name") not in volumes and mount.get("name") not in claim_templates:
                    self.error(f"{cwhere}: mounts volume {mount.get('name')!r}, which the pod does not have")
            for source in container.get("envFrom") or []:
                for key, known in (("secretRef", secrets), ("configMapRef", configmaps)):
                    ref = source.get(key)
                    if ref and ref.get("name") not in known and not ref.get("optional"):
                        self.error(f"{cwhere}: envFrom {key} {ref.get('name')!r} does not exist")
            for env in container.get("env") or []:
                value_from = env.get("valueFrom") or {}
                for key, known in (("secretKeyRef", secrets), ("configMapKeyRef", configmaps)):
                    ref = value_from.get(key)
                    if not ref or ref.get("optional"):
                        continue
                    obj = known.get(ref.get("name"))
                    if obj is None:
                        self.error(f"{cwhere}: env {env.get('name')}: {ref.get('name')!r} does not exist")
                        continue
                    data = {**(obj.get("data") or {}), **(obj.get("stringData") or {})}
                    if ref.get("key") not in data:
                        self.error(f"{cwhere}: env {env.get('name')}: {ref.get('name')} has no key {ref.get('key')!r}")

    # -- the servers' settings files -----------------------------------------------------

    def settings_files(self) -> None:
        for name, example in (
            ("core.toml", ROOT / "config" / "core.example.toml"),
            ("edge.toml", ROOT / "config" / "edge.example.toml"),
        ):
            documented = documented_keys(example)
            found = False
            for path, doc in self.objects:
                if doc["kind"] != "ConfigMap" or name not in (doc.get("data") or {}):
                    continue
                found = True
                where = f"{self.rel(path)}: ConfigMap/{doc['metadata']['name']} {name}"
                try:
                    settings = tomllib.loads(doc["data"][name])
                except tomllib.TOMLDecodeError as err:
                    self.error(f"{where}: not valid TOML: {err}")
                    continue
                for key in sorted(flatten(settings)):
                    if key not in documented and not key.startswith(FREE_TABLES) and not any(
                        key == a or key.startswith(a + ".") for a in FREE_ARRAYS
                    ):
                        self.error(f"{where}: {key} is not a setting ({example.relative_to(ROOT)} has no such key)")
            if not found:
                self.error(f"no ConfigMap carries {name}")


def flatten(table: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            keys |= flatten(value, dotted + ".")
        else:
            keys.add(dotted)
    return keys


def documented_keys(example: Path) -> set[str]:
    """Every dotted key an example config names, set or commented out (`# key = ...`)."""
    keys, table = set(), ""
    header = re.compile(r"^#?\s*\[\[?([a-z0-9_.]+)\]\]?\s*(#.*)?$")
    assignment = re.compile(r"^#?\s*([a-z0-9_]+)\s*=")
    for line in example.read_text().splitlines():
        line = line.strip()
        if m := header.match(line):
            table = m.group(1) + "."
        elif m := assignment.match(line):
            keys.add(table + m.group(1))
    return keys


def self_test() -> bool:
    """Breaks a copy of the manifests in known ways; each must be refused."""
    breakages = {
        "an unknown field (strict)": ("edge-deployment.yaml", "  replicas: 2\n", "  replicas: 2\n  replica: 2\n"),
        "a wrong type": ("core-service.yaml", "port: 50051\n", "port: fifty\n"),
        "a kind without a schema": ("core-pdb.yaml", "kind: PodDisruptionBudget", "kind: PodDisruptionBudgt"),
        "a key given twice": ("edge-service.yaml", "  type: ClusterIP\n", "  type: ClusterIP\n  type: NodePort\n"),
        "a manifest kustomization.yaml does not list": ("kustomization.yaml", "  - migrate-job.yaml\n", ""),
        "a probe on a port the container lacks": ("edge-deployment.yaml", "path: /readyz\n              port: http", "path: /readyz\n              port: web"),
        "a setting the server does not know": ("configmap.yaml", "core_channels = 4", "core_channels = 4\n    core_chanels = 4"),
        "a Secret nobody defined": ("migrate-job.yaml", "name: chat-secrets", "name: chat-secret"),
    }
    ok = True
    for what, (file, old, new) in breakages.items():
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "deploy" / "kubernetes"
            shutil.copytree(MANIFESTS, copy)
            target = copy / file
            text = target.read_text()
            if old not in text:
                print(f"self-test: {file} no longer contains {old!r}; update the self-test", file=sys.stderr)
                ok = False
                continue
            target.write_text(text.replace(old, new, 1))
            result = subprocess.run(
                [sys.executable, __file__, "--quiet", "--root", str(copy)],
                capture_output=True,
                text=True,
            )
            if result.returncode == 0:
                print(f"self-test: FAILED to refuse {what} ({file})", file=sys.stderr)
                ok = False
            else:
                first = result.stderr.strip().splitlines()[0] if result.stderr.strip() else ""
                print(f"self-test: refuses {what}: {first}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=MANIFESTS, help="the manifests' folder")
    parser.add_argument("--quiet", action="store_true", help="print failures only")
    parser.add_argument("--self-test", action="store_true", help="also check that broken copies fail")
    args = parser.parse_args()
    checker = Checker(args.root.resolve(), quiet=args.quiet)
    ok = checker.run()
    if ok:
        print(
            f"deploy/validate.py: {len(checker.objects)} objects valid against Kubernetes "
            f"{', '.join(KUBERNETES_VERSIONS)} (kubernetes-validate {kubernetes_validate.__version__}, strict)"
        )
    if not ok:
        print(f"deploy/validate.py: {len(checker.errors)} problem(s) in {args.root}", file=sys.stderr)
    if ok and args.self_test:
        ok = self_test()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
