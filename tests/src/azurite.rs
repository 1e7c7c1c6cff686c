//! Azurite, the Azure Storage emulator, as a test fixture, and the Python Azure SDK client that
//! the Azure tests drive against it (directly, or through the gateway).
//!
//! Both are installed by `scripts/setup.sh` under `target/tools/`; a missing one fails the test
//! loudly, never skips it. Each [`Azurite`] is a fresh `azurite-blob` with its own data directory
//! and port, so tests can run in parallel.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// The emulator's well-known account.
pub const ACCOUNT: &str = "devstoreaccount1";
/// The emulator's well-known (public, documented) key for [`ACCOUNT`].
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// How long Azurite may take to answer HTTP after it is spawned (it takes about a second).
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long one run of the Python client may take before it is killed.
const CLIENT_LIMIT: Duration = Duration::from_secs(120);

/// The line `azurite-blob` prints once it listens; the bound address follows it.
const LISTENING: &str = "Azurite Blob service successfully listens on http://";

/// Preloaded into Azurite's node: when its stdin closes, i.e. the test process holding the
/// other end is gone even if it died without running [`Drop`], it deletes its temp dir (where
/// this script lives) and exits.
const WATCHDOG: &str = "const gone = () => {\n\
                          require('fs').rmSync(__dirname, { recursive: true, force: true });\n\
                          process.exit(0);\n\
                        };\n\
                        process.stdin.on('end', gone);\n\
                        process.stdin.on('error', gone);\n\
                        process.stdin.resume();\n";

/// A running `azurite-blob` on 127.0.0.1, killed (and its data deleted) on drop.
pub struct Azurite {
    child: Child,
    /// Held open for the watchdog; closing it also stops Azurite.
    _stdin: ChildStdin,
    port: u16,
    /// Everything Azurite printed, for failure messages.
    output: Arc<Mutex<String>>,
    /// Dropped after the process is killed (fields drop after `Drop::drop`).
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Azurite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Azurite")
            .field("pid", &self.child.id())
            .field("port", &self.port)
            .finish()
    }
}

