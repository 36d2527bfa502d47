"""Tests of the Helm chart helm/sluice that need no cluster.

The chart is linted and rendered by Helm's own Go SDK (PyPI `helm-python-sdk`, module
`helm_python`), every rendered manifest is validated strictly against the Kubernetes 1.30 OpenAPI
schemas (PyPI `kubernetes-validate`), and the tests then check what the manifests actually do:
how a storage node derives its id and address, where etcd is, that disruption budgets cover every
workload, that replica counts follow the values, that nothing renders empty, and that
values.schema.json refuses bad values.

Run with helm/tests/run.sh (installs the packages when missing).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import stat
import subprocess
from pathlib import Path
from typing import Any, Iterator

import helm_python
import kubernetes_validate
import pytest
import yaml

CHART = Path(os.environ.get("SLUICE_CHART_DIR") or Path(__file__).resolve().parent.parent / "sluice")
KUBE_VERSION = "1.30.0"
NAMESPACE = "streaming"
DOMAIN = "cluster.local"
EXTERNAL_ENDPOINTS = ["http://etcd-a.infra:2379", "https://etcd-b.infra:2379"]
ZONE_KEY = "topology.kubernetes.io/zone"

# name -> (release name, values, expectations)
SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {
        "release": "sluice",
        "values": {},
        "coordinators": 3,
        "storage": 3,
        "etcd": 3,
        "rack": None,
    },
    "external-etcd": {
        "release": "events",
        "values": {"etcd": {"bundled": False, "endpoints": EXTERNAL_ENDPOINTS}},
        "coordinators": 3,
        "storage": 3,
        "etcd": None,
        "rack": None,
    },
    "five-nodes-with-racks": {
        "release": "prod",
        "values": {
            "cluster": {"name": "prod-eu"},
            "coordinator": {"replicas": 2, "leaseTtlMs": 5000},
            "storage": {
                "replicas": 5,
                "leaseTtlMs": 4000,
                "fsync": True,
                "rack": {"topologyKey": ZONE_KEY},
                "podAntiAffinity": "required",
                "persistence": {"size": "100Gi", "storageClass": "fast-ssd"},
            },
            "etcd": {"replicas": 5},
        },
        "coordinators": 2,
        "storage": 5,
        "etcd": 5,
        "rack": ZONE_KEY,
    },
    "monitoring": {
        "release": "sluice",
        "values": {
            "metrics": {
                "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus"}},
                "dashboard": {"enabled": True},
            }
        },
        "coordinators": 3,
        "storage": 3,
        "etcd": 3,
        "rack": None,
    },
}

# Kinds that are not part of Kubernetes itself (no schema in kubernetes-validate).
CRD_API_VERSIONS = {"monitoring.coreos.com/v1"}

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


# --------------------------------------------------------------------------------------------
# Rendering helpers


@pytest.fixture(scope="session")
def chart() -> Iterator[helm_python.Chart]:
    loaded = helm_python.Chart.load(str(CHART))
    yield loaded
    loaded.close()


class Rendered:
    """One rendering of the chart: the manifests as objects, plus lookups."""

    def __init__(self, chart: helm_python.Chart, scenario: dict[str, Any]):
        self.scenario = scenario
        self.release = scenario["release"]
        self.files = chart.render(
            copy.deepcopy(scenario["values"]), name=self.release, namespace=NAMESPACE
        )
        self.notes = next((v for k, v in self.files.items() if k.endswith("NOTES.txt")), "")
        self.objects: list[dict[str, Any]] = []
        for path, text in sorted(self.files.items()):
            if path.endswith("NOTES.txt"):
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    doc.setdefault("metadata", {})
                    self.objects.append(doc)
        self.prefix = self.release if "sluice" in self.release else f"{self.release}-sluice"

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]

    def component(self, kind: str, component: str) -> list[dict[str, Any]]:
        return [
            o
            for o in self.of_kind(kind)
            if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
        ]

    @property
    def config(self) -> dict[str, str]:
        return self.get("ConfigMap", f"{self.prefix}-config")["data"]

    @property
    def storage(self) -> dict[str, Any]:
        return self.get("StatefulSet", f"{self.prefix}-storage")

    @property
    def coordinator(self) -> dict[str, Any]:
        return self.get("Deployment", f"{self.prefix}-coordinator")

    def workloads(self) -> list[dict[str, Any]]:
        return self.of_kind("Deployment") + self.of_kind("StatefulSet")


@pytest.fixture(scope="session", params=list(SCENARIOS), ids=list(SCENARIOS))
def rendered(request: pytest.FixtureRequest, chart: helm_python.Chart) -> Rendered:
    return Rendered(chart, SCENARIOS[request.param])


def container(workload: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    if name is None:
        assert len(containers) == 1
        return containers[0]
    return next(c for c in containers if c["name"] == name)


def expected_etcd_endpoints(r: Rendered) -> list[str]:
    n = r.scenario["etcd"]
    if n is None:
        return EXTERNAL_ENDPOINTS
    etcd = f"{r.prefix}-etcd"
    return [f"http://{etcd}-{i}.{etcd}.{NAMESPACE}.svc.{DOMAIN}:2379" for i in range(n)]


def kubelet_expand(text: str, env: dict[str, str]) -> str:
    """Expands $(VAR) references the way the kubelet does in command and args."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", repl, text)


