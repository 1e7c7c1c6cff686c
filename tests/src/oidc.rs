//! A local OIDC identity provider for tests: discovery document and JWKS served over real TLS
//! on 127.0.0.1, signing keys made at test time (RSA, ECDSA P-256, Ed25519), key rotation,
//! an outage switch, fetch counters, and `mint()` for tokens with any header and claims.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::tls::Certs;

/// A key the test IdP signs with, and its public JWK.
#[derive(Clone)]
pub struct SigningKey {
    /// Its `kid`.
    pub kid: String,
    /// The algorithm it signs with.
    pub alg: Algorithm,
    encoding: EncodingKey,
    /// The public key, as published.
    pub jwk: Jwk,
}

impl SigningKey {
    /// A fresh RSA-2048 key for RS256.
    pub fn rsa(kid: &str) -> SigningKey {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).unwrap();
        let pem = pem("PRIVATE KEY", der.as_ref());
        SigningKey::new(
            kid,
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        )
    }

    /// A fresh P-256 key for ES256.
    pub fn ec(kid: &str) -> SigningKey {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let der = EcdsaKeyPair::generate_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        SigningKey::new(
            kid,
            Algorithm::ES256,
            EncodingKey::from_ec_der(der.as_ref()),
        )
    }

    /// A fresh Ed25519 key for EdDSA.
    pub fn ed(kid: &str) -> SigningKey {
        let pair = Ed25519KeyPair::generate().unwrap();
        let der = pair.to_pkcs8v1().unwrap();
        SigningKey::new(
            kid,
            Algorithm::EdDSA,
            EncodingKey::from_ed_der(der.as_ref()),
        )
    }

    fn new(kid: &str, alg: Algorithm, encoding: EncodingKey) -> SigningKey {
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).unwrap();
        jwk.common.key_id = Some(kid.to_string());
        SigningKey {
            kid: kid.to_string(),
            alg,
            encoding,
            jwk,
        }
    }

    /// The public key's JWK as JSON, e.g. to tamper with.
    pub fn public_json(&self) -> Value {
        serde_json::to_value(&self.jwk).unwrap()
    }

    /// Sign `claims` with this key under `header` (its `alg` is this key's).
    pub fn sign(&self, mut header: Header, claims: &Value) -> String {
        header.alg = self.alg;
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    /// Sign `claims` with this key, naming it by `kid`.
    pub fn mint(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        self.sign(header, claims)
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Build an unsigned-looking token from raw JSON header and claims and a raw signature, for
/// forgeries (`alg: none`, tampered payloads).
pub fn compact(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

struct State {
    published: Vec<Jwk>,
}

/// A running test identity provider; stops when dropped.
pub struct Idp {
    scheme: &'static str,
    addr: SocketAddr,
    /// The key `mint` signs with.
    pub key: Mutex<SigningKey>,
    state: Arc<Mutex<State>>,
    down: Arc<AtomicBool>,
    discovery_fetches: Arc<AtomicUsize>,
    jwks_fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Idp {
    /// Start on 127.0.0.1:0 over TLS with `certs` (trusted through `certs.ca`), publishing
    /// `key`.
    pub async fn start(certs: &Certs, key: SigningKey) -> Idp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Idp::serve(listener, Some(acceptor(certs)), key)
    }

    /// Serve on `listener`, over TLS when given an acceptor, else plain HTTP (local
    /// development only: see `dev_idp`).
    pub fn serve(
        listener: TcpListener,
        acceptor: Option<tokio_rustls::TlsAcceptor>,
        key: SigningKey,
    ) -> Idp {
        let addr = listener.local_addr().unwrap();
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let state = Arc::new(Mutex::new(State {
            published: vec![key.jwk.clone()],
        }));
        let (down, discovery_fetches, jwks_fetches) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let issuer = format!("{scheme}://localhost:{}", addr.port());
        let task = tokio::spawn({
            let (state, down) = (state.clone(), down.clone());
            let (discovery_fetches, jwks_fetches) =
                (discovery_fetches.clone(), jwks_fetches.clone());
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (state, down, issuer) = (state.clone(), down.clone(), issuer.clone());
                    let (discovery_fetches, jwks_fetches) =
                        (discovery_fetches.clone(), jwks_fetches.clone());
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |request: Request<Incoming>| {
                            let path = request.uri().path().to_string();
                            let (status, body) = if down.load(Ordering::SeqCst) {
                                (503, "{\"error\":\"down\"}".to_string())
                            } else if path == "/.well-known/openid-configuration" {
                                discovery_fetches.fetch_add(1, Ordering::SeqCst);
                                (
                                    200,
                                    json!({"issuer": issuer, "jwks_uri": format!("{issuer}/keys")})
                                        .to_string(),
                                )
                            } else if path == "/keys" {
                                jwks_fetches.fetch_add(1, Ordering::SeqCst);
                                let keys = state.lock().unwrap().published.clone();
                                (200, json!({ "keys": keys }).to_string())
                            } else {
                                (404, "{}".to_string())
                            };
                            let mut response = Response::new(Full::new(Bytes::from(body)));
                            *response.status_mut() = status.try_into().unwrap();
                            response
                                .headers_mut()
                                .insert("content-type", "application/json".parse().unwrap());
                            async move { Ok::<_, Infallible>(response) }
                        });
                        let builder = auto::Builder::new(TokioExecutor::new());
                        let _ = match acceptor {
                            None => {
                                builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await
                            }
                            Some(acceptor) => match acceptor.accept(stream).await {
                                Ok(tls) => {
                                    builder.serve_connection(TokioIo::new(tls), service).await
                                }
                                Err(_) => return,
                            },
                        };
                    });
                }
            }
        });
        Idp {
            scheme,
            addr,
            key: Mutex::new(key),
            state,
            down,
            discovery_fetches,
            jwks_fetches,
            task,
        }
    }

    /// The issuer identifier, `https://localhost:PORT` (discovery lives under it).
    pub fn issuer(&self) -> String {
        format!("{}://localhost:{}", self.scheme, self.addr.port())
    }

    /// Claims of a valid token for `audience` naming `subject`, valid for ten minutes.
    pub fn claims(&self, audience: &str, subject: &str) -> Value {
        let now = now();
        json!({
            "iss": self.issuer(),
            "aud": audience,
            "sub": subject,
            "iat": now,
            "nbf": now - 5,
            "exp": now + 600,
        })
    }

    /// A token over `claims` signed with the current key.
    pub fn mint(&self, claims: &Value) -> String {
        self.key.lock().unwrap().mint(claims)
    }

    /// Publish exactly these keys; `mint` signs with the first.
    pub fn publish(&self, keys: &[&SigningKey]) {
        self.state.lock().unwrap().published = keys.iter().map(|k| k.jwk.clone()).collect();
        if let Some(first) = keys.first() {
            *self.key.lock().unwrap() = (*first).clone();
        }
    }

    /// Answer 503 to everything (or serve again).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// How often the JWKS has been fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    /// How often the discovery document has been fetched.
    pub fn discovery_fetches(&self) -> usize {
        self.discovery_fetches.load(Ordering::SeqCst)
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TLS acceptor for the certificate of `certs`.
fn acceptor(certs: &Certs) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&certs.cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&certs.key).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// The `[[identity_provider]]` table for an IdP under test, trusted through `idp-ca.pem` in
/// the gateway's directory, with extra TOML lines.
pub fn provider_toml(name: &str, issuer: &str, audience: &str, extra: &str) -> String {
    format!(
        r#"
[[identity_provider]]
name = "{name}"
issuer = "{issuer}"
audiences = ["{audience}"]
ca_file = "idp-ca.pem"
{extra}
"#
    )
}
