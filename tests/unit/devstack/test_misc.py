from __future__ import annotations

import ipaddress
import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from tailor_devstack import commands, state
from tailor_devstack import stack as stack_module
from tailor_devstack.pki import PKI, Identity


def test_pki_issues_identities_and_reissues_serving_for_new_addresses(tmp_path: Path) -> None:
    pki = PKI(tmp_path / "pki")
    node = Identity("node", "system:node:n1", ("system:nodes",))
    pki.ensure(server_ips=["198.18.0.1"], server_names=["kubernetes"], clients=[node])
    cert = x509.load_pem_x509_certificate(pki.cert("node").read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:n1"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == \
        "system:nodes"
    first_serving = pki.cert("serving").read_bytes()
    pki.ensure(server_ips=["198.18.0.1"], server_names=["kubernetes"], clients=[node])
    assert pki.cert("serving").read_bytes() == first_serving
    pki.ensure(server_ips=["198.18.7.1"], server_names=["kubernetes"], clients=[node])
    serving = x509.load_pem_x509_certificate(pki.cert("serving").read_bytes())
    ips = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in ips.get_values_for_type(x509.IPAddress)] == ["198.18.7.1"]
    assert oct(pki.key("node").stat().st_mode & 0o777) == "0o600"


def test_a_missing_debian_package_is_named_with_its_install_command(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(state.StackError,
                       match=r"prometheus is missing: install it with `apt-get install -y "
                             r"prometheus`"):
        commands.binary_paths()


def test_subnets_differ_per_directory_inside_the_benchmarking_range() -> None:
    subnets = {stack_module._subnet_for(Path(f"/work/clone-{i}")) for i in range(200)}
    assert len(subnets) > 150
    assert all(s.subnet_of(ipaddress.IPv4Network("198.18.0.0/15")) for s in subnets)
    assert all(s.prefixlen == 24 for s in subnets)
