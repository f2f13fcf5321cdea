//! The `sql` sink's `connection`: a URL (`postgres://user:pass@host:port/db?sslmode=...`,
//! `mysql://user:pass@host:port/db?ssl-mode=...`), or the DSN forms
//! tyk-pump's `connection_string` takes: libpq's `host=... dbname=...`
//! keywords and the Go MySQL driver's `user:pass@tcp(host:port)/db`.
//! Shared by the sink and `pumphouse migrate`, which needs the address
//! for `sandbox.sockets`. Pure: every mistake is unit-tested and named,
//! never with the password.

use std::fmt;

use percent_encoding::percent_decode_str;

/// Which database the URL is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL (`postgres://`, `postgresql://`).
    Postgres,
    /// MySQL or MariaDB (`mysql://`, `mariadb://`).
    Mysql,
}

impl Dialect {
    /// The server's usual port.
    pub fn default_port(self) -> u16 {
        match self {
            Dialect::Postgres => 5432,
            Dialect::Mysql => 3306,
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dialect::Postgres => "postgres",
            Dialect::Mysql => "mysql",
        })
    }
}

/// Whether and how the connection uses TLS, as libpq's `sslmode` names it.
/// The host always verifies the certificate and the name, so `require`
/// and `verify-ca` verify as `verify-full` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Never TLS.
    Disable,
    /// TLS if the server offers it, otherwise in the clear; a certificate
    /// the host cannot verify falls back to the clear, with a warning.
    Prefer,
    /// TLS, verified; no connection without it.
    Require,
}

/// A parsed `connection`.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnUrl {
    pub dialect: Dialect,
    pub user: String,
    pub password: Option<String>,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub tls: TlsMode,
}

/// Never prints the password.
impl fmt::Debug for ConnUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// The URL without its password, for logs and errors.
impl fmt::Display for ConnUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pass = if self.password.is_some() { ":***" } else { "" };
        write!(
            f,
            "{}://{}{}@{}/{}",
            self.dialect,
            self.user,
            pass,
            self.address(),
            self.database
        )
    }
}

impl ConnUrl {
    /// `host:port`, as `sandbox.sockets` lists it.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Parses a URL or a DSN; `kind` is tyk-pump's `type` when known. A
    /// DSN without `kind` is taken for PostgreSQL's when it has `key=value`
    /// words, for MySQL's when it has `@tcp(`.
    pub fn parse_any(text: &str, kind: Option<Dialect>) -> Result<ConnUrl, String> {
        let text = text.trim();
        if text.contains("://") {
            let url = ConnUrl::parse(text)?;
            if kind.is_some_and(|k| k != url.dialect) {
                return Err(format!("is a {} URL, and type says otherwise", url.dialect));
            }
            return Ok(url);
        }
        let looks_mysql =
            text.contains("@tcp(") || text.contains("@unix(") || text.starts_with("tcp(");
        match kind {
            Some(Dialect::Mysql) => parse_go_mysql(text),
            Some(Dialect::Postgres) => parse_libpq(text),
            None if looks_mysql => parse_go_mysql(text),
            None if text.contains('=') => parse_libpq(text),
            None => Err("is neither a URL (postgres://..., mysql://...) nor a DSN".into()),
        }
    }

    /// Parses a URL. Errors name what is wrong, never the password.
    pub fn parse(url: &str) -> Result<ConnUrl, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or("is not a URL (expected postgres://... or mysql://...)")?;
        let dialect = match scheme {
            "postgres" | "postgresql" => Dialect::Postgres,
            "mysql" | "mariadb" => Dialect::Mysql,
            other => {
                return Err(format!(
                    "scheme {other:?} is not postgres, postgresql, mysql or mariadb"
                ))
            }
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let decode = |what: &str, s: &str| -> Result<String, String> {
            percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| format!("the {what} is not UTF-8 once percent-decoded"))
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (decode("user", user)?, Some(decode("password", pass)?)),
                None => (decode("user", u)?, None),
            },
            None => (String::new(), None),
        };
        if user.is_empty() {
            return Err("names no user (postgres://USER:PASSWORD@host/db)".into());
        }
        let (host, port) = split_host(hostport, dialect.default_port())?;
        let database = decode("database", database)?;
        if database.is_empty() {
            return Err("names no database (.../DATABASE at the end of the path)".into());
        }
        let mut tls = TlsMode::Prefer;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match (dialect, key) {
                (Dialect::Postgres, "sslmode") => {
                    tls = match value {
                        "disable" => TlsMode::Disable,
                        "allow" | "prefer" => TlsMode::Prefer,
                        "require" | "verify-ca" | "verify-full" => TlsMode::Require,
                        other => return Err(format!("sslmode={other} is not disable, allow, prefer, require, verify-ca or verify-full")),
                    }
                }
                (Dialect::Mysql, "ssl-mode" | "sslmode") => {
                    tls = match value.to_ascii_lowercase().as_str() {
                        "disabled" | "disable" => TlsMode::Disable,
                        "preferred" | "prefer" => TlsMode::Prefer,
                        "required" | "require" | "verify_ca" | "verify_identity" => {
                            TlsMode::Require
                        }
                        other => return Err(format!("ssl-mode={other} is not DISABLED, PREFERRED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY")),
                    }
                }
                // Options a driver would use that change nothing here.
                (_, "connect_timeout" | "application_name" | "charset" | "parseTime" | "loc") => {}
                (_, other) => {
                    return Err(format!(
                        "option {other:?} is not supported (sslmode / ssl-mode are)"
                    ))
                }
            }
        }
        Ok(ConnUrl {
            dialect,
            user,
            password,
            host,
            port,
            database,
            tls,
        })
    }
}

