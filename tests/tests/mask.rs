//! The `mask` plugin with the host's mask executor: every detector on text and JSON (true
//! positives, and the look-alikes each must leave alone), field rules and strategies, and the
//! findings; then end to end through a gateway with JSON, text, gzip, br and chunked bodies, a
//! body over the inspection limit, and the Python Azure Storage SDK against Azurite reading a
//! blob and a listing whose contents get masked.
#![allow(clippy::unwrap_used)]
use std::io::{Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use portcullis::mask::{self, BodyKind, Masked, PlanRef};
use portcullis::plugin::{Held, Plugin, ResponseVerdict, load_plugin};
use portcullis_tests::azurite::{ACCOUNT, Azurite, KEY, gateway_args, run_blob_client};
use portcullis_tests::gateway::TestGateway;
use portcullis_tests::mock_upstream::{MockUpstream, Reply};
use portcullis_tests::{engine, headers, logs, request, settings, spec};
use serde_json::{Value, json};

const HASH_KEY: &[u8] = b"test-hash-key-0123456789abcdef-0123456789";

/// Every detector on, the opt-in ones too.
fn all_on() -> Value {
    json!({"detectors": {"ssn": true, "high-entropy": true}})
}

async fn mask_plugin(config: Value) -> Arc<Plugin> {
    load_plugin(&engine(), &spec("mask", settings(), config))
        .await
        .unwrap_or_else(|e| panic!("mask does not load: {e}"))
}

/// What the client gets for `body` of `content_type`: the plugin's plan, executed by the host.
async fn run(plugin: &Plugin, content_type: &str, body: &str) -> Masked {
    let h = headers(&[("content-type", content_type)]);
    let req = request("r1", "GET", "/");
    let unchanged = || Masked {
        body: body.as_bytes().to_vec(),
        changed: false,
        masked: 0,
        findings: Vec::new(),
    };
    let mut held = Held::default();
    match plugin.on_response(&mut held, &req, 200, &h).await.unwrap() {
        ResponseVerdict::NeedBody(_) => {}
        ResponseVerdict::Pass => return unchanged(),
        other => panic!("on_response: {other:?}"),
    }
    let verdict = plugin
        .on_response_body(
            &mut held,
            &req,
            200,
            &h,
            Bytes::copy_from_slice(body.as_bytes()),
        )
        .await
        .unwrap();
    let plan = match verdict {
        ResponseVerdict::Mask(plan) => plan,
        ResponseVerdict::Pass => return unchanged(),
        other => panic!("on_response_body: {other:?}"),
    };
    let kind = BodyKind::from_content_type(Some(content_type)).unwrap();
    let plans = [PlanRef {
        plan: &plan,
        patterns: plugin.patterns(),
    }];
    mask::apply(body.as_bytes(), kind, &plans, Some(HASH_KEY)).unwrap()
}

async fn text(plugin: &Plugin, body: &str) -> String {
    String::from_utf8(run(plugin, "text/plain; charset=utf-8", body).await.body).unwrap()
}

/// `body` as the one string of a JSON document, masked, read back.
async fn in_json(plugin: &Plugin, body: &str) -> String {
    let doc = json!({ "note": body }).to_string();
    let masked = run(plugin, "application/json", &doc).await;
    let value: Value = serde_json::from_slice(&masked.body).unwrap();
    value["note"].as_str().unwrap().to_string()
}

/// 64 bytes of base64: the shape of an Azure Storage account key.
const STORAGE_KEY: &str =
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==";
const UUID: &str = "0b1f6471-1bf0-4dda-aec3-cb9272f09590";
const SHA256_HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// (detector, text with a true positive, what the client must see).
const TRUE_POSITIVES: &[(&str, &str, &str)] = &[
    (
        "private-key",
        "key: -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n",
        "key: [PRIVATE_KEY]\n",
    ),
    (
        "jwt",
        "token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJl end",
        "token [JWT] end",
    ),
    (
        "azure-connection-string",
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=bm90LWEtcmVhbC1rZXk=;EndpointSuffix=core.windows.net",
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=[AZURE_SECRET];EndpointSuffix=core.windows.net",
    ),
    (
        "sas-signature",
        "https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sp=r&sig=AbCd%2Bef%3D",
        "https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sp=r&sig=[SAS_SIGNATURE]",
    ),
    ("azure-storage-key", "key1 ", "key1 [AZURE_STORAGE_KEY]"),
    (
        "aws-access-key",
        "id AKIAIOSFODNN7EXAMPLE.",
        "id [AWS_ACCESS_KEY].",
    ),
    (
        "bearer-token",
        "Authorization: Bearer mF_9.B5f-4.1JqM-abcdefgh",
        "Authorization: Bearer [BEARER_TOKEN]",
    ),
    (
        "email",
        "write to ann.lee@example.com today",
        "write to [EMAIL] today",
    ),
    (
        "card",
        "card 4111 1111 1111 1111 and 5555-5555-5555-4444",
        "card [CARD] and [CARD]",
    ),
    (
        "iban",
        "pay GB82 WEST 1234 5698 7654 32 or DE89370400440532013000",
        "pay [IBAN] or [IBAN]",
    ),
    ("ssn", "ssn 123-45-6789.", "ssn [SSN]."),
    (
        "phone",
        "call +44 20 7946 0958 or (415) 555-0132",
        "call [PHONE] or [PHONE]",
    ),
    ("ipv4", "from 10.1.2.3 via", "from [IP] via"),
    ("ipv6", "peer 2001:db8::8a2e:370:7334 up", "peer [IP] up"),
    (
        "high-entropy",
        "secret Zm9vYmFyQmF6UXV4K3Nv/MeWk1pZ2h0QmVTZWNyZXQ",
        "secret [SECRET]",
    ),
];

/// Look-alikes no detector may mask, with every detector on.
const LOOK_ALIKES: &[&str] = &[
    "order 4111 1111 1111 1112",              // 16 digits, Luhn-invalid
    "order 1234567812345678",                 // 16 digits, Luhn-invalid
    "ts 1764371683000",                       // a millisecond timestamp
    "id 123456789",                           // a random 9-digit id
    UUID,                                     // not a key, not a secret
    SHA256_HEX,                               // a hex digest: low entropy
    "ref GB82WEST12345698765433",             // an IBAN shape with a bad checksum
    "at 2026-11-28T23:14:43Z",                // a timestamp: no phone, no IPv6
    "mac 00:1a:2b:3c:4d:5e",                  // a MAC address
    "version 1.2.3 and 1.0.0+20260101",       // versions
    "the bearer of this letter",              // prose
    "user@localhost",                         // no domain
    "https://example.com/?signal=1&design=2", // no sig=
    "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----", // public
];

#[tokio::test]
async fn every_detector_masks_its_values_in_text_and_json() {
    let plugin = mask_plugin(all_on()).await;
    for (detector, input, want) in TRUE_POSITIVES {
        let input = match *detector {
            "azure-storage-key" => format!("{input}{STORAGE_KEY}"),
            _ => input.to_string(),
        };
        assert_eq!(text(&plugin, &input).await, *want, "{detector} in text");
        assert_eq!(in_json(&plugin, &input).await, *want, "{detector} in JSON");
        let masked = run(&plugin, "text/plain", &input).await;
        assert!(
            masked
                .findings
                .iter()
                .any(|f| f.kind == *detector && f.location == "body"),
            "{detector}: findings {:?}",
            masked.findings
        );
    }
}

#[tokio::test]
async fn look_alikes_stay_readable() {
    let plugin = mask_plugin(all_on()).await;
    for input in LOOK_ALIKES {
        assert_eq!(text(&plugin, input).await, *input, "text");
        assert_eq!(in_json(&plugin, input).await, *input, "JSON");
    }
    // A base64 run longer than a storage key is not one (and, repetitive, not a secret).
    let long = "QUJD".repeat(30);
    assert_eq!(
        text(&plugin, &format!("blob {long}")).await,
        format!("blob {long}")
    );
}

#[tokio::test]
async fn opt_in_detectors_are_off_by_default_and_others_can_be_turned_off() {
    let defaults = mask_plugin(json!({})).await;
    for input in [
        "ssn 123-45-6789.",
        "secret Zm9vYmFyQmF6UXV4K3Nv/MeWk1pZ2h0QmVTZWNyZXQ",
    ] {
        assert_eq!(text(&defaults, input).await, input);
    }
    assert_eq!(
        text(&defaults, "mail ann@example.com").await,
        "mail [EMAIL]"
    );
    let no_email = mask_plugin(json!({"detectors": {"email": false}})).await;
    assert_eq!(
        text(&no_email, "mail ann@example.com from 10.0.0.1").await,
        "mail ann@example.com from [IP]"
    );
}

#[tokio::test]
async fn field_rules_and_strategies_apply_to_json_with_findings_but_never_values() {
    let plugin = mask_plugin(json!({
        "fields": [
            {"pointer": "/keys/*/value", "kind": "storage-key", "label": "SECRET"},
            {"pointer": "/owner/id", "kind": "user-id", "strategy": "hash", "label": "USER"},
            {"pointer": "/card", "kind": "card-field", "strategy": "partial", "keep": 4}
        ],
        "detectors": {"phone": {"strategy": "partial", "keep": 4}}
    }))
    .await;
    let body = json!({
        "keys": [
            {"keyName": "key1", "value": "k-one", "permissions": "FULL"},
            {"keyName": "key2", "value": "k-two", "permissions": "READ"}
        ],
        "owner": {"id": "u-123", "mail": "ann@example.com", "phone": "+1 415 555 0132"},
        "card": "4111111111111111",
        "count": 3
    })
    .to_string();
    let masked = run(&plugin, "application/json", &body).await;
    let out: Value = serde_json::from_slice(&masked.body).unwrap();
    assert_eq!(out["keys"][0]["value"], "[SECRET]");
    assert_eq!(out["keys"][1]["value"], "[SECRET]");
    assert_eq!(out["keys"][0]["keyName"], "key1");
    assert_eq!(out["owner"]["mail"], "[EMAIL]");
    assert_eq!(out["owner"]["phone"], "***********0132");
    assert_eq!(out["card"], "************1111");
    assert_eq!(out["count"], 3);
    let hashed = out["owner"]["id"].as_str().unwrap();
    assert!(
        hashed.starts_with("[USER:")
            && hashed.len() == "[USER:]".len() + 16
            && hashed[6..22].bytes().all(|b| b.is_ascii_hexdigit()),
        "{hashed}"
    );
    // Stable across responses (so masked ids correlate), different for different values.
    let again = run(&plugin, "application/json", &body).await;
    assert_eq!(again.body, masked.body);
    let other = run(&plugin, "application/json", &body.replace("u-123", "u-124")).await;
    let other: Value = serde_json::from_slice(&other.body).unwrap();
    assert_ne!(other["owner"]["id"], out["owner"]["id"]);

    let found: Vec<(&str, &str, u32)> = masked
        .findings
        .iter()
        .map(|f| (f.kind.as_str(), f.location.as_str(), f.count))
        .collect();
    assert_eq!(
        found,
        vec![
            ("card-field", "/card", 1),
            ("email", "/owner/mail", 1),
            ("phone", "/owner/phone", 1),
            ("storage-key", "/keys/*/value", 2),
            ("user-id", "/owner/id", 1),
        ]
    );
    let line = mask::summarize(&masked.findings);
    for value in ["k-one", "u-123", "ann@example.com", "4111", "555"] {
        assert!(!line.contains(value), "{value} in {line}");
    }
}

/// A body of several MiB: the plugin reads and parses it in its own memory, far past what its
/// initial linear memory holds, so its allocator must grow memory (`sdk/src/heap.rs`) and keep
/// every allocation intact across the growth.
#[tokio::test]
async fn a_multi_megabyte_json_body_is_masked_in_full() {
    let plugin = mask_plugin(json!({
        "fields": [{"pointer": "/items/*/key", "kind": "storage-key", "label": "SECRET"}]
    }))
    .await;
    let items: Vec<Value> = (0..20_000)
        .map(|i| json!({"id": format!("item-{i}"), "key": format!("k-{i}"), "note": "x".repeat(150)}))
        .collect();
    let body = json!({ "items": items }).to_string();
    assert!(body.len() > 3 << 20, "{} bytes", body.len());
    let masked = run(&plugin, "application/json", &body).await;
    assert!(masked.changed);
    assert_eq!(masked.masked, 20_000);
    let value: Value = serde_json::from_slice(&masked.body).unwrap();
    let items = value["items"].as_array().unwrap();
    assert_eq!(items.len(), 20_000);
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["key"], "[SECRET]", "item {i}");
        assert_eq!(item["id"], format!("item-{i}"));
    }
}

