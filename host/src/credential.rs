//! The credentials the gateway presents upstream: read from secret files at start, and set on
//! every forwarded request (a static header, the client's own `Authorization`, an Azure Storage
//! Shared Key signature, or an OAuth2 client-credentials bearer token).
//!
//! Secrets never appear in a log line, an error message or `Debug` output, and every header
//! value carrying one is marked sensitive (HTTP/2 HPACK then never indexes it).
//!
//! After [`Credential::apply`] the request's `Authorization` is exactly the credential's (or
//! absent for `none` and for `pass-through` without a client header): a leftover client
//! `Authorization` is removed, whatever the kind.
//!
//! # Shared Key: sign last
//! [`Credential::apply`] signs the request as it is at that moment, so it must be the last
//! change before the request is sent. Changing any of these afterwards breaks the signature:
//! the method; the URI path and query; `Content-Encoding`, `Content-Language`, `Content-Length`,
//! `Content-MD5`, `Content-Type`, `Date`, `If-Modified-Since`, `If-Match`, `If-None-Match`,
//! `If-Unmodified-Since`, `Range`; and any `x-ms-*` header. `Host`, hop-by-hop headers and other
//! headers are not signed.
//!
//! In particular `Content-Length` must already be in `headers` when the body has one: hyper adds
//! it by itself for a body of known size, after signing, and the service then computes a
//! different string to sign (a zero or absent length signs the same: an empty line). A
//! chunked upload is not signable this way. A signed header that appears twice is refused (the
//! services differ on how they join repeated values). The query is decoded as the specification
//! says (`%XX` only): a literal `+` stays `+` (Azurite would read it as a space).
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::Sha256;

use crate::config::CredentialConfig;

/// `x-ms-version` set on Shared Key requests that do not carry one.
pub const DEFAULT_STORAGE_VERSION: &str = "2021-08-06";

/// Deadline for one token request (connect, response and body).
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest token response read.
const TOKEN_RESPONSE_LIMIT: usize = 64 * 1024;
/// How long before expiry a token is replaced (tokens living under twice this: half their life).
const REFRESH_EARLY: Duration = Duration::from_secs(5 * 60);
/// Lifetime assumed when the token endpoint does not say (`expires_in` is optional in RFC 6749).
const ASSUMED_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// After a failed token request, callers get the same answer for this long instead of each
/// asking the endpoint again (during an outage requests would otherwise queue behind it).
const FAILURE_BACKOFF: Duration = Duration::from_secs(1);

/// Shown instead of a secret.
const REDACTED: &str = "[redacted]";

/// `application/x-www-form-urlencoded`: everything but `A-Za-z0-9*-._` is escaped.
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');

