#!/usr/bin/env python3
"""Checks the deployment files with the tools made for them, and against the binary.

  target/tools-venv/bin/python tests/deploy-check.py target/debug/spectra-server

- deploy/docker/Dockerfile: hadolint (every finding fails); its build stage's COPY sources exist,
  are not excluded by .dockerignore, and are a workspace cargo resolves with the locked
  dependencies and that has the binaries the image installs.
- deploy/docker/compose.yaml: the Compose Specification's JSON schema (check-jsonschema's
  vendored copy); every node has the seccomp profile (an existing file), `memlock: -1`, and
  the profiles are `single` and `cluster`.
- deploy/kubernetes/*.yaml: Kubernetes' OpenAPI schemas, strict (kubernetes-validate, offline);
  the StatefulSet's grace period covers SHUTDOWN_TIMEOUT_MS, its seccomp profile is Localhost
  and the installer writes the file it names.
- Every environment variable the Dockerfile, compose file and manifests set is one the binary's
  --help lists.
Each validator is also fed a broken file, which it must refuse (so a validator that checks
nothing cannot pass here).
"""
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
DOCKER = os.path.join(ROOT, "deploy", "docker")
KUBE = os.path.join(ROOT, "deploy", "kubernetes")
failures = []


def fail(msg):
    failures.append(msg)
    print(f"FAIL {msg}")


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, **kw)


def refuses(argv, what):
    """A validator must refuse a broken input."""
    r = run(argv)
    if r.returncode == 0:
        fail(f"{what}: the validator accepted a broken file")


def tool(name):
    return os.path.join(BIN, name)


def validate(argv, files, bad_name, bad_text, what):
    """Runs a validator (`argv` + file names) on `files`, which it must accept, and on a broken
    file (`bad_text`), which it must refuse."""
    r = run([*argv, *files])
    if r.returncode != 0:
        fail(f"{what}: {r.stdout}{r.stderr}")
    with tempfile.TemporaryDirectory() as tmp:
        bad = os.path.join(tmp, bad_name)
        open(bad, "w").write(bad_text)
        refuses([*argv, bad], what)


# --- the binary's settings --------------------------------------------------------------------
help_text = run([sys.argv[1], "--help"]).stdout
known = set(re.findall(r"\[env: ([A-Z0-9_]+)[=\]]", help_text))
if "AUTH_KEY" not in known or "LOG_FORMAT" not in known:
    fail(f"--help lists no settings: {sorted(known)}")


def settings(names, where):
    for n in names:
        if n not in known:
            fail(f"{where} sets {n}, which --help does not list")


# --- Dockerfile -------------------------------------------------------------------------------
dockerfile = os.path.join(DOCKER, "Dockerfile")
validate([tool("hadolint"), "--no-color"], [dockerfile], "Dockerfile",
         "FROM debian:latest\nRUN apt-get install curl\nCMD spectra-server\n", "hadolint")

text = open(dockerfile).read()
logical = re.sub(r"\\\n", " ", text)
stages = logical.split("\nFROM ")
build = stages[1] if len(stages) > 2 else ""
copies = [line.split()[1:-1] for line in build.splitlines() if line.startswith("COPY ") and "--from" not in line]
sources = [s for c in copies for s in c]
ignored = [l.strip() for l in open(os.path.join(ROOT, ".dockerignore")) if l.strip() and not l.startswith("#")]
for s in sources:
    if not os.path.exists(os.path.join(ROOT, s)):
        fail(f"Dockerfile copies {s}, which does not exist")
    if any(fnmatch.fnmatch(s, pat) for pat in ignored):
        fail(f"Dockerfile copies {s}, which .dockerignore excludes")
with tempfile.TemporaryDirectory() as ctx:
    for s in sources:
        src = os.path.join(ROOT, s)
        (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, os.path.join(ctx, s))
    r = run(["cargo", "metadata", "--locked", "--format-version", "1"], cwd=ctx)
    if r.returncode != 0:
        fail(f"the Dockerfile's build context is not a workspace cargo resolves: {r.stderr[-2000:]}")
    else:
        meta = json.loads(r.stdout)
        members = [p for p in meta["packages"] if p["id"] in meta["workspace_members"]]
        # cargo build parses every declared target (metadata alone skips missing ones): asked
        # for a binary that does not exist, it must get as far as saying so.
        probe = run(["cargo", "build", "--locked", "--bin", "no-such-binary"], cwd=ctx)
        if "no bin target named `no-such-binary`" not in probe.stderr:
            fail(f"cargo build cannot parse the Dockerfile's build context: {probe.stderr[-1500:]}")
        bins = {t["name"] for p in members for t in p["targets"] if "bin" in t["kind"]}
        for b in re.findall(r"--bin (\S+)", build):
            if b not in bins:
                fail(f"the Dockerfile builds --bin {b}, which the workspace does not have")
