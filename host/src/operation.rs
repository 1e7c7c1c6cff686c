//! The normalized `operation` string plugins see: derived from a request's method, path, query
//! (and, for Blob copies, two headers) according to the route's kind.
//!
//! Anything not recognised becomes [`UNKNOWN`], so a plugin with an allow-list denies it (fail
//! closed). A plugin with a deny-list should deny `Unknown` too.
//!
//! `path` is the request path exactly as on the wire (still percent-encoded, without the query);
//! for `azure-storage` routes with `path_style = true` the caller has already removed the
//! account segment. `query` is the raw query string without the `?`.
//!
//! # `generic`
//!
//! | method | path | operation |
//! |---|---|---|
//! | any | `/a/b%20c` | `GET /a/b%20c` (method, one space, the path as sent; the query is not part of it; an empty path is `/`) |
//!
//! # `azure-arm`: the Azure RBAC operation
//!
//! The path is split into segments, each percent-decoded. It must start with `subscriptions`,
//! `providers` or `tenants`. Segments alternate type, name, type,
//! name …; the keyword `providers` in a type position starts a new namespace (the next segment),
//! and the operation is built from the LAST namespace and the types after it — so an extension
//! resource (a role assignment on a storage account) is the extension's operation. Before any
//! `providers`, the namespace is `Microsoft.Resources`. The verb comes from the method and from
//! whether the path ends on a name or a type:
//!
//! | method | path ends on | operation | example path → operation |
//! |---|---|---|---|
//! | GET, HEAD | a name | `{ns}/{types}/read` | `/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm` → `Microsoft.Compute/virtualMachines/read` |
//! | GET, HEAD | a type (a list, or a sub-resource such as `instanceView`) | `{ns}/{types}/read` | `…/providers/Microsoft.Compute/virtualMachines` → `Microsoft.Compute/virtualMachines/read`; `…/virtualMachines/vm/instanceView` → `Microsoft.Compute/virtualMachines/instanceView/read` |
//! | PUT, PATCH | a name | `{ns}/{types}/write` | `…/providers/Microsoft.Storage/storageAccounts/a/blobServices/default/containers/c` → `Microsoft.Storage/storageAccounts/blobServices/containers/write` |
//! | DELETE | a name | `{ns}/{types}/delete` | `…/providers/Microsoft.Compute/virtualMachines/vm` → `Microsoft.Compute/virtualMachines/delete` |
//! | POST | a type: the action | `{ns}/{types}/{action}/action` | `…/providers/Microsoft.Storage/storageAccounts/a/listKeys` → `Microsoft.Storage/storageAccounts/listKeys/action`; `/subscriptions/s/providers/Microsoft.Compute/register` → `Microsoft.Compute/register/action` |
//! | POST | a name (no action segment) | `Unknown` (ARM has no such operation; labelling it `write` would let an allow-list for writes pass something else) | |
//! | PUT, PATCH, DELETE | a type | `Unknown` | |
//! | any other method | | `Unknown` | |
//!
//! The scopes without a provider, in the implicit `Microsoft.Resources` namespace (the keywords
//! `subscriptions`, `resourceGroups` and `tenants` match case-insensitively and are written in
//! this spelling):
//!
//! | method | path | operation |
//! |---|---|---|
//! | GET, HEAD | `/subscriptions`, `/subscriptions/{s}` | `Microsoft.Resources/subscriptions/read` |
//! | GET, HEAD | `/subscriptions/{s}/resourceGroups`, `/subscriptions/{s}/resourcegroups/{rg}` | `Microsoft.Resources/subscriptions/resourceGroups/read` |
//! | PUT, PATCH | `/subscriptions/{s}/resourceGroups/{rg}` | `Microsoft.Resources/subscriptions/resourceGroups/write` |
//! | DELETE | `/subscriptions/{s}/resourceGroups/{rg}` | `Microsoft.Resources/subscriptions/resourceGroups/delete` |
//! | POST | `/subscriptions/{s}/resourceGroups/{rg}/moveResources` | `Microsoft.Resources/subscriptions/resourceGroups/moveResources/action` |
//! | GET | `/subscriptions/{s}/resourceGroups/{rg}/resources` | `Microsoft.Resources/subscriptions/resourceGroups/resources/read` |
//! | GET | `/subscriptions/{s}/locations` | `Microsoft.Resources/subscriptions/locations/read` |
//! | GET, HEAD | `/subscriptions/{s}/providers`, `/subscriptions/{s}/providers/{ns}` | `Microsoft.Resources/subscriptions/providers/read` |
//! | GET | `/tenants` | `Microsoft.Resources/tenants/read` |
//! | any | `/providers/Microsoft.Authorization/roleDefinitions` (tenant scope) | `Microsoft.Authorization/roleDefinitions/read` |
//! | PUT | `/subscriptions/{s}/providers/Microsoft.Authorization/roleAssignments/{id}` | `Microsoft.Authorization/roleAssignments/write` |
//! | PUT | `…/storageAccounts/a/providers/Microsoft.Authorization/roleAssignments/{id}` (extension resource) | `Microsoft.Authorization/roleAssignments/write` |
//! | PUT | `/providers/Microsoft.Management/managementGroups/mg/providers/Microsoft.Authorization/roleAssignments/{id}` | `Microsoft.Authorization/roleAssignments/write` |
//!
//! Namespace and type segments are kept as sent (after percent-decoding): a client that writes
//! `microsoft.compute/VIRTUALMACHINES` gets `microsoft.compute/VIRTUALMACHINES/delete`. Azure
//! treats RBAC operations case-insensitively, so **plugins must compare operations
//! case-insensitively** or a differently-cased request slips past a deny rule.
//!
//! `Unknown` also for: a path not starting with `subscriptions`, `providers` or `tenants`; `/`;
//! an empty segment (`//`); a segment that decodes to `.`, `..` or contains `/` (`%2F`), or is
//! not UTF-8; `providers` not followed by a namespace (except the subscription's provider list
//! above); a namespace with no type (except the provider read above). One trailing `/` is
//! ignored. The query (`api-version`) plays no part.
//!
//! # `azure-storage`: the Blob service operation
//!
//! Decided by the method, the level of the path (account root `/`; container `/{c}`; blob
//! `/{c}/{b}`, where the blob name may contain `/`), and the `restype` and `comp` query
//! parameters (names and values percent-decoded and matched case-insensitively; the same
//! parameter twice is `Unknown`). Other query parameters (`timeout`, `prefix`, `snapshot`,
//! `versionid`, …) play no part. A trailing `/` after a container (`/{c}/`) is the container.
//!
//! | method | level | restype | comp | operation |
//! |---|---|---|---|---|
//! | GET | account | | `list` | `ListContainers` |
//! | GET | account | `service` | `properties` | `GetServiceProperties` |
//! | PUT | account | `service` | `properties` | `SetServiceProperties` |
//! | GET | account | `service` | `stats` | `GetServiceStats` |
//! | POST | account | `service` | `userdelegationkey` | `GetUserDelegationKey` |
//! | POST | account | `service` | `batch` | `BlobBatch` |
//! | GET | account | | `blobs` | `FindBlobsByTags` |
//! | GET, HEAD | any level | `account` | `properties` | `GetAccountInformation` |
//! | PUT | container | `container` | | `CreateContainer` |
//! | DELETE | container | `container` | | `DeleteContainer` |
//! | GET, HEAD | container | `container` | | `GetContainerProperties` |
//! | GET, HEAD | container | `container` | `metadata` | `GetContainerMetadata` |
//! | PUT | container | `container` | `metadata` | `SetContainerMetadata` |
//! | GET, HEAD | container | `container` | `acl` | `GetContainerAcl` |
//! | PUT | container | `container` | `acl` | `SetContainerAcl` |
//! | PUT | container | `container` | `lease` | `LeaseContainer` |
//! | GET | container | `container` | `list` | `ListBlobs` |
//! | GET | container | `container` | `blobs` | `FindBlobsByTags` |
//! | PUT | container | `container` | `undelete` | `RestoreContainer` |
//! | PUT | container | `container` | `rename` | `RenameContainer` |
//! | POST | container | `container` | `batch` | `BlobBatch` |
//! | PUT | blob | | | `PutBlob`; with header `x-ms-copy-source`: `CopyBlob`, or `CopyBlobFromUrl` when `x-ms-requires-sync: true`, or `PutBlobFromUrl` when `x-ms-blob-type` is also set |
//! | GET | blob | | | `GetBlob` |
//! | HEAD | blob | | | `GetBlobProperties` |
//! | DELETE | blob | | | `DeleteBlob` |
//! | PUT | blob | | `properties` | `SetBlobProperties` |
//! | GET, HEAD | blob | | `metadata` | `GetBlobMetadata` |
//! | PUT | blob | | `metadata` | `SetBlobMetadata` |
//! | PUT | blob | | `block` | `PutBlock`; with `x-ms-copy-source`: `PutBlockFromUrl` |
//! | PUT | blob | | `blocklist` | `PutBlockList` |
//! | GET | blob | | `blocklist` | `GetBlockList` |
//! | PUT | blob | | `page` | `PutPage`; with `x-ms-copy-source`: `PutPageFromUrl` |
//! | GET | blob | | `pagelist` | `GetPageRanges` |
//! | PUT | blob | | `appendblock` | `AppendBlock`; with `x-ms-copy-source`: `AppendBlockFromUrl` |
//! | PUT | blob | | `snapshot` | `SnapshotBlob` |
//! | PUT | blob | | `lease` | `LeaseBlob` |
//! | PUT | blob | | `tier` | `SetBlobTier` |
//! | PUT | blob | | `undelete` | `UndeleteBlob` |
//! | PUT | blob | | `copy` | `AbortCopyBlob` |
//! | PUT | blob | | `incrementalcopy` | `IncrementalCopyBlob` |
//! | GET | blob | | `tags` | `GetBlobTags` |
//! | PUT | blob | | `tags` | `SetBlobTags` |
//! | PUT | blob | | `expiry` | `SetBlobExpiry` |
//! | PUT | blob | | `immutabilitypolicies` | `SetBlobImmutabilityPolicy` |
//! | DELETE | blob | | `immutabilitypolicies` | `DeleteBlobImmutabilityPolicy` |
//! | PUT | blob | | `legalhold` | `SetBlobLegalHold` |
//! | POST | blob | | `query` | `QueryBlobContents` |
//!
//! Notes for rule writers:
//! - A container-level path WITHOUT `restype=container` addresses a blob in the `$root`
//!   container, as Azure does: `GET /report.txt` is `GetBlob`, `DELETE /c` is `DeleteBlob`.
//! - The copy operations read a source blob that, in the same account, Azure authorizes with the
//!   gateway's own Shared Key: allowing `CopyBlob` into a container allows reading any blob of
//!   the account into it. The source (`x-ms-copy-source`) is in the headers plugins see.
//! - `BlobBatch` carries many sub-requests (deletes, tier changes) in its body; allowing it
//!   allows all of them.
//! - Every other combination (a `restype` the level does not take, a blob path with `restype`,
//!   an unlisted `comp`, a method the row does not name, an empty container name, a container
//!   name that decodes to contain `/`) is `Unknown`.
use http::{HeaderMap, Method};
use percent_encoding::percent_decode_str;

