"""Gateway parsing and validation: what a server binds (`ns/host`), and every rejected setting
named by its field path, so `kubectl apply`-style errors point at the line to fix."""

from __future__ import annotations

from typing import Any

import pytest

from istiolite.model.gateway import Gateway, ServerTLS, parse_gateway
from istiolite.model.kinds import parse_object
from istiolite.model.validation import ValidationError

HTTP = {"number": 80, "name": "http", "protocol": "HTTP"}
HTTPS = {"number": 443, "name": "https", "protocol": "HTTPS"}
CRED = {"mode": "SIMPLE", "credentialName": "web-cert"}


def gateway(*servers: dict[str, Any], namespace: str = "istio-system") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "web-gw", "namespace": namespace},
        "spec": {"selector": {"istio": "ingressgateway"}, "servers": list(servers)},
    }


def server(
    port: dict[str, Any] | None = None,
    hosts: list[Any] | None = None,
    tls: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    raw: dict[str, Any] = {"port": port or HTTP, "hosts": hosts or ["web.example.com"], **extra}
    if tls is not None:
        raw["tls"] = tls
    return raw


def parsed(*servers: dict[str, Any], namespace: str = "istio-system") -> Gateway:
    return parse_gateway(gateway(*servers, namespace=namespace))


def rejected(raw: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        parse_gateway(raw)
    return caught.value


# -- what a valid Gateway means -----------------------------------------------------------------


def test_registered_kind_parses_through_the_generic_loader() -> None:
    key, gw = parse_object(gateway(server()))
    assert (key.kind, key.namespace, key.name) == ("Gateway", "istio-system", "web-gw")
    assert isinstance(gw, Gateway)
    assert gw.key == "istio-system/web-gw"
    assert gw.namespace == "istio-system"


def test_host_namespace_parts() -> None:
    """A bare host any namespace may bind; `./h` the Gateway's own namespace; `ns/h` only ns."""
    gw = parsed(
        server(hosts=["bare.example.com", "./own.example.com", "*/any.example.com", "web/*"]),
        namespace="edge",
    )
    assert gw.servers[0].hosts == (
        ("*", "bare.example.com"),
        ("edge", "own.example.com"),
        ("*", "any.example.com"),
        ("web", "*"),
    )


def test_hosts_are_case_insensitive_and_protocol_is_upper_cased() -> None:
    gw = parsed(
        server(port={"number": 80, "name": "http", "protocol": "http"}, hosts=["Web.Example.COM"])
    )
    assert gw.servers[0].protocol == "HTTP"
    assert gw.servers[0].hosts == (("*", "web.example.com"),)


def test_wildcard_hosts_accepted() -> None:
    gw = parsed(server(hosts=["*", "*.example.com"]))
    assert [h for _, h in gw.servers[0].hosts] == ["*", "*.example.com"]


def test_selector_picks_proxies_by_every_label() -> None:
    gw = parsed(server())
    assert gw.selects({"istio": "ingressgateway", "app": "x"})
    assert not gw.selects({"istio": "egressgateway"})
    assert not gw.selects({})


def test_https_with_credential_terminates() -> None:
    gw = parsed(server(port=HTTPS, tls=CRED))
    s = gw.servers[0]
    assert s.terminates_https and not s.is_http
    assert s.tls == ServerTLS(mode="SIMPLE", credential_name="web-cert")


def test_https_redirect_alone_is_a_plain_http_server() -> None:
    s = parsed(server(tls={"httpsRedirect": True})).servers[0]
    assert s.is_http and not s.terminates_https
    assert s.tls is not None and s.tls.https_redirect and s.tls.mode == "PASSTHROUGH"


def test_files_and_every_tls_field() -> None:
    s = parsed(
        server(
            port=HTTPS,
            tls={
                "mode": "MUTUAL",
                "serverCertificate": "/etc/certs/server.pem",
                "privateKey": "/etc/certs/server.key",
                "caCertificates": "/etc/certs/ca.pem",
                "subjectAltNames": ["client.example.com"],
                "minProtocolVersion": "TLSV1_2",
                "maxProtocolVersion": "TLSV1_3",
                "cipherSuites": ["ECDHE-ECDSA-AES128-GCM-SHA256"],
            },
        )
    ).servers[0]
    assert s.tls == ServerTLS(
        mode="MUTUAL",
        server_certificate="/etc/certs/server.pem",
        private_key="/etc/certs/server.key",
        ca_certificates="/etc/certs/ca.pem",
        subject_alt_names=("client.example.com",),
        min_protocol_version="TLSV1_2",
        max_protocol_version="TLSV1_3",
        cipher_suites=("ECDHE-ECDSA-AES128-GCM-SHA256",),
    )


def test_private_key_path_is_not_in_the_repr() -> None:
    s = parsed(
        server(
            port=HTTPS,
            tls={"mode": "SIMPLE", "serverCertificate": "/c.pem", "privateKey": "/secret/k.pem"},
        )
    ).servers[0]
    assert "/secret/k.pem" not in repr(s)


def test_mutual_with_credential_needs_no_ca_files() -> None:
    # The CA comes from the Secret's ca.crt (or a `<name>-cacert` Secret).
    s = parsed(server(port=HTTPS, tls={"mode": "MUTUAL", "credentialName": "c"})).servers[0]
    assert s.tls is not None and s.tls.mode == "MUTUAL"


def test_https_servers_may_share_a_port_told_apart_by_sni() -> None:
    gw = parsed(
        server(port=HTTPS, hosts=["a.example.com"], tls=CRED),
        server(port={**HTTPS, "name": "https-b"}, hosts=["b.example.com"], tls=CRED),
    )
    assert [s.port for s in gw.servers] == [443, 443]


def test_http_and_https_servers_of_one_gateway() -> None:
    gw = parsed(server(), server(port=HTTPS, tls=CRED))
    assert [(s.index, s.protocol) for s in gw.servers] == [(0, "HTTP"), (1, "HTTPS")]


# -- rejected: each error names the field -------------------------------------------------------


@pytest.mark.parametrize(
    ("servers", "field"),
    [
        pytest.param([], "spec.servers", id="no-servers"),
        pytest.param([{"hosts": ["a.example.com"]}], "spec.servers[0].port", id="no-port"),
        pytest.param(
            [server(port={"number": 80, "protocol": "HTTP"})],
            "spec.servers[0].port.name",
            id="no-port-name",
        ),
        pytest.param(
            [server(port={"name": "http", "protocol": "HTTP"})],
            "spec.servers[0].port.number",
            id="no-port-number",
        ),
        pytest.param(
            [server(port={"number": 70000, "name": "http", "protocol": "HTTP"})],
            "spec.servers[0].port.number",
            id="port-out-of-range",
        ),
        pytest.param(
            [server(port={"number": 80, "name": "http"})],
            "spec.servers[0].port.protocol",
            id="no-protocol",
        ),
        pytest.param(
            [server(port={"number": 80, "name": "http", "protocol": "GOPHER"})],
            "spec.servers[0].port.protocol",
            id="bad-protocol",
        ),
        pytest.param([{"port": HTTP, "hosts": []}], "spec.servers[0].hosts", id="no-hosts"),
        pytest.param([{"port": HTTP}], "spec.servers[0].hosts", id="hosts-missing"),
        pytest.param(
            [server(hosts=["ok.example.com", "bad_host!"])],
            "spec.servers[0].hosts[1]",
            id="bad-host",
        ),
        pytest.param(
            [server(hosts=["a.*.example.com"])], "spec.servers[0].hosts[0]", id="inner-wildcard"
        ),
        pytest.param(
            [server(hosts=["Bad_NS/a.example.com"])],
            "spec.servers[0].hosts[0]",
            id="bad-namespace-part",
        ),
        pytest.param(
            [server(hosts=["a/b/c.example.com"])],
            "spec.servers[0].hosts[0]",
            id="two-slashes",
        ),
        pytest.param([server(hosts=["web/"])], "spec.servers[0].hosts[0]", id="empty-host"),
        pytest.param([server(port=HTTPS)], "spec.servers[0].tls", id="https-without-tls"),
        pytest.param(
            [server(port=HTTPS, tls={"mode": "SIMPLE"})],
            "spec.servers[0].tls.serverCertificate",
            id="simple-without-credential-or-files",
        ),
        pytest.param(
            [server(port=HTTPS, tls={"mode": "SIMPLE", "serverCertificate": "/c.pem"})],
            "spec.servers[0].tls.privateKey",
            id="simple-without-key-file",
        ),
        pytest.param(
            [
                server(
                    port=HTTPS,
                    tls={"mode": "MUTUAL", "serverCertificate": "/c", "privateKey": "/k"},
                )
            ],
            "spec.servers[0].tls.caCertificates",
            id="mutual-without-ca",
        ),
        pytest.param(
            [
                server(
                    port=HTTPS,
                    tls={"mode": "OPTIONAL_MUTUAL", "serverCertificate": "/c", "privateKey": "/k"},
                )
            ],
            "spec.servers[0].tls.caCertificates",
            id="optional-mutual-without-ca",
        ),
        pytest.param(
            [
                server(
                    port=HTTPS,
                    tls={
                        "mode": "SIMPLE",
                        "credentialName": "c",
                        "serverCertificate": "/c",
                        "privateKey": "/k",
                    },
                )
            ],
            "spec.servers[0].tls.credentialName",
            id="credential-and-files",
        ),
        pytest.param(
            [server(port=HTTPS, tls={"mode": "simple", "credentialName": "c"})],
            "spec.servers[0].tls.mode",
            id="lower-case-mode",
        ),
        pytest.param(
            [server(tls={"mode": "SIMPLE", "credentialName": "c"})],
            "spec.servers[0].tls.mode",
            id="tls-mode-on-plain-http",
        ),
        pytest.param(
            [
                server(
                    port=HTTPS,
                    tls={**CRED, "minProtocolVersion": "TLSV1_3", "maxProtocolVersion": "TLSV1_2"},
                )
            ],
            "spec.servers[0].tls.maxProtocolVersion",
            id="min-above-max",
        ),
        pytest.param(
            [server(port=HTTPS, tls={**CRED, "minProtocolVersion": "SSLV3"})],
            "spec.servers[0].tls.minProtocolVersion",
            id="unknown-tls-version",
        ),
        pytest.param(
            [server(port=HTTPS, tls={**CRED, "cipherSuites": [""]})],
            "spec.servers[0].tls.cipherSuites[0]",
            id="empty-cipher",
        ),
    ],
)
def test_invalid_server_names_its_field(servers: list[dict[str, Any]], field: str) -> None:
    err = rejected(gateway(*servers))
    assert err.field == field
    assert str(err).startswith(f"{field}: ")


def test_error_points_at_the_failing_server_index() -> None:
    err = rejected(
        gateway(
            server(),
            server(port=HTTPS, tls=CRED),
            server(port={**HTTPS, "name": "https-2"}, tls={"mode": "MUTUAL"}),
        )
    )
    assert err.field == "spec.servers[2].tls.serverCertificate"


def test_credential_with_certificate_files_names_credential() -> None:
    err = rejected(
        gateway(
            server(),
            server(
                port=HTTPS,
                tls={
                    "mode": "SIMPLE",
                    "credentialName": "c",
                    "serverCertificate": "/c.pem",
                    "privateKey": "/k.pem",
                },
            ),
        )
    )
    assert err.field == "spec.servers[1].tls.credentialName"


def test_istiod_accepts_these_combinations() -> None:
    # As istiod: a credential plus a CA file, and httpsRedirect on a TCP server (ignored there).
    parsed(
        server(
            port=HTTPS,
            tls={"mode": "MUTUAL", "credentialName": "c", "caCertificates": "/ca.pem"},
        )
    )
    parsed(
        server(port={"number": 9000, "name": "tcp", "protocol": "TCP"}, tls={"httpsRedirect": True})
    )


def test_duplicate_port_names() -> None:
    err = rejected(
        gateway(
            server(port={"number": 80, "name": "web", "protocol": "HTTP"}),
            server(port={"number": 443, "name": "web", "protocol": "HTTPS"}, tls=CRED),
        )
    )
    assert err.field == "spec.servers[1].port.name"
    assert "spec.servers[0]" in err.message


def test_two_http_servers_share_a_port_but_two_tcp_servers_cannot() -> None:
    # istiod merges HTTP servers on one port (e.g. a redirecting one plus a plain one).
    gw = parsed(
        server(hosts=["a.example.com"], tls={"httpsRedirect": True}),
        server(port={**HTTP, "name": "http-b"}, hosts=["b.example.com"]),
    )
    assert [s.port for s in gw.servers] == [HTTP["number"], HTTP["number"]]
    tcp = {"number": 9000, "name": "tcp", "protocol": "TCP"}
    err = rejected(gateway(server(port=tcp), server(port={**tcp, "name": "tcp-b"})))
    assert err.field == "spec.servers[1].port.number"
    assert "spec.servers[0]" in err.message


def test_wrong_types_are_named() -> None:
    raw = gateway({"port": HTTP, "hosts": "a.example.com"})
    assert rejected(raw).field == "spec.servers[0].hosts"
    raw = gateway(server())
    raw["spec"]["selector"] = {"istio": 1}
    assert rejected(raw).field == "spec.selector.istio"
    raw = gateway(server(port=HTTPS, tls={**CRED, "httpsRedirect": "yes"}))
    assert rejected(raw).field == "spec.servers[0].tls.httpsRedirect"


# -- istiod accepts these ------------------------------------------------------------------------


# Istio's TLS mode enum defaults to PASSTHROUGH (0), and istiod's validateServer accepts a
# passthrough `tls` on plain HTTP.
@pytest.mark.parametrize("tls", [{"httpsRedirect": False}, {}], ids=["redirect-false", "empty"])
def test_plain_http_with_a_tls_block_that_asks_for_nothing(tls: dict[str, Any]) -> None:
    s = parsed(server(tls=tls)).servers[0]
    assert s.is_http
    assert s.tls is not None and not s.tls.https_redirect


def test_omitted_tls_mode_is_passthrough_as_in_istio() -> None:
    # The zero value of Istio's TLS mode enum: a credential without `mode: SIMPLE` terminates
    # nothing (istiod warns the certificates are ignored).
    s = parsed(server(port=HTTPS, tls={"credentialName": "web-cert"})).servers[0]
    assert s.tls is not None and s.tls.mode == "PASSTHROUGH"
    assert not s.terminates_https
