//! Which hosts canary-notifier may send events to. One policy, used by admission to
//! check event URLs and by the sender to check resolved addresses at send time.

use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;
use url::Host;
use wildmatch::WildMatch;

/// Address ranges refused by default: reaching them from a controller is how a
/// webhook URL becomes a request forgery (cloud metadata, the pod's own ports).
const BUILT_IN_BLOCKS: [(&str, BlockReason); 6] = [
    ("127.0.0.0/8", BlockReason::Loopback),
    ("::1/128", BlockReason::Loopback),
    ("169.254.0.0/16", BlockReason::LinkLocal),
    ("fe80::/10", BlockReason::LinkLocal),
    ("0.0.0.0/8", BlockReason::Unspecified),
    ("::/128", BlockReason::Unspecified),
];

const METADATA_HOSTS: [&str; 2] = ["metadata", "metadata.google.internal"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockReason {
    Loopback,
    LinkLocal,
    Unspecified,
    MetadataHost,
    DeniedRange,
}

impl fmt::Display for BlockReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlockReason::Loopback => "a loopback address",
            BlockReason::LinkLocal => "a link-local address (cloud metadata range)",
            BlockReason::Unspecified => "an unspecified address",
            BlockReason::MetadataHost => "a cloud metadata host",
            BlockReason::DeniedRange => "in a range denied by --deny-cidr",
        })
    }
}

/// Why a destination may not be called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    Blocked {
        host: String,
        /// The address the host resolved to, when refused at send time.
        resolved: Option<IpAddr>,
        reason: BlockReason,
    },
    NotListed {
        host: String,
        patterns: Vec<String>,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Blocked {
                host,
                resolved,
                reason,
            } => {
                write!(f, "host \"{host}\" ")?;
                if let Some(ip) = resolved {
                    write!(f, "resolves to {ip}, which ")?;
                }
                write!(
                    f,
                    "is {reason}, which event webhooks may not call; \
                     use the receiver's service DNS name, or ask the operator's admin to exempt it \
                     with --allow-host or --allow-cidr"
                )
            }
            Refusal::NotListed { host, patterns } => write!(
                f,
                "host \"{host}\" is not in the allowed event hosts; use a host matching one of {} \
                 (--only-hosts)",
                patterns.join(", ")
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid {flag} value \"{value}\": expected {expected}")]
pub struct PolicyConfigError {
    pub flag: &'static str,
    pub value: String,
    pub expected: &'static str,
}

#[derive(Clone, Debug)]
pub struct DestinationPolicy {
    blocks: Vec<(IpNet, BlockReason)>,
    allow_hosts: Vec<String>,
    allow_cidrs: Vec<IpNet>,
    only_hosts: Vec<(String, WildMatch)>,
}

impl Default for DestinationPolicy {
    fn default() -> Self {
        let blocks = BUILT_IN_BLOCKS
            .iter()
            .filter_map(|(net, reason)| net.parse().ok().map(|n| (n, *reason)))
            .collect();
        DestinationPolicy {
            blocks,
            allow_hosts: Vec::new(),
            allow_cidrs: Vec::new(),
            only_hosts: Vec::new(),
        }
    }
}

/// Lower-case, no trailing dot, no IPv6 brackets: the form hosts are compared in.
fn normalise_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

fn parse_net(flag: &'static str, value: &str) -> Result<IpNet, PolicyConfigError> {
    let value = value.trim();
    value
        .parse::<IpNet>()
        .or_else(|_| value.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| PolicyConfigError {
            flag,
            value: value.to_string(),
            expected: "an IP range such as 10.0.0.0/8 or an address",
        })
}

impl DestinationPolicy {
    pub fn new(
        deny_cidrs: &[String],
        allow_hosts: &[String],
        allow_cidrs: &[String],
        only_hosts: &[String],
    ) -> Result<Self, PolicyConfigError> {
        let mut policy = DestinationPolicy::default();
        for value in deny_cidrs {
            policy
                .blocks
                .push((parse_net("--deny-cidr", value)?, BlockReason::DeniedRange));
        }
        for value in allow_cidrs {
            policy.allow_cidrs.push(parse_net("--allow-cidr", value)?);
        }
        for value in allow_hosts {
            let host = normalise_host(value.trim());
            if host.is_empty() || host.contains('/') {
                return Err(PolicyConfigError {
                    flag: "--allow-host",
                    value: value.clone(),
                    expected: "a host name or IP address, without scheme or port",
                });
            }
            policy.allow_hosts.push(host);
        }
        for value in only_hosts {
            let pattern = normalise_host(value.trim());
            if pattern.is_empty() {
                return Err(PolicyConfigError {
                    flag: "--only-hosts",
                    value: value.clone(),
                    expected: "a host glob such as *.example.com",
                });
            }
            let matcher = WildMatch::new(&pattern);
            policy.only_hosts.push((pattern, matcher));
        }
        Ok(policy)
    }

