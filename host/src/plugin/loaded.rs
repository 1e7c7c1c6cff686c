//! One loaded plugin version and how its hooks are called: a fresh sandboxed instance per
//! request (or a reused one in `reuse` mode), under a deadline and a memory limit, with every
//! verdict checked against the contract before anyone acts on it. Calls are async: a guest
//! yields to the runtime at every epoch tick and is stopped at its deadline.
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime::component::{ComponentExportIndex, Instance, Resource, TypedFunc};
use wasmtime::{Store, UpdateDeadline};

use super::bindings::PolicyPre;
use super::contract::{self, Stage};
use super::engine::{Hold, Ticking};
use super::host::{HostState, PluginContext};
use super::{
    Descriptor, Hook, InstanceMode, Phases, PluginEngine, PluginError, PluginId, PluginSettings,
    Request, RequestVerdict, ResponseVerdict,
};

/// A plugin version, ready to be called.
pub struct Plugin {
    id: Arc<PluginId>,
    descriptor: Descriptor,
    settings: PluginSettings,
    ctx: Arc<PluginContext>,
    engine: PluginEngine,
    pre: PolicyPre<HostState>,
    /// Where each hook is in the component, looked up once per version (`None` only if the
    /// component lacks one, which `PolicyPre::new` already refused: every call then fails).
    exports: Option<Exports>,
    /// Idle instances in `reuse` mode, with the calls each has served.
    idle: Mutex<Vec<Warm>>,
    /// When it was loaded.
    loaded_at: std::time::SystemTime,
}

struct Warm {
    store: Store<HostState>,
    instance: Instance,
    calls: u32,
    /// The engine's leave to keep this instance between the hooks of one request.
    hold: Option<Hold>,
    /// Set while a call runs in the instance: keeps the engine's epoch advancing.
    ticking: Option<Ticking>,
}

/// The instance a plugin keeps for the rest of one request, so that a request costs one
/// instantiation per plugin, not one per hook. In the default (`fresh`) mode a request's first
/// call into a plugin gets a new instance and the same request's later hooks run in it; it is
/// dropped with the request, so no two requests ever share an instance. Make one per plugin per
/// request (`Held::default()`); a call given a new `Held` runs in an instance of its own.
///
/// An instance is kept only while the plugin declares a later phase, and only while fewer than
/// half the pool's instances are kept this way; otherwise it is dropped after its call, and the
/// next hook of the request gets a new one. A failed call's instance is always dropped.
#[derive(Default)]
pub struct Held(Option<Warm>);

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Held(instance)"
        } else {
            "Held(none)"
        })
    }
}

/// The export index of each hook, found once per version (`PolicyPre::new` has already checked
/// that every hook is there with the contract's signature), so a call looks up only the one
/// function it calls.
struct Exports {
    describe: ComponentExportIndex,
    configure: ComponentExportIndex,
    on_request: ComponentExportIndex,
    on_request_body: ComponentExportIndex,
    on_response: ComponentExportIndex,
    on_response_body: ComponentExportIndex,
}

impl Exports {
    fn new(pre: &PolicyPre<HostState>) -> Option<Self> {
        let component = pre.instance_pre().component();
        let iface = component.get_export_index(None, contract::PLUGIN_EXPORT)?;
        let func = |name: &str| component.get_export_index(Some(&iface), name);
        Some(Exports {
            describe: func("describe")?,
            configure: func("configure")?,
            on_request: func("on-request")?,
            on_request_body: func("on-request-body")?,
            on_response: func("on-response")?,
            on_response_body: func("on-response-body")?,
        })
    }
}

type H = Resource<super::host::HeaderView>;
type B = Resource<super::host::BodyView>;

