//! Headless Chromium for tests of the gateway's web pages: Debian's `chromium` driven over the
//! DevTools protocol by `headless_chrome` (built without its browser fetcher: nothing is ever
//! downloaded), with bounded waits that fail with what the page showed.
//!
//! Blocking: async tests call it inside `tokio::task::spawn_blocking`.
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use headless_chrome::protocol::cdp::Log::{LogEntryLevel, LogEntrySource};
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::protocol::cdp::Runtime::{ConsoleAPICalledEventTypeOption, RemoteObjectType};
use headless_chrome::protocol::cdp::types::Event;
use headless_chrome::{Element, LaunchOptions, Tab};
use serde_json::Value;

/// Where Debian's package puts the browser; `PORTCULLIS_CHROMIUM` names another.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The longest any wait of this module lasts before it fails the test.
pub const WAIT: Duration = Duration::from_secs(20);

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(100);

/// Flags beyond those `headless_chrome` passes (headless, `--disable-gpu`, `--no-sandbox`,
/// `--disable-dev-shm-usage`, no first run, no background networking, ...): a test browser
/// talks to nothing but the servers the test started on 127.0.0.1.
const FLAGS: [&str; 8] = [
    "--no-proxy-server",
    "--disable-component-update",
    "--disable-domain-reliability",
    "--no-pings",
    "--mute-audio",
    "--hide-scrollbars",
    "--disable-crash-reporter",
    "--lang=en-US",
];

/// A headless Chromium, killed (and its temporary profile removed) when dropped.
pub struct Browser {
    browser: headless_chrome::Browser,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Start Chromium headless with a fresh profile: `/usr/bin/chromium`, or the binary
    /// `PORTCULLIS_CHROMIUM` names. Panics when it is missing: a browser test never skips.
    pub fn launch() -> Browser {
        let path = std::env::var_os("PORTCULLIS_CHROMIUM")
            .map_or_else(|| PathBuf::from(CHROMIUM), PathBuf::from);
        assert!(
            path.is_file(),
            "no Chromium at {}: run `apt-get install chromium` (scripts/setup.sh does), or set \
             PORTCULLIS_CHROMIUM to a Chromium binary",
            path.display()
        );
        let profile = tempfile::tempdir().unwrap();
        let options = LaunchOptions {
            headless: true,
            // CI runs as root, where Chromium refuses to start sandboxed.
            sandbox: false,
            enable_gpu: false,
            path: Some(path.clone()),
            user_data_dir: Some(profile.path().to_path_buf()),
            window_size: Some((1400, 1000)),
            // The DevTools connection closes after this long without an event from the
            // browser: longer than any test waits.
            idle_browser_timeout: Duration::from_secs(120),
            args: FLAGS.iter().map(OsStr::new).collect(),
            ..LaunchOptions::default()
        };
        let browser = headless_chrome::Browser::new(options)
            .unwrap_or_else(|e| panic!("Chromium ({}) did not start: {e:#}", path.display()));
        Browser {
            browser,
            _profile: profile,
        }
    }

    /// A new tab showing `url`, once it has loaded. Console errors, uncaught exceptions,
    /// Content-Security-Policy violations and dialogs of the tab are recorded from the start:
    /// see [`Page::problems`].
    pub fn open(&self, url: &str) -> Page {
        let tab = self
            .browser
            .new_tab()
            .unwrap_or_else(|e| panic!("Chromium cannot open a tab: {e:#}"));
        tab.set_default_timeout(WAIT);
        let problems = Arc::new(Mutex::new(Vec::new()));
        let sink = problems.clone();
        tab.add_event_listener(Arc::new(move |event: &Event| {
            if let Some(problem) = problem(event) {
                sink.lock().unwrap().push(problem);
            }
        }))
        .unwrap();
        tab.enable_log().unwrap();
        tab.enable_runtime().unwrap();
        let page = Page { tab, problems };
        page.goto(url);
        page
    }
}

/// What a browser event says went wrong, if anything. Failed loads (`source: network`) are
/// left out: a page that shows an API's 4xx answer logs one, as it should.
fn problem(event: &Event) -> Option<String> {
    match event {
        Event::LogEntryAdded(e) => {
            let entry = &e.params.entry;
            (entry.level == LogEntryLevel::Error && entry.source != LogEntrySource::Network)
                .then(|| format!("log ({:?}): {}", entry.source, entry.text))
        }
        Event::RuntimeExceptionThrown(e) => {
            let details = &e.params.exception_details;
            let description = details
                .exception
                .as_ref()
                .and_then(|x| x.description.clone())
                .unwrap_or_default();
            Some(format!(
                "uncaught exception at {}:{}: {} {description}",
                details.url.clone().unwrap_or_default(),
                details.line_number,
                details.text
            ))
        }
        Event::RuntimeConsoleAPICalled(e)
            if e.params.Type == ConsoleAPICalledEventTypeOption::Error =>
        {
            let args: Vec<String> = e
                .params
                .args
                .iter()
                .map(|a| {
                    a.value
                        .as_ref()
                        .map(Value::to_string)
                        .or_else(|| a.description.clone())
                        .unwrap_or_default()
                })
                .collect();
            Some(format!("console.error: {}", args.join(" ")))
        }
        Event::PageJavascriptDialogOpening(e) => Some(format!(
            "a {:?} dialog opened: {:?}",
            e.params.Type, e.params.message
        )),
        _ => None,
    }
}

