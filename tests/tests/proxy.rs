//! The request path end to end: a real gateway over real TLS (certificates made at test time)
//! in front of a mock upstream on 127.0.0.1, driven over HTTP/1.1 and HTTP/2.
#![allow(clippy::unwrap_used)]
use std::time::Duration;

use bytes::Bytes;
use portcullis_tests::gateway::{TestGateway, admin_get};
use portcullis_tests::mock_upstream::{MockUpstream, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn route(upstream: &str, extra: &str) -> String {
    format!(
        r#"
[[plugin]]
name = "misbehave"
file = "misbehave.wasm"
[[plugin]]
name = "deny-all"
file = "deny-all.wasm"

[[route]]
authentication = "none"
name = "denied"
path_prefix = "/denied"
upstream = "{upstream}"
plugins = ["deny-all"]

[[route]]
authentication = "none"
name = "api"
path_prefix = "/"
upstream = "{upstream}"
plugins = ["misbehave"]
body_limit = "64KiB"
request_timeout = "1s"
{extra}
"#
    )
}

#[tokio::test]
async fn requests_are_forwarded_over_tls_with_http1_and_http2() {
    portcullis_tests::plugin("misbehave");
    let upstream = MockUpstream::start(|_| Reply::json(r#"{"ok":true}"#)).await;
    let gw = TestGateway::start(&route(&upstream.url(), ""), |_| {}).await;
    for http2 in [false, true] {
        let answer = gw.client(http2).get("/items/1?x=2").await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.json(), serde_json::json!({"ok": true}));
        let expected = if http2 {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        assert_eq!(answer.version, expected);
        assert!(answer.headers.contains_key("x-request-id"));
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.method, "GET");
        assert_eq!(s.path_and_query, "/items/1?x=2");
        assert_eq!(s.headers["x-forwarded-for"], "127.0.0.1");
        assert!(
            !s.headers.contains_key("content-length"),
            "a GET without a body gets no length"
        );
        assert!(s.headers.contains_key("x-request-id"));
        let trace = s.headers["traceparent"].to_str().unwrap();
        assert!(trace.starts_with("00-") && trace.len() == 55, "{trace}");
        // The upstream sees its own authority, not the gateway's.
        assert_eq!(
            s.headers["host"].to_str().unwrap(),
            upstream.url().trim_start_matches("http://")
        );
    }
}

#[tokio::test]
async fn the_clients_authorization_and_hop_by_hop_headers_never_reach_the_upstream() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gw = TestGateway::start(&route(&upstream.url(), ""), |_| {}).await;
    let answer = gw
        .client(false)
        .send(
            "GET",
            "/x",
            &[
                ("authorization", "Bearer agent-token-must-not-leak"),
                ("connection", "x-hop"),
                ("x-hop", "1"),
                ("proxy-authorization", "Basic abc"),
                ("x-kept", "yes"),
            ],
            Bytes::new(),
        )
        .await;
    assert_eq!(answer.status, 200);
    let seen = &upstream.seen()[0];
    assert!(!seen.headers.contains_key("authorization"));
    assert!(!seen.headers.contains_key("x-hop"));
    assert!(!seen.headers.contains_key("proxy-authorization"));
    assert_eq!(seen.headers["x-kept"], "yes");
}

#[tokio::test]
async fn a_plugins_deny_arrives_in_the_routes_error_shape_and_is_not_forwarded() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gw = TestGateway::start(&route(&upstream.url(), ""), |_| {}).await;
    let answer = gw.client(false).get("/denied/thing").await;
    assert_eq!(answer.status, 403);
    let body = answer.json();
    assert_eq!(body["error"]["code"], "deny-all");
    let id = answer.headers["x-request-id"].to_str().unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(id), "{message} names {id}");
    assert!(
        upstream.seen().is_empty(),
        "a denied request is not forwarded"
    );
}

