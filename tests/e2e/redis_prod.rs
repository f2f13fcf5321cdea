//! Production Redis: TLS with client certificates (mutual TLS), ACL users
//! without the dangerous commands, and errors that name their cause in
//! `check`, the log and `/readyz`. Each test makes its own CA and
//! certificates with the openssl command and starts a TLS-only
//! redis-server (`tls-auth-clients yes`, the default user off) on a free
//! loopback port.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pumphouse::produce::Sampler;
use pumphouse::record::{IAM_KEY, TYK_KEY};

use crate::harness::*;

/// The least-privilege user the README documents: the producers' keys,
/// the source's own `{K}:pumphouse:*` keys, dead letters and plugin state
/// (`pumphouse:*`), every command but the dangerous ones.
pub(crate) const PUMPHOUSE_USER: &str =
    "pumphouse on >s3cret resetchannels ~analytics-* ~{analytics-*}:pumphouse:* ~pumphouse:* \
     +@all -@dangerous";
const ADMIN_PASSWORD: &str = "admin-pw";

/// Runs openssl in `dir`, failing the test with its output.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA, server certificates signed by it, a client certificate, and
/// an unrelated second CA. P-256 keys in PKCS#8 PEM.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        let d = pki.dir.path();
        for ca in ["ca", "other-ca"] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.crt"),
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=pumphouse test {ca}"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            );
        }
        // `server`: valid for 127.0.0.1; `elsewhere`: for another name only.
        pki.leaf(
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        );
        pki.leaf(
            "elsewhere",
            "subjectAltName=DNS:elsewhere.test\nextendedKeyUsage=serverAuth\n",
        );
        pki.leaf("client", "extendedKeyUsage=clientAuth\n");
        pki
    }

    /// A key and a certificate signed by the CA, with `extensions`.
    pub(crate) fn leaf(&self, name: &str, extensions: &str) {
        let d = self.dir.path();
        let ext = format!("{name}.ext");
        std::fs::write(d.join(&ext), extensions).unwrap();
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN=pumphouse test {name}"),
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &format!("{name}.crt"),
                "-extfile",
                &ext,
            ],
        );
    }

    pub(crate) fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }

    fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(file)).unwrap()
    }
}

/// A TLS-only redis-server: mutual TLS, the default user off, an `admin`
/// user for the test's own looks, and `users` (ACL `user` lines).
struct TlsRedis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    fn start(pki: &Pki, cert: &str, users: &[&str]) -> TlsRedis {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut conf = format!(
            "port 0\ntls-port {port}\nbind 127.0.0.1\n\
             tls-cert-file {crt}\ntls-key-file {key}\ntls-ca-cert-file {ca}\n\
             tls-auth-clients yes\nsave \"\"\nappendonly no\ndir {dir}\n\
             user default off\nuser admin on >{ADMIN_PASSWORD} ~* &* +@all\n",
            crt = pki.path(&format!("{cert}.crt")),
            key = pki.path(&format!("{cert}.key")),
            ca = pki.path("ca.crt"),
            dir = dir.path().display(),
        );
        for u in users {
            conf.push_str(&format!("user {u}\n"));
        }
        let conf_path = dir.path().join("redis.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("redis-server")
            .arg(&conf_path)
            .stdout(std::fs::File::create(dir.path().join("redis.log")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let redis = TlsRedis {
            child,
            port,
            _dir: dir,
        };
        // The server certificate may be for another name: the test's own
        // connection checks the chain only when it must (see `admin`).
        wait_for(
            Duration::from_secs(10),
            "redis-server on its TLS port",
            || {
                redis
                    .try_admin(pki, cert == "server")
                    .ok()
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok())
            },
        );
        redis
    }

    /// `rediss://user:password@127.0.0.1:port/0`.
    fn url(&self, user: &str, password: &str) -> String {
        format!("rediss://{user}:{password}@127.0.0.1:{}/0", self.port)
    }

    fn try_admin(&self, pki: &Pki, verify: bool) -> redis::RedisResult<redis::Connection> {
        let mut url = self.url("admin", ADMIN_PASSWORD);
        if !verify {
            url.push_str("#insecure");
        }
        redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: Some(redis::ClientTlsConfig {
                    client_cert: pki.read("client.crt"),
                    client_key: pki.read("client.key"),
                }),
                root_cert: Some(pki.read("ca.crt")),
            },
        )?
        .get_connection()
    }

    /// The test's own connection, as `admin`, over mutual TLS.
    fn admin(&self, pki: &Pki) -> redis::Connection {
        self.try_admin(pki, true).unwrap()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A host config for `url` with the client certificate and the test CA.
fn tls_config(pki: &Pki, url: &str) -> HostConfig {
    HostConfig::at_url(url).tls(
        &pki.path("ca.crt"),
        &pki.path("client.crt"),
        &pki.path("client.key"),
    )
}

/// Runs `pumphouse check` on `config`: exit code and stdout + stderr.
fn check(config: &HostConfig) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config.to_toml()).unwrap();
    let (code, out, err) = pumphouse(&["check", "--config", path.to_str().unwrap()]);
    (code, format!("{out}{err}"))
}

