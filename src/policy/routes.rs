//! Route templates (`/v1/users/{owner}/conversations/**`) compiled into a
//! segment trie so that matching cost does not grow with the number of routes.
//! STUB: to be implemented (policy helper).

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

/// All routes of a policy, compiled.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// The first matching route for a (canonical) path without query string.
    pub fn lookup<'r, 'p>(&'r self, _path: &'p str) -> Option<RouteMatch<'r, 'p>> {
        let _ = &self.routes;
        None
    }

    /// Every route, in policy order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}
