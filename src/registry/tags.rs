//! Tag listing that follows `Link: <…>; rel="next"` pages, including the
//! opaque cursors ECR and Quay put there (re-using the last tag as `last=`
//! fails on those registries).

use std::collections::HashSet;

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode, header};
use serde::Deserialize;
use url::Url;

use super::client::RegistryClient;
use super::error::StatusError;
use super::http::read_limited;
use super::policy::same_origin;
use crate::auth::repository_scope;
use crate::reference::Repository;

/// At 1,000 tags a page this is a million tags; beyond it something loops.
const MAX_PAGES: usize = 1000;
/// The whole listing, however it is paged: beyond this a repository is not
/// one a resource can sensibly check, and memory must stay bounded.
const MAX_TAGS: usize = 100_000;
const MAX_LISTING_BYTES: usize = 16 << 20;

/// One page. Entries are optional: Nexus 3.58 lists JSON `null` among the
/// tags (containers/skopeo#2409), and they are skipped.
#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    tags: Option<Vec<Option<String>>>,
    #[serde(default)]
    repositories: Option<Vec<Option<String>>>,
}

impl RegistryClient {
    /// Every tag of `repo`, in the registry's order. A missing repository is
    /// an error (a 404 [`StatusError`]).
    pub async fn list_tags(&self, repo: &Repository) -> anyhow::Result<Vec<String>> {
        let url = self
            .url(&format!("/v2/{}/tags/list?n=1000", repo.path()))
            .await?;
        let scopes = [repository_scope(repo.path(), self.access())];
        self.listing(url, &scopes, &format!("tag listing of {repo}"), "tags")
            .await
    }

    /// Every repository the registry lists (`/v2/_catalog`, which many
    /// hosted registries refuse).
    pub async fn catalog(&self) -> anyhow::Result<Vec<String>> {
        let url = self.url("/v2/_catalog?n=1000").await?;
        let scopes = ["registry:catalog:*".to_owned()];
        self.listing(
            url,
            &scopes,
            &format!("catalog of {}", self.host()),
            "repositories",
        )
        .await
    }

    /// A listing (of tags or repositories) over all its pages.
    async fn listing(
        &self,
        first: Url,
        scopes: &[String],
        what_listing: &str,
        names_are: &str,
    ) -> anyhow::Result<Vec<String>> {
        let mut names = Vec::new();
        let mut bytes = 0;
        let mut pages = Pages::new(first, MAX_PAGES, what_listing);
        while let Some(url) = pages.next()? {
            let what = format!("GET {}", url.path());
            let (page, next) = self
                .retry()
                .run(&what, || self.page(scopes, url.clone()))
                .await?;
            bytes += page.iter().map(String::len).sum::<usize>();
            names.extend(page);
            if names.len() > MAX_TAGS || bytes > MAX_LISTING_BYTES {
                bail!(
                    "{what_listing} is over {MAX_TAGS} {names_are} or {} MiB; giving up \
                     (use a tag or a narrower repository)",
                    MAX_LISTING_BYTES >> 20
                );
            }
            pages.follow(next)?;
        }
        Ok(names)
    }

    async fn page(
        &self,
        scopes: &[String],
        url: Url,
    ) -> anyhow::Result<(Vec<String>, Option<Url>)> {
        let response = self
            .send_once_scoped(Method::GET, url.clone(), scopes, |r| r)
            .await?;
        let response = StatusError::expect(response, &[StatusCode::OK]).await?;
        let next = next_page(&url, &response)?;
        let body = read_limited(response, MAX_LISTING_BYTES).await?;
        let page: Page = serde_json::from_slice(&body).context("invalid listing")?;
        let names = match (page.tags, page.repositories) {
            // Only tags can be asked for: Artifactory lists digests among
            // them (containers/skopeo#2346), which are not.
            (Some(tags), _) => tags.into_iter().flatten().filter(|t| is_tag(t)).collect(),
            (None, Some(names)) => names.into_iter().flatten().collect(),
            (None, None) => Vec::new(),
        };
        Ok((names, next))
    }
}

