//! A route: which requests it serves (host and path prefix), what kind of upstream it fronts,
//! its plugin chain, body limits, and its upstream.
use crate::auth::{Access, Admission, AuthError, Caller};
use crate::config::{Authentication, RouteConfig, RouteKind};
use crate::plugin::Chain;
use crate::upstream::Upstream;

/// One configured route, ready to serve.
#[derive(Debug)]
pub struct Route {
    /// The route's name (`request.route` for plugins).
    pub name: String,
    /// Decides the operation plugins see and the error shape.
    pub kind: RouteKind,
    /// Lower-case host, or any.
    host: Option<String>,
    /// Path prefix without a trailing `/` (empty for `/`).
    prefix: String,
    /// `azure-storage`: the account is the first path segment.
    pub path_style: bool,
    /// Most body bytes buffered for plugins.
    pub body_limit: u64,
    /// The longest a request waits here for a human's approval.
    pub approval_hold: std::time::Duration,
    /// Pass over-limit response bodies through unmasked instead of failing.
    pub unmasked_passthrough: bool,
    /// The plugins deciding this route's traffic when it is open (`authentication = "none"`).
    pub chain: Chain,
    /// Where requests go.
    pub upstream: Upstream,
    /// Whether a verified token is required.
    pub authentication: Authentication,
    /// The identity providers (indices) whose tokens the route accepts.
    pub identity_providers: Vec<usize>,
    /// Who may use the route, with which plugins; the first rule admitting a caller decides.
    pub access: Vec<Access>,
}

impl Route {
    /// A route from its configuration, its chain, its upstream, the identity providers it
    /// accepts and its access rules.
    pub fn new(
        config: &RouteConfig,
        chain: Chain,
        upstream: Upstream,
        identity_providers: Vec<usize>,
        access: Vec<Access>,
    ) -> Route {
        Route {
            name: config.name.clone(),
            kind: config.kind,
            host: config.host.as_ref().map(|h| h.to_ascii_lowercase()),
            prefix: config.path_prefix.trim_end_matches('/').to_string(),
            path_style: config.path_style,
            body_limit: config.body_limit.as_u64(),
            approval_hold: config.approval_hold,
            unmasked_passthrough: config.unmasked_passthrough,
            chain,
            upstream,
            authentication: config.authentication,
            identity_providers,
            access,
        }
    }

    /// The chain for `caller`: the open route's own, or that of the first access rule admitting
    /// the caller. No rule admits it: 403. Fails closed on a caller-less request to a route
    /// that needs one.
    pub fn chain_for(&self, caller: Option<&Caller>) -> Result<&Chain, AuthError> {
        let Some(caller) = caller else {
            return match self.authentication {
                Authentication::None => Ok(&self.chain),
                Authentication::Required => Err(AuthError::Missing),
            };
        };
        let mut groups_elided = false;
        for rule in &self.access {
            match rule.admits(caller) {
                Admission::Admitted => return Ok(&rule.chain),
                Admission::GroupsElided => groups_elided = true,
                Admission::Refused => {}
            }
        }
        Err(AuthError::Forbidden {
            route: self.name.clone(),
            subject: caller.principal.subject.clone(),
            issuer: caller.principal.issuer.clone(),
            groups_elided,
        })
    }

    /// Does this route serve `host` (without port, any case) and `path`? Prefixes match whole
    /// segments: `/a` serves `/a` and `/a/b`, never `/ab`.
    pub fn serves(&self, host: Option<&str>, path: &str) -> bool {
        if let Some(want) = &self.host
            && !host.is_some_and(|h| h.eq_ignore_ascii_case(want))
        {
            return false;
        }
        match path.strip_prefix(self.prefix.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }

    /// The path the operation is derived from: for a path-style storage route, without the
    /// account segment.
    pub fn resource_path<'a>(&self, path: &'a str) -> &'a str {
        if !self.path_style {
            return path;
        }
        let rest = path.strip_prefix('/').unwrap_or(path);
        match rest.find('/') {
            Some(i) => &rest[i..],
            None => "/",
        }
    }
}

/// The host of an authority, without port or IPv6 brackets' port.
pub fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.split(':').next().unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_ports() {
        assert_eq!(host_of("example.com:8443"), "example.com");
        assert_eq!(host_of("[::1]:8443"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }
}
