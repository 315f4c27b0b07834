//! Route templates (`/v1/users/{owner}/conversations/**`) compiled into a
//! segment trie so that matching cost does not grow with the number of routes:
//! a lookup walks one node per path segment (literal children in a hash map,
//! one parameter child, a `**` tail), backtracking only between a literal and a
//! parameter child at the same depth, and never allocates.
//!
//! Template syntax: starts with `/`; segments are literals, `{name}` (exactly
//! one segment, non-empty), exactly one `{owner}` (the user whose content the
//! route serves), and optionally `**` as the last segment (zero or more further
//! segments). No empty segments.
//!
//! Precedence, when several templates match a path: at each segment a literal
//! beats a parameter, which beats a `**` tail, and a template ending exactly
//! there beats a `**` tail; among templates of the same shape (equal up to
//! parameter names) the one declared first in the policy wins.

use std::collections::HashMap;

/// One policy route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// A stable name for audit records and metrics (defaults to the template).
    pub name: String,
    /// The template as written in the policy.
    pub template: String,
    /// The upstream (a key of the config's `upstreams`).
    pub upstream: String,
}

/// A successful match: the route and the `{owner}` segment of the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch<'r, 'p> {
    pub route: &'r Route,
    pub owner: &'p str,
}

/// One parsed template segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// `{name}`; `{owner}` is marked separately.
    Param,
    Owner,
    /// `**`, only last.
    Tail,
}

/// A template that matched: which route, and at which path segment the owner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Terminal {
    route: usize,
    owner_index: usize,
}

#[derive(Debug, Clone, Default)]
struct Node {
    literals: HashMap<Box<str>, usize>,
    param: Option<usize>,
    /// A template ending exactly at this node.
    end: Option<Terminal>,
    /// A template ending with `**` at this node.
    tail: Option<Terminal>,
}

/// All routes of a policy, compiled.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
    nodes: Vec<Node>,
}

impl Default for RouteTable {
    fn default() -> Self {
        RouteTable {
            routes: Vec::new(),
            nodes: vec![Node::default()],
        }
    }
}

/// Parses a template into segments, or says what is wrong with it.
pub fn parse_template(template: &str) -> Result<Vec<Segment>, String> {
    let rest = template
        .strip_prefix('/')
        .ok_or_else(|| format!("route template `{template}` must start with `/`"))?;
    let raw: Vec<&str> = rest.split('/').collect();
    let mut segs = Vec::with_capacity(raw.len());
    for (i, s) in raw.iter().enumerate() {
        segs.push(parse_segment(template, s, i + 1 == raw.len())?);
    }
    let owners = segs.iter().filter(|s| **s == Segment::Owner).count();
    if owners != 1 {
        return Err(format!(
            "route template `{template}` must have exactly one `{{owner}}` segment (has {owners})"
        ));
    }
    Ok(segs)
}

fn parse_segment(template: &str, s: &str, last: bool) -> Result<Segment, String> {
    if s.is_empty() {
        return Err(format!("route template `{template}` has an empty segment"));
    }
    if s == "**" {
        return if last {
            Ok(Segment::Tail)
        } else {
            Err(format!(
                "route template `{template}`: `**` is allowed only as the last segment"
            ))
        };
    }
    if let Some(name) = s.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
        return param_segment(template, name);
    }
    if s.contains(['{', '}', '*', '%', '\\']) || s == "." || s == ".." {
        return Err(format!(
            "route template `{template}`: `{s}` is not a literal segment, `{{name}}` or a final `**`"
        ));
    }
    Ok(Segment::Literal(s.to_string()))
}

fn param_segment(template: &str, name: &str) -> Result<Segment, String> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (valid, name) {
        (true, "owner") => Ok(Segment::Owner),
        (true, _) => Ok(Segment::Param),
        (false, _) => Err(format!(
            "route template `{template}`: `{{{name}}}` is not a valid parameter name"
        )),
    }
}