/// Whether `name` is a tag by the distribution spec's grammar
/// (`[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`).
fn is_tag(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 128
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The pages of a paged answer (tags, catalog, referrers), followed by
/// `Link: <…>; rel="next"`: at most `max`, each named once (a registry
/// naming a page again loops).
pub(super) struct Pages {
    next: Option<Url>,
    seen: HashSet<String>,
    taken: usize,
    max: usize,
    what: String,
}

impl Pages {
    /// The pages from `first`; `what` names the listing in errors.
    pub(super) fn new(first: Url, max: usize, what: &str) -> Self {
        Pages {
            next: Some(first),
            seen: HashSet::new(),
            taken: 0,
            max,
            what: what.to_owned(),
        }
    }

    /// The next page to read; `None` once a page named no next one.
    pub(super) fn next(&mut self) -> anyhow::Result<Option<Url>> {
        let Some(url) = self.next.take() else {
            return Ok(None);
        };
        if self.taken == self.max {
            bail!("{} has more than {} pages; giving up", self.what, self.max);
        }
        self.taken += 1;
        Ok(Some(url))
    }

    /// Pages handed out so far.
    pub(super) fn taken(&self) -> usize {
        self.taken
    }

    /// The page just read names `next` as the one after it (or none).
    pub(super) fn follow(&mut self, next: Option<Url>) -> anyhow::Result<()> {
        if let Some(next) = &next
            && !self.seen.insert(next.to_string())
        {
            bail!("{}: the registry sent the page {next} twice", self.what);
        }
        self.next = next;
        Ok(())
    }
}

/// The next page a paged answer (tags, catalog, referrers) names in its
/// `Link` header, resolved against the page's URL (registries send relative
/// and absolute links); one on another origin is refused.
pub(super) fn next_page(url: &Url, response: &reqwest::Response) -> anyhow::Result<Option<Url>> {
    let next = response
        .headers()
        .get_all(header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(next_link)
        .map(|link| url.join(&link))
        .transpose()
        .context("invalid Link header")?;
    if let Some(next) = &next
        && !same_origin(next, url)
    {
        bail!("the next page {next} is on another host");
    }
    Ok(next)
}

/// The target of the `rel="next"` link in a `Link` header value. Hand-written:
/// the header is `<uri>; param=value, <uri>; …` and we need one relation.
fn next_link(header: &str) -> Option<String> {
    let mut rest = header;
    while let Some(start) = rest.find('<') {
        let end = start + rest[start..].find('>')?;
        let target = &rest[start + 1..end];
        let after = &rest[end + 1..];
        let params_end = after.find('<').unwrap_or(after.len());
        let is_next = after[..params_end].split(';').any(|param| {
            let mut kv = param.trim().trim_end_matches(',').splitn(2, '=');
            let key = kv.next().unwrap_or_default().trim();
            let value = kv.next().unwrap_or_default().trim().trim_matches('"');
            key.eq_ignore_ascii_case("rel")
                && value
                    .split_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target.to_owned());
        }
        rest = &after[params_end..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_in_tag_listings_is_not_a_tag() {
        for tag in ["latest", "v1.2.3-rc.1", "_x", &"a".repeat(128)] {
            assert!(is_tag(tag), "{tag}");
        }
        let digest = format!("sha256:{}", "ab".repeat(32));
        for junk in ["", ".x", "-x", "a/b", &digest, &"a".repeat(129)] {
            assert!(!is_tag(junk), "{junk}");
        }
    }

    #[test]
    fn link_headers() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?n=2&last=b>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?n=2&last=b")
        );
        assert_eq!(
            next_link(r#"<https://r.example/v2/a/tags/list?next_page=opaque%3D%3D>; rel=next"#)
                .as_deref(),
            Some("https://r.example/v2/a/tags/list?next_page=opaque%3D%3D")
        );
        assert_eq!(
            next_link(r#"</first>; rel="prev", </second>; rel="next""#).as_deref(),
            Some("/second")
        );
        assert_eq!(next_link(r#"</only>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
    }

    #[test]
    fn a_next_page_on_another_origin_is_refused() {
        let url = Url::parse("https://r.example/v2/a/tags/list?n=2").unwrap();
        let answer = |link: &str| {
            reqwest::Response::from(
                axum::http::Response::builder()
                    .header("link", link)
                    .body("")
                    .unwrap(),
            )
        };
        let relative = next_page(&url, &answer(r#"</v2/a/tags/list?last=b>; rel="next""#));
        assert_eq!(
            relative.unwrap().unwrap().as_str(),
            "https://r.example/v2/a/tags/list?last=b"
        );
        for elsewhere in [
            r#"<https://evil.example/v2/a/tags/list>; rel="next""#,
            r#"<http://r.example/v2/a/tags/list>; rel="next""#,
            r#"<https://r.example:444/v2/a/tags/list>; rel="next""#,
        ] {
            let refused = next_page(&url, &answer(elsewhere)).unwrap_err();
            assert!(refused.to_string().contains("another host"), "{refused}");
        }
        assert!(
            next_page(&url, &answer(r#"</x>; rel="prev""#))
                .unwrap()
                .is_none()
        );
    }
}
