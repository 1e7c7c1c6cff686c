//! The Azure harness tests itself, with no gateway in between: Azurite starts, the Python SDK
//! client (`tests/clients/blob_client.py`) round-trips blobs through it with Shared Key, and
//! reports refusals and connection failures as JSON lines. The gateway's end-to-end test trusts
//! exactly these pieces and the request shapes asserted here.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
use std::time::Instant;

use portcullis_tests::azurite::{ACCOUNT, Azurite, KEY, blob_bytes, run_blob_client};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const CONTAINER: &str = "harness-self-test";
const SMALL: usize = 1000;
/// Just over 5 MiB: five full 1 MiB blocks and a one-byte sixth.
const LARGE: usize = (5 << 20) + 1;

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `n` copies of `request`.
fn times(n: usize, request: &str) -> Vec<String> {
    vec![request.to_string(); n]
}

/// Line `i` is a success for `action` with exactly these requests; returns it for more checks.
fn ok<'a>(lines: &'a [Value], i: usize, action: &str, requests: &[String]) -> &'a Value {
    let line = &lines[i];
    assert_eq!(line["action"], action, "line {i}: {line}");
    assert_eq!(line["ok"], true, "line {i}: {line}");
    assert_eq!(line["requests"], json!(requests), "line {i}: {line}");
    line
}

#[test]
fn python_sdk_round_trips_against_azurite_directly() {
    let begun = Instant::now();
    let azurite = Azurite::start();
    let started = begun.elapsed();
    let account_url = azurite.account_url();
    assert_eq!(
        account_url,
        format!("http://127.0.0.1:{}/{ACCOUNT}", azurite.port())
    );
    assert_eq!(account_url, format!("{}/{ACCOUNT}", azurite.endpoint()));

    let small = format!("{CONTAINER}/small.txt");
    let large = format!("{CONTAINER}/large.bin");
    let actions = [
        format!("create-container:{CONTAINER}"),
        format!("upload:{small}:{SMALL}"),
        format!("upload-blocks:{large}:{LARGE}"),
        format!("set-acl:{CONTAINER}"),
        "list-containers".to_string(),
        format!("list-blobs:{CONTAINER}"),
        format!("download:{large}"),
        format!("download:{small}"),
        format!("delete-blob:{small}"),
        format!("list-blobs:{CONTAINER}"),
        format!("download:{small}"),
        format!("delete-container:{CONTAINER}"),
        "list-containers".to_string(),
    ];
    let mut args = vec![
        "--endpoint".to_string(),
        account_url,
        "--key".to_string(),
        KEY.to_string(),
    ];
    args.extend(actions.iter().cloned());
    let client_begun = Instant::now();
    let lines = run_blob_client(&args);
    let client_took = client_begun.elapsed();
    assert_eq!(
        lines.len(),
        actions.len(),
        "one line per action: {lines:#?}"
    );

    let container = format!("/{ACCOUNT}/{CONTAINER}");
    let small_path = format!("/{ACCOUNT}/{small}");
    let large_path = format!("/{ACCOUNT}/{large}");
    let small_sha = sha256_hex(&blob_bytes("small.txt", SMALL));
    let large_sha = sha256_hex(&blob_bytes("large.bin", LARGE));

    ok(
        &lines,
        0,
        &actions[0],
        &[format!("PUT {container}?restype=container")],
    );
    let put = ok(&lines, 1, &actions[1], &[format!("PUT {small_path}")]);
    assert_eq!(put["sha256"], small_sha.as_str());
    assert_eq!(put["size"], SMALL);
    let mut blocks = times(6, &format!("PUT {large_path}?comp=block"));
    blocks.push(format!("PUT {large_path}?comp=blocklist"));
    let put = ok(&lines, 2, &actions[2], &blocks);
    assert_eq!(put["sha256"], large_sha.as_str());
    assert_eq!(put["size"], LARGE);
    ok(
        &lines,
        3,
        &actions[3],
        &[format!("PUT {container}?restype=container&comp=acl")],
    );
    // The SDK lists containers at the account with a trailing slash.
    let list = ok(
        &lines,
        4,
        &actions[4],
        &[format!("GET /{ACCOUNT}/?comp=list")],
    );
    assert_eq!(list["names"], json!([CONTAINER]));
    let list_blobs = format!("GET {container}?restype=container&comp=list");
    let list = ok(&lines, 5, &actions[5], std::slice::from_ref(&list_blobs));
    assert_eq!(list["names"], json!(["large.bin", "small.txt"]));
    // Streamed as ranged GETs of 1 MiB: six for five full MiB and one byte.
    let get = ok(
        &lines,
        6,
        &actions[6],
        &times(6, &format!("GET {large_path}")),
    );
    assert_eq!(get["sha256"], large_sha.as_str());
    assert_eq!(get["size"], LARGE);
    let get = ok(&lines, 7, &actions[7], &[format!("GET {small_path}")]);
    assert_eq!(get["sha256"], small_sha.as_str());
    assert_eq!(get["size"], SMALL);
    ok(&lines, 8, &actions[8], &[format!("DELETE {small_path}")]);
    let list = ok(&lines, 9, &actions[9], std::slice::from_ref(&list_blobs));
    assert_eq!(list["names"], json!(["large.bin"]));
    // A refusal by the service is a line, not the end of the run.
    let gone = &lines[10];
    assert_eq!(gone["action"], actions[10], "{gone}");
    assert_eq!(gone["ok"], false, "{gone}");
    assert_eq!(gone["status"], 404, "{gone}");
    assert_eq!(gone["error_code"], "BlobNotFound", "{gone}");
    assert!(
        gone["message"].as_str().unwrap().contains("does not exist"),
        "{gone}"
    );
    ok(
        &lines,
        11,
        &actions[11],
        &[format!("DELETE {container}?restype=container")],
    );
    let list = ok(
        &lines,
        12,
        &actions[12],
        &[format!("GET /{ACCOUNT}/?comp=list")],
    );
    assert_eq!(list["names"], json!([]));

    eprintln!(
        "Azurite answered HTTP after {started:?}; the client took {client_took:?}; \
         the test {:?}",
        begun.elapsed()
    );
}