/// `pumphouse produce` over mutual TLS as the pumphouse user.
fn produce_over_tls(pki: &Pki, redis: &TlsRedis, format: &str, count: u64, shards: u32) {
    let url = redis.url("pumphouse", "s3cret");
    let (ca, cert, key) = (
        pki.path("ca.crt"),
        pki.path("client.crt"),
        pki.path("client.key"),
    );
    let (code, out, err) = pumphouse(&[
        "produce",
        "--format",
        format,
        "--count",
        &count.to_string(),
        "--shards",
        &shards.to_string(),
        "--seed",
        "7",
        "--quiet",
        "--redis",
        &url,
        "--tls-ca-file",
        &ca,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
    ]);
    assert_eq!(code, 0, "produce over TLS: {out}{err}");
}

/// `/readyz` of `host` once it answers `status` with a body containing
/// every one of `needles`.
fn wait_readyz(host: &Host, status: u16, needles: &[&str]) -> String {
    wait_for(
        Duration::from_secs(30),
        &format!("/readyz {status} naming {needles:?}"),
        || match http_get(&host.http, "/readyz") {
            Ok((s, body)) if s == status && needles.iter().all(|n| body.contains(n)) => Some(body),
            _ => None,
        },
    )
}

#[test]
fn iam_and_tyk_records_over_mutual_tls_reach_the_sink_as_a_user_without_dangerous_commands() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, "server", &[PUMPHOUSE_USER]);
    let mut admin = redis.admin(&pki);
    // The password comes from the environment, as in production.
    let url = format!(
        "rediss://pumphouse:${{PH_TEST_REDIS_PASSWORD}}@127.0.0.1:{}/0",
        redis.port
    );
    let env = [("PH_TEST_REDIS_PASSWORD", "s3cret")];

    let (code, out) = check(
        &tls_config(&pki, &redis.url("pumphouse", "s3cret")).pump(Pump::file("file", "x.jsonl")),
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("redis: reachable\n"), "{out}");

    // iam
    let iam = Host::start_in_env(
        tempfile::tempdir().unwrap(),
        tls_config(&pki, &url)
            .source("batch_size", 100)
            .pump(Pump::file("file", "iam.jsonl")),
        &env,
    );
    produce_over_tls(&pki, &redis, "iam", 1000, 0);
    let lines = wait_lines(&iam.out().join("iam.jsonl"), 1000, Duration::from_secs(60));
    let mut sampler = Sampler::new(7);
    let expected: Vec<_> = (0..1000).map(|i| sampler.iam(i, T0)).collect();
    let mut seen = BTreeSet::new();
    for l in &lines {
        let seq = iam_seq(l);
        assert!(seen.insert(seq), "iam seq {seq} twice");
        let r = &expected[seq as usize];
        assert_eq!(l["Username"], r.username.as_str(), "iam seq {seq}");
        assert_eq!(l["Request"], r.request.as_str(), "iam seq {seq}");
    }
    assert_eq!(seen.len(), 1000);
    wait_for(Duration::from_secs(10), "iam batches acked", || {
        (left_in_redis(&mut admin, IAM_KEY) == (0, 0)).then_some(())
    });
    let body = wait_readyz(&iam, 200, &["\"redis_error\":null"]);
    assert!(body.contains("\"ready\":true"), "{body}");
    // SORT is dangerous: the host fell back to the Lua claim, and said so.
    assert!(
        iam.log_text().contains("using the Lua claim"),
        "{}",
        iam.log_text()
    );

    // Tyk, over the base key and two shards.
    let tyk = Host::start_in_env(
        tempfile::tempdir().unwrap(),
        tls_config(&pki, &url)
            .tyk()
            .source("shards", 2)
            .source("batch_size", 100)
            .pump(Pump::file("file", "tyk.jsonl")),
        &env,
    );
    produce_over_tls(&pki, &redis, "tyk", 900, 2);
    let lines = wait_lines(&tyk.out().join("tyk.jsonl"), 900, Duration::from_secs(60));
    let mut sampler = Sampler::new(7);
    let expected: Vec<_> = (0..900).map(|i| sampler.tyk(i, T0)).collect();
    let mut seen = BTreeSet::new();
    for l in &lines {
        let path = l["Path"].as_str().expect("Path");
        let seq: u64 = path.rsplit('/').next().unwrap().parse().unwrap();
        assert!(seen.insert(seq), "tyk seq {seq} twice");
        let r = &expected[seq as usize];
        assert_eq!(l["Method"], r.method.as_str(), "tyk seq {seq}");
        assert_eq!(l["APIID"], r.api_id.as_str(), "tyk seq {seq}");
    }
    assert_eq!(seen.len(), 900);
    for key in [
        TYK_KEY.to_string(),
        format!("{TYK_KEY}_0"),
        format!("{TYK_KEY}_1"),
    ] {
        wait_for(Duration::from_secs(10), &format!("{key} acked"), || {
            (left_in_redis(&mut admin, &key) == (0, 0)).then_some(())
        });
    }
    wait_readyz(&tyk, 200, &["\"redis_error\":null"]);
}

