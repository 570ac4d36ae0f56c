"""The `istiolite` command: serve, bootstrap, render, proxy-status, proxy-config, version."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from datetime import timedelta
from pathlib import Path

from istiolite import __version__
from istiolite.settings import Settings, env_default, parse_duration, split_host_port

DEBUG_ON_HTTP = ("local", "true", "false")


def _address(value: str) -> str:
    try:
        split_host_port(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return value


def _secure_address(value: str) -> str:
    """HOST:PORT, or "" / "off" for no secure port."""
    if value in ("", "off"):
        return ""
    return _address(value)


def _duration(value: str) -> timedelta:
    try:
        ttl = parse_duration(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if ttl <= timedelta(0):
        raise argparse.ArgumentTypeError(f"{value!r}: must be positive")
    return ttl


def _namespaces(value: str) -> frozenset[str] | None:
    names = frozenset(n.strip() for n in value.split(",") if n.strip())
    return names or None


def _add_security(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--secure-grpc-addr",
        type=_secure_address,
        default=env_default("SECURE_GRPC_ADDR", ":15012"),
        help="TLS gRPC port: xDS and the Istio CA API, callers authenticated by a mesh client "
        'certificate or a Kubernetes service-account token ("off": not served)',
    )
    p.add_argument(
        "--extra-san",
        action="append",
        default=[s for s in env_default("EXTRA_SAN", "").split(",") if s],
        metavar="NAME",
        help="another DNS name in the secure port's certificate (repeatable)",
    )
    p.add_argument(
        "--ca-dir",
        type=Path,
        default=Path(env_default("CA_DIR", "")) if env_default("CA_DIR", "") else None,
        help="the CA's directory: Istio's plug-in cacerts files, else a self-signed root is "
        "created there (root-cert.pem, ca-key.pem 0600) and reused; without it the root is "
        "kept in memory",
    )
    p.add_argument(
        "--ca-key-type",
        choices=("ecdsa", "rsa"),
        default=env_default("CA_KEY_TYPE", "ecdsa"),
        help="key type of a new self-signed root and of workload keys (ECDSA P-256 or RSA 2048)",
    )
    p.add_argument(
        "--workload-cert-ttl",
        type=_duration,
        default=env_default("WORKLOAD_CERT_TTL", "24h"),
        metavar="DURATION",
        help="lifetime of workload certificates when the request names none (e.g. 24h, 90m)",
    )
    p.add_argument(
        "--max-workload-cert-ttl",
        type=_duration,
        default=env_default("MAX_WORKLOAD_CERT_TTL", "2160h"),
        metavar="DURATION",
        help="the longest workload certificate lifetime granted (longer requests are capped)",
    )
    p.add_argument(
        "--kubeconfig",
        type=Path,
        default=Path(env_default("KUBECONFIG", "")) if env_default("KUBECONFIG", "") else None,
        help="Kubernetes API: the source of Services, EndpointSlices, Pods and Istio config, "
        "and the TokenReview authority (default: the in-cluster config inside a pod)",
    )
    p.add_argument(
        "--watch-namespaces",
        type=_namespaces,
        default=_namespaces(env_default("WATCH_NAMESPACES", "")),
        metavar="NS[,NS...]",
        help="read Kubernetes objects only from these namespaces (default: all)",
    )
    p.add_argument(
        "--leader-lease-duration",
        type=_duration,
        default=env_default("LEADER_LEASE_DURATION", "30s"),
        help="with a cluster: the leader-election Lease's duration; the leader renews it "
        "within half of it and candidates try every quarter (default 30s, as istiod)",
    )


def _add_webhooks(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--webhook-addr",
        type=_secure_address,
        default=env_default("WEBHOOK_ADDR", ":15017"),
        help="HTTPS admission webhooks (/validate, /inject) with a mesh CA certificate for "
        'istiod\'s names ("off": not served)',
    )
    p.add_argument(
        "--injection-flavor",
        choices=("istio", "envoy"),
        default=env_default("INJECTION_FLAVOR", "istio"),
        help="what /inject adds: Istio's sidecar (istio/proxyv2: pilot-agent + Envoy) or plain "
        "Envoy started from an `istiolite bootstrap` init container",
    )
    p.add_argument(
        "--proxy-image",
        default=env_default("PROXY_IMAGE", "docker.io/istio/proxyv2:1.24.3"),
        help="image of the istio flavour's istio-proxy and istio-init containers",
    )
    p.add_argument(
        "--envoy-image",
        default=env_default("ENVOY_IMAGE", "docker.io/envoyproxy/envoy:v1.32-latest"),
        help="image of the envoy flavour's proxy container",
    )
    p.add_argument(
        "--istiolite-image",
        default=env_default("ISTIOLITE_IMAGE", "istiolite:dev"),
        help="this control plane's image: the envoy flavour's init containers run its CLI",
    )
    p.add_argument(
        "--native-sidecars",
        action="store_true",
        default=env_default("NATIVE_SIDECARS", "") in ("1", "true"),
        help="inject istio-proxy as a Kubernetes native sidecar (1.29+; per pod also with the "
        'annotation sidecar.istio.io/nativeSidecar: "true")',
    )
    p.add_argument(
        "--gateway-deployment",
        action=argparse.BooleanOptionalAction,
        default=env_default("GATEWAY_DEPLOYMENT", "true") not in ("0", "false"),
        help="with Kubernetes, give every Gateway of class istio/istiolite without "
        "spec.addresses its own Deployment, Service and ServiceAccount, as istiod's "
        "PILOT_ENABLE_GATEWAY_API_DEPLOYMENT_CONTROLLER (default on; the proxy is the "
        "--injection-flavor's image)",
    )
    p.add_argument(
        "--token-issuer-key",
        type=Path,
        default=Path(env_default("TOKEN_ISSUER_KEY", ""))
        if env_default("TOKEN_ISSUER_KEY", "")
        else None,
        metavar="PATH",
        help="trust service-account JWTs of --token-issuer signed by this public key (PEM key, "
        "certificate or JWK Set): a token authority without Kubernetes",
    )
    p.add_argument(
        "--token-issuer",
        default=env_default("TOKEN_ISSUER", "https://kubernetes.default.svc.cluster.local"),
        metavar="ISSUER",
        help="the `iss` of tokens checked with --token-issuer-key (others go to TokenReview)",
    )


def _add_serve(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="run the control plane")
    p.add_argument(
        "--config-dir",
        action="append",
        type=Path,
        default=[],
        help="directory of Kubernetes YAML to serve and watch (repeatable)",
    )
    p.add_argument("--grpc-addr", type=_address, default=env_default("GRPC_ADDR", ":15010"))
    p.add_argument("--http-addr", type=_address, default=env_default("HTTP_ADDR", ":8080"))
    p.add_argument(
        "--monitoring-addr", type=_address, default=env_default("MONITORING_ADDR", ":15014")
    )
    p.add_argument(
        "--mesh-config",
        type=Path,
        default=Path(env_default("MESH_CONFIG", "")) if env_default("MESH_CONFIG", "") else None,
        metavar="FILE",
        help="Istio's mesh config (the `mesh` key of ConfigMap istio, istiod's "
        "/etc/istio/config/mesh): trustDomain, outboundTrafficPolicy, ...; watched and reloaded",
    )
    p.add_argument(
        "--trust-domain",
        default=env_default("TRUST_DOMAIN", "") or None,
        help="SPIFFE trust domain (default: the mesh config's trustDomain, else cluster.local; "
        "given, it wins over the mesh config)",
    )
    p.add_argument(
        "--cluster-id",
        default=env_default("CLUSTER_ID", "Kubernetes"),
        help="name of the cluster served (istiod's CLUSTER_ID); a token caller naming another "
        "cluster in its clusterid metadata is refused",
    )
    p.add_argument(
        "--domain",
        default=env_default("DOMAIN", "cluster.local"),
        help="cluster DNS domain of service host names",
    )
    p.add_argument(
        "--debounce-after",
        type=float,
        default=0.1,
        metavar="SECONDS",
        help="push once config has been quiet this long",
    )
    p.add_argument(
        "--debounce-max",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="push at the latest this long after the first change of a burst",
    )
    p.add_argument(
        "--push-concurrency",
        type=int,
        default=int(env_default("PUSH_CONCURRENCY", "100")),
        metavar="N",
        help="proxies being pushed to at once (istiod's push throttle)",
    )
    p.add_argument(
        "--xds-send-timeout",
        type=float,
        default=float(env_default("XDS_SEND_TIMEOUT", "5")),
        metavar="SECONDS",
        help="close an ADS stream whose peer does not take a response in this long",
    )
    p.add_argument(
        "--grpc-max-recv-size",
        type=int,
        default=int(env_default("GRPC_MAX_RECV_SIZE", str(4 * 1024 * 1024))),
        metavar="BYTES",
        help="largest gRPC message accepted from a client (istiod: 4 MiB)",
    )
    p.add_argument(
        "--debug-on-http",
        nargs="?",
        const="true",
        choices=DEBUG_ON_HTTP,
        default=env_default("DEBUG_ON_HTTP", "local"),
        help="who gets the /debug/* pages on the HTTP port: loopback peers only (local, the "
        "default), every peer (true, or the bare flag), or nobody (false)",
    )
    p.add_argument(
        "--dev-plaintext-sds",
        action="store_true",
        default=env_default("DEV_PLAINTEXT_SDS", "") in ("1", "true"),
        help="DEVELOPMENT ONLY: serve TLS private keys (SDS) on the plaintext gRPC port, to "
        "loopback/Unix peers, for the Secrets a proxy's own Gateways and DestinationRules name",
    )
    _add_security(p)
    _add_webhooks(p)
    p.add_argument(
        "--jwks-refresh-interval",
        type=float,
        default=float(env_default("JWKS_REFRESH_INTERVAL", str(20 * 60))),
        metavar="SECONDS",
        help="how often the key sets of RequestAuthentication jwksUris are fetched again "
        "(istiod: 20 minutes); a failed fetch is retried sooner, with backoff",
    )
    p.add_argument(
        "--log-format", choices=("json", "console"), default=env_default("LOG_FORMAT", "json")
    )
    p.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=env_default("LOG_LEVEL", "info"),
    )


def _serve(args: argparse.Namespace) -> int:
    from istiolite.logs import configure_logging
    from istiolite.security.ca import CAError
    from istiolite.security.local_tokens import TokenIssuerError
    from istiolite.server import Istiolite
    from istiolite.sources.kube.client import KubeConfigError, in_cluster
    from istiolite.sources.mesh_config import MeshConfigError

    configure_logging(args.log_format, args.log_level)
    if not args.config_dir and args.kubeconfig is None and not in_cluster():
        print("istiolite serve: give at least one --config-dir, or --kubeconfig", file=sys.stderr)
        return 2
    for directory in args.config_dir:
        if not directory.is_dir():
            print(f"istiolite serve: --config-dir {directory}: not a directory", file=sys.stderr)
            return 2
    if args.debug_on_http not in DEBUG_ON_HTTP:  # argparse does not check an env default
        choices = ", ".join(DEBUG_ON_HTTP)
        print(
            f"istiolite serve: --debug-on-http (ISTIOLITE_DEBUG_ON_HTTP) {args.debug_on_http!r}:"
            f" not one of {choices}",
            file=sys.stderr,
        )
        return 2
    if args.injection_flavor not in ("istio", "envoy"):  # nor this one
        print(
            f"istiolite serve: --injection-flavor (ISTIOLITE_INJECTION_FLAVOR) "
            f"{args.injection_flavor!r}: not one of istio, envoy",
            file=sys.stderr,
        )
        return 2
    trust_domain = args.trust_domain
    if args.mesh_config is not None:
        from istiolite.sources.mesh_config import read_mesh_config

        try:
            mesh = read_mesh_config(args.mesh_config).config
        except MeshConfigError as err:
            print(f"istiolite serve: --mesh-config: {err}", file=sys.stderr)
            return 2
        # A flag (or ISTIOLITE_TRUST_DOMAIN) given wins; then the file; then the default.
        trust_domain = trust_domain or mesh.trust_domain
    settings = Settings(
        config_dirs=list(args.config_dir),
        mesh_config=args.mesh_config,
        grpc_addr=args.grpc_addr,
        http_addr=args.http_addr,
        monitoring_addr=args.monitoring_addr,
        trust_domain=trust_domain or "cluster.local",
        cluster_id=args.cluster_id,
        domain=args.domain,
        debounce_quiet=args.debounce_after,
        debounce_max=args.debounce_max,
        push_concurrency=max(1, args.push_concurrency),
        xds_send_timeout=max(0.1, args.xds_send_timeout),
        grpc_max_recv_size=max(1024, args.grpc_max_recv_size),
        log_format=args.log_format,
        log_level=args.log_level,
        debug_on_http=args.debug_on_http,
        dev_plaintext_sds=args.dev_plaintext_sds,
        secure_grpc_addr=args.secure_grpc_addr,
        extra_sans=list(args.extra_san),
        ca_dir=args.ca_dir,
        ca_key_type=args.ca_key_type,
        workload_cert_ttl=args.workload_cert_ttl,
        max_workload_cert_ttl=args.max_workload_cert_ttl,
        kubeconfig=args.kubeconfig,
        token_issuer_key=args.token_issuer_key,
        token_issuer=args.token_issuer,
        watch_namespaces=args.watch_namespaces,
        leader_lease_duration=max(1.0, args.leader_lease_duration.total_seconds()),
        jwks_refresh_interval=max(0.1, args.jwks_refresh_interval),
        webhook_addr=args.webhook_addr,
        injection_flavor=args.injection_flavor,
        proxy_image=args.proxy_image,
        envoy_image=args.envoy_image,
        istiolite_image=args.istiolite_image,
        native_sidecars=args.native_sidecars,
        gateway_deployment=args.gateway_deployment,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await Istiolite(settings).run(stop)

    try:
        asyncio.run(main())
    except (CAError, KubeConfigError, TokenIssuerError, MeshConfigError, OSError) as err:
        # A broken --ca-dir, kubeconfig, issuer key or address: named, no traceback.
        print(f"istiolite serve: {err}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    from istiolite import bootstrap, iptables, render, validate
    from istiolite.cli_inspect import proxy_config, proxy_status

    parser = argparse.ArgumentParser(prog="istiolite", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    boot = sub.add_parser("bootstrap", help="write an Envoy bootstrap that points ADS at istiolite")
    bootstrap.add_arguments(boot)
    rend = sub.add_parser("render", help="print the config a proxy would get, offline")
    render.add_arguments(rend)
    status = sub.add_parser("proxy-status", help="which proxies have the config istiolite sent")
    proxy_status.add_arguments(status)
    config = sub.add_parser("proxy-config", help="what istiolite would send one proxy now")
    proxy_config.add_arguments(config)
    check = sub.add_parser("validate", help="check Kubernetes / Istio YAML files as serve would")
    validate.add_arguments(check)
    tables = sub.add_parser(
        "iptables", help="set up istio-init's traffic capture (REDIRECT) in a pod, as root"
    )
    iptables.add_arguments(tables)
    sub.add_parser("version", help="print the version")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "bootstrap":
        from istiolite import bootstrap

        return bootstrap.run(args)
    if args.command == "render":
        from istiolite import render

        return render.run(args)
    if args.command == "proxy-status":
        from istiolite.cli_inspect import proxy_status

        return proxy_status.run(args)
    if args.command == "proxy-config":
        from istiolite.cli_inspect import proxy_config

        return proxy_config.run(args)
    if args.command == "validate":
        from istiolite import validate

        return validate.run(args)
    if args.command == "iptables":
        from istiolite import iptables

        return iptables.run(args)
    print(__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