impl RouteTable {
    /// Compiles routes (in policy order) into a table; the error names the
    /// first route whose template is invalid.
    pub fn compile(routes: Vec<Route>) -> Result<RouteTable, String> {
        let mut parsed = Vec::with_capacity(routes.len());
        for r in &routes {
            parsed
                .push(parse_template(&r.template).map_err(|e| format!("route `{}`: {e}", r.name))?);
        }
        Ok(Self::from_parsed(routes.into_iter().zip(parsed).collect()))
    }

    /// Builds a table from routes with already parsed templates (policy order).
    pub fn from_parsed(routes: Vec<(Route, Vec<Segment>)>) -> RouteTable {
        let mut table = RouteTable::default();
        for (route, segs) in routes {
            let index = table.routes.len();
            table.insert(index, &segs);
            table.routes.push(route);
        }
        table
    }

    fn insert(&mut self, route: usize, segs: &[Segment]) {
        let owner_index = segs.iter().position(|s| *s == Segment::Owner).unwrap_or(0);
        let terminal = Terminal { route, owner_index };
        let mut node = 0;
        for seg in segs {
            node = match seg {
                Segment::Literal(l) => self.literal_child(node, l),
                Segment::Param | Segment::Owner => self.param_child(node),
                Segment::Tail => {
                    // First declared wins: never overwrite an earlier route.
                    self.nodes[node].tail.get_or_insert(terminal);
                    return;
                }
            };
        }
        self.nodes[node].end.get_or_insert(terminal);
    }

    fn literal_child(&mut self, node: usize, lit: &str) -> usize {
        if let Some(&child) = self.nodes[node].literals.get(lit) {
            return child;
        }
        let child = self.push_node();
        self.nodes[node].literals.insert(lit.into(), child);
        child
    }

    fn param_child(&mut self, node: usize) -> usize {
        if let Some(child) = self.nodes[node].param {
            return child;
        }
        let child = self.push_node();
        self.nodes[node].param = Some(child);
        child
    }

    fn push_node(&mut self) -> usize {
        self.nodes.push(Node::default());
        self.nodes.len() - 1
    }

    /// The matching route for a path without query string (see the module
    /// doc for precedence). Paths with empty segments never match.
    pub fn lookup<'r, 'p>(&'r self, path: &'p str) -> Option<RouteMatch<'r, 'p>> {
        let rest = path.strip_prefix('/')?;
        let rest = (!rest.is_empty()).then_some(rest);
        let t = self.walk(0, rest)?;
        let owner = path.get(1..)?.split('/').nth(t.owner_index)?;
        Some(RouteMatch {
            route: self.routes.get(t.route)?,
            owner,
        })
    }

    /// Matches the remaining segments `rest` (None: the path is exhausted)
    /// from `node`.
    fn walk(&self, node: usize, rest: Option<&str>) -> Option<Terminal> {
        let n = self.nodes.get(node)?;
        let Some(rest) = rest else {
            return n.end.or(n.tail);
        };
        let (seg, next) = match rest.split_once('/') {
            Some((seg, next)) => (seg, Some(next)),
            None => (rest, None),
        };
        if seg.is_empty() {
            return None;
        }
        let literal = || n.literals.get(seg).and_then(|&c| self.walk(c, next));
        let param = || n.param.and_then(|c| self.walk(c, next));
        let tail = || n.tail.filter(|_| !rest.split('/').any(str::is_empty));
        literal().or_else(param).or_else(tail)
    }

