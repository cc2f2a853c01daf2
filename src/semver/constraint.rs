//! Version constraints in the Masterminds syntax the original resource
//! documents: `,` or whitespace = AND, `||` = OR; `= != > < >= <= => =< ~ ~> ^`;
//! `x X *` wildcards and missing components; hyphen ranges `1.2 - 1.4.5`.
//!
//! Prereleases: a prerelease version satisfies an OR-group only if some
//! comparator of that group names a prerelease (`>=1.2.3-0`).

use std::cmp::Ordering;
use std::str::FromStr;

use anyhow::{Context, bail};

use super::Version;

/// A parsed constraint: OR of AND-groups.
#[derive(Clone, Debug)]
pub struct Constraints {
    groups: Vec<Vec<Comparator>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// No operator or `=`: equal, or a wildcard range when not fully given.
    Equal,
    NotEqual,
    Greater,
    Less,
    GreaterEqual,
    LessEqual,
    /// `~`, `~>`: patch-level range.
    Tilde,
    /// `^`: compatible range.
    Caret,
}

/// One comparator; `version` has wildcards and missing components as 0, and
/// the flags say which components were wildcards (or absent).
#[derive(Clone, Debug)]
struct Comparator {
    op: Op,
    version: Version,
    any_major: bool,
    any_minor: bool,
    any_patch: bool,
}

impl FromStr for Constraints {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        let mut groups = Vec::new();
        for group in text.split("||") {
            let parsed = parse_group(group)
                .with_context(|| format!("improper constraint: {:?}", group.trim()))?;
            groups.push(parsed);
        }
        Ok(Constraints { groups })
    }
}

impl Constraints {
    /// Whether `v` satisfies the constraints.
    pub fn matches(&self, v: &Version) -> bool {
        self.groups.iter().any(|group| {
            let prereleases_allowed = group.iter().any(|c| c.version.is_prerelease());
            (prereleases_allowed || !v.is_prerelease()) && group.iter().all(|c| c.matches(v))
        })
    }
}

const OPERATORS: [(&str, Op); 12] = [
    ("!=", Op::NotEqual),
    (">=", Op::GreaterEqual),
    ("=>", Op::GreaterEqual),
    ("<=", Op::LessEqual),
    ("=<", Op::LessEqual),
    ("~>", Op::Tilde),
    (">", Op::Greater),
    ("<", Op::Less),
    ("=", Op::Equal),
    ("~", Op::Tilde),
    ("^", Op::Caret),
    ("", Op::Equal),
];

fn split_operator(token: &str) -> (Op, &str, bool) {
    for (symbol, op) in OPERATORS {
        if let Some(rest) = token.strip_prefix(symbol) {
            return (op, rest, !symbol.is_empty());
        }
    }
    unreachable!("the empty operator matches every token")
}

fn parse_group(group: &str) -> anyhow::Result<Vec<Comparator>> {
    let tokens: Vec<&str> = group
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .collect();
    if tokens.is_empty() {
        bail!("empty constraint");
    }
    let mut comparators: Vec<Comparator> = Vec::new();
    // Whether the last comparator was a bare version (a hyphen range start).
    let mut last_bare = false;
    let mut i = 0;
    while i < tokens.len() {
        let token = tokens[i];
        i += 1;
        if token == "-" {
            let start = comparators
                .last_mut()
                .filter(|_| last_bare)
                .context("a hyphen range needs a version on each side")?;
            let end = tokens
                .get(i)
                .context("a hyphen range needs a version on each side")?;
            i += 1;
            start.op = Op::GreaterEqual;
            let (op, rest, explicit) = split_operator(end);
            if explicit {
                bail!("a hyphen range takes plain versions, not {end:?}");
            }
            comparators.push(Comparator::parse(Op::LessEqual, rest)?);
            debug_assert_eq!(op, Op::Equal);
            last_bare = false;
            continue;
        }
        let (op, mut rest, explicit) = split_operator(token);
        // `>= 1.2`: the operator stands alone, the version is the next token.
        if explicit && rest.is_empty() {
            rest = tokens
                .get(i)
                .with_context(|| format!("operator {token:?} without a version"))?;
            i += 1;
        }
        comparators.push(Comparator::parse(op, rest)?);
        last_bare = !explicit;
    }
    Ok(comparators)
}

fn is_wildcard(part: &str) -> bool {
    matches!(part, "x" | "X" | "*")
}

