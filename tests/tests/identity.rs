//! Identity end to end: a local OIDC identity provider (discovery + JWKS over real TLS on
//! 127.0.0.1) in front of which a real gateway verifies bearer tokens, admits callers by access
//! rule, picks their plugins, and refuses every forged, stale, misdirected or misplaced token
//! with 401/400/403, never echoing the token in a response or a log line.
#![allow(clippy::unwrap_used)]
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis_tests::gateway::{Answer, TestGateway, TlsClient, admin_get};
use portcullis_tests::mock_upstream::{MockUpstream, Reply};
use portcullis_tests::oidc::{Idp, SigningKey, compact, now, provider_toml};
use portcullis_tests::tls::Certs;
use serde_json::{Value, json};

const AUD: &str = "api://portcullis";

/// A test identity provider, an upstream, and a gateway trusting the IdP.
struct Env {
    idp: Idp,
    upstream: MockUpstream,
    gw: TestGateway,
    _idp_dir: tempfile::TempDir,
}

/// Start the IdP (serving `key`), then a gateway whose config is `config(idp_issuer,
/// upstream_url)`. `down` keeps the IdP answering 503 while the gateway starts.
async fn env_with(key: SigningKey, down: bool, config: impl FnOnce(&str, &str) -> String) -> Env {
    portcullis_tests::logs::capture();
    let idp_dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(idp_dir.path());
    let idp = Idp::start(&certs, key).await;
    idp.set_down(down);
    let upstream = MockUpstream::start(|_| Reply::json(r#"{"ok":true}"#)).await;
    let text = config(&idp.issuer(), &upstream.url());
    let ca = certs.ca.clone();
    let gw = TestGateway::start(&text, |dir| {
        std::fs::copy(&ca, dir.join("idp-ca.pem")).unwrap();
    })
    .await;
    Env {
        idp,
        upstream,
        gw,
        _idp_dir: idp_dir,
    }
}

/// One provider `agents`, the `misbehave` plugin (steered by `x-misbehave`), and a route `api`
/// admitting role `agent`.
async fn env(provider_extra: &str) -> Env {
    let provider_extra = provider_extra.to_string();
    env_with(SigningKey::rsa("k1"), false, move |issuer, upstream| {
        format!(
            r#"
{}
[[plugin]]
name = "misbehave"
file = "misbehave.wasm"

[[route]]
name = "api"
upstream = "{upstream}"
plugins = ["misbehave"]
[[route.access]]
name = "agents"
roles = ["agent"]
"#,
            provider_toml("agents", issuer, AUD, &provider_extra)
        )
    })
    .await
}

fn agent_claims(idp: &Idp) -> Value {
    let mut claims = idp.claims(AUD, "agent-7");
    claims["roles"] = json!(["agent"]);
    claims
}

async fn call(client: &TlsClient, token: Option<&str>, extra: &[(&str, &str)]) -> Answer {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(b) = &bearer {
        headers.push(("authorization", b));
    }
    client
        .send("GET", "/items", &headers, bytes::Bytes::new())
        .await
}

/// The parts of a token that are secret-bearing: the payload and the signature. Neither may
/// appear in a response (body or headers) or in any log line.
fn assert_not_leaked(token: &str, answer: &Answer) {
    let mut parts = token.split('.').skip(1).filter(|p| p.len() >= 8);
    let mut seen = format!("{}\n{:?}", answer.text(), answer.headers);
    seen.push_str(&portcullis_tests::logs::text());
    for part in parts.by_ref() {
        assert!(!seen.contains(part), "token text leaked: {part}");
    }
}

fn challenge(answer: &Answer) -> String {
    answer
        .headers
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_valid_token_reaches_the_upstream_and_plugins_see_the_principal() {
    let env = env(r#"claims = ["preferred_username"]"#).await;
    let mut claims = agent_claims(&env.idp);
    claims["azp"] = json!("app-42");
    claims["scp"] = json!("Blob.Read Blob.List");
    claims["groups"] = json!(["g1", "g2"]);
    claims["preferred_username"] = json!("agent7@example.test");
    let token = env.idp.mint(&claims);
    for http2 in [false, true] {
        let client = env.gw.client(http2);
        let ok = call(&client, Some(&token), &[]).await;
        assert_eq!(ok.status, 200, "{}", ok.text());
        assert_not_leaked(&token, &ok);
        let who = call(&client, Some(&token), &[("x-misbehave", "whoami")]).await;
        assert_eq!(who.status, 418, "{}", who.text());
        let message = who.json()["error"]["message"].as_str().unwrap().to_string();
        let principal: Value =
            serde_json::from_str(message.split(" (request id").next().unwrap()).unwrap();
        assert_eq!(
            principal,
            json!({
                "subject": "agent-7",
                "issuer": env.idp.issuer(),
                "tenant": null,
                "app_id": "app-42",
                "roles": ["agent"],
                "groups": ["g1", "g2"],
                "groups_complete": true,
                "scopes": ["Blob.Read", "Blob.List"],
                "claims": [["preferred_username", "agent7@example.test"]],
            })
        );
        assert_not_leaked(&token, &who);
    }
    // The caller's token is the gateway's business: it never reaches the upstream.
    let seen = env.upstream.seen();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|s| !s.headers.contains_key("authorization"))
    );
    // Verified once, then served from the cache: the keys were fetched once, at start.
    assert_eq!(env.idp.jwks_fetches(), 1);
}

#[tokio::test]
async fn forged_stale_and_misdirected_tokens_are_refused_with_401_and_never_echoed() {
    let env = env("").await;
    let idp = &env.idp;
    let trusted = idp.key.lock().unwrap().clone();
    let valid = agent_claims(idp);
    let with = |patch: Value| {
        let mut c = valid.clone();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let header_kid = |kid: &str| {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(kid.to_string());
        h
    };
    let stranger = SigningKey::rsa("k1");
    let good = trusted.mint(&valid);
    let good_parts: Vec<&str> = good.split('.').collect();
    // An attacker's JWKS the token points at through `jku`: it must never be fetched.
    let attacker_jwks = MockUpstream::start({
        let jwk = stranger.public_json();
        move |_| Reply::json(&json!({"keys": [jwk]}).to_string())
    })
    .await;
    let mut jku_header = header_kid("attacker");
    jku_header.jku = Some(format!("{}/keys", attacker_jwks.url()));
    let hs256_with_public_key = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        let secret = serde_json::to_vec(&trusted.public_json()).unwrap();
        jsonwebtoken::encode(&h, &valid, &EncodingKey::from_secret(&secret).unwrap()).unwrap()
    };
    let tampered = {
        let forged = with(json!({"roles": ["agent", "admin"], "sub": "root"}));
        let forged = compact(&json!({"alg": "RS256", "kid": "k1"}), &forged, b"x");
        let forged_payload = forged.split('.').nth(1).unwrap().to_string();
        format!("{}.{}.{}", good_parts[0], forged_payload, good_parts[2])
    };
    let oversized = trusted.mint(&with(json!({"padding": "p".repeat(20_000)})));
    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed", "not-a-token".into(), "malformed"),
        ("two parts", "abc.def".into(), "malformed"),
        (
            "alg none",
            compact(&json!({"alg": "none", "kid": "k1"}), &valid, b""),
            "malformed",
        ),
        (
            "HS256 keyed with the RSA public key",
            hs256_with_public_key,
            "algorithm",
        ),
        (
            "wrong issuer",
            trusted.mint(&with(json!({"iss": "https://evil.example"}))),
            "issuer",
        ),
        (
            "wrong audience",
            trusted.mint(&with(json!({"aud": "api://other"}))),
            "audience",
        ),
        (
            "expired",
            trusted.mint(&with(json!({"exp": now() - 3600, "nbf": now() - 7200}))),
            "expired",
        ),
        (
            "not yet valid",
            trusted.mint(&with(json!({"nbf": now() + 3600}))),
            "not valid yet",
        ),
        (
            "no exp",
            trusted.mint(&{
                let mut c = valid.clone();
                c.as_object_mut().unwrap().remove("exp");
                c
            }),
            "exp",
        ),
        (
            "unknown kid",
            stranger.sign(header_kid("nope"), &valid),
            "no signing key",
        ),
        (
            "kid path traversal",
            stranger.sign(header_kid("../../../../etc/passwd"), &valid),
            "no signing key",
        ),
        (
            "kid SQL injection",
            stranger.sign(header_kid("' OR '1'='1' --"), &valid),
            "no signing key",
        ),
        ("tampered payload", tampered, "signature"),
        (
            "valid signature from an untrusted key with a trusted kid",
            stranger.mint(&valid),
            "signature",
        ),
        (
            "jku pointing at the attacker's keys",
            stranger.sign(jku_header, &valid),
            "no signing key",
        ),
        ("oversized", oversized, "over the"),
    ];
    let client = env.gw.client(false);
    let fetches_before = idp.jwks_fetches();
    for (name, token, reason) in &cases {
        let answer = call(&client, Some(token), &[]).await;
        assert_eq!(answer.status, 401, "{name}: {}", answer.text());
        let message = answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            message.to_lowercase().contains(reason),
            "{name}: {message:?} does not say {reason:?}"
        );
        assert_eq!(answer.json()["error"]["code"], "InvalidToken", "{name}");
        let challenge = challenge(&answer);
        assert!(
            challenge.starts_with("Bearer realm=\"portcullis\", error=\"invalid_token\""),
            "{name}: {challenge}"
        );
        assert!(answer.headers.contains_key("x-request-id"), "{name}");
        assert_not_leaked(token, &answer);
    }
    // The good token still works, and nothing bad reached the upstream or the attacker.
    assert_eq!(call(&client, Some(&good), &[]).await.status, 200);
    assert_eq!(env.upstream.seen().len(), 1);
    assert!(attacker_jwks.seen().is_empty(), "the jku URL was fetched");
    // Unknown kids refetch the keys at most once per refresh_min_interval (30s by default).
    assert!(
        idp.jwks_fetches() <= fetches_before + 1,
        "{} fetches",
        idp.jwks_fetches() - fetches_before
    );
}