use crate::config::RouteKind;

/// The operation of anything not recognised.
pub const UNKNOWN: &str = "Unknown";

/// The operation string plugins see for a request to a route of `kind` (see the module docs for
/// the table). `path` is as on the wire, without the query; `query` without the `?`; `headers`
/// are the client's (only `azure-storage` reads two of them, to tell copies from uploads).
pub fn derive(
    kind: RouteKind,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> String {
    match kind {
        RouteKind::Generic => {
            let path = if path.is_empty() { "/" } else { path };
            format!("{method} {path}")
        }
        RouteKind::AzureArm => arm_operation(method, path).unwrap_or_else(|| UNKNOWN.to_string()),
        RouteKind::AzureStorage => blob_operation(method, path, query, headers)
            .unwrap_or(UNKNOWN)
            .to_string(),
    }
}

/// What a method does to an ARM resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArmVerb {
    Read,
    Write,
    Delete,
    Action,
}

fn arm_verb(method: &Method) -> Option<ArmVerb> {
    match *method {
        Method::GET | Method::HEAD => Some(ArmVerb::Read),
        Method::PUT | Method::PATCH => Some(ArmVerb::Write),
        Method::DELETE => Some(ArmVerb::Delete),
        Method::POST => Some(ArmVerb::Action),
        _ => None,
    }
}