#[tokio::test]
async fn no_route_is_a_404_in_the_error_shape() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let config = format!(
        "[[route]]\nauthentication = \"none\"\nname = \"only\"\npath_prefix = \"/only\"\nupstream = \"{}\"\n",
        upstream.url()
    );
    let gw = TestGateway::start(&config, |_| {}).await;
    // A prefix matches whole segments: /onlyfans is not /only.
    let answer = gw.client(false).get("/onlyfans").await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.json()["error"]["code"], "NoRoute");
    assert_eq!(gw.client(false).get("/only/a").await.status, 200);
}

#[tokio::test]
async fn a_request_body_is_inspected_when_a_plugin_asks_and_refused_over_the_limit() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gw = TestGateway::start(&route(&upstream.url(), ""), |_| {}).await;
    let client = gw.client(false);
    let ask = [("x-misbehave", "need-body")];
    let ok = client.send("POST", "/b", &ask, "harmless").await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let denied = client.send("POST", "/b", &ask, "this is forbidden").await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.json()["error"]["code"], "body-forbidden");
    // The route buffers at most 64 KiB for plugins.
    let big = client
        .send("POST", "/b", &ask, vec![b'a'; 100 * 1024])
        .await;
    assert_eq!(big.status, 413, "{}", big.text());
    assert_eq!(big.json()["error"]["code"], "RequestBodyTooLarge");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1, "only the allowed request was forwarded");
    assert_eq!(seen[0].body, "harmless");
    // Without a plugin asking, a body of any size streams through.
    let streamed = client.send("POST", "/b", &[], vec![b'a'; 300 * 1024]).await;
    assert_eq!(streamed.status, 200);
    assert_eq!(upstream.seen()[1].body.len(), 300 * 1024);
}

#[tokio::test]
async fn a_response_body_is_masked_by_the_host_and_stays_valid() {
    let upstream = MockUpstream::start(|_| {
        let mut reply = Reply::json(r#"{"note":"key secret-123 here","n":1}"#);
        reply
            .headers
            .push(("x-misbehave".into(), "need-body".into()));
        reply.headers.push(("etag".into(), "\"abc\"".into()));
        reply
    })
    .await;
    let gw = TestGateway::start(&route(&upstream.url(), ""), |_| {}).await;
    let answer = gw.client(true).get("/m").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        answer.json(),
        serde_json::json!({"note": "key [SECRET] here", "n": 1})
    );
    assert_eq!(
        answer.headers["content-length"].to_str().unwrap(),
        answer.body.len().to_string()
    );
    assert!(
        !answer.headers.contains_key("etag"),
        "a changed body drops its ETag"
    );
}

#[tokio::test]
async fn a_response_over_the_inspection_limit_fails_closed_with_502() {
    let big = format!(r#"{{"pad":"{}"}}"#, "a".repeat(100 * 1024));
    let upstream = MockUpstream::start(move |_| {
        let mut reply = Reply::json(&big);
        reply
            .headers
            .push(("x-misbehave".into(), "need-body".into()));
        reply
    })
    .await;
    let gw = TestGateway::start(&route(&upstream.url(), ""), |_| {}).await;
    let answer = gw.client(false).get("/big").await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.json()["error"]["code"], "ResponseBodyTooLarge");
}

#[tokio::test]
async fn a_route_may_pass_over_limit_responses_through_unmasked() {
    let big = format!(r#"{{"pad":"{}"}}"#, "a".repeat(100 * 1024));
    let expected = big.clone();
    let upstream = MockUpstream::start(move |_| {
        let mut reply = Reply::json(&big);
        reply
            .headers
            .push(("x-misbehave".into(), "need-body".into()));
        reply
    })
    .await;
    let gw = TestGateway::start(
        &route(&upstream.url(), "unmasked_passthrough = true"),
        |_| {},
    )
    .await;
    let answer = gw.client(false).get("/big").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), expected);
}

