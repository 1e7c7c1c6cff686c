//! Who is calling: `authenticate()` verifies the bearer token against the identity providers'
//! published keys and yields the caller's `Principal`; access rules then decide what the
//! caller may use. The raw token never leaves this module.
//!
//! Order of checks, cheapest first: a token in the query string is refused; the
//! `Authorization` header must hold exactly one `Bearer` token within the size limit, shaped
//! like a JWS; a cache of verified tokens (keyed by the token's sha256, valid until `exp`, and
//! dropped when the provider's keys change) answers repeat tokens; otherwise the unverified
//! `iss` picks the provider, the header's `alg` must be one it accepts and `kid` one of its
//! keys (an unknown `kid` fetches the keys again, rate limited), and the signature, `exp`,
//! `nbf`, `aud`, tenant and required claims are checked. `jku`, `x5u` and `x5c` are never read.
mod access;
mod keys;
mod provider;

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap};
use http::{StatusCode, Uri};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

pub use self::access::{Access, Admission};
pub use self::provider::IdentityProvider;
use crate::config::{Authentication, Config};
use crate::plugin::Principal;
use crate::route::Route;

/// Verified tokens remembered at once.
const CACHE_ENTRIES: usize = 10_000;

/// A caller whose token was verified: its principal and the provider that vouched for it.
#[derive(Debug)]
pub struct Caller {
    /// Index of the provider in the configuration.
    pub provider: usize,
    /// Who it is.
    pub principal: Principal,
    /// The principal as the audit log records it, serialised on first use and kept with the
    /// cached verification, so a token's requests do not serialise it again.
    pub audit_record: OnceLock<Box<RawValue>>,
}

/// A cached verification.
#[derive(Clone)]
struct Cached {
    caller: Arc<Caller>,
    expires: u64,
    not_before: Option<u64>,
    /// The provider's key generation it was verified under.
    generation: u64,
}

/// Every identity provider of the configuration and the cache of verified tokens.
pub struct Identity {
    providers: Vec<IdentityProvider>,
    cache: quick_cache::sync::Cache<[u8; 32], Cached>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field(
                "providers",
                &self.providers.iter().map(|p| &p.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A request's identity could not be established, or the identity may not do what it asked.
/// No variant carries token content.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("the request carries no bearer token")]
    Missing,
    /// More than one `Authorization` header.
    #[error("the request carries more than one Authorization header")]
    Ambiguous,
    /// A token in the URL, where logs and recordings would keep it.
    #[error("an access token in the query string is refused; send it in the Authorization header")]
    QueryToken,
    /// Refused before any parsing.
    #[error("the token is {len} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// The token's size.
        len: usize,
        /// The largest accepted.
        limit: usize,
    },
    /// Not a well-formed JWS.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg` is not one the provider accepts (`none` and HMAC never are).
    #[error("the token's signature algorithm is not accepted: {0}")]
    Algorithm(String),
    /// No provider of the route issues tokens with this `iss`.
    #[error("the token's issuer is not trusted here")]
    UntrustedIssuer,
    /// The `kid` is not among the provider's keys, even after fetching them again.
    #[error("no signing key of identity provider {provider} matches the token")]
    UnknownKey {
        /// The provider.
        provider: String,
    },
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// `exp` has passed (beyond the clock skew).
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the clock skew).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `aud` is none of the accepted audiences.
    #[error("the token is meant for another audience")]
    Audience,
    /// A claim the provider requires is missing.
    #[error("the token lacks the required claim {0:?}")]
    MissingClaim(String),
    /// The tenant is not on the provider's allow-list.
    #[error("the token's tenant is not accepted")]
    Tenant,
    /// The provider's keys could not be fetched: the token cannot be checked.
    #[error("identity provider {provider} has no signing keys: {reason}")]
    KeysUnavailable {
        /// The provider.
        provider: String,
        /// Why (for the log).
        reason: String,
    },
    /// The caller is authenticated but no access rule of the route admits it.
    #[error("{subject} (issuer {issuer}) is not admitted to route {route}{}", if *.groups_elided { "; the token's groups were elided (group overage), so group rules cannot match" } else { "" })]
    Forbidden {
        /// The route.
        route: String,
        /// The caller.
        subject: String,
        /// The caller's issuer.
        issuer: String,
        /// A group rule was skipped because the token's group list is incomplete.
        groups_elided: bool,
    },
}

impl AuthError {
    /// 401 for a missing or bad token, 400 for a request that carries one wrongly, 403 for a
    /// caller that may not, 503 when the IdP's keys are unavailable.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::Ambiguous | AuthError::QueryToken => StatusCode::BAD_REQUEST,
            AuthError::Forbidden { .. } => StatusCode::FORBIDDEN,
            AuthError::KeysUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The RFC 6750 error code, when one applies.
    pub fn bearer_error(&self) -> Option<&'static str> {
        match self {
            AuthError::Missing | AuthError::KeysUnavailable { .. } => None,
            AuthError::Ambiguous | AuthError::QueryToken => Some("invalid_request"),
            AuthError::Forbidden { .. } => Some("insufficient_scope"),
            _ => Some("invalid_token"),
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750), when the status calls for one.
    pub fn challenge(&self) -> Option<String> {
        if matches!(self, AuthError::KeysUnavailable { .. }) {
            return None;
        }
        let mut challenge = String::from("Bearer realm=\"portcullis\"");
        if let Some(code) = self.bearer_error() {
            let description: String = self
                .public_message()
                .chars()
                .filter(|c| *c != '"' && *c != '\\' && (' '..='~').contains(c))
                .collect();
            challenge.push_str(&format!(
                ", error=\"{code}\", error_description=\"{description}\""
            ));
        }
        Some(challenge)
    }

