//! Real servers for the production-Redis tests, each a child process on
//! free loopback ports, killed on drop: a TLS redis-server with
//! certificates made by the openssl command, a primary with a replica and
//! a sentinel, a 3-node cluster made with `redis-cli --cluster create`.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port `p` with `p + 10000` free as well (a cluster node's bus).
pub fn free_cluster_port() -> u16 {
    loop {
        let p = free_port();
        if p < 55000 && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
}

/// Polls `f` until it gives a value; panics naming `what` after `within`
/// (a bound for a hung test, not a timing requirement).
pub fn wait_for<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process, killed on drop.
pub struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `redis-server` with `args`, its log in `dir/<name>.log`.
pub fn redis_server(dir: &Path, name: &str, args: &[String]) -> Proc {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new("redis-server")
        .args(args)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("run redis-server");
    Proc(child)
}

/// The usual arguments of a test node on `port`, its files in `dir/name`.
pub fn node_args(dir: &Path, name: &str, port: u16) -> Vec<String> {
    let work = dir.join(name);
    std::fs::create_dir_all(&work).unwrap();
    strings(&[
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        work.to_str().unwrap(),
    ])
}

pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// A plain connection to `port`, with `password` for the default user.
pub fn connect(port: u16, password: Option<&str>) -> Option<redis::Connection> {
    let url = match password {
        Some(pw) => format!("redis://:{pw}@127.0.0.1:{port}/0"),
        None => format!("redis://127.0.0.1:{port}/0"),
    };
    redis::Client::open(url)
        .ok()?
        .get_connection_with_timeout(Duration::from_secs(1))
        .ok()
}

pub fn query<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> Option<T> {
    let mut c = connect(port, None)?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut c).ok()
}

/// Waits until the server on `port` answers `PING`.
pub fn wait_up(port: u16) {
    wait_for(Duration::from_secs(20), "redis-server to answer", || {
        query::<String>(port, &["PING"])
    });
}

/// Every element of the list `key` on the server at `port`.
pub fn lrange(port: u16, key: &str) -> Vec<Vec<u8>> {
    query(port, &["LRANGE", key, "0", "-1"]).expect("LRANGE")
}

/// Runs openssl in `dir`, failing the test with its output.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA, a server certificate for 127.0.0.1 signed by it, a client
/// certificate, and an unrelated second CA.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
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
                    &format!("/CN=reporter test {ca}"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            );
        }
        pki.leaf(
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        );
        pki.leaf("client", "extendedKeyUsage=clientAuth\n");
        pki
    }

    fn leaf(&self, name: &str, extensions: &str) {
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
                &format!("/CN=reporter test {name}"),
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
                "-extfile",
                &ext,
                "-out",
                &format!("{name}.crt"),
            ],
        );
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// redis-server arguments for TLS on `tls_port`, client certificates
    /// required.
    pub fn server_args(&self, tls_port: u16) -> Vec<String> {
        let p = |f: &str| self.path(f).display().to_string();
        strings(&[
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &p("server.crt"),
            "--tls-key-file",
            &p("server.key"),
            "--tls-ca-cert-file",
            &p("ca.crt"),
            "--tls-auth-clients",
            "yes",
        ])
    }
}

pub const MASTER: &str = "mymaster";

/// A primary, its replica and one sentinel (with a password) watching
/// them. Both nodes refuse writes without a replica in sync
/// (`min-replicas-to-write 1`), the setting that keeps a failover from
/// losing acknowledged writes.
pub struct SentinelSetup {
    _primary: Proc,
    _replica: Proc,
    _sentinel: Proc,
    /// The sentinel's plain port, for the test's own looks.
    pub sentinel_port: u16,
    /// With TLS: the sentinel's TLS port, and each node's plain port by
    /// its TLS port (the one the sentinel names).
    pub tls: Option<(u16, BTreeMap<u16, u16>)>,
    _dir: tempfile::TempDir,
}

pub const SENTINEL_PASSWORD: &str = "sentinel-pw";

impl SentinelSetup {
    pub fn start() -> SentinelSetup {
        SentinelSetup::start_with(None)
    }

