//! Host mask executor throughput: the `mask` plugin's real plan (6 detectors, 3 field rules)
//! executed on a 1 MiB JSON document, against `serde_json` parsing and writing the same
//! document in the same run (the floor any JSON-aware rewrite pays), and against the same plan
//! with no matches to rewrite.
//!
//! Run: `scripts/build-plugins.sh && cargo bench -p portcullis --bench mask`
#![allow(clippy::unwrap_used)] // benchmark setup: a failed unwrap is a broken benchmark
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis::mask::{self, BodyKind, PlanRef};
use portcullis::plugin::{
    EngineSettings, Held, MaskPlan, PluginEngine, PluginSettings, PluginSpec, Request,
    ResponseVerdict, load_plugin,
};

const HASH_KEY: &[u8] = b"bench-hash-key-0123456789abcdef-0123456789";

/// 6 detectors on (every other one off) and 3 field rules, one of each strategy.
fn config() -> serde_json::Value {
    serde_json::json!({
        "body_limit": 4 << 20,
        "fields": [
            {"pointer": "/value/*/properties/primaryKey", "kind": "storage-key", "label": "SECRET"},
            {"pointer": "/value/*/properties/owner/id", "kind": "user-id", "strategy": "hash", "label": "USER"},
            {"pointer": "/value/*/properties/billing/card", "kind": "card-field", "strategy": "partial", "keep": 4}
        ],
        "detectors": {
            "email": true, "phone": true, "card": true, "iban": true, "ipv4": true,
            "azure-storage-key": true,
            "private-key": false, "jwt": false, "azure-connection-string": false,
            "sas-signature": false, "aws-access-key": false, "bearer-token": false,
            "ssn": false, "ipv6": false, "high-entropy": false
        }
    })
}

/// An ARM-like listing of about `size` bytes: ids, names, timestamps, tags and prose, with a
/// secret, an e-mail address, a phone number, an IP address or a card number in some items.
fn document(size: usize) -> Vec<u8> {
    let mut items = Vec::new();
    let mut len = 0;
    let mut i = 0usize;
    while len < size {
        let key = format!("{}{i:A>8}==", "Qk+/".repeat(19) + "Qk");
        let item = serde_json::json!({
            "id": format!("/subscriptions/0b1f6471-1bf0-4dda-aec3-cb9272f09590/resourceGroups/rg-{}/providers/Microsoft.Storage/storageAccounts/sa{i}", i % 7),
            "name": format!("sa{i}"),
            "type": "Microsoft.Storage/storageAccounts",
            "location": "westeurope",
            "tags": {"costCenter": format!("cc-{}", i % 13), "env": "prod"},
            "properties": {
                "provisioningState": "Succeeded",
                "creationTime": "2026-11-28T23:14:43.1234567Z",
                "primaryKey": key,
                "owner": {"id": format!("u-{i}"), "mail": if i.is_multiple_of(4) { format!("user{i}@example.com") } else { String::new() }},
                "billing": {"card": "4111111111111111", "iban": if i.is_multiple_of(16) { "GB82 WEST 1234 5698 7654 32" } else { "" }},
                "description": match i % 5 {
                    0 => format!("Contact the on-call engineer at +44 20 7946 {:04} for incidents.", i % 10000),
                    1 => format!("Allowed client 10.0.{}.{} only.", i % 250, (i * 7) % 250),
                    2 => "Paid with card 4111 1111 1111 1111 last month.".to_string(),
                    _ => "Holds the nightly exports of the reporting pipeline; retention 30 days.".to_string(),
                },
                "sku": {"name": "Standard_LRS", "tier": "Standard"},
                "encryption": {"keySource": "Microsoft.Storage", "requireInfrastructureEncryption": false},
                "minimumTlsVersion": "TLS1_2",
                "allowBlobPublicAccess": false,
                "networkAcls": {"defaultAction": "Deny", "bypass": "AzureServices", "ipRules": []}
            }
        });
        let text = serde_json::to_string_pretty(&item).unwrap();
        len += text.len() + 2;
        items.push(item);
        i += 1;
    }
    serde_json::to_vec_pretty(&serde_json::json!({"value": items, "nextLink": null})).unwrap()
}