/// Headers a credential may not set: they describe the message or the connection.
const FORBIDDEN_HEADERS: [&str; 9] = [
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The credential could not be loaded or applied. Names files and URLs, never secret content.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialError {
    /// A secret file could not be read.
    #[error("cannot read secret file {path}: {reason}")]
    Read {
        /// The file, resolved against the configuration's directory.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// A secret file holds nothing (or only white space).
    #[error("secret file {path} is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A secret file's content is not usable.
    #[error("secret file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the content).
        reason: &'static str,
    },
    /// A header credential's name is not usable.
    #[error("credential header name {name:?}: {reason}")]
    HeaderName {
        /// The configured name.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The Shared Key account name is not usable.
    #[error("storage account {account:?}: {reason}")]
    Account {
        /// The configured account.
        account: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The token endpoint URL is not usable.
    #[error("token_url {url:?}: {reason}")]
    TokenUrl {
        /// The configured URL.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The TLS trust for the token endpoint could not be set up.
    #[error("TLS for token endpoint {url}: {reason}")]
    Tls {
        /// The token endpoint.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// No token could be obtained.
    #[error("token endpoint {url}: {reason}")]
    Token {
        /// The token endpoint.
        url: String,
        /// What went wrong: transport error, timeout, the HTTP status and the IdP's error code,
        /// or a malformed response.
        reason: String,
    },
    /// A request could not be signed.
    #[error("cannot sign the request for storage account {account}: {reason}")]
    Sign {
        /// The account.
        account: String,
        /// Why.
        reason: String,
    },
}

/// One route's upstream credential, ready to apply. Share it (`Arc`) across requests: an OAuth2
/// credential caches its token inside.
pub struct Credential {
    kind: Kind,
}

enum Kind {
    None,
    PassThrough,
    Header {
        name: HeaderName,
        value: HeaderValue,
    },
    SharedKey(SharedKey),
    Oauth2(Box<Oauth2>),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = format_args!("{REDACTED}");
        match &self.kind {
            Kind::None => f.write_str("Credential::None"),
            Kind::PassThrough => f.write_str("Credential::PassThrough"),
            Kind::Header { name, .. } => f
                .debug_struct("Credential::Header")
                .field("name", name)
                .field("value", &redacted)
                .finish(),
            Kind::SharedKey(k) => f
                .debug_struct("Credential::AzureSharedKey")
                .field("account", &k.account)
                .field("key", &redacted)
                .finish(),
            Kind::Oauth2(o) => f
                .debug_struct("Credential::Oauth2ClientCredentials")
                .field("token_url", &o.url)
                .field("client_id", &o.client_id)
                .field("scope", &o.scope)
                .field("client_secret", &redacted)
                .finish(),
        }
    }
}

impl Credential {
    /// Read the secret files now (relative paths against `base_dir`); a missing, empty or
    /// invalid file is an error naming the resolved file path.
    pub fn load(config: &CredentialConfig, base_dir: &Path) -> Result<Credential, CredentialError> {
        let kind = match config {
            CredentialConfig::None => Kind::None,
            CredentialConfig::PassThrough => Kind::PassThrough,
            CredentialConfig::Header { name, value_file } => {
                let name = header_name(name)?;
                let path = base_dir.join(value_file);
                let mut value = HeaderValue::from_bytes(&read_secret(&path)?).map_err(|_| {
                    CredentialError::Invalid {
                        path: path.clone(),
                        reason: "is not a valid HTTP header value (control characters?)",
                    }
                })?;
                value.set_sensitive(true);
                Kind::Header { name, value }
            }
            CredentialConfig::AzureSharedKey { account, key_file } => {
                Kind::SharedKey(SharedKey::load(account, &base_dir.join(key_file))?)
            }
            CredentialConfig::Oauth2ClientCredentials {
                token_url,
                client_id,
                secret_file,
                scope,
                ca_file,
            } => Kind::Oauth2(Box::new(Oauth2::load(
                token_url,
                client_id,
                &base_dir.join(secret_file),
                scope,
                ca_file.as_ref().map(|f| base_dir.join(f)).as_deref(),
            )?)),
        };
        Ok(Credential { kind })
    }

    /// Set the upstream credential on a request about to be forwarded. `headers` are final
    /// except for this step; `uri` is the upstream URI as sent (Shared Key signs its path and
    /// query); `client_authorization` is the client's original `Authorization`, used only by
    /// `pass-through`. Any other `Authorization` present is replaced or removed.
    pub async fn apply(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &mut HeaderMap,
        client_authorization: Option<&HeaderValue>,
    ) -> Result<(), CredentialError> {
        match &self.kind {
            Kind::None => {
                headers.remove(header::AUTHORIZATION);
            }
            Kind::PassThrough => match client_authorization {
                Some(value) => {
                    let mut value = value.clone();
                    value.set_sensitive(true);
                    headers.insert(header::AUTHORIZATION, value);
                }
                None => {
                    headers.remove(header::AUTHORIZATION);
                }
            },
            Kind::Header { name, value } => {
                headers.remove(header::AUTHORIZATION);
                headers.insert(name.clone(), value.clone());
            }
            Kind::SharedKey(key) => key.sign(method, uri, headers, SystemTime::now())?,
            Kind::Oauth2(oauth) => {
                let token = oauth.token().await?;
                headers.insert(header::AUTHORIZATION, token);
            }
        }
        Ok(())
    }
}

/// A secret file's bytes, without trailing line ends; an empty file is an error.
pub(crate) fn read_secret(path: &Path) -> Result<Vec<u8>, CredentialError> {
    let mut bytes = std::fs::read(path).map_err(|e| CredentialError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(CredentialError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

fn header_name(name: &str) -> Result<HeaderName, CredentialError> {
    let invalid = |reason| CredentialError::HeaderName {
        name: name.to_string(),
        reason,
    };
    let parsed =
        HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid("not a valid header name"))?;
    if FORBIDDEN_HEADERS.contains(&parsed.as_str()) {
        return Err(invalid(
            "describes the message or connection, not a credential",
        ));
    }
    Ok(parsed)
}

/// Azure Storage Shared Key: the account and its key, ready to sign.
struct SharedKey {
    account: String,
    mac: Hmac<Sha256>,
}

impl SharedKey {
    fn load(account: &str, key_file: &Path) -> Result<SharedKey, CredentialError> {
        if account.is_empty() || !account.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(CredentialError::Account {
                account: account.to_string(),
                reason: "must be letters and digits",
            });
        }
        let invalid = |reason| CredentialError::Invalid {
            path: key_file.to_path_buf(),
            reason,
        };
        let text = read_secret(key_file)?;
        let key = BASE64
            .decode(text.trim_ascii())
            .map_err(|_| invalid("is not a base64 account key"))?;
        if key.is_empty() {
            return Err(invalid("is not a base64 account key"));
        }
        let mac = Hmac::<Sha256>::new_from_slice(&key)
            .map_err(|_| invalid("is not a usable account key"))?;
        Ok(SharedKey {
            account: account.to_string(),
            mac,
        })
    }

    /// Set `x-ms-date` (from `now`), `x-ms-version` (when absent) and `Authorization`.
    fn sign(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &mut HeaderMap,
        now: SystemTime,
    ) -> Result<(), CredentialError> {
        let error = |reason: String| CredentialError::Sign {
            account: self.account.clone(),
            reason,
        };
        let date = HeaderValue::from_str(&httpdate::fmt_http_date(now))
            .map_err(|_| error("the date is not a header value".into()))?;
        headers.insert("x-ms-date", date);
        if !headers.contains_key("x-ms-version") {
            headers.insert(
                "x-ms-version",
                HeaderValue::from_static(DEFAULT_STORAGE_VERSION),
            );
        }
        let to_sign = string_to_sign(&self.account, method, uri, headers).map_err(error)?;
        let mut mac = self.mac.clone();
        mac.update(&to_sign);
        let signature = BASE64.encode(mac.finalize().into_bytes());
        let mut authorization =
            HeaderValue::from_str(&format!("SharedKey {}:{signature}", self.account))
                .map_err(|_| error("the account is not a header value".into()))?;
        authorization.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, authorization);
        Ok(())
    }
}

/// The standard headers of the Shared Key string to sign, in order.
const SIGNED_HEADERS: [&str; 11] = [
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
];

/// The Shared Key StringToSign (Blob, Queue and File services, versions since 2015-02-21).
/// Bytes, not text: header values and decoded query values need not be UTF-8.
fn string_to_sign(
    account: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Vec<u8>, String> {
    let single = |name: &str| -> Result<Option<&[u8]>, String> {
        let mut values = headers.get_all(name).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(format!("header {name} appears more than once"));
        }
        Ok(first.map(|v| v.as_bytes().trim_ascii()))
    };
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b'\n');
    for name in SIGNED_HEADERS {
        let value = single(name)?.unwrap_or_default();
        if !(name == "content-length" && value == b"0") {
            out.extend_from_slice(value);
        }
        out.push(b'\n');
    }
    let mut ms: Vec<&HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("x-ms-"))
        .collect();
    ms.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    for name in ms {
        out.extend_from_slice(name.as_str().as_bytes());
        out.push(b':');
        out.extend_from_slice(single(name.as_str())?.unwrap_or_default());
        out.push(b'\n');
    }
    out.push(b'/');
    out.extend_from_slice(account.as_bytes());
    let path = uri.path();
    out.extend_from_slice(if path.is_empty() { "/" } else { path }.as_bytes());
    let mut params: std::collections::BTreeMap<Vec<u8>, Vec<Vec<u8>>> = Default::default();
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let mut name: Vec<u8> = percent_decode_str(name).collect();
        name.make_ascii_lowercase();
        params
            .entry(name)
            .or_default()
            .push(percent_decode_str(value).collect());
    }
    for (name, mut values) in params {
        values.sort();
        out.push(b'\n');
        out.extend_from_slice(&name);
        out.push(b':');
        out.extend_from_slice(&values.join(&b","[..]));
    }
    Ok(out)
}

/// OAuth2 client credentials against one token endpoint, with the cached token.
struct Oauth2 {
    url: String,
    token_url: Uri,
    client_id: String,
    scope: String,
    /// The form body, client secret included.
    form: Bytes,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    state: tokio::sync::Mutex<TokenState>,
}

#[derive(Default)]
struct TokenState {
    token: Option<CachedToken>,
    last_failure: Option<(Instant, CredentialError)>,
}

struct CachedToken {
    /// `Bearer …`, sensitive.
    header: HeaderValue,
    refresh_at: Instant,
    expires_at: Instant,
}

impl Oauth2 {
    fn load(
        url: &str,
        client_id: &str,
        secret_file: &Path,
        scope: &str,
        ca_file: Option<&Path>,
    ) -> Result<Oauth2, CredentialError> {
        let bad_url = |reason| CredentialError::TokenUrl {
            url: url.to_string(),
            reason,
        };
        let token_url: Uri = url.parse().map_err(|_| bad_url("not a URL"))?;
        let https = match token_url.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad_url("must be https:// (or http:// for local testing)")),
        };
        let authority = token_url
            .authority()
            .ok_or_else(|| bad_url("has no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad_url("must not carry user information"));
        }
        if !https {
            tracing::warn!(
                token_url = url,
                "the OAuth2 client secret is sent over plain http"
            );
        }
        let secret = read_secret(secret_file)?;
        let secret = std::str::from_utf8(&secret).map_err(|_| CredentialError::Invalid {
            path: secret_file.to_path_buf(),
            reason: "is not UTF-8 text",
        })?;
        let form = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
            utf8_percent_encode(client_id, FORM),
            utf8_percent_encode(secret, FORM),
            utf8_percent_encode(scope, FORM),
        );
        let connector =
            crate::upstream::https_connector(https, ca_file, TOKEN_TIMEOUT).map_err(|reason| {
                CredentialError::Tls {
                    url: url.to_string(),
                    reason,
                }
            })?;
        Ok(Oauth2 {
            url: url.to_string(),
            token_url,
            client_id: client_id.to_string(),
            scope: scope.to_string(),
            form: Bytes::from(form),
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout: TOKEN_TIMEOUT,
            state: tokio::sync::Mutex::new(TokenState::default()),
        })
    }

    /// The `Authorization` value: the cached token, or a fresh one. One fetch at a time: callers
    /// that arrive during a fetch wait for it and share its result.
    async fn token(&self) -> Result<HeaderValue, CredentialError> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        if let Some(token) = &state.token
            && now < token.refresh_at
        {
            return Ok(token.header.clone());
        }
        let backing_off = state
            .last_failure
            .as_ref()
            .filter(|(at, _)| now < *at + FAILURE_BACKOFF)
            .map(|(_, error)| error.clone());
        let result = match backing_off {
            Some(error) => Err(error),
            None => {
                let fetched = self.fetch().await;
                state.last_failure = match &fetched {
                    Ok(_) => None,
                    Err(error) => {
                        tracing::warn!(%error, "cannot obtain an upstream token");
                        Some((Instant::now(), error.clone()))
                    }
                };
                fetched
            }
        };
        match result {
            Ok(token) => {
                let header = token.header.clone();
                state.token = Some(token);
                Ok(header)
            }
            // Refreshed early: the old token still works while the endpoint is down.
            Err(error) => match &state.token {
                Some(token) if Instant::now() < token.expires_at => Ok(token.header.clone()),
                _ => Err(error),
            },
        }
    }

    async fn fetch(&self) -> Result<CachedToken, CredentialError> {
        let error = |reason: String| CredentialError::Token {
            url: self.url.clone(),
            reason,
        };
        let request = http::Request::post(self.token_url.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(self.form.clone()))
            .map_err(|e| error(format!("cannot build the request: {e}")))?;
        let started = Instant::now();
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| crate::upstream::describe(&e))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), TOKEN_RESPONSE_LIMIT)
                .collect()
                .await
                .map_err(|e| format!("reading the response: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        let (status, body) = match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => return Err(error(format!("no answer within {:?}", self.timeout))),
            Ok(Err(reason)) => return Err(error(reason)),
            Ok(Ok(answer)) => answer,
        };
        if !status.is_success() {
            return Err(error(refusal(status, &body)));
        }
        let token = parse_token(&body).map_err(|reason| error(reason.into()))?;
        tracing::debug!(
            token_url = %self.url,
            lifetime_s = token.lifetime.as_secs(),
            "obtained an upstream token"
        );
        Ok(CachedToken {
            header: token.header,
            refresh_at: started + refresh_after(token.lifetime),
            expires_at: started + token.lifetime,
        })
    }
}