#[tokio::test]
async fn content_types_decide_how_a_body_is_read() {
    let plugin = mask_plugin(json!({"fields": [{"pointer": "/a", "kind": "a"}]})).await;
    let doc = r#"{"a":"x","b":"ann@example.com"}"#;
    let vendor = run(&plugin, "application/vnd.api+json", doc).await;
    assert_eq!(
        String::from_utf8(vendor.body).unwrap(),
        r#"{"a":"[REDACTED]","b":"[EMAIL]"}"#
    );
    // As text: no field rules (they need JSON), detectors only.
    let csv = run(&plugin, "text/csv", doc).await;
    assert_eq!(
        String::from_utf8(csv.body).unwrap(),
        r#"{"a":"x","b":"[EMAIL]"}"#
    );
    // A type the host cannot mask is not asked for (documented: it passes as it is).
    let binary = run(&plugin, "application/octet-stream", doc).await;
    assert!(!binary.changed);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn gunzip(data: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(data)
        .read_to_string(&mut out)
        .unwrap();
    out
}

fn brotli_encode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).unwrap();
    }
    out
}

fn brotli_decode(data: &[u8]) -> String {
    let mut out = String::new();
    brotli::Decompressor::new(data, 4096)
        .read_to_string(&mut out)
        .unwrap();
    out
}

