//! Names of everything deployctl creates for one app in one environment. Names are derived, never
//! stored, so any machine that runs deployctl finds the same objects.

use std::collections::BTreeMap;

use crate::engine::labels;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub app: String,
    pub env: String,
}

pub const COLORS: [&str; 2] = ["blue", "green"];

impl Names {
    pub fn new(app: &str, env: &str) -> Self {
        Names {
            app: app.to_string(),
            env: env.to_string(),
        }
    }
    /// `<app>-<env>-<color>`.
    pub fn container(&self, color: &str) -> String {
        format!("{}-{}-{color}", self.app, self.env)
    }
    pub fn proxy(&self) -> String {
        format!("deployctl-proxy-{}-{}", self.app, self.env)
    }
    pub fn lock(&self) -> String {
        format!("deployctl-lock-{}-{}", self.app, self.env)
    }
    pub fn network(&self) -> String {
        format!("deployctl-{}-{}", self.app, self.env)
    }
    pub fn state_volume(&self) -> String {
        format!("deployctl-{}-{}-state", self.app, self.env)
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

/// The colour that is not `live`; blue when nothing is live.
pub fn other_color(live: Option<&str>) -> &'static str {
    match live {
        Some("blue") => "green",
        _ => "blue",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_scheme() {
        let n = Names::new("web", "production");
        assert_eq!(n.container("blue"), "web-production-blue");
        assert_eq!(n.proxy(), "deployctl-proxy-web-production");
        assert_eq!(n.lock(), "deployctl-lock-web-production");
        assert_eq!(n.image("3f2a9c1"), "web:3f2a9c1");
        assert_eq!(other_color(Some("blue")), "green");
        assert_eq!(other_color(Some("green")), "blue");
        assert_eq!(other_color(None), "blue");
    }
}
