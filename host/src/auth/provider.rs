//! One identity provider: which tokens it issues (issuer, tenants), how they are verified
//! (algorithms, audiences, clock skew, required claims), and the principal a verified token
//! becomes.
use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, Header, Validation, errors::ErrorKind};
use serde_json::{Map, Value};

use super::AuthError;
use super::keys::{Key, KeySet, Keys};
use crate::config::{IdentityProviderConfig, TENANT_PLACEHOLDER};
use crate::plugin::Principal;

/// A configured identity provider and its keys.
pub struct IdentityProvider {
    /// Its name in the configuration.
    pub name: String,
    issuer: Issuer,
    tenants: Vec<String>,
    /// The accepted algorithms, each with its validation rules (the JWT library checks one
    /// algorithm family at a time).
    validations: Vec<(Algorithm, Validation)>,
    required_claims: Vec<String>,
    subject_claim: String,
    claims: Vec<String>,
    /// Skew tolerated on `exp` and `nbf`, in seconds.
    pub clock_skew: u64,
    /// Larger tokens are refused unread.
    pub max_token_bytes: usize,
    /// The signing keys.
    pub keys: Arc<KeySet>,
}

/// The `iss` a provider's tokens carry: one exact value, or a pattern with the tenant in it.
#[derive(Clone)]
enum Issuer {
    Exact(String),
    /// `prefix{tenantid}suffix`.
    PerTenant {
        prefix: String,
        suffix: String,
    },
}

/// A token verified by a provider: its principal and when it stops being valid.
pub struct Verification {
    /// Who the token names.
    pub principal: Principal,
    /// `exp`, seconds since the epoch.
    pub expires: u64,
    /// `nbf`, when the token has one.
    pub not_before: Option<u64>,
}