#[test]
fn an_untrusted_certificate_a_wrong_name_and_a_missing_client_certificate_are_named() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, "server", &[PUMPHOUSE_USER]);
    let url = redis.url("pumphouse", "s3cret");

    // A CA that did not sign the server's certificate.
    let wrong_ca = HostConfig::at_url(&url)
        .tls(
            &pki.path("other-ca.crt"),
            &pki.path("client.crt"),
            &pki.path("client.key"),
        )
        .pump(Pump::file("file", "x.jsonl"));
    let (code, out) = check(&wrong_ca);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("redis: NOT reachable"), "{out}");
    assert!(out.contains("server certificate is not trusted"), "{out}");
    assert!(out.contains("UnknownIssuer"), "{out}");
    assert!(!out.contains("s3cret"), "the password leaked: {out}");
    // The daemon waits for Redis, and /readyz and the log say why.
    let host = Host::start(&wrong_ca);
    let body = wait_readyz(&host, 503, &["server certificate is not trusted"]);
    assert!(body.contains("\"started\":false"), "{body}");
    wait_for(Duration::from_secs(10), "the cause in the log", || {
        host.log_text()
            .contains("server certificate is not trusted")
            .then_some(())
    });

    // No client certificate, while the server wants one.
    let no_client_cert = HostConfig::at_url(&url)
        .source("tls.ca_file", pki.path("ca.crt"))
        .pump(Pump::file("file", "x.jsonl"));
    let (_, out) = check(&no_client_cert);
    assert!(out.contains("redis: NOT reachable"), "{out}");
    assert!(out.contains("client certificate"), "{out}");

    // A certificate for another name than the one in the URL.
    let elsewhere = TlsRedis::start(&pki, "elsewhere", &[PUMPHOUSE_USER]);
    let (_, out) = check(
        &tls_config(&pki, &elsewhere.url("pumphouse", "s3cret"))
            .pump(Pump::file("file", "x.jsonl")),
    );
    assert!(out.contains("not valid for the host name"), "{out}");
    // `insecure` turns verification off, with a warning.
    let insecure = tls_config(&pki, &elsewhere.url("pumphouse", "s3cret"))
        .source("tls.insecure", true)
        .pump(Pump::file("file", "x.jsonl"));
    let (code, out) = check(&insecure);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("redis: reachable\n"), "{out}");
    assert!(out.contains("warning: source.tls.insecure = true"), "{out}");

    // Nothing listens: a refused connection.
    let nobody = format!("rediss://pumphouse:s3cret@127.0.0.1:{}/0", free_port());
    let (_, out) = check(&tls_config(&pki, &nobody).pump(Pump::file("file", "x.jsonl")));
    assert!(out.contains("connection refused"), "{out}");
}

#[test]
fn a_wrong_password_and_a_missing_permission_are_named_and_lose_nothing() {
    let pki = Pki::new();
    // `limited` may not run scripts: pumphouse cannot claim without them.
    let redis = TlsRedis::start(
        &pki,
        "server",
        &[
            PUMPHOUSE_USER,
            "limited on >l1m ~* &* +@all -@dangerous -@scripting",
        ],
    );
    let mut admin = redis.admin(&pki);

    let wrong_password =
        tls_config(&pki, &redis.url("pumphouse", "not-it")).pump(Pump::file("file", "x.jsonl"));
    let (code, out) = check(&wrong_password);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("redis: NOT reachable"), "{out}");
    assert!(out.contains("WRONGPASS"), "{out}");
    assert!(!out.contains("not-it"), "the password leaked: {out}");
    let host = Host::start(&wrong_password);
    wait_readyz(&host, 503, &["WRONGPASS"]);
    drop(host);

    let limited =
        tls_config(&pki, &redis.url("limited", "l1m")).pump(Pump::file("file", "x.jsonl"));
    let (code, out) = check(&limited);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("redis: reachable but NOT usable"), "{out}");
    assert!(out.contains("NOPERM") && out.contains("'evalsha'"), "{out}");

    let records = push_iam(&mut admin, 200, 3);
    let host = Host::start(&limited);
    let body = wait_readyz(&host, 503, &["NOPERM", "evalsha"]);
    assert!(body.contains("\"started\":true"), "{body}");
    assert!(host.log_text().contains("NOPERM"), "{}", host.log_text());
    // Refused claims take nothing.
    assert_eq!(
        left_in_redis(&mut admin, IAM_KEY),
        (records.len() as u64, 0)
    );
    assert!(read_jsonl(&host.out().join("x.jsonl")).is_empty());
}