const DOC: &str = r#"{"keys":[{"keyName":"key1","value":"k-one"}],"owner":{"mail":"ann@example.com"},"note":"card 4111 1111 1111 1111"}"#;
const MASKED_DOC: &str = r#"{"keys":[{"keyName":"key1","value":"[SECRET]"}],"owner":{"mail":"[EMAIL]"},"note":"card [CARD]"}"#;
const TEXT: &str = "contact ann@example.com, card 4111-1111-1111-1111\n";
const MASKED_TEXT: &str = "contact [EMAIL], card [CARD]\n";

fn upstream_reply(path: &str) -> Reply {
    match path {
        "/json" => Reply::typed("application/json", None, DOC),
        "/text" => Reply::typed("text/plain; charset=utf-8", None, TEXT),
        "/gzip" => Reply::typed("text/plain", Some("gzip"), gzip(TEXT.as_bytes())),
        "/br" => Reply::typed(
            "application/json",
            Some("br"),
            brotli_encode(DOC.as_bytes()),
        ),
        "/chunked" => Reply::typed("application/json", None, DOC).chunked(7),
        "/chunked-gzip" => {
            Reply::typed("application/json", Some("gzip"), gzip(DOC.as_bytes())).chunked(16)
        }
        "/big" => Reply::typed("text/plain", None, format!("{TEXT}{}", "x".repeat(40_000))),
        "/binary" => Reply::typed("application/octet-stream", None, TEXT),
        _ => Reply::typed("text/plain", None, "not found"),
    }
}

