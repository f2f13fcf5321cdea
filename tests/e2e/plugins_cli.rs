//! The plugin author's commands: `plugins new` scaffolds a crate that
//! builds, `plugins inspect` shows capabilities, `plugins test` runs a
//! plugin on sample records without Redis.

use std::path::Path;
use std::process::Command;

use crate::harness::*;

/// Sample iam records: as concatenated MessagePack and as JSON lines.
fn samples(dir: &Path, n: u64) -> (String, String) {
    let mut sampler = pumphouse::produce::Sampler::new(5);
    let records: Vec<_> = (0..n).map(|i| sampler.iam(i, T0)).collect();
    let msgpack: Vec<u8> = records
        .iter()
        .flat_map(pumphouse::produce::encode_iam)
        .collect();
    // JSON as the producer's map: iam times are integers there.
    let jsonl: String = records
        .iter()
        .map(|r| {
            let mut v = iam_json(r);
            v["TimeStamp"] = r.timestamp.into();
            v["ExpireAt"] = r.expire_at.0.into();
            v.to_string() + "\n"
        })
        .collect();
    let mp = dir.join("records.msgpack");
    let js = dir.join("records.jsonl");
    std::fs::write(&mp, msgpack).unwrap();
    std::fs::write(&js, jsonl).unwrap();
    (mp.display().to_string(), js.display().to_string())
}