/// The keywords of the implicit `Microsoft.Resources` scope, in their canonical spelling.
const RESOURCES_KEYWORDS: [&str; 3] = ["subscriptions", "resourceGroups", "tenants"];

fn arm_operation(method: &Method, path: &str) -> Option<String> {
    let verb = arm_verb(method)?;
    let segments = decode_segments(path)?;
    let first = segments.first()?;
    if !["subscriptions", "providers", "tenants"]
        .iter()
        .any(|k| first.eq_ignore_ascii_case(k))
    {
        return None;
    }
    // Walk the type/name alternation; `providers` in a type position opens a new namespace.
    let mut namespace: Option<&str> = None;
    let mut section_start = 0;
    let mut i = 0;
    while i < segments.len() {
        let at_type = (i - section_start) % 2 == 0;
        if at_type && segments[i].eq_ignore_ascii_case("providers") {
            let scope = &segments[section_start..i];
            let implicit_scope = namespace.is_none();
            match segments.get(i + 1) {
                Some(ns) => namespace = Some(ns),
                None => {
                    // `/subscriptions/{s}/providers`: the subscription's resource providers.
                    return subscription_providers_read(implicit_scope, scope, verb);
                }
            }
            section_start = i + 2;
            if section_start == segments.len() {
                // `/subscriptions/{s}/providers/{ns}`: one resource provider's registration.
                return subscription_providers_read(implicit_scope, scope, verb);
            }
            i = section_start;
            continue;
        }
        i += 1;
    }
    let rest = &segments[section_start..];
    let mut types: Vec<&str> = rest.iter().step_by(2).map(String::as_str).collect();
    let ends_on_type = rest.len() % 2 == 1;
    let namespace = match namespace {
        Some(ns) => ns,
        None => {
            for t in &mut types {
                if let Some(k) = RESOURCES_KEYWORDS
                    .iter()
                    .find(|k| t.eq_ignore_ascii_case(k))
                {
                    *t = k;
                }
            }
            "Microsoft.Resources"
        }
    };
    let suffix = match (verb, ends_on_type) {
        (ArmVerb::Read, _) => "read",
        (ArmVerb::Write, false) => "write",
        (ArmVerb::Delete, false) => "delete",
        (ArmVerb::Action, true) => "action",
        _ => return None,
    };
    Some(format!("{namespace}/{}/{suffix}", types.join("/")))
}

/// `Microsoft.Resources/subscriptions/providers/read` for a read of `/subscriptions/{s}/providers[/{ns}]`.
fn subscription_providers_read(
    implicit_scope: bool,
    scope: &[String],
    verb: ArmVerb,
) -> Option<String> {
    let is_subscription =
        implicit_scope && scope.len() == 2 && scope[0].eq_ignore_ascii_case("subscriptions");
    (is_subscription && verb == ArmVerb::Read)
        .then(|| "Microsoft.Resources/subscriptions/providers/read".to_string())
}

/// The percent-decoded segments of an absolute path; `None` for anything ambiguous.
fn decode_segments(path: &str) -> Option<Vec<String>> {
    let inner = path.strip_prefix('/')?;
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if inner.is_empty() {
        return Some(Vec::new());
    }
    inner
        .split('/')
        .map(|raw| {
            let segment = percent_decode_str(raw).decode_utf8().ok()?;
            let ambiguous =
                segment.is_empty() || segment == "." || segment == ".." || segment.contains('/');
            (!ambiguous).then(|| segment.into_owned())
        })
        .collect()
}

/// Where a Blob request points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Account,
    /// `/{c}`: a container, or (without `restype=container`) a blob in `$root`.
    Container,
    Blob,
}

