#!/usr/bin/env bash
# The main job: build the gateway and the plugins, start a small example upstream and a
# development identity provider, and run the gateway on the example configuration
# (examples/portcullis.toml) in the foreground. Before it settles, it shows requests without a
# token, with an agent's token (allowed, and denied by a plugin) and with an auditor's token
# (read-only) going through, and a delete held for approval, approved, then let through once.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/setup.sh
./scripts/build-plugins.sh
cargo build --release -p portcullis -p portcullis-tests --bin portcullis --bin dev_idp
# The example audit log's signing key (examples/portcullis.toml, [audit]), made once.
if [[ ! -f target/example/audit.key ]]; then
    mkdir -p target/example
    target/release/portcullis keygen --name portcullis.example/quickstart --out target/example/audit
fi
target/release/portcullis check --config examples/portcullis.toml

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# The example upstream: static JSON on 127.0.0.1:8081.
python3 -m http.server 8081 --bind 127.0.0.1 --directory examples/upstream >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    curl -fsS -o /dev/null http://127.0.0.1:8081/hello.json 2>/dev/null && break
    sleep 0.1
done
# The development identity provider: discovery + JWKS on 127.0.0.1:8082, tokens written to
# target/dev-idp/{agent,approver,auditor}.jwt.
rm -rf target/dev-idp
target/release/dev_idp 8082 target/dev-idp &
pids+=($!)
for _ in $(seq 100); do
    [[ -s target/dev-idp/auditor.jwt ]] && break
    sleep 0.1
done
agent="$(cat target/dev-idp/agent.jwt)"
auditor="$(cat target/dev-idp/auditor.jwt)"
RUST_LOG="${RUST_LOG:-portcullis=info}" target/release/portcullis serve --config examples/portcullis.toml &
pids+=($!)

ready=""
for _ in $(seq 600); do
    if curl -fsS http://127.0.0.1:9090/readyz >/dev/null 2>&1; then ready=1; break; fi
    sleep 0.2
done
if [[ -z "$ready" ]]; then
    echo "run: the gateway did not become ready within 120 s" >&2
    exit 1
fi
echo
echo "== GET /hello.json without a token (401: every route needs a verified identity):"
curl -sS -i http://127.0.0.1:8080/hello.json
echo
echo "== GET /hello.json as an agent (allowed; the owner's e-mail address masked by the mask plugin):"
curl -sS -i -H "authorization: Bearer $agent" http://127.0.0.1:8080/hello.json
echo
echo "== DELETE /admin/users/7 as an agent (denied by plugin-template; never reaches the upstream):"
curl -sS -i -X DELETE -H "authorization: Bearer $agent" http://127.0.0.1:8080/admin/users/7
echo
echo "== PUT /hello.json as an auditor (denied: auditors get the read-only plugin configuration):"
curl -sS -i -X PUT -H "authorization: Bearer $auditor" http://127.0.0.1:8080/hello.json
echo
echo "== DELETE /reports/q3.json as an agent (held for a human's approval: 403 ApprovalPending, with the approval id):"
curl -sS -i -X DELETE -H "authorization: Bearer $agent" http://127.0.0.1:8080/reports/q3.json
echo
echo "== the approver's view (portcullis approvals list), then an approval:"
target/release/portcullis approvals list --admin 127.0.0.1:9090 --token-file target/dev-idp/approver.jwt
id="$(target/release/portcullis approvals list --admin 127.0.0.1:9090 --token-file target/dev-idp/approver.jwt | awk 'NR==1 {print $1}')"
target/release/portcullis approvals approve "$id" --reason "quickstart" --admin 127.0.0.1:9090 --token-file target/dev-idp/approver.jwt
echo "== the identical DELETE again (approved: forwarded once; the example upstream, a static file server, answers 501):"
curl -sS -i -X DELETE -H "authorization: Bearer $agent" http://127.0.0.1:8080/reports/q3.json
echo
echo
echo "Portcullis is serving http://127.0.0.1:8080 (admin: http://127.0.0.1:9090/readyz). Ctrl-C stops it."
echo "Tokens for curl: target/dev-idp/agent.jwt and target/dev-idp/auditor.jwt (valid 12 h)."
echo "Approvals: http://127.0.0.1:9090/approvals (paste target/dev-idp/approver.jwt), or"
echo "  target/release/portcullis approvals list --token-file target/dev-idp/approver.jwt"
echo "Audit log: target/release/portcullis audit verify --dir target/example/audit --trust target/example/audit.pub"
echo "Recordings: target/release/portcullis sessions list --dir target/example/sessions"
wait "${pids[2]}"
