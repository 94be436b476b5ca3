//! The route table: for a bind, a path and a User-Agent, the first matching route in
//! manifest declaration order. Regexes are compiled once, at start.

use crate::manifest::ids::{BindId, ProgramId, RouteId};
use regex::Regex;

use crate::manifest::{Manifest, UaFilter};
use crate::proto::ua::{self, Browser};

pub struct Route {
    pub pattern: Regex,
    pub strip_prefix: Option<String>,
    pub ua_filter: Option<UaFilter>,
    /// The program requests go to.
    pub target: ProgramId,
    /// Label for logs and metrics (`bind:pattern`).
    pub label: String,
    /// Its id (the manifest's declaration order; its index in [`Router::routes`]).
    pub id: RouteId,
}

pub struct Router {
    /// Routes per bind, in match order; indexed by `BindId`.
    by_bind: Vec<Vec<Route>>,
}

impl Router {
    pub fn new(m: &Manifest) -> Router {
        let mut by_bind: Vec<Vec<Route>> = m.binds.iter().map(|_| Vec::new()).collect();
        for (target, p) in m.programs.iter().enumerate() {
            for r in &p.routes {
                // The manifest refuses a route to an unknown bind, so the ids (rows of
                // the route metrics) have no gaps.
                debug_assert!(r.bind_id != BindId::NONE, "route to an unknown bind");
                if let Some(routes) = by_bind.get_mut(r.bind_id.index()) {
                    routes.push(Route {
                        pattern: r.pattern.clone(),
                        strip_prefix: r.strip_prefix.clone(),
                        ua_filter: r.ua_filter.clone(),
                        target: ProgramId::at(target),
                        label: format!("{}:{}", r.bind, r.pattern.as_str()),
                        id: r.id,
                    });
                }
            }
        }
        Router { by_bind }
    }

    /// Every route, by id: its label and target program.
    pub fn routes(&self) -> Vec<(String, ProgramId)> {
        let mut all: Vec<&Route> = self.by_bind.iter().flatten().collect();
        all.sort_by_key(|r| r.id);
        all.iter().map(|r| (r.label.clone(), r.target)).collect()
    }

    /// The first route of `bind` matching `path` (without query) and `user_agent`.
    pub fn find(&self, bind: BindId, path: &str, user_agent: &[u8]) -> Option<&Route> {
        let routes = self.by_bind.get(bind.index())?;
        let mut class = None;
        routes.iter().find(|r| {
            if !r.pattern.is_match(path) {
                return false;
            }
            match &r.ua_filter {
                None => true,
                Some(UaFilter::Custom(re)) => re.is_match(&String::from_utf8_lossy(
                    &user_agent[..user_agent.len().min(512)],
                )),
                Some(f) => {
                    let c = *class.get_or_insert_with(|| ua::classify(user_agent));
                    match f {
                        UaFilter::Browser => c.browser.is_some(),
                        UaFilter::Chromium => c.browser == Some(Browser::Chromium),
                        UaFilter::Firefox => c.browser == Some(Browser::Firefox),
                        UaFilter::Safari => c.browser == Some(Browser::Safari),
                        UaFilter::Llm => c.llm,
                        UaFilter::Bot => c.bot,
                        UaFilter::Custom(_) => false,
                    }
                }
            }
        })
    }
}

/// Applies `strip_prefix` to a request target (path and query); the result starts with `/`.
pub fn rewrite_target(target: &str, strip_prefix: Option<&str>) -> String {
    let Some(prefix) = strip_prefix.filter(|p| !p.is_empty()) else {
        return target.to_string();
    };
    match target.strip_prefix(prefix) {
        Some(rest) if rest.is_empty() || rest.starts_with('?') => format!("/{rest}"),
        Some(rest) if rest.starts_with('/') => rest.to_string(),
        // `/apix` does not lose `/api`: prefixes match whole segments only.
        Some(_) if !prefix.ends_with('/') => target.to_string(),
        Some(rest) => format!("/{rest}"),
        None => target.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_prefix_on_segments() {
        for (target, prefix, want) in [
            ("/api/users?x=1", Some("/api"), "/users?x=1"),
            ("/api", Some("/api"), "/"),
            ("/api?x", Some("/api"), "/?x"),
            ("/apix/y", Some("/api"), "/apix/y"),
            ("/api/y", Some("/api/"), "/y"),
            ("/other", Some("/api"), "/other"),
            ("/a", None, "/a"),
        ] {
            assert_eq!(rewrite_target(target, prefix), want, "{target} {prefix:?}");
        }
    }
}
