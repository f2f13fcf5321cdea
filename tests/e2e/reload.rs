//! Hot reload: pumps added, changed and removed while records flow; broken
//! configs and plugins leave the running setup alone; a replaced `.wasm` is
//! swapped in; repeated reloads do not grow memory.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::*;

use pumphouse::record::IAM_KEY;

/// Writes a file the safe way: a temporary name, then a rename.
fn write_atomic(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A host directory with `plugins/` holding copies of bundled plugins.
fn setup(plugins: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    for (name, from) in plugins {
        std::fs::copy(plugin(from), dir.path().join("plugins").join(name)).unwrap();
    }
    dir
}

/// The config without pumps: `plugins_dir`, a quick reload debounce and
/// the source.
fn config(redis: &RedisServer) -> HostConfig {
    HostConfig::new(redis)
        .set("plugins_dir", "plugins")
        .set("reload.debounce", "100ms")
        .source("batch_size", 200)
}

/// Rewrites the host's config file as `config` plus `[server]` (the
/// harness adds it at start; reloads keep the same listen address).
fn rewrite(host: &Host, config: impl std::fmt::Display) {
    let text = format!("{config}\n[server]\nlisten = \"{}\"\n", host.http);
    write_atomic(&host.dir.join("pumphouse.toml"), text.as_bytes());
}

fn admin_pumps(host: &Host) -> serde_json::Value {
    let (code, body) = http_get(&host.http, "/admin/pumps").unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// `/admin/pumps` once the first config's pumps are listed: the host
/// serves HTTP before it has started them.
fn started(host: &Host) -> serde_json::Value {
    wait_for(Duration::from_secs(30), "the first pumps listed", || {
        let v = admin_pumps(host);
        (v["pumps"].as_array().is_some_and(|p| !p.is_empty())).then_some(v)
    })
}

fn pump_names(host: &Host) -> Vec<String> {
    admin_pumps(host)["pumps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

fn last_reload(host: &Host) -> serde_json::Value {
    admin_pumps(host)["last_reload"].clone()
}

/// The seqs of the whole lines in a sink's file: the sink may be mid-append.
fn seqs(path: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    whole
        .lines()
        .map(|l| iam_seq(&serde_json::from_str(l).unwrap()))
        .collect()
}

fn iam_bytes(range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    crate::harness::iam_bytes(11, range)
}

#[test]
fn pumps_added_changed_and_removed_under_load_lose_and_repeat_nothing() {
    const N: u64 = 30_000;
    let redis = RedisServer::start().unwrap();
    let dir = setup(&[("file.wasm", "file")]);
    let first = config(&redis)
        .pump(Pump::sink("a", "file.wasm", "a.jsonl"))
        .pump(Pump::sink("b", "file.wasm", "b.jsonl"));
    let host = Host::start_in(dir, &first);
    let producer = {
        let url = redis.url();
        std::thread::spawn(move || {
            let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
            let start = Instant::now();
            for (i, at) in (0..N).step_by(500).enumerate() {
                push(&mut conn, IAM_KEY, &iam_bytes(at..at + 500));
                let due = start + Duration::from_millis(50 * (i as u64 + 1));
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
        })
    };
    let a = host.out().join("a.jsonl");
    wait_for(Duration::from_secs(30), "deliveries", || {
        (seqs(&a).len() > 2000).then_some(())
    });
    // Reload 1 (file watch): a changes, b goes, c arrives.
    let second = first
        .edit_pump("a", |a| a.set("max_in_flight_batches", 8))
        .without_pump("b")
        .pump(Pump::sink("c", "file.wasm", "c.jsonl"));
    rewrite(&host, &second);
    wait_for(Duration::from_secs(30), "the file-watch reload", || {
        (pump_names(&host) == ["a", "c"]).then_some(())
    });
    assert_eq!(last_reload(&host)["result"], "ok");
    // One rewrite can raise more than one file event, and a later reload
    // then reports nothing changed: the log keeps every reload's summary.
    wait_for(
        Duration::from_secs(10),
        "the reload summary in the log",
        || {
            host.log_text()
                .contains("added: c; changed: a; removed: b")
                .then_some(())
        },
    );
    // Reload 2 (POST): a changes again, c is unchanged.
    rewrite(
        &host,
        second.edit_pump("a", |a| a.set("max_in_flight_batches", 4)),
    );
    let (code, body) = http_post(&host.http, "/admin/reload");
    assert_eq!(code, 200, "{body}");
    // The file watcher may have applied the change already (then `a` is
    // unchanged too); `c` is never restarted.
    assert!(
        body.contains("unchanged: c") || body.contains("unchanged: a, c"),
        "{body}"
    );
    // Reload 3 (SIGHUP) with nothing changed.
    host.signal(nix::sys::signal::Signal::SIGHUP);
    producer.join().unwrap();

    wait_for(Duration::from_secs(60), "every record in a", || {
        (seqs(&a).len() >= N as usize).then_some(())
    });
    let mut conn = redis_conn(&redis);
    wait_for(Duration::from_secs(30), "all acked", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)).then_some(())
    });
    let got = seqs(&a);
    assert_eq!(got.len(), N as usize, "a: no duplicates across reloads");
    assert_eq!(got.iter().collect::<HashSet<_>>().len(), N as usize);
    for file in ["b.jsonl", "c.jsonl"] {
        let s = seqs(&host.out().join(file));
        assert_eq!(s.len(), s.iter().collect::<HashSet<_>>().len(), "{file}");
    }
    assert!(seqs(&host.out().join("c.jsonl")).contains(&(N - 1)));
    assert!(host.metric("pumphouse_reloads_total{result=\"ok\"}") >= 3.0);
}

#[test]
fn broken_configs_and_plugins_leave_the_running_pumps_untouched() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let dir = setup(&[("sink.wasm", "file"), ("match.wasm", "match")]);
    let good = config(&redis).pump(Pump::sink("a", "sink.wasm", "a.jsonl"));
    let host = Host::start_in(dir, &good);
    let sha = started(&host)["pumps"][0]["sha256"].clone();
    let a = host.out().join("a.jsonl");
    let mut sent = 0;
    let mut still_delivers = |what: &str| {
        push(&mut conn, IAM_KEY, &iam_bytes(sent..sent + 100));
        sent += 100;
        wait_for(Duration::from_secs(30), what, || {
            (seqs(&a).len() == sent as usize).then_some(())
        });
    };
    still_delivers("first delivery");
    let cases = [
        (
            "invalid TOML",
            format!("{}[[pumps]\nname = ", config(&redis)),
            "pumphouse.toml",
        ),
        (
            "an unknown field",
            good.clone()
                .edit_pump("a", |a| a.set("colour", "red"))
                .to_toml(),
            "colour",
        ),
        (
            "an init that fails",
            config(&redis)
                .pump(Pump::new("a", "sink.wasm").config("path", "/nowhere/a.jsonl"))
                .to_toml(),
            "init",
        ),
        (
            "a filter used as a sink",
            config(&redis)
                .pump(Pump::sink("a", "match.wasm", "a.jsonl"))
                .to_toml(),
            "must be a sink",
        ),
        (
            "a missing plugin",
            config(&redis)
                .pump(Pump::sink("a", "gone.wasm", "a.jsonl"))
                .to_toml(),
            "gone.wasm",
        ),
    ];
    for (i, (what, text, needle)) in cases.iter().enumerate() {
        rewrite(&host, text);
        let (code, body) = http_post(&host.http, "/admin/reload");
        assert_eq!(code, 422, "{what}: {body}");
        assert!(body.contains(needle), "{what}: {body}");
        assert_eq!(last_reload(&host)["result"], "error", "{what}");
        assert!(
            http_get(&host.http, "/readyz")
                .unwrap()
                .1
                .contains("last_reload"),
            "{what}"
        );
        assert_eq!(pump_names(&host), ["a"], "{what}");
        assert_eq!(admin_pumps(&host)["pumps"][0]["sha256"], sha, "{what}");
        still_delivers(&format!("delivery after {what} ({i})"));
    }
    assert!(host.metric("pumphouse_reloads_total{result=\"error\"}") >= cases.len() as f64);

    // A plugin copied in place without a rename: the half-written file is
    // refused, the old version keeps running, the complete file is loaded.
    rewrite(&host, &good);
    let (code, _) = http_post(&host.http, "/admin/reload");
    assert_eq!(code, 200);
    let full = std::fs::read(plugin("blackhole")).unwrap();
    let target = host.dir.join("plugins/sink.wasm");
    std::fs::write(&target, &full[..full.len() / 2]).unwrap();
    let (code, body) = http_post(&host.http, "/admin/reload");
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("sink.wasm"), "{body}");
    still_delivers("delivery with a half-written plugin on disk");
    std::fs::write(&target, &full).unwrap();
    wait_for(
        Duration::from_secs(30),
        "the complete plugin loaded",
        || (admin_pumps(&host)["pumps"][0]["plugin_name"] == "blackhole").then_some(()),
    );
}

