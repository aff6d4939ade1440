use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{DomainError, clip};

/// A registered agent's name: 1 to 63 of `a-z 0-9 - _ .`, starting with a letter or digit.
/// It is the last segment of the agent's SPIFFE ID, so it is kept path-segment safe.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentName(String);

impl AgentName {
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        let ok_len = (1..=63).contains(&value.len());
        let first_ok = value.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let all_ok = value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
        if ok_len && first_ok && all_ok && value != "." && value != ".." {
            Ok(AgentName(value.to_owned()))
        } else {
            Err(DomainError::InvalidAgentName(clip(value)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SPIFFE trust domain (`example.org`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrustDomain(String);

impl TrustDomain {
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        let ok = !value.is_empty()
            && value.len() <= 255
            && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'));
        if ok { Ok(TrustDomain(value.to_owned())) } else { Err(DomainError::InvalidTrustDomain(clip(value))) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SPIFFE ID, validated per the SPIFFE ID standard: `spiffe://<trust-domain>/<path>` with no
/// query, fragment, port or userinfo, no empty, `.` or `..` segments, no trailing `/`, no
/// percent-encoding, at most 2048 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    value: String,
    td_end: usize,
}

const SPIFFE_SCHEME: &str = "spiffe://";

impl SpiffeId {
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        let bad = |reason| DomainError::InvalidSpiffeId { value: clip(value), reason };
        if value.len() > 2048 {
            return Err(bad("longer than 2048 bytes"));
        }
        let rest = value.strip_prefix(SPIFFE_SCHEME).ok_or_else(|| bad("scheme must be `spiffe://`"))?;
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if td.is_empty() {
            return Err(bad("trust domain is missing"));
        }
        if td.contains(':') {
            return Err(bad("a port is not allowed"));
        }
        if td.contains('@') {
            return Err(bad("userinfo is not allowed"));
        }
        TrustDomain::parse(td).map_err(|_| bad("trust domain may hold only lowercase a-z, 0-9, `.`, `-`, `_`"))?;
        if !path.is_empty() {
            if path.ends_with('/') {
                return Err(bad("path must not end with `/`"));
            }
            for seg in path.split('/').skip(1) {
                if seg.is_empty() || seg == "." || seg == ".." {
                    return Err(bad("path has an empty, `.` or `..` segment"));
                }
                if !seg.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) {
                    return Err(bad("path may hold only a-z, A-Z, 0-9, `.`, `-`, `_`"));
                }
            }
        }
        Ok(SpiffeId { value: value.to_owned(), td_end: SPIFFE_SCHEME.len() + td.len() })
    }

    /// `spiffe://<trust-domain>/agent/<name>`.
    pub fn for_agent(trust_domain: &TrustDomain, name: &AgentName) -> Self {
        let value = format!("{SPIFFE_SCHEME}{trust_domain}/agent/{name}");
        SpiffeId { td_end: SPIFFE_SCHEME.len() + trust_domain.as_str().len(), value }
    }

    pub fn trust_domain(&self) -> &str {
        self.value.get(SPIFFE_SCHEME.len()..self.td_end).unwrap_or("")
    }

    pub fn path(&self) -> &str {
        self.value.get(self.td_end..).unwrap_or("")
    }

    /// The agent name if this is an agent ID (`/agent/<name>`).
    pub fn agent_name(&self) -> Option<AgentName> {
        self.path().strip_prefix("/agent/").and_then(|n| AgentName::parse(n).ok())
    }

    pub fn as_str(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

macro_rules! string_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                <$t>::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}
string_serde!(AgentName);
string_serde!(TrustDomain);
string_serde!(SpiffeId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names() {
        assert!(AgentName::parse("support-bot").is_ok());
        assert!(AgentName::parse("a").is_ok());
        assert!(AgentName::parse("").is_err());
        assert!(AgentName::parse("Support").is_err());
        assert!(AgentName::parse("-x").is_err());
        assert!(AgentName::parse("a/b").is_err());
        assert!(AgentName::parse(&"a".repeat(64)).is_err());
    }

    #[test]
    fn spiffe_ids_follow_the_standard() {
        let id = SpiffeId::parse("spiffe://example.org/agent/support-bot").unwrap();
        assert_eq!(id.trust_domain(), "example.org");
        assert_eq!(id.path(), "/agent/support-bot");
        assert_eq!(id.agent_name().unwrap().as_str(), "support-bot");
        assert!(SpiffeId::parse("spiffe://example.org").is_ok());
        for bad in [
            "http://example.org/a",
            "spiffe://",
            "spiffe://Example.org/a",
            "spiffe://example.org:8080/a",
            "spiffe://u@example.org/a",
            "spiffe://example.org/a/",
            "spiffe://example.org//a",
            "spiffe://example.org/./a",
            "spiffe://example.org/../a",
            "spiffe://example.org/a%20b",
            "spiffe://example.org/a?x=1",
            "spiffe://example.org/a#f",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad} should be refused");
        }
        let long = format!("spiffe://example.org/{}", "a".repeat(2100));
        assert!(SpiffeId::parse(&long).is_err());
    }

    #[test]
    fn for_agent_round_trips() {
        let td = TrustDomain::parse("mandate.local").unwrap();
        let name = AgentName::parse("bot").unwrap();
        let id = SpiffeId::for_agent(&td, &name);
        assert_eq!(SpiffeId::parse(id.as_str()).unwrap(), id);
        assert_eq!(id.trust_domain(), "mandate.local");
    }
}
