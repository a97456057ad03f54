//! ARM request paths, read the way ARM routes them: segment by segment, keywords (`subscriptions`,
//! `resourceGroups`, `providers`) matched case-insensitively, each segment percent-decoded on its own,
//! then `providers/{namespace}` followed by `{type}/{name}` pairs (RPC "Resource API reference":
//! `/subscriptions/{s}/resourceGroups/{rg}/providers/{ns}/{type}/{name}[/{type}/{name}]*`, extension
//! resources as another `providers/{ns}/...` block after a resource, management-group scope
//! `/providers/Microsoft.Management/managementGroups/{mg}/providers/...`).
//!
//! The simulator's own reader: it shares no code with the product's `domain::ResourceId`, so a bug in
//! the client's parser cannot hide behind the same bug here.
//!
//! - A path whose last provider block has an odd number of segments ends at a *collection*
//!   (`.../providers/Microsoft.Compute/virtualMachines`): ARM answers it with the list of resources of
//!   that type in that scope (every ARM resource type has its list operation, e.g. the Service Bus spec
//!   `Namespaces_ListByResourceGroup` at `.../providers/Microsoft.ServiceBus/namespaces`). This is where a
//!   client lands when its URL library drops a `..` or `.` segment of an id (the `url` crate's
//!   `PathSegmentsMut::push` skips them; WHATWG URL parsing removes dot segments).
//! - Each segment is percent-decoded by itself, as clients that escape every part of the id expect
//!   (the .NET SDK escapes each part with `Uri.EscapeDataString`; projectkudu/AzureResourceExplorer#97
//!   and PR #98 escape `#` in names to `%23`). A decoded `/` stays inside its segment: ARM routes such a
//!   path rather than splitting it (a capture of a GET whose resource-group segment was
//!   `%2Fsubscriptions%2F...` got as far as api-version validation, 400 `InvalidApiVersionParameter`;
//!   community capture, index id 42478131843). How ARM treats such a name afterwards is not documented:
//!   here it names no resource.
//! - Empty segments and dot segments are refused (400 `InvalidRequestUri` by the caller): what ARM
//!   itself answers to `//` or a raw `..` is not documented in the stored sources (**unconfirmed**), and
//!   HTTP clients normalise dot segments away before sending.

/// Where a path is anchored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `/providers/...` at the tenant root.
    Tenant,
    /// `/providers/Microsoft.Management/managementGroups/{mg}`
    ManagementGroup(String),
    /// `/subscriptions/{s}`
    Subscription(String),
    /// `/subscriptions/{s}/resourceGroups/{rg}`
    ResourceGroup { subscription: String, group: String },
}

/// `providers/{namespace}/{type}/{name}/...`: the segments after the namespace, alternately a type and
/// a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub namespace: String,
    pub segments: Vec<String>,
}

/// A resource or a collection of resources: a scope and one or more provider blocks, the last of which
/// names the resource (earlier ones are the resources an extension resource hangs from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    pub scope: Scope,
    pub blocks: Vec<Block>,
}

