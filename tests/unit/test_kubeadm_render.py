"""What deploy.cluster.kubeadm renders, field by field (kubeadm itself validates it in the integration test)."""

from __future__ import annotations

import pytest
import yaml

from deploy.cluster import kubeadm as k
from deploy.errors import PlanError
from deploy.secrets import redact_text

CLUSTER = k.Cluster("lab", "v1.36.3", "10.20.0.10:6443", cert_sans=("127.0.0.1", "localhost", "127.0.0.1"))


def _docs(text: str) -> dict[str, dict[str, object]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(text)}


def test_init_carries_the_lab_values_and_the_node_ip() -> None:
    node = k.Node("control-1", "10.20.0.10", labels={"b": "2", "a": "1"})
    docs = _docs(k.render_init(CLUSTER, node, k.BootstrapToken("abcdef.0123456789abcdef")))
    init, cluster = docs["InitConfiguration"], docs["ClusterConfiguration"]
    assert init["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert init["localAPIEndpoint"] == {"advertiseAddress": "10.20.0.10", "bindPort": 6443}
    assert init["nodeRegistration"]["kubeletExtraArgs"] == [{"name": "node-ip", "value": "10.20.0.10"},
                                                             {"name": "node-labels", "value": "a=1,b=2"}]
    assert "taints" not in init["nodeRegistration"]  # kubeadm's default: the control-plane taint
    assert "timeouts" not in init
    assert "patches" not in init
    assert cluster["networking"] == {"podSubnet": "10.244.0.0/16", "serviceSubnet": "10.96.0.0/12",
                                     "dnsDomain": "cluster.local"}
    assert cluster["apiServer"] == {"certSANs": ["127.0.0.1", "localhost"]}  # de-duplicated, in order
    assert docs["KubeletConfiguration"]["cgroupDriver"] == "systemd"
    assert docs["KubeProxyConfiguration"]["clusterCIDR"] == "10.244.0.0/16"


def test_tcg_widens_kubeadms_waits_and_points_at_the_patches() -> None:
    tcg = k.Cluster(**{**CLUSTER.__dict__, "tcg": True})  # type: ignore[arg-type]
    init = _docs(k.render_init(tcg, k.Node("cp", "10.0.0.1"), k.new_token()))["InitConfiguration"]
    assert init["timeouts"]["controlPlaneComponentHealthCheck"] == "20m0s"
    assert init["patches"] == {"directory": k.PATCHES_DIR}
    assert set(k.tcg_patches()) == {f"{c}+strategic.yaml" for c in ("etcd", "kube-apiserver",
                                                                     "kube-controller-manager", "kube-scheduler")}


def test_tcg_widens_leader_election_of_the_controller_manager_and_scheduler_only_there() -> None:
    tcg = k.Cluster(**{**CLUSTER.__dict__, "tcg": True})  # type: ignore[arg-type]
    config = _docs(k.render_init(tcg, k.Node("cp", "10.0.0.1"), k.new_token()))["ClusterConfiguration"]
    for component in ("controllerManager", "scheduler"):
        args = {a["name"]: a["value"] for a in config[component]["extraArgs"]}
        assert args["leader-elect-renew-deadline"] == "45s"
    plain = _docs(k.render_init(CLUSTER, k.Node("cp", "10.0.0.1"), k.new_token()))["ClusterConfiguration"]
    assert "scheduler" not in plain
    assert [a["name"] for a in plain["controllerManager"]["extraArgs"]] == ["allocate-node-cidrs"]


def test_an_empty_taint_list_lets_a_control_plane_take_workloads() -> None:
    init = _docs(k.render_init(CLUSTER, k.Node("cp", "10.0.0.1", taints=()), k.new_token()))["InitConfiguration"]
    assert init["nodeRegistration"]["taints"] == []


def test_bad_tokens_hashes_and_minors_are_plan_errors() -> None:
    with pytest.raises(PlanError, match=r"abcdef\.0123456789abcdef"):
        k.BootstrapToken("ABCDEF.0123456789abcdef")
    with pytest.raises(PlanError, match="sha256:<hex>"):
        k.JoinSecrets(k.new_token(), ("md5:00",))
    with pytest.raises(PlanError, match="no known configuration API version") as info:
        _ = k.Cluster("lab", "v1.30.0", "x:6443").api
    assert info.value.hint == "use one of the minors 1.35, 1.36, 1.37"


def test_new_tokens_are_random_and_well_formed() -> None:
    tokens = {k.new_token().value for _ in range(20)}
    assert len(tokens) == 20
    assert all(k._TOKEN.match(t) for t in tokens)


def test_a_vip_is_the_endpoint_of_every_node_and_named_by_the_certificate() -> None:
    ha = k.with_vip(CLUSTER, "10.20.0.5")
    assert ha.endpoint == "10.20.0.5:6443"
    cluster = _docs(k.render_init(ha, k.Node("control-1", "10.20.0.10"), k.new_token()))["ClusterConfiguration"]
    assert cluster["controlPlaneEndpoint"] == "10.20.0.5:6443"
    assert cluster["apiServer"]["certSANs"] == ["127.0.0.1", "localhost", "10.20.0.5"]
    secrets = k.JoinSecrets(k.new_token(), ("sha256:" + "ab" * 32,))
    join = _docs(k.render_join(ha, k.Node("workers-1", "10.20.0.21"), secrets))["JoinConfiguration"]
    assert join["discovery"]["bootstrapToken"]["apiServerEndpoint"] == "10.20.0.5:6443"
    assert "controlPlane" not in join
    assert k.with_vip(CLUSTER, "fd00::5").endpoint == "[fd00::5]:6443"


def test_init_carries_the_certificate_key_for_upload_certs() -> None:
    key = k.new_certificate_key()
    init = _docs(k.render_init(CLUSTER, k.Node("cp", "10.20.0.10"), k.new_token(), key))["InitConfiguration"]
    assert init["certificateKey"] == key.value
    plain = _docs(k.render_init(CLUSTER, k.Node("cp", "10.20.0.10"), k.new_token()))["InitConfiguration"]
    assert "certificateKey" not in plain


def test_a_further_control_plane_joins_with_its_own_advertise_address_and_the_key() -> None:
    key = k.new_certificate_key()
    secrets = k.JoinSecrets(k.new_token(), ("sha256:" + "ab" * 32,), key.value)
    node = k.Node("control-2", "10.20.0.11")
    join = _docs(k.render_join(k.with_vip(CLUSTER, "10.20.0.5"), node, secrets))["JoinConfiguration"]
    assert join["controlPlane"] == {"localAPIEndpoint": {"advertiseAddress": "10.20.0.11", "bindPort": 6443},
                                    "certificateKey": key.value}


def test_upload_certs_config_has_the_key_and_the_cluster_but_no_token() -> None:
    key = k.new_certificate_key()
    text = k.render_upload_certs(k.with_vip(CLUSTER, "10.20.0.5"), k.Node("control-1", "10.20.0.10"), key)
    docs = _docs(text)
    assert list(docs) == ["InitConfiguration", "ClusterConfiguration"]
    assert docs["InitConfiguration"]["certificateKey"] == key.value
    assert "bootstrapTokens" not in docs["InitConfiguration"]
    assert docs["ClusterConfiguration"]["controlPlaneEndpoint"] == "10.20.0.5:6443"


def test_certificate_keys_are_fresh_secret_and_well_formed() -> None:
    keys = [k.new_certificate_key() for _ in range(10)]
    assert len({key.value for key in keys}) == 10
    assert all(len(key.value) == 64 and int(key.value, 16) >= 0 for key in keys)
    assert repr(keys[0]) == "CertificateKey(****)"
    assert redact_text(f"key {keys[0].value}") == "key ***"
    with pytest.raises(PlanError, match="64 lowercase hex digits"):
        k.CertificateKey("AB" * 32)
    with pytest.raises(PlanError, match="64 lowercase hex digits"):
        k.JoinSecrets(k.new_token(), ("sha256:" + "ab" * 32,), "cd" * 16)
