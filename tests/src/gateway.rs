//! Start a real gateway in process (TLS with certificates made at test time, port 0) from a
//! configuration written by the test, and talk to it over TLS with HTTP/1.1 or HTTP/2.
use std::path::Path;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portcullis::config::Config;
use portcullis::server::{self, Running};

use crate::tls::Certs;

/// A gateway under test, with its directory (config, certificates, plugins) and certificates.
pub struct TestGateway {
    /// The running server.
    pub running: Running,
    /// The certificates it serves.
    pub certs: Certs,
    /// Its directory.
    pub dir: tempfile::TempDir,
}

/// The `[server]` table every test gateway uses: TLS on 127.0.0.1:0, admin on :0.
pub const SERVER: &str = r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace = "5s"
tls = { cert_file = "server.pem", key_file = "server.key" }
"#;

impl TestGateway {
    /// Start a gateway on `config` (TOML without `[server]` and `plugin_dir`: the harness adds
    /// TLS on 127.0.0.1:0 and the built plugins' directory). Files the config names are
    /// relative to the gateway's directory; `prepare` may write them there first.
    pub async fn start(config: &str, prepare: impl FnOnce(&Path)) -> TestGateway {
        let dir = tempfile::tempdir().unwrap();
        let certs = Certs::new(dir.path());
        prepare(dir.path());
        let plugins = crate::root().join("target/plugins");
        let text = format!(
            "plugin_dir = {:?}\n{SERVER}\n{config}",
            plugins.display().to_string()
        );
        let config = Config::parse(&text, dir.path()).unwrap_or_else(|e| panic!("{e}"));
        TestGateway::launch(&config, certs, dir).await
    }

    /// Start a gateway from a configuration file, as `portcullis serve --config` does (so it
    /// watches for reloads): `config` (TOML without `[server]` and `plugin_dir`) is written to
    /// `portcullis.toml` in the gateway's directory, with `plugin_dir = "plugins"`, an empty
    /// directory there that `prepare` fills (with the built plugins it names, say).
    pub async fn start_from_file(config: &str, prepare: impl FnOnce(&Path)) -> TestGateway {
        let dir = tempfile::tempdir().unwrap();
        let certs = Certs::new(dir.path());
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        prepare(dir.path());
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, config_file_text(config)).unwrap();
        let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        TestGateway::launch(&config, certs, dir).await
    }

    async fn launch(config: &Config, certs: Certs, dir: tempfile::TempDir) -> TestGateway {
        let running = server::start(config)
            .await
            .unwrap_or_else(|e| panic!("gateway did not start: {e}"));
        TestGateway {
            running,
            certs,
            dir,
        }
    }

    /// `https://localhost:PORT`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.running.local_addr().port())
    }

    /// A client trusting the gateway's CA; `http2` forces HTTP/2 (else HTTP/1.1).
    pub fn client(&self, http2: bool) -> TlsClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(self.certs.client_config(&[]))
            .https_only();
        let connector = if http2 {
            connector.enable_http2().wrap_connector(http)
        } else {
            connector.enable_http1().wrap_connector(http)
        };
        let mut builder = Client::builder(TokioExecutor::new());
        builder.http2_only(http2);
        TlsClient {
            client: builder.build(connector),
            base: self.url(),
        }
    }
}

/// The text of a configuration file for [`TestGateway::start_from_file`]: `config` with the
/// harness's `plugin_dir` and `[server]`. Tests rewrite the file with it to change policy.
pub fn config_file_text(config: &str) -> String {
    format!("plugin_dir = \"plugins\"\n{SERVER}\n{config}")
}

/// `GET path` on an admin listener: the raw HTTP/1.1 response (status line, headers, body).
pub async fn admin_get(admin: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(admin).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    out
}

/// An HTTPS client for the gateway under test.
#[derive(Clone)]
pub struct TlsClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
}

/// A response read whole.
#[derive(Debug)]
pub struct Answer {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Bytes,
    /// The HTTP version it came over.
    pub version: http::Version,
}

impl Answer {
    /// The body as UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

impl TlsClient {
    /// Send `method path` with headers and a body; read the whole answer.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (n, v) in headers {
            request = request.header(*n, *v);
        }
        let response: Response<_> = self
            .client
            .request(request.body(Full::new(body.into())).unwrap())
            .await
            .unwrap_or_else(|e| panic!("request to the gateway failed: {e:?}"));
        let (parts, body) = response.into_parts();
        Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
            version: parts.version,
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, &[], Bytes::new()).await
    }
}
