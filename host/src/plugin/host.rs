//! What a guest may call: the `host` interface of the contract, the locked-down WASI context,
//! and the per-store state (resource table, memory limiter, log budget, captured stdio).
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use regex::Regex;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{imports, types};

/// Most log lines one hook call may write; later ones are counted and dropped.
pub const LOG_LINES_PER_CALL: u32 = 32;
/// Longest log line kept, in bytes.
pub const LOG_LINE_MAX: usize = 2048;
/// Most bytes of stdout + stderr kept per call.
pub const STDIO_MAX: usize = 4096;
/// Most matches one `regex-find` returns.
pub const REGEX_MATCHES_MAX: u32 = 10_000;
/// Most distinct counter names per plugin.
pub const COUNTERS_MAX: usize = 64;

/// Everything about a plugin version that its stores share: name, config, compiled patterns,
/// counters.
#[derive(Debug)]
pub struct PluginContext {
    /// The plugin's name, used to tag its log lines.
    pub name: Arc<str>,
    /// The operator's configuration, JSON text.
    pub config: String,
    /// The descriptor's patterns, compiled by the host.
    pub patterns: Vec<Regex>,
    /// Counters the plugin adds to.
    pub counters: Mutex<HashMap<String, u64>>,
}

/// A header map lent to a guest for one call.
pub struct HeaderView(pub Arc<http::HeaderMap>);

/// A body lent to a guest for one call.
pub struct BodyView(pub Bytes);

/// What a call lends the guest: its headers and, for body hooks, its body. Taken back with
/// `HostState::take_back` when the call returns.
pub struct Lent {
    headers: Resource<HeaderView>,
    body: Option<Resource<BodyView>>,
}

impl Lent {
    /// The headers, as the borrow a hook takes.
    pub fn headers(&self) -> Resource<HeaderView> {
        Resource::new_borrow(self.headers.rep())
    }

    /// The body, as the borrow a body hook takes.
    pub fn body(&self) -> wasmtime::Result<Resource<BodyView>> {
        self.body
            .as_ref()
            .map(|b| Resource::new_borrow(b.rep()))
            .ok_or_else(|| wasmtime::format_err!("no body was lent for this call"))
    }
}

/// The data of one wasmtime `Store`: one plugin instance.
pub struct HostState {
    pub(crate) ctx: Arc<PluginContext>,
    pub(crate) table: ResourceTable,
    /// Built on the guest's first WASI call: many hooks never make one, and building it
    /// (clocks, random generators, stdio streams) is a measurable part of a fresh call.
    wasi: Option<WasiCtx>,
    pub(crate) limiter: Limiter,
    logs_left: u32,
    logs_dropped: u32,
    stdout: Capture,
    stderr: Capture,
    /// When the current call must end, were it never kept waiting; checked at every epoch tick.
    deadline: Instant,
    /// Time the current call spent waiting for the runtime after yielding, which does not
    /// count against its deadline (made on its first yield: most calls never yield).
    waited: Option<Arc<AtomicU64>>,
}

impl HostState {
    /// State for a new instance of the plugin, with a memory limit in bytes.
    pub fn new(ctx: Arc<PluginContext>, memory_limit: usize) -> Self {
        let stdout = Capture::default();
        let stderr = Capture::default();
        HostState {
            ctx,
            table: ResourceTable::new(),
            wasi: None,
            limiter: Limiter::new(memory_limit),
            logs_left: LOG_LINES_PER_CALL,
            logs_dropped: 0,
            stdout,
            stderr,
            deadline: Instant::now(),
            waited: None,
        }
    }

    /// Whether the current call has run past its deadline. Only the guest's own time counts:
    /// while the gateway is busy, a call waiting for its turn after a yield is not overdue.
    pub(crate) fn overdue(&self) -> bool {
        let waited = self
            .waited
            .as_ref()
            .map_or(0, |w| w.load(Ordering::Relaxed));
        Instant::now() >= self.deadline + Duration::from_nanos(waited)
    }

    /// Give the runtime's other tasks a turn, timing how long the call waits for its next.
    pub(crate) fn yield_now(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let waited = self.waited.get_or_insert_with(Default::default).clone();
        Box::pin(async move {
            let start = Instant::now();
            tokio::task::yield_now().await;
            let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            waited.fetch_add(nanos, Ordering::Relaxed);
        })
    }