#[tokio::test]
async fn a_failing_fail_closed_plugin_refuses_the_request() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gw = TestGateway::start(&route(&upstream.url(), ""), |_| {}).await;
    let answer = gw
        .client(false)
        .send("GET", "/t", &[("x-misbehave", "trap")], Bytes::new())
        .await;
    assert_eq!(answer.status, 500);
    let body = answer.json();
    assert_eq!(body["error"]["code"], "PolicyFailure");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        !message.contains("wasm"),
        "no trap details reach the client: {message}"
    );
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn an_unreachable_upstream_is_502_and_a_slow_one_504() {
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let slow = MockUpstream::start(|_| {
        let mut reply = Reply::json("{}");
        reply.delay = Duration::from_secs(3);
        reply
    })
    .await;
    let config = format!(
        r#"
[[route]]
authentication = "none"
name = "dead"
path_prefix = "/dead"
upstream = "{dead}"
[[route]]
authentication = "none"
name = "slow"
path_prefix = "/slow"
upstream = "{}"
request_timeout = "300ms"
"#,
        slow.url()
    );
    let gw = TestGateway::start(&config, |_| {}).await;
    let refused = gw.client(false).get("/dead").await;
    assert_eq!(refused.status, 502);
    assert_eq!(refused.json()["error"]["code"], "UpstreamUnavailable");
    let timed_out = gw.client(false).get("/slow").await;
    assert_eq!(timed_out.status, 504);
    assert_eq!(timed_out.json()["error"]["code"], "UpstreamTimeout");
}

/// Send raw bytes over TLS and read what comes back.
async fn raw(gw: &TestGateway, request: &[u8]) -> String {
    let config = std::sync::Arc::new(gw.certs.client_config(&[b"http/1.1"]));
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = tokio::net::TcpStream::connect(gw.running.local_addr())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn oversized_headers_are_431_and_malformed_requests_400() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gw = TestGateway::start(&route(&upstream.url(), ""), |_| {}).await;
    let huge = format!(
        "GET / HTTP/1.1\r\nhost: localhost\r\nx-big: {}\r\n\r\n",
        "a".repeat(80 * 1024)
    );
    let answer = raw(&gw, huge.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let garbage = raw(&gw, b"NOT HTTP AT ALL\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    let bad_length = raw(
        &gw,
        b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 1, 2\r\n\r\nab",
    )
    .await;
    assert!(bad_length.starts_with("HTTP/1.1 400"), "{bad_length}");
    let http10_chunked =
        b"POST / HTTP/1.0\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";
    let answer = raw(&gw, http10_chunked).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(upstream.seen().is_empty());
}

/// hyper resolves Content-Length together with Transfer-Encoding as RFC 9112 §6.3 allows:
/// the chunked framing wins and the Content-Length is discarded. What matters for smuggling
/// is that the upstream sees one unambiguous message, and the bytes after it are not taken as
/// a second request.
#[tokio::test]
async fn conflicting_framing_reaches_the_upstream_as_one_unambiguous_message() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gw = TestGateway::start(&route(&upstream.url(), ""), |_| {}).await;
    let smuggle = "POST /a HTTP/1.1\r\nhost: localhost\r\ncontent-length: 44\r\n\
                   transfer-encoding: chunked\r\n\r\n0\r\n\r\n\
                   GET /smuggled HTTP/1.1\r\nhost: localhost\r\n\r\n";
    let _ = raw(&gw, smuggle.as_bytes()).await;
    let seen = upstream.seen();
    assert!(
        seen.iter()
            .all(|s| s.headers.get("transfer-encoding").is_none()
                || s.headers.get("content-length").is_none())
    );
    assert_eq!(seen[0].path_and_query, "/a");
    assert!(seen[0].body.is_empty());
}

#[tokio::test]
async fn health_and_readiness_are_served_on_the_admin_listener() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gw = TestGateway::start(&route(&upstream.url(), ""), |_| {}).await;
    let admin = gw.running.admin_addr().unwrap();
    for path in ["/healthz", "/readyz"] {
        let out = admin_get(admin, path).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{path}: {out}");
    }
}