fn mask_gateway_config(upstream: &str) -> String {
    format!(
        r#"
[masking]
hash_key_file = "hash.key"

[[plugin]]
name = "mask"
file = "mask.wasm"
[plugin.config]
body_limit = 16384
fields = [{{ pointer = "/keys/*/value", kind = "storage-key", label = "SECRET" }}]

[[route]]
name = "api"
upstream = "{upstream}"
authentication = "none"
plugins = ["mask"]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_masks_json_text_gzip_br_and_chunked_bodies_and_logs_findings_only() {
    logs::capture();
    let upstream = MockUpstream::start(|seen| upstream_reply(&seen.path_and_query)).await;
    let gw = TestGateway::start(&mask_gateway_config(&upstream.url()), |dir| {
        std::fs::write(dir.join("hash.key"), HASH_KEY).unwrap();
    })
    .await;
    for http2 in [false, true] {
        let client = gw.client(http2);
        for (path, encoding, want) in [
            ("/json", None, MASKED_DOC),
            ("/text", None, MASKED_TEXT),
            ("/gzip", Some("gzip"), MASKED_TEXT),
            ("/br", Some("br"), MASKED_DOC),
            ("/chunked", None, MASKED_DOC),
            ("/chunked-gzip", Some("gzip"), MASKED_DOC),
        ] {
            let answer = client.get(path).await;
            assert_eq!(answer.status, 200, "{path}: {}", answer.text());
            let got = match encoding {
                None => answer.text(),
                Some("gzip") => gunzip(&answer.body),
                Some(_) => brotli_decode(&answer.body),
            };
            assert_eq!(got, want, "{path}");
            assert_eq!(
                answer
                    .headers
                    .get("content-encoding")
                    .map(|v| v.to_str().unwrap()),
                encoding,
                "{path}: the client gets the encoding it was sent"
            );
            if !http2 {
                assert_eq!(
                    answer.headers["content-length"].to_str().unwrap(),
                    answer.body.len().to_string(),
                    "{path}"
                );
            }
        }
        // A type the host cannot read passes as it is (documented).
        assert_eq!(client.get("/binary").await.text(), TEXT);
    }
    let log = logs::text();
    let line = log
        .lines()
        .find(|l| l.contains("response body masked") && l.contains("storage-key at /keys/*/value"))
        .unwrap_or_else(|| panic!("no findings line in:\n{log}"));
    assert!(line.contains("email at /owner/mail ×1"), "{line}");
    assert!(line.contains("card at /note ×1"), "{line}");
    // The card numbers whole, as the bodies carry them: four digits alone also turn up in
    // the random request and trace ids of the log.
    for value in [
        "ann@example.com",
        "k-one",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
    ] {
        assert!(!log.contains(value), "{value} reached the log");
    }
}

#[tokio::test]
async fn a_body_over_the_inspection_limit_fails_closed() {
    let upstream = MockUpstream::start(|seen| upstream_reply(&seen.path_and_query)).await;
    let gw = TestGateway::start(&mask_gateway_config(&upstream.url()), |dir| {
        std::fs::write(dir.join("hash.key"), HASH_KEY).unwrap();
    })
    .await;
    let answer = gw.client(false).get("/big").await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["error"]["code"], "ResponseBodyTooLarge");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("16384 bytes"),
        "{body}"
    );
    assert!(!answer.text().contains("ann@example.com"));
}