    /// Start a call that must end within `timeout`, with fresh per-call budgets (an instance
    /// in `reuse` mode serves many calls).
    pub fn begin_call(&mut self, timeout: Duration) {
        self.deadline = Instant::now() + timeout;
        if let Some(waited) = &self.waited {
            waited.store(0, Ordering::Relaxed);
        }
        self.logs_left = LOG_LINES_PER_CALL;
        self.logs_dropped = 0;
    }

    /// Lend headers (and a body) to the guest for one call.
    pub fn lend(
        &mut self,
        headers: &Arc<http::HeaderMap>,
        body: Option<Bytes>,
    ) -> wasmtime::Result<Lent> {
        let headers = self.table.push(HeaderView(headers.clone()))?;
        let body = body.map(|b| self.table.push(BodyView(b))).transpose()?;
        Ok(Lent { headers, body })
    }

    /// Take back what `lend` lent, so a reused instance starts its next call empty.
    pub fn take_back(&mut self, lent: Lent) -> wasmtime::Result<()> {
        self.table.delete(lent.headers)?;
        if let Some(body) = lent.body {
            self.table.delete(body)?;
        }
        Ok(())
    }

    /// Send what the guest printed during the call to tracing, tagged with its name.
    pub fn end_call(&mut self) {
        let plugin = &*self.ctx.name;
        for (stream, capture) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            if let Some((text, dropped)) = capture.take() {
                tracing::info!(plugin, stream, dropped_bytes = dropped, "{text}");
            }
        }
        if self.logs_dropped > 0 {
            tracing::warn!(
                plugin,
                dropped = self.logs_dropped,
                "plugin log lines throttled"
            );
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let (stdout, stderr) = (&self.stdout, &self.stderr);
        let ctx = self.wasi.get_or_insert_with(|| empty_wasi(stdout, stderr));
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

/// An empty sandbox: no preopened directories, no environment, no arguments, no stdin, no
/// sockets or name lookups; stdout and stderr captured for the plugin's log. Clocks and random
/// numbers are harmless and some language runtimes need them to start.
fn empty_wasi(stdout: &Capture, stderr: &Capture) -> WasiCtx {
    WasiCtxBuilder::new()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .build()
}

/// The memory limiter of one store: wasmtime's `StoreLimits`, remembering whether the memory
/// limit was what stopped the guest so the failure can be reported as such.
pub struct Limiter {
    limits: StoreLimits,
    memory_limit: usize,
    pub(crate) memory_exceeded: bool,
}

impl Limiter {
    fn new(memory_limit: usize) -> Self {
        Limiter {
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_limit)
                .instances(64)
                .tables(64)
                .memories(16)
                .table_elements(1 << 20)
                .trap_on_grow_failure(true)
                .build(),
            memory_limit,
            memory_exceeded: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_exceeded = true;
        }
        self.limits.memory_growing(current, desired, maximum)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl types::Host for HostState {}

impl imports::Host for HostState {
    fn log(&mut self, level: types::Level, message: String) -> wasmtime::Result<()> {
        if self.logs_left == 0 {
            self.logs_dropped += 1;
            return Ok(());
        }
        self.logs_left -= 1;
        let message = truncate(&message, LOG_LINE_MAX);
        let plugin = &*self.ctx.name;
        match level {
            types::Level::Trace => tracing::trace!(plugin, "{message}"),
            types::Level::Debug => tracing::debug!(plugin, "{message}"),
            types::Level::Info => tracing::info!(plugin, "{message}"),
            types::Level::Warn => tracing::warn!(plugin, "{message}"),
            types::Level::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }

    fn config(&mut self) -> wasmtime::Result<String> {
        Ok(self.ctx.config.clone())
    }

    fn regex_find(
        &mut self,
        pattern: u32,
        text: String,
        limit: u32,
    ) -> wasmtime::Result<Vec<types::Span>> {
        // An unknown pattern is a guest bug; answering "no match" could let data through
        // unmasked, so it traps (and the failure policy applies).
        let Some(regex) = self.ctx.patterns.get(pattern as usize) else {
            wasmtime::bail!(
                "regex-find: pattern {pattern} was not declared (the plugin declared {})",
                self.ctx.patterns.len()
            );
        };
        let limit = limit.min(REGEX_MATCHES_MAX) as usize;
        Ok(regex
            .find_iter(&text)
            .take(limit)
            .map(|m| types::Span {
                start: m.start() as u32,
                end: m.end() as u32,
            })
            .collect())
    }

    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0))
    }

    fn counter_add(&mut self, name: String, delta: u64) -> wasmtime::Result<()> {
        let mut counters = self
            .ctx
            .counters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if counters.len() >= COUNTERS_MAX && !counters.contains_key(&name) {
            return Ok(());
        }
        let name = truncate(&name, 64).into_owned();
        let value = counters.entry(name).or_insert(0);
        *value = value.saturating_add(delta);
        Ok(())
    }
}

impl imports::HostHeaders for HostState {
    fn get(
        &mut self,
        headers: Resource<HeaderView>,
        name: String,
    ) -> wasmtime::Result<Option<String>> {
        let view = self.table.get(&headers)?;
        Ok(view
            .0
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_string))
    }

