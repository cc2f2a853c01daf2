//! Loose semantic versions: `v1`, `1.2`, `1.2.3-rc.1+build`.

use std::cmp::Ordering;
use std::fmt;

use anyhow::bail;

/// A parsed version that remembers the text it came from (the tag).
#[derive(Clone, Debug)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    /// The prerelease part without its `-`, or empty.
    pub pre: String,
    /// Build metadata without its `+`, or empty (ignored for precedence).
    pub meta: String,
    original: String,
}

impl Version {
    /// Parses `[v]N[.N[.N]][-pre][+meta]`; missing components are 0.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let body = text.strip_prefix('v').unwrap_or(text);
        let (body, meta) = match body.split_once('+') {
            Some((b, m)) => (b, m),
            None => (body, ""),
        };
        let (core, pre) = match body.split_once('-') {
            Some((c, p)) => (c, p),
            None => (body, ""),
        };
        let mut numbers = [0u64; 3];
        let parts: Vec<&str> = core.split('.').collect();
        if parts.len() > 3 {
            bail!("invalid semantic version: {text:?}");
        }
        for (slot, part) in numbers.iter_mut().zip(&parts) {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                bail!("invalid semantic version: {text:?}");
            }
            *slot = part.parse().map_err(|_| {
                anyhow::anyhow!("invalid semantic version: {text:?} (number too large)")
            })?;
        }
        if body.contains('-') {
            validate_identifiers(text, pre, true)?;
        }
        if text.contains('+') {
            validate_identifiers(text, meta, false)?;
        }
        Ok(Version {
            major: numbers[0],
            minor: numbers[1],
            patch: numbers[2],
            pre: pre.to_owned(),
            meta: meta.to_owned(),
            original: text.to_owned(),
        })
    }

    /// The text this version was parsed from.
    pub fn original(&self) -> &str {
        &self.original
    }

    pub fn is_prerelease(&self) -> bool {
        !self.pre.is_empty()
    }

    /// The version with every component spelt out and no `v`:
    /// `v1.2` → `1.2.0`.
    pub fn canonical(&self) -> String {
        let mut s = format!("{}.{}.{}", self.major, self.minor, self.patch);
        if !self.pre.is_empty() {
            s.push('-');
            s.push_str(&self.pre);
        }
        if !self.meta.is_empty() {
            s.push('+');
            s.push_str(&self.meta);
        }
        s
    }

    /// Semantic-version precedence; build metadata is ignored, so `1.0` and
    /// `1.0.0+x` are equal here.
    pub fn precedence(&self, other: &Version) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| compare_prerelease(&self.pre, &other.pre))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

/// Dot-separated identifiers of `[0-9A-Za-z-]`, none empty; in a prerelease a
/// numeric identifier must not have a leading zero.
fn validate_identifiers(text: &str, part: &str, prerelease: bool) -> anyhow::Result<()> {
    for id in part.split('.') {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            bail!("invalid semantic version: {text:?}");
        }
        if prerelease
            && id.len() > 1
            && id.starts_with('0')
            && id.bytes().all(|b| b.is_ascii_digit())
        {
            bail!("invalid semantic version: {text:?} (version segment starts with 0)");
        }
    }
    Ok(())
}

/// No prerelease sorts after any prerelease; identifiers compare
/// numerically when both are numeric, numeric before alphanumeric, else
/// bytewise; a shorter list of equal identifiers sorts first.
fn compare_prerelease(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        (false, false) => {}
    }
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let numeric = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
                let order = match (numeric(x), numeric(y)) {
                    // Numeric identifiers have no leading zeros, so a longer
                    // one is larger; this also handles values beyond u64.
                    (true, true) => x.len().cmp(&y.len()).then_with(|| x.cmp(y)),
                    (true, false) => Ordering::Less,
                    (false, true) => Ordering::Greater,
                    (false, false) => x.cmp(y),
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn loose_parsing() {
        for (text, canonical) in [
            ("1", "1.0.0"),
            ("1.2", "1.2.0"),
            ("v1.2.3", "1.2.3"),
            ("01.002.3", "1.2.3"),
            ("20240101", "20240101.0.0"),
            ("1.0.0-rc.1", "1.0.0-rc.1"),
            ("1.0.0-alpha.1-bar", "1.0.0-alpha.1-bar"),
            ("1.2.3+build.5", "1.2.3+build.5"),
            ("v2-beta+001", "2.0.0-beta+001"),
        ] {
            assert_eq!(v(text).canonical(), canonical, "{text}");
            assert_eq!(v(text).original(), text);
        }
    }

    #[test]
    fn not_versions() {
        for text in [
            "",
            "v",
            "V1",
            "latest",
            "abc1234",
            "1.2.3.4",
            "1.2.3_4",
            "1..2",
            "1.2.",
            "-1",
            "1.0.0-",
            "1.0.0-rc..1",
            "1.0.0-rc.01",
            "1.0.0+",
            "1.0.0-r@c",
            "99999999999999999999",
        ] {
            assert!(Version::parse(text).is_err(), "{text:?} should not parse");
        }
        let e = Version::parse("1.0.0-rc.01").unwrap_err().to_string();
        assert!(e.contains("version segment starts with 0"), "{e}");
    }

    #[test]
    fn precedence_examples() {
        let ordered = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.1-bar",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.1",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-build",
            "1.0.0-rc",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.1.0",
            "2.0.0-build.1",
            "2.0.0-rc.1",
            "2.0.0",
        ];
        for pair in ordered.windows(2) {
            assert_eq!(
                v(pair[0]).precedence(&v(pair[1])),
                Ordering::Less,
                "{} < {}",
                pair[0],
                pair[1]
            );
            assert_eq!(v(pair[1]).precedence(&v(pair[0])), Ordering::Greater);
        }
        assert_eq!(
            v("1.0.0-alpha1").precedence(&v("1.0.0-alpha2")),
            Ordering::Less
        );
        assert_eq!(
            v("1.0.0-BETA").precedence(&v("1.0.0-alpha")),
            Ordering::Less
        );
        assert_eq!(v("1.0").precedence(&v("1.0.0")), Ordering::Equal);
        assert_eq!(v("v1.2.3").precedence(&v("1.2.3+meta")), Ordering::Equal);
        assert_eq!(v("6.3").precedence(&v("6.3.0")), Ordering::Equal);
    }
}