    /// With `pki`, every node and the sentinel also listen for TLS
    /// (client certificates required), and replication and the
    /// sentinel's own connections to the nodes are TLS: the sentinel names
    /// the primary by its TLS port.
    pub fn start_with(pki: Option<&Pki>) -> SentinelSetup {
        let dir = tempfile::tempdir().unwrap();
        let (p1, p2, ps) = (free_port(), free_port(), free_port());
        let tls_ports = pki.map(|_| (free_port(), free_port(), free_port()));
        // What the sentinel and the replica are told: the TLS ports.
        let (m1, m2) = tls_ports.map_or((p1, p2), |(t1, t2, _)| (t1, t2));
        let mut safe = strings(&[
            "--min-replicas-to-write",
            "1",
            "--min-replicas-max-lag",
            "10",
        ]);
        if pki.is_some() {
            safe.extend(strings(&["--tls-replication", "yes"]));
        }
        let mut primary_args = node_args(dir.path(), "primary", p1);
        primary_args.extend(safe.clone());
        if let Some(pki) = pki {
            primary_args.extend(pki.server_args(m1));
        }
        let primary = redis_server(dir.path(), "primary", &primary_args);
        wait_up(p1);
        let mut replica_args = node_args(dir.path(), "replica", p2);
        replica_args.extend(safe);
        if let Some(pki) = pki {
            replica_args.extend(pki.server_args(m2));
        }
        replica_args.extend(strings(&["--replicaof", "127.0.0.1", &m1.to_string()]));
        let replica = redis_server(dir.path(), "replica", &replica_args);
        wait_for(Duration::from_secs(20), "the replica in sync", || {
            let info: String = query(p2, &["INFO", "replication"])?;
            info.contains("master_link_status:up").then_some(())
        });
        // Sentinel rewrites its config file: it lives in the test's dir.
        let conf = dir.path().join("sentinel.conf");
        let tls_conf = match (pki, tls_ports) {
            (Some(pki), Some((_, _, ts))) => format!(
                "tls-port {ts}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
                 tls-auth-clients yes\ntls-replication yes\n",
                pki.path("server.crt").display(),
                pki.path("server.key").display(),
                pki.path("ca.crt").display(),
            ),
            _ => String::new(),
        };
        std::fs::write(
            &conf,
            format!(
                "port {ps}\nbind 127.0.0.1\ndir {}\nrequirepass {SENTINEL_PASSWORD}\n{tls_conf}\
                 sentinel monitor {MASTER} 127.0.0.1 {m1} 1\n\
                 sentinel down-after-milliseconds {MASTER} 1000\n\
                 sentinel failover-timeout {MASTER} 10000\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let sentinel = redis_server(
            dir.path(),
            "sentinel",
            &[conf.display().to_string(), "--sentinel".into()],
        );
        let setup = SentinelSetup {
            _primary: primary,
            _replica: replica,
            _sentinel: sentinel,
            sentinel_port: ps,
            tls: tls_ports.map(|(t1, t2, ts)| (ts, BTreeMap::from([(t1, p1), (t2, p2)]))),
            _dir: dir,
        };
        // A failover needs the sentinel to know the replica.
        wait_for(
            Duration::from_secs(30),
            "the sentinel to see the replica",
            || {
                let replicas: Vec<BTreeMap<String, String>> =
                    setup.sentinel(&["SENTINEL", "REPLICAS", MASTER])?;
                replicas
                    .iter()
                    .any(|r| r.get("flags").is_some_and(|f| f == "slave"))
                    .then_some(())
            },
        );
        setup
    }

    pub fn sentinel<T: redis::FromRedisValue>(&self, args: &[&str]) -> Option<T> {
        let mut c = connect(self.sentinel_port, Some(SENTINEL_PASSWORD))?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut c).ok()
    }

    /// The plain port of the node the sentinel names by `port`.
    pub fn plain(&self, port: u16) -> u16 {
        match &self.tls {
            Some((_, plain)) => plain[&port],
            None => port,
        }
    }

