"""``serve``, ``db upgrade``, ``nodes``, ``golden``, ``token``: the verifier service's commands.

They call the same domain functions as the HTTP API, directly on the configured database, and
print readable tables (rich) or ``--json`` (the API's JSON for the same result). Changes are
audited with the actor ``cli:<user>``; a domain error is one line on stderr (``_cli.main``).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Sequence
from typing import Any

from assay.errors import ConfigurationError

from ._cli import EXIT_OK, read_input


def _common(p: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    p.add_argument("--config", metavar="FILE", help="verifier YAML configuration")
    p.add_argument("--database", metavar="URL", help="SQLAlchemy URL or SQLite file path")
    if json_flag:
        p.add_argument("--json", action="store_true", help="print JSON")


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the verifier service under gunicorn")
    _common(serve, json_flag=False)
    serve.add_argument("--bind", help="HOST:PORT (default 127.0.0.1:8700)")
    serve.add_argument("--workers", type=int, help="gunicorn worker processes (default 2)")
    serve.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    serve.add_argument("--tls-key", help="private key for --tls-cert (PEM)")
    serve.add_argument("--ek-ca-dir", help="directory of TPM-vendor CA certificates")
    serve.add_argument(
        "--log-format", choices=("text", "json"), help="one line per event (default text)"
    )
    serve.set_defaults(func=_serve)

    db = sub.add_parser("db", help="database schema").add_subparsers(
        dest="db_command", metavar="SUBCOMMAND", required=True
    )
    up = db.add_parser("upgrade", help="apply the Alembic migrations up to the newest schema")
    _common(up)
    up.set_defaults(func=_db_upgrade)
    init = db.add_parser(
        "init",
        help="upgrade, and on a database without tokens create the bootstrap admin token "
        "(printed once)",
    )
    _common(init)
    init.set_defaults(func=_db_init)

    nodes = sub.add_parser("nodes", help="the cluster inventory").add_subparsers(
        dest="nodes_command", metavar="SUBCOMMAND", required=True
    )
    ls = nodes.add_parser("list", help="nodes and their state")
    _common(ls)
    ls.add_argument("--state", help="only nodes in this state")
    ls.add_argument("--label", action="append", default=[], metavar="K=V", help="label filter")
    ls.add_argument(
        "--booted", metavar="NAME@VERSION", help="only nodes whose last appraisal matched it"
    )
    ls.add_argument(
        "--outdated",
        action="store_true",
        help="only nodes booting a revoked, retired or superseded golden version",
    )
    ls.set_defaults(func=_nodes_list)
    show = nodes.add_parser("show", help="one node and its recent attestations")
    _common(show)
    show.add_argument("name")
    show.set_defaults(func=_nodes_show)
    sweep = nodes.add_parser("sweep", help="mark trusted nodes past their freshness window stale")
    _common(sweep)
    sweep.set_defaults(func=_nodes_sweep)
    move = nodes.add_parser("move", help="give a node (its TPM, labels, state) a new name")
    _common(move)
    move.add_argument("name")
    move.add_argument("new_name")
    move.add_argument("--reason", required=True)
    move.set_defaults(func=_nodes_move)
    label = nodes.add_parser("label", help="set a node's labels (replaces them; re-appraises)")
    _common(label)
    label.add_argument("name")
    label.add_argument("--label", action="append", default=[], metavar="K=V", help="repeat")
    label.add_argument("--reason", required=True)
    label.set_defaults(func=_nodes_label)

    _register_golden(sub)
    _register_runtime(sub)
    _register_token(sub)


def _register_token(sub: Any) -> None:
    tok = sub.add_parser("token", help="API tokens").add_subparsers(
        dest="token_command", metavar="SUBCOMMAND", required=True
    )
    create = tok.add_parser("create", help="create a bearer token (printed once)")
    _common(create)
    create.add_argument(
        "--role", required=True, choices=("admin", "reviewer", "scheduler", "enroll")
    )
    create.add_argument(
        "--ttl", type=float, help="expire after this many seconds (default max_token_lifetime)"
    )
    create.add_argument("--single-use", action="store_true", help="valid for one request")
    create.add_argument("--description", default="")
    create.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="K=V",
        help="enroll tokens: a label every node it enrolls receives (repeat)",
    )
    create.set_defaults(func=_token_create)
    ls = tok.add_parser("list", help="tokens (never their secrets)")
    _common(ls)
    ls.set_defaults(func=_token_list)
    revoke = tok.add_parser("revoke", help="revoke a token by its id")
    _common(revoke)
    revoke.add_argument("id")
    revoke.add_argument("--reason", required=True)
    revoke.set_defaults(func=_token_revoke)


def _register_golden(sub: Any) -> None:
    golden = sub.add_parser("golden", help="golden measurement sets").add_subparsers(
        dest="golden_command", metavar="SUBCOMMAND", required=True
    )
    add = golden.add_parser("add", help="upload a golden set (YAML, or CoRIM with --corim)")
    _common(add)
    add.add_argument("file")
    add.add_argument("--corim", action="store_true", help="the file is a CoRIM (CBOR)")
    add.set_defaults(func=_golden_add)
    ls = golden.add_parser("list", help="golden sets and assignments")
    _common(ls)
    ls.set_defaults(func=_golden_list)
    assign = golden.add_parser("assign", help="apply a golden set to nodes matching labels")
    _common(assign)
    assign.add_argument("name")
    _selector_option(assign)
    assign.set_defaults(func=_golden_assign)
    roll = golden.add_parser(
        "rollout", help="a set's versions and which nodes booted which (from their verified logs)"
    )
    _common(roll)
    roll.add_argument("name")
    roll.set_defaults(func=_golden_rollout)
    canary = golden.add_parser(
        "canary", help="limit one version to nodes with labels (--all: every node of the set)"
    )
    _common(canary)
    canary.add_argument("name")
    canary.add_argument("version")
    which = canary.add_mutually_exclusive_group(required=True)
    which.add_argument("--selector", action="append", metavar="K=V", help="label (repeat)")
    which.add_argument("--all", action="store_true", help="roll the version out to every node")
    canary.set_defaults(func=_golden_canary)
    for action in ("retire", "revoke"):
        p = golden.add_parser(action, help=f"{action} one version (re-appraises affected nodes)")
        _common(p)
        p.add_argument("name")
        p.add_argument("version")
        p.add_argument("--reason", required=True)
        p.set_defaults(func=_golden_status, status=f"{action}d")


def _selector_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--selector",
        action="append",
        default=[],
        metavar="K=V",
        help="label the nodes must carry (repeat; none = every node)",
    )


def _register_runtime(sub: Any) -> None:
    runtime = sub.add_parser("runtime", help="runtime (IMA) policies").add_subparsers(
        dest="runtime_command", metavar="SUBCOMMAND", required=True
    )
    add = runtime.add_parser("add", help="upload a runtime policy (YAML)")
    _common(add)
    add.add_argument("file")
    _selector_option(add)
    add.set_defaults(func=_runtime_add)
    ls = runtime.add_parser("list", help="runtime policies and assignments")
    _common(ls)
    ls.set_defaults(func=_runtime_list)
    show = runtime.add_parser("show", help="one version, with its YAML")
    _common(show)
    show.add_argument("name")
    show.add_argument("version")
    show.set_defaults(func=_runtime_show)
    assign = runtime.add_parser("assign", help="apply a runtime policy to nodes matching labels")
    _common(assign)
    assign.add_argument("name")
    _selector_option(assign)
    assign.set_defaults(func=_runtime_assign)
    for action, status in (("activate", "active"), ("retire", "retired"), ("revoke", "revoked")):
        p = runtime.add_parser(action, help=f"{action} one version (re-appraises its nodes)")
        _common(p)
        p.add_argument("name")
        p.add_argument("version")
        p.add_argument("--reason", required=action == "revoke", default="")
        p.set_defaults(func=_runtime_status, status=status)


# --- plumbing -------------------------------------------------------------------------------


def _config(args: argparse.Namespace, **flags: Any) -> Any:
    from verifier.service.config import load_config

    return load_config(args.config, overrides={"database": args.database, **flags})


def _upgraded_store(database: str) -> Any:
    """The configured store, refused unless it is at the newest schema."""
    from verifier.store import Store
    from verifier.store.migrate import current_revision, head_revision

    store = Store(database)
    if current_revision(store) != head_revision():
        store.close()
        raise ConfigurationError(
            f"database {store.url} is not at the newest schema: run `python -m verifier db upgrade`"
        )
    return store


def _services(args: argparse.Namespace) -> Any:
    from verifier.service.context import Services

    config = _config(args)
    return Services(config=config, store=_upgraded_store(config.database))


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _print(args: argparse.Namespace, data: Any, table: Any) -> int:
    if getattr(args, "json", False):
        json.dump(data, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        from rich.console import Console

        Console().print(table)
    return EXIT_OK


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Any:
    from rich.table import Table

    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    return t


def _labels(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise ConfigurationError(f"label {item!r} must be KEY=VALUE")
        out[k] = v
    return out


# --- commands -------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from verifier.service import _multiproc

    _multiproc.prepare()  # before prometheus_client is imported: workers share metric files
    from verifier.service.server import serve

    config = _config(
        args,
        bind=args.bind,
        workers=args.workers,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        ek_ca_dir=args.ek_ca_dir,
        log_format=args.log_format,
    )
    _upgraded_store(config.database).close()
    serve(config)
    return EXIT_OK


def _db_upgrade(args: argparse.Namespace) -> int:
    from verifier.store import Store, upgrade

    store = Store(_config(args).database)
    revision = upgrade(store)
    data = {"database": store.url, "revision": revision}
    if args.json:
        return _print(args, data, None)
    print(f"database {store.url} is at revision {revision}")
    return EXIT_OK


def _db_init(args: argparse.Namespace) -> int:
    """``db upgrade``, then the bootstrap admin token if the database has no token yet."""
    from verifier.service import tokens
    from verifier.service.context import Services
    from verifier.store import Store, upgrade

    config = _config(args)
    store = Store(config.database)
    revision = upgrade(store)
    made = tokens.bootstrap_admin(Services(config=config, store=store), _actor())
    if args.json:
        data = {"database": store.url, "revision": revision}
        return _print(args, {**data, "bootstrap_token": made and made.to_json()}, None)
    print(f"database {store.url} is at revision {revision}")
    if made is None:
        print("tokens exist already: no bootstrap token (create more with `token create`)")
    else:
        print(
            f"bootstrap admin token, shown only now (expires {made.token.to_json()['expires_at']}):"
        )
        print(made.secret)
    return EXIT_OK


def _nodes_list(args: argparse.Namespace) -> int:
    from verifier.service import inventory

    state = None if args.state is None else inventory.parse_state(args.state)
    nodes = inventory.list_nodes(
        _services(args),
        state=state,
        labels=_labels(args.label),
        booted=args.booted,
        outdated=args.outdated,
    )
    data = [n.to_json() for n in nodes]
    rows = [
        (
            n["name"],
            n["state"],
            n["state_since"],
            ", ".join(n["booted"]),
            ", ".join(f"{o['version']} {o['why']}" for o in n["outdated"]),
            n["reason"],
        )
        for n in data
    ]
    return _print(
        args,
        {"nodes": data},
        _table("nodes", ("node", "state", "since", "booted", "outdated", "reason"), rows),
    )


def _nodes_show(args: argparse.Namespace) -> int:
    from verifier.service import inventory

    svc = _services(args)
    node = inventory.show_node(svc, args.name).to_json()
    atts = [a.to_json() for a in inventory.node_history(svc, args.name, limit=20)]
    if args.json:
        return _print(args, {**node, "attestations": atts}, None)
    info = _table(f"node {node['name']}", ("field", "value"), list(node.items()))
    hist = _table(
        "attestations",
        ("id", "time", "status", "reboot", "reason"),
        [(a["id"], a["time"], a["status"], a["reboot"], a["reason"]) for a in atts],
    )
    _print(args, node, info)
    return _print(args, node, hist)


def _nodes_sweep(args: argparse.Namespace) -> int:
    from verifier.service import inventory

    stale = inventory.sweep_stale(_services(args), _actor())
    return _print(args, {"stale": stale}, _table("now stale", ("node",), [(n,) for n in stale]))


def _nodes_move(args: argparse.Namespace) -> int:
    from verifier.service import inventory

    out = inventory.move_node(_services(args), args.name, args.new_name, args.reason, _actor())
    return _print(args, out.to_json(), _table("moved", ("from", "to"), [(args.name, out.name)]))


def _nodes_label(args: argparse.Namespace) -> int:
    from verifier.service import inventory

    labels = _labels(args.label)
    out = inventory.set_labels(_services(args), args.name, labels, args.reason, _actor())
    sel = ",".join(f"{k}={v}" for k, v in out.labels.items())
    return _print(
        args,
        out.to_json(),
        _table("labelled", ("node", "labels", "state"), [(out.name, sel, out.state)]),
    )


def _golden_add(args: argparse.Namespace) -> int:
    from verifier.service import golden_ops

    data = read_input(args.file, "golden set", limit=golden_ops.MAX_GOLDEN)
    out = golden_ops.upload(_services(args), "corim" if args.corim else "yaml", data, _actor())
    data_json = out.to_json()
    return _print(
        args, data_json, _table("added", ("golden", "status"), [(data_json["id"], out.status)])
    )


def _golden_list(args: argparse.Namespace) -> int:
    from verifier.service import golden_ops

    listing = golden_ops.list_sets(_services(args))
    data = listing.to_json()
    rows = [(g["id"], g["status"], g["reason"], g["changed_at"]) for g in data["golden"]]
    return _print(
        args, data, _table("golden sets", ("golden", "status", "reason", "changed"), rows)
    )


def _golden_assign(args: argparse.Namespace) -> int:
    from verifier.service import golden_ops

    out = golden_ops.assign(_services(args), args.name, _labels(args.selector), _actor())
    return _print_assigned(args, out, "golden")


def _print_assigned(args: argparse.Namespace, out: Any, what: str) -> int:
    sel = ",".join(f"{k}={v}" for k, v in out.assignment.selector.items()) or "*"
    return _print(args, out.to_json(), _table("assigned", (what, "selector"), [(args.name, sel)]))


def _golden_rollout(args: argparse.Namespace) -> int:
    from verifier.service import rollout

    data = rollout.rollout(_services(args), args.name).to_json()
    rows = [
        (
            v["version"],
            v["status"],
            ",".join(f"{k}={x}" for k, x in (v["canary"] or {}).items()) or "*",
            v["nodes"],
            ", ".join(v["node_names"][:8]) + (" …" if v["nodes"] > 8 else ""),
        )
        for v in data["versions"]
    ]
    title = f"rollout of {args.name} (active: {', '.join(data['active']) or 'none'})"
    return _print(
        args, data, _table(title, ("version", "status", "canary", "nodes", "names"), rows)
    )


def _golden_canary(args: argparse.Namespace) -> int:
    from verifier.service import golden_ops

    selector = None if args.all else _labels(args.selector)
    out = golden_ops.set_canary(_services(args), args.name, args.version, selector, _actor())
    sel = ",".join(f"{k}={v}" for k, v in (out.canary or {}).items()) or "* (every node)"
    rows = [(r.node, r.status, r.state, r.reason) for r in out.reappraised]
    title = f"{args.name}@{args.version} applies to {sel}: nodes re-appraised"
    return _print(args, out.to_json(), _table(title, ("node", "verdict", "state", "reason"), rows))


def _golden_status(args: argparse.Namespace) -> int:
    from verifier.service import golden_ops

    out = golden_ops.set_status(
        _services(args), args.name, args.version, args.status, args.reason, _actor()
    )
    rows = [(r.node, r.status, r.state, r.reason) for r in out.reappraised]
    title = f"{out.golden.name}@{out.golden.version} {out.golden.status}: nodes re-appraised"
    return _print(args, out.to_json(), _table(title, ("node", "verdict", "state", "reason"), rows))


def _runtime_add(args: argparse.Namespace) -> int:
    from verifier.service import runtime_ops

    data = read_input(args.file, "runtime policy", limit=runtime_ops.MAX_RUNTIME)
    out = runtime_ops.upload(_services(args), data, _actor(), _labels(args.selector))
    return _print(
        args, out.to_json(), _table("added", ("policy", "status"), [(out.ref, out.status)])
    )


def _runtime_list(args: argparse.Namespace) -> int:
    from verifier.service import runtime_ops

    data = runtime_ops.list_policies(_services(args)).to_json()
    rows = [(p["id"], p["status"], p["reason"], p["changed_at"]) for p in data["policies"]]
    table = _table("runtime policies", ("policy", "status", "reason", "changed"), rows)
    return _print(args, data, table)


def _runtime_show(args: argparse.Namespace) -> int:
    from verifier.service import runtime_ops

    out = runtime_ops.show(_services(args), args.name, args.version)
    rows = [(out.policy.ref, out.policy.status, out.policy.reason)]
    return _print(
        args, out.to_json(), _table("runtime policy", ("policy", "status", "reason"), rows)
    )


def _runtime_assign(args: argparse.Namespace) -> int:
    from verifier.service import runtime_ops

    out = runtime_ops.assign(_services(args), args.name, _labels(args.selector), _actor())
    return _print_assigned(args, out, "policy")


def _runtime_status(args: argparse.Namespace) -> int:
    from verifier.service import runtime_ops

    reason = args.reason.strip()
    out = runtime_ops.set_status(
        _services(args), args.name, args.version, args.status, reason, _actor()
    )
    rows = [(r.node, r.status, r.state, r.reason) for r in out.reappraised]
    title = f"{out.policy.ref} {out.policy.status}: nodes re-appraised"
    return _print(args, out.to_json(), _table(title, ("node", "verdict", "state", "reason"), rows))


def _token_create(args: argparse.Namespace) -> int:
    from verifier.service import tokens

    made = tokens.create(
        _services(args),
        args.role,
        ttl=args.ttl,
        single_use=args.single_use,
        description=args.description,
        labels=_labels(args.label),
        actor=_actor(),
    )
    if args.json:
        return _print(args, made.to_json(), None)
    print(made.secret)
    return EXIT_OK


def _token_list(args: argparse.Namespace) -> int:
    from verifier.service import tokens

    data = [t.to_json() for t in tokens.list_all(_services(args))]
    table = _table(
        "tokens",
        ("id", "role", "labels", "expires", "used", "revoked", "description"),
        [
            (
                t["id"],
                t["role"] + (" (single use)" if t["single_use"] else ""),
                ",".join(f"{k}={v}" for k, v in t["labels"].items()),
                t["expires_at"],
                t["used_at"],
                t["revoked_at"],
                t["description"],
            )
            for t in data
        ],
    )
    return _print(args, {"tokens": data}, table)


def _token_revoke(args: argparse.Namespace) -> int:
    from verifier.service import tokens

    out = tokens.revoke(_services(args), args.id, args.reason, _actor())
    return _print(args, out.to_json(), _table("revoked", ("id", "role"), [(out.id, out.role)]))
