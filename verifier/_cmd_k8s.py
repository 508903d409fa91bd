"""``k8s-controller``: run the Kubernetes node controller (``verifier.k8s``).

In a cluster it uses the pod's service account; elsewhere ``--kubeconfig``. It talks to the
verifier with a ``scheduler`` token (``--token-file``, or ``ASSAY_TOKEN``) and exposes its own
``/metrics`` on ``--metrics-port``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
from typing import Any

from assay.errors import ConfigurationError

from ._cli import EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser("k8s-controller", help="map Assay verdicts onto Kubernetes Nodes")
    p.add_argument("--verifier", required=True, metavar="URL", help="the verifier's base URL")
    p.add_argument("--token-file", metavar="FILE", help="a scheduler-role token (or ASSAY_TOKEN)")
    p.add_argument("--ca-file", metavar="FILE", help="CA bundle for the verifier's TLS")
    p.add_argument("--kubeconfig", metavar="FILE", help="default: the in-cluster service account")
    p.add_argument("--namespace", default="assay-system", help="where the Lease lives")
    p.add_argument("--lease-name", default="assay-node-controller")
    p.add_argument("--identity", default=None, help="this replica's name (default: hostname)")
    p.add_argument("--untrusted-effect", default="NoExecute", choices=("NoExecute", "NoSchedule"))
    p.add_argument("--node-name-label", help="take the Assay node name from this Node label")
    p.add_argument("--node-name-annotation", help="…or from this Node annotation")
    p.add_argument("--resync", type=float, default=300.0, help="full reconcile period (s)")
    p.add_argument("--metrics-port", type=int, help="serve /metrics on this port")
    p.set_defaults(func=_run)


def _token(args: argparse.Namespace) -> str:
    if args.token_file:
        with open(args.token_file) as fh:
            return fh.read().strip()
    token = os.environ.get("ASSAY_TOKEN", "").strip()
    if not token:
        raise ConfigurationError("a verifier token is needed: --token-file or ASSAY_TOKEN")
    return token


def _api_client(args: argparse.Namespace) -> Any:
    from kubernetes import client, config

    try:
        if args.kubeconfig:
            config.load_kube_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
        else:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException as exc:
        raise ConfigurationError(f"no Kubernetes configuration: {exc}") from None
    return client.ApiClient()


def _run(args: argparse.Namespace) -> int:
    import logging

    from prometheus_client import CollectorRegistry, start_http_server

    from verifier.k8s.controller import Controller, ControllerConfig
    from verifier.k8s.desired import Policy
    from verifier.k8s.kubeapi import KubeApi
    from verifier.k8s.loops import run_until_stopped
    from verifier.k8s.verifier_api import VerifierApi

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = ControllerConfig(
        namespace=args.namespace,
        lease_name=args.lease_name,
        identity=args.identity or f"{socket.gethostname()}-{os.getpid()}",
        resync=args.resync,
        node_name_label=args.node_name_label,
        node_name_annotation=args.node_name_annotation,
        policy=Policy(untrusted_effect=args.untrusted_effect),
    )
    registry = CollectorRegistry()
    verifier = VerifierApi(args.verifier, _token(args), ca_file=args.ca_file)
    controller = Controller(cfg, KubeApi(_api_client(args)), verifier, registry=registry)
    if args.metrics_port:
        start_http_server(args.metrics_port, registry=registry)
    signal.signal(signal.SIGTERM, lambda *_: controller.stop.set())  # stop between rounds
    run_until_stopped(controller)
    return EXIT_OK