/// A refused token request: the status, the IdP's `error` code and, from Entra ID, its
/// `AADSTS` numbers. Only codes, cut to a safe alphabet: `error_description` may echo the
/// request and is left out.
fn refusal(status: StatusCode, body: &[u8]) -> String {
    let mut reason = format!("HTTP {}", status.as_u16());
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return reason;
    };
    if let Some(code) = json.get("error").and_then(|e| e.as_str()) {
        let code: String = code
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            .take(64)
            .collect();
        reason.push_str(", error ");
        reason.push_str(&code);
    }
    if let Some(codes) = json.get("error_codes").and_then(|c| c.as_array()) {
        let codes: Vec<String> = codes
            .iter()
            .filter_map(serde_json::Value::as_u64)
            .take(5)
            .map(|c| format!("AADSTS{c}"))
            .collect();
        if !codes.is_empty() {
            reason.push_str(&format!(" ({})", codes.join(", ")));
        }
    }
    reason
}

/// A successful token response, parsed.
struct ParsedToken {
    header: HeaderValue,
    lifetime: Duration,
}

fn parse_token(body: &[u8]) -> Result<ParsedToken, &'static str> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| "the token response is not JSON")?;
    let token = json
        .get("access_token")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or("the token response has no access_token")?;
    match json.get("token_type") {
        None => {}
        Some(t) if t.as_str().is_some_and(|t| t.eq_ignore_ascii_case("bearer")) => {}
        Some(_) => return Err("the token response's token_type is not Bearer"),
    }
    let lifetime = match json.get("expires_in") {
        None => ASSUMED_LIFETIME,
        Some(v) => seconds(v).ok_or("the token response's expires_in is not a number")?,
    };
    let mut header = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| "the access_token is not a valid header value")?;
    header.set_sensitive(true);
    Ok(ParsedToken { header, lifetime })
}

