//! Load-test baseline: the simplest correct hyper forwarding proxy, no plugins, no TLS.
//!
//! `bare_proxy PORT UPSTREAM` listens on `127.0.0.1:PORT` (0: any free port), HTTP/1.1 with
//! keep-alive, on a multi-threaded Tokio runtime, and forwards every request to `UPSTREAM`
//! (`http://HOST:PORT`) through one pooled hyper-util client: the URI is rewritten to the
//! upstream's authority, hop-by-hop headers are stripped both ways, bodies stream both ways.
//! It prints the bound address on stdout once it accepts connections.
//!
//! `scripts/bench-load.sh` measures Portcullis against it: what a gateway costs beyond
//! forwarding itself. Keep it plain — neither slowed down nor tuned beyond what a production
//! proxy does by default (pooled keep-alive upstream connections, `TCP_NODELAY`).
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{
    CONNECTION, HOST, HeaderMap, HeaderName, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The pooled upstream client; request bodies stream straight from the downstream connection.
type UpstreamClient = Client<HttpConnector, Incoming>;

/// A response body: the upstream's, streamed, or a short error of our own.
type ProxyBody = Either<Incoming, Full<Bytes>>;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare_proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    const USAGE: &str = "usage: bare_proxy PORT http://UPSTREAM_HOST:PORT";
    let mut args = std::env::args().skip(1);
    let port = args.next().ok_or(USAGE)?;
    let port: u16 = port
        .parse()
        .map_err(|e| format!("PORT `{port}` is not a port number: {e}"))?;
    let upstream = parse_upstream(&args.next().ok_or(USAGE)?)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the Tokio runtime: {e}"))?;
    runtime.block_on(serve(SocketAddr::from(([127, 0, 0, 1], port)), upstream))
}

/// `http://HOST:PORT` (a trailing `/` allowed) to its authority; anything else is refused.
fn parse_upstream(arg: &str) -> Result<Authority, String> {
    let uri: Uri = arg
        .parse()
        .map_err(|e| format!("UPSTREAM `{arg}` is not a URI: {e}"))?;
    let base_path = uri.path_and_query().map_or("/", PathAndQuery::as_str);
    match (uri.scheme(), uri.authority()) {
        (Some(scheme), Some(authority)) if *scheme == Scheme::HTTP && base_path == "/" => {
            Ok(authority.clone())
        }
        _ => Err(format!(
            "UPSTREAM `{arg}` must be plain http://HOST:PORT, without a path"
        )),
    }
}

async fn serve(addr: SocketAddr, upstream: Authority) -> Result<(), String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: UpstreamClient = Client::builder(TokioExecutor::new()).build(connector);
    announce(bound)?;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: report, back off, keep serving.
                eprintln!("bare_proxy: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            eprintln!("bare_proxy: set_nodelay: {e}");
        }
        let client = client.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| forward(client.clone(), upstream.clone(), req));
            // Errors here are clients going away (a load generator stopping): not ours to report.
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Forward one request upstream and stream the answer back; 502 when the upstream fails.
async fn forward(
    client: UpstreamClient,
    upstream: Authority,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = match Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(upstream)
        .path_and_query(path_and_query)
        .build()
    {
        Ok(uri) => uri,
        Err(e) => return Ok(error(StatusCode::BAD_REQUEST, &format!("bad URI: {e}"))),
    };
    strip_hop_by_hop(&mut parts.headers);
    // The client writes `Host` from the URI: the upstream sees its own authority.
    parts.headers.remove(HOST);
    parts.version = Version::HTTP_11;
    match client.request(Request::from_parts(parts, body)).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(parts, Either::Left(body)))
        }
        Err(e) => {
            eprintln!("bare_proxy: upstream: {e}");
            Ok(error(StatusCode::BAD_GATEWAY, "upstream failed"))
        }
    }
}

/// Remove the headers that describe one connection, not the message (RFC 9110 §7.6.1):
/// the fixed list, and every header the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        CONNECTION,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

fn error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(format!(
        "{message}\n"
    )))));
    *response.status_mut() = status;
    response
}

/// Print the bound address on stdout (one line, flushed): the "ready" signal.
fn announce(bound: SocketAddr) -> Result<(), String> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{bound}")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))
}