    /// What the client is told: the reason, without token content or internals.
    pub fn public_message(&self) -> String {
        match self {
            AuthError::KeysUnavailable { .. } => {
                "the gateway cannot verify tokens right now (identity provider keys unavailable); retry later".into()
            }
            AuthError::Forbidden {
                route,
                groups_elided,
                ..
            } => {
                let mut message = format!("the caller is not allowed to use route {route}");
                if *groups_elided {
                    message.push_str(
                        "; the token's groups were elided (group overage), so group rules \
                         cannot match: grant an app role instead",
                    );
                }
                message
            }
            other => other.to_string(),
        }
    }
}

impl Identity {
    /// Set up every identity provider of `config` without fetching anything (for `check`).
    pub fn new(config: &Config) -> Result<Identity, String> {
        let providers = config
            .identity_providers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                IdentityProvider::new(p, &config.base_dir)
                    .map_err(|e| format!("identity_provider[{i}] ({}): {e}", p.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Identity {
            providers,
            cache: quick_cache::sync::Cache::new(CACHE_ENTRIES),
        })
    }

    /// Set up every provider and fetch its keys once (concurrently); then keep them fresh in
    /// the background. A provider that cannot be reached does not stop the start: the gateway
    /// reports not ready (see [`Identity::unready`]) and retries.
    pub async fn start(config: &Config) -> Result<Identity, String> {
        let identity = Identity::new(config)?;
        futures_util::future::join_all(identity.providers.iter().map(|p| p.keys.refresh())).await;
        for provider in &identity.providers {
            keys::spawn_refresher(&provider.keys);
        }
        Ok(identity)
    }

    /// Why the gateway cannot verify tokens yet, for `/readyz`: the providers whose keys have
    /// never loaded.
    pub fn unready(&self) -> Option<String> {
        let reasons: Vec<String> = self
            .providers
            .iter()
            .filter_map(|p| {
                p.keys
                    .unready()
                    .map(|r| format!("identity provider {}: signing keys not loaded: {r}", p.name))
            })
            .collect();
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }

    /// The provider named `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.providers.iter().position(|p| p.name == name)
    }

    /// The providers, in configuration order.
    pub fn providers(&self) -> &[IdentityProvider] {
        &self.providers
    }

    /// The caller of a request on `route`: none on a route open without authentication,
    /// otherwise the verified token's caller from one of the route's providers. A token in the
    /// query string is refused on every route.
    pub async fn authenticate(
        &self,
        route: &Route,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Option<Arc<Caller>>, AuthError> {
        if query_has_token(uri) {
            return Err(AuthError::QueryToken);
        }
        if route.authentication == Authentication::None {
            return Ok(None);
        }
        let token = bearer(headers)?;
        let limit = route
            .identity_providers
            .iter()
            .filter_map(|&i| self.providers.get(i))
            .map(|p| p.max_token_bytes)
            .max()
            .unwrap_or(0);
        if token.len() > limit {
            return Err(AuthError::TooLarge {
                len: token.len(),
                limit,
            });
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = now();
        if let Some(cached) = self.cache.get(&key) {
            let provider = &self.providers[cached.caller.provider];
            let skew = provider.clock_skew;
            if provider.keys.generation() == cached.generation
                && now <= cached.expires.saturating_add(skew)
                && cached
                    .not_before
                    .is_none_or(|nbf| nbf <= now.saturating_add(skew))
            {
                return admitted_provider(route, cached.caller);
            }
            self.cache.remove(&key);
        }
        let (header, iss) = peek(token)?;
        let provider_index = route
            .identity_providers
            .iter()
            .copied()
            .find(|&i| self.providers.get(i).is_some_and(|p| p.issues(&iss)))
            .ok_or(AuthError::UntrustedIssuer)?;
        let provider = &self.providers[provider_index];
        let generation = provider.keys.generation();
        let verified = provider.verify(token, &header).await?;
        let caller = Arc::new(Caller {
            provider: provider_index,
            principal: verified.principal,
            audit_record: OnceLock::new(),
        });
        self.cache.insert(
            key,
            Cached {
                caller: caller.clone(),
                expires: verified.expires,
                not_before: verified.not_before,
                // Keys fetched during verification make a newer generation: this entry is
                // then simply verified again next time.
                generation,
            },
        );
        Ok(Some(caller))
    }
}

impl Identity {
    /// The principal of a request to the admin API, whose bearer token only provider
    /// `provider` may vouch for (approvers). Not cached: the admin API is seldom called, and a
    /// token revoked at the provider should stop working as soon as its keys say so.
    pub async fn authenticate_with(
        &self,
        provider: usize,
        headers: &HeaderMap,
    ) -> Result<Principal, AuthError> {
        let provider = self
            .providers
            .get(provider)
            .ok_or(AuthError::UntrustedIssuer)?;
        let token = bearer(headers)?;
        if token.len() > provider.max_token_bytes {
            return Err(AuthError::TooLarge {
                len: token.len(),
                limit: provider.max_token_bytes,
            });
        }
        let (header, iss) = peek(token)?;
        if !provider.issues(&iss) {
            return Err(AuthError::UntrustedIssuer);
        }
        Ok(provider.verify(token, &header).await?.principal)
    }
}

/// A cached caller on a route: its provider must be one the route accepts.
fn admitted_provider(route: &Route, caller: Arc<Caller>) -> Result<Option<Arc<Caller>>, AuthError> {
    if route.identity_providers.contains(&caller.provider) {
        Ok(Some(caller))
    } else {
        Err(AuthError::UntrustedIssuer)
    }
}

/// Seconds since the epoch.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// RFC 6750 §2.3: `access_token` in the query (any case).
fn query_has_token(uri: &Uri) -> bool {
    uri.query().is_some_and(|q| {
        q.split('&').any(|pair| {
            let name = pair.split('=').next().unwrap_or("");
            let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
            name.eq_ignore_ascii_case("access_token")
        })
    })
}

/// The bearer token of the one `Authorization` header.
fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return match headers.contains_key(header::AUTHORIZATION) {
            true => Err(AuthError::Ambiguous),
            false => Err(AuthError::Missing),
        };
    };
    let value = value
        .to_str()
        .map_err(|_| AuthError::Malformed("the Authorization header is not ASCII"))?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token)
}

