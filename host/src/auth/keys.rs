//! An identity provider's signing keys: fetched through OIDC discovery or a JWKS URI, cached,
//! refreshed periodically and on demand (rate limited), with a generation that changes
//! whenever the key set does.
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use sha2::{Digest, Sha256};

/// Deadline for one fetch (connect, response and body).
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest discovery document or JWKS read.
const DOCUMENT_LIMIT: usize = 512 * 1024;
/// How long a request that names an unknown key waits for a fetch another request started.
const ON_DEMAND_WAIT: Duration = Duration::from_secs(2);
/// Most keys taken from one JWKS.
const MAX_KEYS: usize = 64;
/// First retry after a failed fetch; doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// One verification key from the JWKS.
pub struct Key {
    /// `kid`, when the JWKS names it.
    pub kid: Option<String>,
    /// The algorithm the JWKS pins the key to, if any.
    pub alg: Option<Algorithm>,
    /// The key itself.
    pub decoding: DecodingKey,
}

/// The keys of one JWKS.
#[derive(Default)]
pub struct Keys {
    /// Usable keys, in JWKS order.
    pub keys: Vec<Key>,
    by_kid: HashMap<String, usize>,
}

impl Keys {
    /// The position of the key named `kid`.
    pub fn position(&self, kid: &str) -> Option<usize> {
        self.by_kid.get(kid).copied()
    }
}

/// Where the keys come from.
enum Source {
    /// The discovery document names the JWKS; its `issuer` must be one this provider accepts.
    Discovery { url: Uri },
    /// The JWKS directly.
    Jwks { url: Uri },
}

/// The loaded keys and what is known about the last fetch.
#[derive(Default)]
struct State {
    keys: Option<Arc<Keys>>,
    /// Changes whenever the set of keys does.
    generation: u64,
    /// sha256 over the usable keys, to tell a changed set from a refetched one.
    fingerprint: [u8; 32],
    /// Why the last fetch failed, when it did.
    failure: Option<String>,
}

/// The signing keys of one identity provider.
pub struct KeySet {
    provider: String,
    source: Source,
    /// Accepts the discovery document's `issuer`.
    issuer_ok: Box<dyn Fn(&str) -> bool + Send + Sync>,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    interval: Duration,
    min_interval: Duration,
    state: RwLock<State>,
    /// One fetch at a time; holds when the last on-demand fetch started.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

impl KeySet {
    /// Keys for `provider`, from a discovery document or a JWKS URI (validated URLs).
    pub fn new(
        provider: &str,
        discovery_url: Option<&str>,
        jwks_uri: Option<&str>,
        issuer_ok: Box<dyn Fn(&str) -> bool + Send + Sync>,
        ca_file: Option<&Path>,
        interval: Duration,
        min_interval: Duration,
    ) -> Result<KeySet, String> {
        let parse = |url: &str| url.parse::<Uri>().map_err(|e| format!("{url:?}: {e}"));
        let source = match (jwks_uri, discovery_url) {
            (Some(url), _) => Source::Jwks { url: parse(url)? },
            (None, Some(url)) => Source::Discovery { url: parse(url)? },
            (None, None) => return Err("neither a discovery URL nor a JWKS URI".into()),
        };
        let url = match &source {
            Source::Discovery { url } | Source::Jwks { url } => url,
        };
        let https = url.scheme_str() == Some("https");
        if !https {
            tracing::warn!(provider, url = %url, "identity provider keys are fetched over plain http");
        }
        // A discovery document may point at an https JWKS even when read over http.
        let connector = crate::upstream::https_connector(https, ca_file, FETCH_TIMEOUT)?;
        Ok(KeySet {
            provider: provider.to_string(),
            source,
            issuer_ok,
            client: Client::builder(TokioExecutor::new()).build(connector),
            interval,
            min_interval,
            state: RwLock::new(State::default()),
            fetching: tokio::sync::Mutex::new(None),
        })
    }

    /// The keys and their generation; none until a fetch succeeded.
    pub fn current(&self) -> Option<(Arc<Keys>, u64)> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.keys.clone().map(|k| (k, state.generation))
    }

    /// The generation of the keys now.
    pub fn generation(&self) -> u64 {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .generation
    }

