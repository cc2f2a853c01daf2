//! `WWW-Authenticate` challenges, parsed with the `http-auth` crate.

use anyhow::Context;

/// What a registry asked for in a 401 answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// Send Basic credentials with every request.
    Basic,
    /// Fetch a token from `realm` (the registry's token service).
    Bearer {
        /// The URL tokens are asked for.
        realm: String,
        /// The `service` to name in the token request.
        service: Option<String>,
        /// The `scope` the registry asked for, if it said.
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses a `WWW-Authenticate` header value, preferring Bearer when a
    /// registry offers several schemes.
    pub fn parse(header: &str) -> anyhow::Result<Self> {
        let challenges = http_auth::parse_challenges(header)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("cannot parse WWW-Authenticate header {header:?}"))?;
        let mut basic = false;
        for c in &challenges {
            if c.scheme.eq_ignore_ascii_case("bearer") {
                let param = |name: &str| {
                    c.params
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.to_unescaped())
                };
                let realm = param("realm")
                    .with_context(|| format!("Bearer challenge without a realm: {header:?}"))?;
                return Ok(Challenge::Bearer {
                    realm,
                    service: param("service"),
                    scope: param("scope"),
                });
            }
            basic |= c.scheme.eq_ignore_ascii_case("basic");
        }
        if basic {
            Ok(Challenge::Basic)
        } else {
            anyhow::bail!("unsupported authentication scheme in {header:?}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_with_all_parameters() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
            }
        );
    }

    #[test]
    fn basic_and_case_insensitivity() {
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#).unwrap(),
            Challenge::Basic
        );
        assert!(matches!(
            Challenge::parse(r#"bearer realm="http://127.0.0.1:1/token""#).unwrap(),
            Challenge::Bearer { service: None, .. }
        ));
    }

    #[test]
    fn errors() {
        assert!(Challenge::parse("Negotiate").is_err());
        assert!(Challenge::parse(r#"Bearer service="x""#).is_err());
    }
}