/// libpq's `key=value` words, values optionally in single quotes with
/// backslash escapes.
fn parse_libpq(text: &str) -> Result<ConnUrl, String> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_string();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!(
                "{key:?} is not a key=value word of a PostgreSQL DSN"
            ));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("the value of {key} has no closing quote")),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        pairs.push((key, value));
    }
    let get = |k: &str| {
        pairs
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let user = get("user")
        .filter(|u| !u.is_empty())
        .ok_or("names no user (user=...)")?;
    let database = get("dbname")
        .filter(|d| !d.is_empty())
        .ok_or("names no database (dbname=...)")?;
    let host = get("host").unwrap_or_else(|| "localhost".into());
    if host.starts_with('/') {
        return Err("names a Unix socket; give the server's TCP host (a plugin reaches it over sandbox.sockets)".into());
    }
    if host.contains(',') {
        return Err("lists several hosts; give one (a proxy or VIP for a cluster)".into());
    }
    let port = match get("port") {
        Some(p) => p
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("port {p:?} is not a number from 1 to 65535"))?,
        None => 5432,
    };
    let tls = match get("sslmode").as_deref() {
        None | Some("allow" | "prefer") => TlsMode::Prefer,
        Some("disable") => TlsMode::Disable,
        Some("require" | "verify-ca" | "verify-full") => TlsMode::Require,
        Some(other) => {
            return Err(format!(
                "sslmode={other} is not disable, allow, prefer, require, verify-ca or verify-full"
            ))
        }
    };
    for (key, _) in &pairs {
        if !matches!(
            key.as_str(),
            "host"
                | "port"
                | "user"
                | "password"
                | "dbname"
                | "sslmode"
                | "connect_timeout"
                | "application_name"
                | "TimeZone"
                | "timezone"
        ) {
            return Err(format!(
                "option {key:?} is not supported (host, port, user, password, dbname, sslmode are)"
            ));
        }
    }
    Ok(ConnUrl {
        dialect: Dialect::Postgres,
        user,
        password: get("password"),
        host,
        port,
        database,
        tls,
    })
}

/// The Go MySQL driver's DSN: `user:password@tcp(host:port)/dbname?params`.
fn parse_go_mysql(text: &str) -> Result<ConnUrl, String> {
    let (head, database_part) = text
        .rsplit_once('/')
        .ok_or("names no database (.../DBNAME at the end)")?;
    let (database, query) = match database_part.split_once('?') {
        Some((d, q)) => (d, Some(q)),
        None => (database_part, None),
    };
    let (userinfo, net) = match head.rsplit_once('@') {
        Some((u, n)) => (u, n),
        None => ("", head),
    };
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (u.to_string(), Some(p.to_string())),
        None => (userinfo.to_string(), None),
    };
    if user.is_empty() {
        return Err("names no user (USER:PASSWORD@tcp(host:port)/db)".into());
    }
    let addr = match net.strip_prefix("tcp(").and_then(|a| a.strip_suffix(')')) {
        Some(a) => a,
        None if net.starts_with("unix(") => {
            return Err("names a Unix socket; give the server's TCP address, tcp(host:port) (a plugin reaches it over sandbox.sockets)".into())
        }
        None if net.is_empty() || net == "tcp" => "127.0.0.1:3306",
        None => return Err(format!("{net:?} is not tcp(host:port)")),
    };
    let (host, port) = split_host(addr, 3306)?;
    if database.is_empty() {
        return Err("names no database (.../DBNAME at the end)".into());
    }
    let mut tls = TlsMode::Disable;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "tls" => {
                tls = match value {
                    "false" => TlsMode::Disable,
                    "preferred" => TlsMode::Prefer,
                    // skip-verify is verified here too: the host always does.
                    "true" | "skip-verify" => TlsMode::Require,
                    other => {
                        return Err(format!(
                            "tls={other} is not true, false, preferred or skip-verify"
                        ))
                    }
                }
            }
            // Driver options that change nothing here.
            "charset"
            | "collation"
            | "parseTime"
            | "loc"
            | "timeout"
            | "readTimeout"
            | "writeTimeout"
            | "maxAllowedPacket"
            | "allowNativePasswords" => {}
            other => return Err(format!("option {other:?} is not supported (tls is)")),
        }
    }
    Ok(ConnUrl {
        dialect: Dialect::Mysql,
        user,
        password,
        host,
        port,
        database: database.to_string(),
        tls,
    })
}

