//! One loaded plugin version and how its hooks are called: a fresh sandboxed instance per
//! call (or a reused one in `reuse` mode), under a deadline and a memory limit, with every
//! verdict checked against the contract before anyone acts on it.
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime::Store;
use wasmtime::component::Resource;

use super::bindings::{Policy, PolicyPre};
use super::contract::{self, Stage};
use super::host::{BodyView, HeaderView, HostState, PluginContext};
use super::{
    Descriptor, Hook, InstanceMode, PluginEngine, PluginError, PluginId, PluginSettings, Request,
    RequestVerdict, ResponseVerdict,
};

/// A plugin version, ready to be called.
pub struct Plugin {
    id: Arc<PluginId>,
    descriptor: Descriptor,
    settings: PluginSettings,
    ctx: Arc<PluginContext>,
    engine: PluginEngine,
    pre: PolicyPre<HostState>,
    deadline_ticks: u64,
    /// Idle instances in `reuse` mode, with the calls each has served.
    idle: Mutex<Vec<Warm>>,
}

struct Warm {
    store: Store<HostState>,
    policy: Policy,
    calls: u32,
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
        let deadline_ticks = PluginEngine::deadline_ticks(settings.timeout);
        Plugin {
            id,
            descriptor,
            settings,
            ctx,
            engine,
            pre,
            deadline_ticks,
            idle: Mutex::new(Vec::new()),
        }
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

    /// The counters the plugin has added to.
    pub fn counters(&self) -> Vec<(String, u64)> {
        let counters = self.ctx.counters.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = counters.iter().map(|(k, v)| (k.clone(), *v)).collect();
        all.sort();
        all
    }

    /// `describe`, in a fresh instance.
    pub(crate) fn describe(&self) -> Result<Descriptor, PluginError> {
        self.call(Hook::Describe, |store, policy| {
            policy.portcullis_policy_plugin().call_describe(store)
        })
    }

    /// `configure` with the plugin's configuration, in a fresh instance.
    pub(crate) fn configure(&self) -> Result<(), PluginError> {
        let config = self.ctx.config.clone();
        let result = self.call(Hook::Configure, |store, policy| {
            policy
                .portcullis_policy_plugin()
                .call_configure(store, &config)
        })?;
        result.map_err(|reason| PluginError::Configure {
            plugin: self.id.clone(),
            reason: truncate(reason),
        })
    }

    /// The headers-only request hook.
    pub fn on_request(
        &self,
        req: &Request,
        headers: &Arc<http::HeaderMap>,
    ) -> Result<RequestVerdict, PluginError> {
        let verdict = self.call(Hook::OnRequest, |store, policy| {
            let h = store.data_mut().table.push(HeaderView(headers.clone()))?;
            let borrowed = Resource::new_borrow(h.rep());
            let verdict =
                policy
                    .portcullis_policy_plugin()
                    .call_on_request(&mut *store, req, borrowed);
            store.data_mut().table.delete(h)?;
            verdict
        })?;
        self.checked(
            Hook::OnRequest,
            contract::check_request_verdict(&verdict, &self.descriptor, Stage::Headers),
        )?;
        Ok(verdict)
    }

    /// The request hook with the body the plugin asked for.
    pub fn on_request_body(
        &self,
        req: &Request,
        headers: &Arc<http::HeaderMap>,
        body: Bytes,
    ) -> Result<RequestVerdict, PluginError> {
        let verdict = self.call(Hook::OnRequestBody, |store, policy| {
            let h = store.data_mut().table.push(HeaderView(headers.clone()))?;
            let b = store.data_mut().table.push(BodyView(body))?;
            let verdict = policy.portcullis_policy_plugin().call_on_request_body(
                &mut *store,
                req,
                Resource::new_borrow(h.rep()),
                Resource::new_borrow(b.rep()),
            );
            store.data_mut().table.delete(h)?;
            store.data_mut().table.delete(b)?;
            verdict
        })?;
        self.checked(
            Hook::OnRequestBody,
            contract::check_request_verdict(&verdict, &self.descriptor, Stage::Body),
        )?;
        Ok(verdict)
    }

    /// The headers-only response hook.
    pub fn on_response(
        &self,
        req: &Request,
        status: u16,
        headers: &Arc<http::HeaderMap>,
    ) -> Result<ResponseVerdict, PluginError> {
        let verdict = self.call(Hook::OnResponse, |store, policy| {
            let h = store.data_mut().table.push(HeaderView(headers.clone()))?;
            let verdict = policy.portcullis_policy_plugin().call_on_response(
                &mut *store,
                req,
                status,
                Resource::new_borrow(h.rep()),
            );
            store.data_mut().table.delete(h)?;
            verdict
        })?;
        self.checked(
            Hook::OnResponse,
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
    pub fn on_response_body(
        &self,
        req: &Request,
        status: u16,
        headers: &Arc<http::HeaderMap>,
        body: Bytes,
    ) -> Result<ResponseVerdict, PluginError> {
        let verdict = self.call(Hook::OnResponseBody, |store, policy| {
            let h = store.data_mut().table.push(HeaderView(headers.clone()))?;
            let b = store.data_mut().table.push(BodyView(body))?;
            let verdict = policy.portcullis_policy_plugin().call_on_response_body(
                &mut *store,
                req,
                status,
                Resource::new_borrow(h.rep()),
                Resource::new_borrow(b.rep()),
            );
            store.data_mut().table.delete(h)?;
            store.data_mut().table.delete(b)?;
            verdict
        })?;
        self.checked(
            Hook::OnResponseBody,
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

    /// Run `f` in an instance under the plugin's deadline. In `fresh` mode the instance is
    /// dropped afterwards; in `reuse` mode it goes back to the idle list unless it failed or
    /// has served its calls. Any failure is classified and names the plugin.
    fn call<R>(
        &self,
        hook: Hook,
        f: impl FnOnce(&mut Store<HostState>, &Policy) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        // Load-time hooks always run in an instance of their own that serves no traffic.
        let load_time = matches!(hook, Hook::Describe | Hook::Configure);
        let idle = if load_time { None } else { self.take_idle() };
        let mut warm = match idle {
            Some(warm) => warm,
            None => self.instantiate(hook)?,
        };
        let store = &mut warm.store;
        store.set_epoch_deadline(self.deadline_ticks);
        store.data_mut().begin_call();
        let result = f(store, &warm.policy);
        store.data_mut().end_call();
        match result {
            Ok(value) => {
                warm.calls += 1;
                if !load_time {
                    self.give_back(warm);
                }
                Ok(value)
            }
            Err(e) => Err(self.classify(hook, e, warm.store.data().limiter.memory_exceeded)),
        }
    }

    fn instantiate(&self, hook: Hook) -> Result<Warm, PluginError> {
        let memory_limit = usize::try_from(self.settings.memory_limit).unwrap_or(usize::MAX);
        let mut store = Store::new(
            self.engine.engine(),
            HostState::new(self.ctx.clone(), memory_limit),
        );
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(self.deadline_ticks);
        match self.pre.instantiate(&mut store) {
            Ok(policy) => Ok(Warm {
                store,
                policy,
                calls: 0,
            }),
            Err(e) => {
                let memory = store.data().limiter.memory_exceeded;
                if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                    .is_some()
                {
                    Err(PluginError::Capacity {
                        plugin: self.id.clone(),
                        hook,
                        reason: format!("{e:#}"),
                    })
                } else {
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

    fn give_back(&self, warm: Warm) {
        if let InstanceMode::Reuse { calls } = self.settings.instance
            && warm.calls < calls
        {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(warm);
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