    /// Every route, in policy order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, template: &str) -> Route {
        Route {
            name: name.to_string(),
            template: template.to_string(),
            upstream: "content".to_string(),
        }
    }

    fn default_table() -> RouteTable {
        RouteTable::compile(vec![
            route("conversations", "/v1/users/{owner}/conversations/**"),
            route("files", "/v1/users/{owner}/files/**"),
        ])
        .unwrap()
    }

    fn hit<'a>(t: &'a RouteTable, path: &'a str) -> Option<(&'a str, &'a str)> {
        t.lookup(path).map(|m| (m.route.name.as_str(), m.owner))
    }

    #[test]
    fn matches_the_default_routes() {
        let t = default_table();
        assert_eq!(
            hit(&t, "/v1/users/u1/conversations"),
            Some(("conversations", "u1"))
        );
        assert_eq!(
            hit(&t, "/v1/users/u1/conversations/c1/messages"),
            Some(("conversations", "u1"))
        );
        assert_eq!(hit(&t, "/v1/users/u7/files/f"), Some(("files", "u7")));
        for miss in [
            "/v1/users/u1",
            "/v1/users//conversations",
            "/v1/users/u1/conversations/",
            "/v1/users/u1/conversations//c1",
            "/v1/users/u1/other",
            "/",
            "",
            "v1/users/u1/files",
        ] {
            assert_eq!(hit(&t, miss), None, "{miss}");
        }
    }

    #[test]
    fn owner_is_a_slice_of_the_input() {
        let t = default_table();
        let path = String::from("/v1/users/abc/files/x");
        let m = t.lookup(&path).unwrap();
        let base = path.as_ptr() as usize;
        assert_eq!(m.owner.as_ptr() as usize - base, 10);
    }

    #[test]
    fn literals_beat_params_and_first_declared_wins() {
        let t = RouteTable::compile(vec![
            route("any", "/v1/{kind}/{owner}/**"),
            route("users", "/v1/users/{owner}/**"),
            route("users-again", "/v1/users/{x}/{owner}"),
            route("exact", "/v1/users/{owner}/profile"),
            route("shadowed", "/v1/users/{owner}/**"),
        ])
        .unwrap();
        assert_eq!(hit(&t, "/v1/users/u1/files/x"), Some(("users", "u1")));
        // A parameter beats a `**` tail at the same depth.
        assert_eq!(hit(&t, "/v1/users/x/u1"), Some(("users-again", "u1")));
        assert_eq!(hit(&t, "/v1/users/u1/profile"), Some(("exact", "u1")));
        assert_eq!(hit(&t, "/v1/orgs/o1/x"), Some(("any", "o1")));
        // `**` matches zero segments too.
        assert_eq!(hit(&t, "/v1/users/u1"), Some(("users", "u1")));
    }

    #[test]
    fn backtracks_from_a_dead_literal_branch() {
        let t = RouteTable::compile(vec![
            route("lit", "/a/b/{owner}/x"),
            route("param", "/a/{owner}/c"),
        ])
        .unwrap();
        assert_eq!(hit(&t, "/a/b/c"), Some(("param", "b")));
        assert_eq!(hit(&t, "/a/b/u/x"), Some(("lit", "u")));
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in [
            "v1/users/{owner}",
            "/v1/users",
            "/v1/{owner}/{owner}",
            "/v1//{owner}",
            "/v1/{owner}/",
            "/v1/**/{owner}",
            "/v1/{owner}/a*",
            "/v1/{}/{owner}",
            "/v1/{a b}/{owner}",
            "/v1/../{owner}",
        ] {
            assert!(parse_template(bad).is_err(), "{bad}");
        }
        let e = RouteTable::compile(vec![route("r", "/x")]).unwrap_err();
        assert!(e.starts_with("route `r`:"), "{e}");
    }

    #[test]
    fn many_routes_still_match() {
        let routes: Vec<Route> = (0..10_000)
            .map(|i| route(&format!("r{i}"), &format!("/v1/s{i}/{{owner}}/**")))
            .collect();
        let t = RouteTable::compile(routes).unwrap();
        assert_eq!(hit(&t, "/v1/s9999/u1/a/b"), Some(("r9999", "u1")));
        assert_eq!(hit(&t, "/v1/s10000/u1"), None);
    }
}
