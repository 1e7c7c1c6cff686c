//! The shared wasmtime engine: pooling allocator, epoch ticker, the locked-down linker, and
//! the cache of compiled components keyed by plugin sha256.
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::PluginError;
use super::bindings::{Policy, PolicyPre};
use super::host::HostState;

/// Engine-wide settings (the `[engine]` table of the configuration).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Plugin instances alive at once, across all plugins (the pool's size).
    pub max_instances: u32,
    /// The largest linear memory any plugin may be given, in bytes.
    pub max_memory: u64,
    /// Where compiled components are kept across restarts; `None`: memory only.
    pub cache_dir: Option<PathBuf>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            max_instances: 1000,
            max_memory: 256 << 20,
            cache_dir: None,
        }
    }
}

/// The epoch tick: deadlines are measured in these.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The engine every plugin version runs on. Cheap to clone.
#[derive(Clone)]
pub struct PluginEngine {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    settings: EngineSettings,
    /// Compiled components by sha256 of the plugin file: a reload of an unchanged file and a
    /// second route using the same file compile nothing.
    compiled: Mutex<HashMap<String, Component>>,
    /// Hash of everything that makes a compiled artifact usable by this engine.
    compat: String,
    ticker: Ticker,
    /// Instances kept between the hooks of one request (see `Hold`), and how many may be.
    held: AtomicU32,
    max_held: u32,
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl PluginEngine {
    /// Build the engine: component model, epoch interruption, pooling allocator with
    /// copy-on-write memory images, and a linker with only the contract's host interface and
    /// an empty WASI sandbox.
    pub fn new(settings: EngineSettings) -> Result<Self, PluginError> {
        let engine_error = |e: wasmtime::Error| PluginError::Engine(format!("{e:#}"));
        let mut pool = PoolingAllocationConfig::new();
        let instances = settings.max_instances.max(1);
        pool.total_component_instances(instances)
            // Components built for wasip2 carry a few adapter modules (with tables) per plugin.
            .total_core_instances(instances.saturating_mul(8))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(8))
            .max_memory_size(usize::try_from(settings.max_memory).unwrap_or(usize::MAX))
            .table_elements(100_000)
            .max_core_instance_size(4 << 20)
            .max_component_instance_size(4 << 20)
            // Each call runs on a fiber stack from the pool (calls are async); keeping the top
            // of each stack resident spares the page faults of the next call.
            .total_stacks(instances)
            .async_stack_keep_resident(64 << 10)
            // Measured (BENCHMARKS.md): after a short-lived instance, restoring only the pages
            // it dirtied (found with the PAGEMAP_SCAN ioctl, Linux 6.7+, used when available)
            // within a resident prefix beats both memset of the prefix and returning every
            // page to the kernel: 50 µs -> 21 µs per fresh call on this machine class.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(64 << 10);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .memory_init_cow(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(engine_error)?;

        let mut linker = Linker::new(&engine);
        // Async WASI: its I/O interfaces are futures on the gateway's runtime. (The sync flavour
        // blocks on a runtime of its own and panics when called from a runtime worker.)
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_error)?;
        Policy::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |state| state,
        )
        .map_err(engine_error)?;

        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let compat = format!("{:016x}", hasher.finish());
        let ticker = Ticker::start(engine.clone())
            .map_err(|e| PluginError::Engine(format!("cannot start the epoch thread: {e}")))?;
        Ok(PluginEngine {
            inner: Arc::new(Inner {
                engine,
                linker,
                settings,
                compiled: Mutex::new(HashMap::new()),
                compat,
                ticker,
                held: AtomicU32::new(0),
                // Half the pool: the other half always serves calls, so holding instances
                // across upstream round trips can never starve a request of one.
                max_held: instances / 2,
            }),
        })
    }

    /// The settings this engine was built with.
    pub fn settings(&self) -> &EngineSettings {
        &self.inner.settings
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Mark a guest call in flight for as long as the guard lives: the epoch (and so every
    /// deadline) advances only while at least one is, and an idle gateway's ticker sleeps.
    pub(crate) fn ticking(&self) -> Ticking {
        self.inner.ticker.begin();
        Ticking {
            engine: self.clone(),
        }
    }

    /// Epoch ticks so far (observability and tests).
    pub fn ticks(&self) -> u64 {
        self.inner.ticker.shared.ticks.load(Ordering::SeqCst)
    }

    /// Leave to keep one instance between the hooks of a request, while fewer than half the
    /// pool's instances are kept that way; `None` when that many already are.
    pub(crate) fn hold(&self) -> Option<Hold> {
        let held = &self.inner.held;
        if held.fetch_add(1, Ordering::Relaxed) >= self.inner.max_held {
            held.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Hold {
            engine: self.clone(),
        })
    }

    /// Compile a plugin file's bytes (or take them from the cache) and prepare it for fast
    /// instantiation. Blocking and CPU-heavy: call from `spawn_blocking`, never on a reactor.
    /// `file` only names the plugin in errors. Returns the prepared component and its sha256.
    pub(crate) fn prepare(
        &self,
        file: &str,
        bytes: &[u8],
    ) -> Result<(PolicyPre<HostState>, String), PluginError> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let component = self.compile(file, &sha256, bytes)?;
        super::contract::check_exports(self.engine(), file, &component)?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| PluginError::Link {
                file: file.to_string(),
                reason: format!("{e:#}"),
            })?;
        let pre = PolicyPre::new(pre).map_err(|e| PluginError::Contract {
            file: file.to_string(),
            reason: format!("{e:#}"),
        })?;
        Ok((pre, sha256))
    }

    fn compile(&self, file: &str, sha256: &str, bytes: &[u8]) -> Result<Component, PluginError> {
        let cached = self.lock_compiled().get(sha256).cloned();
        if let Some(component) = cached {
            return Ok(component);
        }
        let component = match self.read_disk_cache(sha256) {
            Some(component) => component,
            None => {
                super::contract::check_is_component(file, bytes)?;
                let component =
                    Component::new(self.engine(), bytes).map_err(|e| PluginError::Invalid {
                        file: file.to_string(),
                        reason: format!("{e:#}"),
                    })?;
                self.write_disk_cache(sha256, &component);
                component
            }
        };
        self.lock_compiled()
            .insert(sha256.to_string(), component.clone());
        Ok(component)
    }

    fn lock_compiled(&self) -> std::sync::MutexGuard<'_, HashMap<String, Component>> {
        self.inner
            .compiled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cache_path(&self, sha256: &str) -> Option<PathBuf> {
        let dir = self.inner.settings.cache_dir.as_ref()?;
        Some(dir.join(format!("{sha256}-{}.cwasm", self.inner.compat)))
    }

    /// A compiled artifact from the disk cache, if present and loadable.
    #[allow(unsafe_code)]
    fn read_disk_cache(&self, sha256: &str) -> Option<Component> {
        let path = self.cache_path(sha256)?;
        if !path.is_file() {
            return None;
        }
        // SAFETY: `deserialize_file` runs the file's machine code. The cache directory holds
        // only artifacts this gateway compiled (written through a temporary file and an atomic
        // rename), named by the source's sha256 and this engine's compatibility hash; the
        // operator must protect it like the gateway binary itself (see README, "Plugin cache").
        match unsafe { Component::deserialize_file(self.engine(), &path) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable cached plugin artifact");
                None
            }
        }
    }

    fn write_disk_cache(&self, sha256: &str, component: &Component) {
        let Some(path) = self.cache_path(sha256) else {
            return;
        };
        let result = component
            .serialize()
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                let dir = path.parent().unwrap_or(std::path::Path::new("."));
                std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
                let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| e.to_string())?;
                std::io::Write::write_all(&mut tmp, &bytes).map_err(|e| e.to_string())?;
                tmp.persist(&path).map_err(|e| e.to_string())?;
                Ok(())
            });
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "could not write plugin artifact cache");
        }
    }
}

