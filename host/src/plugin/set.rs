//! The `PluginSet` (one generation of loaded plugins), the `Chain` of plugins a route runs, and
//! one request's `Exchange` through it: request and response phases in order, body only for
//! plugins that asked, failure policy applied, each plugin's instance kept for the request's
//! later hooks, and a trace of every step for the audit record.
use std::sync::Arc;

use bytes::Bytes;

use super::{
    Approval, Deny, FailurePolicy, HeaderEdit, Held, Hook, MaskPlan, Phases, Plugin, PluginError,
    PluginId, Replacement, Request, RequestVerdict, ResponseVerdict, contract,
};

/// One generation of loaded plugins. Immutable: a reload builds a new set, and a request
/// keeps the set it started with.
#[derive(Debug)]
pub struct PluginSet {
    plugins: Vec<Arc<Plugin>>,
    /// The name routes use for each plugin: its own, or the configuration's `alias`.
    names: Vec<String>,
    generation: u64,
}

impl PluginSet {
    /// A set of plugins known by their own names, numbered `generation`.
    pub fn new(plugins: Vec<Arc<Plugin>>, generation: u64) -> Self {
        let named = plugins
            .into_iter()
            .map(|p| (p.id().name.clone(), p))
            .collect();
        PluginSet::named(named, generation)
    }

    /// A set of plugins, each known to routes by the name paired with it.
    pub fn named(plugins: Vec<(String, Arc<Plugin>)>, generation: u64) -> Self {
        let (names, plugins) = plugins.into_iter().unzip();
        PluginSet {
            plugins,
            names,
            generation,
        }
    }

    /// Which load this is (increases with every successful reload).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every plugin, in configuration order.
    pub fn plugins(&self) -> &[Arc<Plugin>] {
        &self.plugins
    }

    /// A plugin by the name routes use for it.
    pub fn get(&self, name: &str) -> Option<&Arc<Plugin>> {
        let index = self.names.iter().position(|n| n == name)?;
        self.plugins.get(index)
    }

