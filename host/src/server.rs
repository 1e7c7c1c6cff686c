//! The listeners: the gateway (TLS with rustls, HTTP/1.1 and HTTP/2 by ALPN, or plaintext when
//! configured), the admin listener (`/healthz`, `/readyz`, `/plugins`, `/reload`, and the
//! approvers' `/approvals` page and `/api/approvals`), the reload
//! watch, and graceful drain on shutdown.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::approval::{self, Approvals};
use crate::audit::Audit;
use crate::config::{Config, TlsConfig};
use crate::gateway::{BuildError, Gateway};
use crate::proxy::{self, Body, Client, full};
use crate::reload::{self, Live, Outcome, Watching};

/// The gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Plugins, routes or upstreams could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The TLS certificate or key could not be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The plugin directory or the configuration file cannot be watched. Starting anyway would
    /// leave operators believing that policy they drop in takes effect.
    #[error(
        "reload watch: {0} (raise fs.inotify.max_user_watches / max_user_instances, or set \
         [reload] watch = false and reload through the admin API)"
    )]
    Watch(String),
    /// The audit log (or the session recordings) could not be opened.
    #[error("{0}")]
    Audit(String),
    /// The approval store or its webhooks could not be set up.
    #[error("approvals: {0}")]
    Approvals(String),
    /// The admin listener's token file could not be read.
    #[error("server.admin_token_file: {0}")]
    AdminToken(String),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        reason: String,
    },
}

/// How long a client may take to finish the TLS handshake, and to send a request head.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A running gateway. [`Running::shutdown`] drains it; dropping it stops accepting and drains
/// without waiting.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    ready: Arc<AtomicBool>,
    gateway: JoinHandle<()>,
    /// The admin listener and its own stop: it keeps answering (`/readyz`: 503) while the
    /// gateway drains, and stops last.
    admin: Option<(JoinHandle<()>, watch::Sender<bool>)>,
    live: Arc<Live>,
    /// The reload watch, when `[reload] watch` and the configuration came from a file.
    _watching: Option<Watching>,
}

