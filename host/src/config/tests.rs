use super::*;
use bytesize::ByteSize;

fn env(k: &str) -> Option<String> {
    match k {
        "HOST" => Some("redis.internal".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

#[test]
fn interpolation_substitutes_defaults_and_escapes() {
    assert_eq!(
        interpolate_env("a=${HOST} b=${NOPE:-x} c=$${HOST} d=$5 e=${EMPTY}", env).unwrap(),
        "a=redis.internal b=x c=${HOST} d=$5 e="
    );
}

#[test]
fn interpolation_names_missing_variable_and_line() {
    let err = interpolate_env("x = 1\ny = \"${SECRET_TOKEN}\"", env).unwrap_err();
    assert!(err.contains("SECRET_TOKEN"), "{err}");
    assert!(err.contains("line 2"), "{err}");
    let err = interpolate_env("y = \"${OPEN", env).unwrap_err();
    assert!(err.contains("unclosed"), "{err}");
    assert_eq!(
        interpolate_env("# use ${NAME} here\nx = \"${HOST}\"\n", env).unwrap(),
        "# use ${NAME} here\nx = \"redis.internal\"\n",
        "comment lines are left alone"
    );
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_str_at(text, Path::new("test.toml"), Path::new("/etc/ph"))
}

const MINIMAL: &str = r#"
[source]
format = "iam"
[[pumps]]
name = "out"
plugin = "file.wasm"
"#;

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.source.keys(), vec!["analytics-iam-system-analytics"]);
    assert_eq!(c.source.batch_size, DEFAULT_BATCH_SIZE);
    assert_eq!(c.source.delivery, Delivery::AtLeastOnce);
    assert_eq!(c.pumps[0].timeout, DEFAULT_TIMEOUT);
    assert_eq!(c.plugins_dir, Path::new("/etc/ph/plugins"));
    assert_eq!(
        c.plugin_path("file.wasm"),
        Path::new("/etc/ph/plugins/file.wasm")
    );
    // A bare name is its .wasm; a name with another extension is kept.
    assert_eq!(
        c.plugin_path("file"),
        Path::new("/etc/ph/plugins/file.wasm")
    );
    assert_eq!(
        c.plugin_path("file.component"),
        Path::new("/etc/ph/plugins/file.component")
    );
    assert_eq!(
        c.source.dead_letter_key(),
        "pumphouse:dead-letter:analytics-iam-system-analytics"
    );
}

#[test]
fn tyk_shards_expand_to_keys() {
    let c = parse(&MINIMAL.replace("\"iam\"", "\"tyk\"\nshards = 3")).unwrap();
    assert_eq!(
        c.source.keys(),
        vec![
            "analytics-tyk-system-analytics",
            "analytics-tyk-system-analytics_0",
            "analytics-tyk-system-analytics_1",
            "analytics-tyk-system-analytics_2"
        ]
    );
}

#[test]
fn unknown_field_is_named() {
    let err = parse(&MINIMAL.replace("plugin =", "plugn = \"x\"\nplugin =")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("plugn"), "{msg}");
}

#[test]
fn invalid_values_name_their_field() {
    let cases = [
        (
            MINIMAL.replace("format = \"iam\"", "format = \"iam\"\nbatch_size = 0"),
            "source.batch_size",
        ),
        (
            MINIMAL.replace("name = \"out\"", "name = \"a b\""),
            "pumps[0].name",
        ),
        (
            format!("{MINIMAL}[pumps.filters]\napi_ids = [\"x\"]\n"),
            "pumps[0] (out).filters",
        ),
        (
            format!("{MINIMAL}[pumps.sandbox]\ndirs = [{{ host = \"o\", guest = \"out\" }}]\n"),
            "sandbox.dirs[0].guest",
        ),
        (
            format!("{MINIMAL}[[pumps]]\nname = \"out\"\nplugin = \"x.wasm\"\n"),
            "pumps[1].name",
        ),
        (format!("{MINIMAL}workers = 0\n"), "pumps[0] (out).workers"),
        (format!("{MINIMAL}workers = 17\n"), "pumps[0] (out).workers"),
        (
            format!("{MINIMAL}buffer = \"disk\"\nworkers = 2\n"),
            "pumps[0] (out).workers",
        ),
    ];
    for (text, field) in cases {
        let msg = parse(&text).unwrap_err().to_string();
        assert!(msg.contains(field), "expected {field} in: {msg}");
    }
}

#[test]
fn durations_and_sizes_parse_human_forms() {
    let c = parse(&format!(
        "{MINIMAL}timeout = \"250ms\"\nmax_record_size = \"1KiB\"\n[pumps.sandbox]\nmax_memory = \"32MiB\"\n"
    ))
    .unwrap();
    assert_eq!(c.pumps[0].timeout, Duration::from_millis(250));
    assert_eq!(c.pumps[0].max_record_size, Some(ByteSize::kib(1)));
    assert_eq!(c.pumps[0].sandbox.max_memory, ByteSize::mib(32));
}

#[test]
fn stream_settings_live_only_in_stream_sources() {
    let stream = MINIMAL.replace("format = \"iam\"", "format = \"iam\"\ntype = \"stream\"");
    let c = parse(&stream).unwrap();
    assert_eq!(
        c.source.kind,
        SourceKind::Stream(StreamOptions {
            group: DEFAULT_STREAM_GROUP.into(),
            field: DEFAULT_STREAM_FIELD.into(),
            max_deliveries: DEFAULT_MAX_DELIVERIES,
        })
    );
    assert_eq!(parse(MINIMAL).unwrap().source.kind, SourceKind::List);
    for field in [
        "group = \"g\"",
        "stream_field = \"f\"",
        "max_deliveries = 2",
    ] {
        let list = MINIMAL.replace("format = \"iam\"", &format!("format = \"iam\"\n{field}"));
        let msg = parse(&list).unwrap_err().to_string();
        let name = field.split(' ').next().unwrap();
        assert!(msg.contains("source"), "{msg}");
        assert!(
            msg.contains(name) && msg.contains("type = \"stream\""),
            "{msg}"
        );
    }
    let at_most_once = stream.replace("type =", "delivery = \"at-most-once\"\ntype =");
    let msg = parse(&at_most_once).unwrap_err().to_string();
    assert!(msg.contains("source.delivery"), "{msg}");
}

#[test]
fn disk_settings_live_only_in_disk_pumps() {
    let disk = format!("{MINIMAL}buffer = \"disk\"\nwhen_full = \"drop_oldest\"\n");
    let c = parse(&disk).unwrap();
    assert_eq!(
        c.pumps[0].buffer,
        Buffer::Disk(DiskOptions {
            max_spool_bytes: DEFAULT_MAX_SPOOL_BYTES,
            when_full: WhenFull::DropOldest,
        })
    );
    assert_eq!(parse(MINIMAL).unwrap().pumps[0].buffer, Buffer::Memory);
    for field in ["max_spool_bytes = \"2MiB\"", "when_full = \"block\""] {
        let memory = format!("{MINIMAL}{field}\n");
        let msg = parse(&memory).unwrap_err().to_string();
        let name = field.split(' ').next().unwrap();
        assert!(msg.contains("pumps[0] (out)"), "{msg}");
        assert!(
            msg.contains(name) && msg.contains("buffer = \"disk\""),
            "{msg}"
        );
    }
    let small = format!("{MINIMAL}buffer = \"disk\"\nmax_spool_bytes = \"1KiB\"\n");
    let msg = parse(&small).unwrap_err().to_string();
    assert!(msg.contains("pumps[0] (out).max_spool_bytes"), "{msg}");
}

#[test]
fn network_entries_are_parsed_once_and_named_when_wrong() {
    let ok = format!(
        "{MINIMAL}[pumps.sandbox]\nallowed_outbound_hosts = [\"https://api.example.com\"]\nsockets = [\"statsd:8125\"]\n"
    );
    let c = parse(&ok).unwrap();
    let sandbox = &c.pumps[0].sandbox;
    assert!(sandbox.allowed_outbound_hosts[0].admits(
        crate::sandbox::Scheme::Https,
        "api.example.com",
        443
    ));
    assert_eq!(sandbox.sockets[0].host, "statsd");
    let bad = ok.replace("\"statsd:8125\"]", "\"statsd:8125\", \"udp://x:1\"]");
    let msg = parse(&bad).unwrap_err().to_string();
    assert!(msg.contains("pumps[0] (out).sandbox.sockets[1]"), "{msg}");
    assert!(msg.contains("expected host:port"), "{msg}");
}

#[test]
fn required_fields_are_still_required() {
    let msg = parse("[[pumps]]\nname = \"a\"\nplugin = \"a.wasm\"\n[source]\n")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("missing field `format`"), "{msg}");
    let msg = parse(&MINIMAL.replace("plugin = \"file.wasm\"", ""))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("missing field `plugin`"), "{msg}");
}