fn split_host(hostport: &str, default_port: u16) -> Result<(String, u16), String> {
    if hostport.is_empty() {
        return Err("names no host".into());
    }
    if hostport.contains(',') {
        return Err("lists several hosts; give one (a proxy or VIP for a cluster)".into());
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("has an unclosed [ in the host")?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse()
            .map_err(|_| format!("port {p:?} is not a number from 1 to 65535"))?,
        None => default_port,
    };
    if port == 0 {
        return Err("port 0 is not a port".into());
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls() {
        let u = ConnUrl::parse("postgres://tyk:p%40ss@db.local:6543/analytics?sslmode=verify-full")
            .unwrap();
        assert_eq!(u.dialect, Dialect::Postgres);
        assert_eq!(u.user, "tyk");
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(u.address(), "db.local:6543");
        assert_eq!(u.database, "analytics");
        assert_eq!(u.tls, TlsMode::Require);
        assert_eq!(u.to_string(), "postgres://tyk:***@db.local:6543/analytics");
        assert!(!format!("{u:?}").contains("p@ss"));

        let u = ConnUrl::parse("postgresql://u@[::1]/d").unwrap();
        assert_eq!(u.address(), "[::1]:5432");
        assert_eq!(u.password, None);
        assert_eq!(u.tls, TlsMode::Prefer);
        assert_eq!(
            ConnUrl::parse("postgres://u@h/d?sslmode=disable")
                .unwrap()
                .tls,
            TlsMode::Disable
        );
    }

    #[test]
    fn mysql_urls() {
        let u = ConnUrl::parse("mysql://root:secret@127.0.0.1/tyk?ssl-mode=REQUIRED").unwrap();
        assert_eq!(u.dialect, Dialect::Mysql);
        assert_eq!(u.port, 3306);
        assert_eq!(u.tls, TlsMode::Require);
        assert_eq!(
            ConnUrl::parse("mariadb://u:p@h:3307/d").unwrap().address(),
            "h:3307"
        );
    }

    #[test]
    fn tyk_pump_dsns() {
        let u = ConnUrl::parse_any(
            "host=db port=6432 user=tyk password='p a\\'ss' dbname=tyk_analytics sslmode=disable",
            None,
        )
        .unwrap();
        assert_eq!(u.dialect, Dialect::Postgres);
        assert_eq!(u.address(), "db:6432");
        assert_eq!(u.password.as_deref(), Some("p a'ss"));
        assert_eq!(u.database, "tyk_analytics");
        assert_eq!(u.tls, TlsMode::Disable);

        let u = ConnUrl::parse_any(
            "root:secret@tcp(127.0.0.1:3307)/tyk?charset=utf8&parseTime=True&loc=Local",
            None,
        )
        .unwrap();
        assert_eq!(u.dialect, Dialect::Mysql);
        assert_eq!(u.address(), "127.0.0.1:3307");
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.tls, TlsMode::Disable);
        assert_eq!(
            ConnUrl::parse_any("u:p@tcp(h)/d?tls=true", Some(Dialect::Mysql))
                .unwrap()
                .tls,
            TlsMode::Require
        );
        for (dsn, needle) in [
            ("host=/var/run/postgresql user=u dbname=d", "Unix socket"),
            ("host=h dbname=d", "no user"),
            (
                "user=u password=hunter2 dbname=d search_path=x",
                "search_path",
            ),
            ("u:hunter2@unix(/tmp/s)/d", "Unix socket"),
            (
                "u:hunter2@tcp(h:1)/d?multiStatements=true",
                "multiStatements",
            ),
            ("plain words", "neither"),
        ] {
            let e = ConnUrl::parse_any(dsn, None).unwrap_err();
            assert!(e.contains(needle), "{dsn}: {e}");
            assert!(!e.contains("hunter2"), "{dsn}: {e}");
        }
        assert!(ConnUrl::parse_any("postgres://u:p@h/d", Some(Dialect::Mysql)).is_err());
    }

    #[test]
    fn mistakes_are_named_without_the_password() {
        for (url, needle) in [
            ("db.local/analytics", "not a URL"),
            ("oracle://u:p@h/d", "oracle"),
            ("postgres://h/d", "no user"),
            ("postgres://u:p@h", "no database"),
            ("postgres://u:p@h:99999/d", "port"),
            ("postgres://u:p@h1,h2/d", "several hosts"),
            ("postgres://u:p@h/d?sslmode=maybe", "sslmode=maybe"),
            (
                "postgres://u:p@h/d?target_session_attrs=any",
                "target_session_attrs",
            ),
            ("postgres://u:hunter2@[::1/d", "unclosed"),
        ] {
            let e = ConnUrl::parse(url).unwrap_err();
            assert!(e.contains(needle), "{url}: {e}");
            assert!(!e.contains("hunter2"), "{url}: {e}");
        }
    }
}