impl Running {
    /// The gateway listener's address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener's address, when configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The gateway serving now, and its reloads.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Mark not ready, stop accepting, let in-flight requests finish within the configured
    /// grace period, close every connection; the admin listener stops last.
    pub async fn shutdown(self) {
        self.ready.store(false, Ordering::SeqCst);
        // Requests parked for approval are answered with their approval id, not cut off.
        if let Some(approvals) = &self.live.gateway().approvals {
            approvals.close();
        }
        let _ = self.stop.send(true);
        let _ = self.gateway.await;
        if let Some(audit) = &self.live.gateway().audit {
            // Completion records of the last responses are queued before the stop record.
            tokio::task::yield_now().await;
            if let Err(e) = audit
                .event("gateway.stop", json!({"reason": "shutdown"}))
                .await
            {
                tracing::error!(error = %e, "audit: the stop record could not be written");
            }
            if let Err(e) = audit.close() {
                tracing::error!(error = %e, "audit: the final checkpoint could not be written");
            }
        }
        if let Some((task, stop)) = self.admin {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }
}

/// Build the gateway from a validated configuration and start its listeners (and, for a
/// configuration read from a file with `[reload] watch`, the reload watch).
pub async fn start(config: &Config) -> Result<Running, StartError> {
    let gateway = Gateway::build(config).await?;
    start_with(config, gateway).await
}

/// Start the listeners of `config` serving an already built gateway.
pub async fn start_with(config: &Config, mut gateway: Gateway) -> Result<Running, StartError> {
    let server = &config.server;
    let tls = tls_acceptor(config)?;
    let listener = bind(server.listen).await?;
    let addr = local_addr(&listener, server.listen)?;
    let operators = Arc::new(Operators::from_config(config)?);
    let (admin_listener, admin_addr) = match server.admin_listen {
        Some(admin) => {
            let listener = bind(admin).await?;
            let addr = local_addr(&listener, admin)?;
            (Some(listener), Some(addr))
        }
        None => (None, None),
    };
    match (&config.audit, &gateway.audit) {
        (Some(settings), None) => {
            let (audit, opened) = Audit::open(config, settings).map_err(StartError::Audit)?;
            let audit = Arc::new(audit);
            let start = json!({
                "version": env!("CARGO_PKG_VERSION"), "pid": std::process::id(),
                "listen": addr.to_string(), "epoch": opened.epoch,
                "durability": audit.durability(), "on_failure": settings.on_failure,
                "recovered": opened.cuts.len(), "key_rotated": opened.rotated,
            });
            audit
                .event("gateway.start", start)
                .await
                .map_err(|e| StartError::Audit(format!("audit: {e}")))?;
            audit
                .event("config.loaded", reload::loaded_record(&gateway, "start"))
                .await
                .map_err(|e| StartError::Audit(format!("audit: {e}")))?;
            gateway.audit = Some(audit);
        }
        (None, _) => {
            tracing::warn!("no [audit] section: requests are served without a signed audit log")
        }
        (Some(_), Some(_)) => {}
    }
    if let (Some(settings), None) = (&config.approvals, &gateway.approvals) {
        gateway.approvals = Some(
            Approvals::open(config, settings, admin_addr, gateway.audit.clone())
                .map_err(StartError::Approvals)?,
        );
    }
    let live = Live::new(gateway);
    let watching = match (config.reload.watch, &config.source) {
        (true, Some(_)) => {
            Some(reload::watch(&live, config.reload.debounce).map_err(StartError::Watch)?)
        }
        _ => None,
    };
    let (stop, stopped) = watch::channel(false);
    let ready = Arc::new(AtomicBool::new(true));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let header_limit = usize::try_from(server.max_header_bytes.as_u64()).unwrap_or(usize::MAX);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(header_limit.saturating_mul(2).max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(header_limit).unwrap_or(u32::MAX));
    let gateway = tokio::spawn(accept(
        listener,
        tls,
        Arc::new(builder),
        live.clone(),
        stopped,
        server.shutdown_grace,
    ));
    let mut admin_task = None;
    if let Some(listener) = admin_listener {
        let (admin_stop, admin_stopped) = watch::channel(false);
        let task = tokio::spawn(serve_admin(
            listener,
            ready.clone(),
            live.clone(),
            operators,
            admin_stopped,
        ));
        admin_task = Some((task, admin_stop));
    }
    tracing::info!(%addr, tls = server.tls.is_some() && !server.plaintext, admin = ?admin_addr, "gateway listening");
    Ok(Running {
        addr,
        admin_addr,
        stop,
        ready,
        gateway,
        admin: admin_task,
        live,
        _watching: watching,
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|e| StartError::Bind {
        addr,
        reason: e.to_string(),
    })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|e| StartError::Bind {
        addr,
        reason: e.to_string(),
    })
}

/// The TLS acceptor of a configuration; none when it serves plaintext.
pub fn tls_acceptor(config: &Config) -> Result<Option<TlsAcceptor>, StartError> {
    match &config.server.tls {
        Some(tls) if !config.server.plaintext => acceptor(config, tls).map(Some),
        _ => Ok(None),
    }
}

/// A rustls acceptor for the configured certificate: TLS 1.2 and 1.3, ALPN h2 and http/1.1.
fn acceptor(config: &Config, tls: &TlsConfig) -> Result<TlsAcceptor, StartError> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let cert_file = config.path(&tls.cert_file);
    let key_file = config.path(&tls.key_file);
    let certs = crate::upstream::read_certificates(&cert_file)
        .map_err(|e| StartError::Tls(format!("{}: {e}", cert_file.display())))?;
    // The key's content never appears in an error: only the file name.
    let key = PrivateKeyDer::from_pem_file(&key_file).map_err(|_| {
        StartError::Tls(format!(
            "{}: no usable PEM private key (PKCS#8, PKCS#1 or SEC1)",
            key_file.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StartError::Tls(format!("{}: {e}", cert_file.display())))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// Accept connections until told to stop, then drain within `grace`.
async fn accept(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    live: Arc<Live>,
    mut stopped: watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (builder, live, watcher) = (builder.clone(), live.clone(), graceful.watcher());
        let tls = tls.clone();
        tokio::spawn(async move {
            let client = Client {
                addr: peer,
                tls: tls.is_some(),
            };
            let service = service_fn(move |request: Request<Incoming>| {
                // The gateway serving now; the request keeps it to the end, across reloads.
                let gateway = live.gateway();
                async move { Ok::<_, Infallible>(proxy::handle(&gateway, client, request).await) }
            });
            let result = match tls {
                Some(tls) => {
                    let stream =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    watcher
                        .watch(builder.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                None => {
                    watcher
                        .watch(builder.serve_connection(TokioIo::new(stream), service))
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(?grace, "draining in-flight requests");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "requests still in flight after the grace period; closing"
        );
    }
}

/// Who may use the admin listener's operator endpoints (`/plugins`, `/reload`): with
/// `server.admin_token_file`, a client presenting that bearer token; without, only clients
/// connecting from a loopback address (fail closed when the listener is bound more widely).
/// Health probes and the approvers' API (which checks its own tokens) are not gated here.
struct Operators {
    /// SHA-256 of the token: compared digest to digest, so the comparison's timing says
    /// nothing about the token itself.
    token: Option<[u8; 32]>,
}

impl Operators {
    fn from_config(config: &Config) -> Result<Operators, StartError> {
        let token = match &config.server.admin_token_file {
            Some(file) => {
                let secret = crate::credential::read_secret(&config.path(file))
                    .map_err(|e| StartError::AdminToken(e.to_string()))?;
                Some(Sha256::digest(secret.trim_ascii()).into())
            }
            None => None,
        };
        Ok(Operators { token })
    }

    /// `Ok` when the client may go on, else the refusal.
    fn admit(&self, peer: SocketAddr, headers: &http::HeaderMap) -> Result<(), Refusal> {
        let Some(expected) = &self.token else {
            return match peer.ip().to_canonical().is_loopback() {
                true => Ok(()),
                false => Err(Refusal::NotLoopback),
            };
        };
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .filter(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer "))
            .map(|v| v[7..].trim_ascii())
            .ok_or(Refusal::NoToken)?;
        match <[u8; 32]>::from(Sha256::digest(presented)) == *expected {
            true => Ok(()),
            false => Err(Refusal::WrongToken),
        }
    }
}

/// Why an operator endpoint refused a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// No token is configured and the client is not on a loopback address.
    NotLoopback,
    /// A token is required and none was presented.
    NoToken,
    /// The token presented is not the configured one.
    WrongToken,
}

/// The one mapping of operator refusals to responses (the token is never echoed).
fn refuse(refusal: Refusal) -> Response<Body> {
    let (status, code, message) = match refusal {
        Refusal::NotLoopback => (
            StatusCode::FORBIDDEN,
            "Forbidden",
            "/plugins and /reload answer only on loopback unless server.admin_token_file is set",
        ),
        Refusal::NoToken => (
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "this endpoint needs the admin token (Authorization: Bearer …)",
        ),
        Refusal::WrongToken => (
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "the admin token presented is not valid",
        ),
    };
    let mut response = json(
        status,
        &json!({"error": {"code": code, "message": message}}),
    );
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"portcullis-admin\""),
        );
    }
    response
}

/// `/healthz`: the process is alive. `/readyz`: it accepts traffic: not while draining, nor
/// while an identity provider's keys have never loaded. `GET /plugins`: the plugins serving
/// now and the reload status (JSON). `POST /reload`: reload now; 200 when applied or
/// unchanged, 422 with the reason when rejected. The last two only for [`Operators`].
async fn serve_admin(
    listener: TcpListener,
    ready: Arc<AtomicBool>,
    live: Arc<Live>,
    operators: Arc<Operators>,
    mut stopped: watch::Receiver<bool>,
) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let (stream, peer) = tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let (builder, ready, live) = (builder.clone(), ready.clone(), live.clone());
        let operators = operators.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let readiness = match ready.load(Ordering::SeqCst) {
                    false => Err("draining".to_string()),
                    true => live.gateway().identity.unready().map_or(Ok(()), Err),
                };
                let (live, operators) = (live.clone(), operators.clone());
                async move {
                    if approval::api::serves(request.uri().path()) {
                        return Ok(approval::api::handle(&live.gateway(), request).await);
                    }
                    let response = match (request.method(), request.uri().path()) {
                        (&http::Method::GET, "/plugins") | (&http::Method::POST, "/reload") => {
                            match operators.admit(peer, request.headers()) {
                                Err(refusal) => refuse(refusal),
                                Ok(()) if request.method() == http::Method::GET => {
                                    json(StatusCode::OK, &plugins(&live))
                                }
                                Ok(()) => {
                                    let attempt = live.reload("admin").await;
                                    let status = match attempt.outcome {
                                        Outcome::Rejected => StatusCode::UNPROCESSABLE_ENTITY,
                                        _ => StatusCode::OK,
                                    };
                                    json(status, &serde_json::json!(attempt))
                                }
                            }
                        }
                        (_, path) => admin(path, readiness),
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The plugins serving now (name, alias, version, sha256, load time) and the reload status.
fn plugins(live: &Live) -> serde_json::Value {
    let gateway = live.gateway();
    let set = &gateway.plugins;
    let plugins: Vec<serde_json::Value> = gateway
        .config
        .plugins
        .iter()
        .filter_map(|p| {
            let known_as = p.alias.as_deref().unwrap_or(&p.name);
            let plugin = set.get(known_as)?;
            let loaded_ms = plugin
                .loaded_at()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            Some(serde_json::json!({
                "name": plugin.id().name,
                "alias": p.alias,
                "version": plugin.id().version,
                "sha256": plugin.id().sha256,
                "file": p.file,
                "loaded_at_ms": loaded_ms,
            }))
        })
        .collect();
    serde_json::json!({"status": live.status(), "plugins": plugins})
}

/// An admin listener answer in JSON, never cached (it describes the state of the moment, or an
/// approver's view).
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(format!("{value:#}\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}

fn admin(path: &str, readiness: Result<(), String>) -> Response<Body> {
    let (status, text) = match (path, readiness) {
        ("/healthz", _) => (StatusCode::OK, "ok\n".to_string()),
        ("/readyz", Ok(())) => (StatusCode::OK, "ready\n".to_string()),
        ("/readyz", Err(reason)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
    };
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: Option<&str>) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    fn peer(addr: &str) -> SocketAddr {
        addr.parse().unwrap()
    }

    #[test]
    fn without_a_token_only_loopback_clients_are_operators() {
        let open = Operators { token: None };
        for addr in [
            "127.0.0.1:5000",
            "127.8.9.1:5000",
            "[::1]:5000",
            "[::ffff:127.0.0.1]:5000",
        ] {
            assert_eq!(open.admit(peer(addr), &headers(None)), Ok(()), "{addr}");
        }
        for addr in [
            "10.0.0.7:5000",
            "192.0.2.1:5000",
            "[2001:db8::1]:5000",
            "[::ffff:10.0.0.7]:5000",
        ] {
            assert_eq!(
                open.admit(peer(addr), &headers(Some("Bearer anything"))),
                Err(Refusal::NotLoopback),
                "{addr}"
            );
        }
    }

    #[test]
    fn with_a_token_every_client_must_present_it() {
        let token = Operators {
            token: Some(Sha256::digest(b"s3cret-admin-token").into()),
        };
        for addr in ["127.0.0.1:5000", "10.0.0.7:5000"] {
            let addr = peer(addr);
            assert_eq!(token.admit(addr, &headers(None)), Err(Refusal::NoToken));
            assert_eq!(
                token.admit(addr, &headers(Some("Basic czNjcmV0"))),
                Err(Refusal::NoToken)
            );
            assert_eq!(
                token.admit(addr, &headers(Some("Bearer s3cret-admin-tokeN"))),
                Err(Refusal::WrongToken)
            );
            assert_eq!(
                token.admit(addr, &headers(Some("Bearer "))),
                Err(Refusal::NoToken)
            );
            assert_eq!(
                token.admit(addr, &headers(Some("Bearer s3cret-admin-token"))),
                Ok(())
            );
            assert_eq!(
                token.admit(addr, &headers(Some("bearer s3cret-admin-token"))),
                Ok(())
            );
        }
    }

    #[tokio::test]
    async fn refusals_are_json_errors_with_a_challenge_when_unauthorized() {
        use http_body_util::BodyExt;
        for refusal in [Refusal::NotLoopback, Refusal::NoToken, Refusal::WrongToken] {
            let response = refuse(refusal);
            let unauthorized = response.status() == StatusCode::UNAUTHORIZED;
            assert_eq!(
                response
                    .headers()
                    .contains_key(http::header::WWW_AUTHENTICATE),
                unauthorized
            );
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(body["error"]["code"].is_string(), "{body}");
            assert!(body["error"]["message"].is_string(), "{body}");
        }
    }
}
