//! A mock upstream on 127.0.0.1: records every request it receives and answers with what the
//! test's handler says (status, headers, body, optional delay).
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// A request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path_and_query: String,
    /// Headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

/// What the upstream answers.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Bytes,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Send the body in pieces of this many bytes, with no Content-Length (HTTP/1.1 chunked
    /// transfer coding); 0: in one piece with a Content-Length.
    pub chunk: usize,
}

impl Reply {
    /// 200 with a JSON body.
    pub fn json(body: &str) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::copy_from_slice(body.as_bytes()),
            delay: Duration::ZERO,
            chunk: 0,
        }
    }

    /// 200 with `body` of this Content-Type (and Content-Encoding, if any).
    pub fn typed(content_type: &str, encoding: Option<&str>, body: impl Into<Bytes>) -> Reply {
        let mut headers = vec![("content-type".to_string(), content_type.to_string())];
        if let Some(e) = encoding {
            headers.push(("content-encoding".into(), e.into()));
        }
        Reply {
            status: 200,
            headers,
            body: body.into(),
            delay: Duration::ZERO,
            chunk: 0,
        }
    }

    /// The same reply sent in pieces of `size` bytes (chunked).
    pub fn chunked(mut self, size: usize) -> Reply {
        self.chunk = size;
        self
    }

    /// The body as the upstream sends it.
    fn into_body(self) -> BoxBody<Bytes, Infallible> {
        if self.chunk == 0 {
            return Full::new(self.body).boxed();
        }
        let pieces: Vec<Result<Frame<Bytes>, Infallible>> = self
            .body
            .chunks(self.chunk)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        StreamBody::new(futures_util::stream::iter(pieces)).boxed()
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A running mock upstream; stops when dropped.
pub struct MockUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl MockUpstream {
    /// Start on 127.0.0.1:0 with a handler.
    pub async fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (seen, handler) = (seen.clone(), handler.clone());
                    tokio::spawn(async move {
                        let service = service_fn(move |request: Request<Incoming>| {
                            let (seen, handler) = (seen.clone(), handler.clone());
                            async move {
                                let (parts, body) = request.into_parts();
                                let body = body.collect().await.map(|b| b.to_bytes());
                                let request = Seen {
                                    method: parts.method.to_string(),
                                    path_and_query: parts
                                        .uri
                                        .path_and_query()
                                        .map_or("/".into(), |p| p.to_string()),
                                    headers: parts.headers,
                                    body: body.unwrap_or_default(),
                                };
                                let reply = handler(&request);
                                seen.lock().unwrap().push(request);
                                tokio::time::sleep(reply.delay).await;
                                let status = reply.status;
                                let headers = reply.headers.clone();
                                let mut response = Response::new(reply.into_body());
                                *response.status_mut() = status.try_into().unwrap();
                                for (n, v) in headers {
                                    response.headers_mut().append(
                                        http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                                        v.parse().unwrap(),
                                    );
                                }
                                Ok::<_, Infallible>(response)
                            }
                        });
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        });
        MockUpstream { addr, seen, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
