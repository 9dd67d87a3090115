//! What an authenticated API key may do: its [`KeyGrant`].
//!
//! `API_KEYS` names each key and scopes it (see [`super::auth`] for the two forms). After
//! [`super::auth::ApiKeys::authenticate`] has matched the presented key, every handler gets the
//! matched key's grant and asks it, rather than re-reading the setting: which reports the key
//! sees ([`KeyGrant::can_see_report`]), whether it may read the delivery history
//! ([`KeyGrant::can_list_deliveries`]) and whether it may ask for one recipient's rows
//! ([`KeyGrant::can_use_recipient_key`]). A report the key may not see is answered exactly as
//! an unknown report, so a key learns nothing about reports outside its scope.

use std::collections::BTreeSet;

use crate::report::Report;

/// The reports a key sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportScope {
    /// Every report of the reports file, including reports added later (`"reports": ["*"]`,
    /// and every key of the comma-separated form).
    All,
    /// Only these report names. A name that the reports file does not define grants nothing
    /// (`handler check` warns about it); it is kept so that a report added later under that
    /// name becomes visible without a key change.
    Only(BTreeSet<String>),
}

impl ReportScope {
    /// Whether the report called `name` is in scope.
    pub fn contains(&self, name: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(names) => names.contains(name),
        }
    }
}

/// The name and permissions of one API key: what a request authenticated with that key may
/// do. Holds no key material, so it can be logged, cloned into handlers and kept in spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGrant {
    name: String,
    reports: ReportScope,
    deliveries: bool,
    recipient_keys: bool,
}

impl KeyGrant {
    /// A grant with every permission, as the comma-separated form of `API_KEYS` gives each key
    /// (`key-1`, `key-2`, … by position).
    pub fn full_access(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            reports: ReportScope::All,
            deliveries: true,
            recipient_keys: true,
        }
    }

    /// A grant with exactly these permissions (the JSON form of `API_KEYS`).
    pub fn new(
        name: impl Into<String>,
        reports: ReportScope,
        deliveries: bool,
        recipient_keys: bool,
    ) -> Self {
        Self {
            name: name.into(),
            reports,
            deliveries,
            recipient_keys,
        }
    }

    /// The key's name: what logs, spans and metrics show instead of the key (`api.key_name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The reports in scope.
    pub fn reports(&self) -> &ReportScope {
        &self.reports
    }

    /// Whether the key sees every report (the report list can then be served as rendered once).
    pub fn sees_all_reports(&self) -> bool {
        self.reports == ReportScope::All
    }

    /// Whether the key may see the report called `name`: its data in every format, its
    /// sections, its entry in `GET /api/reports`. A report outside the scope must be answered
    /// exactly as an unknown report (404, same body).
    pub fn can_see_report(&self, name: &str) -> bool {
        self.reports.contains(name)
    }

    /// Whether the key may read the delivery history (`/api/deliveries`, `"deliveries": true`).
    /// Even then it sees only the deliveries of reports for which [`Self::can_see_report`].
    pub fn can_list_deliveries(&self) -> bool {
        self.deliveries
    }

    /// Whether the key may ask for one recipient's rows (`?recipient_key=`,
    /// `"recipient_keys": true`); still only for reports it can see.
    pub fn can_use_recipient_key(&self) -> bool {
        self.recipient_keys
    }

    /// The reports of `reports` that the key may see, in file order.
    pub fn visible<'a>(&'a self, reports: &'a [Report]) -> impl Iterator<Item = &'a Report> + 'a {
        reports.iter().filter(|r| self.can_see_report(&r.name))
    }

    /// Whether two grants give the same permissions (names aside): two entries may share a
    /// name during a rotation only if they do.
    pub fn same_permissions(&self, other: &Self) -> bool {
        self.reports == other.reports
            && self.deliveries == other.deliveries
            && self.recipient_keys == other.recipient_keys
    }

    /// A short description for `handler check` and the start-up log: the permissions, never
    /// the key (`daily-sales, weekly-sales; deliveries`).
    pub fn describe(&self) -> String {
        let mut s = match &self.reports {
            ReportScope::All => "all reports".to_string(),
            ReportScope::Only(names) => {
                let n = names.len();
                let list: Vec<&str> = names.iter().map(String::as_str).collect();
                format!(
                    "{n} report{}: {}",
                    if n == 1 { "" } else { "s" },
                    list.join(", ")
                )
            }
        };
        if self.deliveries {
            s.push_str("; deliveries");
        }
        if self.recipient_keys {
            s.push_str("; recipient keys");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(names: &[&str]) -> ReportScope {
        ReportScope::Only(names.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn full_access_may_do_everything() {
        let g = KeyGrant::full_access("key-1");
        assert_eq!(g.name(), "key-1");
        assert!(g.sees_all_reports());
        assert!(g.can_see_report("daily-sales"));
        assert!(g.can_see_report("anything-added-later"));
        assert!(g.can_list_deliveries());
        assert!(g.can_use_recipient_key());
        assert_eq!(g.describe(), "all reports; deliveries; recipient keys");
    }

    #[test]
    fn a_scoped_grant_sees_only_its_reports_and_flags() {
        let g = KeyGrant::new("partner-a", only(&["daily-sales"]), false, false);
        assert!(!g.sees_all_reports());
        assert!(g.can_see_report("daily-sales"));
        assert!(!g.can_see_report("weekly-sales"));
        assert!(!g.can_see_report("daily-sales "));
        assert!(!g.can_see_report(""));
        assert!(!g.can_list_deliveries());
        assert!(!g.can_use_recipient_key());
        assert_eq!(g.describe(), "1 report: daily-sales");

        let h = KeyGrant::new("ops", only(&["b", "a"]), true, false);
        assert!(h.can_list_deliveries());
        assert!(!h.can_use_recipient_key());
        assert_eq!(h.describe(), "2 reports: a, b; deliveries");
        let r = KeyGrant::new("r", ReportScope::All, false, true);
        assert!(!r.can_list_deliveries());
        assert!(r.can_use_recipient_key());
    }

    #[test]
    fn same_permissions_ignores_the_name() {
        let a = KeyGrant::new("x", only(&["a"]), true, false);
        let b = KeyGrant::new("y", only(&["a"]), true, false);
        assert!(a.same_permissions(&b));
        assert!(!a.same_permissions(&KeyGrant::new("x", only(&["a"]), false, false)));
        assert!(!a.same_permissions(&KeyGrant::new("x", only(&["a", "b"]), true, false)));
        assert!(!a.same_permissions(&KeyGrant::new("x", only(&["a"]), true, true)));
        assert!(!a.same_permissions(&KeyGrant::new("x", ReportScope::All, true, false)));
    }
}