fn request() -> Request {
    Request {
        id: "0af7651916cd43dd8448eb211c80319c".into(),
        method: "GET".into(),
        scheme: "https".into(),
        authority: "management.azure.com".into(),
        path_and_query: "/subscriptions/s1/providers/Microsoft.Storage/storageAccounts".into(),
        route: "arm".into(),
        operation: "Microsoft.Storage/storageAccounts/read".into(),
        principal: None,
    }
}

fn bench(c: &mut Criterion) {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/mask.wasm");
    assert!(
        file.is_file(),
        "{} is missing: run scripts/build-plugins.sh first",
        file.display()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = document(1 << 20);
    let mut h = http::HeaderMap::new();
    h.insert("content-type", "application/json".parse().unwrap());
    let h = Arc::new(h);
    let (plugin, plan): (_, MaskPlan) = rt.block_on(async {
        let engine = PluginEngine::new(EngineSettings::default()).unwrap();
        let spec = PluginSpec {
            alias: None,
            name: "mask".into(),
            file,
            config: config(),
            settings: PluginSettings::default(),
        };
        let plugin = load_plugin(&engine, &spec).await.unwrap();
        let verdict = plugin
            .on_response_body(
                &mut Held::default(),
                &request(),
                200,
                &h,
                Bytes::from(body.clone()),
            )
            .await
            .unwrap();
        let ResponseVerdict::Mask(plan) = verdict else {
            panic!("mask did not answer with a plan: {verdict:?}");
        };
        (plugin, plan)
    });
    let regexes = plan
        .edits
        .iter()
        .filter(|e| matches!(e.target, portcullis::plugin::MaskTarget::Regex(_)))
        .count();
    assert_eq!(
        (regexes, plan.edits.len()),
        (6, 9),
        "6 detectors, 3 field rules"
    );
    let plans = [PlanRef {
        plan: &plan,
        patterns: plugin.patterns(),
    }];
    let once = mask::apply(&body, BodyKind::Json, &plans, Some(HASH_KEY)).unwrap();
    assert!(once.changed && once.masked > 1000, "{} masked", once.masked);
    serde_json::from_slice::<serde_json::Value>(&once.body).unwrap();
    eprintln!(
        "document: {} bytes, {} values masked, findings: {}",
        body.len(),
        once.masked,
        mask::summarize(&once.findings)
    );
    // The same document with nothing to mask: the cost of scanning alone.
    let clean = String::from_utf8(body.clone())
        .unwrap()
        .replace("@example.com", "-example-com")
        .replace("4111", "ABCD")
        .replace("+44 20", "tel 20")
        .replace("10.0.", "ten.")
        .replace("GB82 WEST", "GBXX WEST")
        .replace("==", "--")
        .into_bytes();
    let clean_plan = MaskPlan {
        edits: plan
            .edits
            .iter()
            .filter(|e| matches!(e.target, portcullis::plugin::MaskTarget::Regex(_)))
            .cloned()
            .collect(),
        findings: vec![],
    };
    let clean_plans = [PlanRef {
        plan: &clean_plan,
        patterns: plugin.patterns(),
    }];
    assert!(
        !mask::apply(&clean, BodyKind::Json, &clean_plans, Some(HASH_KEY))
            .unwrap()
            .changed
    );

    let mut g = c.benchmark_group("mask");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.sample_size(20);
    g.bench_function("serde_json_parse_and_write", |b| {
        b.iter(|| {
            let v: serde_json::Value = serde_json::from_slice(black_box(&body)).unwrap();
            black_box(serde_json::to_vec(&v).unwrap())
        })
    });
    g.bench_function("executor_6_detectors_3_fields", |b| {
        b.iter(|| {
            black_box(
                mask::apply(black_box(&body), BodyKind::Json, &plans, Some(HASH_KEY)).unwrap(),
            )
        })
    });
    g.bench_function("executor_6_detectors_no_match", |b| {
        b.iter(|| {
            black_box(
                mask::apply(
                    black_box(&clean),
                    BodyKind::Json,
                    &clean_plans,
                    Some(HASH_KEY),
                )
                .unwrap(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