impl Warm {
    /// The hook at `index` as a typed function of this instance: one export looked up and
    /// type-checked against `Params`/`Results` (the signature `bindgen!` gives the hook), where
    /// `PolicyPre::instantiate_async` looks up and type-checks all six on every instance.
    fn hook<Params, Results>(
        &mut self,
        index: Option<&ComponentExportIndex>,
    ) -> wasmtime::Result<TypedFunc<Params, Results>>
    where
        Params: wasmtime::component::ComponentNamedList + wasmtime::component::Lower,
        Results: wasmtime::component::ComponentNamedList + wasmtime::component::Lift,
    {
        let index =
            index.ok_or_else(|| wasmtime::format_err!("the plugin lacks a contract export"))?;
        self.instance.get_typed_func(&mut self.store, index)
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("id", &self.id)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    pub(crate) fn new(
        id: Arc<PluginId>,
        descriptor: Descriptor,
        settings: PluginSettings,
        ctx: Arc<PluginContext>,
        engine: PluginEngine,
        pre: PolicyPre<HostState>,
    ) -> Self {
        let exports = Exports::new(&pre);
        Plugin {
            id,
            descriptor,
            settings,
            ctx,
            engine,
            pre,
            exports,
            idle: Mutex::new(Vec::new()),
            loaded_at: std::time::SystemTime::now(),
        }
    }

    /// When this version was loaded.
    pub fn loaded_at(&self) -> std::time::SystemTime {
        self.loaded_at
    }

    /// The operator's configuration it was loaded with, as JSON text.
    pub fn config_text(&self) -> &str {
        &self.ctx.config
    }

    /// Name, version and sha256.
    pub fn id(&self) -> &Arc<PluginId> {
        &self.id
    }

    /// What the plugin declared about itself.
    pub fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    /// Limits, failure policy, instance mode.
    pub fn settings(&self) -> &PluginSettings {
        &self.settings
    }

    /// The patterns the plugin declared, compiled by the host (mask plans refer to them).
    pub fn patterns(&self) -> &[regex::Regex] {
        &self.ctx.patterns
    }

    /// The counters the plugin has added to.
    pub fn counters(&self) -> Vec<(String, u64)> {
        let counters = self.ctx.counters.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = counters.iter().map(|(k, v)| (k.clone(), *v)).collect();
        all.sort();
        all
    }

    /// `describe`, in an instance of its own.
    pub(crate) async fn describe(&self) -> Result<Descriptor, PluginError> {
        let hook = Hook::Describe;
        let mut warm = self.acquire(hook, &mut Held::default()).await?;
        let result = async {
            let f = warm.hook::<(), (Descriptor,)>(self.exports.as_ref().map(|e| &e.describe))?;
            Ok(f.call_async(&mut warm.store, ()).await?.0)
        }
        .await;
        self.release(hook, warm, &mut Held::default(), result)
    }

    /// `configure` with the plugin's configuration, in an instance of its own.
    pub(crate) async fn configure(&self) -> Result<(), PluginError> {
        let hook = Hook::Configure;
        let mut warm = self.acquire(hook, &mut Held::default()).await?;
        let result = async {
            let f = warm.hook::<(&str,), (Result<(), String>,)>(
                self.exports.as_ref().map(|e| &e.configure),
            )?;
            Ok(f.call_async(&mut warm.store, (&self.ctx.config,)).await?.0)
        }
        .await;
        self.release(hook, warm, &mut Held::default(), result)?
            .map_err(|reason| PluginError::Configure {
                plugin: self.id.clone(),
                reason: truncate(reason),
            })
    }

    /// The headers-only request hook.
    pub async fn on_request(
        &self,
        held: &mut Held,
        req: &Request,
        headers: &Arc<http::HeaderMap>,
    ) -> Result<RequestVerdict, PluginError> {
        let hook = Hook::OnRequest;
        let mut warm = self.acquire(hook, held).await?;
        let result = async {
            let lent = warm.store.data_mut().lend(headers, None)?;
            let verdict = async {
                let f = warm.hook::<(&Request, H), (RequestVerdict,)>(
                    self.exports.as_ref().map(|e| &e.on_request),
                )?;
                Ok(f.call_async(&mut warm.store, (req, lent.headers()))
                    .await?
                    .0)
            }
            .await;
            warm.store.data_mut().take_back(lent)?;
            verdict
        }
        .await;
        let verdict = self.release(hook, warm, held, result)?;
        self.checked(
            hook,
            contract::check_request_verdict(&verdict, &self.descriptor, Stage::Headers),
        )?;
        Ok(verdict)
    }

    /// The request hook with the body the plugin asked for.
    pub async fn on_request_body(
        &self,
        held: &mut Held,
        req: &Request,
        headers: &Arc<http::HeaderMap>,
        body: Bytes,
    ) -> Result<RequestVerdict, PluginError> {
        let hook = Hook::OnRequestBody;
        let mut warm = self.acquire(hook, held).await?;
        let result = async {
            let lent = warm.store.data_mut().lend(headers, Some(body))?;
            let verdict = async {
                let f = warm.hook::<(&Request, H, B), (RequestVerdict,)>(
                    self.exports.as_ref().map(|e| &e.on_request_body),
                )?;
                let args = (req, lent.headers(), lent.body()?);
                Ok(f.call_async(&mut warm.store, args).await?.0)
            }
            .await;
            warm.store.data_mut().take_back(lent)?;
            verdict
        }
        .await;
        let verdict = self.release(hook, warm, held, result)?;
        self.checked(
            hook,
            contract::check_request_verdict(&verdict, &self.descriptor, Stage::Body),
        )?;
        Ok(verdict)
    }

    /// The headers-only response hook.
    pub async fn on_response(
        &self,
        held: &mut Held,
        req: &Request,
        status: u16,
        headers: &Arc<http::HeaderMap>,
    ) -> Result<ResponseVerdict, PluginError> {
        let hook = Hook::OnResponse;
        let mut warm = self.acquire(hook, held).await?;
        let result = async {
            let lent = warm.store.data_mut().lend(headers, None)?;
            let verdict = async {
                let f = warm.hook::<(&Request, u16, H), (ResponseVerdict,)>(
                    self.exports.as_ref().map(|e| &e.on_response),
                )?;
                let args = (req, status, lent.headers());
                Ok(f.call_async(&mut warm.store, args).await?.0)
            }
            .await;
            warm.store.data_mut().take_back(lent)?;
            verdict
        }
        .await;
        let verdict = self.release(hook, warm, held, result)?;
        self.checked(
            hook,
            contract::check_response_verdict(
                &verdict,
                &self.descriptor,
                self.ctx.patterns.len(),
                Stage::Headers,
            ),
        )?;
        Ok(verdict)
    }

    /// The response hook with the body the plugin asked for.
    pub async fn on_response_body(
        &self,
        held: &mut Held,
        req: &Request,
        status: u16,
        headers: &Arc<http::HeaderMap>,
        body: Bytes,
    ) -> Result<ResponseVerdict, PluginError> {
        let hook = Hook::OnResponseBody;
        let mut warm = self.acquire(hook, held).await?;
        let result = async {
            let lent = warm.store.data_mut().lend(headers, Some(body))?;
            let verdict = async {
                let f = warm.hook::<(&Request, u16, H, B), (ResponseVerdict,)>(
                    self.exports.as_ref().map(|e| &e.on_response_body),
                )?;
                let args = (req, status, lent.headers(), lent.body()?);
                Ok(f.call_async(&mut warm.store, args).await?.0)
            }
            .await;
            warm.store.data_mut().take_back(lent)?;
            verdict
        }
        .await;
        let verdict = self.release(hook, warm, held, result)?;
        self.checked(
            hook,
            contract::check_response_verdict(
                &verdict,
                &self.descriptor,
                self.ctx.patterns.len(),
                Stage::Body,
            ),
        )?;
        Ok(verdict)
    }

    fn checked(&self, hook: Hook, check: Result<(), String>) -> Result<(), PluginError> {
        check.map_err(|reason| PluginError::Verdict {
            plugin: self.id.clone(),
            hook,
            reason,
        })
    }

    /// An instance for one call, with the call's deadline armed: the one this request holds,
    /// an idle one in `reuse` mode, else a new one. Load-time hooks always get an instance of
    /// their own.
    async fn acquire(&self, hook: Hook, held: &mut Held) -> Result<Warm, PluginError> {
        let idle = if is_load_time(hook) {
            None
        } else {
            held.0.take().or_else(|| self.take_idle())
        };
        let mut warm = match idle {
            Some(warm) => warm,
            None => self.instantiate(hook).await?,
        };
        // A new instance is already ticking (since its instantiation); an idle one starts now.
        warm.ticking.get_or_insert_with(|| self.engine.ticking());
        warm.store.data_mut().begin_call(self.settings.timeout);
        warm.store.set_epoch_deadline(1);
        Ok(warm)
    }

    /// End a call: log what the guest printed; on success keep the instance for the request's
    /// later hooks (`fresh`) or return it to the idle list (`reuse`, unless it has served its
    /// calls); on failure drop the instance and classify the failure, naming the plugin.
    fn release<R>(
        &self,
        hook: Hook,
        mut warm: Warm,
        held: &mut Held,
        result: wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        warm.store.data_mut().end_call();
        warm.ticking = None;
        match result {
            Ok(value) => {
                warm.calls += 1;
                if !is_load_time(hook) {
                    self.give_back(hook, warm, held);
                }
                Ok(value)
            }
            Err(e) => Err(self.classify(hook, e, warm.store.data().limiter.memory_exceeded)),
        }
    }

    async fn instantiate(&self, hook: Hook) -> Result<Warm, PluginError> {
        let memory_limit = usize::try_from(self.settings.memory_limit).unwrap_or(usize::MAX);
        let mut store = Store::new(
            self.engine.engine(),
            HostState::new(self.ctx.clone(), memory_limit),
        );
        store.limiter(|state| &mut state.limiter);
        // At every epoch tick: yield to the runtime so a long call never holds a worker
        // thread, and stop the call with `Trap::Interrupt` once its deadline has passed.
        store.epoch_deadline_callback(|mut ctx| {
            if ctx.data().overdue() {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::YieldCustom(1, ctx.data_mut().yield_now()))
            }
        });
        let ticking = self.engine.ticking();
        store.data_mut().begin_call(self.settings.timeout);
        store.set_epoch_deadline(1);
        match self.pre.instance_pre().instantiate_async(&mut store).await {
            Ok(instance) => Ok(Warm {
                store,
                instance,
                calls: 0,
                hold: None,
                ticking: Some(ticking),
            }),
            Err(e) => {
                if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                    .is_some()
                {
                    Err(PluginError::Capacity {
                        plugin: self.id.clone(),
                        hook,
                        reason: format!("{e:#}"),
                    })
                } else {
                    let memory = store.data().limiter.memory_exceeded;
                    Err(self.classify(hook, e, memory))
                }
            }
        }
    }

