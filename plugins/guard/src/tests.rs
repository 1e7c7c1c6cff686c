use std::collections::BTreeMap;

use portcullis_sdk::Principal;
use serde_json::{Value, json};

use crate::config::{Action, DEFAULT_BODY_LIMIT, body_limit_of, parse_config};
use crate::decide::{
    BodyInput, Decision, Facts, decide, header_names, json_offered, percent_decode,
};
use crate::json::parse_unambiguous;
use crate::{CONFIG_SCHEMA, Config};

const RG_DELETE: &str = "Microsoft.Resources/subscriptions/resourceGroups/delete";
const RG_PATH: &str = "/subscriptions/s1/resourceGroups/rg1?api-version=2021-04-01";

/// A request's facts, built up per test.
struct Req {
    method: String,
    target: String,
    operation: String,
    principal: Option<Principal>,
    headers: BTreeMap<String, Vec<String>>,
}

fn req(method: &str, target: &str, operation: &str) -> Req {
    Req {
        method: method.into(),
        target: target.into(),
        operation: operation.into(),
        principal: None,
        headers: BTreeMap::new(),
    }
}

impl Req {
    fn by(mut self, principal: Principal) -> Self {
        self.principal = Some(principal);
        self
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(value.into());
        self
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            method: &self.method,
            path_and_query: &self.target,
            operation: &self.operation,
            principal: self.principal.as_ref(),
            headers: &self.headers,
        }
    }
}

fn principal(roles: &[&str], groups: &[&str], groups_complete: bool) -> Principal {
    Principal {
        subject: "user-1".into(),
        issuer: "https://login.example/".into(),
        tenant: Some("tenant-a".into()),
        app_id: Some("app-1".into()),
        roles: roles.iter().map(|s| s.to_string()).collect(),
        groups: groups.iter().map(|s| s.to_string()).collect(),
        groups_complete,
        scopes: vec!["user_impersonation".into()],
        claims: Vec::new(),
    }
}

fn config(value: Value) -> Config {
    parse_config(&value.to_string()).unwrap()
}

fn config_err(value: Value) -> String {
    parse_config(&value.to_string()).unwrap_err()
}

/// `default: allow` and one deny rule with these conditions.
fn deny_rule(conditions: Value) -> Config {
    let mut rule = json!({"id": "r1", "action": "deny"});
    for (k, v) in conditions.as_object().unwrap() {
        rule[k] = v.clone();
    }
    config(json!({"default": "allow", "rules": [rule]}))
}

/// `default: deny` and one allow rule with these conditions.
fn allow_rule(conditions: Value) -> Config {
    let mut rule = json!({"id": "a1", "action": "allow"});
    for (k, v) in conditions.as_object().unwrap() {
        rule[k] = v.clone();
    }
    config(json!({"default": "deny", "rules": [rule]}))
}

fn headers_only(c: &Config, r: &Req) -> Decision {
    decide(c, &r.facts(), BodyInput::Unusable)
}

fn with_body(c: &Config, r: &Req, body: &Value) -> Decision {
    decide(c, &r.facts(), BodyInput::Json(body))
}

fn code(d: &Decision) -> Option<&str> {
    match d {
        Decision::Deny { code, .. } => Some(code),
        _ => None,
    }
}

fn denied_by(d: &Decision, id: &str) -> bool {
    code(d) == Some(id)
}

// ---- configuration ----

#[test]
fn a_full_config_parses() {
    let c = config(json!({
        "default": {"action": "require-approval", "approvers": ["ops"], "budget_ms": 1000, "message": "Held"},
        "body_limit": 1024,
        "rules": [{
            "id": "deny-rg-delete",
            "operations": [RG_DELETE],
            "methods": ["DELETE"],
            "paths": ["/subscriptions/{sub}/resourceGroups/{rg}"],
            "query": {"comp": "acl"},
            "headers": {"X-Ms-Copy-Source": "*"},
            "body": [
                {"pointer": "/properties/roleDefinitionId", "matches": "*/roleDefinitions/8e3af657-*"},
                {"pointer": "/x", "equals": true},
                {"pointer": "/y", "in": ["a", "b"]}
            ],
            "principal": {"roles": ["agent"], "groups": ["g1"], "app_ids": [], "tenants": [], "subjects": []},
            "action": "deny",
            "status": 451,
            "message": "No."
        }]
    }));
    assert_eq!(c.body_limit, 1024);
    assert_eq!(
        c.default,
        Action::RequireApproval {
            approvers: vec!["ops".into()],
            budget_ms: 1000,
            message: Some("Held".into())
        }
    );
    let r = &c.rules[0];
    assert_eq!(r.id, "deny-rg-delete");
    assert_eq!(
        r.headers,
        vec![("x-ms-copy-source".to_string(), "*".to_string())]
    );
    assert_eq!(r.body.len(), 3);
    assert_eq!(r.body[0].segments, vec!["properties", "roleDefinitionId"]);
    assert_eq!(
        r.action,
        Action::Deny {
            status: 451,
            message: Some("No.".into())
        }
    );
    assert_eq!(r.principal.as_ref().unwrap().roles, vec!["agent"]);
}

