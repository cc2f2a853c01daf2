//! Where credentials and plain HTTP may go: free functions of hosts and
//! URLs, so each rule is tested without a client.

use std::net::IpAddr;

use anyhow::{Context, bail};
use url::Url;

use crate::auth::HostGuard;

/// A token realm must be https (http only if the registry itself is), and
/// may point at a private or loopback address only when the registry is
/// on that same address: credentials are sent there. `guard`: the hosts a
/// cloud's credentials may go to (when there are credentials).
pub fn check_realm(base: &Url, realm: &str, guard: Option<&HostGuard>) -> anyhow::Result<Url> {
    let url = Url::parse(realm).with_context(|| format!("invalid token realm {realm:?}"))?;
    match url.scheme() {
        "https" => {}
        "http" if base.scheme() == "http" => {}
        other => bail!(
            "refusing token realm {realm:?}: scheme {other} is not allowed for a registry on {}",
            base.scheme()
        ),
    }
    if let Some(guard) = guard {
        // `host[:port]`, as registries are named.
        let host = &url[url::Position::BeforeHost..url::Position::AfterPort];
        if !guard.allows(host) {
            let named = match guard.field {
                Some(field) => format!(" or to hosts named in {field}"),
                None => String::new(),
            };
            bail!(
                "refusing token realm {realm:?}: the {} credentials go only to {}{named}",
                guard.cloud,
                guard.own_hosts,
            );
        }
    }
    if let Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) = url.host() {
        let ip: IpAddr = url
            .host_str()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .parse()
            .with_context(|| format!("invalid token realm {realm:?}"))?;
        if is_internal(ip) && url.host_str() != base.host_str() {
            bail!("refusing token realm {realm:?}: internal address differs from the registry's");
        }
    }
    Ok(url)
}

/// Whether two URLs share scheme, host and port: credentials go only to
/// the registry's own origin, never to a storage host it redirects to.
pub fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Hosts where plain HTTP is allowed without `insecure` (as Docker does):
/// localhost, loopback and RFC 1918 addresses.
pub fn plain_http_allowed(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    is_loopback_host(name)
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|v4| v4.is_private())
}

/// Whether credentials may be sent to a registry at `base`: over HTTPS,
/// to loopback over plain HTTP, or anywhere with `insecure`.
pub fn credentials_may_travel(base: &Url, insecure: bool) -> bool {
    base.scheme() == "https" || insecure || base.host_str().is_some_and(is_loopback_host)
}

/// `localhost`, a `.localhost` name or a loopback address (IPv6 with or
/// without brackets).
pub fn is_loopback_host(name: &str) -> bool {
    let name = name.trim_matches(['[', ']']);
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A TLS failure that says the certificate was checked and refused (as
/// opposed to a server that does not speak TLS at all).
pub fn is_certificate_failure(error: &str) -> bool {
    error.contains("invalid peer certificate") || error.contains("certificate verify failed")
}

/// Loopback, private, link-local, unspecified or unique-local addresses.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xfe00) == 0xfc00
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_local_hosts() {
        for host in [
            "localhost",
            "localhost:5000",
            "foo.localhost:1",
            "127.0.0.1",
            "127.0.0.1:5000",
            "[::1]:5000",
            "10.1.2.3",
            "172.16.0.1:443",
            "192.168.1.1:80",
        ] {
            assert!(plain_http_allowed(host), "{host}");
        }
        for host in [
            "registry-1.docker.io",
            "ghcr.io:443",
            "8.8.8.8",
            "172.32.0.1",
            "localhost.example.com",
        ] {
            assert!(!plain_http_allowed(host), "{host}");
        }
    }

    #[test]
    fn credentials_travel_over_https_to_loopback_or_when_insecure() {
        let url = |u: &str| Url::parse(u).unwrap();
        assert!(credentials_may_travel(&url("https://10.0.0.5/"), false));
        assert!(credentials_may_travel(
            &url("http://127.0.0.1:5000/"),
            false
        ));
        assert!(credentials_may_travel(&url("http://[::1]:5000/"), false));
        assert!(credentials_may_travel(
            &url("http://localhost:5000/"),
            false
        ));
        assert!(!credentials_may_travel(
            &url("http://10.0.0.5:5000/"),
            false
        ));
        assert!(!credentials_may_travel(&url("http://192.168.1.1/"), false));
        assert!(!credentials_may_travel(
            &url("http://registry.example.com/"),
            false
        ));
        assert!(credentials_may_travel(&url("http://10.0.0.5:5000/"), true));
        assert!(is_certificate_failure(
            "error sending request: invalid peer certificate: UnknownIssuer"
        ));
        assert!(!is_certificate_failure(
            "received corrupt message of type InvalidContentType"
        ));
    }

    #[test]
    fn realm_rules() {
        let http_base = Url::parse("http://127.0.0.1:5000/").unwrap();
        let https_base = Url::parse("https://registry.example.com/").unwrap();
        // Same loopback IP, other port: fine.
        check_realm(&http_base, "http://127.0.0.1:6000/token", None).unwrap();
        // A public registry pointing its realm at an internal address: refused.
        assert!(check_realm(&https_base, "https://10.0.0.1/token", None).is_err());
        // http realm for an https registry: refused.
        assert!(check_realm(&https_base, "http://auth.example.com/token", None).is_err());
        check_realm(&https_base, "https://auth.example.com/token", None).unwrap();
    }
}
