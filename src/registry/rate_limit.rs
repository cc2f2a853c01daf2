//! What a registry says of its rate limit, read from an answer's headers,
//! so a refusal names the limit ("100 per 6 h, 0 left") instead of a bare
//! 429, and the retry policy knows when waiting cannot help.
//!
//! Forms read (registry-quirks.md §1.8, §4): Docker Hub's
//! `ratelimit-limit: 100;w=21600` and `ratelimit-remaining: 0;w=21600` with
//! `docker-ratelimit-source`; the IETF draft's plain numbers with
//! `ratelimit-reset` (seconds); GitHub's `x-ratelimit-*`. Every value is
//! hostile: numbers are parsed strictly and the source is kept only when
//! it is short and printable.

use std::fmt;
use std::time::Duration;

use reqwest::header::HeaderMap;

/// The longest `docker-ratelimit-source` quoted (an address or an account).
const MAX_SOURCE: usize = 64;

/// A registry's rate limit, as its answer stated it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per window.
    pub limit: Option<u64>,
    /// The window, when stated (`;w=` seconds).
    pub window: Option<Duration>,
    /// Requests left in the window.
    pub remaining: Option<u64>,
    /// When the window renews, when stated.
    pub reset: Option<Duration>,
    /// Who is counted (Docker Hub: an address or an account).
    pub source: Option<String>,
}

impl RateLimit {
    /// The limit stated in `headers`, or `None` when they state none.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let value = |names: &[&str]| {
            names
                .iter()
                .find_map(|name| headers.get(*name)?.to_str().ok().map(str::to_owned))
        };
        let limit = value(&["ratelimit-limit", "x-ratelimit-limit"]);
        let remaining = value(&["ratelimit-remaining", "x-ratelimit-remaining"]);
        let reset = value(&["ratelimit-reset", "x-ratelimit-reset"]);
        let (limit, window) = limit.as_deref().map(number_and_window).unwrap_or_default();
        let (remaining, remaining_window) = remaining
            .as_deref()
            .map(number_and_window)
            .unwrap_or_default();
        let found = RateLimit {
            limit,
            window: window.or(remaining_window),
            remaining,
            // GitHub's `x-ratelimit-reset` is a point in time, not a delay:
            // only small values are read as seconds to wait.
            reset: reset
                .as_deref()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|secs| *secs <= 7 * 24 * 3600)
                .map(Duration::from_secs),
            source: value(&["docker-ratelimit-source"])
                .map(|s| s.trim().to_owned())
                .filter(|s| {
                    !s.is_empty()
                        && s.len() <= MAX_SOURCE
                        && s.chars().all(|c| c.is_ascii_graphic())
                }),
        };
        (found.limit.is_some() || found.remaining.is_some()).then_some(found)
    }

    /// Whether the limit is spent with nothing said of when it renews
    /// but a window: waiting seconds cannot help.
    pub fn spent(&self) -> bool {
        self.remaining == Some(0) && self.reset.is_none()
    }
}

/// `100;w=21600` → (100, 6 h); `100` → (100, none).
fn number_and_window(value: &str) -> (Option<u64>, Option<Duration>) {
    let mut parts = value.split(';');
    let number = parts.next().and_then(|n| n.trim().parse::<u64>().ok());
    let window = parts
        .filter_map(|p| p.trim().strip_prefix("w="))
        .find_map(|w| w.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    (number, window)
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("rate limit")?;
        match (self.limit, self.window) {
            (Some(limit), Some(window)) => write!(f, " {limit} per {}", span(window))?,
            (Some(limit), None) => write!(f, " {limit}")?,
            _ => {}
        }
        if let Some(remaining) = self.remaining {
            write!(f, ", {remaining} left")?;
        }
        if let Some(reset) = self.reset {
            write!(f, ", renews in {}", span(reset))?;
        }
        if let Some(source) = &self.source {
            write!(f, " (counted for {source})")?;
        }
        Ok(())
    }
}

/// `21600 s` → `6 h`, `90 s` → `90 s`.
fn span(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs >= 3600 && secs.is_multiple_of(3600) {
        format!("{} h", secs / 3600)
    } else if secs >= 60 && secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn docker_hub_headers_name_the_limit() {
        let limit = RateLimit::from_headers(&headers(&[
            ("ratelimit-limit", "100;w=21600"),
            ("ratelimit-remaining", "0;w=21600"),
            ("docker-ratelimit-source", "203.0.113.7"),
        ]))
        .unwrap();
        assert!(limit.spent());
        assert_eq!(
            limit.to_string(),
            "rate limit 100 per 6 h, 0 left (counted for 203.0.113.7)"
        );
    }

    #[test]
    fn draft_and_github_forms() {
        let limit = RateLimit::from_headers(&headers(&[
            ("ratelimit-limit", "10"),
            ("ratelimit-remaining", "0"),
            ("ratelimit-reset", "30"),
        ]))
        .unwrap();
        assert!(!limit.spent(), "a stated reset can be waited for");
        assert_eq!(limit.to_string(), "rate limit 10, 0 left, renews in 30 s");
        let github = RateLimit::from_headers(&headers(&[
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "4999"),
            ("x-ratelimit-reset", "1767225600"),
        ]))
        .unwrap();
        assert_eq!(github.reset, None, "an epoch time is not a delay");
        assert_eq!(github.to_string(), "rate limit 5000, 4999 left");
    }

    #[test]
    fn hostile_values_are_dropped() {
        assert_eq!(
            RateLimit::from_headers(&headers(&[("ratelimit-limit", "lots")])),
            None
        );
        let limit = RateLimit::from_headers(&headers(&[
            ("ratelimit-remaining", "0;w=x"),
            ("docker-ratelimit-source", &"a".repeat(65)),
        ]))
        .unwrap();
        assert_eq!(limit.source, None);
        assert_eq!(limit.window, None);
        assert_eq!(limit.to_string(), "rate limit, 0 left");
    }
}
