//! Outbound address rules: where Nexus may send a request on someone's behalf (agent wake-ups).
//! A URL may not reach a loopback, link-local, private, unique-local, shared (carrier-grade
//! NAT), multicast, broadcast or unspecified address — an agent, an untrusted caller, could
//! otherwise make a worker POST to a cloud metadata service or an internal admin port —
//! unless the deployment allows it (`NEXUS_ALLOW_PRIVATE_URLS=true`, for one machine or tests).
//!
//! The rule is checked twice: on the URL as written, when it is stored (a literal address or
//! `localhost`), and on every address its name resolves to, when the request is made — by the
//! HTTP client's resolver, so the address checked is the address connected to (a name that
//! resolves elsewhere later, DNS rebinding, gains nothing).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

/// Why a destination is refused (also the `lastError` / summary of a refused delivery).
pub const FORBIDDEN_ADDRESS: &str = "forbidden_address";

/// Whether a request may not be sent to `ip`.
#[must_use]
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_forbidden_v4(v4),
            None => is_forbidden_v6(v6),
        },
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || a == 0
        // 100.64.0.0/10, shared address space (carrier-grade NAT)
        || (a == 100 && (64..128).contains(&b))
        // 240.0.0.0/4, reserved
        || a >= 240
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // fc00::/7 unique local, fe80::/10 link-local
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        // ::/96 IPv4-compatible (deprecated, would reach IPv4 addresses)
        || ip.segments()[..6].iter().all(|s| *s == 0)
}

/// Checks the host of `url` as written: a literal address that is forbidden is refused. Names
/// (`localhost` included) are checked when they are resolved ([`Resolver`]), as the contract
/// says: 422 for a URL naming such an address, a failed delivery for a name resolving to one.
///
/// # Errors
/// A sentence saying why.
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("is not a valid URL ({e})"))?;
    let refused = || {
        "must not name a loopback, link-local, private, multicast or unspecified address".to_owned()
    };
    match parsed.host() {
        Some(url::Host::Ipv4(ip)) if is_forbidden(IpAddr::V4(ip)) => Err(refused()),
        Some(url::Host::Ipv6(ip)) if is_forbidden(IpAddr::V6(ip)) => Err(refused()),
        _ => Ok(()),
    }
}

/// The error a refused resolution gives the HTTP client (found again in its error's sources).
#[derive(Debug, thiserror::Error)]
#[error("forbidden_address: the name resolves to an address requests may not reach")]
pub struct ForbiddenAddress;

/// A DNS resolver for the HTTP client that drops forbidden addresses, failing with
/// [`ForbiddenAddress`] when none is left.
#[derive(Debug, Default, Clone)]
pub struct Resolver;

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| !is_forbidden(addr.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(Box::new(ForbiddenAddress) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The resolver to give an HTTP client: [`Resolver`] unless private addresses are allowed.
#[must_use]
pub fn resolver(allow_private: bool) -> Option<Arc<Resolver>> {
    (!allow_private).then(|| Arc::new(Resolver))
}

/// Whether `error` (from the HTTP client) came from a refused resolution.
#[must_use]
pub fn is_forbidden_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.is::<ForbiddenAddress>() {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_ranges_are_refused_and_public_addresses_allowed() {
        for refused in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
        ] {
            let ip: IpAddr = refused.parse().expect("an address");
            assert!(is_forbidden(ip), "{refused} must be refused");
        }
        for allowed in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = allowed.parse().expect("an address");
            assert!(!is_forbidden(ip), "{allowed} must be allowed");
        }
    }

    #[test]
    fn literal_urls_are_checked_as_written() {
        for refused in [
            "http://169.254.169.254/latest/meta-data",
            "http://127.0.0.1:8080/internal-admin",
            "http://[::1]/",
            "http://[::ffff:10.0.0.1]/",
            "http://0x7f000001/",
            "http://2130706433/",
        ] {
            assert!(check_url(refused).is_err(), "{refused} must be refused");
        }
        // A name is left to the resolver, even one that resolves to loopback.
        for allowed in [
            "https://agents.example.com/wake",
            "http://93.184.216.34/",
            "http://localhost/",
        ] {
            assert!(check_url(allowed).is_ok(), "{allowed} must be allowed");
        }
    }

    #[tokio::test]
    async fn a_client_with_the_resolver_refuses_a_name_resolving_to_loopback() {
        crate::telemetry::install_tls_provider();
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(Resolver))
            .build()
            .expect("client");
        let error = client
            .get("http://localhost:9/")
            .send()
            .await
            .expect_err("refused");
        assert!(is_forbidden_error(&error), "{error:?}");
    }

    #[tokio::test]
    async fn the_resolver_drops_forbidden_addresses() {
        use reqwest::dns::Resolve as _;
        let name: reqwest::dns::Name = "localhost".parse().expect("a name");
        let Err(error) = Resolver.resolve(name).await else {
            panic!("localhost resolves to loopback only");
        };
        assert!(is_forbidden_error(error.as_ref()));
    }
}
