//! The sidecar's ports as its config says them. The proxy listens where the
//! mounted `config.yaml` says (`listen`, `admin_listen`) and forwards where
//! its upstream URL says, so the container ports `inject` declares must
//! agree with that file. When the ConfigMap named by `--config-map` is part
//! of the input, `inject` reads the ports from its `config.yaml` and writes
//! the ports given on the command line into it; otherwise it can only warn
//! that the ConfigMap must agree.
//!
//! `config.yaml` is edited as text (one port number per changed key), so
//! its comments and layout survive, and the result is parsed again with the
//! proxy's own config parser to confirm the edit says what was asked.

use std::path::Path;

use super::node::Node;
use crate::config::Config;

/// The proxy's default client and admin ports (the chart's too).
pub const DEFAULT_PROXY_PORT: u16 = 8443;
pub const DEFAULT_ADMIN_PORT: u16 = 9100;
/// The store port assumed when neither the command line nor a ConfigMap says.
pub const DEFAULT_STORE_PORT: u16 = 9090;

/// The key of the config in the ConfigMap.
const CONFIG_KEY: &str = "config.yaml";
/// Where the sidecar reads it (for messages from the config parser).
const MOUNTED_AT: &str = "/etc/purposegate/config.yaml";

/// Ports of the sidecar: the proxy listener, the admin listener and the
/// store it forwards to (on loopback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub proxy: u16,
    pub admin: u16,
    /// None: the config forwards to no (or more than one) loopback port.
    pub store: Option<u16>,
}

/// Ports asked for on the command line (None: not given).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wanted {
    pub proxy: Option<u16>,
    pub admin: Option<u16>,
    pub store: Option<u16>,
}

impl Wanted {
    /// The ports that result when nothing else is known.
    pub fn or_defaults(self) -> Ports {
        Ports {
            proxy: self.proxy.unwrap_or(DEFAULT_PROXY_PORT),
            admin: self.admin.unwrap_or(DEFAULT_ADMIN_PORT),
            store: Some(self.store.unwrap_or(DEFAULT_STORE_PORT)),
        }
    }
}

/// The ConfigMaps named `name` in the documents (also inside `List`s).
pub fn find<'a>(docs: &'a mut [Node], name: &str, into: &mut Vec<&'a mut Node>) {
    for doc in docs {
        let kind = doc.get("kind").and_then(Node::as_str).unwrap_or("");
        if kind.ends_with("List") {
            if let Some(Node::Seq(items)) = doc.get_mut("items") {
                find(items, name, into);
            }
        } else if kind == "ConfigMap" && doc.get("metadata").and_then(Node::name) == Some(name) {
            into.push(doc);
        }
    }
}

/// The ports a `config.yaml` text says.
pub fn ports_of(text: &str) -> Result<Ports, String> {
    let config = Config::parse(Path::new(MOUNTED_AT), text).map_err(|e| e.to_string())?;
    let mut loopback: Vec<u16> = config
        .upstreams
        .values()
        .filter(|u| is_loopback(u.url.host().unwrap_or("")))
        .filter_map(|u| u.url.port_u16())
        .collect();
    loopback.sort_unstable();
    loopback.dedup();
    Ok(Ports {
        proxy: config.listen.port(),
        admin: config.admin_listen.port(),
        store: (loopback.len() == 1).then(|| loopback[0]),
    })
}

fn is_loopback(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1")
}

/// One ConfigMap's `config.yaml` brought in line with `wanted`: the ports
/// it ends up with, and a line per change.
pub fn apply(config_map: &mut Node, wanted: Wanted) -> Result<(Ports, Vec<String>), String> {
    let slot = config_map
        .get_mut("data")
        .and_then(|d| d.get_mut(CONFIG_KEY))
        .ok_or_else(|| format!("has no data.{CONFIG_KEY}"))?;
    let Node::Str(text) = slot else {
        return Err(format!("data.{CONFIG_KEY} is not a string"));
    };
    let at = |e: String| format!("{CONFIG_KEY}: {e}");
    let before = ports_of(text).map_err(at)?;
    let mut edited = text.clone();
    let mut changes = Vec::new();
    if let Some(port) = wanted.proxy.filter(|p| *p != before.proxy) {
        edited = set_listen_port(&edited, "listen", before.proxy, port).map_err(at)?;
        changes.push(format!("listen port {} -> {port}", before.proxy));
    }
    if let Some(port) = wanted.admin.filter(|p| *p != before.admin) {
        edited = set_listen_port(&edited, "admin_listen", before.admin, port).map_err(at)?;
        changes.push(format!("admin_listen port {} -> {port}", before.admin));
    }
    if let Some(port) = wanted.store.filter(|p| Some(*p) != before.store) {
        let old = before.store.ok_or_else(|| {
            at("the store port cannot be set: the upstreams forward to no loopback port, or to several (set their url by hand)".into())
        })?;
        edited = set_store_port(&edited, old, port);
        changes.push(format!("upstream port {old} -> {port}"));
    }
    let after = ports_of(&edited).map_err(at)?;
    let asked = Ports {
        proxy: wanted.proxy.unwrap_or(before.proxy),
        admin: wanted.admin.unwrap_or(before.admin),
        store: wanted.store.or(before.store),
    };
    if after != asked {
        return Err(at(format!(
            "could not be changed to the ports asked for (it now says {after:?}); edit it by hand"
        )));
    }
    *text = edited;
    Ok((after, changes))
}

