//! `proxy.listen`: the host address the proxy publishes, written `PORT`, `IP:PORT` or as an
//! integer port. Parsed once, here; everything after uses the typed ip and port.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use schemars::JsonSchema;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::de::HINT;

const LISTEN_HINT: &str = "write `PORT` or `IP:PORT`, such as `80` or `0.0.0.0:443`";

/// A listen address: a port (1 to 65535) on every interface, or on one IP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenAddr {
    ip: Option<IpAddr>,
    port: u16,
}

impl ListenAddr {
    /// A port on every interface.
    pub fn port_only(port: u16) -> Result<Self, String> {
        Self::checked(None, u32::from(port))
    }

    fn checked(ip: Option<IpAddr>, port: u32) -> Result<Self, String> {
        match u16::try_from(port) {
            Ok(port) if port != 0 => Ok(ListenAddr { ip, port }),
            _ => Err(format!("port {port} is not between 1 and 65535")),
        }
    }

    /// The IP address, None for every interface.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host IP as Docker's port bindings and URLs take it: "" for every interface, an IPv6
    /// address in brackets.
    pub fn host_ip(&self) -> String {
        match self.ip {
            None => String::new(),
            Some(IpAddr::V4(ip)) => ip.to_string(),
            Some(IpAddr::V6(ip)) => format!("[{ip}]"),
        }
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            let port = s
                .parse::<u32>()
                .map_err(|_| "port out of range".to_owned())?;
            return Self::checked(None, port);
        }
        let addr: SocketAddr = s
            .parse()
            .map_err(|_| "not `PORT` or `IP:PORT`".to_owned())?;
        Self::checked(Some(addr.ip()), u32::from(addr.port()))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            None => write!(f, "{}", self.port),
            Some(_) => write!(f, "{}:{}", self.host_ip(), self.port),
        }
    }
}

impl PartialEq<str> for ListenAddr {
    fn eq(&self, other: &str) -> bool {
        other.parse::<ListenAddr>().is_ok_and(|o| o == *self)
    }
}

impl PartialEq<&str> for ListenAddr {
    fn eq(&self, other: &&str) -> bool {
        self == *other
    }
}

impl Serialize for ListenAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ListenAddr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a string or an integer{HINT}{LISTEN_HINT}")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ListenAddr, E> {
                s.parse().map_err(|reason| {
                    E::custom(format_args!(
                        "invalid listen address `{s}`: {reason}{HINT}{LISTEN_HINT}"
                    ))
                })
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ListenAddr, E> {
                // `listen = 18090` means the same as `"18090"`.
                self.visit_str(&n.to_string())
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ListenAddr, E> {
                self.visit_str(&n.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for ListenAddr {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ListenAddr".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["string", "integer"],
            "description": "`PORT` or `IP:PORT`, such as `80` or `0.0.0.0:443`; a bare port may be an integer."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> (String, u16) {
        let l: ListenAddr = s.parse().unwrap();
        (l.host_ip(), l.port())
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(parts("80"), (String::new(), 80));
        assert_eq!(parts("127.0.0.1:9000"), ("127.0.0.1".into(), 9000));
        assert_eq!(parts("0.0.0.0:443"), ("0.0.0.0".into(), 443));
        assert_eq!(parts("[::]:8080"), ("[::]".into(), 8080));
        for bad in [
            "0",
            "65536",
            "127.0.0.1:0",
            "localhost:80",
            "",
            "99999999999999999999",
        ] {
            assert!(bad.parse::<ListenAddr>().is_err(), "{bad}");
        }
        assert_eq!(
            "0.0.0.0:0".parse::<ListenAddr>(),
            Err("port 0 is not between 1 and 65535".to_owned())
        );
    }

    #[test]
    fn shown_as_written() {
        for s in ["8080", "127.0.0.1:9000", "[::]:8080", "[::1]:80"] {
            assert_eq!(s.parse::<ListenAddr>().unwrap().to_string(), s);
        }
        let l: ListenAddr = "0.0.0.0:443".parse().unwrap();
        assert_eq!(l, "0.0.0.0:443");
        assert_eq!(ListenAddr::port_only(8080).unwrap(), "8080");
        assert!(ListenAddr::port_only(0).is_err());
    }
}
