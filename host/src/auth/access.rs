//! Access rules (`[[route.access]]`): which callers a rule admits, and the plugin chain their
//! traffic goes through.
use super::Caller;
use crate::config::AccessConfig;
use crate::plugin::Chain;

/// One access rule of a route, with its chain built.
#[derive(Debug)]
pub struct Access {
    /// The rule's name.
    pub name: String,
    /// Providers (indices into the configuration) whose callers match; empty: any.
    providers: Vec<usize>,
    subjects: Vec<String>,
    tenants: Vec<String>,
    app_ids: Vec<String>,
    roles: Vec<String>,
    groups: Vec<String>,
    scopes: Vec<String>,
    /// The plugins for the callers this rule admits.
    pub chain: Chain,
}

/// Whether a rule admits a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Every condition holds.
    Admitted,
    /// Some condition fails.
    Refused,
    /// The rule depends on groups, and the token's group list is incomplete (Entra ID group
    /// overage): it cannot match, whatever the groups listed.
    GroupsElided,
}

impl Access {
    /// A rule from its configuration, with provider names already resolved to indices.
    pub fn new(config: &AccessConfig, providers: Vec<usize>, chain: Chain) -> Access {
        Access {
            name: config.name.clone(),
            providers,
            subjects: config.subjects.clone(),
            tenants: config.tenants.clone(),
            app_ids: config.app_ids.clone(),
            roles: config.roles.clone(),
            groups: config.groups.clone(),
            scopes: config.scopes.clone(),
            chain,
        }
    }

    /// Does this rule admit `caller`? Every listed condition must hold; within a list, any
    /// value does.
    pub fn admits(&self, caller: &Caller) -> Admission {
        let p = &caller.principal;
        let any = |wanted: &[String], have: &[String]| {
            wanted.is_empty() || wanted.iter().any(|w| have.contains(w))
        };
        let one = |wanted: &[String], have: Option<&String>| {
            wanted.is_empty() || have.is_some_and(|h| wanted.contains(h))
        };
        let holds = (self.providers.is_empty() || self.providers.contains(&caller.provider))
            && one(&self.subjects, Some(&p.subject))
            && one(&self.tenants, p.tenant.as_ref())
            && one(&self.app_ids, p.app_id.as_ref())
            && any(&self.roles, &p.roles)
            && any(&self.scopes, &p.scopes);
        if !holds {
            return Admission::Refused;
        }
        if self.groups.is_empty() {
            return Admission::Admitted;
        }
        if !p.groups_complete {
            return Admission::GroupsElided;
        }
        if any(&self.groups, &p.groups) {
            Admission::Admitted
        } else {
            Admission::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::{PluginSet, Principal};

    fn caller(roles: &[&str], groups: &[&str], groups_complete: bool) -> Caller {
        Caller {
            provider: 0,
            principal: Principal {
                subject: "s".into(),
                issuer: "i".into(),
                tenant: Some("t".into()),
                app_id: Some("app".into()),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
                groups_complete,
                scopes: vec!["read".into()],
                claims: vec![],
            },
            audit_record: Default::default(),
        }
    }

    fn rule(config: AccessConfig) -> Access {
        let chain = PluginSet::new(Vec::new(), 1).chain::<&str>(&[]).unwrap();
        let providers = config.identity_providers.iter().map(|_| 1).collect();
        Access::new(&config, providers, chain)
    }

    #[test]
    fn every_listed_condition_must_hold_and_any_value_within_one() {
        let r = rule(AccessConfig {
            name: "r".into(),
            roles: vec!["admin".into(), "agent".into()],
            app_ids: vec!["app".into()],
            ..AccessConfig::default()
        });
        assert_eq!(
            r.admits(&caller(&["agent"], &[], true)),
            Admission::Admitted
        );
        assert_eq!(
            r.admits(&caller(&["reader"], &[], true)),
            Admission::Refused
        );
        let scoped = rule(AccessConfig {
            name: "r".into(),
            roles: vec!["agent".into()],
            scopes: vec!["write".into()],
            ..AccessConfig::default()
        });
        assert_eq!(
            scoped.admits(&caller(&["agent"], &[], true)),
            Admission::Refused
        );
    }

    #[test]
    fn provider_conditions_compare_the_vouching_provider() {
        let r = rule(AccessConfig {
            name: "r".into(),
            identity_providers: vec!["other".into()],
            ..AccessConfig::default()
        });
        assert_eq!(r.admits(&caller(&[], &[], true)), Admission::Refused);
    }

    #[test]
    fn group_rules_never_match_elided_groups() {
        let r = rule(AccessConfig {
            name: "r".into(),
            groups: vec!["g".into()],
            ..AccessConfig::default()
        });
        assert_eq!(r.admits(&caller(&[], &["g"], true)), Admission::Admitted);
        assert_eq!(
            r.admits(&caller(&[], &["g"], false)),
            Admission::GroupsElided
        );
        assert_eq!(r.admits(&caller(&[], &["h"], true)), Admission::Refused);
    }
}