#[tokio::test]
async fn a_short_hash_key_is_refused_at_start_naming_the_file_not_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hash.key"), "short-key\n").unwrap();
    let text = format!(
        "plugin_dir = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\nplaintext = true\n\
         [masking]\nhash_key_file = \"hash.key\"\n",
        portcullis_tests::root()
            .join("target/plugins")
            .display()
            .to_string()
    );
    let config = portcullis::config::Config::parse(&text, dir.path()).unwrap();
    let Err(e) = portcullis::gateway::Gateway::build(&config).await else {
        panic!("a 9-byte hash key was accepted");
    };
    let e = e.to_string();
    assert!(e.contains("hash.key") && e.contains("at least 32"), "{e}");
    assert!(!e.contains("short-key"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_azure_sdk_reads_a_masked_blob_and_a_listing_with_masked_metadata() {
    portcullis_tests::plugin("mask");
    let azurite = Azurite::start();
    let config = format!(
        r#"
[[plugin]]
name = "mask"
file = "mask.wasm"

[[route]]
name = "blob"
kind = "azure-storage"
path_prefix = "/{ACCOUNT}"
path_style = true
upstream = "{}"
authentication = "none"
plugins = ["mask"]
credential = {{ type = "azure-shared-key", account = "{ACCOUNT}", key_file = "account-key" }}
"#,
        azurite.endpoint()
    );
    let gw = TestGateway::start(&config, |dir| {
        std::fs::write(dir.join("account-key"), format!("{KEY}\n")).unwrap();
    })
    .await;
    let note = "owner ann@example.com\ncard 4111 1111 1111 1111\n\
                conn DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0;\n";
    let put = json!({
        "blob": "docs/notes.txt",
        "text": note,
        "metadata": {"owner": "bob@example.com", "team": "infra"}
    });
    let mut args = gateway_args(&gw);
    args.extend([
        "create-container:docs".to_string(),
        format!("put-text:{put}"),
        "read-text:docs/notes.txt".to_string(),
        "list-metadata:docs".to_string(),
    ]);
    let lines: Vec<Value> = tokio::task::spawn_blocking(move || run_blob_client(&args))
        .await
        .unwrap();
    for line in &lines {
        assert_eq!(line["ok"], true, "{line}");
    }
    assert_eq!(
        lines[2]["text"],
        "owner [EMAIL]\ncard [CARD]\nconn DefaultEndpointsProtocol=https;AccountName=a;AccountKey=[AZURE_SECRET];\n",
        "{}",
        lines[2]
    );
    assert_eq!(
        lines[3]["metadata"],
        json!({"notes.txt": {"owner": "[EMAIL]", "team": "infra"}}),
        "{}",
        lines[3]
    );
}