    fn blocked_ip(&self, ip: IpAddr) -> Option<BlockReason> {
        let ip = ip.to_canonical(); // ::ffff:127.0.0.1 is 127.0.0.1
        if self.allow_cidrs.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        self.blocks
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|(_, reason)| *reason)
    }

    fn blocked_name(name: &str) -> Option<BlockReason> {
        if name == "localhost" || name.ends_with(".localhost") {
            Some(BlockReason::Loopback)
        } else if METADATA_HOSTS.contains(&name) {
            Some(BlockReason::MetadataHost)
        } else {
            None
        }
    }

    fn check_listed(&self, host: &str) -> Result<(), Refusal> {
        if self.only_hosts.is_empty() || self.only_hosts.iter().any(|(_, m)| m.matches(host)) {
            return Ok(());
        }
        Err(Refusal::NotListed {
            host: host.to_string(),
            patterns: self.only_hosts.iter().map(|(p, _)| p.clone()).collect(),
        })
    }

    /// Checks a URL's host as written (admission, and the sender before resolving).
    pub fn check_host(&self, host: &Host<&str>) -> Result<(), Refusal> {
        let (name, reason) = match host {
            Host::Domain(d) => {
                let name = normalise_host(d);
                let reason = Self::blocked_name(&name);
                (name, reason)
            }
            Host::Ipv4(ip) => (ip.to_string(), self.blocked_ip(IpAddr::V4(*ip))),
            Host::Ipv6(ip) => (ip.to_string(), self.blocked_ip(IpAddr::V6(*ip))),
        };
        self.check_listed(&name)?;
        match reason {
            Some(reason) if !self.allow_hosts.contains(&name) => Err(Refusal::Blocked {
                host: name,
                resolved: None,
                reason,
            }),
            _ => Ok(()),
        }
    }

    /// Checks an address a host name resolved to, so a name pointing at a blocked
    /// range is refused at send time. `host` is the name as written in the URL.
    pub fn check_resolved(&self, host: &str, ip: IpAddr) -> Result<(), Refusal> {
        let name = normalise_host(host);
        if self.allow_hosts.contains(&name)
            || self.allow_hosts.contains(&ip.to_canonical().to_string())
        {
            return Ok(());
        }
        match self.blocked_ip(ip) {
            Some(reason) => Err(Refusal::Blocked {
                host: name,
                resolved: Some(ip.to_canonical()),
                reason,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> Host<String> {
        url::Url::parse(&format!("http://{s}/"))
            .ok()
            .and_then(|u| u.host().map(|h| h.to_owned()))
            .unwrap_or_else(|| panic!("bad test host {s}"))
    }

    fn check(policy: &DestinationPolicy, s: &str) -> Result<(), Refusal> {
        let h = host(s);
        let borrowed = match &h {
            Host::Domain(d) => Host::Domain(d.as_str()),
            Host::Ipv4(ip) => Host::Ipv4(*ip),
            Host::Ipv6(ip) => Host::Ipv6(*ip),
        };
        policy.check_host(&borrowed)
    }

    fn reason(policy: &DestinationPolicy, s: &str) -> Option<BlockReason> {
        match check(policy, s) {
            Ok(()) => None,
            Err(Refusal::Blocked { reason, .. }) => Some(reason),
            Err(other) => panic!("{s}: unexpected {other:?}"),
        }
    }

    #[test]
    fn default_block_list() {
        let p = DestinationPolicy::default();
        let cases = [
            ("127.0.0.1", Some(BlockReason::Loopback)),
            ("127.1.2.3", Some(BlockReason::Loopback)),
            ("0x7f.1", Some(BlockReason::Loopback)), // WHATWG normalises to 127.0.0.1
            ("2130706433", Some(BlockReason::Loopback)),
            ("[::1]", Some(BlockReason::Loopback)),
            ("[::ffff:127.0.0.1]", Some(BlockReason::Loopback)),
            ("localhost", Some(BlockReason::Loopback)),
            ("LOCALHOST.", Some(BlockReason::Loopback)),
            ("api.localhost", Some(BlockReason::Loopback)),
            ("169.254.169.254", Some(BlockReason::LinkLocal)),
            ("[fe80::1]", Some(BlockReason::LinkLocal)),
            ("[::ffff:169.254.169.254]", Some(BlockReason::LinkLocal)),
            ("0.0.0.0", Some(BlockReason::Unspecified)),
            ("[::]", Some(BlockReason::Unspecified)),
            ("metadata", Some(BlockReason::MetadataHost)),
            ("metadata.google.internal", Some(BlockReason::MetadataHost)),
            ("Metadata.Google.Internal.", Some(BlockReason::MetadataHost)),
            ("10.0.0.1", None),
            ("192.168.1.10", None),
            ("[2001:db8::1]", None),
            ("receiver.notifications", None),
            ("localhost.example.com", None),
            ("metadata.example.com", None),
            ("128.0.0.1", None),
            ("169.255.0.1", None),
        ];
        for (h, want) in cases {
            assert_eq!(reason(&p, h), want, "{h}");
        }
    }

    #[test]
    fn deny_and_allow_flags() {
        let p = DestinationPolicy::new(
            &["10.0.0.0/8".into(), "192.168.1.7".into()],
            &["127.0.0.1".into(), "[::1]".into(), "Metadata".into()],
            &["169.254.10.0/24".into(), "10.1.0.0/16".into()],
            &[],
        )
        .unwrap();
        let cases = [
            ("10.2.3.4", Some(BlockReason::DeniedRange)),
            ("192.168.1.7", Some(BlockReason::DeniedRange)),
            ("192.168.1.8", None),
            ("10.1.2.3", None),
            ("127.0.0.1", None),
            ("127.0.0.2", Some(BlockReason::Loopback)),
            ("[::1]", None),
            ("metadata", None),
            ("169.254.10.5", None),
            ("169.254.169.254", Some(BlockReason::LinkLocal)),
        ];
        for (h, want) in cases {
            assert_eq!(reason(&p, h), want, "{h}");
        }
    }

    #[test]
    fn only_hosts_restricts_to_globs() {
        let p = DestinationPolicy::new(
            &[],
            &[],
            &[],
            &["*.corp.example".into(), "hooks.example.com".into()],
        )
        .unwrap();
        assert_eq!(check(&p, "a.corp.example"), Ok(()));
        assert_eq!(check(&p, "A.Corp.Example"), Ok(()));
        assert_eq!(check(&p, "hooks.example.com"), Ok(()));
        let err = check(&p, "evil.example.com").unwrap_err();
        assert!(matches!(err, Refusal::NotListed { .. }));
        assert!(
            err.to_string()
                .contains("*.corp.example, hooks.example.com"),
            "{err}"
        );
        // Listed hosts are still subject to the block list.
        let p = DestinationPolicy::new(&[], &[], &[], &["*".into()]).unwrap();
        assert_eq!(reason(&p, "127.0.0.1"), Some(BlockReason::Loopback));
    }

    #[test]
    fn resolved_addresses_are_checked() {
        let p = DestinationPolicy::new(&[], &["hooks.local".into()], &[], &[]).unwrap();
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let err = p
            .check_resolved("rebind.example.com", loopback)
            .unwrap_err();
        assert_eq!(
            err,
            Refusal::Blocked {
                host: "rebind.example.com".into(),
                resolved: Some(loopback),
                reason: BlockReason::Loopback
            }
        );
        assert!(err.to_string().starts_with(
            "host \"rebind.example.com\" resolves to 127.0.0.1, which is a loopback address"
        ));
        assert_eq!(p.check_resolved("hooks.local", loopback), Ok(()));
        assert_eq!(
            p.check_resolved("x.example.com", "93.184.216.34".parse().unwrap()),
            Ok(())
        );
        let mapped: IpAddr = "::ffff:169.254.169.254".parse().unwrap();
        assert!(p.check_resolved("x.example.com", mapped).is_err());
    }

    #[test]
    fn bad_flag_values_name_the_flag() {
        type Flags<'a> = (
            &'a [String],
            &'a [String],
            &'a [String],
            &'a [String],
            &'a str,
        );
        let cases: [Flags; 4] = [
            (&["10.0.0.0/33".into()], &[], &[], &[], "--deny-cidr"),
            (&[], &[], &["nope".into()], &[], "--allow-cidr"),
            (&[], &["http://x/".into()], &[], &[], "--allow-host"),
            (&[], &[], &[], &["".into()], "--only-hosts"),
        ];
        for (deny, allow_h, allow_c, only, flag) in cases {
            let err = DestinationPolicy::new(deny, allow_h, allow_c, only).unwrap_err();
            assert_eq!(err.flag, flag);
            assert!(
                err.to_string()
                    .starts_with(&format!("invalid {flag} value")),
                "{err}"
            );
        }
    }
}