impl Comparator {
    fn parse(op: Op, text: &str) -> anyhow::Result<Self> {
        let body = text.strip_prefix('v').unwrap_or(text);
        // Split off `-pre` / `+meta` to find the numeric core, whose parts may
        // be wildcards or missing.
        let core_end = body.find(['-', '+']).unwrap_or(body.len());
        let (core, suffix) = body.split_at(core_end);
        let parts: Vec<&str> = core.split('.').collect();
        if core.is_empty() || parts.len() > 3 {
            bail!("invalid version {text:?}");
        }
        let wild = |i: usize| parts.get(i).is_none_or(|p| is_wildcard(p));
        let any_major = wild(0);
        let any_minor = any_major || wild(1);
        let any_patch = any_minor || wild(2);
        let mut numbers = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let wildcard_here = [any_major, any_minor, any_patch][i];
            if wildcard_here {
                if !is_wildcard(part) && !part.bytes().all(|b| b.is_ascii_digit()) {
                    bail!("invalid version {text:?}");
                }
                break;
            }
            numbers.push(*part);
        }
        while numbers.len() < 3 {
            numbers.push("0");
        }
        let normalised = format!("{}{suffix}", numbers.join("."));
        let version =
            Version::parse(&normalised).with_context(|| format!("invalid version {text:?}"))?;
        Ok(Comparator {
            op,
            version,
            any_major,
            any_minor,
            any_patch,
        })
    }

    /// Within the range a wildcard or partial version names (`1.2.x`, `1`).
    fn within_wildcard(&self, v: &Version) -> bool {
        let c = &self.version;
        self.any_major
            || (v.major == c.major
                && (self.any_minor || v.minor == c.minor)
                && (self.any_patch || v.patch == c.patch))
    }

    fn matches(&self, v: &Version) -> bool {
        let c = &self.version;
        let order = v.precedence(c);
        let partial = self.any_major || self.any_minor || self.any_patch;
        match self.op {
            Op::Equal if partial => self.within_wildcard(v),
            Op::Equal => order == Ordering::Equal,
            Op::NotEqual if partial => !self.within_wildcard(v),
            Op::NotEqual => order != Ordering::Equal,
            Op::Less => order == Ordering::Less,
            Op::GreaterEqual => order != Ordering::Less,
            // `>1.2` means above every 1.2.x; `<=1.2` means up to any 1.2.x.
            Op::Greater if partial => {
                !self.any_major && order == Ordering::Greater && !self.within_wildcard(v)
            }
            Op::Greater => order == Ordering::Greater,
            Op::LessEqual if partial => order != Ordering::Greater || self.within_wildcard(v),
            Op::LessEqual => order != Ordering::Greater,
            Op::Tilde => {
                order != Ordering::Less
                    && (self.any_major
                        || (v.major == c.major && (self.any_minor || v.minor == c.minor)))
            }
            Op::Caret => {
                order != Ordering::Less
                    && if self.any_major {
                        true
                    } else if c.major > 0 || self.any_minor {
                        v.major == c.major
                    } else if c.minor > 0 || self.any_patch {
                        v.major == 0 && v.minor == c.minor
                    } else {
                        v.major == 0 && v.minor == 0 && v.patch == c.patch
                    }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(constraint: &str, yes: &[&str], no: &[&str]) {
        let c: Constraints = constraint
            .parse()
            .unwrap_or_else(|e| panic!("{constraint}: {e:#}"));
        for v in yes {
            assert!(
                c.matches(&Version::parse(v).unwrap()),
                "{constraint} should match {v}"
            );
        }
        for v in no {
            assert!(
                !c.matches(&Version::parse(v).unwrap()),
                "{constraint} should not match {v}"
            );
        }
    }

    #[test]
    fn comparison_operators() {
        check(
            "=1.2.3",
            &["1.2.3", "v1.2.3", "1.2.3+b"],
            &["1.2.4", "1.2.3-rc.1"],
        );
        check("1.2.3", &["1.2.3"], &["1.2.4", "1.3.0"]);
        check("!=1.2.3", &["1.2.4", "1.0.0"], &["1.2.3", "1.2.4-rc.1"]);
        check(
            ">1.2.3",
            &["1.2.4", "2.0.0"],
            &["1.2.3", "1.0.0", "1.3.0-beta"],
        );
        check("<1.2.3", &["1.2.2", "0.9.0"], &["1.2.3", "1.2.3-rc.1"]);
        check(">=1.2.3", &["1.2.3", "9.0.0"], &["1.2.2"]);
        check("=>1.2.3", &["1.2.3"], &["1.2.2"]);
        check("<=1.2.3", &["1.2.3", "1.0.0"], &["1.2.4"]);
        check("=<1.2.3", &["1.2.3"], &["1.2.4"]);
    }

    #[test]
    fn tilde_and_caret() {
        check("~1.2.3", &["1.2.3", "1.2.9"], &["1.3.0", "1.2.2"]);
        check("~>1.2.3", &["1.2.5"], &["1.3.0"]);
        check("~1.2", &["1.2.0", "1.2.9"], &["1.3.0", "1.1.9"]);
        check("~1", &["1.0.0", "1.9.9"], &["2.0.0", "0.9.0"]);
        check("^1.2.3", &["1.2.3", "1.9.0"], &["2.0.0", "1.2.2"]);
        check("^0.2.3", &["0.2.3", "0.2.9"], &["0.3.0", "0.2.2", "1.2.3"]);
        check("^0.0.3", &["0.0.3"], &["0.0.4", "0.1.0"]);
        check("^0.0", &["0.0.0", "0.0.9"], &["0.1.0"]);
        check("^1", &["1.0.0", "1.9.9"], &["2.0.0"]);
    }

    #[test]
    fn wildcards_and_partial_versions() {
        check(
            "1.2.x",
            &["1.2.0", "1.2.1", "1.2.99"],
            &["1.3.0", "1.1.9", "1.2.3-rc.1"],
        );
        check("1.2.*", &["1.2.7"], &["1.3.0"]);
        check("1.X", &["1.0.0", "1.9.0"], &["2.0.0"]);
        check("*", &["0.0.1", "99.0.0"], &["1.0.0-alpha"]);
        check("x", &["3.0.0"], &[]);
        check("1.2", &["1.2.0", "1.2.5"], &["1.3.0"]);
        check(">1.2", &["1.3.0", "2.0.0"], &["1.2.9", "1.2.0"]);
        check(">1", &["2.0.0"], &["1.9.9"]);
        check("<1.2", &["1.1.9"], &["1.2.0"]);
        check("<=1.2", &["1.2.9", "1.0.0"], &["1.3.0"]);
        check(">=1.2.x", &["1.2.0", "2.0.0"], &["1.1.0"]);
        check("!=1.2.x", &["1.3.0", "1.1.0"], &["1.2.5"]);
        check("v1.2.x", &["1.2.4"], &["1.3.0"]);
    }

    #[test]
    fn and_or_and_ranges() {
        check(">= 1.2, < 3.0.0", &["1.2.0", "2.9.9"], &["3.0.0", "1.1.0"]);
        check(">= 1.2 < 3.0.0", &["2.0.0"], &["3.0.0"]);
        check(">=1.2,<3", &["2.0.0"], &["3.0.0"]);
        check("<1.0.0 || >=2.0.0", &["0.5.0", "2.0.0"], &["1.5.0"]);
        check(
            "1.2 - 1.4.5",
            &["1.2.0", "1.3.0", "1.4.5"],
            &["1.4.6", "1.1.9"],
        );
        check("1.2.3 - 2", &["1.2.3", "2.9.0"], &["3.0.0", "1.2.2"]);
        check(">= 1.0, != 1.5.0", &["1.4.0", "1.6.0"], &["1.5.0"]);
    }

    #[test]
    fn prerelease_rule() {
        // A prerelease matches only when its group names one.
        check(
            ">=1.2.3-0",
            &["1.2.3-beta", "1.2.3-alpha", "1.5.0-beta", "1.2.3"],
            &["1.2.2-rc.1"],
        );
        check(
            ">=1.2.3-0, <2.0.0",
            &["1.9.0-rc.1", "2.0.0-rc.1"],
            &["2.0.0", "1.2.2"],
        );
        check(
            ">=1.0.0 || >=2.0.0-0",
            &["2.1.0-rc.1", "1.0.0"],
            &["1.5.0-rc.1"],
        );
        check("1.0.0-rc.1", &["1.0.0-rc.1"], &["1.0.0-rc.2", "1.0.0"]);
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "",
            "  ",
            "||",
            ">=",
            "foo",
            "1.2.3.4",
            "> = 1",
            "1.2 -",
            "- 1.2",
            ">=1.2 - 2",
            "1.2 - >2",
            "1.0.0-rc.01",
            "~",
        ] {
            assert!(
                bad.parse::<Constraints>().is_err(),
                "{bad:?} should not parse"
            );
        }
        let e = "foo".parse::<Constraints>().unwrap_err();
        assert!(format!("{e:#}").starts_with("improper constraint"), "{e:#}");
    }
}