/// `expires_in` as a number or a numeric string (Entra ID v1 sends strings).
fn seconds(value: &serde_json::Value) -> Option<Duration> {
    let secs = match value {
        serde_json::Value::Number(n) => n.as_f64()?,
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)))
}

/// When to replace a token that lives `lifetime`: five minutes before it expires, or at half
/// its life when it lives under ten minutes.
fn refresh_after(lifetime: Duration) -> Duration {
    if lifetime >= REFRESH_EARLY * 2 {
        lifetime - REFRESH_EARLY
    } else {
        lifetime / 2
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    use super::*;

    const SECRET: &str = "s3cr3t-Value+/=";

    /// A directory with `name` holding `content`.
    fn dir_with(name: &str, content: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(name), content).unwrap();
        dir
    }

    fn header_config(file: &str) -> CredentialConfig {
        CredentialConfig::Header {
            name: "api-key".into(),
            value_file: file.into(),
        }
    }

    fn shared_key_config(account: &str) -> CredentialConfig {
        CredentialConfig::AzureSharedKey {
            account: account.into(),
            key_file: "key".into(),
        }
    }

    fn oauth_config(url: &str, ca_file: Option<PathBuf>) -> CredentialConfig {
        CredentialConfig::Oauth2ClientCredentials {
            token_url: url.into(),
            client_id: "client 1".into(),
            secret_file: "secret".into(),
            scope: "https://management.azure.com/.default".into(),
            ca_file,
        }
    }

    async fn apply(credential: &Credential, client: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer client".parse().unwrap());
        let client = client.map(|c| HeaderValue::from_str(c).unwrap());
        credential
            .apply(
                &Method::GET,
                &"https://upstream.example/x".parse().unwrap(),
                &mut headers,
                client.as_ref(),
            )
            .await
            .unwrap();
        headers
    }

    #[test]
    fn missing_secret_file_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = Credential::load(&header_config("nope.txt"), dir.path()).unwrap_err();
        assert!(matches!(err, CredentialError::Read { .. }), "{err:?}");
        let expected = dir.path().join("nope.txt");
        assert!(
            err.to_string().contains(&expected.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn empty_secret_files_are_errors_naming_the_path() {
        for content in ["", "\n", "\r\n", "  \n\n"] {
            let dir = dir_with("key", content);
            for config in [header_config("key"), shared_key_config("acct")] {
                let err = Credential::load(&config, dir.path()).unwrap_err();
                assert!(matches!(err, CredentialError::Empty { .. }), "{err:?}");
                assert!(err.to_string().contains("key"), "{err}");
            }
        }
    }

    #[test]
    fn shared_key_that_is_not_base64_is_refused_without_its_content() {
        let dir = dir_with("key", "not-base64-Zm9v!!\n");
        let err = Credential::load(&shared_key_config("acct"), dir.path()).unwrap_err();
        assert!(matches!(err, CredentialError::Invalid { .. }), "{err:?}");
        let text = format!("{err} {err:?}");
        assert!(text.contains(&dir.path().join("key").display().to_string()));
        assert!(
            !text.contains("Zm9v") && !text.contains("not-base64"),
            "{text}"
        );
    }

    #[test]
    fn shared_key_account_must_be_letters_and_digits() {
        let dir = dir_with("key", "AAAA");
        for account in ["", "a:b", "a b", "acct\n"] {
            let err = Credential::load(&shared_key_config(account), dir.path()).unwrap_err();
            assert!(matches!(err, CredentialError::Account { .. }), "{err:?}");
        }
    }

    #[tokio::test]
    async fn header_credential_sets_the_file_value_without_its_newline() {
        let dir = dir_with("api-key.txt", &format!("{SECRET}\r\n"));
        let credential = Credential::load(&header_config("api-key.txt"), dir.path()).unwrap();
        let headers = apply(&credential, Some("Bearer client")).await;
        let value = headers.get("api-key").unwrap();
        assert_eq!(value, SECRET);
        assert!(value.is_sensitive());
        assert!(headers.get(header::AUTHORIZATION).is_none());
    }

    #[test]
    fn header_credential_refuses_bad_names_and_values() {
        let dir = dir_with("v", "line1\nline2");
        let err = Credential::load(&header_config("v"), dir.path()).unwrap_err();
        assert!(matches!(err, CredentialError::Invalid { .. }), "{err:?}");
        assert!(!err.to_string().contains("line1"), "{err}");
        let dir = dir_with("v", "ok");
        for name in [
            "bad name",
            "",
            "Host",
            "content-length",
            "transfer-encoding",
        ] {
            let config = CredentialConfig::Header {
                name: name.into(),
                value_file: "v".into(),
            };
            let err = Credential::load(&config, dir.path()).unwrap_err();
            assert!(matches!(err, CredentialError::HeaderName { .. }), "{err:?}");
        }
    }

    #[tokio::test]
    async fn only_pass_through_forwards_the_client_authorization() {
        let dir = dir_with("v", "value");
        let pass = Credential::load(&CredentialConfig::PassThrough, dir.path()).unwrap();
        let headers = apply(&pass, Some("Bearer from-client")).await;
        let auth = headers.get(header::AUTHORIZATION).unwrap();
        assert_eq!(auth, "Bearer from-client");
        assert!(auth.is_sensitive());
        let headers = apply(&pass, None).await;
        assert!(headers.get(header::AUTHORIZATION).is_none());

        let none = Credential::load(&CredentialConfig::None, dir.path()).unwrap();
        let headers = apply(&none, Some("Bearer from-client")).await;
        assert!(headers.is_empty(), "{headers:?}");
        let static_header = Credential::load(&header_config("v"), dir.path()).unwrap();
        let headers = apply(&static_header, Some("Bearer from-client")).await;
        assert!(headers.get(header::AUTHORIZATION).is_none());
    }

    #[tokio::test]
    async fn debug_output_never_contains_a_secret() {
        let key = BASE64.encode(SECRET);
        let dir = tempfile::tempdir().unwrap();
        for (file, content) in [("v", SECRET), ("key", key.as_str()), ("secret", SECRET)] {
            std::fs::write(dir.path().join(file), content).unwrap();
        }
        let credentials = [
            Credential::load(&header_config("v"), dir.path()).unwrap(),
            Credential::load(&shared_key_config("acct"), dir.path()).unwrap(),
            Credential::load(&oauth_config("http://127.0.0.1:9/token", None), dir.path()).unwrap(),
        ];
        for credential in &credentials {
            let debug = format!("{credential:?} {credential:#?}");
            assert!(debug.contains(REDACTED), "{debug}");
            assert!(!debug.contains(SECRET) && !debug.contains(&key), "{debug}");
        }
        assert!(format!("{:?}", credentials[0]).contains("api-key"));
        assert!(format!("{:?}", credentials[1]).contains("acct"));
        assert!(format!("{:?}", credentials[2]).contains("client 1"));
        // The headers a credential set print as "Sensitive".
        let headers = apply(&credentials[0], None).await;
        assert!(!format!("{headers:?}").contains(SECRET));
    }

    /// `Mon, 01 Jan 2024 00:00:00 GMT`.
    fn new_year() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_067_200)
    }

    fn headers_of(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn string_to_sign_follows_the_spec() {
        let headers = headers_of(&[
            ("content-length", "0"),
            ("content-type", "application/xml"),
            ("range", "bytes=0-9"),
            ("x-ms-version", "2021-08-06"),
            ("x-ms-date", "Mon, 01 Jan 2024 00:00:00 GMT"),
            ("x-ms-meta-Zeta", "  padded value "),
            ("x-ms-blob-type", "BlockBlob"),
            ("x-ms-empty", ""),
            ("user-agent", "not signed"),
            ("host", "not signed either"),
        ]);
        let uri: Uri = "https://acct.blob.core.windows.net/c/d%20e/f?b=2&A=%2F1&b=1&comp=list&flag"
            .parse()
            .unwrap();
        let got = string_to_sign("acct", &Method::PUT, &uri, &headers).unwrap();
        let expected = "PUT\n\n\n\n\napplication/xml\n\n\n\n\n\nbytes=0-9\n\
            x-ms-blob-type:BlockBlob\n\
            x-ms-date:Mon, 01 Jan 2024 00:00:00 GMT\n\
            x-ms-empty:\n\
            x-ms-meta-zeta:padded value\n\
            x-ms-version:2021-08-06\n\
            /acct/c/d%20e/f\na:/1\nb:1,2\ncomp:list\nflag:";
        assert_eq!(String::from_utf8(got).unwrap(), expected);
    }

    #[test]
    fn string_to_sign_keeps_a_nonzero_length_and_the_root_path() {
        let headers = headers_of(&[("content-length", "11")]);
        let uri: Uri = "http://127.0.0.1:10000".parse().unwrap();
        let got = string_to_sign("devstoreaccount1", &Method::POST, &uri, &headers).unwrap();
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "POST\n\n\n11\n\n\n\n\n\n\n\n\n/devstoreaccount1/"
        );
    }

    #[test]
    fn shared_key_refuses_repeated_signed_headers() {
        let dir = dir_with("key", "AAAA");
        let Kind::SharedKey(key) = Credential::load(&shared_key_config("acct"), dir.path())
            .unwrap()
            .kind
        else {
            panic!("not a shared key");
        };
        for name in ["x-ms-meta-a", "range"] {
            let mut headers = headers_of(&[(name, "1"), (name, "2")]);
            let uri: Uri = "https://acct.blob.core.windows.net/c".parse().unwrap();
            let err = key
                .sign(&Method::GET, &uri, &mut headers, new_year())
                .unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    /// Well-known Azurite `devstoreaccount1` key (public).
    const AZURITE_KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    /// Bytes 0..32, base64.
    const OTHER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    /// Expected signatures computed independently with Python's stdlib, the StringToSign written
    /// out by hand from the specification:
    /// `base64.b64encode(hmac.new(base64.b64decode(KEY), STS.encode(), hashlib.sha256).digest())`,
    /// x-ms-date `Mon, 01 Jan 2024 00:00:00 GMT` in every case. The StringToSign of each is
    /// given beside it (`\n` written out).
    #[tokio::test]
    async fn shared_key_signatures_match_independent_vectors() {
        struct Vector {
            account: &'static str,
            key: &'static str,
            method: Method,
            uri: &'static str,
            headers: &'static [(&'static str, &'static str)],
            signature: &'static str,
        }
        let vectors = [
            // "GET\n" + "\n"*11 + "x-ms-date:…\nx-ms-version:2021-08-06\n"
            // + "/devstoreaccount1/devstoreaccount1\ncomp:list"   (path-style, default version)
            Vector {
                account: "devstoreaccount1",
                key: AZURITE_KEY,
                method: Method::GET,
                uri: "http://127.0.0.1:10000/devstoreaccount1?comp=list",
                headers: &[],
                signature: "MbwvdsXgEXDgk1vderBsKKrbVQm99j8hKkdqtB9swwM=",
            },
            // "PUT\n\n\n11\nXrY7u+Ae7tCTyyK7j1rNww==\ntext/plain; charset=utf-8\n\n\n\n\n\n\n"
            // + "x-ms-blob-type:BlockBlob\nx-ms-client-request-id:abc-123\nx-ms-date:…\n"
            // + "x-ms-meta-note:hello  world\nx-ms-version:2023-11-03\n"
            // + "/acct/container/dir/my%20blob.txt"
            Vector {
                account: "acct",
                key: OTHER_KEY,
                method: Method::PUT,
                uri: "https://acct.blob.core.windows.net/container/dir/my%20blob.txt",
                headers: &[
                    ("content-length", "11"),
                    ("content-md5", "XrY7u+Ae7tCTyyK7j1rNww=="),
                    ("content-type", "text/plain; charset=utf-8"),
                    ("x-ms-version", "2023-11-03"),
                    ("x-ms-meta-note", "  hello  world  "),
                    ("x-ms-client-request-id", "abc-123"),
                    ("x-ms-blob-type", "BlockBlob"),
                ],
                signature: "ZRX7ekVo4Xe7Ir709NywtBoHJxPz8mtvN2zC8fW+UV4=",
            },
            // "GET\n" + "\n"*11 + "x-ms-date:…\nx-ms-version:2021-08-06\n" + "/acct/c\ncomp:list"
            // + "\ninclude:metadata,snapshots\nprefix:a/b\nrestype:container\ntimeout:30"
            Vector {
                account: "acct",
                key: OTHER_KEY,
                method: Method::GET,
                uri: "https://acct.blob.core.windows.net/c?restype=container&comp=list&prefix=a%2Fb&include=snapshots&include=metadata&Timeout=30",
                headers: &[],
                signature: "SLH3vErNt+FKnoSCo4g7By5sNrXe4p1Z5vYeEEwqPh0=",
            },
            // "GET\n\n\n\n\n\nSun, 31 Dec 2023 23:59:00 GMT\nSat, 30 Dec 2023 00:00:00 GMT\n\n"
            // + "\"0x8DC\"\n\nbytes=0-99\n" + "x-ms-date:…\nx-ms-version:2021-08-06\n/acct/c/b"
            Vector {
                account: "acct",
                key: OTHER_KEY,
                method: Method::GET,
                uri: "https://acct.blob.core.windows.net/c/b",
                headers: &[
                    ("content-length", "0"),
                    ("date", "Sun, 31 Dec 2023 23:59:00 GMT"),
                    ("if-modified-since", "Sat, 30 Dec 2023 00:00:00 GMT"),
                    ("if-none-match", "\"0x8DC\""),
                    ("range", "bytes=0-99"),
                ],
                signature: "/HqJl9fIPZYVBi7oKXK1iBtv6aGbrTdceKl2Ok9/Ldo=",
            },
        ];
        for v in vectors {
            let dir = dir_with("key", &format!("{}\n", v.key));
            let credential = Credential::load(&shared_key_config(v.account), dir.path()).unwrap();
            let Kind::SharedKey(key) = &credential.kind else {
                panic!("not a shared key");
            };
            let mut headers = headers_of(v.headers);
            key.sign(&v.method, &v.uri.parse().unwrap(), &mut headers, new_year())
                .unwrap();
            let auth = headers.get(header::AUTHORIZATION).unwrap();
            assert_eq!(
                auth.to_str().unwrap(),
                format!("SharedKey {}:{}", v.account, v.signature),
                "{}",
                v.uri
            );
            assert!(auth.is_sensitive());
            assert_eq!(headers["x-ms-date"], "Mon, 01 Jan 2024 00:00:00 GMT");
        }
    }

    #[tokio::test]
    async fn shared_key_apply_dates_now_and_keeps_the_client_version() {
        let dir = dir_with("key", OTHER_KEY);
        let credential = Credential::load(&shared_key_config("acct"), dir.path()).unwrap();
        let uri: Uri = "https://acct.blob.core.windows.net/c/b".parse().unwrap();
        let mut headers = headers_of(&[("x-ms-date", "stale"), ("authorization", "Bearer x")]);
        credential
            .apply(&Method::GET, &uri, &mut headers, None)
            .await
            .unwrap();
        let date = httpdate::parse_http_date(headers["x-ms-date"].to_str().unwrap()).unwrap();
        let age = SystemTime::now().duration_since(date).unwrap_or_default();
        assert!(age < Duration::from_secs(5), "{age:?}");
        assert_eq!(headers["x-ms-version"], DEFAULT_STORAGE_VERSION);
        assert!(
            headers[header::AUTHORIZATION]
                .to_str()
                .unwrap()
                .starts_with("SharedKey acct:")
        );

        let mut headers = headers_of(&[("x-ms-version", "2025-01-05")]);
        credential
            .apply(&Method::GET, &uri, &mut headers, None)
            .await
            .unwrap();
        assert_eq!(headers["x-ms-version"], "2025-01-05");
    }

    /// A local token endpoint: counts requests, keeps their bodies, answers with `respond(n)`
    /// (n counts from 1) after `delay`; over TLS when given an acceptor.
    struct TokenServer {
        url: String,
        hits: Arc<AtomicUsize>,
        bodies: Arc<std::sync::Mutex<Vec<String>>>,
    }

    type Respond = Arc<dyn Fn(usize) -> (u16, String) + Send + Sync>;

    async fn token_server(
        delay: Duration,
        tls: Option<tokio_rustls::TlsAcceptor>,
        respond: impl Fn(usize) -> (u16, String) + Send + Sync + 'static,
    ) -> TokenServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let server = TokenServer {
            url: format!("{scheme}://{addr}/tenant/oauth2/v2.0/token"),
            hits: Arc::default(),
            bodies: Arc::default(),
        };
        let (hits, bodies) = (server.hits.clone(), server.bodies.clone());
        let respond: Respond = Arc::new(respond);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (hits, bodies, respond) = (hits.clone(), bodies.clone(), respond.clone());
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let (hits, bodies, respond) = (hits.clone(), bodies.clone(), respond.clone());
                    async move {
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        bodies
                            .lock()
                            .unwrap()
                            .push(String::from_utf8(body.to_vec()).unwrap());
                        let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
                        tokio::time::sleep(delay).await;
                        let (status, text) = respond(n);
                        let response = http::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(text)))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match tls.clone() {
                    None => {
                        tokio::spawn(async move {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        });
                    }
                    Some(acceptor) => {
                        tokio::spawn(async move {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        });
                    }
                }
            }
        });
        server
    }

    fn token_json(n: usize, expires_in: serde_json::Value) -> (u16, String) {
        let body = serde_json::json!({
            "token_type": "Bearer",
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": format!("tok-{n}"),
        });
        (200, body.to_string())
    }

    fn oauth(server_url: &str, dir: &tempfile::TempDir, ca_file: Option<PathBuf>) -> Credential {
        std::fs::write(dir.path().join("secret"), format!("{SECRET}\n")).unwrap();
        Credential::load(&oauth_config(server_url, ca_file), dir.path()).unwrap()
    }

    async fn bearer(credential: &Credential) -> Result<String, CredentialError> {
        let mut headers = HeaderMap::new();
        let uri: Uri = "https://management.azure.com/subscriptions"
            .parse()
            .unwrap();
        credential
            .apply(&Method::GET, &uri, &mut headers, None)
            .await?;
        let value = &headers[header::AUTHORIZATION];
        assert!(value.is_sensitive());
        Ok(value.to_str().unwrap().to_string())
    }

    #[tokio::test]
    async fn oauth2_token_is_fetched_once_and_reused() {
        let server = token_server(Duration::ZERO, None, |n| {
            token_json(n, serde_json::json!(3599))
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let credential = oauth(&server.url, &dir, None);
        assert_eq!(bearer(&credential).await.unwrap(), "Bearer tok-1");
        assert_eq!(bearer(&credential).await.unwrap(), "Bearer tok-1");
        assert_eq!(server.hits.load(Ordering::SeqCst), 1);
        let bodies = server.bodies.lock().unwrap();
        let mut fields: Vec<&str> = bodies[0].split('&').collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "client_id=client%201",
                "client_secret=s3cr3t-Value%2B%2F%3D",
                "grant_type=client_credentials",
                "scope=https%3A%2F%2Fmanagement.azure.com%2F.default",
            ]
        );
    }

    #[tokio::test]
    async fn oauth2_token_is_refetched_before_it_expires() {
        // Entra ID v1 style: expires_in as a string. One second of life: replaced after half.
        let server = token_server(Duration::ZERO, None, |n| {
            token_json(n, serde_json::json!("1"))
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let credential = oauth(&server.url, &dir, None);
        assert_eq!(bearer(&credential).await.unwrap(), "Bearer tok-1");
        assert_eq!(bearer(&credential).await.unwrap(), "Bearer tok-1");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(bearer(&credential).await.unwrap(), "Bearer tok-2");
        assert_eq!(server.hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn oauth2_concurrent_applies_share_one_fetch() {
        let server = token_server(Duration::from_millis(100), None, |n| {
            token_json(n, serde_json::json!(3600))
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let credential = Arc::new(oauth(&server.url, &dir, None));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let credential = credential.clone();
            tasks.spawn(async move { bearer(&credential).await });
        }
        while let Some(result) = tasks.join_next().await {
            assert_eq!(result.unwrap().unwrap(), "Bearer tok-1");
        }
        assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn oauth2_idp_error_names_endpoint_and_code_but_not_the_secret() {
        let server = token_server(Duration::ZERO, None, |_| {
            let body = serde_json::json!({
                "error": "invalid_client",
                "error_description": format!("AADSTS7000215: Invalid client secret {SECRET}"),
                "error_codes": [7000215],
            });
            (401, body.to_string())
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let credential = oauth(&server.url, &dir, None);
        let err = bearer(&credential).await.unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(matches!(err, CredentialError::Token { .. }), "{err:?}");
        for part in [
            server.url.as_str(),
            "401",
            "invalid_client",
            "AADSTS7000215",
        ] {
            assert!(text.contains(part), "{part} missing: {text}");
        }
        assert!(!text.contains(SECRET) && !text.contains("s3cr3t"), "{text}");
        // Callers right behind a failure get it without asking the endpoint again.
        let again = bearer(&credential).await.unwrap_err();
        assert_eq!(again.to_string(), err.to_string());
        assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn oauth2_malformed_token_responses_are_errors() {
        let cases: [(&str, &str); 5] = [
            ("not json", "not JSON"),
            (
                r#"{"token_type":"Bearer","expires_in":3600}"#,
                "no access_token",
            ),
            (
                r#"{"token_type":"mac","expires_in":3600,"access_token":"t"}"#,
                "not Bearer",
            ),
            (
                r#"{"token_type":"Bearer","expires_in":"soon","access_token":"t"}"#,
                "expires_in",
            ),
            (
                r#"{"token_type":"Bearer","expires_in":60,"access_token":"a\nb"}"#,
                "not a valid header value",
            ),
        ];
        for (body, expected) in cases {
            let server = token_server(Duration::ZERO, None, move |_| (200, body.to_string())).await;
            let dir = tempfile::tempdir().unwrap();
            let err = bearer(&oauth(&server.url, &dir, None)).await.unwrap_err();
            assert!(err.to_string().contains(expected), "{body}: {err}");
        }
    }

    #[tokio::test]
    async fn oauth2_keeps_a_still_valid_token_when_the_refresh_fails() {
        let server = token_server(Duration::ZERO, None, |n| match n {
            1 => token_json(n, serde_json::json!(3600)),
            _ => (503, r#"{"error":"temporarily_unavailable"}"#.to_string()),
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let credential = oauth(&server.url, &dir, None);
        assert_eq!(bearer(&credential).await.unwrap(), "Bearer tok-1");
        // The clock we control: make the refresh due now, an hour before expiry.
        let Kind::Oauth2(o) = &credential.kind else {
            panic!("not oauth2");
        };
        if let Some(token) = o.state.lock().await.token.as_mut() {
            token.refresh_at = Instant::now();
        }
        assert_eq!(bearer(&credential).await.unwrap(), "Bearer tok-1");
        assert_eq!(bearer(&credential).await.unwrap(), "Bearer tok-1");
        assert_eq!(server.hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn oauth2_slow_or_unreachable_endpoints_are_errors() {
        let server = token_server(Duration::from_secs(5), None, |n| {
            token_json(n, serde_json::json!(3600))
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let mut credential = oauth(&server.url, &dir, None);
        if let Kind::Oauth2(o) = &mut credential.kind {
            o.timeout = Duration::from_millis(200);
        }
        let err = bearer(&credential).await.unwrap_err();
        assert!(err.to_string().contains("no answer within"), "{err}");

        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", closed.local_addr().unwrap());
        drop(closed);
        let err = bearer(&oauth(&url, &dir, None)).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&url) && !text.contains(SECRET), "{text}");
    }

    #[test]
    fn oauth2_token_url_must_be_an_http_url() {
        let dir = dir_with("secret", SECRET);
        for url in [
            "ftp://idp/token",
            "/token",
            "not a url",
            "https://user:pw@idp/token",
        ] {
            let err = Credential::load(&oauth_config(url, None), dir.path()).unwrap_err();
            assert!(
                matches!(err, CredentialError::TokenUrl { .. }),
                "{url}: {err:?}"
            );
        }
    }

    #[test]
    fn oauth2_ca_file_must_hold_certificates() {
        let dir = dir_with("secret", SECRET);
        std::fs::write(dir.path().join("empty.pem"), "").unwrap();
        for ca in ["missing.pem", "empty.pem"] {
            let config = oauth_config("https://127.0.0.1:1/token", Some(ca.into()));
            let err = Credential::load(&config, dir.path()).unwrap_err();
            assert!(matches!(err, CredentialError::Tls { .. }), "{err:?}");
            assert!(err.to_string().contains(ca), "{err}");
        }
    }

    #[test]
    fn refresh_is_five_minutes_early_or_at_half_life() {
        let s = Duration::from_secs;
        assert_eq!(refresh_after(s(3600)), s(3300));
        assert_eq!(refresh_after(s(600)), s(300));
        assert_eq!(refresh_after(s(599)), Duration::from_millis(299_500));
        assert_eq!(refresh_after(s(1)), Duration::from_millis(500));
        assert_eq!(refresh_after(s(0)), s(0));
    }

    #[test]
    fn expires_in_is_a_number_or_a_numeric_string() {
        let s = |v: serde_json::Value| seconds(&v);
        assert_eq!(s(serde_json::json!(3599)), Some(Duration::from_secs(3599)));
        assert_eq!(
            s(serde_json::json!("3599")),
            Some(Duration::from_secs(3599))
        );
        assert_eq!(s(serde_json::json!(" 60 ")), Some(Duration::from_secs(60)));
        assert_eq!(s(serde_json::json!(-1)), None);
        assert_eq!(s(serde_json::json!("soon")), None);
        assert_eq!(s(serde_json::json!(null)), None);
    }

    /// A CA, and a certificate for 127.0.0.1 it signed, as a TLS acceptor; the CA's PEM.
    fn tls_endpoint() -> (tokio_rustls::TlsAcceptor, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .unwrap();
        (Arc::new(config).into(), ca.pem())
    }

    #[tokio::test]
    async fn https_token_endpoint_is_trusted_through_ca_file() {
        let (acceptor, ca_pem) = tls_endpoint();
        let server = token_server(Duration::ZERO, Some(acceptor), |n| {
            token_json(n, serde_json::json!(3600))
        })
        .await;
        let dir = dir_with("ca.pem", &ca_pem);
        let credential = oauth(&server.url, &dir, Some("ca.pem".into()));
        assert_eq!(bearer(&credential).await.unwrap(), "Bearer tok-1");

        // Another CA's certificate is not trusted.
        let (_, other_ca) = tls_endpoint();
        std::fs::write(dir.path().join("other.pem"), other_ca).unwrap();
        let credential = oauth(&server.url, &dir, Some("other.pem".into()));
        let err = bearer(&credential).await.unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
        assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    }
}
