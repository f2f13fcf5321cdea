//! The `pumphouse` command line. Parsing only; the work is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use pumphouse::config::Config;
use pumphouse::record::Schema;

#[derive(Parser)]
#[command(
    name = "pumphouse",
    version,
    about = "Drains analytics records from Redis into sandboxed WebAssembly pumps"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon until SIGINT or SIGTERM.
    Run {
        #[arg(long, short, env = "PUMPHOUSE_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config: parse it, compile every plugin and run each init.
    Check {
        #[arg(long, short, env = "PUMPHOUSE_CONFIG")]
        config: PathBuf,
        /// Fail (exit 1) when Redis cannot be used; by default an
        /// unreachable Redis is reported and the check still passes, as
        /// the daemon waits for Redis at start.
        #[arg(long)]
        require_redis: bool,
    },
    /// Push sample records to Redis exactly as the real producers do, or
    /// write them to a file (`--to-file`) for `plugins test`.
    Produce {
        /// `iam` or `tyk` (generic records are produced as iam).
        #[arg(long, value_enum)]
        format: Schema,
        #[arg(long, default_value_t = 10_000)]
        count: u64,
        /// Records per second (default: as fast as possible).
        #[arg(long)]
        rate: Option<u64>,
        #[arg(long, default_value = pumphouse::config::DEFAULT_REDIS_URL, env = "PUMPHOUSE_REDIS")]
        redis: String,
        /// With a rediss:// URL: PEM file of the CA to trust instead of the
        /// system's roots (`[source.tls] ca_file`).
        #[arg(long)]
        tls_ca_file: Option<PathBuf>,
        /// With a rediss:// URL: client certificate (PEM), for servers with
        /// `tls-auth-clients yes`.
        #[arg(long, requires = "tls_key_file")]
        tls_cert_file: Option<PathBuf>,
        /// The client certificate's private key (PEM).
        #[arg(long, requires = "tls_cert_file")]
        tls_key_file: Option<PathBuf>,
        /// Do not verify the server certificate (tests only).
        #[arg(long)]
        tls_insecure: bool,
        /// List key (default: the producer's own key).
        #[arg(long)]
        key: Option<String>,
        /// Spread over `<key>_0` … `<key>_<shards-1>` like Tyk's multiple analytics keys.
        #[arg(long, default_value_t = 0)]
        shards: u32,
        /// First sequence number embedded in the records.
        #[arg(long, default_value_t = 0)]
        first_seq: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Append `<first seq> <count> <unix µs>` to this file for every
        /// pipeline, timed just before it is sent (for latency measurements).
        #[arg(long)]
        push_log: Option<std::path::PathBuf>,
        /// Write the records to this file instead of Redis: `.msgpack`
        /// (the producers' bytes, back to back) or `.jsonl` (the JSON form
        /// pumps receive). Both are inputs of `plugins test`.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["rate", "shards", "push_log"])]
        to_file: Option<PathBuf>,
    },
    /// Inspect, replay or purge dead-lettered records.
    Dlq {
        #[command(subcommand)]
        command: DlqCmd,
    },
    /// Work with plugin files.
    Plugins {
        #[command(subcommand)]
        command: PluginsCmd,
    },
    /// Run the main job on an embedded default config against a private redis-server.
    Demo {
        #[arg(long, default_value_t = 5_000)]
        count: u64,
        /// Directory holding file.wasm, stdout.wasm and match.wasm.
        #[arg(long)]
        plugins: Option<PathBuf>,
        /// Keep the file pump's output here instead of a temporary directory.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Translate a tyk-pump `pump.conf` or an iam-pump `iam-pump.yaml` into
    /// a pumphouse config on stdout. Pumps and settings without a
    /// counterpart become commented blocks and are listed on stderr; the
    /// exit code is then 2.
    Migrate {
        #[arg(long, value_enum)]
        from: pumphouse::migrate::Dialect,
        /// The old config file.
        file: PathBuf,
        /// `plugins_dir` to write into the new config.
        #[arg(long)]
        plugins_dir: Option<String>,
    },
    /// Print a shell completion script, e.g.
    /// `pumphouse completions bash > /etc/bash_completion.d/pumphouse`.
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (pumphouse.1 and one per subcommand) into a
    /// directory, e.g. `pumphouse man /usr/local/share/man/man1`.
    Man { dir: PathBuf },
}

#[derive(Subcommand)]
enum PluginsCmd {
    /// Show a plugin's world, description, exports, imports and the
    /// capabilities it would use.
    Inspect { file: PathBuf },
    /// Create a plugin project: a Rust crate that builds with `cargo build
    /// --release`, or a Python or JavaScript project that builds with
    /// `./build`.
    New {
        /// Crate and plugin name, e.g. `my-sink`.
        name: String,
        #[arg(long, value_enum)]
        kind: KindArg,
        /// The plugin's language.
        #[arg(long, value_enum, default_value = "rust")]
        lang: LangArg,
        /// Directory to create the crate's folder in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The pumphouse SDK directory: `plugin-sdk` (Rust), `sdk/python` or
        /// `sdk/js` (default: the one of the checkout this binary was built
        /// from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Run a plugin on sample records without Redis and report each batch;
    /// exits non-zero when a batch fails.
    Test {
        file: PathBuf,
        /// `.msgpack` (concatenated records) or `.jsonl` (one JSON object per line).
        #[arg(long)]
        input: PathBuf,
        /// The pump `config` table, as JSON.
        #[arg(long, default_value = "{}")]
        config: String,
        #[arg(long, value_enum, default_value = "generic")]
        format: Schema,
        #[arg(long, default_value_t = 100)]
        batch_size: usize,
        /// A sandbox directory, `HOST:GUEST` or `HOST:GUEST:ro` (repeatable).
        #[arg(long = "dir", value_name = "HOST:GUEST[:ro]")]
        dirs: Vec<String>,
        /// A host environment variable the plugin may read (repeatable).
        #[arg(long = "env", value_name = "NAME")]
        env: Vec<String>,
        /// An allowed outbound destination, `scheme://host:port` (repeatable).
        #[arg(long = "allow-outbound", value_name = "URL")]
        allow_outbound: Vec<String>,
        /// Let allowed names resolve to private and loopback addresses.
        #[arg(long)]
        allow_private_networks: bool,
        /// Per-call time limit.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    Sink,
    Filter,
}

#[derive(Clone, Copy, ValueEnum)]
enum LangArg {
    Rust,
    Python,
    Js,
}

/// Options shared by the `dlq` commands.
#[derive(clap::Args)]
struct DlqArgs {
    /// The daemon's config (for the Redis URL, source and dead-letter key).
    #[arg(long, short, env = "PUMPHOUSE_CONFIG")]
    config: PathBuf,
    /// Dead-letter key to use instead of the config's.
    #[arg(long)]
    key: Option<String>,
    /// Only entries of this pump (`source` for undecodable records).
    #[arg(long)]
    pump: Option<String>,
    /// Only entries whose reason contains this text.
    #[arg(long)]
    reason: Option<String>,
    /// At most this many entries (oldest first).
    #[arg(long)]
    limit: Option<usize>,
}

#[derive(Subcommand)]
enum DlqCmd {
    /// Show dead-letter entries, oldest first.
    List {
        #[command(flatten)]
        args: DlqArgs,
        /// Print each entry as its stored JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Push the entries' records back into their source keys (every pump
    /// receives them again) and remove the entries.
    Replay {
        #[command(flatten)]
        args: DlqArgs,
        /// Push to this key instead of each entry's source key.
        #[arg(long)]
        to: Option<String>,
    },
    /// Delete entries.
    Purge {
        #[command(flatten)]
        args: DlqArgs,
        /// Required: purging cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

/// `pumphouse migrate`: the old tool's `TYK_PMP_*` overrides are taken
/// from this process's environment.
fn migrate(
    from: pumphouse::migrate::Dialect,
    file: &std::path::Path,
    plugins_dir: Option<String>,
) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let options = pumphouse::migrate::Options {
        plugins_dir,
        env: std::env::vars()
            .filter(|(k, _)| k.starts_with("TYK_PMP_"))
            .collect(),
    };
    let done = pumphouse::migrate::migrate(from, &text, &options)
        .with_context(|| file.display().to_string())?;
    print!("{}", done.toml);
    for u in &done.unmapped {
        eprintln!("not migrated: {}: {}", u.what, u.reason);
    }
    Ok(if done.unmapped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// glibc gives threads that allocate at once arenas of their own, up to
/// eight per core. The blocking pool and the runtime's workers then spread
/// short-lived batch buffers over many arenas that are seldom trimmed, and
/// RSS creeps up under steady load. Two arenas keep it flat: over 150 s at
/// 20 000 records/s, +2.5 MB with glibc's default against +0.8 MB with two.
/// `MALLOC_ARENA_MAX` in the environment still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first thing in `main`, before any other thread
        // exists; mallopt only sets an allocator parameter.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    pumphouse::telemetry::init_logging(cli.log_json);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", render_error(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes, each said once. Most of pumphouse's errors
/// already end with their cause's text, which `{:#}` would print again.
fn render_error(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

async fn dispatch(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Run { config } => {
            let path = config;
            let config = Config::load(&path)?;
            let metrics = pumphouse::telemetry::init_metrics();
            let shutdown = CancellationToken::new();
            spawn_signal_handler(shutdown.clone())?;
            let started = pumphouse::daemon::start(config, Some(path), metrics, shutdown).await?;
            let report = started.done.await?;
            tracing::info!(drained = report.drained, "stopped");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Dlq { command } => dlq(command).await,
        Cmd::Migrate {
            from,
            file,
            plugins_dir,
        } => migrate(from, &file, plugins_dir),
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "pumphouse",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Man { dir } => {
            use clap::CommandFactory;
            std::fs::create_dir_all(&dir)?;
            clap_mangen::generate_to(Cli::command(), &dir)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Check {
            config,
            require_redis,
        } => {
            let config = Config::load(&config)?;
            let report = pumphouse::daemon::check(&config, require_redis).await?;
            print!("{report}");
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Produce {
            format,
            count,
            rate,
            redis,
            tls_ca_file,
            tls_cert_file,
            tls_key_file,
            tls_insecure,
            key,
            shards,
            first_seq,
            seed,
            quiet,
            push_log,
            to_file,
        } => {
            if let Some(path) = to_file {
                let n = pumphouse::produce::produce_to_file(format, count, first_seq, seed, &path)?;
                eprintln!("wrote {n} {} records to {}", format.name(), path.display());
                return Ok(ExitCode::SUCCESS);
            }
            let key = key.unwrap_or_else(|| format.producer_key().to_string());
            let n = pumphouse::produce::produce(&pumphouse::produce::ProduceOptions {
                redis_url: redis,
                tls: pumphouse::config::TlsConfig {
                    ca_file: tls_ca_file,
                    cert_file: tls_cert_file,
                    key_file: tls_key_file,
                    insecure: tls_insecure,
                },
                format,
                key: key.clone(),
                shards,
                count,
                rate,
                first_seq,
                seed,
                progress: !quiet,
                push_log,
            })
            .await?;
            eprintln!(
                "produced {n} records to {key}{}",
                if shards > 0 {
                    format!("_0…_{}", shards - 1)
                } else {
                    String::new()
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Plugins {
            command: PluginsCmd::Inspect { file },
        } => {
            let runtime = pumphouse::runtime::Runtime::new(true)?;
            let p = runtime.load(&file).await?;
            print!("{}", pumphouse::plugins_cli::inspect_report(&p));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Plugins {
            command:
                PluginsCmd::New {
                    name,
                    kind,
                    lang,
                    dir,
                    sdk,
                },
        } => {
            let kind = match kind {
                KindArg::Sink => pumphouse::runtime::Kind::Sink,
                KindArg::Filter => pumphouse::runtime::Kind::Filter,
            };
            let lang = match lang {
                LangArg::Rust => pumphouse::plugins_cli::Lang::Rust,
                LangArg::Python => pumphouse::plugins_cli::Lang::Python,
                LangArg::Js => pumphouse::plugins_cli::Lang::Js,
            };
            let root = pumphouse::plugins_cli::scaffold(&pumphouse::plugins_cli::NewPlugin {
                name,
                kind,
                lang,
                dir,
                sdk,
            })?;
            match lang {
                pumphouse::plugins_cli::Lang::Rust => {
                    println!("created {kind} plugin crate {}", root.display());
                    println!(
                        "build it: cd {} && cargo build --release   (once: rustup target add wasm32-wasip2)",
                        root.display()
                    );
                }
                pumphouse::plugins_cli::Lang::Python => {
                    println!("created Python {kind} plugin {}", root.display());
                    println!(
                        "build it: cd {} && ./build   (once: pip install componentize-py==0.25.1 pytest==8.3.4)",
                        root.display()
                    );
                }
                pumphouse::plugins_cli::Lang::Js => {
                    println!("created JavaScript {kind} plugin {}", root.display());
                    println!(
                        "build it: cd {} && ./build   (once: npm ci in the SDK's directory, sdk/js)",
                        root.display()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Plugins {
            command:
                PluginsCmd::Test {
                    file,
                    input,
                    config,
                    format,
                    batch_size,
                    dirs,
                    env,
                    allow_outbound,
                    allow_private_networks,
                    timeout,
                },
        } => {
            let schema = format;
            let sandbox = pumphouse::plugins_cli::SandboxArgs {
                dirs,
                env,
                allowed_outbound_hosts: allow_outbound,
                allow_private_networks,
                timeout,
            }
            .sandbox()?;
            let outcome = pumphouse::plugins_cli::test_plugin(&pumphouse::plugins_cli::TestRun {
                plugin: file,
                input,
                config,
                schema,
                batch_size,
                sandbox,
            })
            .await?;
            for l in &outcome.lines {
                println!("{l}");
            }
            if outcome.failed {
                println!("FAILED: at least one batch was not handled cleanly");
                Ok(ExitCode::FAILURE)
            } else {
                println!("OK");
                Ok(ExitCode::SUCCESS)
            }
        }
        Cmd::Demo {
            count,
            plugins,
            out,
        } => {
            let metrics = pumphouse::telemetry::init_metrics();
            pumphouse::demo::run(
                pumphouse::demo::DemoOptions {
                    count,
                    plugins_dir: plugins.unwrap_or_else(pumphouse::demo::default_plugins_dir),
                    out_dir: out,
                },
                metrics,
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// SIGINT and SIGTERM both start a graceful shutdown; a second signal
/// exits at once (claims stay leased and are re-delivered).
fn spawn_signal_handler(shutdown: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        for n in 0.. {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if n == 0 {
                tracing::info!("signal received: stopping");
                shutdown.cancel();
            } else {
                tracing::warn!("second signal: exiting now; claimed batches are re-delivered after their lease");
                std::process::exit(130);
            }
        }
    });
    Ok(())
}

async fn dlq(cmd: DlqCmd) -> anyhow::Result<ExitCode> {
    use pumphouse::dlq::cli::Action;
    let (args, action) = match cmd {
        DlqCmd::List { args, json } => (args, Action::List { json }),
        DlqCmd::Replay { args, to } => (args, Action::Replay { to }),
        DlqCmd::Purge { args, yes } => (args, Action::Purge { yes }),
    };
    let config = Config::load(&args.config)?;
    let sel = pumphouse::dlq::Selector {
        pump: args.pump,
        reason: args.reason,
        limit: args.limit,
    };
    let done = pumphouse::dlq::cli::run(&config, args.key, &sel, action).await?;
    Ok(if done {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::render_error;

    #[derive(Debug, thiserror::Error)]
    #[error("init failed: {0}")]
    struct Inner(&'static str);

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("pump a: {source}")]
        Says { source: Inner },
        #[error("pump b")]
        Hides { source: Inner },
    }

    #[test]
    fn each_cause_is_said_once() {
        let says = anyhow::Error::from(Outer::Says {
            source: Inner("bad field"),
        });
        assert_eq!(render_error(&says), "pump a: init failed: bad field");
        let hides = anyhow::Error::from(Outer::Hides {
            source: Inner("bad field"),
        });
        assert_eq!(render_error(&hides), "pump b: init failed: bad field");
    }
}