    /// The chain of these plugins, in this order.
    pub fn chain<S: AsRef<str>>(&self, names: &[S]) -> Result<Chain, PluginError> {
        let plugins = names
            .iter()
            .map(|n| {
                self.get(n.as_ref())
                    .cloned()
                    .ok_or_else(|| PluginError::Unknown(n.as_ref().to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Chain { plugins })
    }
}

/// An ordered list of plugins that decide a route's requests and responses.
#[derive(Debug, Clone)]
pub struct Chain {
    plugins: Vec<Arc<Plugin>>,
}

/// A plugin of the chain that asked for the body, and how much of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyWant {
    /// Position of the plugin in the chain.
    pub index: usize,
    /// Most bytes it asked for.
    pub limit: u64,
}

/// One plugin's part in a decision, for the audit record.
#[derive(Debug, Clone)]
pub struct Step {
    /// Which plugin version.
    pub plugin: Arc<PluginId>,
    /// Which hook.
    pub hook: Hook,
    /// What came of it.
    pub result: StepResult,
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepResult {
    /// The verdict's kind: `allow`, `need-body`, `deny`, `require-approval`, `modify`, `pass`,
    /// `mask`, `replace`, or `body-not-offered` (it asked for a body of a type it did not declare).
    Verdict(&'static str),
    /// The plugin failed and its policy is fail-open: it was skipped. The error names it.
    FailedOpen(String),
}

/// The request phase's decision.
#[derive(Debug, Clone)]
pub enum RequestDecision {
    /// No plugin objected (so far: body hooks may still run).
    Continue,
    /// A plugin refused the request.
    Deny {
        /// The plugin that denied.
        by: Arc<PluginId>,
        /// Its deny.
        deny: Deny,
    },
    /// A plugin asked for a human's approval.
    RequireApproval {
        /// The plugin that asked.
        by: Arc<PluginId>,
        /// What it asked for.
        approval: Approval,
    },
}

/// What the request phase produced.
#[derive(Debug, Clone)]
pub struct RequestOutcome {
    /// The decision.
    pub decision: RequestDecision,
    /// Header edits to apply before forwarding, in chain order.
    pub edits: Vec<HeaderEdit>,
    /// Plugins that asked for the body (header hook only).
    pub body_wants: Vec<BodyWant>,
    /// Every step taken.
    pub trace: Vec<Step>,
}

impl RequestOutcome {
    /// The most body any plugin asked for: what the request path must buffer.
    pub fn body_limit(&self) -> Option<u64> {
        self.body_wants.iter().map(|w| w.limit).max()
    }
}

/// The response phase's decision.
#[derive(Debug, Clone)]
pub enum ResponseDecision {
    /// Send the upstream's response (masked by `masks`, if any).
    Continue,
    /// Send this response instead.
    Replace {
        /// The plugin that replaced it.
        by: Arc<PluginId>,
        /// The replacement.
        replacement: Replacement,
    },
}

/// What the response phase produced.
#[derive(Debug, Clone)]
pub struct ResponseOutcome {
    /// The decision.
    pub decision: ResponseDecision,
    /// Mask plans to execute on the body, in chain order (body hook only).
    pub masks: Vec<(Arc<Plugin>, MaskPlan)>,
    /// Plugins that asked for the body (header hook only).
    pub body_wants: Vec<BodyWant>,
    /// Every step taken.
    pub trace: Vec<Step>,
}

impl ResponseOutcome {
    /// The most body any plugin asked for: what the request path must buffer.
    pub fn body_limit(&self) -> Option<u64> {
        self.body_wants.iter().map(|w| w.limit).max()
    }
}

fn request_kind(v: &RequestVerdict) -> &'static str {
    match v {
        RequestVerdict::Allow => "allow",
        RequestVerdict::NeedBody(_) => "need-body",
        RequestVerdict::Deny(_) => "deny",
        RequestVerdict::RequireApproval(_) => "require-approval",
        RequestVerdict::Modify(_) => "modify",
    }
}

fn response_kind(v: &ResponseVerdict) -> &'static str {
    match v {
        ResponseVerdict::Pass => "pass",
        ResponseVerdict::NeedBody(_) => "need-body",
        ResponseVerdict::Mask(_) => "mask",
        ResponseVerdict::Replace(_) => "replace",
    }
}

impl Chain {
    /// The plugins, in order.
    pub fn plugins(&self) -> &[Arc<Plugin>] {
        &self.plugins
    }

    /// Begin one request's exchange through the chain. Run its phases on what this returns,
    /// and drop it when the request is decided: the plugins' instances go with it.
    pub fn begin(&self) -> Exchange<'_> {
        Exchange {
            plugins: &self.plugins,
            held: self.plugins.iter().map(|_| Held::default()).collect(),
        }
    }
}

/// One request's exchange through a chain: the phases in order, with the instance each plugin
/// keeps between this request's hooks (see `Held`). Never shared between requests.
#[derive(Debug)]
pub struct Exchange<'a> {
    plugins: &'a [Arc<Plugin>],
    /// One per plugin, by chain position.
    held: Vec<Held>,
}