/// Leave from the engine to keep one instance alive between the hooks of one request,
/// returned when dropped. It bounds how many pool slots requests can keep across their
/// upstream round trips.
pub(crate) struct Hold {
    engine: PluginEngine,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.engine.inner.held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A guest call in flight (see `PluginEngine::ticking`), ended when dropped.
pub(crate) struct Ticking {
    engine: PluginEngine,
}

impl Drop for Ticking {
    fn drop(&mut self) {
        self.engine.inner.ticker.end();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ticker.stop();
    }
}

/// The thread that advances the engine's epoch every `EPOCH_TICK` while a guest call is in
/// flight, so deadlines fire; parked while none is, so an idle gateway does not wake a
/// thousand times a second.
struct Ticker {
    shared: Arc<TickerShared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct TickerShared {
    stop: AtomicBool,
    /// Guest calls in flight.
    calls: AtomicUsize,
    ticks: AtomicU64,
}

impl Ticker {
    /// Without this thread no deadline could fire, so failing to start it fails the engine.
    fn start(engine: Engine) -> std::io::Result<Self> {
        let shared = Arc::new(TickerShared::default());
        let state = shared.clone();
        let thread = std::thread::Builder::new()
            .name("portcullis-epoch".into())
            .spawn(move || {
                while !state.stop.load(Ordering::SeqCst) {
                    if state.calls.load(Ordering::SeqCst) == 0 {
                        // Woken by the first call to begin (`begin`) or by `stop`; a wake that
                        // came first is kept, so none is lost between the check and the park.
                        std::thread::park();
                        continue;
                    }
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                    state.ticks.fetch_add(1, Ordering::SeqCst);
                }
            })?;
        Ok(Ticker {
            shared,
            thread: Some(thread),
        })
    }