/// One tab, with waits and actions that fail the test with a clear message.
pub struct Page {
    /// The tab, for anything the helpers do not cover.
    pub tab: Arc<Tab>,
    problems: Arc<Mutex<Vec<String>>>,
}

impl Page {
    /// Load `url` in this tab and wait until it has loaded.
    pub fn goto(&self, url: &str) {
        self.tab
            .navigate_to(url)
            .and_then(|t| t.wait_until_navigated())
            .unwrap_or_else(|e| panic!("Chromium could not load {url}: {e:#}"));
    }

    /// Reload the page (as a person pressing F5 would) and wait until it has loaded.
    pub fn reload(&self) {
        self.tab
            .reload(false, None)
            .and_then(|t| t.wait_until_navigated())
            .unwrap_or_else(|e| panic!("Chromium could not reload the page: {e:#}"));
    }

    /// The first element matching the CSS `selector`, waiting up to [`WAIT`] for it.
    pub fn wait_for(&self, selector: &str) -> Element<'_> {
        self.tab
            .wait_for_element_with_custom_timeout(selector, WAIT)
            .unwrap_or_else(|e| self.fail(&format!("no element {selector} ({e})")))
    }

    /// Click the element matching `selector` with the mouse, as a person would (a disabled
    /// button ignores it).
    pub fn click(&self, selector: &str) {
        self.wait_for(selector)
            .click()
            .unwrap_or_else(|e| self.fail(&format!("cannot click {selector} ({e})")));
    }

    /// Focus the input matching `selector` and type `text` into it (inserted whole, with an
    /// `input` event, as a paste would).
    pub fn type_into(&self, selector: &str, text: &str) {
        self.wait_for(selector)
            .focus()
            .unwrap_or_else(|e| self.fail(&format!("cannot focus {selector} ({e})")));
        self.tab
            .send_character(text)
            .unwrap_or_else(|e| self.fail(&format!("cannot type into {selector} ({e})")));
    }

    /// The `textContent` of the first element matching `selector`, waiting for it.
    pub fn text(&self, selector: &str) -> String {
        self.wait_for(selector);
        let value = self.eval(&format!(
            "document.querySelector({}).textContent",
            js_string(selector)
        ));
        value.as_str().unwrap_or_default().to_string()
    }

    /// Wait until the text of the element matching `selector` contains `needle`; its text.
    pub fn wait_for_text(&self, selector: &str, needle: &str) -> String {
        let js = format!(
            "(() => {{ const e = document.querySelector({}); \
             return e && e.textContent.includes({}) ? e.textContent : null; }})()",
            js_string(selector),
            js_string(needle)
        );
        let found = self.wait_until(&format!("{selector} to contain {needle:?}"), &js);
        found.as_str().unwrap_or_default().to_string()
    }

    /// Wait until the JavaScript expression `js` is truthy; its value (as JSON).
    pub fn wait_until(&self, what: &str, js: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let value = self.eval(js);
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
                Value::String(s) => !s.is_empty(),
                Value::Array(_) | Value::Object(_) => true,
            };
            if truthy {
                return value;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("waited {WAIT:?} for {what}"));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Evaluate the JavaScript expression `js` in the page; its value as JSON (`undefined`
    /// is `null`). Panics when it throws.
    pub fn eval(&self, js: &str) -> Value {
        let wrapped =
            format!("(() => {{ const v = ({js}); return JSON.stringify(v ?? null); }})()");
        let result = self
            .tab
            .evaluate(&wrapped, false)
            .unwrap_or_else(|e| panic!("evaluating {js} failed: {e:#}"));
        match (&result.Type, &result.value) {
            (RemoteObjectType::String, Some(Value::String(json))) => serde_json::from_str(json)
                .unwrap_or_else(|e| panic!("{js} gave {json:?}, not JSON: {e}")),
            _ => panic!(
                "evaluating {js} threw: {}",
                result.description.unwrap_or_default()
            ),
        }
    }

    /// Console errors, uncaught exceptions, CSP violations and dialogs seen so far.
    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap().clone()
    }

    /// Fail the test if the page logged an error, threw, broke its Content-Security-Policy
    /// or opened a dialog.
    pub fn assert_no_problems(&self) {
        let problems = self.problems();
        assert!(
            problems.is_empty(),
            "the page at {} had problems:\n{}",
            self.tab.get_url(),
            problems.join("\n")
        );
    }

    /// Save a PNG screenshot of the whole page to `path` (to look at a failure).
    pub fn screenshot(&self, path: &Path) {
        let png = self
            .tab
            .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
            .unwrap_or_else(|e| panic!("no screenshot: {e:#}"));
        std::fs::write(path, png).unwrap();
    }

    /// Panic with `what` and what the page shows: its URL, visible text and problems.
    fn fail(&self, what: &str) -> ! {
        let text = self
            .tab
            .evaluate("document.body ? document.body.innerText : ''", false)
            .ok()
            .and_then(|r| r.value)
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let text: String = text.chars().take(4000).collect();
        panic!(
            "{what}\npage: {}\n--- its text ---\n{text}\n--- its problems ---\n{}",
            self.tab.get_url(),
            self.problems().join("\n")
        );
    }
}

/// `s` as a JavaScript string literal.
fn js_string(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}