def container_env(
    r: Rendered, c: dict[str, Any], field_values: dict[str, str]
) -> dict[str, str]:
    """The environment a container would get: envFrom ConfigMaps, then env (downward API
    fieldRefs resolved from field_values)."""
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env.update(r.get("ConfigMap", source["configMapRef"]["name"])["data"])
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            path = e["valueFrom"]["fieldRef"]["fieldPath"]
            assert path in field_values, f"unexpected fieldRef {path}"
            env[e["name"]] = field_values[path]
    return env


def flags(argv: list[str]) -> dict[str, str]:
    """--flag value pairs (and bare --flag as "true") of an argv."""
    out: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        assert arg.startswith("--"), f"unexpected positional {arg!r} in {argv}"
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out[arg[2:]] = argv[i + 1]
            i += 2
        else:
            out[arg[2:]] = "true"
            i += 1
    return out


@pytest.fixture(scope="session")
def fake_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a `sluice-storage-node` that prints its arguments, one per line."""
    d = tmp_path_factory.mktemp("bin")
    exe = d / "sluice-storage-node"
    exe.write_text("#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return d


def run_storage_command(
    r: Rendered, fake_bin: Path, ordinal: int, labels: dict[str, str]
) -> list[str]:
    """Runs the storage container's command with /bin/sh as Kubernetes would for the pod with
    this ordinal, with the fake binary, and returns the argv the node would get."""
    sts = r.storage
    c = container(sts)
    pod_name = f"{sts['metadata']['name']}-{ordinal}"
    field_values = {f"metadata.labels['{k}']": v for k, v in labels.items()}
    field_values.update({"metadata.name": pod_name, "metadata.namespace": NAMESPACE})
    env = container_env(r, c, field_values)
    command = [kubelet_expand(part, env) for part in c["command"] + c.get("args", [])]
    assert command[:2] == ["sh", "-c"], command
    proc_env = {"PATH": f"{fake_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    proc_env.update(env)
    proc_env["HOSTNAME"] = pod_name  # what the container runtime sets for a StatefulSet pod
    out = subprocess.run(
        ["/bin/sh", "-c", *command[2:]], env=proc_env, capture_output=True, text=True, check=True
    )
    return out.stdout.splitlines()


def walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk(v, f"{path}[{i}]")


# --------------------------------------------------------------------------------------------
# Lint and schema validation of the output


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_lint_passes(name: str) -> None:
    report = helm_python.lint(
        str(CHART),
        copy.deepcopy(SCENARIOS[name]["values"]),
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{KUBE_VERSION}",
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


def test_values_schema_accepts_every_scenario(chart: helm_python.Chart) -> None:
    for scenario in SCENARIOS.values():
        chart.validate_schema(copy.deepcopy(scenario["values"]))


def test_every_manifest_validates_strictly(rendered: Rendered) -> None:
    assert rendered.objects
    for obj in rendered.objects:
        if obj["apiVersion"] in CRD_API_VERSIONS:
            continue  # checked in test_service_monitor_and_dashboard
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_strict_validation_is_not_vacuous(rendered: Rendered) -> None:
    """The validator really refuses an unknown field and a wrong type in our manifests."""
    sts = copy.deepcopy(rendered.storage)
    sts["spec"]["template"]["spec"]["containers"][0]["comand"] = ["oops"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, KUBE_VERSION, strict=True)
    sts = copy.deepcopy(rendered.storage)
    sts["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, KUBE_VERSION, strict=True)


def test_nothing_renders_empty(rendered: Rendered) -> None:
    for obj in rendered.objects:
        where = f"{obj['kind']}/{obj['metadata'].get('name')}"
        for path, value in walk(obj):
            # `emptyDir: {}` is the one legitimately empty mapping.
            if value == {} and path.endswith(".emptyDir"):
                continue
            assert value not in (None, "", [], {}), f"{where}{path} renders empty"
            if isinstance(value, str):
                assert "<no value>" not in value and "%!" not in value, f"{where}{path}: {value}"


def test_names_are_dns_labels_and_in_namespace(rendered: Rendered) -> None:
    for obj in rendered.objects:
        name = obj["metadata"]["name"]
        assert DNS_LABEL.match(name) and len(name) <= 63, name
        assert obj["metadata"]["namespace"] == NAMESPACE
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == rendered.release
    # StatefulSet pods "<name>-<ordinal>" must stay valid hostnames.
    for sts in rendered.of_kind("StatefulSet"):
        longest = f"{sts['metadata']['name']}-{sts['spec']['replicas'] - 1}"
        assert len(longest) <= 63


# --------------------------------------------------------------------------------------------
# What the manifests do


def test_replica_counts_follow_values(rendered: Rendered) -> None:
    s = rendered.scenario
    assert rendered.coordinator["spec"]["replicas"] == s["coordinators"]
    assert rendered.storage["spec"]["replicas"] == s["storage"]
    etcd = rendered.component("StatefulSet", "etcd")
    if s["etcd"] is None:
        assert etcd == []
    else:
        assert [e["spec"]["replicas"] for e in etcd] == [s["etcd"]]


def test_every_workload_has_a_pdb_allowing_one_down(rendered: Rendered) -> None:
    pdbs = rendered.of_kind("PodDisruptionBudget")
    workloads = rendered.workloads()
    assert len(pdbs) == len(workloads)
    for w in workloads:
        pod_labels = w["spec"]["template"]["metadata"]["labels"]
        covering = [
            p
            for p in pdbs
            if p["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        ]
        assert len(covering) == 1, w["metadata"]["name"]
        assert covering[0]["spec"]["maxUnavailable"] == 1
        assert "minAvailable" not in covering[0]["spec"]


def test_selectors_match_their_pods(rendered: Rendered) -> None:
    for w in rendered.workloads():
        selector = w["spec"]["selector"]["matchLabels"]
        assert selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
    for svc in rendered.of_kind("Service"):
        matches = [
            w
            for w in rendered.workloads()
            if svc["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matches) == 1, svc["metadata"]["name"]
        ports = {p["name"] for c in matches[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports, (svc["metadata"]["name"], p)


def test_storage_node_id_and_address_come_from_the_ordinal(
    rendered: Rendered, fake_bin: Path
) -> None:
    sts = rendered.storage
    spec = sts["spec"]
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] == 60
    headless = rendered.get("Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    [claim] = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    mounts = {m["name"]: m["mountPath"] for m in container(sts)["volumeMounts"]}
    assert mounts["data"] == "/data"

    zone_labels = {ZONE_KEY: "eu-west-1b"}
    for ordinal in (0, rendered.scenario["storage"] - 1):
        argv = run_storage_command(rendered, fake_bin, ordinal, zone_labels)
        f = flags(argv)
        assert f["node-id"] == str(ordinal)
        assert f["advertise"] == (
            f"{sts['metadata']['name']}-{ordinal}.{spec['serviceName']}.{NAMESPACE}.svc.{DOMAIN}:9093"
        )
        assert f["data-dir"] == "/data"
        assert f["listen"] == "0.0.0.0:9093"
        assert f["etcd"].split(",") == expected_etcd_endpoints(rendered)
        assert f["cluster"] == rendered.config["SLUICE_CLUSTER"]
        assert f["lease-ttl-ms"] == str(
            rendered.scenario["values"].get("storage", {}).get("leaseTtlMs", 3000)
        )
        assert f["metrics-listen"] == "0.0.0.0:9100"
        expected_rack = "eu-west-1b" if rendered.scenario["rack"] else ""
        assert f["rack"] == expected_rack
        assert ("fsync" in f) == bool(rendered.scenario["values"].get("storage", {}).get("fsync"))


def test_rack_wiring(rendered: Rendered) -> None:
    pod = rendered.storage["spec"]["template"]["spec"]
    env = {e["name"]: e for e in container(rendered.storage).get("env", [])}
    key = rendered.scenario["rack"]
    if key is None:
        assert "SLUICE_RACK" not in env
        assert "topologySpreadConstraints" not in pod
    else:
        ref = env["SLUICE_RACK"]["valueFrom"]["fieldRef"]["fieldPath"]
        assert ref == f"metadata.labels['{key}']"
        [spread] = pod["topologySpreadConstraints"]
        assert spread["topologyKey"] == key and spread["maxSkew"] == 1


def test_coordinator_command_line(rendered: Rendered) -> None:
    d = rendered.coordinator
    c = container(d)
    fields = {"metadata.name": "sluice-coordinator-abc12", "status.podIP": "10.1.2.3"}
    env = container_env(rendered, c, fields)
    argv = [kubelet_expand(a, env) for a in c.get("command", []) + c["args"]]
    assert argv[0] == "sluice-coordinator"
    for a in argv:
        assert "$(" not in a, f"unresolved reference in {a!r}"
    f = flags(argv[1:])
    values = rendered.scenario["values"].get("coordinator", {})
    assert f["id"] == "sluice-coordinator-abc12"
    assert f["listen"] == "0.0.0.0:9092"
    assert f["advertise"] == "10.1.2.3:9092"
    assert f["etcd"].split(",") == expected_etcd_endpoints(rendered)
    assert f["cluster"] == rendered.scenario["values"].get("cluster", {}).get("name", "sluice")
    assert f["lease-ttl-ms"] == str(values.get("leaseTtlMs", 3000))
    assert f["default-replication-factor"] == "3"
    assert f["metrics-listen"] == "0.0.0.0:9100"
    # Clients bootstrap from a ClusterIP Service on the coordinators' gRPC port.
    svc = rendered.get("Service", rendered.prefix)
    assert svc["spec"]["type"] == "ClusterIP"
    assert {"name": "grpc", "port": 9092} .items() <= svc["spec"]["ports"][0].items()
    assert svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()


def test_settings_configmap(rendered: Rendered) -> None:
    cfg = rendered.config
    assert cfg["SLUICE_ETCD"].split(",") == expected_etcd_endpoints(rendered)
    for w in (rendered.coordinator, rendered.storage):
        refs = [s["configMapRef"]["name"] for s in container(w)["envFrom"]]
        assert refs == [f"{rendered.prefix}-config"]
        # A settings change rolls the pods.
        assert w["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def test_bundled_etcd_or_none(rendered: Rendered) -> None:
    n = rendered.scenario["etcd"]
    etcd_objects = [
        o
        for o in rendered.objects
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "etcd"
        or "etcd" in o["metadata"]["name"]
    ]
    if n is None:
        assert etcd_objects == []
        assert "external etcd: " + ",".join(EXTERNAL_ENDPOINTS) in rendered.notes
        return
    [sts] = rendered.component("StatefulSet", "etcd")
    name = sts["metadata"]["name"]
    c = container(sts)
    assert c["image"].startswith("quay.io/coreos/etcd:v3.5.")
    headless = rendered.get("Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    args = dict(a[2:].split("=", 1) for a in c["args"])
    members = dict(m.split("=", 1) for m in args["initial-cluster"].split(","))
    domain = f"{sts['spec']['serviceName']}.{NAMESPACE}.svc.{DOMAIN}"
    assert members == {f"{name}-{i}": f"http://{name}-{i}.{domain}:2380" for i in range(n)}
    assert args["name"] == "$(POD_NAME)"
    assert args["initial-advertise-peer-urls"] == f"http://$(POD_NAME).{domain}:2380"
    assert args["advertise-client-urls"] == f"http://$(POD_NAME).{domain}:2379"
    # Sluice dials exactly the members etcd advertises.
    pod = kubelet_expand(args["advertise-client-urls"], {"POD_NAME": f"{name}-0"})
    assert pod in rendered.config["SLUICE_ETCD"].split(",")
    [claim] = sts["spec"]["volumeClaimTemplates"]
    assert any(m["name"] == claim["metadata"]["name"] for m in c["volumeMounts"])


def test_probes_use_native_grpc_on_the_serving_port(rendered: Rendered) -> None:
    for w, port in ((rendered.coordinator, 9092), (rendered.storage, 9093)):
        c = container(w)
        grpc_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
        assert grpc_port == port
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == port
        # Readiness is the `readiness` health service (registered, caught up, not draining);
        # liveness and startup the overall one (the process answers), so a node that is only
        # catching up is never restarted.
        assert c["readinessProbe"]["grpc"]["service"] == "readiness"
        assert "service" not in c["livenessProbe"]["grpc"]


def test_security_contexts(rendered: Rendered) -> None:
    for w in rendered.workloads():
        pod = w["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod.get("hostNetwork") is not True
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert "add" not in sc["capabilities"]
            assert c["resources"]["requests"]


def test_anti_affinity(rendered: Rendered) -> None:
    mode = rendered.scenario["values"].get("storage", {}).get("podAntiAffinity", "preferred")
    for w in rendered.workloads():
        anti = w["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        component = w["metadata"]["labels"]["app.kubernetes.io/component"]
        if component == "storage" and mode == "required":
            [term] = anti["requiredDuringSchedulingIgnoredDuringExecution"]
        else:
            [weighted] = anti["preferredDuringSchedulingIgnoredDuringExecution"]
            term = weighted["podAffinityTerm"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == component


def test_every_pod_serves_metrics(rendered: Rendered) -> None:
    for w in rendered.workloads():
        template = w["spec"]["template"]
        ann = template["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true"
        assert ann["prometheus.io/port"] == "9100"
        ports = [p for c in template["spec"]["containers"] for p in c["ports"]]
        assert {"name": "metrics", "containerPort": 9100}.items() <= next(
            p for p in ports if p["name"] == "metrics"
        ).items()
    for svc in rendered.of_kind("Service"):
        assert any(p["name"] == "metrics" for p in svc["spec"]["ports"])


def test_service_monitor_and_dashboard(rendered: Rendered) -> None:
    monitors = rendered.of_kind("ServiceMonitor")
    dashboards = [o for o in rendered.of_kind("ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]
    if rendered.scenario["values"].get("metrics") is None:
        assert monitors == [] and dashboards == []
        return
    [sm] = monitors
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus"
    [endpoint] = sm["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    selected = [
        s
        for s in rendered.of_kind("Service")
        if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert {s["metadata"]["labels"]["app.kubernetes.io/component"] for s in selected} == {
        "coordinator",
        "storage",
        "etcd",
    }

    [cm] = dashboards
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(cm["data"]["sluice.json"])
    assert shipped == json.loads((CHART / "dashboards" / "sluice.json").read_text())
    exprs = " ".join(
        t["expr"] for p in shipped["panels"] for t in p.get("targets", [])
    )
    for metric in (
        "sluice_produce_bytes_total",
        "sluice_fetch_bytes_total",
        "sluice_request_duration_seconds_bucket",
        "sluice_partition_isr_size",
        "sluice_under_replicated_partitions",
        "sluice_leader_changes_total",
        "sluice_consumer_group_lag",
    ):
        assert metric in exprs, metric
    ids = [p["id"] for p in shipped["panels"]]
    assert len(ids) == len(set(ids))


def test_notes_tell_how_to_produce_and_consume(rendered: Rendered) -> None:
    bootstrap = f"{rendered.prefix}.{NAMESPACE}.svc.{DOMAIN}:9092"
    assert f"SLUICE_BOOTSTRAP={bootstrap}" in rendered.notes
    for command in ("sluice topic create", "sluice produce", "sluice consume",
                    "sluice node decommission", "--set storage.replicas="):
        assert command in rendered.notes
    for line in rendered.notes.splitlines():
        if line.strip().startswith("kubectl"):
            shlex.split(line.rstrip("\\"))  # every command line is valid shell


# --------------------------------------------------------------------------------------------
# values.schema.json refuses bad values


BAD_VALUES = {
    "external etcd without endpoints": {"etcd": {"bundled": False}},
    "external etcd with an empty list": {"etcd": {"bundled": False, "endpoints": []}},
    "endpoint without scheme": {"etcd": {"bundled": False, "endpoints": ["etcd:2379"]}},
    "negative storage replicas": {"storage": {"replicas": -1}},
    "negative coordinator replicas": {"coordinator": {"replicas": -3}},
    "replicas as a string": {"storage": {"replicas": "3"}},
    "even etcd membership": {"etcd": {"replicas": 2}},
    "lease below 100 ms": {"storage": {"leaseTtlMs": 50}},
    "pdb allowing none down": {"storage": {"podDisruptionBudget": {"enabled": True, "maxUnavailable": 0}}},
    "unknown top-level key": {"storge": {"replicas": 5}},
    "unknown nested key": {"storage": {"replica": 5}},
    "bad volume size": {"storage": {"persistence": {"size": "lots"}}},
    "cluster name with a slash": {"cluster": {"name": "a/b"}},
    "empty image repository": {"image": {"repository": ""}},
    "metrics port on a gRPC port": {"metrics": {"port": 9092}},
    "bad anti-affinity mode": {"coordinator": {"podAntiAffinity": "sometimes"}},
}


@pytest.mark.parametrize("values", list(BAD_VALUES.values()), ids=list(BAD_VALUES))
def test_schema_refuses_bad_values(chart: helm_python.Chart, values: dict[str, Any]) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        chart.validate_schema(copy.deepcopy(values))
    # ...and so does rendering, i.e. `helm install`.
    with pytest.raises(helm_python.HelmError):
        chart.render(copy.deepcopy(values), name="sluice", namespace=NAMESPACE)
