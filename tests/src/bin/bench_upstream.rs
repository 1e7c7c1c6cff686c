//! Load-test upstream: answers every request 200 with a fixed small JSON body, or, for
//! `GET /bytes/N`, with N zero bytes streamed in 64 KiB chunks (never held in memory).
//!
//! `bench_upstream PORT` listens on `127.0.0.1:PORT` (0: any free port), HTTP/1.1 with
//! keep-alive, on a multi-threaded Tokio runtime, and prints the bound address on stdout once
//! it accepts connections. Used by `scripts/bench-load.sh` as the target behind every proxy.
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The response body: about 200 bytes, shaped like a small API answer. The script checks
/// for the `bench-upstream` marker to prove a proxy really forwarded.
const BODY: &str = r#"{"service":"bench-upstream","status":"ok","id":"0af7651916cd43dd8448eb211c80319c","items":[{"name":"alpha","size":1024,"tags":["a","b"]},{"name":"beta","size":2048,"tags":["c"]}],"next":null,"count":2}"#;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_upstream: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let port = parse_port(std::env::args().nth(1))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the Tokio runtime: {e}"))?;
    runtime.block_on(serve(SocketAddr::from(([127, 0, 0, 1], port))))
}

fn parse_port(arg: Option<String>) -> Result<u16, String> {
    let arg = arg.ok_or("usage: bench_upstream PORT")?;
    arg.parse()
        .map_err(|e| format!("PORT `{arg}` is not a port number: {e}"))
}

async fn serve(addr: SocketAddr) -> Result<(), String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    announce(bound)?;
    let body = Bytes::from_static(BODY.as_bytes());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: report, back off, keep serving.
                eprintln!("bench_upstream: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        // Each response is one small write; without NODELAY, Nagle's algorithm could hold it.
        if let Err(e) = stream.set_nodelay(true) {
            eprintln!("bench_upstream: set_nodelay: {e}");
        }
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let response = match streamed_size(req.uri().path()) {
                    Some(size) => zeros(size),
                    None => {
                        let mut response = Response::new(Full::new(body.clone()).boxed());
                        response
                            .headers_mut()
                            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                        response
                    }
                };
                async move { Ok::<_, Infallible>(response) }
            });
            // Errors here are clients going away (a load generator stopping): not ours to report.
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Print the bound address on stdout (one line, flushed): the "ready" signal.
fn announce(bound: SocketAddr) -> Result<(), String> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{bound}")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))
}

/// `/bytes/N`: the size to stream.
fn streamed_size(path: &str) -> Option<u64> {
    path.strip_prefix("/bytes/")?.parse().ok()
}

/// N zero bytes, produced 64 KiB at a time as the client reads them.
fn zeros(size: u64) -> Response<BoxBody<Bytes, Infallible>> {
    const CHUNK: u64 = 64 << 10;
    let zeros = Bytes::from(vec![0u8; CHUNK as usize]);
    let chunks = (0..size.div_ceil(CHUNK)).map(move |i| {
        let len = CHUNK.min(size - i * CHUNK) as usize;
        Ok::<_, Infallible>(hyper::body::Frame::data(zeros.slice(..len)))
    });
    let mut response = Response::new(StreamBody::new(futures_util::stream::iter(chunks)).boxed());
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(size));
    response
}
