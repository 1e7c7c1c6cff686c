//! The container image as an operator runs it: built by `scripts/container.sh` (podman, no
//! registry), serving on loopback as its non-root user with a mounted configuration, denying by
//! a first-party plugin from the image, stopped gracefully by `podman stop`, and leaving an audit
//! log that `portcullis audit verify --strict` passes. Needs podman and root (`scripts/setup.sh`
//! installs podman; CI runs as root).
#![allow(clippy::unwrap_used)]
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const ORIGIN: &str = "test.portcullis/container";
const UPSTREAM_BODY: &str = "hello from upstream";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Run `command`, asserting it succeeded.
#[track_caller]
fn run(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        text(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn podman() -> Command {
    let mut command = Command::new("podman");
    command.env(
        "CONTAINERS_CONF",
        root().join("target/tools/containers.conf"),
    );
    command
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An upstream on loopback answering every request with 200 and `UPSTREAM_BODY`.
fn upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{UPSTREAM_BODY}",
                UPSTREAM_BODY.len()
            );
        }
    });
    port
}

/// One HTTP/1.1 request on loopback: (status, body).
fn http(port: u16, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Removes the test's container and image, however the test ends.
struct Cleanup {
    container: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", &self.container]).output();
        let _ = podman().args(["rmi", "-f", &self.image]).output();
    }
}

#[test]
fn the_image_serves_on_loopback_as_its_own_user_and_stops_with_a_verified_audit_log() {
    let id = std::process::id();
    let cleanup = Cleanup {
        container: format!("portcullis-test-{id}"),
        image: format!("localhost/portcullis:test-{id}"),
    };
    run(Command::new(root().join("scripts/container.sh"))
        .arg(&cleanup.image)
        .env("PORTCULLIS_BIN", env!("CARGO_BIN_EXE_portcullis")));

    // The operator's side: a configuration and key (read-only) and a state directory, both
    // owned by the image's user.
    let dir = tempfile::tempdir().unwrap();
    let (etc, state) = (dir.path().join("etc"), dir.path().join("state"));
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    run(Command::new(env!("CARGO_BIN_EXE_portcullis")).args([
        "keygen",
        "--name",
        ORIGIN,
        "--out",
        etc.join("audit").to_str().unwrap(),
    ]));
    let (port, admin, upstream) = (free_port(), free_port(), upstream());
    std::fs::write(
        etc.join("portcullis.toml"),
        format!(
            r#"plugin_dir = "/usr/share/portcullis/plugins"

[server]
listen = "127.0.0.1:{port}"
plaintext = true
admin_listen = "127.0.0.1:{admin}"

[[plugin]]
name = "guard"
file = "guard.wasm"
[plugin.config]
default = "allow"
[[plugin.config.rules]]
id = "no-deletes"
operations = ["DELETE /**"]
action = "deny"

[audit]
dir = "/var/lib/portcullis/audit"
origin = "{ORIGIN}"
signing_key_file = "audit.key"

[[route]]
name = "api"
authentication = "none"
upstream = "http://127.0.0.1:{upstream}"
plugins = ["guard"]
"#
        ),
    )
    .unwrap();
    for path in [&etc, &etc.join("audit.key"), &state] {
        std::os::unix::fs::chown(path, Some(65532), Some(65532)).unwrap();
    }

    run(podman().args([
        "run",
        "--detach",
        "--name",
        &cleanup.container,
        "--network",
        "host",
        "--volume",
        &format!("{}:/etc/portcullis:ro", etc.display()),
        "--volume",
        &format!("{}:/var/lib/portcullis", state.display()),
        &cleanup.image,
    ]));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = http(admin, "GET", "/readyz") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready within 60 s: {}",
            text(
                &podman()
                    .args(["logs", &cleanup.container])
                    .output()
                    .unwrap()
            )
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let (status, body) = http(port, "GET", "/reports/1").unwrap();
    assert_eq!((status, body.as_str()), (200, UPSTREAM_BODY));
    let (status, body) = http(port, "DELETE", "/reports/1").unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("no-deletes"), "{body}");

    let top = run(podman().args(["top", &cleanup.container, "huser", "args"]));
    let process = top.lines().nth(1).unwrap_or_default();
    assert!(
        process.starts_with("65532 ") && process.contains("/usr/local/bin/portcullis serve"),
        "{top}"
    );

    run(podman().args(["stop", "--time", "10", &cleanup.container]));
    let exit = run(podman().args([
        "inspect",
        "--format",
        "{{.State.ExitCode}}",
        &cleanup.container,
    ]));
    assert_eq!(exit.trim(), "0");

    let audit = state.join("audit");
    let verified = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["audit", "verify", "--strict", "--dir"])
        .arg(&audit)
        .arg("--trust")
        .arg(etc.join("audit.pub"))
        .output()
        .unwrap();
    assert!(verified.status.success(), "{}", text(&verified));
    let records: String = std::fs::read_dir(&audit)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("segment-"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let decisions: Vec<&str> = records
        .lines()
        .filter(|l| l.contains(r#""type":"request.decision""#))
        .collect();
    assert_eq!(decisions.len(), 2, "{records}");
    assert!(decisions[0].contains(r#""decision":"allow""#), "{records}");
    assert!(decisions[1].contains(r#""decision":"deny""#), "{records}");
    assert!(
        records
            .lines()
            .last()
            .is_some_and(|l| l.contains(r#""type":"gateway.stop""#)),
        "{records}"
    );
}
