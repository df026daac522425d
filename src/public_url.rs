//! The URL users reach a deployed app at: configured, or derived from the proxy's listen address
//! and the Docker engine's address (pure: no lookups, no connections).

/// `proxy.public_url` when configured; else the proxy's port on the address it listens on, or
/// (listening on all interfaces) on the engine's host: the host of a `tcp://`, `http(s)://` or
/// `ssh://` engine, `localhost` for a local socket.
pub fn derive(listen: &str, engine: Option<&str>, configured: Option<&str>) -> String {
    if let Some(url) = configured {
        return url.to_string();
    }
    let (ip, port) = crate::release::plan::listen_parts(listen);
    let host = if !matches!(ip.as_str(), "" | "0.0.0.0" | "[::]" | "::") {
        ip
    } else {
        engine
            .and_then(engine_host)
            .unwrap_or_else(|| "localhost".into())
    };
    format!("http://{host}:{port}")
}

/// The host name or address of a remote engine address; None for a local socket.
fn engine_host(engine: &str) -> Option<String> {
    let rest = ["tcp://", "http://", "https://", "ssh://"]
        .iter()
        .find_map(|scheme| engine.strip_prefix(scheme))?;
    let authority = rest.split('/').next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = if authority.starts_with('[') {
        authority.split_inclusive(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::derive as url;

    #[test]
    fn item18_public_url_names_the_engine_host() {
        assert_eq!(url("8080", None, None), "http://localhost:8080");
        let sock = Some("unix:///var/run/docker.sock");
        assert_eq!(url("8080", sock, None), "http://localhost:8080");
        assert_eq!(url("0.0.0.0:80", sock, None), "http://localhost:80");
        assert_eq!(url("127.0.0.1:80", sock, None), "http://127.0.0.1:80");
        let tcp = Some("tcp://10.1.2.3:2375");
        assert_eq!(url("18090", tcp, None), "http://10.1.2.3:18090");
        assert_eq!(url("0.0.0.0:18090", tcp, None), "http://10.1.2.3:18090");
        assert_eq!(url("[::]:80", tcp, None), "http://10.1.2.3:80");
        assert_eq!(url("10.9.9.9:80", tcp, None), "http://10.9.9.9:80");
        let ssh = Some("ssh://deploy@build-1.example.com:22");
        assert_eq!(url("80", ssh, None), "http://build-1.example.com:80");
        let v6 = Some("tcp://[fd00::1]:2376");
        assert_eq!(url("80", v6, None), "http://[fd00::1]:80");
        let https = Some("https://docker.example.com/");
        assert_eq!(url("80", https, None), "http://docker.example.com:80");
        let configured = Some("https://shop.example.com");
        assert_eq!(url("80", tcp, configured), "https://shop.example.com");
    }
}