/// What an ARM path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/subscriptions`
    Subscriptions,
    /// `/subscriptions/{s}`
    Subscription(String),
    /// `/subscriptions/{s}/resourceGroups`
    ResourceGroups(String),
    /// `/subscriptions/{s}/resourceGroups/{rg}`
    ResourceGroup { subscription: String, group: String },
    /// `/providers/Microsoft.Management/managementGroups/{mg}`
    ManagementGroup(String),
    /// `/subscriptions/{s}/providers/{ns}` or `/providers/{ns}`
    Provider {
        subscription: Option<String>,
        namespace: String,
    },
    /// A resource (`is_collection` false) or a collection of them.
    Resource(ResourcePath),
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes one path segment; `None` for a malformed escape or bytes that are not UTF-8.
pub fn decode_segment(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex(*bytes.get(i + 1)?)?;
            let lo = hex(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn is(seg: &str, keyword: &str) -> bool {
    seg.eq_ignore_ascii_case(keyword)
}

/// Reads a request path (as sent, still percent-encoded). `Err` says why it is not an ARM path.
pub fn parse(raw: &str) -> Result<Route, String> {
    let segs = segments(raw)?;
    match anchor(&segs)? {
        Anchor::Route(route) => Ok(route),
        Anchor::Scope(scope, i) => resource_route(&segs, scope, i),
    }
}

/// The path's segments, each percent-decoded by itself.
fn segments(raw: &str) -> Result<Vec<String>, String> {
    let Some(rest) = raw.strip_prefix('/') else {
        return Err("the path does not start with '/'".into());
    };
    // ARM ignores a trailing slash (the simulator did before too).
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err("the path is empty".into());
    }
    let mut segs = Vec::new();
    for s in rest.split('/') {
        if s.is_empty() {
            return Err("the path has an empty segment".into());
        }
        let d = decode_segment(s).ok_or_else(|| format!("segment '{s}' is not valid"))?;
        if d == "." || d == ".." {
            return Err("the path has a dot segment".into());
        }
        segs.push(d);
    }
    Ok(segs)
}

/// Where a path is anchored: a route of its own, or the scope of the provider blocks that start at
/// segment `i`.
enum Anchor {
    Route(Route),
    Scope(Scope, usize),
}

/// The subscription list, a subscription, its resource groups, a resource group or a management group,
/// or the scope a resource path starts from. `segs` is not empty.
fn anchor(segs: &[String]) -> Result<Anchor, String> {
    let n = segs.len();
    if is(&segs[0], "subscriptions") {
        if n == 1 {
            return Ok(Anchor::Route(Route::Subscriptions));
        }
        let sub = segs[1].clone();
        if n == 2 {
            return Ok(Anchor::Route(Route::Subscription(sub)));
        }
        if !is(&segs[2], "resourceGroups") {
            return Ok(Anchor::Scope(Scope::Subscription(sub), 2));
        }
        if n == 3 {
            return Ok(Anchor::Route(Route::ResourceGroups(sub)));
        }
        let group = segs[3].clone();
        if n == 4 {
            return Ok(Anchor::Route(Route::ResourceGroup {
                subscription: sub,
                group,
            }));
        }
        Ok(Anchor::Scope(
            Scope::ResourceGroup {
                subscription: sub,
                group,
            },
            4,
        ))
    } else if is(&segs[0], "providers") {
        if n >= 4 && is(&segs[1], "Microsoft.Management") && is(&segs[2], "managementGroups") {
            if n == 4 {
                return Ok(Anchor::Route(Route::ManagementGroup(segs[3].clone())));
            }
            Ok(Anchor::Scope(Scope::ManagementGroup(segs[3].clone()), 4))
        } else {
            Ok(Anchor::Scope(Scope::Tenant, 0))
        }
    } else {
        Err(format!("'{}' is not an ARM path", segs[0]))
    }
}

/// The provider blocks from segment `i` on, in `scope`: a resource or a collection, or the providers API
/// of a namespace.
fn resource_route(segs: &[String], scope: Scope, mut i: usize) -> Result<Route, String> {
    let n = segs.len();
    let mut blocks: Vec<Block> = Vec::new();
    while i < n {
        if !is(&segs[i], "providers") {
            return Err(format!("expected 'providers', found '{}'", segs[i]));
        }
        let namespace = segs
            .get(i + 1)
            .ok_or("'providers' without a namespace")?
            .clone();
        i += 2;
        let mut block = Block {
            namespace,
            segments: Vec::new(),
        };
        // `providers` starts a new block only where a type is expected; in a name's place it is a name.
        while i < n && !(block.segments.len().is_multiple_of(2) && is(&segs[i], "providers")) {
            block.segments.push(segs[i].clone());
            i += 1;
        }
        if block.segments.is_empty() {
            // `/subscriptions/{s}/providers/{ns}` and `/providers/{ns}`: the providers API.
            let provider_scope = match &scope {
                Scope::Subscription(s) => Some(Some(s.clone())),
                Scope::Tenant => Some(None),
                _ => None,
            };
            if let (true, Some(subscription)) = (blocks.is_empty() && i == n, provider_scope) {
                return Ok(Route::Provider {
                    subscription,
                    namespace: block.namespace,
                });
            }
            return Err("a namespace without a resource type".into());
        }
        // A block stops only where a type would start, so only the last block can end at a type.
        blocks.push(block);
    }
    if blocks.is_empty() {
        return Err("no resource in the path".into());
    }
    Ok(Route::Resource(ResourcePath { scope, blocks }))
}

impl ResourcePath {
    fn last(&self) -> &Block {
        self.blocks.last().expect("a resource path has a block")
    }

    /// Ends at a type without a name: the list of that type's resources in this scope.
    pub fn is_collection(&self) -> bool {
        !self.last().segments.len().is_multiple_of(2)
    }

    pub fn namespace(&self) -> &str {
        &self.last().namespace
    }

    /// The type below the namespace as the providers API spells it (`sites/slots`).
    pub fn type_path(&self) -> String {
        self.last()
            .segments
            .iter()
            .step_by(2)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("/")
    }

    /// `Namespace/type[/child]`.
    pub fn full_type(&self) -> String {
        format!("{}/{}", self.namespace(), self.type_path())
    }

    /// The resource's own name (`None` for a collection).
    pub fn name(&self) -> Option<&str> {
        (!self.is_collection()).then(|| self.last().segments.last().map(String::as_str))?
    }

    pub fn subscription(&self) -> Option<&str> {
        match &self.scope {
            Scope::Subscription(s)
            | Scope::ResourceGroup {
                subscription: s, ..
            } => Some(s),
            _ => None,
        }
    }

    pub fn resource_group(&self) -> Option<&str> {
        match &self.scope {
            Scope::ResourceGroup { group, .. } => Some(group),
            _ => None,
        }
    }

    pub fn management_group(&self) -> Option<&str> {
        match &self.scope {
            Scope::ManagementGroup(mg) => Some(mg),
            _ => None,
        }
    }

    /// Whether some segment holds a character no path segment of a real id can hold once decoded
    /// (a separator that came in escaped): such a path names no resource.
    pub fn has_escaped_separator(&self) -> bool {
        let bad = |s: &str| s.contains('/') || s.contains('\\');
        let scope_bad = match &self.scope {
            Scope::Tenant => false,
            Scope::ManagementGroup(s) | Scope::Subscription(s) => bad(s),
            Scope::ResourceGroup {
                subscription,
                group,
            } => bad(subscription) || bad(group),
        };
        scope_bad
            || self
                .blocks
                .iter()
                .any(|b| bad(&b.namespace) || b.segments.iter().any(|s| bad(s)))
    }

    /// The path in ARM's casing of keywords and the given casing of everything else
    /// (`/subscriptions/{s}/resourceGroups/{rg}/providers/...`).
    pub fn to_path(&self) -> String {
        let mut out = match &self.scope {
            Scope::Tenant => String::new(),
            Scope::ManagementGroup(mg) => {
                format!("/providers/Microsoft.Management/managementGroups/{mg}")
            }
            Scope::Subscription(s) => format!("/subscriptions/{s}"),
            Scope::ResourceGroup {
                subscription,
                group,
            } => format!("/subscriptions/{subscription}/resourceGroups/{group}"),
        };
        for b in &self.blocks {
            out.push_str("/providers/");
            out.push_str(&b.namespace);
            for s in &b.segments {
                out.push('/');
                out.push_str(s);
            }
        }
        out
    }

    /// The lower-cased id, as the simulated world keys its resources.
    pub fn key(&self) -> String {
        self.to_path().to_ascii_lowercase()
    }

    /// The parent of a nested child (`sites/a/slots/b` -> `sites/a`), within the same block.
    pub fn parent(&self) -> Option<ResourcePath> {
        let last = self.last();
        if last.segments.len() <= 2 {
            return None;
        }
        let mut p = self.clone();
        let keep = if self.is_collection() {
            last.segments.len() - 1
        } else {
            last.segments.len() - 2
        };
        p.blocks
            .last_mut()
            .expect("a block")
            .segments
            .truncate(keep);
        Some(p)
    }

    /// The collection a resource belongs to (its path without its name).
    pub fn collection(&self) -> Option<ResourcePath> {
        if self.is_collection() {
            return None;
        }
        let mut c = self.clone();
        c.blocks.last_mut().expect("a block").segments.pop();
        Some(c)
    }

    /// Whether `member` is a resource of this collection: ARM lists a top-level type at subscription
    /// scope across all its resource groups (`Namespaces_List`), elsewhere the children of one parent.
    pub fn lists(&self, member: &ResourcePath) -> bool {
        if !self.is_collection()
            || member.is_collection()
            || !member.full_type().eq_ignore_ascii_case(&self.full_type())
        {
            return false;
        }
        let Some(coll) = member.collection() else {
            return false;
        };
        match (&self.scope, self.blocks.len(), self.last().segments.len()) {
            (Scope::Subscription(s), 1, 1) => {
                member.blocks.len() == 1
                    && member
                        .subscription()
                        .is_some_and(|m| m.eq_ignore_ascii_case(s))
            }
            _ => coll.key() == self.key(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(p: &str) -> ResourcePath {
        match parse(p) {
            Ok(Route::Resource(r)) => r,
            other => panic!("{p}: {other:?}"),
        }
    }

    #[test]
    fn scopes_and_keywords_are_read_case_insensitively() {
        let r = resource(
            "/SUBSCRIPTIONS/s1/resourcegroups/RG/PROVIDERS/Microsoft.Compute/virtualMachines/vm1",
        );
        assert_eq!(
            r.scope,
            Scope::ResourceGroup {
                subscription: "s1".into(),
                group: "RG".into()
            }
        );
        assert_eq!(r.full_type(), "Microsoft.Compute/virtualMachines");
        assert_eq!(r.name(), Some("vm1"));
        assert!(!r.is_collection());
        assert_eq!(
            r.key(),
            "/subscriptions/s1/resourcegroups/rg/providers/microsoft.compute/virtualmachines/vm1"
        );
    }

    #[test]
    fn a_type_without_a_name_is_a_collection() {
        let c = resource(
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines",
        );
        assert!(c.is_collection());
        assert_eq!(c.name(), None);
        assert_eq!(c.full_type(), "Microsoft.Compute/virtualMachines");
        let vm = resource(
            "/subscriptions/s1/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/a",
        );
        assert!(c.lists(&vm));
        assert_eq!(vm.collection().expect("collection").key(), c.key());
        let other_rg = resource(
            "/subscriptions/s1/resourceGroups/rg2/providers/Microsoft.Compute/virtualMachines/a",
        );
        assert!(!c.lists(&other_rg));
        // At subscription scope a top-level type is listed across resource groups.
        let sub = resource("/subscriptions/s1/providers/Microsoft.Compute/virtualMachines");
        assert!(sub.lists(&vm) && sub.lists(&other_rg));
        let slot = resource(
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Web/sites/app/slots/staging",
        );
        assert!(!sub.lists(&slot));
        let slots =
            resource("/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Web/sites/app/slots");
        assert!(slots.is_collection() && slots.lists(&slot));
        assert_eq!(slots.type_path(), "sites/slots");
        assert_eq!(
            slots.parent().expect("parent").key(),
            "/subscriptions/s1/resourcegroups/rg/providers/microsoft.web/sites/app"
        );
    }

    #[test]
    fn management_groups_providers_and_extension_resources() {
        assert_eq!(
            parse("/providers/Microsoft.Management/managementGroups/root"),
            Ok(Route::ManagementGroup("root".into()))
        );
        let pa = resource(
            "/providers/Microsoft.Management/managementGroups/root/providers/Microsoft.Authorization/policyAssignments/p1",
        );
        assert_eq!(pa.management_group(), Some("root"));
        assert_eq!(pa.full_type(), "Microsoft.Authorization/policyAssignments");
        assert_eq!(
            parse("/subscriptions/s1/providers/Microsoft.Web"),
            Ok(Route::Provider {
                subscription: Some("s1".into()),
                namespace: "Microsoft.Web".into()
            })
        );
        assert_eq!(
            parse("/providers/Microsoft.Web"),
            Ok(Route::Provider {
                subscription: None,
                namespace: "Microsoft.Web".into()
            })
        );
        let ext = resource(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm/providers/Microsoft.ManagedIdentity/identities/default",
        );
        assert_eq!(ext.blocks.len(), 2);
        assert_eq!(ext.full_type(), "Microsoft.ManagedIdentity/identities");
        // `providers` in a name's place is a name.
        let odd =
            resource("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/providers");
        assert_eq!(odd.name(), Some("providers"));
        assert_eq!(parse("/subscriptions"), Ok(Route::Subscriptions));
        assert_eq!(
            parse("/subscriptions/s/resourceGroups/rg/"),
            Ok(Route::ResourceGroup {
                subscription: "s".into(),
                group: "rg".into()
            })
        );
    }

    #[test]
    fn segments_are_decoded_one_by_one() {
        let r = resource(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/certificates/a%23b%20c",
        );
        assert_eq!(r.name(), Some("a#b c"));
        assert!(!r.has_escaped_separator());
        let r = resource(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm%2Fx",
        );
        assert_eq!(r.name(), Some("vm/x"));
        assert!(r.has_escaped_separator());
        let r = resource(
            "/subscriptions/s/resourceGroups/rg%5Cx/providers/Microsoft.Compute/virtualMachines/vm",
        );
        assert!(r.has_escaped_separator());
    }

    #[test]
    fn what_arm_would_not_route_is_refused() {
        for bad in [
            "",
            "subscriptions",
            "/",
            "/v1.0/servicePrincipals",
            "/subscriptions/s//resourceGroups/rg",
            "/subscriptions/s/resourceGroups/rg/providers",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute",
            "/subscriptions/s/resourceGroups/rg/x/y",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/%2e%2e",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/./vm",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/%zz",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/%ff",
        ] {
            assert!(parse(bad).is_err(), "{bad}: {:?}", parse(bad));
        }
    }
}
