//! The upstream side of a route: its HTTP client (TLS with the system roots or a CA bundle,
//! HTTP/1.1 or HTTP/2 by ALPN, connect timeout), hop-by-hop stripping, the gateway's own
//! credential, and `forward()`.
use std::path::Path;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::RouteConfig;
use crate::credential::Credential;
use crate::error::GatewayError;
use crate::proxy::Body;

/// A route's upstream: where requests go and how the gateway authenticates there.
pub struct Upstream {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// The upstream URL's path without its trailing `/`; the request path is appended.
    base_path: String,
    client: Client<HttpsConnector<HttpConnector>, Body>,
    request_timeout: Duration,
    credential: Credential,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("scheme", &self.scheme)
            .field("authority", &self.authority)
            .field("base_path", &self.base_path)
            .finish_non_exhaustive()
    }
}

/// An upstream could not be set up from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The URL is not usable.
    #[error("upstream {0:?} is not an absolute http(s) URL")]
    Url(String),
    /// TLS could not be configured (CA bundle, system roots).
    #[error("TLS client: {0}")]
    Tls(String),
    /// The credential could not be loaded.
    #[error(transparent)]
    Credential(#[from] crate::credential::CredentialError),
}

impl Upstream {
    /// Build the client and load the credential for a route (paths relative to `base_dir`).
    pub fn build(route: &RouteConfig, base_dir: &Path) -> Result<Upstream, UpstreamError> {
        let uri: Uri = route
            .upstream
            .parse()
            .map_err(|_| UpstreamError::Url(route.upstream.clone()))?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            return Err(UpstreamError::Url(route.upstream.clone()));
        };
        let ca_file = route.ca_file.as_ref().map(|f| base_dir.join(f));
        let tls = tls_client_config(ca_file.as_deref(), scheme == http::uri::Scheme::HTTPS)
            .map_err(UpstreamError::Tls)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(route.connect_timeout));
        http.set_nodelay(true);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Upstream {
            scheme,
            authority,
            base_path: uri.path().trim_end_matches('/').to_string(),
            client,
            request_timeout: route.request_timeout,
            credential: Credential::load(&route.credential, base_dir)?,
        })
    }

    /// The upstream URI for a request's path and query.
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, GatewayError> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{}", self.base_path, path_and_query))
            .build()
            .map_err(|e| GatewayError::BadRequest(format!("path cannot be forwarded: {e}")))
    }

    /// Send a request upstream with the gateway's credential set last (a Shared Key signature
    /// covers the final headers), and wait for the response head within the route's timeout.
    /// `client_authorization` is the client's own `Authorization`, used only by a
    /// pass-through credential.
    pub async fn forward(
        &self,
        mut request: Request<Body>,
        client_authorization: Option<&HeaderValue>,
    ) -> Result<Response<Incoming>, GatewayError> {
        let (method, uri) = (request.method().clone(), request.uri().clone());
        self.credential
            .apply(&method, &uri, request.headers_mut(), client_authorization)
            .await?;
        match tokio::time::timeout(self.request_timeout, self.client.request(request)).await {
            Err(_) => Err(GatewayError::UpstreamTimeout(self.request_timeout)),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) if e.is_connect() && is_timeout(&e) => {
                Err(GatewayError::UpstreamTimeout(self.request_timeout))
            }
            Ok(Err(e)) => Err(GatewayError::Upstream(describe(&e))),
        }
    }
}

fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        if err.to_string().contains("timed out") {
            return true;
        }
        source = err.source();
    }
    false
}

/// An error and its causes, on one line, for the log.
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        out.push_str(": ");
        out.push_str(&err.to_string());
        source = err.source();
    }
    out
}

/// A TLS client configuration trusting the PEM bundle `ca_file`, or else the system's roots
/// (which must exist when `https`), built with an explicit aws-lc-rs provider: nothing
/// process-wide. TLS 1.2 and 1.3.
pub fn tls_client_config(
    ca_file: Option<&Path>,
    https: bool,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(file) => {
            let certs = read_certificates(file)
                .map_err(|reason| format!("CA bundle {}: {reason}", file.display()))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("CA bundle {}: {e}", file.display()))?;
            }
        }
        None => {
            // A broken system certificate is skipped, as every TLS client does.
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if https && roots.is_empty() {
                return Err("the system has no root certificates: install ca-certificates, or set a CA bundle".into());
            }
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A client connector for a control-plane endpoint (token endpoint, identity provider): TLS
/// trusting `ca_file` or the system's roots, https only for an https URL, HTTP/1.1.
pub fn https_connector(
    https: bool,
    ca_file: Option<&Path>,
    connect_timeout: Duration,
) -> Result<HttpsConnector<HttpConnector>, String> {
    let config = tls_client_config(ca_file, https)?;
    let builder = HttpsConnectorBuilder::new().with_tls_config(config);
    let builder = if https {
        builder.https_only()
    } else {
        builder.https_or_http()
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    Ok(builder.enable_http1().wrap_connector(http))
}

/// Read every certificate of a PEM file; an empty file is an error.
pub fn read_certificates(
    file: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(file)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("contains no PEM certificate".into());
    }
    Ok(certs)
}

/// Headers that describe one connection, not the message: never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Remove hop-by-hop headers, including every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove("proxy-connection");
}

/// Append the client's address to `X-Forwarded-For`.
pub fn append_forwarded_for(headers: &mut HeaderMap, client: std::net::IpAddr) {
    const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    let value = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(previous) => format!("{previous}, {client}"),
        None => client.to_string(),
    };
    // Takes the string's buffer as is (`from_str` would copy it).
    if let Ok(v) = HeaderValue::try_from(value) {
        headers.insert(X_FORWARDED_FOR, v);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_named_by_connection_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, [10, 0, 0, 1].into());
        append_forwarded_for(&mut h, [127, 0, 0, 1].into());
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
    }
}