    /// Not ready: why (keys never loaded).
    pub fn unready(&self) -> Option<String> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        match (&state.keys, &state.failure) {
            (Some(_), _) => None,
            (None, Some(reason)) => Some(reason.clone()),
            (None, None) => Some("not fetched yet".into()),
        }
    }

    /// Why the keys are unavailable, for an error.
    pub fn failure(&self) -> String {
        self.unready()
            .unwrap_or_else(|| "keys unavailable".to_string())
    }

    /// Fetch again because a token named an unknown key (or none are loaded): at most once per
    /// `min_interval`; callers arriving during a fetch wait for it (up to [`ON_DEMAND_WAIT`])
    /// instead of starting another.
    pub async fn refresh_on_demand(&self) {
        let Ok(mut last) = tokio::time::timeout(ON_DEMAND_WAIT, self.fetching.lock()).await else {
            return;
        };
        if last.is_some_and(|at| at.elapsed() < self.min_interval) {
            return;
        }
        *last = Some(Instant::now());
        self.fetch_and_store().await;
    }

    /// Fetch now (periodic refresh and start-up). True when the fetch succeeded.
    pub async fn refresh(&self) -> bool {
        let _one_at_a_time = self.fetching.lock().await;
        self.fetch_and_store().await
    }

    async fn fetch_and_store(&self) -> bool {
        match self.fetch().await {
            Ok((keys, fingerprint)) => {
                let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                if state.keys.is_none() || state.fingerprint != fingerprint {
                    state.generation += 1;
                    tracing::info!(
                        provider = %self.provider,
                        keys = keys.keys.len(),
                        generation = state.generation,
                        "identity provider keys loaded"
                    );
                }
                state.keys = Some(Arc::new(keys));
                state.fingerprint = fingerprint;
                state.failure = None;
                true
            }
            Err(reason) => {
                tracing::warn!(provider = %self.provider, %reason, "cannot fetch identity provider keys");
                // Keys already loaded stay in use: an IdP outage does not lock everyone out.
                self.state
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .failure = Some(reason);
                false
            }
        }
    }

    async fn fetch(&self) -> Result<(Keys, [u8; 32]), String> {
        let jwks_url = match &self.source {
            Source::Jwks { url } => url.clone(),
            Source::Discovery { url } => {
                let document: serde_json::Value = serde_json::from_slice(&self.get(url).await?)
                    .map_err(|_| format!("discovery document {url} is not JSON"))?;
                let issuer = document.get("issuer").and_then(|i| i.as_str());
                if !issuer.is_some_and(|i| (self.issuer_ok)(i)) {
                    return Err(format!(
                        "discovery document {url} names an issuer this provider does not accept"
                    ));
                }
                let jwks = document
                    .get("jwks_uri")
                    .and_then(|j| j.as_str())
                    .ok_or_else(|| format!("discovery document {url} has no jwks_uri"))?;
                let jwks: Uri = jwks
                    .parse()
                    .map_err(|_| format!("discovery document {url} has an invalid jwks_uri"))?;
                if !matches!(jwks.scheme_str(), Some("https" | "http")) {
                    return Err(format!("discovery document {url} has a non-http jwks_uri"));
                }
                jwks
            }
        };
        let set: JwkSet = serde_json::from_slice(&self.get(&jwks_url).await?)
            .map_err(|e| format!("JWKS {jwks_url} is not a JWK set: {e}"))?;
        let (keys, fingerprint) = usable(&set.keys);
        if keys.keys.is_empty() {
            return Err(format!("JWKS {jwks_url} has no usable signature key"));
        }
        Ok((keys, fingerprint))
    }

    async fn get(&self, url: &Uri) -> Result<Bytes, String> {
        let request = http::Request::get(url.clone())
            .header(header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| format!("{url}: {e}"))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("{url}: {}", crate::upstream::describe(&e)))?;
            let status = response.status();
            if status != StatusCode::OK {
                return Err(format!("{url}: HTTP {}", status.as_u16()));
            }
            Limited::new(response.into_body(), DOCUMENT_LIMIT)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| format!("{url}: reading the body: {e}"))
        };
        tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("{url}: no answer within {FETCH_TIMEOUT:?}"))?
    }
}

/// The signature keys of a JWKS that can verify tokens, and their fingerprint. Keys for
/// encryption, of unknown types, or malformed are skipped.
fn usable(jwks: &[Jwk]) -> (Keys, [u8; 32]) {
    let mut keys = Keys::default();
    let mut digest = Sha256::new();
    for jwk in jwks.iter().take(MAX_KEYS) {
        if matches!(
            jwk.common.public_key_use,
            Some(ref u) if *u != PublicKeyUse::Signature
        ) {
            continue;
        }
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(a) => match Algorithm::try_from(a) {
                Ok(a) => Some(a),
                Err(_) => continue,
            },
        };
        let Ok(decoding) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        // HMAC keys in a JWKS would be secrets published to the world: never used.
        if decoding.family() == jsonwebtoken::AlgorithmFamily::Hmac {
            continue;
        }
        if let Ok(text) = serde_json::to_vec(jwk) {
            digest.update(&text);
        }
        let kid = jwk.common.key_id.clone();
        if let Some(kid) = &kid {
            keys.by_kid.entry(kid.clone()).or_insert(keys.keys.len());
        }
        keys.keys.push(Key { kid, alg, decoding });
    }
    (keys, digest.finalize().into())
}

/// Keep `keys` fresh: every `interval` once loaded, with a growing backoff while the IdP
/// fails. Ends when the key set is dropped.
pub fn spawn_refresher(keys: &Arc<KeySet>) {
    let mut wait = match keys.current() {
        Some(_) => keys.interval,
        None => RETRY_FIRST,
    };
    let keys: Weak<KeySet> = Arc::downgrade(keys);
    tokio::spawn(async move {
        let mut retry = RETRY_FIRST;
        loop {
            tokio::time::sleep(wait).await;
            let Some(keys) = keys.upgrade() else { return };
            wait = if keys.refresh().await {
                retry = RETRY_FIRST;
                keys.interval
            } else {
                retry = (retry * 2)
                    .min(RETRY_MAX)
                    .min(keys.interval.max(RETRY_FIRST));
                retry
            };
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encryption_and_hmac_keys_are_never_used() {
        let set: JwkSet = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "sig", "use": "sig",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "weird", "kid": "w"}
        ]}))
        .unwrap();
        let (keys, _) = usable(&set.keys);
        let kids: Vec<_> = keys.keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, [Some("sig")]);
        assert!(keys.position("h").is_none());
    }

    #[test]
    fn the_fingerprint_changes_with_the_keys() {
        let one: JwkSet = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "a",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}))
        .unwrap();
        let two: JwkSet = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "b",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}))
        .unwrap();
        assert_eq!(usable(&one.keys).1, usable(&one.keys).1);
        assert_ne!(usable(&one.keys).1, usable(&two.keys).1);
    }
}
