//! Token verification cost per request, measured in one run against a local OIDC identity
//! provider (keys fetched once and cached): a repeat token answered from the verified-token
//! cache (the steady state of an agent reusing its token), and a full verification without
//! that cache for RS256, ES256 and EdDSA tokens (an agent's first request with a new token).
//!
//! Run: `cargo bench -p portcullis-tests --bench identity`
#![allow(clippy::unwrap_used)] // benchmark setup: a failed unwrap is a broken benchmark
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Uri, header};
use portcullis::config::Config;
use portcullis::gateway::Gateway;
use portcullis_tests::oidc::{Idp, SigningKey, provider_toml};
use portcullis_tests::tls::Certs;

const AUD: &str = "api://portcullis";

struct Setup {
    gateway: Arc<Gateway>,
    tokens: Vec<(&'static str, String)>,
    _idp: Idp,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn setup() -> Setup {
    let idp_dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(idp_dir.path());
    let keys = [
        SigningKey::rsa("rsa"),
        SigningKey::ec("ec"),
        SigningKey::ed("ed"),
    ];
    let idp = Idp::start(&certs, keys[0].clone()).await;
    idp.publish(&keys.iter().collect::<Vec<_>>());
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&certs.ca, dir.path().join("idp-ca.pem")).unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    let text = format!(
        "plugin_dir = \"plugins\"\nserver = {{ plaintext = true }}\n{}\n\
         [[route]]\nname = \"api\"\nupstream = \"http://127.0.0.1:9\"\n\
         [[route.access]]\nname = \"agents\"\nroles = [\"agent\"]\n",
        provider_toml(
            "agents",
            &idp.issuer(),
            AUD,
            "algorithms = [\"RS256\", \"ES256\", \"EdDSA\"]"
        )
    );
    let config = Config::parse(&text, dir.path()).unwrap();
    let gateway = Arc::new(Gateway::build(&config).await.unwrap());
    assert!(gateway.identity.unready().is_none(), "keys did not load");
    let mut claims = idp.claims(AUD, "agent-7");
    claims["exp"] = serde_json::json!(portcullis_tests::oidc::now() + 3600);
    claims["roles"] = serde_json::json!(["agent"]);
    claims["groups"] = serde_json::json!(["g1", "g2", "g3"]);
    let tokens = vec![
        ("RS256", keys[0].mint(&claims)),
        ("ES256", keys[1].mint(&claims)),
        ("EdDSA", keys[2].mint(&claims)),
    ];
    Setup {
        gateway,
        tokens,
        _idp: idp,
        _dirs: (idp_dir, dir),
    }
}

fn identity(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let setup = runtime.block_on(setup());
    let gateway = setup.gateway.clone();
    let route = &gateway.routes[0];
    let uri: Uri = "/items".parse().unwrap();
    let mut group = c.benchmark_group("identity");

    let (_, rs256) = &setup.tokens[0];
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {rs256}")).unwrap(),
    );
    group.bench_function("authenticate/cached-token", |b| {
        b.to_async(&runtime).iter(|| async {
            let caller = gateway
                .identity
                .authenticate(route, &uri, &headers)
                .await
                .unwrap();
            black_box(caller)
        })
    });

    let provider = &gateway.identity.providers()[0];
    for (alg, token) in &setup.tokens {
        let token_header = jsonwebtoken::decode_header(token).unwrap();
        group.bench_function(format!("verify/{alg}"), |b| {
            b.to_async(&runtime)
                .iter(|| async { black_box(provider.verify(token, &token_header).await.unwrap()) })
        });
    }
    group.finish();
}

criterion_group!(benches, identity);
criterion_main!(benches);