#[test]
fn python_sdk_reports_refusals_and_failures_as_json_lines() {
    let azurite = Azurite::start();

    // Without a key the SDK sends anonymous requests, which Azurite refuses: the gateway's
    // job is to sign them.
    let lines = run_blob_client(&[
        "--endpoint",
        &azurite.account_url(),
        "create-container:anonymous",
        "list-containers",
    ]);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    for (line, action) in lines
        .iter()
        .zip(["create-container:anonymous", "list-containers"])
    {
        assert_eq!(line["action"], action, "{line}");
        assert_eq!(line["ok"], false, "{line}");
        assert_eq!(line["status"], 403, "{line}");
        assert_eq!(line["error_code"], "AuthorizationFailure", "{line}");
        assert!(line["message"].is_string(), "{line}");
        assert_eq!(
            line["requests"].as_array().unwrap().len(),
            1,
            "one try only: {line}"
        );
    }

    // A wrong key is refused the same way.
    let lines = run_blob_client(&[
        "--endpoint",
        &azurite.account_url(),
        "--key",
        "d3Jvbmcga2V5",
        "list-containers",
    ]);
    assert_eq!(lines[0]["status"], 403, "{}", lines[0]);
    assert_eq!(
        lines[0]["error_code"], "AuthorizationFailure",
        "{}",
        lines[0]
    );

    // Nothing listening (on a port just freed: a tiny race if another process takes it in
    // between): an exception line after a single try, and the next action still runs.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let lines = run_blob_client(&[
        "--endpoint",
        &format!("http://127.0.0.1:{closed}/{ACCOUNT}"),
        "--key",
        KEY,
        "list-containers",
        "download:c/b",
    ]);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    for line in &lines {
        assert_eq!(line["ok"], false, "{line}");
        assert_eq!(line["exception"], "ServiceRequestError", "{line}");
        assert_eq!(
            line["requests"].as_array().unwrap().len(),
            1,
            "one try only: {line}"
        );
    }
}