    /// The port of the primary the sentinel names (with TLS, its TLS
    /// port: see [`SentinelSetup::plain`]).
    pub fn primary_port(&self) -> Option<u16> {
        let (_, port): (String, u16) =
            self.sentinel(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER])?;
        Some(port)
    }
}

/// The first element of `ROLE`: `master`, `slave` or `sentinel`.
pub fn role(port: u16) -> Option<String> {
    let v: Vec<redis::Value> = query(port, &["ROLE"])?;
    redis::from_redis_value(v.into_iter().next()?).ok()
}

/// Three cluster primaries holding every slot.
pub struct Cluster {
    _nodes: Vec<Proc>,
    pub ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..3).map(|_| free_cluster_port()).collect();
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let name = format!("node{i}");
                let mut args = node_args(dir.path(), &name, *p);
                args.extend(strings(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &dir.path()
                        .join(format!("{name}.conf"))
                        .display()
                        .to_string(),
                    "--cluster-node-timeout",
                    "5000",
                ]));
                redis_server(dir.path(), &name, &args)
            })
            .collect();
        for p in &ports {
            wait_up(*p);
        }
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for p in &ports {
            create.arg(format!("127.0.0.1:{p}"));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Cluster {
            _nodes: nodes,
            ports,
            _dir: dir,
        };
        for p in &cluster.ports {
            wait_for(Duration::from_secs(30), "cluster_state:ok", || {
                let info: String = query(*p, &["CLUSTER", "INFO"])?;
                info.contains("cluster_state:ok").then_some(())
            });
        }
        cluster
    }

    /// `(node id, port, slot count)` of each primary, by `CLUSTER NODES`.
    pub fn nodes(&self) -> Vec<(String, u16, u32)> {
        let text: String = query(self.ports[0], &["CLUSTER", "NODES"]).unwrap();
        text.lines()
            .filter(|l| l.contains("master"))
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let port = f[1]
                    .split('@')
                    .next()
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.parse().ok())
                    .unwrap();
                let slots = f[8..]
                    .iter()
                    .filter(|s| !s.starts_with('['))
                    .map(|s| match s.split_once('-') {
                        Some((a, b)) => b.parse::<u32>().unwrap() - a.parse::<u32>().unwrap() + 1,
                        None => 1,
                    })
                    .sum();
                (f[0].to_string(), port, slots)
            })
            .collect()
    }

    /// The port of the node owning `key`'s slot, asked of every node
    /// until one answers without a redirect.
    pub fn owner(&self, key: &str) -> u16 {
        let slot: u32 = query(self.ports[0], &["CLUSTER", "KEYSLOT", key]).unwrap();
        let text: String = query(self.ports[0], &["CLUSTER", "NODES"]).unwrap();
        for l in text.lines().filter(|l| l.contains("master")) {
            let f: Vec<&str> = l.split(' ').collect();
            let owns =
                f[8..]
                    .iter()
                    .filter(|s| !s.starts_with('['))
                    .any(|s| match s.split_once('-') {
                        Some((a, b)) => {
                            (a.parse::<u32>().unwrap()..=b.parse::<u32>().unwrap()).contains(&slot)
                        }
                        None => s.parse::<u32>().ok() == Some(slot),
                    });
            if owns {
                return f[1]
                    .split('@')
                    .next()
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.parse().ok())
                    .unwrap();
            }
        }
        panic!("no node owns slot {slot}");
    }

    /// Moves every slot of the node at `from` to the node at `to` with
    /// `redis-cli --cluster reshard`.
    pub fn reshard_all(&self, from: u16, to: u16) -> std::process::Output {
        let nodes = self.nodes();
        let id = |port| {
            nodes
                .iter()
                .find(|n| n.1 == port)
                .map(|n| (n.0.clone(), n.2))
                .unwrap()
        };
        let (from_id, slots) = id(from);
        let (to_id, _) = id(to);
        Command::new("redis-cli")
            .args([
                "--cluster",
                "reshard",
                &format!("127.0.0.1:{}", self.ports[0]),
                "--cluster-from",
                &from_id,
                "--cluster-to",
                &to_id,
                "--cluster-slots",
                &slots.to_string(),
                "--cluster-yes",
            ])
            .output()
            .expect("run redis-cli")
    }
}