    /// A call begins: wake the thread if it was the only one.
    fn begin(&self) {
        if self.shared.calls.fetch_add(1, Ordering::SeqCst) == 0
            && let Some(thread) = &self.thread
        {
            thread.thread().unpark();
        }
    }

    /// A call ends (the thread parks at its next tick if it was the last).
    fn end(&self) {
        self.shared.calls.fetch_sub(1, Ordering::SeqCst);
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Instant;

    use super::*;

    /// Polls `ticks` until `done` says yes, for at most 10 s.
    fn eventually(engine: &PluginEngine, done: impl Fn(u64) -> bool) -> bool {
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if done(engine.ticks()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// Whether the epoch stood still for 50 ms at some point within 10 s.
    fn stands_still(engine: &PluginEngine) -> bool {
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            let before = engine.ticks();
            std::thread::sleep(Duration::from_millis(50));
            if engine.ticks() == before {
                return true;
            }
        }
        false
    }

    #[test]
    fn the_epoch_advances_only_while_a_call_is_in_flight() {
        let engine = PluginEngine::new(EngineSettings {
            max_instances: 4,
            ..EngineSettings::default()
        })
        .unwrap();
        assert_eq!(engine.ticks(), 0, "no call yet, no tick");
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(engine.ticks(), 0, "an idle engine does not tick");

        let first = engine.ticking();
        let second = engine.ticking();
        assert!(
            eventually(&engine, |t| t >= 3),
            "a call in flight makes it tick"
        );
        drop(first);
        let now = engine.ticks();
        assert!(
            eventually(&engine, |t| t >= now + 3),
            "it keeps ticking while any call is in flight"
        );
        drop(second);
        assert!(stands_still(&engine), "the last call's end stops it");

        let _third = engine.ticking();
        let now = engine.ticks();
        assert!(
            eventually(&engine, |t| t >= now + 3),
            "the next call wakes it again"
        );
    }
}
