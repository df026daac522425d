//! Names of everything deployctl creates for one app in one environment, and the check that an
//! object found under such a name really belongs to that app and environment. Names are derived,
//! never stored, so any machine that runs deployctl finds the same objects.
//!
//! App and environment names may both contain `-`, `_` and `.`, the only punctuation Docker allows
//! in names; so the pair is joined by `.` and every `.` inside either name is doubled (`my.app` in
//! `prod` is `my..app.prod`). An environment name never starts with `.`, so the first single `.`
//! ends the app name and two different (app, env) pairs never share a name.

use std::collections::BTreeMap;

use crate::engine::labels;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub app: String,
    pub env: String,
}

/// The two slots a release can run in: one serves, the other takes the next release.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    #[default]
    Blue,
    Green,
}

impl Color {
    pub const ALL: [Color; 2] = [Color::Blue, Color::Green];

    /// The colour that is not this one.
    pub fn other(self) -> Color {
        match self {
            Color::Blue => Color::Green,
            Color::Green => Color::Blue,
        }
    }

    /// The colour a new release takes: the one not live; blue when nothing is live.
    pub fn next(live: Option<Color>) -> Color {
        live.map_or(Color::Blue, Color::other)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Color::Blue => "blue",
            Color::Green => "green",
        }
    }
}

impl std::fmt::Display for Color {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Color {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "blue" => Ok(Color::Blue),
            "green" => Ok(Color::Green),
            other => Err(format!("{other:?} is not a colour (blue or green)")),
        }
    }
}

impl Names {
    pub fn new(app: &str, env: &str) -> Self {
        Names {
            app: app.to_string(),
            env: env.to_string(),
        }
    }
    /// `<app>.<env>`, with each `.` of either name doubled: unique per (app, env).
    pub fn pair(&self) -> String {
        format!(
            "{}.{}",
            self.app.replace('.', ".."),
            self.env.replace('.', "..")
        )
    }
    /// `<app>.<env>-<color>`.
    pub fn container(&self, color: Color) -> String {
        format!("{}-{color}", self.pair())
    }
    pub fn proxy(&self) -> String {
        format!("deployctl-proxy-{}", self.pair())
    }
    pub fn lock(&self) -> String {
        format!("deployctl-lock-{}", self.pair())
    }
    pub fn network(&self) -> String {
        format!("deployctl-{}", self.pair())
    }
    pub fn state_volume(&self) -> String {
        format!("deployctl-{}-state", self.pair())
    }
    /// `<app>:<version>`.
    pub fn image(&self, version: &str) -> String {
        format!("{}:{version}", self.app)
    }
    /// Labels shared by everything of this app and environment.
    pub fn labels(&self, role: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (labels::APP.to_string(), self.app.clone()),
            (labels::ENV.to_string(), self.env.clone()),
            (labels::ROLE.to_string(), role.to_string()),
        ])
    }
}

/// Refuses to act on an object called by one of our names whose `deployctl.app`/`deployctl.env`
/// labels name another app or environment (or are missing): exit 2, and the object is left alone.
pub fn check_owner(
    names: &Names,
    kind: &str,
    name: &str,
    object_labels: &BTreeMap<String, String>,
) -> Result<(), crate::error::Error> {
    let label = |k: &str| object_labels.get(k).map(String::as_str);
    if label(labels::APP) == Some(names.app.as_str())
        && label(labels::ENV) == Some(names.env.as_str())
    {
        return Ok(());
    }
    let show = |v: Option<&str>| {
        v.map(|v| format!("`{v}`"))
            .unwrap_or_else(|| "(none)".into())
    };
    Err(crate::error::Error::Usage(format!(
        "refusing to touch {kind} {name}: its labels say app {} env {}, not app `{}` env `{}` ({} / {})\n  hint: it belongs to another app or was made by hand; leave it, or remove or rename it yourself if it is unused",
        show(label(labels::APP)),
        show(label(labels::ENV)),
        names.app,
        names.env,
        labels::APP,
        labels::ENV,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_scheme() {
        let n = Names::new("web", "production");
        assert_eq!(n.container(Color::Blue), "web.production-blue");
        assert_eq!(n.proxy(), "deployctl-proxy-web.production");
        assert_eq!(n.lock(), "deployctl-lock-web.production");
        assert_eq!(n.network(), "deployctl-web.production");
        assert_eq!(n.state_volume(), "deployctl-web.production-state");
        assert_eq!(n.image("3f2a9c1"), "web:3f2a9c1");
        assert_eq!(Color::next(Some(Color::Blue)), Color::Green);
        assert_eq!(Color::next(Some(Color::Green)), Color::Blue);
        assert_eq!(Color::next(None), Color::Blue);
        assert_eq!("green".parse::<Color>(), Ok(Color::Green));
        assert!("red".parse::<Color>().is_err());
    }

    #[test]
    fn item01_pairs_that_used_to_collide_get_different_names() {
        let pairs = [
            ("adv2", "x-y"),
            ("adv2-x", "y"),
            ("a.", "b"),
            ("a", "b.c"),
            ("a.b", "c"),
            ("a", "b_c"),
            ("a_b", "c"),
        ];
        let all: std::collections::BTreeSet<String> = pairs
            .iter()
            .flat_map(|(a, e)| {
                let n = Names::new(a, e);
                [n.container(Color::Blue), n.proxy(), n.lock(), n.network()]
            })
            .collect();
        assert_eq!(all.len(), pairs.len() * 4, "{all:?}");
        assert_eq!(Names::new("my.app", "prod").pair(), "my..app.prod");
    }

    #[test]
    fn item01_foreign_labels_are_refused() {
        let n = Names::new("adv2", "x-y");
        let ours = n.labels("proxy");
        assert!(check_owner(&n, "container", "c", &ours).is_ok());
        let theirs = Names::new("adv2-x", "y").labels("proxy");
        let err = check_owner(&n, "container", "c", &theirs).unwrap_err();
        assert!(
            err.to_string().contains("refusing to touch container c"),
            "{err}"
        );
        assert!(check_owner(&n, "network", "c", &BTreeMap::new()).is_err());
    }
}
