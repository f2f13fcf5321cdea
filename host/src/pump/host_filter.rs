//! Host-side allow/skip filters: cheap checks on fields decoded once, so
//! common filtering never crosses into a plugin.

use std::collections::HashSet;

use crate::config::HostFilters;
use crate::record::Meta;

/// Compiled form of `[pumps.filters]`.
#[derive(Debug, Default)]
pub struct HostFilter {
    usernames: HashSet<String>,
    skip_usernames: HashSet<String>,
    org_ids: HashSet<String>,
    skip_org_ids: HashSet<String>,
    api_ids: HashSet<String>,
    skip_api_ids: HashSet<String>,
    response_codes: HashSet<i64>,
    skip_response_codes: HashSet<i64>,
    active: bool,
}

fn set<T: Clone + Eq + std::hash::Hash>(v: &[T]) -> HashSet<T> {
    v.iter().cloned().collect()
}

/// An allow list passes everything when empty; a skip list blocks members.
fn passes<T: Eq + std::hash::Hash>(
    allow: &HashSet<T>,
    skip: &HashSet<T>,
    value: Option<&T>,
) -> bool {
    match value {
        Some(v) => (allow.is_empty() || allow.contains(v)) && !skip.contains(v),
        None => allow.is_empty(),
    }
}

impl HostFilter {
    pub fn new(f: &HostFilters) -> Self {
        HostFilter {
            usernames: set(&f.usernames),
            skip_usernames: set(&f.skip_usernames),
            org_ids: set(&f.org_ids),
            skip_org_ids: set(&f.skip_org_ids),
            api_ids: set(&f.api_ids),
            skip_api_ids: set(&f.skip_api_ids),
            response_codes: set(&f.response_codes),
            skip_response_codes: set(&f.skip_response_codes),
            active: !f.is_empty(),
        }
    }

    /// True when the record should reach this pump.
    pub fn keep(&self, m: &Meta) -> bool {
        !self.active
            || (passes(&self.usernames, &self.skip_usernames, m.username.as_ref())
                && passes(&self.org_ids, &self.skip_org_ids, m.org_id.as_ref())
                && passes(&self.api_ids, &self.skip_api_ids, m.api_id.as_ref())
                && passes(
                    &self.response_codes,
                    &self.skip_response_codes,
                    m.response_code.as_ref(),
                ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(user: Option<&str>, api: Option<&str>, code: Option<i64>) -> Meta {
        Meta {
            username: user.map(String::from),
            api_id: api.map(String::from),
            response_code: code,
            ..Meta::default()
        }
    }

    #[test]
    fn empty_filter_keeps_everything() {
        assert!(HostFilter::new(&HostFilters::default()).keep(&meta(None, None, None)));
    }

    #[test]
    fn allow_and_skip_lists_combine() {
        let f = HostFilter::new(&HostFilters {
            usernames: vec!["alice".into(), "bob".into()],
            skip_usernames: vec!["bob".into()],
            ..HostFilters::default()
        });
        assert!(f.keep(&meta(Some("alice"), None, None)));
        assert!(!f.keep(&meta(Some("bob"), None, None)));
        assert!(!f.keep(&meta(Some("carol"), None, None)));
        assert!(
            !f.keep(&meta(None, None, None)),
            "allow list set: a record without the field fails it"
        );
    }

    #[test]
    fn tyk_lists_each_apply() {
        let f = HostFilter::new(&HostFilters {
            api_ids: vec!["a1".into()],
            skip_response_codes: vec![500],
            ..HostFilters::default()
        });
        assert!(f.keep(&meta(None, Some("a1"), Some(200))));
        assert!(!f.keep(&meta(None, Some("a1"), Some(500))));
        assert!(!f.keep(&meta(None, Some("a2"), Some(200))));
        assert!(f.keep(&meta(None, Some("a1"), None)));
    }
}
