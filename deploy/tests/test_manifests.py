"""Checks of the rendered Kubernetes manifests (deploy/k8s), run by scripts/deploy-check.sh.

The script renders each overlay with `kubectl kustomize` into TIDEWAY_RENDERED_DIR
(`embedded.yaml`, `distributed.yaml`); these tests read those files, never a cluster.

The network-policy tests evaluate the rendered NetworkPolicies the way Kubernetes does
(a flow passes when the source's egress and the destination's ingress both allow it; a pod
no policy of a direction selects is open in that direction) over every pair of pods and
every port, and prove that the allowed flows are exactly the ones docs/architecture.md
describes — no more and no fewer.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RENDERED = Path(os.environ.get("TIDEWAY_RENDERED_DIR", REPO / "target" / "deploy-rendered"))
NAMESPACE = "tideway"
HTTP = 8080
DRAIN_SECONDS = 10  # tideway_runtime::serve::DEFAULT_GRACE

SERVICES = ["identity", "catalog", "basket", "inventory", "payment", "ordering", "notification", "reporting"]


def load(overlay: str) -> list[dict]:
    path = RENDERED / f"{overlay}.yaml"
    if not path.exists():
        pytest.fail(f"{path} is missing: run scripts/deploy-check.sh, which renders the overlays")
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module", params=["embedded", "distributed"])
def overlay(request):
    return request.param, load(request.param)


@pytest.fixture(scope="module")
def distributed():
    return load("distributed")


@pytest.fixture(scope="module")
def embedded():
    return load("embedded")


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def by_name(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in of_kind(docs, kind)}


def workloads(docs: list[dict]) -> list[dict]:
    return of_kind(docs, "Deployment") + of_kind(docs, "StatefulSet")


def is_tideway(workload: dict) -> bool:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return labels.get("app.kubernetes.io/component") in ("gateway", "service")


# ---------------------------------------------------------------------------------------
# A small model of NetworkPolicy semantics.


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: tuple  # sorted (key, value) pairs
    ports: tuple  # (number, protocol, name or "")
    namespace_labels: tuple

    def label_dict(self) -> dict:
        return dict(self.labels)


def pod(name, namespace, labels, ports):
    ns_labels = {"kubernetes.io/metadata.name": namespace}
    return Pod(name, namespace, tuple(sorted(labels.items())), tuple(ports), tuple(sorted(ns_labels.items())))


# Pods outside the namespace the policies may name, and one they never should.
INGRESS_CONTROLLER = pod("ingress-nginx", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"},
                         [(80, "TCP", "http"), (443, "TCP", "https")])
PROMETHEUS = pod("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}, [(9090, "TCP", "web")])
KUBE_DNS = pod("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, [(53, "UDP", "dns"), (53, "TCP", "dns-tcp")])
STRANGER = pod("stranger", "default", {"app.kubernetes.io/name": "stranger"}, [(8080, "TCP", "http")])
# A pod in the shop's own namespace that is not part of the shop (a debugging pod, say).
INTRUDER = pod("intruder", NAMESPACE, {"app.kubernetes.io/name": "intruder"}, [(8080, "TCP", "http")])
OUTSIDERS = [INGRESS_CONTROLLER, PROMETHEUS, KUBE_DNS, STRANGER, INTRUDER]


def pods_of(docs: list[dict]) -> list[Pod]:
    pods = []
    for w in workloads(docs):
        template = w["spec"]["template"]
        ports = []
        for c in template["spec"]["containers"]:
            for p in c.get("ports", []):
                ports.append((p["containerPort"], p.get("protocol", "TCP"), p.get("name", "")))
        pods.append(pod(w["metadata"]["name"], w["metadata"].get("namespace", NAMESPACE),
                        template["metadata"]["labels"], ports))
    return pods


def selects(selector: dict | None, labels: dict) -> bool:
    """A LabelSelector; an empty one selects everything."""
    selector = selector or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def peer_matches(peer: dict, policy_ns: str, other: Pod) -> bool:
    assert "ipBlock" not in peer, "ipBlock peers are not modelled; the policies use none"
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], dict(other.namespace_labels)):
            return False
    elif other.namespace != policy_ns:
        return False
    return selects(peer.get("podSelector"), other.label_dict())


def port_matches(rule_ports: list | None, port: tuple, dst: Pod) -> bool:
    if not rule_ports:
        return True
    number, protocol, name = port
    for p in rule_ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        want = p.get("port")
        if want is None or want == number or (isinstance(want, str) and want == name):
            if "endPort" in p and isinstance(want, int):
                return want <= number <= p["endPort"]
            return True
    return False


def direction_allows(policies, direction, subject: Pod, other: Pod, port: tuple, dst: Pod) -> bool:
    kind = "Ingress" if direction == "ingress" else "Egress"
    key = "from" if direction == "ingress" else "to"
    applicable = [
        p for p in policies
        if p["metadata"].get("namespace", NAMESPACE) == subject.namespace
        and kind in p["spec"].get("policyTypes", ["Ingress"])
        and selects(p["spec"].get("podSelector"), subject.label_dict())
    ]
    if not applicable:
        return True  # isolated by nothing in this direction
    for p in applicable:
        for rule in p["spec"].get(direction, []) or []:
            peers = rule.get(key)
            if peers and not any(peer_matches(peer, p["metadata"].get("namespace", NAMESPACE), other)
                                 for peer in peers):
                continue
            if port_matches(rule.get("ports"), port, dst):
                return True
    return False


def allowed_flows(docs: list[dict]) -> set[tuple[str, str, int, str]]:
    policies = of_kind(docs, "NetworkPolicy")
    everyone = pods_of(docs) + OUTSIDERS
    flows = set()
    for src in everyone:
        for dst in everyone:
            if src == dst:
                continue
            # Only flows that touch the shop's namespace are governed by its policies.
            if src.namespace != NAMESPACE and dst.namespace != NAMESPACE:
                continue
            for port in dst.ports:
                if direction_allows(policies, "egress", src, dst, port, dst) and \
                        direction_allows(policies, "ingress", dst, src, port, dst):
                    flows.add((src.name, dst.name, port[0], port[1]))
    return flows


# ---------------------------------------------------------------------------------------
# The flows docs/architecture.md describes.


def architecture_calls() -> dict[str, set[str]]:
    """Service → the services it calls over HTTP, from the "calls" column of the
    architecture's Services table: names before the first `;` (what follows is the bus),
    with parenthesised remarks removed."""
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("## Services", 1)[1].split("\n## ", 1)[0]
    calls: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("service", "") or set(cells[0]) <= set("-"):
            continue
        name, _owns, called = cells
        http_part = re.sub(r"\([^)]*\)", "", called.split(";", 1)[0])
        calls[name] = {s for s in SERVICES if re.search(rf"\b{s}\b", http_part)}
    return calls


def test_architecture_table_names_every_service():
    assert sorted(architecture_calls()) == sorted(SERVICES)


def test_architecture_says_every_service_verifies_tokens():
    text = (REPO / "docs" / "architecture.md").read_text()
    assert "Every service verifies tokens itself" in text


def expected_distributed_flows() -> set[tuple[str, str, int, str]]:
    calls = architecture_calls()
    app = ["gateway", *SERVICES]
    flows = {("ingress-nginx", "gateway", HTTP, "TCP")}
    flows |= {("prometheus", p, HTTP, "TCP") for p in app}  # every process's /metrics
    flows |= {("gateway", s, HTTP, "TCP") for s in SERVICES}  # its routes, the console's reads
    flows |= {(s, "identity", HTTP, "TCP") for s in SERVICES if s != "identity"}  # token keys
    flows |= {(caller, callee, HTTP, "TCP") for caller, callees in calls.items() for callee in callees}
    flows |= {(s, "postgres", 5432, "TCP") for s in SERVICES}  # each its own database
    flows |= {(p, "nats", 4222, "TCP") for p in app}  # the bus
    flows |= {(p, "redis", 6379, "TCP") for p in app}  # shared cache, global rate limits
    # DNS for every pod of the namespace (its own and any other, such as a debugging pod).
    everyone = app + ["postgres", "nats", "redis", "intruder"]
    flows |= {(p, "kube-dns", 53, proto) for p in everyone for proto in ("UDP", "TCP")}
    return flows


def test_architecture_calls_are_the_known_ones():
    # If the architecture changes, the policies (and this expectation) change with it.
    assert architecture_calls() == {
        "identity": set(), "catalog": set(), "basket": {"catalog"},
        "inventory": {"catalog"}, "payment": set(), "ordering": {"basket", "payment", "inventory"},
        "notification": set(), "reporting": set(),
    }


def test_distributed_network_policies_allow_exactly_the_architecture(distributed):
    allowed = allowed_flows(distributed)
    expected = expected_distributed_flows()
    assert sorted(allowed - expected) == [], "allowed but not in the architecture"
    assert sorted(expected - allowed) == [], "in the architecture but denied"


def test_embedded_network_policies_allow_only_clients_metrics_and_dns(embedded):
    assert allowed_flows(embedded) == {
        ("ingress-nginx", "tideway", HTTP, "TCP"),
        ("prometheus", "tideway", HTTP, "TCP"),
        ("tideway", "kube-dns", 53, "UDP"),
        ("tideway", "kube-dns", 53, "TCP"),
        ("intruder", "kube-dns", 53, "UDP"),
        ("intruder", "kube-dns", 53, "TCP"),
    }


@pytest.mark.parametrize("src,dst,port", [
    ("catalog", "basket", HTTP),  # a callee never calls back
    ("payment", "catalog", HTTP),
    ("gateway", "postgres", 5432),  # the edge holds no data
    ("intruder", "catalog", HTTP),  # a pod in the namespace that is not the shop
    ("stranger", "gateway", HTTP),  # anything but the ingress controller
    ("prometheus", "nats", 8222),
    ("postgres", "catalog", HTTP),
])
def test_some_flows_that_must_stay_closed(distributed, src, dst, port):
    assert not {f for f in allowed_flows(distributed) if f[:3] == (src, dst, port)}


def test_the_model_sees_a_missing_default_deny(distributed):
    # The evaluator itself: without the default deny, unselected pods are open.
    without = [d for d in distributed
               if not (d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "default-deny")]
    assert ("stranger", "intruder", HTTP, "TCP") not in allowed_flows(distributed)
    assert ("stranger", "intruder", HTTP, "TCP") in allowed_flows(without)


# ---------------------------------------------------------------------------------------
# Pods, rollouts, scaling.


def containers(w: dict) -> list[dict]:
    return w["spec"]["template"]["spec"]["containers"]


def test_every_pod_is_hardened(overlay):
    _, docs = overlay
    for w in workloads(docs):
        name = w["metadata"]["name"]
        spec = w["spec"]["template"]["spec"]
        assert spec.get("automountServiceAccountToken") is False, name
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, name
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        for c in containers(w):
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot") is True, name
            assert sc.get("readOnlyRootFilesystem") is True, name
            assert sc.get("allowPrivilegeEscalation") is False, name
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], name
            assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in c, f"{name}: {probe}"
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c.get("resources", {}).get(bound, {})), f"{name}: {bound}"


def test_tideway_pods_probe_health_drain_and_expose_metrics(overlay):
    _, docs = overlay
    tideway = [w for w in workloads(docs) if is_tideway(w)]
    assert tideway
    for w in tideway:
        name = w["metadata"]["name"]
        template = w["spec"]["template"]
        (c,) = containers(w)
        assert c["startupProbe"]["httpGet"]["path"] == "/health/live", name
        assert c["livenessProbe"]["httpGet"]["path"] == "/health/live", name
        assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready", name
        pause = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert template["spec"]["terminationGracePeriodSeconds"] > pause + DRAIN_SECONDS, name
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/port"] == str(HTTP), name
        assert annotations["prometheus.io/path"] == "/metrics", name
        assert c["args"][:2] == ["--config", "/etc/tideway/tideway.toml"], name


def test_distributed_roles_roll_without_losing_capacity_and_scale(distributed):
    deployments = {n: d for n, d in by_name(distributed, "Deployment").items() if is_tideway(d)}
    assert sorted(deployments) == sorted(["gateway", *SERVICES])
    pdbs = by_name(distributed, "PodDisruptionBudget")
    hpas = by_name(distributed, "HorizontalPodAutoscaler")
    for name, d in deployments.items():
        (c,) = containers(d)
        role = c["args"][2:]
        assert role == (["gateway"] if name == "gateway" else ["serve", name]), name
        strategy = d["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate" and strategy["rollingUpdate"]["maxUnavailable"] == 0, name
        assert d["spec"]["replicas"] >= 2, name
        keys = {t["topologyKey"] for t in d["spec"]["template"]["spec"]["topologySpreadConstraints"]}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}, name
        pod_labels = d["spec"]["template"]["metadata"]["labels"]
        assert selects(pdbs[name]["spec"]["selector"], pod_labels), name
        hpa = hpas[name]["spec"]
        assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert hpa["minReplicas"] >= 2
        kinds = {(m["type"], m.get("resource", {}).get("name") or m.get("pods", {}).get("metric", {}).get("name"))
                 for m in hpa["metrics"]}
        assert kinds == {("Resource", "cpu"), ("Pods", "tideway_http_requests_per_second")}, name


def test_embedded_is_one_up_pod_on_a_volume(embedded):
    (d,) = of_kind(embedded, "Deployment")
    assert d["spec"]["replicas"] == 1
    (c,) = containers(d)
    assert c["args"][2:] == ["up"]
    volumes = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
    mount = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    claim = volumes[mount["/data"]]["persistentVolumeClaim"]["claimName"]
    assert claim in by_name(embedded, "PersistentVolumeClaim")
    config = rendered_config(embedded)
    assert config["data_dir"] == "/data"
    assert config["gateway"]["listen"] == f"0.0.0.0:{HTTP}"


# ---------------------------------------------------------------------------------------
# References between objects, and the configuration the pods read.


def rendered_config(docs: list[dict]) -> dict:
    (cm,) = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"].startswith("tideway-config")]
    return tomllib.loads(cm["data"]["tideway.toml"])


def test_every_referenced_config_map_and_secret_exists(overlay):
    _, docs = overlay
    config_maps = set(by_name(docs, "ConfigMap"))
    secrets = set(by_name(docs, "Secret"))
    for w in workloads(docs):
        spec = w["spec"]["template"]["spec"]
        for v in spec.get("volumes", []):
            if "configMap" in v:
                assert v["configMap"]["name"] in config_maps, v
            if "secret" in v:
                assert v["secret"]["secretName"] in secrets, v
        for c in containers(w):
            for source in c.get("envFrom", []):
                assert source["secretRef"]["name"] in secrets, source


def service_selecting(docs, name: str, headless: bool) -> dict:
    pods = [w for w in workloads(docs) if w["metadata"]["name"] == name]
    (w,) = pods
    labels = w["spec"]["template"]["metadata"]["labels"]
    matching = [s for s in of_kind(docs, "Service")
                if (s["spec"].get("clusterIP") == "None") == headless
                and selects({"matchLabels": s["spec"]["selector"]}, labels)]
    assert matching, f"no {'headless ' if headless else ''}Service selects {name}"
    return matching[0]


def test_distributed_config_reaches_every_role_by_its_services(distributed):
    config = rendered_config(distributed)
    assert config["bus"] == {"kind": "nats", "nats_url": "nats://nats:4222"}
    assert config["identity"]["generate_signing_key"] is False
    services = by_name(distributed, "Service")
    for name in SERVICES:
        assert config[name]["listen"] == f"0.0.0.0:{HTTP}"
        # urls.<service>: a ClusterIP Service selecting that service's pods, on its port.
        host, port = re.fullmatch(r"http://([a-z-]+):(\d+)", config["urls"][name]).groups()
        svc = services[host]
        assert svc == service_selecting(distributed, name, headless=False)
        assert int(port) in [p["port"] for p in svc["spec"]["ports"]]
        # discovery.dns.names.<service>: a headless Service of those pods, fully qualified.
        dns = config["discovery"]["dns"]["names"][name]
        fqdn, port = dns.rsplit(":", 1)
        svc_name, ns, rest = fqdn.split(".", 2)
        assert (ns, rest) == (NAMESPACE, "svc.cluster.local"), dns
        assert services[svc_name] == service_selecting(distributed, name, headless=True)
        assert int(port) in [p["port"] for p in services[svc_name]["spec"]["ports"]]
    assert config["discovery"]["kind"] == "dns"
    # Each service gets its own database URL and only its own.
    secrets = by_name(distributed, "Secret")
    for name in SERVICES:
        (c,) = containers(by_name(distributed, "Deployment")[name])
        (source,) = c["envFrom"]
        keys = set(secrets[source["secretRef"]["name"]]["data"])
        assert keys == {f"TIDEWAY_{name.upper()}__DATABASE_URL"}, name
    (gw,) = containers(by_name(distributed, "Deployment")["gateway"])
    assert "envFrom" not in gw


def test_nothing_secret_in_the_config_maps(overlay):
    _, docs = overlay
    for cm in of_kind(docs, "ConfigMap"):
        for value in cm.get("data", {}).values():
            assert "PRIVATE KEY" not in value
            assert not re.search(r"postgres://[^@\s]*:[^@\s]*@", value)
            assert "requirepass" not in value


def test_every_checkov_skip_names_its_check_and_reason(overlay):
    _, docs = overlay
    skips = [(d["metadata"]["name"], v) for d in docs
             for k, v in (d["metadata"].get("annotations") or {}).items() if k.startswith("checkov.io/skip")]
    assert skips, "the image digest skip at least is expected"
    for name, value in skips:
        check, _, reason = value.partition("=")
        assert re.fullmatch(r"CKV2?_K8S_\d+", check), f"{name}: {value}"
        assert len(reason.split()) >= 5, f"{name}: a skip needs its reason: {value}"


def test_the_external_secrets_example_makes_the_generated_secrets(distributed):
    example = [d for d in yaml.safe_load_all((REPO / "deploy/k8s/examples/external-secrets.yaml").read_text()) if d]
    made = {d["spec"]["target"]["name"]: {x["secretKey"] for x in d["spec"]["data"]} for d in example}
    # What the Deployments read: the same names, without kustomize's hash suffix.
    secrets = by_name(distributed, "Secret")
    read = {}
    for w in of_kind(distributed, "Deployment"):
        spec = w["spec"]["template"]["spec"]
        refs = [s["secretRef"]["name"] for c in spec["containers"] for s in c.get("envFrom", [])]
        refs += [v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v]
        for ref in refs:
            read[ref.rsplit("-", 1)[0]] = set(secrets[ref]["data"])
    assert made == read