#[test]
fn a_replaced_wasm_of_a_running_pump_is_swapped_in() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let dir = setup(&[("sink.wasm", "blackhole")]);
    let host = Host::start_in(
        dir,
        config(&redis).pump(Pump::sink("a", "sink.wasm", "a.jsonl")),
    );
    let first = started(&host);
    assert_eq!(first["pumps"][0]["plugin_name"], "blackhole");
    let before = first["pumps"][0]["loaded_at"].clone();
    write_atomic(
        &host.dir.join("plugins/sink.wasm"),
        &std::fs::read(plugin("file")).unwrap(),
    );
    wait_for(Duration::from_secs(30), "the new plugin", || {
        (admin_pumps(&host)["pumps"][0]["plugin_name"] == "file").then_some(())
    });
    let now = &admin_pumps(&host)["pumps"][0];
    assert_ne!(now["loaded_at"], before);
    assert_eq!(now["state"], "ok");
    push(&mut conn, IAM_KEY, &iam_bytes(0..500));
    let lines = wait_lines(&host.out().join("a.jsonl"), 500, Duration::from_secs(30));
    assert_eq!(lines.len(), 500);
    assert_eq!(now["counters"]["written"], 0);
    wait_for(Duration::from_secs(10), "the counters", || {
        (admin_pumps(&host)["pumps"][0]["counters"]["written"] == 500).then_some(())
    });
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn two_hundred_reloads_do_not_grow_memory() {
    let redis = RedisServer::start().unwrap();
    let dir = setup(&[("file.wasm", "file")]);
    let start = config(&redis).pump(Pump::sink("a", "file.wasm", "a.jsonl"));
    let host = Host::start_in(dir, &start);
    let mut rss = Vec::new();
    for i in 0..200 {
        // Each reload changes the pump, so its lane and instance are replaced.
        rewrite(
            &host,
            start
                .clone()
                .edit_pump("a", |a| a.set("max_in_flight_batches", 8 + i % 2)),
        );
        // The file watcher may apply the change first; either way the
        // pump's lane and instance are replaced once per rewrite.
        let (code, body) = http_post(&host.http, "/admin/reload");
        assert_eq!(code, 200, "{body}");
        if i == 19 || i == 199 {
            rss.push(rss_kib(host.pid()));
        }
    }
    let growth = rss[1] as i64 - rss[0] as i64;
    eprintln!(
        "RSS after 20 reloads {} KiB, after 200 reloads {} KiB (growth {growth} KiB)",
        rss[0], rss[1]
    );
    // Leaking one instance per reload would add megabytes (each holds its
    // linear memory); allocator noise stays far below this.
    assert!(
        growth < 16 * 1024,
        "RSS grew by {growth} KiB over 180 reloads"
    );
}