fn blob_level(path: &str) -> Option<Level> {
    let inner = path.strip_prefix('/').unwrap_or(path);
    if inner.is_empty() {
        return Some(Level::Account);
    }
    let (container, blob) = match inner.split_once('/') {
        Some((c, b)) => (c, b),
        None => (inner, ""),
    };
    let container = percent_decode_str(container).decode_utf8().ok()?;
    if container.is_empty() || container.contains('/') {
        return None;
    }
    Some(if blob.is_empty() {
        Level::Container
    } else {
        Level::Blob
    })
}

/// The `restype` and `comp` query parameters, decoded and lower-cased.
#[derive(Debug, Default)]
struct BlobQuery {
    restype: Option<String>,
    comp: Option<String>,
}

fn blob_query(query: Option<&str>) -> Option<BlobQuery> {
    let mut parsed = BlobQuery::default();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode_str(name)
            .decode_utf8()
            .ok()?
            .to_ascii_lowercase();
        let slot = match name.as_str() {
            "restype" => &mut parsed.restype,
            "comp" => &mut parsed.comp,
            _ => continue,
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(
            percent_decode_str(value)
                .decode_utf8()
                .ok()?
                .to_ascii_lowercase(),
        );
    }
    Some(parsed)
}

fn blob_operation(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Option<&'static str> {
    let level = blob_level(path)?;
    let q = blob_query(query)?;
    let restype = q.restype.as_deref();
    let comp = q.comp.as_deref();
    let read = *method == Method::GET || *method == Method::HEAD;
    if read && restype == Some("account") && comp == Some("properties") {
        return Some("GetAccountInformation");
    }
    match (level, restype) {
        (Level::Account, _) => account_operation(method, restype, comp),
        (Level::Container, Some("container")) => container_operation(method, comp),
        (Level::Container | Level::Blob, None) => blob_resource_operation(method, comp, headers),
        _ => None,
    }
}

fn account_operation(
    method: &Method,
    restype: Option<&str>,
    comp: Option<&str>,
) -> Option<&'static str> {
    Some(match (method.as_str(), restype, comp?) {
        ("GET", None, "list") => "ListContainers",
        ("GET", None, "blobs") => "FindBlobsByTags",
        ("GET", Some("service"), "properties") => "GetServiceProperties",
        ("PUT", Some("service"), "properties") => "SetServiceProperties",
        ("GET", Some("service"), "stats") => "GetServiceStats",
        ("POST", Some("service"), "userdelegationkey") => "GetUserDelegationKey",
        ("POST", Some("service"), "batch") => "BlobBatch",
        _ => return None,
    })
}

fn container_operation(method: &Method, comp: Option<&str>) -> Option<&'static str> {
    Some(match (method.as_str(), comp) {
        ("PUT", None) => "CreateContainer",
        ("DELETE", None) => "DeleteContainer",
        ("GET" | "HEAD", None) => "GetContainerProperties",
        ("GET" | "HEAD", Some("metadata")) => "GetContainerMetadata",
        ("PUT", Some("metadata")) => "SetContainerMetadata",
        ("GET" | "HEAD", Some("acl")) => "GetContainerAcl",
        ("PUT", Some("acl")) => "SetContainerAcl",
        ("PUT", Some("lease")) => "LeaseContainer",
        ("GET", Some("list")) => "ListBlobs",
        ("GET", Some("blobs")) => "FindBlobsByTags",
        ("PUT", Some("undelete")) => "RestoreContainer",
        ("PUT", Some("rename")) => "RenameContainer",
        ("POST", Some("batch")) => "BlobBatch",
        _ => return None,
    })
}