    fn take_idle(&self) -> Option<Warm> {
        match self.settings.instance {
            InstanceMode::Fresh => None,
            InstanceMode::Reuse { .. } => self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop(),
        }
    }

    /// After a successful call: keep a fresh instance for the request's later hooks, if the
    /// plugin declares any and the engine allows one more kept instance; put a reused one back.
    fn give_back(&self, hook: Hook, mut warm: Warm, held: &mut Held) {
        match self.settings.instance {
            InstanceMode::Fresh => {
                if !self.descriptor.phases.intersects(later_phases(hook)) {
                    return;
                }
                if warm.hold.is_none() {
                    warm.hold = self.engine.hold();
                }
                if warm.hold.is_some() {
                    held.0 = Some(warm);
                }
            }
            InstanceMode::Reuse { calls } => {
                if warm.calls < calls {
                    self.idle
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(warm);
                }
            }
        }
    }

    fn classify(&self, hook: Hook, e: wasmtime::Error, memory_exceeded: bool) -> PluginError {
        let plugin = self.id.clone();
        if memory_exceeded {
            return PluginError::Memory {
                plugin,
                hook,
                limit: self.settings.memory_limit,
            };
        }
        if let Some(wasmtime::Trap::Interrupt) = e.downcast_ref::<wasmtime::Trap>() {
            return PluginError::Timeout {
                plugin,
                hook,
                timeout: self.settings.timeout,
            };
        }
        PluginError::Trap {
            plugin,
            hook,
            reason: truncate(format!("{e:#}")),
        }
    }
}

fn is_load_time(hook: Hook) -> bool {
    matches!(hook, Hook::Describe | Hook::Configure)
}

/// The phases whose hooks a request may call after `hook`.
fn later_phases(hook: Hook) -> Phases {
    match hook {
        Hook::OnRequest => Phases::REQUEST_BODY | Phases::RESPONSE_HEADERS | Phases::RESPONSE_BODY,
        Hook::OnRequestBody => Phases::RESPONSE_HEADERS | Phases::RESPONSE_BODY,
        Hook::OnResponse => Phases::RESPONSE_BODY,
        Hook::Describe | Hook::Configure | Hook::OnResponseBody => Phases::empty(),
    }
}

/// Keep guest-provided or trap text short in errors and logs.
fn truncate(mut s: String) -> String {
    const MAX: usize = 512;
    if s.len() > MAX {
        let mut end = MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}
