//! Listener specs: the `--listen [NAME=]ADDR` arguments.
//!
//! Pure: binding them is the supervisor's.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// Where a listener binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addr {
    /// TCP on one address.
    Tcp(SocketAddr),
    /// TCP on every address: IPv6 `[::]` dual-stack, or `0.0.0.0` where the
    /// host has no IPv6.
    TcpAll(u16),
    /// UDP on one address.
    Udp(SocketAddr),
    /// UDP on every address, dual-stack like [`Addr::TcpAll`].
    UdpAll(u16),
    /// Unix stream socket at a path.
    Unix(PathBuf),
    /// Unix stream socket in the abstract namespace (`unix:@name`).
    UnixAbstract(Vec<u8>),
}

/// One `--listen` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The name passed in `LISTEN_FDNAMES`.
    pub name: String,
    /// Where to bind.
    pub addr: Addr,
    /// The address as the user wrote it.
    pub text: String,
    /// No name was given and the port is 0: the name is made from the
    /// address once bound, so it shows the port the kernel chose.
    pub name_from_address: bool,
}

/// The forms an address may take, for error messages.
const FORMS: &str = "expected [NAME=]ADDR with ADDR one of HOST:PORT, [IPV6]:PORT, :PORT, udp:HOST:PORT, unix:/PATH";

impl FromStr for Spec {
    type Err = String;

    fn from_str(s: &str) -> Result<Spec, String> {
        // Only a Unix path may hold a '=': anything else splits at the first
        // one into NAME=ADDR.
        match s.split_once('=') {
            Some((n, a)) if !s.starts_with("unix:") => Spec::named(n, a),
            _ => Spec::unnamed(s),
        }
    }
}

impl Spec {
    /// A spec from its name and its address text (`NAME=ADDR` split).
    ///
    /// # Errors
    /// An invalid name or address; the message says which and why.
    pub fn named(name: &str, text: &str) -> Result<Spec, String> {
        let addr = parse_addr(text).map_err(|why| format!("invalid address '{text}': {why}"))?;
        if !valid_name(name) {
            return Err(format!(
                "invalid listener name '{name}': a name is 1 to 255 printable ASCII characters without ':' or space"
            ));
        }
        Ok(Spec {
            name_from_address: false,
            name: name.to_string(),
            addr,
            text: text.to_string(),
        })
    }

    /// A spec without a name: named after its address.
    fn unnamed(text: &str) -> Result<Spec, String> {
        let addr = parse_addr(text).map_err(|why| format!("invalid address '{text}': {why}"))?;
        // LISTEN_FDNAMES is ':'-separated, so the default name (the
        // address) cannot keep its colons.
        let name = text.replace(':', "_");
        if !valid_name(&name) {
            return Err(format!(
                "address '{text}' cannot serve as a listener name; give one with NAME=ADDR"
            ));
        }
        let port_zero = match &addr {
            Addr::Tcp(a) | Addr::Udp(a) => a.port() == 0,
            Addr::TcpAll(p) | Addr::UdpAll(p) => *p == 0,
            _ => false,
        };
        Ok(Spec {
            name_from_address: port_zero,
            name,
            addr,
            text: text.to_string(),
        })
    }
}

pub use supervisor_child::protocol::fetch::valid_name;

/// Parse the address part of a spec: `HOST:PORT`, `[IPV6]:PORT`, `:PORT`,
/// `PORT`, each optionally after `tcp:` or `udp:`; `unix:/PATH` or
/// `unix:@NAME`.
///
/// # Errors
/// None of these forms; the message says what is wrong.
pub fn parse_addr(text: &str) -> Result<Addr, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        if path.contains(['\n', '\r']) {
            return Err("a line break in a socket name".into());
        }
        if let Some(abs) = path.strip_prefix('@') {
            if abs.is_empty() || abs.len() > 107 {
                return Err("an abstract name is 1 to 107 bytes".into());
            }
            return Ok(Addr::UnixAbstract(abs.as_bytes().to_vec()));
        }
        if path.is_empty() {
            return Err("empty socket path".into());
        }
        if path.len() > 107 {
            return Err("a socket path is at most 107 bytes".into());
        }
        return Ok(Addr::Unix(PathBuf::from(path)));
    }
    if let Some(rest) = text.strip_prefix("udp:") {
        return match host_port(rest)? {
            (Some(ip), port) => Ok(Addr::Udp(SocketAddr::new(ip, port))),
            (None, port) => Ok(Addr::UdpAll(port)),
        };
    }
    let rest = text.strip_prefix("tcp:").unwrap_or(text);
    match host_port(rest)? {
        (Some(ip), port) => Ok(Addr::Tcp(SocketAddr::new(ip, port))),
        (None, port) => Ok(Addr::TcpAll(port)),
    }
}