/// Replaces the port of a top-level `key: "host:port"` line.
fn set_listen_port(text: &str, key: &str, old: u16, new: u16) -> Result<String, String> {
    let prefix = format!("{key}:");
    let mut found = false;
    let lines: Vec<String> = text
        .split_inclusive('\n')
        .map(|line| {
            if found || !line.starts_with(&prefix) {
                return line.to_string();
            }
            match replace_port(line, ":", old, new) {
                Some(l) => {
                    found = true;
                    l
                }
                None => line.to_string(),
            }
        })
        .collect();
    if found {
        Ok(lines.concat())
    } else {
        Err(format!("no `{key}:` line with port {old} found"))
    }
}

/// Replaces `old` with `new` in every loopback URL (`://127.0.0.1:old`, …).
fn set_store_port(text: &str, old: u16, new: u16) -> String {
    let mut out = text.to_string();
    for host in ["://127.0.0.1:", "://localhost:", "://[::1]:"] {
        while let Some(changed) = replace_port(&out, host, old, new) {
            out = changed;
        }
    }
    out
}

/// `text` with the first `{sep}{old}` not followed by a digit (searching
/// from the end for a `listen` line) turned into `{sep}{new}`.
fn replace_port(text: &str, sep: &str, old: u16, new: u16) -> Option<String> {
    let needle = format!("{sep}{old}");
    let mut search_end = text.len();
    while let Some(at) = text[..search_end].rfind(&needle) {
        let after = at + needle.len();
        if !text[after..].starts_with(|c: char| c.is_ascii_digit()) {
            return Some(format!("{}{sep}{new}{}", &text[..at], &text[after..]));
        }
        search_end = at;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "# the sidecar's config\nlisten: \"0.0.0.0:8443\"  # proxy\nadmin_listen: 0.0.0.0:9100\njwt:\n  issuer: \"https://idp.example.test\"\n  audiences: [\"purposegate\"]\n  algorithms: [\"ES256\"]\n  jwks_file: /var/run/secrets/purposegate/jwt/jwks.json\npolicy_dir: policies\nconsent_file: policies/consent.yaml\nupstreams:\n  content:\n    url: \"http://127.0.0.1:9090\"\naudit:\n  path: /var/lib/purposegate/audit/audit.jsonl\n";

    fn config_map(text: &str) -> Node {
        Node::Map(vec![
            (Node::Str("kind".into()), Node::Str("ConfigMap".into())),
            (
                Node::Str("data".into()),
                Node::Map(vec![(Node::Str(CONFIG_KEY.into()), Node::Str(text.into()))]),
            ),
        ])
    }

    fn text(cm: &Node) -> &str {
        cm.get("data")
            .unwrap()
            .get(CONFIG_KEY)
            .unwrap()
            .as_str()
            .unwrap()
    }

    #[test]
    fn ports_are_read_with_the_proxys_parser() {
        let p = ports_of(CONFIG).unwrap();
        assert_eq!(
            p,
            Ports {
                proxy: 8443,
                admin: 9100,
                store: Some(9090)
            }
        );
        assert!(ports_of("listen: nope\n").is_err());
    }

    #[test]
    fn asked_ports_are_written_and_the_rest_is_kept() {
        let mut cm = config_map(CONFIG);
        let wanted = Wanted {
            proxy: Some(8444),
            admin: Some(9101),
            store: Some(9091),
        };
        let (ports, changes) = apply(&mut cm, wanted).unwrap();
        assert_eq!(ports, wanted.or_defaults());
        assert_eq!(changes.len(), 3, "{changes:?}");
        let t = text(&cm);
        assert!(t.contains("listen: \"0.0.0.0:8444\"  # proxy\n"), "{t}");
        assert!(t.contains("admin_listen: 0.0.0.0:9101\n"), "{t}");
        assert!(t.contains("url: \"http://127.0.0.1:9091\""), "{t}");
        assert!(t.starts_with("# the sidecar's config\n"), "{t}");

        // Asking for what it already says changes nothing.
        let (_, changes) = apply(&mut cm, wanted).unwrap();
        assert!(changes.is_empty());
        let (_, changes) = apply(&mut cm, Wanted::default()).unwrap();
        assert!(changes.is_empty());
    }

    #[test]
    fn an_ambiguous_store_port_is_refused() {
        let two = CONFIG.replace(
            "    url: \"http://127.0.0.1:9090\"\n",
            "    url: \"http://127.0.0.1:9090\"\n  files:\n    url: \"http://127.0.0.1:9092\"\n",
        );
        assert_eq!(ports_of(&two).unwrap().store, None);
        let mut cm = config_map(&two);
        let err = apply(
            &mut cm,
            Wanted {
                store: Some(9091),
                ..Wanted::default()
            },
        )
        .unwrap_err();
        assert!(err.contains("by hand"), "{err}");
        assert_eq!(text(&cm), two, "nothing half-written");
    }

    #[test]
    fn a_port_prefix_is_not_mistaken_for_the_port() {
        assert_eq!(
            replace_port(
                "a://127.0.0.1:90901 b://127.0.0.1:9090/",
                "://127.0.0.1:",
                9090,
                1
            ),
            Some("a://127.0.0.1:90901 b://127.0.0.1:1/".into())
        );
    }
}