    fn get_all(
        &mut self,
        headers: Resource<HeaderView>,
        name: String,
    ) -> wasmtime::Result<Vec<String>> {
        let view = self.table.get(&headers)?;
        Ok(view
            .0
            .get_all(name.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect())
    }

    fn names(&mut self, headers: Resource<HeaderView>) -> wasmtime::Result<Vec<String>> {
        let view = self.table.get(&headers)?;
        Ok(view.0.keys().map(|k| k.as_str().to_string()).collect())
    }

    fn drop(&mut self, headers: Resource<HeaderView>) -> wasmtime::Result<()> {
        self.table.delete(headers)?;
        Ok(())
    }
}

impl imports::HostBody for HostState {
    fn size(&mut self, body: Resource<BodyView>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&body)?.0.len() as u64)
    }

    fn read(
        &mut self,
        body: Resource<BodyView>,
        offset: u64,
        len: u32,
    ) -> wasmtime::Result<Vec<u8>> {
        let bytes = &self.table.get(&body)?.0;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let end = start.saturating_add(len as usize).min(bytes.len());
        Ok(bytes[start..end].to_vec())
    }

    fn text(&mut self, body: Resource<BodyView>) -> wasmtime::Result<Result<String, String>> {
        let bytes = &self.table.get(&body)?.0;
        Ok(std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|e| format!("body is not UTF-8: {e}")))
    }

    fn drop(&mut self, body: Resource<BodyView>) -> wasmtime::Result<()> {
        self.table.delete(body)?;
        Ok(())
    }
}

/// Cut `s` to at most `max` bytes on a character boundary.
fn truncate(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes cut)", &s[..end], s.len() - end).into()
}

/// A guest's stdout or stderr: kept in memory up to `STDIO_MAX` bytes per call (the rest is
/// counted and dropped, never an error to the guest), then logged by `end_call`.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<CaptureBuf>>);

#[derive(Default)]
struct CaptureBuf {
    bytes: Vec<u8>,
    dropped: usize,
}

impl Capture {
    fn push(&self, bytes: &[u8]) {
        let mut buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let room = STDIO_MAX.saturating_sub(buf.bytes.len());
        let kept = room.min(bytes.len());
        buf.bytes.extend_from_slice(&bytes[..kept]);
        buf.dropped += bytes.len() - kept;
    }

    fn take(&self) -> Option<(String, usize)> {
        let mut buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if buf.bytes.is_empty() && buf.dropped == 0 {
            return None;
        }
        let text = String::from_utf8_lossy(&buf.bytes).trim_end().to_string();
        let dropped = buf.dropped;
        *buf = CaptureBuf::default();
        Some((text, dropped))
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h… (5 bytes cut)");
        assert_eq!(truncate("abc", 3), "abc");
    }

    #[test]
    fn capture_keeps_a_bounded_prefix_and_counts_the_rest() {
        let c = Capture::default();
        c.push(&vec![b'a'; STDIO_MAX + 10]);
        let (text, dropped) = c.take().unwrap();
        assert_eq!(text.len(), STDIO_MAX);
        assert_eq!(dropped, 10);
        assert!(c.take().is_none());
    }
}