impl Azurite {
    /// Start `azurite-blob` on 127.0.0.1 with a fresh data directory and wait (at most 30 s)
    /// until it answers HTTP.
    ///
    /// It listens on port 0 and reports the port the system chose, so there is no race for a
    /// free port. `node` runs Azurite's entry script directly (no shell or npm wrapper), so the
    /// child is the whole process tree: Azurite starts no processes of its own.
    /// `--disableProductStyleUrl` makes the first path segment the account whatever the `Host`
    /// header says, so a request forwarded with a dotted host name still works path-style.
    ///
    /// Panics if Azurite is not installed or does not come up.
    pub fn start() -> Azurite {
        let entry = root_path("target/tools/azurite/node_modules/azurite/dist/src/blob/main.js");
        assert!(
            entry.is_file(),
            "Azurite is not installed ({} is missing): run scripts/setup.sh",
            entry.display()
        );
        let dir = tempfile::tempdir().expect("temp dir for Azurite");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("Azurite data dir");
        let watchdog = dir.path().join("watchdog.js");
        std::fs::write(&watchdog, WATCHDOG).expect("write watchdog.js");

        let started = Instant::now();
        let mut child = Command::new("node")
            .arg("--require")
            .arg(&watchdog)
            .arg(&entry)
            .args(["--blobHost", "127.0.0.1", "--blobPort", "0", "--location"])
            .arg(&data)
            .args([
                "--silent",
                "--skipApiVersionCheck",
                "--loose",
                "--disableTelemetry",
                "--disableProductStyleUrl",
            ])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node for Azurite ({e}): run scripts/setup.sh"));
        let stdin = child.stdin.take().expect("piped stdin");

        let output = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = mpsc::channel();
        collect(
            child.stdout.take().expect("piped stdout"),
            &output,
            Some(port_tx),
        );
        collect(child.stderr.take().expect("piped stderr"), &output, None);

        let mut azurite = Azurite {
            child,
            _stdin: stdin,
            port: 0,
            output,
            _dir: dir,
        };
        let deadline = started + START_LIMIT;
        azurite.port = match port_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(port) => port,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                azurite.fail(&format!("did not listen within {START_LIMIT:?}"))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => azurite.fail("exited before listening"),
        };
        while !answers_http(azurite.port) {
            if Instant::now() > deadline {
                azurite.fail(&format!("did not answer HTTP within {START_LIMIT:?}"));
            }
            if let Ok(Some(status)) = azurite.child.try_wait() {
                azurite.fail(&format!("exited ({status})"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        azurite
    }

    /// The port Azurite listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:{port}`, without the account.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The path-style account URL, `http://127.0.0.1:{port}/devstoreaccount1`.
    pub fn account_url(&self) -> String {
        format!("{}/{ACCOUNT}", self.endpoint())
    }

    /// Everything Azurite printed so far (with `--silent`, little more than its start lines).
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    fn fail(&mut self, what: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Give the reader threads a moment to collect the last lines.
        std::thread::sleep(Duration::from_millis(100));
        panic!(
            "Azurite {what} (run scripts/setup.sh if it is not installed); its output:\n{}",
            self.output()
        );
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python interpreter of `target/tools/venv`, which has `azure-storage-blob`.
///
/// Panics if the venv is missing.
pub fn python() -> PathBuf {
    let python = root_path("target/tools/venv/bin/python");
    assert!(
        python.is_file(),
        "the Python venv is missing ({}): run scripts/setup.sh",
        python.display()
    );
    python
}

/// The SDK-driven client script, `tests/clients/blob_client.py`.
pub fn blob_client_script() -> PathBuf {
    root_path("tests/clients/blob_client.py")
}

/// Run `blob_client.py` with `args` (options, then actions) under [`python()`] and return its
/// JSON lines, one per action, in order.
///
/// Panics (with the client's stderr) if it does not finish within two minutes, exits with an
/// error, or prints a line that is not JSON. A refused action is not an error: it is a line with
/// `"ok": false`.
pub fn run_blob_client<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Vec<serde_json::Value> {
    let mut child = Command::new(python())
        .arg(blob_client_script())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run blob_client.py: {e}"));
    let stdout = Arc::new(Mutex::new(String::new()));
    let stderr = Arc::new(Mutex::new(String::new()));
    let readers = [
        collect(child.stdout.take().expect("piped stdout"), &stdout, None),
        collect(child.stderr.take().expect("piped stderr"), &stderr, None),
    ];
    let deadline = Instant::now() + CLIENT_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for blob_client.py") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "blob_client.py did not finish within {CLIENT_LIMIT:?}; stdout:\n{}\nstderr:\n{}",
                stdout.lock().unwrap(),
                stderr.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for reader in readers {
        reader.join().expect("reader thread");
    }
    let (stdout, stderr) = (stdout.lock().unwrap(), stderr.lock().unwrap());
    assert!(
        status.success(),
        "blob_client.py failed ({status}); stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("blob_client.py printed a line that is not JSON ({e}): {line}\nstderr:\n{stderr}")
            })
        })
        .collect()
}

fn root_path(relative: &str) -> PathBuf {
    crate::root().join(Path::new(relative))
}

/// Append the lines of `from` to `into` on a thread; with `port`, send the port of Azurite's
/// "listens on" line there.
fn collect(
    from: impl Read + Send + 'static,
    into: &Arc<Mutex<String>>,
    port: Option<mpsc::Sender<u16>>,
) -> std::thread::JoinHandle<()> {
    let into = Arc::clone(into);
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if let (Some(tx), Some(address)) = (&port, line.strip_prefix(LISTENING))
                && let Some(p) = address.rsplit(':').next().and_then(|p| p.parse().ok())
            {
                let _ = tx.send(p);
            }
            let mut into = into.lock().unwrap();
            into.push_str(&line);
            into.push('\n');
        }
    })
}

/// Whether something on 127.0.0.1:`port` answers a plain HTTP request with an HTTP response.
fn answers_http(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!(
        "GET /{ACCOUNT}?comp=list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

/// `blob_client.py` arguments that point the SDK at a test gateway's account endpoint over TLS,
/// trusting the gateway's CA.
pub fn gateway_args(gw: &crate::gateway::TestGateway) -> Vec<String> {
    vec![
        "--endpoint".to_string(),
        format!("{}/{ACCOUNT}", gw.url()),
        "--ca".to_string(),
        gw.certs.ca.display().to_string(),
    ]
}

/// The bytes `blob_client.py` uploads for blob `name` (without its container): sha256 of
/// `"{name}:{i}"` for i = 0, 1, …, concatenated and cut to `size`.
pub fn blob_bytes(name: &str, size: usize) -> Vec<u8> {
    use sha2::Digest;
    let mut out = Vec::with_capacity(size + 32);
    let mut i = 0u64;
    while out.len() < size {
        out.extend_from_slice(&sha2::Sha256::digest(format!("{name}:{i}")));
        i += 1;
    }
    out.truncate(size);
    out
}
