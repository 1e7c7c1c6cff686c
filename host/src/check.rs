//! `portcullis check`: validate a configuration, load every plugin, set up every route's
//! upstream and the TLS certificate, and report what is usable or every problem found.
use std::fmt::Write as _;
use std::path::Path;

use crate::config::Config;
use crate::plugin::{self, FailurePolicy, InstanceMode, Phases, PluginEngine};

/// The report of a check: what loaded and what did not.
#[derive(Debug)]
pub struct Report {
    /// One line per loaded plugin.
    pub loaded: Vec<String>,
    /// One line per usable route.
    pub routes: Vec<String>,
    /// One line per problem, each naming its key, file or plugin.
    pub problems: Vec<String>,
}

impl Report {
    /// True when nothing is wrong.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// The report as text for a terminal.
    pub fn render(&self, path: &Path) -> String {
        let mut out = String::new();
        for line in &self.loaded {
            let _ = writeln!(out, "plugin {line}");
        }
        for line in &self.routes {
            let _ = writeln!(out, "route {line}");
        }
        if self.passed() {
            let _ = writeln!(
                out,
                "{}: OK ({} plugin(s), {} route(s))",
                path.display(),
                self.loaded.len(),
                self.routes.len()
            );
        } else {
            let _ = writeln!(
                out,
                "{}: {} problem(s)",
                path.display(),
                self.problems.len()
            );
            for p in &self.problems {
                let _ = writeln!(out, "  {p}");
            }
        }
        out
    }
}

/// Validate the configuration at `path` and load every plugin it names.
pub async fn check(path: &Path) -> Report {
    let mut report = Report {
        loaded: Vec::new(),
        routes: Vec::new(),
        problems: Vec::new(),
    };
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(crate::config::ConfigError::Invalid(problems)) => {
            report.problems = problems.iter().map(ToString::to_string).collect();
            return report;
        }
        Err(e) => {
            report.problems.push(e.to_string());
            return report;
        }
    };
    if let Some(audit) = &config.audit {
        for (key, file) in [
            ("signing_key_file", Some(&audit.signing_key_file)),
            ("retiring_key_file", audit.retiring_key_file.as_ref()),
        ] {
            if let Some(file) = file
                && let Err(e) =
                    portcullis_audit::note::SigningKey::read(&config.path(file), &audit.origin)
            {
                report.problems.push(format!("audit.{key}: {e}"));
            }
        }
    }
    let engine = match PluginEngine::new(config.engine_settings()) {
        Ok(e) => e,
        Err(e) => {
            report.problems.push(e.to_string());
            return report;
        }
    };
    for (i, spec) in config.plugin_specs().iter().enumerate() {
        match plugin::load_plugin(&engine, spec).await {
            Ok(p) => {
                let settings = &spec.settings;
                report.loaded.push(format!(
                    "{} {} sha256:{} phases:{} timeout:{:?} memory:{} failure:{} instance:{}",
                    p.id().name,
                    p.id().version,
                    p.id().sha256,
                    phases(p.descriptor().phases),
                    settings.timeout,
                    bytesize::ByteSize::b(settings.memory_limit),
                    match settings.failure {
                        FailurePolicy::FailClosed => "fail-closed",
                        FailurePolicy::FailOpen => "fail-open",
                    },
                    match settings.instance {
                        InstanceMode::Fresh => "fresh".to_string(),
                        InstanceMode::Reuse { calls } => format!("reuse({calls})"),
                    },
                ));
                if let (Some(alias), Some(line)) = (&spec.alias, report.loaded.last_mut()) {
                    line.push_str(&format!(" alias:{alias}"));
                }
            }
            Err(e) => report.problems.push(format!("plugin[{i}]: {e}")),
        }
    }
    // Routes: credentials and CA bundles are read now, as `serve` would.
    for (i, route) in config.routes.iter().enumerate() {
        match crate::upstream::Upstream::build(route, &config.base_dir) {
            Ok(_) => report.routes.push(format!(
                "{} ({}) {}{} -> {} plugins:[{}] {}",
                route.name,
                kind(route.kind),
                route.host.as_deref().unwrap_or("*"),
                route.path_prefix,
                route.upstream,
                route.plugins.join(","),
                access(route),
            )),
            Err(e) => report
                .problems
                .push(format!("route[{i}] ({}): {e}", route.name)),
        }
    }
    // Identity providers: URLs and CA bundles are checked; keys are fetched by `serve`.
    if let Err(e) = crate::auth::Identity::new(&config) {
        report.problems.push(e);
    }
    if let Err(e) = crate::server::tls_acceptor(&config) {
        report.problems.push(format!("server.tls: {e}"));
    }
    report
}

/// Who may use a route: `authentication:none`, or the providers and each access rule with
/// its plugins.
fn access(route: &crate::config::RouteConfig) -> String {
    if route.authentication == crate::config::Authentication::None {
        return "authentication:none".into();
    }
    let providers = match route.identity_providers.is_empty() {
        true => "*".to_string(),
        false => route.identity_providers.join(","),
    };
    let rules: Vec<String> = route
        .access
        .iter()
        .map(|a| {
            let plugins = a.plugins.as_ref().unwrap_or(&route.plugins).join(",");
            format!("{}->[{plugins}]", a.name)
        })
        .collect();
    format!("identity:[{providers}] access:[{}]", rules.join(" "))
}

fn kind(kind: crate::config::RouteKind) -> &'static str {
    match kind {
        crate::config::RouteKind::Generic => "generic",
        crate::config::RouteKind::AzureArm => "azure-arm",
        crate::config::RouteKind::AzureStorage => "azure-storage",
    }
}

/// Phases as the contract names them: `request-headers,response-headers`.
fn phases(p: Phases) -> String {
    [
        (Phases::REQUEST_HEADERS, "request-headers"),
        (Phases::REQUEST_BODY, "request-body"),
        (Phases::RESPONSE_HEADERS, "response-headers"),
        (Phases::RESPONSE_BODY, "response-body"),
    ]
    .iter()
    .filter(|(flag, _)| p.contains(*flag))
    .map(|(_, name)| *name)
    .collect::<Vec<_>>()
    .join(",")
}