#[test]
fn defaults_of_optional_fields() {
    let c = config(json!({"default": "deny", "rules": [{"id": "x", "action": "deny"}]}));
    assert_eq!(c.body_limit, DEFAULT_BODY_LIMIT);
    assert_eq!(
        c.default,
        Action::Deny {
            status: 403,
            message: None
        }
    );
    assert_eq!(
        c.rules[0].action,
        Action::Deny {
            status: 403,
            message: None
        }
    );
    assert_eq!(config(json!({"default": "allow"})).rules, vec![]);
    assert_eq!(body_limit_of(r#"{"default":"allow","body_limit":10}"#), 10);
    assert_eq!(body_limit_of("not json"), DEFAULT_BODY_LIMIT);
}

#[test]
fn missing_default_is_refused() {
    let e = config_err(json!({"rules": []}));
    assert!(e.contains("`default` is required"), "{e}");
    let e = config_err(json!({"default": "maybe"}));
    assert!(e.starts_with("default:"), "{e}");
    let e = config_err(json!({"default": "require-approval"}));
    assert!(e.contains("approvers"), "{e}");
}

#[test]
fn duplicate_ids_are_refused_naming_both_rules() {
    let e = config_err(json!({"default": "allow", "rules": [
        {"id": "a", "action": "deny"},
        {"id": "b", "action": "deny"},
        {"id": "a", "action": "allow"}
    ]}));
    assert_eq!(e, r#"rules[2] ("a"): field `id`: duplicate of rules[0]"#);
}

#[test]
fn bad_or_missing_ids_are_refused() {
    let e = config_err(json!({"default": "allow", "rules": [{"action": "deny"}]}));
    assert_eq!(e, "rules[0]: field `id` is required");
    let e = config_err(json!({"default": "allow", "rules": [{"id": "", "action": "deny"}]}));
    assert!(e.starts_with("rules[0]: field `id` must be"), "{e}");
    let e =
        config_err(json!({"default": "allow", "rules": [{"id": "has space", "action": "deny"}]}));
    assert!(e.starts_with("rules[0]: field `id` must be"), "{e}");
    let e = config_err(
        json!({"default": "allow", "rules": [{"id": "guard-default", "action": "deny"}]}),
    );
    assert!(e.contains("reserved"), "{e}");
}

#[test]
fn bad_status_is_refused() {
    for status in [json!(200), json!(600), json!("403"), json!(-1)] {
        let e = config_err(json!({"default": "allow", "rules": [
            {"id": "ok", "action": "deny"},
            {"id": "bad", "action": "deny", "status": status}
        ]}));
        assert!(
            e.starts_with(r#"rules[1] ("bad"): field `status` must be an integer in 400..=599"#),
            "{e}"
        );
    }
    let e = config_err(json!({"default": {"action": "deny", "status": 302}}));
    assert!(e.starts_with("default: field `status`"), "{e}");
    let e = config_err(
        json!({"default": "allow", "rules": [{"id": "x", "action": "allow", "status": 403}]}),
    );
    assert!(
        e.contains("field `status` applies only to action \"deny\""),
        "{e}"
    );
}

#[test]
fn approval_without_approvers_or_budget_is_refused() {
    let e = config_err(json!({"default": "allow", "rules": [
        {"id": "hold", "action": "require-approval", "budget_ms": 1000}
    ]}));
    assert!(
        e.starts_with(r#"rules[0] ("hold"): field `approvers` is required"#),
        "{e}"
    );
    let e = config_err(json!({"default": "allow", "rules": [
        {"id": "hold", "action": "require-approval", "approvers": [], "budget_ms": 1000}
    ]}));
    assert!(
        e.contains("field `approvers` must list at least one"),
        "{e}"
    );
    let e = config_err(json!({"default": "allow", "rules": [
        {"id": "hold", "action": "require-approval", "approvers": ["g"]}
    ]}));
    assert!(
        e.starts_with(r#"rules[0] ("hold"): field `budget_ms` is required"#),
        "{e}"
    );
    let e = config_err(json!({"default": "allow", "rules": [
        {"id": "d", "action": "deny", "approvers": ["g"]}
    ]}));
    assert!(
        e.contains("field `approvers` applies only to action \"require-approval\""),
        "{e}"
    );
    let e = config_err(json!({"default": {"action": "require-approval", "approvers": ["g"]}}));
    assert!(
        e.starts_with("default: field `budget_ms` is required"),
        "{e}"
    );
}

#[test]
fn predicate_with_two_operators_or_none_is_refused() {
    let e = config_err(json!({"default": "allow", "rules": [
        {"id": "b", "action": "deny", "body": [{"pointer": "/a", "equals": 1, "in": [1, 2]}]}
    ]}));
    assert_eq!(
        e,
        r#"rules[0] ("b"): field `body[0]`: needs exactly one of `equals`, `in`, `matches`, got `equals` and `in`"#
    );
    let e = config_err(json!({"default": "allow", "rules": [
        {"id": "b", "action": "deny", "body": [{"pointer": "/a"}]}
    ]}));
    assert!(e.ends_with("got none"), "{e}");
    let e = config_err(json!({"default": "allow", "rules": [
        {"id": "b", "action": "deny", "body": [{"pointer": "a", "equals": 1}]}
    ]}));
    assert!(e.contains("is not a JSON pointer"), "{e}");
    let e = config_err(json!({"default": "allow", "rules": [
        {"id": "b", "action": "deny", "body": [{"pointer": "/a", "in": []}]}
    ]}));
    assert!(e.contains("field `in` must be a non-empty list"), "{e}");
    let e = config_err(json!({"default": "allow", "rules": [
        {"id": "b", "action": "deny", "body": [{"pointer": "/a", "matches": 1}]}
    ]}));
    assert!(e.contains("field `matches` must be a glob string"), "{e}");
}

#[test]
fn unknown_fields_are_refused_where_they_are() {
    let e = config_err(json!({"default": "allow", "colour": "red"}));
    assert!(e.starts_with("config: unknown field `colour`"), "{e}");
    let e = config_err(
        json!({"default": "allow", "rules": [{"id": "r", "action": "deny", "operation": ["x"]}]}),
    );
    assert!(
        e.starts_with(r#"rules[0] ("r"): unknown field `operation`"#),
        "{e}"
    );
    let e = config_err(
        json!({"default": "allow", "rules": [{"id": "r", "action": "deny", "principal": {"role": ["x"]}}]}),
    );
    assert!(
        e.starts_with(r#"rules[0] ("r"): field `principal`: unknown field `role`"#),
        "{e}"
    );
    let e = config_err(
        json!({"default": "allow", "rules": [{"id": "r", "action": "deny", "body": [{"pointer": "/a", "equal": 1}]}]}),
    );
    assert!(
        e.starts_with(r#"rules[0] ("r"): field `body[0]`: unknown field `equal`"#),
        "{e}"
    );
    let e = config_err(json!({"default": {"action": "deny", "code": "x"}}));
    assert!(e.starts_with("default: unknown field `code`"), "{e}");
}

#[test]
fn other_field_errors_name_the_rule_and_field() {
    let cases = [
        (json!({"methods": ["delete"]}), "field `methods`"),
        (json!({"paths": ["subscriptions/{s}"]}), "field `paths`"),
        (json!({"paths": ["/a/**/b"]}), "field `paths`"),
        (json!({"paths": ["/admin*"]}), "field `paths`"),
        (json!({"operations": "x"}), "field `operations`"),
        (json!({"query": {"comp": 1}}), "field `query`"),
        (json!({"headers": {"bad header": "x"}}), "field `headers`"),
        (json!({"principal": {"roles": [""]}}), "field `roles`"),
        (json!({"action": "block"}), "field `action`"),
        (json!({"message": ""}), "field `message`"),
    ];
    for (conditions, field) in cases {
        let mut rule = json!({"id": "r7", "action": "deny"});
        for (k, v) in conditions.as_object().unwrap() {
            rule[k] = v.clone();
        }
        let e = config_err(json!({"default": "allow", "rules": [rule]}));
        assert!(e.starts_with(r#"rules[0] ("r7"): "#), "{e}");
        assert!(e.contains(field), "{field}: {e}");
    }
    let e = config_err(json!({"default": "allow", "body_limit": 0}));
    assert!(e.contains("field `body_limit`"), "{e}");
    let e = parse_config(r#"{"default":"allow","default":"deny"}"#).unwrap_err();
    assert!(e.contains("appears twice"), "{e}");
}

#[test]
fn the_schema_is_json() {
    let schema: Value = serde_json::from_str(CONFIG_SCHEMA).unwrap();
    assert_eq!(schema["required"], json!(["default"]));
}

// ---- conditions ----

#[test]
fn operations_match_as_globs_ignoring_case() {
    let c = deny_rule(json!({"operations": [RG_DELETE, "Microsoft.Compute/*/delete"]}));
    let hit = |op: &str| denied_by(&headers_only(&c, &req("DELETE", "/", op)), "r1");
    assert!(hit(RG_DELETE));
    assert!(hit(
        "microsoft.resources/SUBSCRIPTIONS/resourcegroups/DELETE"
    ));
    assert!(hit("Microsoft.Compute/virtualMachines/delete"));
    assert!(hit("MICROSOFT.COMPUTE/disks/DELETE"));
    assert!(!hit(
        "Microsoft.Resources/subscriptions/resourceGroups/read"
    ));
    assert!(!hit("Microsoft.Storage/storageAccounts/delete"));
    // Also for allow rules (the spelling is the client's, the operation is the same).
    let c = allow_rule(json!({"operations": ["Microsoft.Compute/virtualMachines/read"]}));
    let r = req("GET", "/", "microsoft.compute/VIRTUALMACHINES/read");
    assert_eq!(headers_only(&c, &r), Decision::Allow);
}

#[test]
fn methods_match_exactly() {
    let c = deny_rule(json!({"methods": ["DELETE", "PATCH"]}));
    assert!(denied_by(
        &headers_only(&c, &req("DELETE", "/x", "op")),
        "r1"
    ));
    assert!(denied_by(
        &headers_only(&c, &req("PATCH", "/x", "op")),
        "r1"
    ));
    assert_eq!(headers_only(&c, &req("GET", "/x", "op")), Decision::Allow);
}

#[test]
fn paths_match_templates_and_ignore_the_query() {
    let c = deny_rule(json!({"paths": ["/subscriptions/{sub}/resourceGroups/{rg}", "/admin/**"]}));
    let hit = |target: &str| denied_by(&headers_only(&c, &req("GET", target, "op")), "r1");
    assert!(hit(RG_PATH));
    assert!(hit("/subscriptions/s1/resourceGroups/rg1"));
    assert!(hit("/admin"));
    assert!(hit("/admin/users/1?x=1"));
    assert!(!hit("/subscriptions/s1/resourceGroups/rg1/providers/x"));
    assert!(!hit("/subscriptions/s1/resourceGroups"));
    assert!(!hit("/public/admin"));
    // A deny rule is not dodged by spelling the path differently.
    assert!(hit("/SUBSCRIPTIONS/s1/resourcegroups/rg1"));
    assert!(hit("/subscriptions/s1/resource%47roups/rg1"));
}

#[test]
fn allow_rule_paths_are_exact() {
    let c = allow_rule(json!({"paths": ["/public/**"]}));
    assert_eq!(
        headers_only(&c, &req("GET", "/public/a", "op")),
        Decision::Allow
    );
    assert!(denied_by(
        &headers_only(&c, &req("GET", "/PUBLIC/a", "op")),
        "guard-default"
    ));
    // Escaped unreserved characters are the same path.
    assert_eq!(
        headers_only(&c, &req("GET", "/%70ublic/a", "op")),
        Decision::Allow
    );
}

#[test]
fn query_parameters_must_be_present_and_match_decoded() {
    let c = deny_rule(json!({"query": {"comp": "acl", "restype": "cont*"}}));
    let hit = |target: &str| denied_by(&headers_only(&c, &req("PUT", target, "op")), "r1");
    assert!(hit("/c?restype=container&comp=acl"));
    assert!(hit("/c?restype=cont%61iner&comp=%61cl"));
    assert!(!hit("/c?restype=container"));
    assert!(!hit("/c?comp=acl"));
    assert!(!hit("/c?restype=container&comp=list"));
    assert!(!hit("/c"));
    // Deny rules: a repeated parameter or a different case still matches.
    assert!(hit("/c?restype=container&comp=list&comp=acl"));
    assert!(hit("/c?RESTYPE=Container&comp=ACL"));
}

#[test]
fn allow_rule_query_needs_every_value_to_match() {
    let c = allow_rule(json!({"query": {"comp": "list"}}));
    assert_eq!(
        headers_only(&c, &req("GET", "/?comp=list", "op")),
        Decision::Allow
    );
    assert!(denied_by(
        &headers_only(&c, &req("GET", "/?comp=list&comp=acl", "op")),
        "guard-default"
    ));
    assert!(denied_by(
        &headers_only(&c, &req("GET", "/?comp=LIST", "op")),
        "guard-default"
    ));
    assert!(denied_by(
        &headers_only(&c, &req("GET", "/?comp=%FF", "op")),
        "guard-default"
    ));
    assert_eq!(percent_decode("a%20b%2Fc%zz"), Some("a b/c%zz".to_string()));
    assert_eq!(percent_decode("%FF"), None);
}

#[test]
fn headers_must_be_present_and_match() {
    let c = deny_rule(json!({"headers": {"X-Ms-Copy-Source": "https://*"}}));
    assert_eq!(header_names(&c), vec!["x-ms-copy-source"]);
    let r = req("PUT", "/c/b", "op").header("x-ms-copy-source", "https://other/blob");
    assert!(denied_by(&headers_only(&c, &r), "r1"));
    let r = req("PUT", "/c/b", "op").header("x-ms-copy-source", "file:///etc");
    assert_eq!(headers_only(&c, &r), Decision::Allow);
    let r = req("PUT", "/c/b", "op").header("x-other", "https://x");
    assert_eq!(headers_only(&c, &r), Decision::Allow);
    // Presence only.
    let c = deny_rule(json!({"headers": {"x-ms-copy-source": "*"}}));
    let r = req("PUT", "/c/b", "op").header("x-ms-copy-source", "");
    assert!(denied_by(&headers_only(&c, &r), "r1"));
    assert_eq!(headers_only(&c, &req("PUT", "/c/b", "op")), Decision::Allow);
}

#[test]
fn principal_lists_each_need_one_value() {
    let c = deny_rule(json!({"principal": {"roles": ["agent", "bot"], "tenants": ["tenant-a"]}}));
    let hit = |p: Principal| denied_by(&headers_only(&c, &req("GET", "/", "op").by(p)), "r1");
    assert!(hit(principal(&["reader", "agent"], &[], true)));
    assert!(!hit(principal(&["reader"], &[], true)));
    let mut other_tenant = principal(&["agent"], &[], true);
    other_tenant.tenant = Some("tenant-b".into());
    assert!(!hit(other_tenant));
    let mut no_tenant = principal(&["agent"], &[], true);
    no_tenant.tenant = None;
    assert!(!hit(no_tenant));

    let c = deny_rule(
        json!({"principal": {"app_ids": ["app-1"], "subjects": ["user-1"], "scopes": ["user_impersonation"]}}),
    );
    let r = req("GET", "/", "op").by(principal(&[], &[], true));
    assert!(denied_by(&headers_only(&c, &r), "r1"));
    let c = deny_rule(json!({"principal": {"subjects": ["user-2"]}}));
    assert_eq!(headers_only(&c, &r), Decision::Allow);
}

#[test]
fn a_principal_condition_needs_a_principal() {
    let c = deny_rule(json!({"principal": {"roles": ["agent"]}}));
    assert_eq!(headers_only(&c, &req("GET", "/", "op")), Decision::Allow);
    // `principal: {}` means "any authenticated caller".
    let c = deny_rule(json!({"principal": {}}));
    assert_eq!(headers_only(&c, &req("GET", "/", "op")), Decision::Allow);
    let r = req("GET", "/", "op").by(principal(&[], &[], true));
    assert!(denied_by(&headers_only(&c, &r), "r1"));
}

#[test]
fn incomplete_groups_hold_for_deny_rules_and_never_for_allow_rules() {
    let c = deny_rule(json!({"principal": {"groups": ["g1"]}}));
    let complete = req("GET", "/", "op").by(principal(&[], &["g1"], true));
    assert!(denied_by(&headers_only(&c, &complete), "r1"));
    let other = req("GET", "/", "op").by(principal(&[], &["g2"], true));
    assert_eq!(headers_only(&c, &other), Decision::Allow);
    // Overage: the caller may be in g1, whatever it lists; a deny rule fails closed.
    let overage = req("GET", "/", "op").by(principal(&[], &["g2"], false));
    assert!(denied_by(&headers_only(&c, &overage), "r1"));
    // An allow rule never relies on an incomplete list, even when it lists the group.
    let overage = req("GET", "/", "op").by(principal(&[], &["g1"], false));
    let c = allow_rule(json!({"principal": {"groups": ["g1"]}}));
    assert!(denied_by(&headers_only(&c, &overage), "guard-default"));
    assert_eq!(headers_only(&c, &complete), Decision::Allow);
    // A rule without a groups condition is unaffected by overage.
    let c = deny_rule(json!({"principal": {"roles": ["agent"]}}));
    let r = req("GET", "/", "op").by(principal(&["agent"], &[], false));
    assert!(denied_by(&headers_only(&c, &r), "r1"));
}

#[test]
fn every_listed_condition_must_hold() {
    let c = deny_rule(json!({
        "operations": [RG_DELETE],
        "methods": ["DELETE"],
        "paths": ["/subscriptions/{sub}/resourceGroups/{rg}"],
        "principal": {"roles": ["agent"]}
    }));
    let agent = principal(&["agent"], &[], true);
    let r = req("DELETE", RG_PATH, RG_DELETE).by(agent.clone());
    assert!(denied_by(&headers_only(&c, &r), "r1"));
    let r = req("DELETE", RG_PATH, RG_DELETE).by(principal(&["admin"], &[], true));
    assert_eq!(headers_only(&c, &r), Decision::Allow);
    let r = req("DELETE", "/subscriptions/s1", RG_DELETE).by(agent.clone());
    assert_eq!(headers_only(&c, &r), Decision::Allow);
    let r = req("DELETE", RG_PATH, "Unknown").by(agent);
    assert_eq!(headers_only(&c, &r), Decision::Allow);
}

// ---- ordering and outcomes ----

#[test]
fn the_first_matching_rule_wins() {
    let c = config(json!({"default": "deny", "rules": [
        {"id": "allow-admins", "principal": {"roles": ["admin"]}, "action": "allow"},
        {"id": "deny-deletes", "methods": ["DELETE"], "action": "deny", "status": 405},
        {"id": "deny-all-agents", "principal": {"roles": ["agent"]}, "action": "deny"}
    ]}));
    let admin = principal(&["admin", "agent"], &[], true);
    let agent = principal(&["agent"], &[], true);
    let user = principal(&["user"], &[], true);
    assert_eq!(
        headers_only(&c, &req("DELETE", "/x", "op").by(admin)),
        Decision::Allow
    );
    let d = headers_only(&c, &req("DELETE", "/x", "op").by(agent.clone()));
    assert!(
        matches!(&d, Decision::Deny { status: 405, code, .. } if code == "deny-deletes"),
        "{d:?}"
    );
    let d = headers_only(&c, &req("GET", "/x", "op").by(agent));
    assert!(
        matches!(&d, Decision::Deny { status: 403, code, .. } if code == "deny-all-agents"),
        "{d:?}"
    );
    let d = headers_only(&c, &req("GET", "/x", "op").by(user));
    assert!(denied_by(&d, "guard-default"), "{d:?}");

    // Swapping the order changes the outcome.
    let c = config(json!({"default": "allow", "rules": [
        {"id": "deny-deletes", "methods": ["DELETE"], "action": "deny"},
        {"id": "allow-deletes", "methods": ["DELETE"], "action": "allow"}
    ]}));
    assert!(denied_by(
        &headers_only(&c, &req("DELETE", "/", "op")),
        "deny-deletes"
    ));
    let c = config(json!({"default": "deny", "rules": [
        {"id": "allow-deletes", "methods": ["DELETE"], "action": "allow"},
        {"id": "deny-deletes", "methods": ["DELETE"], "action": "deny"}
    ]}));
    assert_eq!(headers_only(&c, &req("DELETE", "/", "op")), Decision::Allow);
}

#[test]
fn the_default_applies_when_no_rule_matches() {
    let rules = json!([{"id": "r", "methods": ["DELETE"], "action": "deny"}]);
    let get = req("GET", "/items/1", "GET /items/1");
    let c = config(json!({"default": "allow", "rules": rules}));
    assert_eq!(headers_only(&c, &get), Decision::Allow);
    let c = config(json!({"default": "deny", "rules": rules}));
    assert_eq!(
        headers_only(&c, &get),
        Decision::Deny {
            status: 403,
            code: "guard-default".into(),
            reason: "GET /items/1 is not allowed (rule guard-default)".into()
        }
    );
    let c = config(
        json!({"default": {"action": "deny", "status": 451, "message": "Not here"}, "rules": rules}),
    );
    assert_eq!(
        headers_only(&c, &get),
        Decision::Deny {
            status: 451,
            code: "guard-default".into(),
            reason: "Not here (rule guard-default)".into()
        }
    );
    let c = config(
        json!({"default": {"action": "require-approval", "approvers": ["ops"], "budget_ms": 0}}),
    );
    assert_eq!(
        headers_only(&c, &get),
        Decision::RequireApproval {
            summary: "GET /items/1 requires approval (rule guard-default)".into(),
            approvers: vec!["ops".into()],
            budget_ms: 0
        }
    );
}

#[test]
fn deny_carries_status_code_and_reason() {
    let c = config(json!({"default": "allow", "rules": [
        {"id": "deny-rg-delete", "operations": [RG_DELETE], "action": "deny", "status": 409,
         "message": "Deleting resource groups is not allowed for agents"},
        {"id": "plain", "methods": ["POST"], "action": "deny"}
    ]}));
    assert_eq!(
        headers_only(&c, &req("DELETE", RG_PATH, RG_DELETE)),
        Decision::Deny {
            status: 409,
            code: "deny-rg-delete".into(),
            reason: "Deleting resource groups is not allowed for agents (rule deny-rg-delete)"
                .into()
        }
    );
    assert_eq!(
        headers_only(&c, &req("POST", "/x", "Microsoft.Compute/register/action")),
        Decision::Deny {
            status: 403,
            code: "plain".into(),
            reason: "Microsoft.Compute/register/action is not allowed (rule plain)".into()
        }
    );
}

#[test]
fn a_long_operation_is_shortened_within_the_contract_bound() {
    let c = config(json!({"default": "deny"}));
    let op = format!("GET /{}", "é".repeat(2000));
    let Decision::Deny { reason, .. } = headers_only(&c, &req("GET", "/", &op)) else {
        panic!("not a deny");
    };
    assert!(reason.len() <= 1024, "{}", reason.len());
    assert!(reason.ends_with("… (rule guard-default)"), "{reason}");
}

#[test]
fn require_approval_carries_summary_approvers_and_budget() {
    let c = config(json!({"default": "allow", "rules": [
        {"id": "hold-deletes", "methods": ["DELETE"], "action": "require-approval",
         "approvers": ["cloud-admins", "sre"], "budget_ms": 300000, "message": "Deletion needs a human"},
        {"id": "hold-posts", "methods": ["POST"], "action": "require-approval",
         "approvers": ["ops"], "budget_ms": 5}
    ]}));
    assert_eq!(
        headers_only(&c, &req("DELETE", RG_PATH, RG_DELETE)),
        Decision::RequireApproval {
            summary: format!("Deletion needs a human: {RG_DELETE} (rule hold-deletes)"),
            approvers: vec!["cloud-admins".into(), "sre".into()],
            budget_ms: 300000
        }
    );
    assert_eq!(
        headers_only(&c, &req("POST", "/x", "POST /x")),
        Decision::RequireApproval {
            summary: "POST /x requires approval (rule hold-posts)".into(),
            approvers: vec!["ops".into()],
            budget_ms: 5
        }
    );
}

// ---- bodies ----

#[test]
fn a_rule_with_body_predicates_asks_for_the_body_at_header_time() {
    let c = config(json!({"default": "allow", "body_limit": 4096, "rules": [
        {"id": "deny-deletes", "methods": ["DELETE"], "action": "deny"},
        {"id": "owner-grants", "methods": ["PUT"], "body": [{"pointer": "/x", "equals": 1}], "action": "deny"}
    ]}));
    let put = req("PUT", "/x", "op");
    assert_eq!(
        decide(&c, &put.facts(), BodyInput::Pending),
        Decision::NeedBody(4096)
    );
    // A rule without body predicates that matches first decides without the body.
    let delete = req("DELETE", "/x", "op");
    assert!(denied_by(
        &decide(&c, &delete.facts(), BodyInput::Pending),
        "deny-deletes"
    ));
    // No rule's other conditions hold: no body needed.
    let get = req("GET", "/x", "op");
    assert_eq!(
        decide(&c, &get.facts(), BodyInput::Pending),
        Decision::Allow
    );
    // In the body phase the rules are walked again with it.
    assert!(denied_by(
        &with_body(&c, &put, &json!({"x": 1})),
        "owner-grants"
    ));
    assert_eq!(with_body(&c, &put, &json!({"x": 2})), Decision::Allow);
}

#[test]
fn body_equals() {
    let c = deny_rule(json!({"body": [{"pointer": "/properties/enabled", "equals": false}]}));
    let r = req("PUT", "/x", "op");
    assert!(denied_by(
        &with_body(&c, &r, &json!({"properties": {"enabled": false}})),
        "r1"
    ));
    assert_eq!(
        with_body(&c, &r, &json!({"properties": {"enabled": true}})),
        Decision::Allow
    );
    assert_eq!(
        with_body(&c, &r, &json!({"properties": {"enabled": "false"}})),
        Decision::Allow
    );
    assert_eq!(
        with_body(&c, &r, &json!({"properties": {}})),
        Decision::Allow
    );
    // Numbers compare by value; structured values compare whole.
    let c = deny_rule(
        json!({"body": [{"pointer": "/n", "equals": 1}, {"pointer": "/o", "equals": {"a": [1, "x"]}}]}),
    );
    assert!(denied_by(
        &with_body(&c, &r, &json!({"n": 1.0, "o": {"a": [1, "x"]}})),
        "r1"
    ));
    assert_eq!(
        with_body(&c, &r, &json!({"n": 1, "o": {"a": [1]}})),
        Decision::Allow
    );
}

#[test]
fn body_in() {
    let c = deny_rule(
        json!({"body": [{"pointer": "/sku/name", "in": ["Premium_LRS", "UltraSSD_LRS"]}]}),
    );
    let r = req("PUT", "/x", "op");
    assert!(denied_by(
        &with_body(&c, &r, &json!({"sku": {"name": "UltraSSD_LRS"}})),
        "r1"
    ));
    assert_eq!(
        with_body(&c, &r, &json!({"sku": {"name": "Standard_LRS"}})),
        Decision::Allow
    );
}

#[test]
fn body_matches_globs_string_values_only() {
    let c = deny_rule(json!({"body": [
        {"pointer": "/properties/roleDefinitionId", "matches": "*/roleDefinitions/8e3af657-*"}
    ]}));
    let r = req("PUT", "/x", "op");
    let owner = json!({"properties": {"roleDefinitionId":
        "/subscriptions/s1/providers/Microsoft.Authorization/roleDefinitions/8e3af657-a8ff-443c-a75c-2fe8c4bcb635"}});
    assert!(denied_by(&with_body(&c, &r, &owner), "r1"));
    let reader = json!({"properties": {"roleDefinitionId":
        "/subscriptions/s1/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7"}});
    assert_eq!(with_body(&c, &r, &reader), Decision::Allow);
    assert_eq!(
        with_body(&c, &r, &json!({"properties": {"roleDefinitionId": 8}})),
        Decision::Allow
    );
    // ARM is case-insensitive: neither upper-case ids nor member names dodge a deny rule.
    let shouted = json!({"Properties": {"RoleDefinitionID":
        "/SUBSCRIPTIONS/s1/providers/Microsoft.Authorization/ROLEDEFINITIONS/8E3AF657-A8FF-443C-A75C-2FE8C4BCB635"}});
    assert!(denied_by(&with_body(&c, &r, &shouted), "r1"));
}

#[test]
fn all_body_predicates_must_hold() {
    let c = deny_rule(
        json!({"body": [{"pointer": "/a", "equals": 1}, {"pointer": "/b", "in": ["x"]}]}),
    );
    let r = req("PUT", "/x", "op");
    assert!(denied_by(
        &with_body(&c, &r, &json!({"a": 1, "b": "x"})),
        "r1"
    ));
    assert_eq!(
        with_body(&c, &r, &json!({"a": 1, "b": "y"})),
        Decision::Allow
    );
    assert_eq!(with_body(&c, &r, &json!({"a": 1})), Decision::Allow);
}

#[test]
fn wildcard_pointers_any_for_deny_every_for_allow() {
    let r = req("PUT", "/x", "op");
    let c = deny_rule(
        json!({"body": [{"pointer": "/properties/permissions/*/actions/*", "equals": "*"}]}),
    );
    let broad =
        json!({"properties": {"permissions": [{"actions": ["read"]}, {"actions": ["x", "*"]}]}});
    assert!(denied_by(&with_body(&c, &r, &broad), "r1"));
    let narrow = json!({"properties": {"permissions": [{"actions": ["read"]}]}});
    assert_eq!(with_body(&c, &r, &narrow), Decision::Allow);

    let c = allow_rule(json!({"body": [{"pointer": "/tags/*", "matches": "team-*"}]}));
    assert_eq!(
        with_body(&c, &r, &json!({"tags": {"a": "team-x", "b": "team-y"}})),
        Decision::Allow
    );
    assert!(denied_by(
        &with_body(&c, &r, &json!({"tags": {"a": "team-x", "b": "other"}})),
        "guard-default"
    ));
    assert!(denied_by(
        &with_body(&c, &r, &json!({"tags": {}})),
        "guard-default"
    ));
}

#[test]
fn an_unusable_body_fails_closed() {
    let deny = deny_rule(json!({"body": [{"pointer": "/x", "equals": true}]}));
    let allow = allow_rule(json!({"body": [{"pointer": "/x", "equals": true}]}));
    let hold = config(json!({"default": "allow", "rules": [
        {"id": "h", "body": [{"pointer": "/x", "equals": true}], "action": "require-approval",
         "approvers": ["ops"], "budget_ms": 1}
    ]}));
    let r = req("PUT", "/x", "op");
    for text in [
        "{not json",
        "",
        "[1,",
        r#"{"x": true, "x": false}"#,
        r#"{"x": false, "X": true}"#,
    ] {
        let body = parse_unambiguous(text).ok();
        assert!(body.is_none(), "{text:?} should be unusable");
        let input = body.as_ref().map_or(BodyInput::Unusable, BodyInput::Json);
        // The deny rule matches even though /x cannot be read...
        assert!(
            denied_by(&decide(&deny, &r.facts(), input), "r1"),
            "{text:?}"
        );
        // ...the require-approval rule too...
        assert!(matches!(
            decide(&hold, &r.facts(), input),
            Decision::RequireApproval { .. }
        ));
        // ...and the allow rule does not.
        assert!(
            denied_by(&decide(&allow, &r.facts(), input), "guard-default"),
            "{text:?}"
        );
    }
    // With a valid body they decide on its content.
    let body = parse_unambiguous(r#"{"x": false}"#).unwrap();
    assert_eq!(with_body(&deny, &r, &body), Decision::Allow);
    assert!(denied_by(&with_body(&allow, &r, &body), "guard-default"));
    let body = parse_unambiguous(r#"{"x": true}"#).unwrap();
    assert!(denied_by(&with_body(&deny, &r, &body), "r1"));
    assert_eq!(with_body(&allow, &r, &body), Decision::Allow);
}

#[test]
fn only_json_bodies_are_offered() {
    assert!(json_offered(Some("application/json")));
    assert!(json_offered(Some("Application/JSON; charset=utf-8")));
    assert!(!json_offered(Some("text/plain")));
    assert!(!json_offered(Some("application/merge-patch+json")));
    assert!(!json_offered(None));
}
