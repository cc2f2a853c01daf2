//! The Concourse resource contract: requests on stdin, one JSON answer on
//! stdout, versions and metadata. Knows nothing of HTTP.

use std::io::Write;

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::source::{GetParams, PutParams, Source};

/// A resource version: always both keys, possibly empty, as the original.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Version {
    #[serde(default)]
    pub tag: String,
    #[serde(default)]
    pub digest: String,
}

/// One metadata entry shown in the Concourse UI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MetadataField {
    pub name: String,
    pub value: String,
}

impl MetadataField {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        MetadataField {
            name: name.into(),
            value: value.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    pub source: Source,
    #[serde(default)]
    pub version: Option<Version>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InRequest {
    pub source: Source,
    #[serde(default)]
    pub version: Option<Version>,
    #[serde(default)]
    pub params: Option<GetParams>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutRequest {
    pub source: Source,
    #[serde(default)]
    pub params: Option<PutParams>,
}

/// The answer of `in` and `out`.
#[derive(Debug, Serialize)]
pub struct StepResponse {
    pub version: Version,
    pub metadata: Vec<MetadataField>,
}

/// Parses a request. Unknown keys at any level are rejected with their path,
/// so a misspelt field never silently does nothing; trailing data after the
/// JSON document is rejected too.
pub fn parse_request<T: DeserializeOwned>(input: &str) -> anyhow::Result<T> {
    let mut de = serde_json::Deserializer::from_str(input);
    let parsed = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if let Some(rest) = inner.strip_prefix("unknown field `") {
            // serde lists every known field; name the culprit and where it is.
            let field = rest.split('`').next().unwrap_or_default();
            let parent = path.rsplit_once('.').map_or("the request", |(p, _)| p);
            anyhow::anyhow!(
                "invalid payload: unknown field {field:?} in {parent} (not a field of this resource version: check its spelling and the README)"
            )
        } else if path == "." || path.is_empty() {
            anyhow::anyhow!("invalid payload: {inner}")
        } else {
            anyhow::anyhow!("invalid payload: {path}: {inner}")
        }
    })?;
    de.end().map_err(|e| {
        anyhow::anyhow!("invalid payload: unexpected data after the JSON request: {e}")
    })?;
    Ok(parsed)
}

/// Writes the one JSON answer, followed by a newline, to stdout.
pub fn write_response<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value).context("writing the response")?;
    out.write_all(b"\n").context("writing the response")?;
    out.flush().context("writing the response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_request_with_null_and_missing_version() {
        let r: CheckRequest =
            parse_request(r#"{"source":{"repository":"alpine"},"version":null}"#).unwrap();
        assert!(r.version.is_none());
        let r: CheckRequest = parse_request(r#"{"source":{"repository":"alpine"}}"#).unwrap();
        assert!(r.version.is_none());
        let r: CheckRequest =
            parse_request(r#"{"source":{"repository":"alpine"},"version":{"digest":"sha256:x"}}"#)
                .unwrap();
        assert_eq!(
            r.version.unwrap(),
            Version {
                tag: "".into(),
                digest: "sha256:x".into()
            }
        );
    }

    #[test]
    fn unknown_keys_are_named_with_their_path() {
        let e = parse_request::<CheckRequest>(r#"{"source":{"repository":"a/b","foo":1}}"#)
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(r#"invalid payload: unknown field "foo" in source ("#),
            "{msg}"
        );
        assert!(!msg.contains("expected one of"), "{msg}");
        let e = parse_request::<CheckRequest>(r#"{"source":{"repository":"a/b"},"params":{}}"#)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains(r#"unknown field "params" in the request"#),
            "{e}"
        );
        let e = parse_request::<CheckRequest>(
            r#"{"source":{"repository":"a/b","registry_mirror":{"host":"m","bogus":true}}}"#,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains(r#"unknown field "bogus" in source.registry_mirror"#),
            "{e}"
        );
        let e = parse_request::<CheckRequest>(
            r#"{"source":{"repository":"a/b"},"version":{"tag":"x","ref":"y"}}"#,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains(r#"unknown field "ref" in version"#),
            "{e}"
        );
        let e = parse_request::<OutRequest>(r#"{"source":{"repository":"a/b"},"version":{}}"#)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains(r#"unknown field "version" in the request"#),
            "{e}"
        );
    }

    #[test]
    fn type_mismatches_and_bad_json() {
        let e =
            parse_request::<CheckRequest>(r#"{"source":{"repository":"a/b","insecure":"true"}}"#)
                .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid payload: source.insecure: invalid type"),
            "{e}"
        );
        let e = parse_request::<OutRequest>(
            r#"{"source":{"repository":"a/b"},"params":{"version":1.2}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("params.version"), "{e}");
        assert!(
            parse_request::<CheckRequest>("{not json")
                .unwrap_err()
                .to_string()
                .starts_with("invalid payload")
        );
        assert!(parse_request::<CheckRequest>("").is_err());
        assert!(
            parse_request::<CheckRequest>(r#"{"source":{"repository":"a/b"}} trailing"#).is_err()
        );
        parse_request::<CheckRequest>("{\"source\":{\"repository\":\"a/b\"}}\n").unwrap();
    }

    #[test]
    fn versions_serialise_with_both_keys() {
        let v = serde_json::to_string(&Version::default()).unwrap();
        assert_eq!(v, r#"{"tag":"","digest":""}"#);
    }
}