settings(re.findall(r"(?:ENV|\\|\s)\s*([A-Z][A-Z0-9_]+)=", re.search(r"\nENV (.*?)\n(?!\s)", logical + "\n", re.S).group(0)), "Dockerfile")
if not re.search(r'HEALTHCHECK .*CMD \["spectra-server", "--health-check"\]', logical):
    fail("the Dockerfile's HEALTHCHECK is not `spectra-server --health-check`")
if not re.search(r"\nUSER 10001:10001\n", text):
    fail("the runtime stage does not run as the unprivileged user")

# --- compose ----------------------------------------------------------------------------------
compose = os.path.join(DOCKER, "compose.yaml")
validate([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec"], [compose], "compose.yaml",
         "services:\n  a:\n    image: x\n    ulimits:\n      memlock: lots\n    secruity_opt: []\n",
         "compose schema")
doc = yaml.safe_load(open(compose))
profiles = set()
for name, svc in doc["services"].items():
    profiles.update(svc.get("profiles", []))
    env = svc.get("environment", {})
    settings(env.keys() if isinstance(env, dict) else [e.split("=")[0] for e in env], f"compose service {name}")
    if svc.get("image", "").startswith("spectra-server"):
        opts = svc.get("security_opt", [])
        prof = [o.split("=", 1)[1] for o in opts if o.startswith("seccomp=")]
        if not prof or not os.path.isfile(os.path.join(DOCKER, prof[0])):
            fail(f"compose service {name} has no seccomp profile file: {opts}")
        if svc.get("ulimits", {}).get("memlock") != -1:
            fail(f"compose service {name} has no `memlock: -1`")
if profiles != {"single", "cluster"}:
    fail(f"compose profiles are {profiles}")
cluster = [s for s in doc["services"].values() if "cluster" in s.get("profiles", []) and "CLUSTER_NATS_URL" in s.get("environment", {})]
if len(cluster) != 3 or len({s["environment"]["NODE_ID"] for s in cluster}) != 3:
    fail("the cluster profile does not have three nodes with their own NODE_ID")

# --- Kubernetes -------------------------------------------------------------------------------
manifests = [os.path.join(KUBE, f) for f in ("spectra-server.yaml", "seccomp-installer.yaml")]
validate([tool("kubernetes-validate"), "--strict", "--quiet"], manifests, "bad.yaml",
         "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: x}\nspec:\n  replicas: three\n"
         "  selector: {}\n  template: {spec: {containers: [{name: a, image: b, envv: []}]}}\n",
         "kubernetes-validate")
docs = [d for f in manifests for d in yaml.safe_load_all(open(f)) if d]
sts = next(d for d in docs if d["kind"] == "StatefulSet")
pod = sts["spec"]["template"]["spec"]
container = pod["containers"][0]
env = {e["name"]: e.get("value") for e in container["env"]}
settings(env.keys(), "the StatefulSet")
if pod["terminationGracePeriodSeconds"] * 1000 < int(env.get("SHUTDOWN_TIMEOUT_MS") or 5000) + 5000:
    fail("terminationGracePeriodSeconds does not cover SHUTDOWN_TIMEOUT_MS with a margin")
seccomp = pod["securityContext"]["seccompProfile"]
installer = next(d for d in docs if d["kind"] == "DaemonSet")
script = " ".join(installer["spec"]["template"]["spec"]["containers"][0]["command"])
if seccomp["type"] != "Localhost" or f"/host-seccomp/{seccomp['localhostProfile']}" not in script:
    fail(f"the installer does not write the profile the StatefulSet names ({seccomp})")
for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
    if container[probe]["httpGet"]["path"] != "/status":
        fail(f"{probe} is not on /status")
values = yaml.safe_load(open(os.path.join(KUBE, "nats-values.yaml")))
if not values["config"]["jetstream"]["enabled"] or values["config"]["cluster"]["replicas"] != int(env["CLUSTER_REPLICAS"]):
    fail("NATS values: JetStream off, or its server count differs from CLUSTER_REPLICAS")

if failures:
    sys.exit(f"deploy check: {len(failures)} failure(s)")
print("deploy check: ok (hadolint, compose-spec schema, kubernetes-validate --strict, build context, settings)")
