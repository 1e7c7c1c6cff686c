"""Copy-me template: a Portcullis policy plugin in Python.

The same policy as the Rust template (examples/plugin-template): refuse some methods on some
paths, configured by the operator, e.g.
    {"blocked_methods": ["DELETE"], "paths": ["/admin/"]}
(`paths` are prefixes here; an empty list means every path).

Build (componentize-py from PyPI; scripts/build-plugins.sh does this):
    componentize-py -d ../../wit -w policy componentize app -o plugin-template-python.wasm

The decision lives in `decide`, a plain function you can test with plain Python.
A Python component is large (~18 MB) and slow to instantiate: run it with
`instance = "reuse"` and a longer `timeout` in the gateway's configuration.
"""
import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, types

NAME = "plugin-template-python"
VERSION = "0.1.0"


def parse_config(text):
    """Parse and validate the operator's configuration; raise ValueError when it is wrong."""
    config = json.loads(text)
    if not isinstance(config, dict):
        raise ValueError("config must be a JSON object")
    unknown = set(config) - {"blocked_methods", "paths"}
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
    methods = config.get("blocked_methods", [])
    paths = config.get("paths", [])
    for m in methods:
        if not isinstance(m, str) or m.upper() != m:
            raise ValueError(f"blocked_methods: {m!r} must be an upper-case string")
    return methods, paths


def decide(methods, paths, method, path):
    """The policy: a reason to refuse, or None."""
    on_path = not paths or any(path.startswith(p) for p in paths)
    if method in methods and on_path:
        return f"{method} is not allowed on {path}"
    return None


class Plugin(exports.Plugin):
    def describe(self):
        return types.Descriptor(
            name=NAME,
            version=VERSION,
            phases=types.Phases.REQUEST_HEADERS,
            request_body_limit=0,
            response_body_limit=0,
            request_content_types=[],
            response_content_types=[],
            patterns=[],
            config_schema=None,
        )

    def configure(self, config):
        try:
            parse_config(config)
        except ValueError as e:
            raise Err(str(e))

    def on_request(self, req, headers):
        # Stateless: read the (already validated) configuration on each call.
        methods, paths = parse_config(host.config())
        reason = decide(methods, paths, req.method, req.path_and_query)
        if reason is None:
            return types.RequestVerdict_Allow()
        return types.RequestVerdict_Deny(
            types.Deny(status=403, code="template-blocked-method", reason=reason, body=None)
        )

    def on_request_body(self, req, headers, body):
        return types.RequestVerdict_Allow()

    def on_response(self, req, status, headers):
        return types.ResponseVerdict_Pass()

    def on_response_body(self, req, status, headers, body):
        return types.ResponseVerdict_Pass()