/// The unverified header and `iss` of a compact JWS, after a shape check: three base64url
/// parts. Only used to pick the provider and key; everything is verified afterwards.
fn peek(token: &str) -> Result<(jsonwebtoken::Header, String), AuthError> {
    let well_formed = token.split('.').count() == 3
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !well_formed {
        return Err(AuthError::Malformed(
            "not a compact JWS (three base64url parts)",
        ));
    }
    // `alg: none` and unknown algorithms fail here: the header does not parse.
    let header = jsonwebtoken::decode_header(token).map_err(|_| {
        AuthError::Malformed("the header is not a JWS header with a known algorithm")
    })?;
    #[derive(serde::Deserialize)]
    struct Peek {
        iss: Option<String>,
    }
    let claims: Peek = jsonwebtoken::dangerous::insecure_decode_claims(token)
        .map_err(|_| AuthError::Malformed("the payload is not a JSON object"))?;
    let iss = claims.iss.ok_or(AuthError::MissingClaim("iss".into()))?;
    Ok((header, iss))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_tokens_are_found_in_any_case_and_encoding() {
        for q in ["access_token=x", "a=1&ACCESS_TOKEN=x", "access%5Ftoken=x"] {
            let uri: Uri = format!("/p?{q}").parse().unwrap();
            assert!(query_has_token(&uri), "{q}");
        }
        for q in ["token=x", "x_access_token=1"] {
            let uri: Uri = format!("/p?{q}").parse().unwrap();
            assert!(!query_has_token(&uri), "{q}");
        }
    }

    #[test]
    fn bearer_needs_one_header_with_the_bearer_scheme() {
        let mut headers = HeaderMap::new();
        assert!(matches!(bearer(&headers), Err(AuthError::Missing)));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert!(matches!(bearer(&headers), Err(AuthError::Missing)));
        headers.insert(header::AUTHORIZATION, "bearer  a.b.c ".parse().unwrap());
        assert_eq!(bearer(&headers).unwrap(), "a.b.c");
        headers.append(header::AUTHORIZATION, "Bearer d.e.f".parse().unwrap());
        assert!(matches!(bearer(&headers), Err(AuthError::Ambiguous)));
    }

    #[test]
    fn peek_refuses_what_is_not_a_jws() {
        for token in [
            "abc",
            "a.b",
            "a.b.c.d",
            "a.b.c",
            "eyJhbGciOiJub25lIn0.e30.",
            "a+b.c.d",
        ] {
            assert!(
                matches!(peek(token), Err(AuthError::Malformed(_))),
                "{token}"
            );
        }
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        assert_eq!(
            AuthError::Missing.challenge().unwrap(),
            "Bearer realm=\"portcullis\""
        );
        let expired = AuthError::Expired.challenge().unwrap();
        assert!(
            expired.contains("error=\"invalid_token\"")
                && expired.contains("error_description=\"the token has expired\""),
            "{expired}"
        );
        assert_eq!(AuthError::QueryToken.status(), 400);
        assert!(
            AuthError::KeysUnavailable {
                provider: "p".into(),
                reason: "down".into()
            }
            .challenge()
            .is_none()
        );
    }
}
