//! Rules for the `url` of a `type: event` webhook.
//!
//! Messages show at most the scheme and host: URLs often carry tokens in their path
//! or query, and admission messages end up in audit logs.

use crate::destination_policy::DestinationPolicy;
use url::Url;

pub const MAX_URL_LENGTH: usize = 2048;

/// What is wrong with an event URL (errors) and what is merely risky (warnings).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UrlFindings {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// The parsed URL when it is usable, for rules that combine fields.
    pub scheme: Option<String>,
}

pub fn check(raw: &str, policy: &DestinationPolicy) -> UrlFindings {
    let mut out = UrlFindings::default();
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        out.errors
            .push("is empty; set it to the http(s) URL of your event receiver".into());
        return out;
    }
    if trimmed.len() != raw.len() {
        out.errors.push(
            "has leading or trailing whitespace; remove it (the mutating webhook trims it for you)"
                .into(),
        );
    }
    if trimmed.len() > MAX_URL_LENGTH {
        out.errors.push(format!(
            "is {} characters long; shorten it to at most {MAX_URL_LENGTH}",
            trimmed.len()
        ));
        return out;
    }
    let url = match Url::parse(trimmed) {
        Ok(url) => url,
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            out.errors.push(
                "is not an absolute URL; use a full URL such as http://event-receiver.notifications/events"
                    .into(),
            );
            return out;
        }
        Err(url::ParseError::EmptyHost) => {
            out.errors.push(
                "has no host; add the receiver's host, e.g. http://event-receiver.notifications/"
                    .into(),
            );
            return out;
        }
        Err(e) => {
            out.errors
                .push(format!("is not a valid URL ({e}); use a full http(s) URL"));
            return out;
        }
    };
    if !matches!(url.scheme(), "http" | "https") {
        // A scheme is short and carries no secret.
        out.errors.push(format!(
            "scheme \"{}\" is not supported; use http or https",
            url.scheme()
        ));
        return out;
    }
    out.scheme = Some(url.scheme().to_string());
    // The WHATWG parser repairs `https:///x` and `http:host` into URLs with a host;
    // Flagger's Go client does not, and fails at send time. Judge what was written.
    let host = if written_host(trimmed).is_some_and(|h| !h.is_empty()) {
        url.host()
    } else {
        None
    };
    match host {
        None => out.errors.push(
            "has no host; add the receiver's host, e.g. http://event-receiver.notifications/"
                .into(),
        ),
        Some(host) => {
            if let Err(refusal) = policy.check_host(&host) {
                out.errors.push(refusal.to_string());
            }
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        out.warnings.push(
            "contains credentials (user:password@), which are readable by anyone who can read the canary; \
             prefer a receiver that authenticates requests by signature"
                .into(),
        );
    }
    if url.fragment().is_some() {
        out.warnings
            .push("has a fragment (#...), which is never sent to the receiver; remove it".into());
    }
    out
}

/// The host as written between `scheme://` (and any `user@`) and the port or path.
fn written_host(raw: &str) -> Option<&str> {
    let rest = raw.split_once(':')?.1.strip_prefix("//")?;
    let authority = &rest[..rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.starts_with('[') {
        return host_port.find(']').map(|end| &host_port[..=end]);
    }
    Some(host_port.split(':').next().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(url: &str) -> Vec<String> {
        check(url, &DestinationPolicy::default()).errors
    }

    #[test]
    fn error_table() {
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LENGTH));
        let cases: &[(&str, &str)] = &[
            ("", "is empty"),
            ("   ", "is empty"),
            ("/just/a/path", "is not an absolute URL"),
            ("receiver.notifications/events", "is not an absolute URL"),
            (
                "ftp://files.example.com/x",
                "scheme \"ftp\" is not supported; use http or https",
            ),
            ("file:///etc/passwd", "scheme \"file\" is not supported"),
            (
                "mailto:ops@example.com",
                "scheme \"mailto\" is not supported",
            ),
            ("http://", "has no host"),
            ("https:///path", "has no host"),
            ("http:receiver.ns/events", "has no host"),
            ("http://user@:80/", "has no host"),
            ("http://exa mple.com/", "is not a valid URL"),
            (
                "http://example.com:99999/",
                "is not a valid URL (invalid port number)",
            ),
            (&long, "characters long; shorten it to at most 2048"),
            (
                "http://127.0.0.1:8080/",
                "host \"127.0.0.1\" is a loopback address",
            ),
            (
                "http://localhost/",
                "host \"localhost\" is a loopback address",
            ),
            ("http://[::1]/", "host \"::1\" is a loopback address"),
            (
                "http://169.254.169.254/latest/meta-data",
                "host \"169.254.169.254\" is a link-local address",
            ),
            ("http://[fe80::1%25eth0]/", "is not a valid URL"),
            ("http://0.0.0.0/", "is an unspecified address"),
            (
                "http://metadata.google.internal/",
                "is a cloud metadata host",
            ),
            (" http://receiver/ ", "has leading or trailing whitespace"),
        ];
        for (url, want) in cases {
            let got = errors(url);
            assert!(
                got.iter().any(|e| e.contains(want)),
                "{url:?}: {got:?} lacks {want:?}"
            );
        }
    }

    #[test]
    fn accepted_urls() {
        for url in [
            "http://event-receiver.notifications/slack",
            "https://hooks.example.com/events?token=abc",
            "http://10.0.0.12:8080/",
            "https://[2001:db8::1]:8443/x",
            "HTTPS://Example.COM/",
        ] {
            let f = check(url, &DestinationPolicy::default());
            assert!(f.errors.is_empty(), "{url}: {:?}", f.errors);
            assert!(f.warnings.is_empty(), "{url}: {:?}", f.warnings);
        }
    }

    #[test]
    fn warnings_and_no_secrets_in_messages() {
        let f = check(
            "https://alice:s3cret@hooks.example.com/T0K3N?key=abc#frag",
            &DestinationPolicy::default(),
        );
        assert!(f.errors.is_empty());
        assert_eq!(f.warnings.len(), 2, "{:?}", f.warnings);
        assert!(f.warnings[0].contains("credentials"));
        assert!(f.warnings[1].contains("fragment"));
        let f2 = check(
            "ftp://alice:s3cret@h/T0K3N?key=abc",
            &DestinationPolicy::default(),
        );
        for msg in f.warnings.iter().chain(&f2.errors) {
            for secret in ["s3cret", "T0K3N", "key=abc", "alice"] {
                assert!(!msg.contains(secret), "{msg} leaks {secret}");
            }
        }
    }

    #[test]
    fn allow_host_lets_local_receivers_through() {
        let policy = DestinationPolicy::new(&[], &["127.0.0.1".into()], &[], &[]).unwrap();
        assert!(check("http://127.0.0.1:9000/", &policy).errors.is_empty());
        assert!(!check("http://127.0.0.2:9000/", &policy).errors.is_empty());
    }
}