fn blob_resource_operation(
    method: &Method,
    comp: Option<&str>,
    headers: &HeaderMap,
) -> Option<&'static str> {
    let copy = headers.contains_key("x-ms-copy-source");
    Some(match (method.as_str(), comp) {
        ("PUT", None) if copy => {
            let sync = headers
                .get("x-ms-requires-sync")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
            if sync {
                "CopyBlobFromUrl"
            } else if headers.contains_key("x-ms-blob-type") {
                "PutBlobFromUrl"
            } else {
                "CopyBlob"
            }
        }
        ("PUT", None) => "PutBlob",
        ("GET", None) => "GetBlob",
        ("HEAD", None) => "GetBlobProperties",
        ("DELETE", None) => "DeleteBlob",
        ("PUT", Some("properties")) => "SetBlobProperties",
        ("GET" | "HEAD", Some("metadata")) => "GetBlobMetadata",
        ("PUT", Some("metadata")) => "SetBlobMetadata",
        ("PUT", Some("block")) if copy => "PutBlockFromUrl",
        ("PUT", Some("block")) => "PutBlock",
        ("PUT", Some("blocklist")) => "PutBlockList",
        ("GET", Some("blocklist")) => "GetBlockList",
        ("PUT", Some("page")) if copy => "PutPageFromUrl",
        ("PUT", Some("page")) => "PutPage",
        ("GET", Some("pagelist")) => "GetPageRanges",
        ("PUT", Some("appendblock")) if copy => "AppendBlockFromUrl",
        ("PUT", Some("appendblock")) => "AppendBlock",
        ("PUT", Some("snapshot")) => "SnapshotBlob",
        ("PUT", Some("lease")) => "LeaseBlob",
        ("PUT", Some("tier")) => "SetBlobTier",
        ("PUT", Some("undelete")) => "UndeleteBlob",
        ("PUT", Some("copy")) => "AbortCopyBlob",
        ("PUT", Some("incrementalcopy")) => "IncrementalCopyBlob",
        ("GET", Some("tags")) => "GetBlobTags",
        ("PUT", Some("tags")) => "SetBlobTags",
        ("PUT", Some("expiry")) => "SetBlobExpiry",
        ("PUT", Some("immutabilitypolicies")) => "SetBlobImmutabilityPolicy",
        ("DELETE", Some("immutabilitypolicies")) => "DeleteBlobImmutabilityPolicy",
        ("PUT", Some("legalhold")) => "SetBlobLegalHold",
        ("POST", Some("query")) => "QueryBlobContents",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The operation for `target` (path and query) with no headers.
    fn op(kind: RouteKind, method: &str, target: &str) -> String {
        op_with(kind, method, target, &[])
    }

    fn op_with(kind: RouteKind, method: &str, target: &str, headers: &[(&str, &str)]) -> String {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        derive(kind, &method, path, query, &map)
    }

    fn arm(method: &str, path: &str) -> String {
        op(RouteKind::AzureArm, method, path)
    }

    fn blob(method: &str, target: &str) -> String {
        op(RouteKind::AzureStorage, method, target)
    }

    const RG: &str = "/subscriptions/0000-11/resourceGroups/rg1";

    #[test]
    fn generic_is_method_and_path_without_query() {
        let g = |m, t| op(RouteKind::Generic, m, t);
        assert_eq!(g("GET", "/a/b%20c?x=1"), "GET /a/b%20c");
        assert_eq!(g("DELETE", "/items/7"), "DELETE /items/7");
        assert_eq!(g("PATCH", ""), "PATCH /");
        assert_eq!(g("PURGE", "/cache"), "PURGE /cache");
    }

    #[test]
    fn arm_resource_verbs_follow_the_method() {
        let vm = format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm1");
        assert_eq!(arm("GET", &vm), "Microsoft.Compute/virtualMachines/read");
        assert_eq!(arm("HEAD", &vm), "Microsoft.Compute/virtualMachines/read");
        assert_eq!(arm("PUT", &vm), "Microsoft.Compute/virtualMachines/write");
        assert_eq!(arm("PATCH", &vm), "Microsoft.Compute/virtualMachines/write");
        assert_eq!(
            arm("DELETE", &vm),
            "Microsoft.Compute/virtualMachines/delete"
        );
        assert_eq!(arm("OPTIONS", &vm), UNKNOWN);
        assert_eq!(arm("TRACE", &vm), UNKNOWN);
    }

    #[test]
    fn arm_lists_and_sub_resources_are_reads() {
        let list = format!("{RG}/providers/Microsoft.Compute/virtualMachines");
        assert_eq!(arm("GET", &list), "Microsoft.Compute/virtualMachines/read");
        assert_eq!(
            arm(
                "GET",
                "/subscriptions/s/providers/Microsoft.Compute/virtualMachines"
            ),
            "Microsoft.Compute/virtualMachines/read"
        );
        let view = format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm1/instanceView");
        assert_eq!(
            arm("GET", &view),
            "Microsoft.Compute/virtualMachines/instanceView/read"
        );
        assert_eq!(
            arm(
                "GET",
                "/subscriptions/s/providers/Microsoft.Compute/locations/westeurope/usages"
            ),
            "Microsoft.Compute/locations/usages/read"
        );
    }

    #[test]
    fn arm_child_resources_list_every_type() {
        let c = format!(
            "{RG}/providers/Microsoft.Storage/storageAccounts/acct/blobServices/default/containers/c1"
        );
        assert_eq!(
            arm("PUT", &c),
            "Microsoft.Storage/storageAccounts/blobServices/containers/write"
        );
        assert_eq!(
            arm("DELETE", &c),
            "Microsoft.Storage/storageAccounts/blobServices/containers/delete"
        );
    }

    #[test]
    fn arm_post_to_an_action_segment_is_an_action() {
        let keys = format!("{RG}/providers/Microsoft.Storage/storageAccounts/acct/listKeys");
        assert_eq!(
            arm("POST", &keys),
            "Microsoft.Storage/storageAccounts/listKeys/action"
        );
        let start = format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm1/start");
        assert_eq!(
            arm("POST", &start),
            "Microsoft.Compute/virtualMachines/start/action"
        );
        assert_eq!(
            arm(
                "POST",
                "/subscriptions/s/providers/Microsoft.Compute/register"
            ),
            "Microsoft.Compute/register/action"
        );
        assert_eq!(
            arm(
                "POST",
                "/subscriptions/s/providers/Microsoft.Storage/checkNameAvailability"
            ),
            "Microsoft.Storage/checkNameAvailability/action"
        );
        assert_eq!(
            arm("POST", &format!("{RG}/moveResources")),
            "Microsoft.Resources/subscriptions/resourceGroups/moveResources/action"
        );
    }

    #[test]
    fn arm_post_without_action_and_writes_to_lists_are_unknown() {
        let vm = format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm1");
        assert_eq!(arm("POST", &vm), UNKNOWN);
        assert_eq!(arm("POST", RG), UNKNOWN);
        let list = format!("{RG}/providers/Microsoft.Compute/virtualMachines");
        assert_eq!(arm("PUT", &list), UNKNOWN);
        assert_eq!(arm("PATCH", &list), UNKNOWN);
        assert_eq!(arm("DELETE", &list), UNKNOWN);
    }

    #[test]
    fn arm_resource_groups_and_subscriptions() {
        assert_eq!(
            arm("GET", RG),
            "Microsoft.Resources/subscriptions/resourceGroups/read"
        );
        assert_eq!(
            arm("HEAD", RG),
            "Microsoft.Resources/subscriptions/resourceGroups/read"
        );
        assert_eq!(
            arm("PUT", RG),
            "Microsoft.Resources/subscriptions/resourceGroups/write"
        );
        assert_eq!(
            arm("PATCH", RG),
            "Microsoft.Resources/subscriptions/resourceGroups/write"
        );
        assert_eq!(
            arm("DELETE", RG),
            "Microsoft.Resources/subscriptions/resourceGroups/delete"
        );
        assert_eq!(
            arm("GET", "/subscriptions/s/resourceGroups"),
            "Microsoft.Resources/subscriptions/resourceGroups/read"
        );
        assert_eq!(
            arm("GET", "/subscriptions"),
            "Microsoft.Resources/subscriptions/read"
        );
        assert_eq!(
            arm("GET", "/subscriptions/s"),
            "Microsoft.Resources/subscriptions/read"
        );
        assert_eq!(
            arm("HEAD", "/subscriptions/s"),
            "Microsoft.Resources/subscriptions/read"
        );
        assert_eq!(
            arm("GET", &format!("{RG}/resources")),
            "Microsoft.Resources/subscriptions/resourceGroups/resources/read"
        );
        assert_eq!(
            arm("GET", "/subscriptions/s/locations"),
            "Microsoft.Resources/subscriptions/locations/read"
        );
        assert_eq!(arm("GET", "/tenants"), "Microsoft.Resources/tenants/read");
    }

    #[test]
    fn arm_subscription_provider_list_and_registration_are_reads() {
        let read = "Microsoft.Resources/subscriptions/providers/read";
        assert_eq!(arm("GET", "/subscriptions/s/providers"), read);
        assert_eq!(
            arm("GET", "/subscriptions/s/providers/Microsoft.Compute"),
            read
        );
        assert_eq!(
            arm("HEAD", "/subscriptions/s/providers/Microsoft.Compute/"),
            read
        );
        assert_eq!(
            arm("PUT", "/subscriptions/s/providers/Microsoft.Compute"),
            UNKNOWN
        );
        assert_eq!(arm("POST", "/subscriptions/s/providers"), UNKNOWN);
        // Not at subscription scope: no such operation.
        assert_eq!(arm("GET", &format!("{RG}/providers")), UNKNOWN);
        assert_eq!(
            arm("GET", &format!("{RG}/providers/Microsoft.Compute")),
            UNKNOWN
        );
        assert_eq!(arm("GET", "/providers"), UNKNOWN);
        assert_eq!(arm("GET", "/providers/Microsoft.Compute"), UNKNOWN);
        let nested =
            "/providers/Microsoft.Management/managementGroups/mg/providers/Microsoft.Authorization";
        assert_eq!(arm("GET", nested), UNKNOWN);
    }

    #[test]
    fn arm_extension_resources_use_the_last_provider() {
        let on_account = format!(
            "{RG}/providers/Microsoft.Storage/storageAccounts/acct/providers/Microsoft.Authorization/roleAssignments/ra1"
        );
        assert_eq!(
            arm("PUT", &on_account),
            "Microsoft.Authorization/roleAssignments/write"
        );
        assert_eq!(
            arm("DELETE", &on_account),
            "Microsoft.Authorization/roleAssignments/delete"
        );
        assert_eq!(
            arm(
                "PUT",
                "/subscriptions/s/providers/Microsoft.Authorization/roleAssignments/ra1"
            ),
            "Microsoft.Authorization/roleAssignments/write"
        );
        assert_eq!(
            arm(
                "PUT",
                &format!("{RG}/providers/Microsoft.Authorization/roleAssignments/ra1")
            ),
            "Microsoft.Authorization/roleAssignments/write"
        );
        assert_eq!(
            arm(
                "PUT",
                "/providers/Microsoft.Management/managementGroups/mg/providers/Microsoft.Authorization/roleAssignments/ra1"
            ),
            "Microsoft.Authorization/roleAssignments/write"
        );
        assert_eq!(
            arm("GET", "/providers/Microsoft.Authorization/roleDefinitions"),
            "Microsoft.Authorization/roleDefinitions/read"
        );
        assert_eq!(
            arm(
                "PUT",
                &format!("{RG}/providers/Microsoft.Resources/deployments/d1")
            ),
            "Microsoft.Resources/deployments/write"
        );
    }

    #[test]
    fn arm_keywords_match_case_insensitively_and_other_segments_keep_their_case() {
        assert_eq!(
            arm("DELETE", "/SUBSCRIPTIONS/s/RESOURCEGROUPS/rg"),
            "Microsoft.Resources/subscriptions/resourceGroups/delete"
        );
        assert_eq!(
            arm(
                "DELETE",
                "/subscriptions/s/resourcegroups/rg/PROVIDERS/microsoft.compute/VIRTUALMACHINES/vm"
            ),
            "microsoft.compute/VIRTUALMACHINES/delete"
        );
        assert_eq!(
            arm("GET", "/Providers/Microsoft.Authorization/roleDefinitions"),
            "Microsoft.Authorization/roleDefinitions/read"
        );
    }

    #[test]
    fn arm_segments_are_percent_decoded() {
        assert_eq!(
            arm(
                "DELETE",
                "/subscriptions/s/resourceGroups/rg/%70roviders/Microsoft.Compute/virtual%4Dachines/my%20vm"
            ),
            "Microsoft.Compute/virtualMachines/delete"
        );
        assert_eq!(
            arm("GET", "/%73ubscriptions/s"),
            "Microsoft.Resources/subscriptions/read"
        );
    }

    #[test]
    fn arm_ambiguous_or_foreign_paths_are_unknown() {
        for path in [
            "/",
            "",
            "/metadata/endpoints",
            "/subscriptions//resourceGroups/rg",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines%2Fextensions/vm",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm/../../Microsoft.Storage/storageAccounts/a",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/./vm",
            "/subscriptions/s/resourceGroups/%FF",
            "subscriptions/s",
        ] {
            assert_eq!(arm("GET", path), UNKNOWN, "{path}");
        }
        // One trailing slash is tolerated.
        assert_eq!(
            arm("GET", "/subscriptions/s/"),
            "Microsoft.Resources/subscriptions/read"
        );
    }

    #[test]
    fn arm_ignores_the_query() {
        assert_eq!(
            arm("GET", "/subscriptions/s?api-version=2022-12-01&comp=list"),
            "Microsoft.Resources/subscriptions/read"
        );
    }

    #[test]
    fn blob_account_operations() {
        assert_eq!(blob("GET", "/?comp=list"), "ListContainers");
        assert_eq!(blob("GET", "?comp=list&prefix=a"), "ListContainers");
        assert_eq!(
            blob("GET", "/?restype=service&comp=properties"),
            "GetServiceProperties"
        );
        assert_eq!(
            blob("PUT", "/?restype=service&comp=properties"),
            "SetServiceProperties"
        );
        assert_eq!(
            blob("GET", "/?restype=service&comp=stats"),
            "GetServiceStats"
        );
        assert_eq!(
            blob("POST", "/?restype=service&comp=userdelegationkey"),
            "GetUserDelegationKey"
        );
        assert_eq!(blob("POST", "/?restype=service&comp=batch"), "BlobBatch");
        assert_eq!(
            blob("GET", "/?comp=blobs&where=%22a%22%3D%27b%27"),
            "FindBlobsByTags"
        );
        assert_eq!(
            blob("GET", "/?restype=account&comp=properties"),
            "GetAccountInformation"
        );
        assert_eq!(
            blob("HEAD", "/?restype=account&comp=properties"),
            "GetAccountInformation"
        );
        assert_eq!(
            blob("GET", "/c?restype=account&comp=properties"),
            "GetAccountInformation"
        );
        assert_eq!(
            blob("HEAD", "/c/b?restype=account&comp=properties"),
            "GetAccountInformation"
        );
    }

    #[test]
    fn blob_container_operations() {
        assert_eq!(blob("PUT", "/c?restype=container"), "CreateContainer");
        assert_eq!(blob("DELETE", "/c?restype=container"), "DeleteContainer");
        assert_eq!(
            blob("GET", "/c?restype=container"),
            "GetContainerProperties"
        );
        assert_eq!(
            blob("HEAD", "/c?restype=container"),
            "GetContainerProperties"
        );
        assert_eq!(
            blob("GET", "/c?restype=container&comp=metadata"),
            "GetContainerMetadata"
        );
        assert_eq!(
            blob("HEAD", "/c?restype=container&comp=metadata"),
            "GetContainerMetadata"
        );
        assert_eq!(
            blob("PUT", "/c?restype=container&comp=metadata"),
            "SetContainerMetadata"
        );
        assert_eq!(
            blob("GET", "/c?restype=container&comp=acl"),
            "GetContainerAcl"
        );
        assert_eq!(
            blob("HEAD", "/c?restype=container&comp=acl"),
            "GetContainerAcl"
        );
        assert_eq!(
            blob("PUT", "/c?restype=container&comp=acl"),
            "SetContainerAcl"
        );
        assert_eq!(
            blob("PUT", "/c?restype=container&comp=lease"),
            "LeaseContainer"
        );
        assert_eq!(blob("GET", "/c?restype=container&comp=list"), "ListBlobs");
        assert_eq!(
            blob("GET", "/c?comp=list&restype=container&prefix=x/"),
            "ListBlobs"
        );
        assert_eq!(
            blob("GET", "/c?restype=container&comp=blobs"),
            "FindBlobsByTags"
        );
        assert_eq!(
            blob("PUT", "/c?restype=container&comp=undelete"),
            "RestoreContainer"
        );
        assert_eq!(
            blob("PUT", "/c?restype=container&comp=rename"),
            "RenameContainer"
        );
        assert_eq!(blob("POST", "/c?restype=container&comp=batch"), "BlobBatch");
        assert_eq!(blob("GET", "/c/?restype=container&comp=list"), "ListBlobs");
    }

    #[test]
    fn blob_blob_operations() {
        let b = "/c/dir/sub/file.txt";
        let with = |m: &str, q: &str| blob(m, &format!("{b}?{q}"));
        assert_eq!(blob("PUT", b), "PutBlob");
        assert_eq!(blob("GET", b), "GetBlob");
        assert_eq!(blob("HEAD", b), "GetBlobProperties");
        assert_eq!(blob("DELETE", b), "DeleteBlob");
        assert_eq!(
            with("DELETE", "snapshot=2024-01-01T00:00:00Z"),
            "DeleteBlob"
        );
        assert_eq!(with("PUT", "comp=properties"), "SetBlobProperties");
        assert_eq!(with("GET", "comp=metadata"), "GetBlobMetadata");
        assert_eq!(with("HEAD", "comp=metadata"), "GetBlobMetadata");
        assert_eq!(with("PUT", "comp=metadata"), "SetBlobMetadata");
        assert_eq!(with("PUT", "comp=block&blockid=AAAA"), "PutBlock");
        assert_eq!(with("PUT", "comp=blocklist"), "PutBlockList");
        assert_eq!(
            with("GET", "comp=blocklist&blocklisttype=all"),
            "GetBlockList"
        );
        assert_eq!(with("PUT", "comp=page"), "PutPage");
        assert_eq!(with("GET", "comp=pagelist"), "GetPageRanges");
        assert_eq!(with("PUT", "comp=appendblock"), "AppendBlock");
        assert_eq!(with("PUT", "comp=snapshot"), "SnapshotBlob");
        assert_eq!(with("PUT", "comp=lease"), "LeaseBlob");
        assert_eq!(with("PUT", "comp=tier"), "SetBlobTier");
        assert_eq!(with("PUT", "comp=undelete"), "UndeleteBlob");
        assert_eq!(with("PUT", "comp=copy&copyid=1"), "AbortCopyBlob");
        assert_eq!(with("PUT", "comp=incrementalcopy"), "IncrementalCopyBlob");
        assert_eq!(with("GET", "comp=tags"), "GetBlobTags");
        assert_eq!(with("PUT", "comp=tags"), "SetBlobTags");
        assert_eq!(with("PUT", "comp=expiry"), "SetBlobExpiry");
        assert_eq!(
            with("PUT", "comp=immutabilityPolicies"),
            "SetBlobImmutabilityPolicy"
        );
        assert_eq!(
            with("DELETE", "comp=immutabilityPolicies"),
            "DeleteBlobImmutabilityPolicy"
        );
        assert_eq!(with("PUT", "comp=legalhold"), "SetBlobLegalHold");
        assert_eq!(with("POST", "comp=query"), "QueryBlobContents");
    }

    #[test]
    fn blob_copies_are_told_apart_by_their_headers() {
        let s = RouteKind::AzureStorage;
        let src = (
            "x-ms-copy-source",
            "https://acct.blob.core.windows.net/secret/b",
        );
        assert_eq!(op_with(s, "PUT", "/c/b", &[src]), "CopyBlob");
        assert_eq!(
            op_with(s, "PUT", "/c/b", &[src, ("x-ms-requires-sync", "True")]),
            "CopyBlobFromUrl"
        );
        assert_eq!(
            op_with(s, "PUT", "/c/b", &[src, ("x-ms-blob-type", "BlockBlob")]),
            "PutBlobFromUrl"
        );
        assert_eq!(
            op_with(s, "PUT", "/c/b", &[("x-ms-blob-type", "BlockBlob")]),
            "PutBlob"
        );
        assert_eq!(
            op_with(s, "PUT", "/c/b?comp=block", &[src]),
            "PutBlockFromUrl"
        );
        assert_eq!(
            op_with(s, "PUT", "/c/b?comp=page", &[src]),
            "PutPageFromUrl"
        );
        assert_eq!(
            op_with(s, "PUT", "/c/b?comp=appendblock", &[src]),
            "AppendBlockFromUrl"
        );
        assert_eq!(
            op_with(s, "PUT", "/c/b?comp=metadata", &[src]),
            "SetBlobMetadata"
        );
    }

    #[test]
    fn blob_container_path_without_restype_is_a_root_container_blob() {
        assert_eq!(blob("GET", "/report.txt"), "GetBlob");
        assert_eq!(blob("DELETE", "/c"), "DeleteBlob");
        assert_eq!(blob("PUT", "/c"), "PutBlob");
        assert_eq!(blob("PUT", "/c?comp=metadata"), "SetBlobMetadata");
        assert_eq!(blob("GET", "/c?comp=list"), UNKNOWN);
    }

    #[test]
    fn blob_query_is_decoded_and_case_insensitive() {
        assert_eq!(blob("PUT", "/c?RESTYPE=Container"), "CreateContainer");
        assert_eq!(blob("PUT", "/c/b?Comp=BlockList"), "PutBlockList");
        assert_eq!(blob("PUT", "/c/b?%63omp=%6Detadata"), "SetBlobMetadata");
        assert_eq!(
            blob("GET", "/c?restype=container&comp=list&&timeout=30"),
            "ListBlobs"
        );
    }

    #[test]
    fn blob_unknown_and_ambiguous_requests_are_unknown() {
        for (method, target) in [
            ("GET", "/"),
            ("PUT", "/?comp=list"),
            ("GET", "/?restype=container&comp=list"),
            ("GET", "/?restype=service&comp=bogus"),
            ("POST", "/c?restype=container"),
            ("PATCH", "/c?restype=container"),
            ("GET", "/c?restype=container&comp=bogus"),
            ("PUT", "/c?restype=service&comp=properties"),
            ("GET", "/c/b?restype=container"),
            ("GET", "/c/b?comp=bogus"),
            ("POST", "/c/b"),
            ("OPTIONS", "/c/b"),
            ("DELETE", "/c/b?comp=metadata"),
            ("HEAD", "/c?restype=container&comp=list"),
            ("GET", "/c/b?comp=metadata&comp=tags"),
            ("PUT", "/c?restype=container&restype=container"),
            ("GET", "/c/b?comp=%FF"),
            ("GET", "//b"),
            ("GET", "/a%2Fb?restype=container"),
            ("PUT", "/c?restype=&comp=metadata"),
        ] {
            assert_eq!(blob(method, target), UNKNOWN, "{method} {target}");
        }
    }
}