#[test]
fn a_scaffolded_sink_and_filter_build_and_pass_plugins_test() {
    let dir = tempfile::tempdir().unwrap();
    let (_, jsonl) = samples(dir.path(), 10);
    let target = root().join("target");
    for (name, kind, expect) in [
        ("scaffolded-sink", "sink", "ok (10 records written)"),
        ("scaffolded-filter", "filter", "keep-all (10 of 10)"),
    ] {
        let (code, out, err) = pumphouse(&[
            "plugins",
            "new",
            name,
            "--kind",
            kind,
            "--dir",
            dir.path().to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{out}{err}");
        let krate = dir.path().join(name);
        // The workspace's lock pins the same versions, and the shared
        // target dir already holds the SDK's compiled dependencies.
        std::fs::copy(root().join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
        let build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--offline"])
            .current_dir(&krate)
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .unwrap();
        assert!(
            build.status.success(),
            "cargo build of the scaffold failed:\n{}",
            String::from_utf8_lossy(&build.stderr)
        );
        let wasm = target
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let wasm = wasm.to_str().unwrap();
        let (code, out, err) = pumphouse(&["plugins", "inspect", wasm]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&format!("pump-{kind}@0.1.0")), "{out}");
        assert!(out.contains(&format!("name:     {name}")), "{out}");
        // std imports wasi:cli/environment; the scaffold reads no variable.
        assert!(
            out.contains("env         imported   (by every Rust plugin"),
            "{out}"
        );
        assert!(!out.contains("env         used"), "{out}");
        let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).unwrap();
        // The SDK by a relative path: no machine's absolute path.
        assert!(
            manifest.contains(r#"pumphouse-sdk = { path = "../"#),
            "{manifest}"
        );
        let (code, out, err) = pumphouse(&[
            "plugins", "test", wasm, "--input", &jsonl, "--format", "iam",
        ]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains(expect), "{out}");
    }
}

#[test]
fn plugins_test_runs_a_sink_on_msgpack_records_in_its_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let (msgpack, _) = samples(dir.path(), 25);
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let (code, out, err) = pumphouse(&[
        "plugins",
        "test",
        &plugin("file"),
        "--input",
        &msgpack,
        "--format",
        "iam",
        "--batch-size",
        "10",
        "--config",
        r#"{"path": "/out/x.jsonl"}"#,
        "--dir",
        &format!("{}:/out", out_dir.display()),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    for b in ["batch 1 (records 0-9): ok", "batch 3 (records 20-24): ok"] {
        assert!(out.contains(b), "{out}");
    }
    let lines = read_jsonl(&out_dir.join("x.jsonl"));
    assert_eq!(lines.len(), 25);
    assert_eq!(
        lines[0],
        iam_json(&pumphouse::produce::Sampler::new(5).iam(0, T0))
    );
}

#[test]
fn plugins_test_reports_what_each_plugin_did_and_fails_on_bad_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (_, jsonl) = samples(dir.path(), 4);
    let run = |plugin: &str, config: &str| {
        pumphouse(&[
            "plugins", "test", plugin, "--input", &jsonl, "--format", "iam", "--config", config,
        ])
    };
    let cases = [
        (
            fixture("hostile"),
            r#"{"mode":"partial-oob"}"#,
            "malformed partial",
        ),
        (fixture("hostile"), r#"{"mode":"trap"}"#, "trap: trapped"),
        (
            fixture("hostile"),
            r#"{"mode":"fs-escape"}"#,
            "retry: filesystem denied",
        ),
        (
            fixture("hostile"),
            r#"{"mode":"http","url":"http://127.0.0.1:9/x"}"#,
            "fatal: POST http://127.0.0.1:9/x: denied",
        ),
        (
            fixture("hostile-filter"),
            r#"{"mode":"keep-oob"}"#,
            "malformed keep",
        ),
        (
            fixture("hostile-filter"),
            r#"{"mode":"replace-oob"}"#,
            "malformed replace",
        ),
    ];
    for (plugin, config, needle) in cases {
        let (code, out, err) = run(&plugin, config);
        // 1: a reported failure (a panic of pumphouse itself would be 101;
        // a trapping guest's own panic message may be on stderr).
        assert_eq!(code, 1, "{config}: {out}{err}");
        assert!(
            out.contains(needle),
            "{config}: expected {needle:?} in:\n{out}{err}"
        );
        assert!(out.contains("FAILED"), "{out}");
    }
    let (code, out, err) = run(&plugin("match"), r#"{"field":"Effect","pattern":"^deny$"}"#);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("batch 1 (records 0-3): keep"), "{out}");
    // Bad input is an error that names the file, not a panic.
    std::fs::write(dir.path().join("bad.jsonl"), "{\"a\":1}\nnope\n").unwrap();
    let (code, _, err) = pumphouse(&[
        "plugins",
        "test",
        &plugin("file"),
        "--input",
        dir.path().join("bad.jsonl").to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("bad.jsonl") && err.contains("line 2"), "{err}");
    // Samples that do not match --format fail the run instead of passing
    // without exercising the plugin.
    std::fs::write(
        dir.path().join("tyk.jsonl"),
        "{\"TimeStamp\":\"yesterday\"}\n",
    )
    .unwrap();
    let (code, out, _) = pumphouse(&[
        "plugins",
        "test",
        &plugin("blackhole"),
        "--format",
        "tyk",
        "--input",
        dir.path().join("tyk.jsonl").to_str().unwrap(),
    ]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("undecodable as tyk records"), "{out}");
}

#[test]
fn plugins_test_posts_large_batches_through_the_sdk_http_client() {
    let dir = tempfile::tempdir().unwrap();
    let (_, jsonl) = samples(dir.path(), 2000);
    let server = crate::sandbox::Recorder::start();
    let port = server.addr.port();
    // Bodies of a few hundred KiB: the host's connection lets go of the
    // request body as soon as it has read Content-Length bytes, which the
    // client must not mistake for a failure.
    let (code, out, err) = pumphouse(&[
        "plugins",
        "test",
        &fixture("hostile"),
        "--input",
        &jsonl,
        "--format",
        "iam",
        "--batch-size",
        "500",
        "--config",
        &format!(r#"{{"mode":"http","url":"http://127.0.0.1:{port}/bulk"}}"#),
        "--allow-outbound",
        &format!("http://127.0.0.1:{port}"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches("ok (500 records written)").count(), 4, "{out}");
    assert_eq!(server.lines_at("/bulk"), 2000);
}

#[test]
fn plugins_inspect_marks_the_capabilities_a_plugin_uses() {
    let (code, out, err) = pumphouse(&["plugins", "inspect", &fixture("hostile")]);
    assert_eq!(code, 0, "{err}");
    for needle in [
        "http        used     granted by sandbox.allowed_outbound_hosts",
        "filesystem  used     granted by sandbox.dirs",
        "wasi:http/outgoing-handler",
        "pumphouse:plugin/host@0.1.0",
    ] {
        assert!(out.contains(needle), "{needle:?} in:\n{out}");
    }
    let (code, out, _) = pumphouse(&["plugins", "inspect", &plugin("blackhole")]);
    assert_eq!(code, 0);
    assert!(out.contains("http        unused"), "{out}");
}

#[test]
fn produce_to_file_writes_samples_that_plugins_test_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    for (format, file, sink) in [
        ("iam", "r.jsonl", "stdout"),
        ("iam", "r.msgpack", "blackhole"),
        ("tyk", "t.jsonl", "stdout"),
        ("tyk", "t.msgpack", "stdout"),
    ] {
        let path = dir.path().join(file);
        let path = path.to_str().unwrap();
        let (code, _, err) = pumphouse(&[
            "produce",
            "--format",
            format,
            "--count",
            "120",
            "--to-file",
            path,
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("wrote 120"), "{err}");
        if file.ends_with(".jsonl") {
            // The JSON form pumps receive: times are RFC 3339 strings.
            let first = &read_jsonl(Path::new(path))[0];
            assert!(
                first["TimeStamp"]
                    .as_str()
                    .is_some_and(|t| t.ends_with('Z')),
                "{first}"
            );
        }
        let (code, out, err) = pumphouse(&[
            "plugins",
            "test",
            &plugin(sink),
            "--input",
            path,
            "--format",
            format,
        ]);
        assert_eq!(code, 0, "{format} {file}: {out}{err}");
        assert!(out.contains("120 records in batches of 100"), "{out}");
        assert!(
            out.contains("batch 2 (records 100-119): ok (20 records written)"),
            "{out}"
        );
    }
    let (code, _, err) = pumphouse(&[
        "produce",
        "--format",
        "iam",
        "--to-file",
        dir.path().join("r.txt").to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains(".jsonl"), "{err}");
}