/// `GET path` on the admin listener (plain HTTP/1.1), the whole answer as text.
#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_stops_accepting() {
    let upstream = MockUpstream::start(|_| {
        let mut reply = Reply::json(r#"{"slow":true}"#);
        reply.delay = Duration::from_millis(700);
        reply
    })
    .await;
    let gw = TestGateway::start(&route(&upstream.url(), ""), |_| {}).await;
    let addr = gw.running.local_addr();
    let client = gw.client(false);
    let in_flight = tokio::spawn(async move { client.get("/slow").await });
    portcullis_tests::within(Duration::from_secs(5), async {
        while upstream.seen().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let admin = gw.running.admin_addr().unwrap();
    let TestGateway { running, dir, .. } = gw;
    let draining = tokio::spawn(running.shutdown());
    // While it drains, the admin listener still answers, and says not ready.
    let readyz = portcullis_tests::within(Duration::from_secs(5), async {
        loop {
            let status = admin_get(admin, "/readyz").await;
            if !status.starts_with("HTTP/1.1 200") {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");
    draining.await.unwrap();
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, 200, "the in-flight request finished");
    assert_eq!(answer.json(), serde_json::json!({"slow": true}));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no new connections after shutdown"
    );
    drop(dir);
}

#[tokio::test]
async fn a_compressed_response_is_decoded_for_plugins_masked_and_re_encoded() {
    use std::io::{Read, Write};
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(br#"{"note":"secret-42 and secret-7"}"#)
        .unwrap();
    let compressed = Bytes::from(gz.finish().unwrap());
    let upstream = MockUpstream::start(move |_| {
        let mut reply = Reply::json("");
        reply.body = compressed.clone();
        reply
            .headers
            .push(("content-encoding".into(), "gzip".into()));
        reply
            .headers
            .push(("x-misbehave".into(), "need-body".into()));
        reply
    })
    .await;
    let gw = TestGateway::start(&route(&upstream.url(), ""), |_| {}).await;
    let answer = gw.client(false).get("/gz").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.headers["content-encoding"], "gzip");
    assert_eq!(
        answer.headers["content-length"].to_str().unwrap(),
        answer.body.len().to_string()
    );
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&answer.body[..])
        .read_to_string(&mut plain)
        .unwrap();
    assert_eq!(plain, r#"{"note":"[SECRET] and [SECRET]"}"#);
}

#[tokio::test]
async fn credentials_are_the_gateways_own_and_the_client_token_passes_only_when_configured() {
    // An OAuth2 token endpoint (client credentials), and an upstream that records what it got.
    let idp = MockUpstream::start(|_| {
        Reply::json(r#"{"access_token":"gateway-token-1","token_type":"Bearer","expires_in":3600}"#)
    })
    .await;
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let config = format!(
        r#"
[[route]]
authentication = "none"
name = "oauth"
path_prefix = "/oauth"
upstream = "{u}"
credential = {{ type = "oauth2-client-credentials", token_url = "{idp}/token", client_id = "gw", secret_file = "client-secret", scope = "api://svc/.default" }}
[[route]]
authentication = "none"
name = "key"
path_prefix = "/key"
upstream = "{u}"
credential = {{ type = "header", name = "api-key", value_file = "api-key" }}
[[route]]
authentication = "none"
name = "pass"
path_prefix = "/pass"
upstream = "{u}"
credential = {{ type = "pass-through" }}
"#,
        u = upstream.url(),
        idp = idp.url()
    );
    let gw = TestGateway::start(&config, |dir| {
        std::fs::write(dir.join("client-secret"), "very-secret-client-secret\n").unwrap();
        std::fs::write(dir.join("api-key"), "static-api-key\n").unwrap();
    })
    .await;
    let client = gw.client(false);
    let agent = [("authorization", "Bearer agent-token")];
    for path in ["/oauth/a", "/oauth/b", "/key/a", "/pass/a"] {
        let answer = client.send("GET", path, &agent, Bytes::new()).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.text());
    }
    let seen = upstream.seen();
    assert_eq!(seen[0].headers["authorization"], "Bearer gateway-token-1");
    assert_eq!(seen[1].headers["authorization"], "Bearer gateway-token-1");
    assert_eq!(idp.seen().len(), 1, "the token is cached");
    let form = String::from_utf8_lossy(&idp.seen()[0].body).into_owned();
    assert!(form.contains("grant_type=client_credentials"), "{form}");
    assert_eq!(seen[2].headers["api-key"], "static-api-key");
    assert!(!seen[2].headers.contains_key("authorization"));
    assert_eq!(seen[3].headers["authorization"], "Bearer agent-token");
}

#[tokio::test]
async fn an_unavailable_upstream_credential_is_a_502_that_reveals_nothing() {
    let idp = MockUpstream::start(|_| {
        let mut reply = Reply::json(r#"{"error":"invalid_client","error_description":"bad"}"#);
        reply.status = 401;
        reply
    })
    .await;
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let config = format!(
        r#"
[[route]]
authentication = "none"
name = "oauth"
upstream = "{}"
credential = {{ type = "oauth2-client-credentials", token_url = "{}/token", client_id = "gw", secret_file = "client-secret", scope = "s" }}
"#,
        upstream.url(),
        idp.url()
    );
    let gw = TestGateway::start(&config, |dir| {
        std::fs::write(dir.join("client-secret"), "very-secret-client-secret").unwrap();
    })
    .await;
    let answer = gw.client(false).get("/x").await;
    assert_eq!(answer.status, 502);
    assert_eq!(
        answer.json()["error"]["code"],
        "UpstreamCredentialUnavailable"
    );
    let text = answer.text();
    assert!(
        !text.contains("very-secret") && !text.contains(&idp.url()),
        "{text}"
    );
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn an_azure_arm_route_shows_plugins_the_rbac_operation_and_refuses_in_arm_shape() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let config = format!(
        r#"
[[plugin]]
name = "deny-operations"
file = "deny-operations.wasm"
config = {{ operations = ["Microsoft.Storage/storageAccounts/listKeys/action"] }}
[[route]]
authentication = "none"
name = "arm"
kind = "azure-arm"
upstream = "{}"
plugins = ["deny-operations"]
"#,
        upstream.url()
    );
    let gw = TestGateway::start(&config, |_| {}).await;
    let client = gw.client(true);
    let account =
        "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct";
    let denied = client
        .send(
            "POST",
            &format!("{account}/listKeys?api-version=2023-01-01"),
            &[("x-ms-client-request-id", "agent-7")],
            Bytes::new(),
        )
        .await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.headers["x-ms-client-request-id"], "agent-7");
    assert!(denied.headers.contains_key("x-ms-correlation-request-id"));
    assert_eq!(denied.json()["error"]["code"], "OperationDenied");
    let read = client
        .get(&format!("{account}?api-version=2023-01-01"))
        .await;
    assert_eq!(read.status, 200);
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test]
async fn an_https_upstream_is_trusted_through_its_ca_bundle_and_only_through_it() {
    // The upstream is itself a TLS gateway in front of the mock, with its own private CA.
    let mock = MockUpstream::start(|_| Reply::json(r#"{"via":"tls"}"#)).await;
    let inner = TestGateway::start(
        &format!(
            "[[route]]\nauthentication = \"none\"\nname = \"inner\"\nupstream = \"{}\"\n",
            mock.url()
        ),
        |_| {},
    )
    .await;
    let inner_url = inner.url();
    let inner_ca = inner.certs.ca.clone();
    let config = format!(
        r#"
[[route]]
authentication = "none"
name = "trusted"
path_prefix = "/trusted"
upstream = "{inner_url}"
ca_file = "inner-ca.pem"
[[route]]
authentication = "none"
name = "untrusted"
path_prefix = "/untrusted"
upstream = "{inner_url}"
"#
    );
    let outer = TestGateway::start(&config, |dir| {
        std::fs::copy(&inner_ca, dir.join("inner-ca.pem")).unwrap();
    })
    .await;
    let trusted = outer.client(false).get("/trusted/x").await;
    assert_eq!(trusted.status, 200, "{}", trusted.text());
    assert_eq!(trusted.json(), serde_json::json!({"via": "tls"}));
    // The system roots do not know the private CA: the TLS handshake fails, nothing is sent.
    let untrusted = outer.client(false).get("/untrusted/x").await;
    assert_eq!(untrusted.status, 502, "{}", untrusted.text());
    assert_eq!(mock.seen().len(), 1);
}