#[test]
fn tls_settings_parse_resolve_and_need_a_tls_url() {
    let tls = "redis_url = \"rediss://pumphouse:pw@redis.internal:6380/0\"\n\
               [source.tls]\nca_file = \"ca.pem\"\ncert_file = \"/certs/c.pem\"\nkey_file = \"c.key\"\n";
    let c =
        parse(&MINIMAL.replace("format = \"iam\"\n", &format!("format = \"iam\"\n{tls}"))).unwrap();
    assert_eq!(
        c.source.tls.ca_file.as_deref(),
        Some(Path::new("/etc/ph/ca.pem"))
    );
    assert_eq!(
        c.source.tls.cert_file.as_deref(),
        Some(Path::new("/certs/c.pem"))
    );
    assert_eq!(
        c.source.tls.key_file.as_deref(),
        Some(Path::new("/etc/ph/c.key"))
    );
    assert!(!c.source.tls.insecure);

    let plain = MINIMAL.replace(
        "format = \"iam\"\n",
        "format = \"iam\"\n[source.tls]\ninsecure = true\n",
    );
    let msg = parse(&plain).unwrap_err().to_string();
    assert!(
        msg.contains("source.tls") && msg.contains("rediss://"),
        "{msg}"
    );

    let no_key = MINIMAL.replace(
        "format = \"iam\"\n",
        "format = \"iam\"\nredis_url = \"rediss://h:1\"\n[source.tls]\ncert_file = \"c.pem\"\n",
    );
    let msg = parse(&no_key).unwrap_err().to_string();
    assert!(msg.contains("source.tls.key_file"), "{msg}");

    let typo = MINIMAL.replace(
        "format = \"iam\"\n",
        "format = \"iam\"\nredis_url = \"rediss://h:1\"\n[source.tls]\nca = \"c.pem\"\n",
    );
    let msg = parse(&typo).unwrap_err().to_string();
    assert!(msg.contains("ca"), "{msg}");
}

#[test]
fn a_bad_redis_scheme_is_named_without_the_password() {
    let bad = MINIMAL.replace(
        "format = \"iam\"\n",
        "format = \"iam\"\nredis_url = \"http://user:s3cret@h:1/0\"\n",
    );
    let msg = parse(&bad).unwrap_err().to_string();
    assert!(
        msg.contains("redis_url") && msg.contains("\"http\"://"),
        "{msg}"
    );
    assert!(!msg.contains("s3cret"), "{msg}");
}