impl Exchange<'_> {
    /// Drop the instances kept so far, before a long wait (a human's approval) during which
    /// they would hold pool slots; the request's later hooks get new ones.
    pub fn drop_instances(&mut self) {
        self.held
            .iter_mut()
            .for_each(|held| *held = Held::default());
    }

    /// Run the request headers hooks in order. The first deny or require-approval ends the
    /// chain. A failure of a fail-closed plugin is returned as the error.
    pub async fn on_request(
        &mut self,
        req: &Request,
        headers: &Arc<http::HeaderMap>,
    ) -> Result<RequestOutcome, PluginError> {
        let content_type = content_type(headers);
        let mut out = RequestOutcome {
            decision: RequestDecision::Continue,
            edits: Vec::new(),
            body_wants: Vec::new(),
            trace: Vec::new(),
        };
        for (index, (plugin, held)) in self.plugins.iter().zip(&mut self.held).enumerate() {
            if !plugin.descriptor().phases.contains(Phases::REQUEST_HEADERS) {
                continue;
            }
            let Some(verdict) = guarded(
                plugin,
                Hook::OnRequest,
                &mut out.trace,
                plugin.on_request(held, req, headers),
            )
            .await?
            else {
                continue;
            };
            let mut kind = request_kind(&verdict);
            match verdict {
                RequestVerdict::Allow => {}
                RequestVerdict::NeedBody(limit) => {
                    if contract::offers(&plugin.descriptor().request_content_types, content_type) {
                        out.body_wants.push(BodyWant { index, limit });
                    } else {
                        kind = "body-not-offered";
                    }
                }
                RequestVerdict::Modify(edits) => out.edits.extend(edits),
                RequestVerdict::Deny(deny) => {
                    out.decision = RequestDecision::Deny {
                        by: plugin.id().clone(),
                        deny,
                    };
                }
                RequestVerdict::RequireApproval(approval) => {
                    out.decision = RequestDecision::RequireApproval {
                        by: plugin.id().clone(),
                        approval,
                    };
                }
            }
            out.trace.push(step(plugin, Hook::OnRequest, kind));
            if !matches!(out.decision, RequestDecision::Continue) {
                break;
            }
        }
        Ok(out)
    }

    /// Run the request body hooks of the plugins that asked (`wants` from `on_request`), in
    /// order, with the buffered body. The first deny or require-approval ends the chain.
    pub async fn on_request_body(
        &mut self,
        req: &Request,
        headers: &Arc<http::HeaderMap>,
        body: &Bytes,
        wants: &[BodyWant],
    ) -> Result<RequestOutcome, PluginError> {
        let mut out = RequestOutcome {
            decision: RequestDecision::Continue,
            edits: Vec::new(),
            body_wants: Vec::new(),
            trace: Vec::new(),
        };
        for want in wants {
            let (plugin, held) = self.plugin_at(want)?;
            check_body_size(plugin, body, want)?;
            let Some(verdict) = guarded(
                plugin,
                Hook::OnRequestBody,
                &mut out.trace,
                plugin.on_request_body(held, req, headers, body.clone()),
            )
            .await?
            else {
                continue;
            };
            out.trace
                .push(step(plugin, Hook::OnRequestBody, request_kind(&verdict)));
            match verdict {
                RequestVerdict::Allow | RequestVerdict::NeedBody(_) => {}
                RequestVerdict::Modify(edits) => out.edits.extend(edits),
                RequestVerdict::Deny(deny) => {
                    out.decision = RequestDecision::Deny {
                        by: plugin.id().clone(),
                        deny,
                    };
                    break;
                }
                RequestVerdict::RequireApproval(approval) => {
                    out.decision = RequestDecision::RequireApproval {
                        by: plugin.id().clone(),
                        approval,
                    };
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Run the response headers hooks in order. A replace ends the chain.
    pub async fn on_response(
        &mut self,
        req: &Request,
        status: u16,
        headers: &Arc<http::HeaderMap>,
    ) -> Result<ResponseOutcome, PluginError> {
        let content_type = content_type(headers);
        let mut out = ResponseOutcome {
            decision: ResponseDecision::Continue,
            masks: Vec::new(),
            body_wants: Vec::new(),
            trace: Vec::new(),
        };
        for (index, (plugin, held)) in self.plugins.iter().zip(&mut self.held).enumerate() {
            if !plugin
                .descriptor()
                .phases
                .contains(Phases::RESPONSE_HEADERS)
            {
                continue;
            }
            let Some(verdict) = guarded(
                plugin,
                Hook::OnResponse,
                &mut out.trace,
                plugin.on_response(held, req, status, headers),
            )
            .await?
            else {
                continue;
            };
            let mut kind = response_kind(&verdict);
            match verdict {
                ResponseVerdict::Pass | ResponseVerdict::Mask(_) => {}
                ResponseVerdict::NeedBody(limit) => {
                    if contract::offers(&plugin.descriptor().response_content_types, content_type) {
                        out.body_wants.push(BodyWant { index, limit });
                    } else {
                        kind = "body-not-offered";
                    }
                }
                ResponseVerdict::Replace(replacement) => {
                    out.decision = ResponseDecision::Replace {
                        by: plugin.id().clone(),
                        replacement,
                    };
                }
            }
            out.trace.push(step(plugin, Hook::OnResponse, kind));
            if !matches!(out.decision, ResponseDecision::Continue) {
                break;
            }
        }
        Ok(out)
    }

    /// Run the response body hooks of the plugins that asked, collecting their mask plans.
    /// A replace ends the chain.
    pub async fn on_response_body(
        &mut self,
        req: &Request,
        status: u16,
        headers: &Arc<http::HeaderMap>,
        body: &Bytes,
        wants: &[BodyWant],
    ) -> Result<ResponseOutcome, PluginError> {
        let mut out = ResponseOutcome {
            decision: ResponseDecision::Continue,
            masks: Vec::new(),
            body_wants: Vec::new(),
            trace: Vec::new(),
        };
        for want in wants {
            let (plugin, held) = self.plugin_at(want)?;
            check_body_size(plugin, body, want)?;
            let Some(verdict) = guarded(
                plugin,
                Hook::OnResponseBody,
                &mut out.trace,
                plugin.on_response_body(held, req, status, headers, body.clone()),
            )
            .await?
            else {
                continue;
            };
            out.trace
                .push(step(plugin, Hook::OnResponseBody, response_kind(&verdict)));
            match verdict {
                ResponseVerdict::Pass | ResponseVerdict::NeedBody(_) => {}
                ResponseVerdict::Mask(plan) => out.masks.push((plugin.clone(), plan)),
                ResponseVerdict::Replace(replacement) => {
                    out.decision = ResponseDecision::Replace {
                        by: plugin.id().clone(),
                        replacement,
                    };
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The plugin that asked, and its instance for this request.
    fn plugin_at(&mut self, want: &BodyWant) -> Result<(&Arc<Plugin>, &mut Held), PluginError> {
        match (self.plugins.get(want.index), self.held.get_mut(want.index)) {
            (Some(plugin), Some(held)) => Ok((plugin, held)),
            _ => Err(PluginError::Unknown(format!(
                "chain position {}",
                want.index
            ))),
        }
    }
}

fn content_type(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}

fn check_body_size(plugin: &Plugin, body: &Bytes, want: &BodyWant) -> Result<(), PluginError> {
    if body.len() as u64 > want.limit {
        return Err(PluginError::BodyTooLarge {
            plugin: plugin.id().clone(),
            size: body.len() as u64,
            limit: want.limit,
        });
    }
    Ok(())
}

fn step(plugin: &Plugin, hook: Hook, kind: &'static str) -> Step {
    Step {
        plugin: plugin.id().clone(),
        hook,
        result: StepResult::Verdict(kind),
    }
}

/// Call a hook and apply the plugin's failure policy: `Ok(Some(verdict))` on success,
/// `Ok(None)` when a fail-open plugin failed (recorded in the trace), `Err` when a
/// fail-closed plugin failed.
async fn guarded<V>(
    plugin: &Plugin,
    hook: Hook,
    trace: &mut Vec<Step>,
    call: impl Future<Output = Result<V, PluginError>>,
) -> Result<Option<V>, PluginError> {
    match call.await {
        Ok(v) => Ok(Some(v)),
        Err(e) if plugin.settings().failure == FailurePolicy::FailOpen => {
            tracing::warn!(plugin = %plugin.id(), %hook, error = %e, "plugin failed; skipped (fail-open)");
            trace.push(Step {
                plugin: plugin.id().clone(),
                hook,
                result: StepResult::FailedOpen(e.to_string()),
            });
            Ok(None)
        }
        Err(e) => {
            tracing::warn!(plugin = %plugin.id(), %hook, error = %e, "plugin failed; request fails (fail-closed)");
            Err(e)
        }
    }
}