/// `HOST:PORT`, `[V6]:PORT`, `:PORT` or a bare `PORT` (host `None`, as
/// systemd's `ListenStream=8080` means every address). `localhost` is the
/// one host name understood.
///
/// # Errors
/// Not one of these forms, a port that is not a number from 0 to 65535, a
/// host that is not an IP address.
pub fn host_port(s: &str) -> Result<(Option<IpAddr>, u16), String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let port = s
            .parse()
            .map_err(|_| format!("port '{s}' is not a number from 0 to 65535"))?;
        return Ok((None, port));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(FORMS.into());
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port '{port}' is not a number from 0 to 65535"))?;
    if host.is_empty() {
        return Ok((None, port));
    }
    let ip = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| format!("'{v6}' is not an IPv6 address"))?
    } else if host == "localhost" {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| {
            if host.contains(':') {
                format!("'{host}': write an IPv6 address in brackets, [{host}]:{port}")
            } else {
                format!("'{host}' is not an IP address ({FORMS})")
            }
        })?
    };
    Ok((Some(ip), port))
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp(a) => write!(f, "{a}"),
            Addr::TcpAll(p) => write!(f, ":{p}"),
            Addr::Udp(a) => write!(f, "udp:{a}"),
            Addr::UdpAll(p) => write!(f, "udp::{p}"),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
            Addr::UnixAbstract(n) => write!(f, "unix:@{}", String::from_utf8_lossy(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> Result<Spec, String> {
        s.parse()
    }

    #[test]
    fn parses_every_form() {
        let s = spec("127.0.0.1:8080").unwrap();
        assert_eq!(s.addr, Addr::Tcp("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(s.name, "127.0.0.1_8080");
        let s = spec("http=[::1]:80").unwrap();
        assert_eq!(
            (s.name.as_str(), s.addr),
            ("http", Addr::Tcp("[::1]:80".parse().unwrap()))
        );
        assert_eq!(spec(":8080").unwrap().addr, Addr::TcpAll(8080));
        assert_eq!(
            spec("tcp:127.0.0.1:1").unwrap().addr,
            Addr::Tcp("127.0.0.1:1".parse().unwrap())
        );
        assert_eq!(
            spec("dns=udp:127.0.0.1:5353").unwrap().addr,
            Addr::Udp("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(
            spec("unix:/run/a.sock").unwrap().addr,
            Addr::Unix("/run/a.sock".into())
        );
        assert_eq!(
            spec("unix:@x").unwrap().addr,
            Addr::UnixAbstract(b"x".to_vec())
        );
        assert_eq!(
            spec("unix:/tmp/a=b.sock").unwrap().addr,
            Addr::Unix("/tmp/a=b.sock".into())
        );
        let s = spec("web=unix:/tmp/a=b.sock").unwrap();
        assert_eq!(
            (s.name.as_str(), s.addr),
            ("web", Addr::Unix("/tmp/a=b.sock".into()))
        );
        assert_eq!(spec("udp::53").unwrap().addr, Addr::UdpAll(53));
        assert_eq!(
            spec("localhost:1").unwrap().addr,
            Addr::Tcp("127.0.0.1:1".parse().unwrap())
        );
    }

    #[test]
    fn rejects_with_a_reason() {
        for (input, want) in [
            ("80x", "invalid address '80x': expected"),
            ("99999", "port '99999' is not a number"),
            ("127.0.0.1:http", "port 'http' is not a number"),
            ("127.0.0.1:70000", "port '70000' is not a number"),
            ("example.com:80", "'example.com' is not an IP address"),
            ("::1:80", "write an IPv6 address in brackets"),
            ("[zz]:80", "'zz' is not an IPv6 address"),
            ("unix:", "empty socket path"),
            ("a:b=127.0.0.1:80", "invalid listener name 'a:b'"),
            ("=127.0.0.1:80", "invalid listener name ''"),
        ] {
            let e = spec(input).unwrap_err();
            assert!(e.contains(want), "{input}: {e}");
        }
    }

    #[test]
    fn a_bare_port_means_every_address() {
        let s = spec("8080").unwrap();
        assert_eq!(s.addr, Addr::TcpAll(8080));
        assert_eq!(s.name, "8080");
        assert!(!s.name_from_address);
        assert!(spec("127.0.0.1:0").unwrap().name_from_address);
        assert!(!spec("web=127.0.0.1:0").unwrap().name_from_address);
    }

    use supervisor_child::test_rng::Rng;

    const NAME_CHARS: &str = "abcXYZ019_-. =/@[]";

    fn random_addr(rng: &mut Rng) -> (String, Addr) {
        let port = if rng.one_in(5) { 0 } else { rng.next() as u16 };
        let v4 = Ipv4Addr::from(rng.next() as u32);
        let v6 = Ipv6Addr::from(u128::from(rng.next()) << 64 | u128::from(rng.next()));
        match rng.below(7) {
            0 => (
                format!("{v4}:{port}"),
                Addr::Tcp(SocketAddr::new(v4.into(), port)),
            ),
            1 => (
                format!("tcp:[{v6}]:{port}"),
                Addr::Tcp(SocketAddr::new(v6.into(), port)),
            ),
            2 => (format!(":{port}"), Addr::TcpAll(port)),
            3 => (format!("{port}"), Addr::TcpAll(port)),
            4 => (
                format!("udp:{v4}:{port}"),
                Addr::Udp(SocketAddr::new(v4.into(), port)),
            ),
            5 => {
                let path = format!("/{}", rng.string_from("ab/=:.@ _", 100));
                (format!("unix:{path}"), Addr::Unix(path.into()))
            }
            _ => {
                let name = format!("n{}", rng.string_from("ab/=:.@ _", 100));
                (
                    format!("unix:@{name}"),
                    Addr::UnixAbstract(name.into_bytes()),
                )
            }
        }
    }

    #[test]
    fn formatted_valid_specs_parse_back() {
        let mut rng = Rng::new(5);
        for _ in 0..10_000 {
            let (text, addr) = random_addr(&mut rng);
            // Printed, the address parses back to itself.
            assert_eq!(parse_addr(&addr.to_string()).as_ref(), Ok(&addr), "{text}");
            let name = rng
                .string_from(NAME_CHARS, 20)
                .replace('=', "")
                .chars()
                .filter(|c| *c != ' ')
                .collect::<String>();
            if name.is_empty() && text.contains(' ') {
                // A name cannot hold a space (the control socket's listener
                // descriptions separate fields with spaces).
                let e = text.parse::<Spec>().unwrap_err();
                assert!(e.contains("cannot serve as a listener name"), "{e}");
            } else if name.is_empty() {
                let spec: Spec = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
                assert_eq!((&spec.addr, spec.text.as_str()), (&addr, text.as_str()));
                assert_eq!(spec.name, text.replace(':', "_"));
            } else {
                let spec: Spec = format!("{name}={text}")
                    .parse()
                    .unwrap_or_else(|e| panic!("{name}={text}: {e}"));
                assert_eq!((spec.name.as_str(), &spec.addr), (name.as_str(), &addr));
                assert!(!spec.name_from_address);
            }
        }
    }

    #[test]
    fn any_text_parses_or_is_refused_with_a_reason() {
        let mut rng = Rng::new(6);
        let pieces = [
            "unix:",
            "udp:",
            "tcp:",
            "@",
            "/",
            "=",
            ":",
            "[",
            "]",
            "::1",
            "127.0.0.1",
            "65535",
            "65536",
            "0",
            "localhost",
            "a",
        ];
        for _ in 0..20_000 {
            let text = rng.mix(&pieces, 8);
            match text.parse::<Spec>() {
                Ok(spec) => {
                    assert!(
                        !spec.name.is_empty()
                            && supervisor_child::protocol::valid_fd_name(&spec.name)
                    );
                    assert_eq!(parse_addr(&spec.text).as_ref(), Ok(&spec.addr));
                }
                Err(e) => assert!(!e.is_empty()),
            }
            let _ = host_port(&text);
        }
    }

    #[test]
    fn oversized_socket_names_are_refused_not_cut() {
        assert!(spec(&format!("unix:/{}", "a".repeat(106))).is_ok());
        assert!(spec(&format!("unix:/{}", "a".repeat(107))).is_err());
        assert!(spec(&format!("unix:@{}", "a".repeat(107))).is_ok());
        assert!(spec(&format!("unix:@{}", "a".repeat(108))).is_err());
        let name = "n".repeat(256);
        assert!(spec(&format!("{name}=:80")).is_err());
        assert!(spec(&format!("{}=:80", &name[1..])).is_ok());
    }
}