#[tokio::test]
async fn missing_misplaced_and_repeated_tokens_are_refused() {
    let env = env("").await;
    let client = env.gw.client(true);
    let token = env.idp.mint(&agent_claims(&env.idp));

    let missing = call(&client, None, &[]).await;
    assert_eq!(missing.status, 401, "{}", missing.text());
    assert_eq!(challenge(&missing), "Bearer realm=\"portcullis\"");
    assert_eq!(missing.json()["error"]["code"], "MissingToken");

    let basic = call(&client, None, &[("authorization", "Basic YWdlbnQ6cHc=")]).await;
    assert_eq!(basic.status, 401);
    assert_eq!(challenge(&basic), "Bearer realm=\"portcullis\"");

    let in_query = client.get(&format!("/items?access_token={token}")).await;
    assert_eq!(in_query.status, 400, "{}", in_query.text());
    assert!(challenge(&in_query).contains("error=\"invalid_request\""));
    assert_not_leaked(&token, &in_query);

    let bearer = format!("Bearer {token}");
    let twice = client
        .send(
            "GET",
            "/items",
            &[("authorization", &bearer), ("authorization", &bearer)],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(twice.status, 400, "{}", twice.text());
    assert!(challenge(&twice).contains("error=\"invalid_request\""));
    assert_not_leaked(&token, &twice);

    assert!(env.upstream.seen().is_empty());
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_the_keys_at_most_once_per_interval() {
    let env = env("refresh_min_interval = \"1h\"\nalgorithms = [\"RS256\", \"ES256\"]").await;
    let client = env.gw.client(true);
    let stranger = SigningKey::ec("x");
    let claims = agent_claims(&env.idp);
    let before = env.idp.jwks_fetches();
    let requests = (0..40).map(|i| {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(format!("random-{i}"));
        let token = stranger.sign(h, &claims);
        let client = &client;
        async move { call(client, Some(&token), &[]).await.status }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert!(
        env.idp.jwks_fetches() <= before + 1,
        "{} fetches for 40 unknown kids",
        env.idp.jwks_fetches() - before
    );
}

#[tokio::test]
async fn keys_rotate_at_the_idp_during_traffic_without_a_restart() {
    let env = env("refresh_min_interval = \"0s\"\nalgorithms = [\"RS256\", \"EdDSA\"]").await;
    let old = env.idp.key.lock().unwrap().clone();
    let claims = agent_claims(&env.idp);
    let old_token = old.mint(&claims);
    let client = env.gw.client(true);
    assert_eq!(call(&client, Some(&old_token), &[]).await.status, 200);

    // Traffic with the old token keeps flowing while the IdP rotates.
    let traffic = {
        let client = env.gw.client(true);
        let token = old_token.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..30 {
                statuses.push(call(&client, Some(&token), &[]).await.status);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            statuses
        })
    };
    let new = SigningKey::ed("k2");
    env.idp.publish(&[&new]);
    let new_token = new.mint(&claims);
    let first = call(&client, Some(&new_token), &[]).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let statuses = traffic.await.unwrap();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 401),
        "{statuses:?}"
    );
    // The old key is gone: its cached verification is dropped with it.
    let after = call(&client, Some(&old_token), &[]).await;
    assert_eq!(after.status, 401, "{}", after.text());
    assert_eq!(call(&client, Some(&new_token), &[]).await.status, 200);
}

#[tokio::test]
async fn an_idp_down_at_start_makes_readyz_fail_and_requests_503_until_it_recovers() {
    let env = env_with(SigningKey::rsa("k1"), true, |issuer, upstream| {
        format!(
            r#"
{}
[[route]]
name = "api"
upstream = "{upstream}"
[[route.access]]
name = "agents"
roles = ["agent"]
"#,
            provider_toml("agents", issuer, AUD, "")
        )
    })
    .await;
    let admin = env.gw.running.admin_addr().unwrap();
    let readyz = admin_get(admin, "/readyz").await;
    assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");
    assert!(
        readyz.contains("identity provider agents: signing keys not loaded")
            && readyz.contains("HTTP 503"),
        "{readyz}"
    );
    assert!(
        admin_get(admin, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let token = env.idp.mint(&agent_claims(&env.idp));
    let client = env.gw.client(false);
    let refused = call(&client, Some(&token), &[]).await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(
        refused.json()["error"]["code"],
        "IdentityProviderUnavailable"
    );
    assert_not_leaked(&token, &refused);

    env.idp.set_down(false);
    portcullis_tests::within(Duration::from_secs(30), async {
        while !admin_get(admin, "/readyz")
            .await
            .starts_with("HTTP/1.1 200")
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(call(&client, Some(&token), &[]).await.status, 200);
}

#[tokio::test]
async fn access_rules_admit_by_identity_and_pick_each_callers_plugins() {
    let env = env_with(SigningKey::rsa("k1"), false, |issuer, upstream| {
        format!(
            r#"
{}
[[plugin]]
name = "deny-operations"
alias = "deny-deletes"
file = "deny-operations.wasm"
config = {{ operations = ["DELETE /items"] }}
[[plugin]]
name = "deny-operations"
alias = "deny-nothing"
file = "deny-operations.wasm"
config = {{ operations = [] }}

[[route]]
name = "api"
upstream = "{upstream}"
[[route.access]]
name = "auditors"
roles = ["auditor"]
plugins = ["deny-nothing"]
[[route.access]]
name = "agents"
roles = ["agent"]
plugins = ["deny-deletes"]
[[route.access]]
name = "ops"
groups = ["g-ops"]
plugins = ["deny-nothing"]
"#,
            provider_toml("agents", issuer, AUD, "")
        )
    })
    .await;
    let idp = &env.idp;
    let client = env.gw.client(false);
    let token = |roles: Value, groups: Value, overage: bool| {
        let mut c = idp.claims(AUD, "caller");
        c["roles"] = roles;
        c["groups"] = groups;
        if overage {
            c["_claim_names"] = json!({"groups": "src1"});
            c["_claim_sources"] = json!({"src1": {"endpoint": "https://graph.example/x"}});
        }
        idp.mint(&c)
    };
    let delete = |token: String| {
        let client = &client;
        async move {
            client
                .send(
                    "DELETE",
                    "/items",
                    &[("authorization", &format!("Bearer {token}"))],
                    bytes::Bytes::new(),
                )
                .await
        }
    };
    // The same request: denied by the agents' plugin configuration, allowed by the auditors'.
    let agent = delete(token(json!(["agent"]), json!([]), false)).await;
    assert_eq!(agent.status, 403, "{}", agent.text());
    assert_eq!(agent.json()["error"]["code"], "OperationDenied");
    let auditor = delete(token(json!(["auditor"]), json!([]), false)).await;
    assert_eq!(auditor.status, 200, "{}", auditor.text());
    // A group rule admits a member...
    let member = delete(token(json!([]), json!(["g-ops"]), false)).await;
    assert_eq!(member.status, 200, "{}", member.text());
    // ...but never a token whose groups were elided, whatever groups it still lists.
    let overage = delete(token(json!([]), json!(["g-ops"]), true)).await;
    assert_eq!(overage.status, 403, "{}", overage.text());
    assert_eq!(overage.json()["error"]["code"], "Forbidden");
    assert!(
        overage.text().contains("group overage"),
        "{}",
        overage.text()
    );
    assert!(challenge(&overage).contains("error=\"insufficient_scope\""));
    // No rule at all: 403.
    let nobody = delete(token(json!(["reader"]), json!(["g-other"]), false)).await;
    assert_eq!(nobody.status, 403, "{}", nobody.text());
    assert_eq!(env.upstream.seen().len(), 2);
}

/// Masking follows identity: the agents' access rule runs `mask` (which is not in the route's
/// own chain), the auditors' rule does not; the same response is masked for agents only.
#[tokio::test]
async fn masking_follows_the_access_rule_not_only_the_route_chain() {
    let owner = MockUpstream::start(|_| Reply::json(r#"{"owner":"alice@example.com"}"#)).await;
    let owner_url = owner.url();
    let env = env_with(SigningKey::rsa("k1"), false, move |issuer, _| {
        format!(
            r#"
{}
[[plugin]]
name = "mask"
file = "mask.wasm"
[[plugin]]
name = "allow-all"
file = "allow-all.wasm"

[[route]]
name = "api"
upstream = "{owner_url}"
plugins = ["allow-all"]
[[route.access]]
name = "agents"
roles = ["agent"]
plugins = ["allow-all", "mask"]
[[route.access]]
name = "auditors"
roles = ["auditor"]
"#,
            provider_toml("agents", issuer, AUD, "")
        )
    })
    .await;
    let idp = &env.idp;
    let client = env.gw.client(false);
    let token = |role: &str| {
        let mut c = idp.claims(AUD, "caller");
        c["roles"] = json!([role]);
        idp.mint(&c)
    };
    let agent = call(&client, Some(&token("agent")), &[]).await;
    assert_eq!(agent.status, 200, "{}", agent.text());
    assert_eq!(agent.json(), json!({"owner": "[EMAIL]"}));
    let auditor = call(&client, Some(&token("auditor")), &[]).await;
    assert_eq!(auditor.status, 200, "{}", auditor.text());
    assert_eq!(auditor.json(), json!({"owner": "alice@example.com"}));
}

#[tokio::test]
async fn a_route_is_open_only_when_it_says_authentication_none() {
    let env = env_with(SigningKey::rsa("k1"), false, |issuer, upstream| {
        format!(
            r#"
{}
[[route]]
name = "public"
path_prefix = "/public"
upstream = "{upstream}"
authentication = "none"

[[route]]
name = "private"
upstream = "{upstream}"
[[route.access]]
name = "agents"
roles = ["agent"]
"#,
            provider_toml("agents", issuer, AUD, "")
        )
    })
    .await;
    let client = env.gw.client(false);
    assert_eq!(client.get("/public/x").await.status, 200);
    assert_eq!(client.get("/private/x").await.status, 401);
}

#[tokio::test]
async fn entra_v1_and_v2_tokens_are_verified_per_tenant_and_give_one_principal_shape() {
    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const OTHER: &str = "11111111-2222-3333-4444-555555555555";
    let env = env_with(SigningKey::rsa("entra-1"), false, |issuer, upstream| {
        format!(
            r#"
[[identity_provider]]
name = "entra-v2"
issuer = "https://login.microsoftonline.com/{{tenantid}}/v2.0"
jwks_uri = "{issuer}/keys"
audiences = ["{AUD}"]
tenants = ["{TENANT}"]
subject_claim = "oid"
required_claims = ["oid", "tid"]
ca_file = "idp-ca.pem"

[[identity_provider]]
name = "entra-v1"
issuer = "https://sts.windows.net/{{tenantid}}/"
jwks_uri = "{issuer}/keys"
audiences = ["{AUD}"]
tenants = ["{TENANT}"]
subject_claim = "oid"
claims = ["upn"]
ca_file = "idp-ca.pem"

[[plugin]]
name = "misbehave"
file = "misbehave.wasm"

[[route]]
name = "api"
upstream = "{upstream}"
plugins = ["misbehave"]
[[route.access]]
name = "agents"
roles = ["Agent.Invoke"]
"#
        )
    })
    .await;
    let client = env.gw.client(false);
    let base = |iss: String, tid: &str| {
        let now = now();
        json!({
            "iss": iss, "aud": AUD, "tid": tid, "oid": "0b9c-oid", "sub": "pairwise-sub",
            "roles": ["Agent.Invoke"], "iat": now, "nbf": now - 5, "exp": now + 600,
        })
    };
    let v2 = |tid: &str| {
        let mut c = base(format!("https://login.microsoftonline.com/{tid}/v2.0"), tid);
        c["azp"] = json!("app-v2");
        c["ver"] = json!("2.0");
        c
    };
    let v1 = |tid: &str| {
        let mut c = base(format!("https://sts.windows.net/{tid}/"), tid);
        c["appid"] = json!("app-v1");
        c["upn"] = json!("agent@contoso.test");
        c["ver"] = json!("1.0");
        c
    };
    let whoami = |claims: Value| {
        let token = env.idp.mint(&claims);
        let client = &client;
        async move {
            let answer = call(client, Some(&token), &[("x-misbehave", "whoami")]).await;
            assert_not_leaked(&token, &answer);
            answer
        }
    };
    let principal = |answer: &Answer| -> Value {
        assert_eq!(answer.status, 418, "{}", answer.text());
        let message = answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        serde_json::from_str(message.split(" (request id").next().unwrap()).unwrap()
    };
    let p2 = principal(&whoami(v2(TENANT)).await);
    assert_eq!(p2["subject"], "0b9c-oid");
    assert_eq!(p2["tenant"], TENANT);
    assert_eq!(p2["app_id"], "app-v2");
    assert_eq!(p2["roles"], json!(["Agent.Invoke"]));
    let p1 = principal(&whoami(v1(TENANT)).await);
    assert_eq!(p1["subject"], "0b9c-oid");
    assert_eq!(p1["issuer"], format!("https://sts.windows.net/{TENANT}/"));
    assert_eq!(p1["app_id"], "app-v1");
    assert_eq!(p1["claims"], json!([["upn", "agent@contoso.test"]]));

    // Another tenant, in the issuer and tid alike: not accepted.
    let other = whoami(v2(OTHER)).await;
    assert_eq!(other.status, 401, "{}", other.text());
    // The accepted tenant's issuer with another tenant's tid: refused.
    let mut mixed = v2(TENANT);
    mixed["tid"] = json!(OTHER);
    let mixed = whoami(mixed).await;
    assert_eq!(mixed.status, 401, "{}", mixed.text());
    assert!(mixed.text().contains("tenant"), "{}", mixed.text());
    // A required claim missing.
    let mut no_oid = v2(TENANT);
    no_oid.as_object_mut().unwrap().remove("oid");
    let no_oid = whoami(no_oid).await;
    assert_eq!(no_oid.status, 401, "{}", no_oid.text());
    assert!(no_oid.text().contains("oid"), "{}", no_oid.text());
}