impl IdentityProvider {
    /// A provider from its (validated) configuration; paths relative to `base_dir`. Nothing is
    /// fetched yet.
    pub fn new(
        config: &IdentityProviderConfig,
        base_dir: &Path,
    ) -> Result<IdentityProvider, String> {
        let issuer = match config.issuer.split_once(TENANT_PLACEHOLDER) {
            None => Issuer::Exact(config.issuer.clone()),
            Some((prefix, suffix)) => Issuer::PerTenant {
                prefix: prefix.to_string(),
                suffix: suffix.to_string(),
            },
        };
        let algorithms = config
            .algorithms
            .iter()
            .map(|a| {
                a.parse::<Algorithm>()
                    .map_err(|_| format!("unknown algorithm {a:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if algorithms
            .iter()
            .any(|a| a.family() == jsonwebtoken::AlgorithmFamily::Hmac)
        {
            return Err("HMAC algorithms are never accepted".into());
        }
        let validations = algorithms
            .iter()
            .map(|&alg| {
                let mut validation = Validation::new(alg);
                validation.set_audience(&config.audiences);
                validation.set_required_spec_claims(&["exp", "iss", "aud"]);
                validation.leeway = config.clock_skew.as_secs();
                validation.validate_exp = true;
                validation.validate_nbf = true;
                // `iss` is matched here (exactly, or per tenant) before and after verification.
                validation.iss = None;
                (alg, validation)
            })
            .collect();
        let discovery = match (&config.discovery_url, &config.jwks_uri) {
            (Some(url), _) => Some(url.clone()),
            (None, Some(_)) => None,
            (None, None) => Some(format!(
                "{}/.well-known/openid-configuration",
                config.issuer.trim_end_matches('/')
            )),
        };
        let accepts = {
            let issuer = issuer.clone();
            let template = config.issuer.clone();
            let tenants = config.tenants.clone();
            // A multi-tenant discovery document names the template itself.
            Box::new(move |iss: &str| iss == template || matches(&issuer, &tenants, iss).is_some())
        };
        let keys = KeySet::new(
            &config.name,
            discovery.as_deref(),
            config.jwks_uri.as_deref(),
            accepts,
            config.ca_file.as_ref().map(|f| base_dir.join(f)).as_deref(),
            config.refresh_interval,
            config.refresh_min_interval,
        )?;
        Ok(IdentityProvider {
            name: config.name.clone(),
            issuer,
            tenants: config.tenants.clone(),
            validations,
            required_claims: config.required_claims.clone(),
            subject_claim: config.subject_claim.clone(),
            claims: config.claims.clone(),
            clock_skew: config.clock_skew.as_secs(),
            max_token_bytes: usize::try_from(config.max_token_bytes.as_u64()).unwrap_or(usize::MAX),
            keys: Arc::new(keys),
        })
    }

    /// Does this provider issue tokens with this `iss` (and `tid`)?
    pub fn issues(&self, iss: &str) -> bool {
        matches(&self.issuer, &self.tenants, iss).is_some()
    }

    /// Verify `token` (whose header is `header`) with this provider's keys and rules. A token
    /// naming a key this provider does not know makes it fetch its keys again (rate limited).
    pub async fn verify(&self, token: &str, header: &Header) -> Result<Verification, AuthError> {
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == header.alg) else {
            return Err(AuthError::Algorithm(format!("{:?}", header.alg)));
        };
        let kid = header.kid.as_deref();
        let mut found = self.select(kid, header.alg);
        if matches!(
            found,
            Err(AuthError::UnknownKey { .. } | AuthError::KeysUnavailable { .. })
        ) {
            self.keys.refresh_on_demand().await;
            found = self.select(kid, header.alg);
        }
        let (keys, index) = found?;
        let key = &keys.keys[index];
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, validation)
            .map_err(|e| classify(e.kind()))?;
        self.principal(data.claims)
    }

    /// The key for `kid` (or the only fitting key, for a token without one), as the key set
    /// and the key's index in it.
    fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<(Arc<Keys>, usize), AuthError> {
        let Some((keys, _)) = self.keys.current() else {
            return Err(AuthError::KeysUnavailable {
                provider: self.name.clone(),
                reason: self.keys.failure(),
            });
        };
        let fits = |k: &Key| k.alg.is_none_or(|a| a == alg) && k.decoding.family() == alg.family();
        let index = match kid {
            Some(kid) => keys.position(kid).ok_or_else(|| AuthError::UnknownKey {
                provider: self.name.clone(),
            })?,
            // Without a `kid`, only an unambiguous key set is usable.
            None => {
                let mut fitting = (0..keys.keys.len()).filter(|&i| fits(&keys.keys[i]));
                match (fitting.next(), fitting.next()) {
                    (Some(i), None) => i,
                    _ => return Err(AuthError::Malformed("the token names no key (kid)")),
                }
            }
        };
        if !fits(&keys.keys[index]) {
            return Err(AuthError::Algorithm(format!(
                "{alg:?} (not the algorithm of the key the token names)"
            )));
        }
        Ok((keys, index))
    }

    /// The principal of verified claims, after the provider's own rules.
    fn principal(&self, claims: Map<String, Value>) -> Result<Verification, AuthError> {
        let iss = text(&claims, "iss").ok_or(AuthError::MissingClaim("iss".into()))?;
        let tenant =
            matches(&self.issuer, &self.tenants, &iss).ok_or(AuthError::UntrustedIssuer)?;
        let tid = text(&claims, "tid");
        if !self.tenants.is_empty() {
            // A per-tenant issuer names the tenant twice: both must agree and be accepted.
            let tid = tid.as_deref().ok_or(AuthError::Tenant)?;
            if !self.tenants.iter().any(|t| t == tid) || tenant.is_some_and(|t| t != tid) {
                return Err(AuthError::Tenant);
            }
        }
        for claim in &self.required_claims {
            if claims.get(claim).is_none_or(Value::is_null) {
                return Err(AuthError::MissingClaim(claim.clone()));
            }
        }
        let subject = text(&claims, &self.subject_claim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AuthError::MissingClaim(self.subject_claim.clone()))?;
        let expires = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(AuthError::MissingClaim("exp".into()))?;
        let not_before = claims.get("nbf").and_then(Value::as_u64);
        // Entra ID group overage: the groups are behind `_claim_names`, or `hasgroups` says
        // some exist; the list here is then incomplete and no group rule may rely on it.
        let elided = claims
            .get("_claim_names")
            .and_then(|c| c.get("groups"))
            .is_some()
            || claims.get("hasgroups").and_then(Value::as_bool) == Some(true);
        let scopes = match claims.get("scp").or_else(|| claims.get("scope")) {
            Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
            other => list(other),
        };
        let principal = Principal {
            subject,
            issuer: iss,
            tenant: tid,
            app_id: text(&claims, "azp").or_else(|| text(&claims, "appid")),
            roles: list(claims.get("roles")),
            groups: list(claims.get("groups")),
            groups_complete: !elided,
            scopes,
            claims: self
                .claims
                .iter()
                .filter_map(|c| {
                    let value = match claims.get(c)? {
                        Value::Null => return None,
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    Some((c.clone(), value))
                })
                .collect(),
        };
        Ok(Verification {
            principal,
            expires,
            not_before,
        })
    }
}

/// Does `iss` belong to `issuer`? For a per-tenant issuer, the tenant it names (which must be
/// accepted); for an exact one, `Some(None)`.
fn matches<'a>(issuer: &Issuer, tenants: &[String], iss: &'a str) -> Option<Option<&'a str>> {
    match issuer {
        Issuer::Exact(exact) => (exact == iss).then_some(None),
        Issuer::PerTenant { prefix, suffix } => {
            let tenant = iss
                .strip_prefix(prefix.as_str())?
                .strip_suffix(suffix.as_str())?;
            tenants.iter().any(|t| t == tenant).then_some(Some(tenant))
        }
    }
}

/// A string claim.
fn text(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claims.get(name).and_then(Value::as_str).map(str::to_string)
}

/// A claim that is a list of strings (or one string).
fn list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// What a failed verification means for the client.
fn classify(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAudience => AuthError::Audience,
        ErrorKind::InvalidIssuer => AuthError::UntrustedIssuer,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            AuthError::Algorithm("(not accepted for this key)".into())
        }
        ErrorKind::InvalidClaimFormat(_) => AuthError::Malformed("a claim has the wrong type"),
        _ => AuthError::Malformed("the token cannot be decoded"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_tenant_issuers_match_only_accepted_tenants() {
        let issuer = Issuer::PerTenant {
            prefix: "https://login.microsoftonline.com/".into(),
            suffix: "/v2.0".into(),
        };
        let tenants = vec!["t1".to_string()];
        assert_eq!(
            matches(
                &issuer,
                &tenants,
                "https://login.microsoftonline.com/t1/v2.0"
            ),
            Some(Some("t1"))
        );
        assert_eq!(
            matches(
                &issuer,
                &tenants,
                "https://login.microsoftonline.com/t2/v2.0"
            ),
            None
        );
        assert_eq!(
            matches(&issuer, &tenants, "https://evil.example/t1/v2.0"),
            None
        );
        let exact = Issuer::Exact("https://sts.windows.net/t1/".into());
        assert_eq!(
            matches(&exact, &[], "https://sts.windows.net/t1/"),
            Some(None)
        );
        assert_eq!(matches(&exact, &[], "https://sts.windows.net/t1"), None);
    }

    #[test]
    fn scopes_and_roles_accept_strings_and_lists() {
        assert_eq!(list(Some(&serde_json::json!("a"))), ["a"]);
        assert_eq!(list(Some(&serde_json::json!(["a", 1, "b"]))), ["a", "b"]);
        assert!(list(Some(&serde_json::json!({"a": 1}))).is_empty());
    }
}
