//! Writes the pumphouse TOML: `[source]`, `[server]`, then one
//! `[[pumps]]` per old pump, with comments where behaviour differs and
//! commented blocks for what has no counterpart.

use std::fmt::Write as _;

use serde_json::Value;

use super::input::{Old, OldPump};
use super::pumps::{plan, Plan, PumpOut};
use super::{Dialect, Migration, Options, Text, Unmapped};

/// A TOML basic string holding `t` as a template (`${` of a literal is
/// written `$${`).
pub(super) fn string(t: &Text) -> String {
    toml::Value::String(t.template()).to_string()
}

/// A bare value (number) that may also be a `${...}` reference, which the
/// host replaces before parsing.
fn bare(t: &Text) -> String {
    t.template()
}

/// Seconds as a duration string.
fn seconds(t: &Text) -> Option<String> {
    match t.lit() {
        Some(s) => match s.trim().parse::<u64>() {
            Ok(0) => None,
            Ok(n) => Some(format!("\"{n}s\"")),
            Err(_) => None,
        },
        None => Some(format!("\"{}s\"", t.template())),
    }
}

fn comment(out: &mut String, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "# {line}");
    }
}

/// Letters, digits, `-` and `_`: pump names label metrics.
fn pump_name(name: &str) -> String {
    let n: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if n.is_empty() {
        "pump".into()
    } else {
        n
    }
}

pub(super) fn write(old: &Old, options: &Options) -> Migration {
    let mut out = String::new();
    let mut unmapped = Vec::new();
    let from = old.dialect.name();
    comment(
        &mut out,
        &format!("pumphouse config migrated from {from} by `pumphouse migrate`. Lines\nstarting with \"# migrate:\" say where pumphouse behaves differently."),
    );
    if let Some(dir) = &options.plugins_dir {
        let _ = writeln!(out, "\nplugins_dir = {}", string(&Text::Lit(dir.clone())));
    }
    source(old, &mut out);
    server(old, &mut out);
    let mut mapped = 0;
    for pump in &old.pumps {
        mapped += usize::from(write_pump(old, pump, &mut out, &mut unmapped));
    }
    if mapped == 0 {
        let _ = writeln!(out);
        comment(
            &mut out,
            "migrate: no pump could be migrated; pumphouse needs at least one [[pumps]]\nentry (see the plugins' READMEs).",
        );
        unmapped.push(Unmapped {
            what: "pumps".into(),
            reason: "none could be migrated; add one before running".into(),
        });
    }
    Migration {
        toml: out,
        unmapped,
    }
}

fn source(old: &Old, out: &mut String) {
    let redis = super::redis::map(&old.redis);
    let _ = writeln!(out, "\n[source]");
    let format = match old.dialect {
        Dialect::TykPump => "tyk",
        Dialect::IamPump => "iam",
    };
    let _ = writeln!(out, "format = \"{format}\"");
    for note in &redis.notes {
        comment(out, &format!("migrate: {note}"));
    }
    let _ = writeln!(
        out,
        "redis_url = {}",
        toml::Value::String(redis.url.clone())
    );
    if let Some(password) = &redis.sentinel_password {
        let _ = writeln!(out, "sentinel_password = {password}");
    }
    if let Some(prefix) = old.redis.key_prefix.as_ref().filter(|p| !p.is_empty()) {
        if prefix.lit() != Some("analytics-") {
            let key = match prefix {
                Text::Lit(p) => Text::Lit(format!("{p}tyk-system-analytics")),
                Text::Env(p) => Text::Env(format!("{p}tyk-system-analytics")),
            };
            let _ = writeln!(out, "key = {}", string(&key));
        }
    }
    comment(
        out,
        &format!("migrate: {from} removed records as it read them; pumphouse leases each batch\nand removes it once every pump delivered it (delivery = \"at-least-once\").", from = old.dialect.name()),
    );
    if let Some(delay) = old.purge_delay.as_ref().and_then(seconds) {
        comment(
            out,
            "migrate: purge_delay: pumphouse claims again at once while records wait and\nsleeps this long only when the list is empty.",
        );
        let _ = writeln!(out, "poll_interval = {delay}");
    }
    if let Some(chunk) = &old.purge_chunk {
        match chunk.lit().map(|c| c.trim().parse::<u64>()) {
            Some(Ok(0)) | Some(Err(_)) => {}
            Some(Ok(n)) => {
                let n = n.min(crate::config::MAX_BATCH_SIZE as u64);
                let _ = writeln!(out, "batch_size = {n}");
            }
            None => {
                let _ = writeln!(out, "batch_size = {}", bare(chunk));
            }
        }
    }
    if !redis.tls.is_empty() {
        let _ = writeln!(out, "\n[source.tls]");
        for (k, v) in &redis.tls {
            let _ = writeln!(out, "{k} = {v}");
        }
        if redis.tls.iter().any(|(k, _)| *k == "insecure") {
            comment(
                out,
                "migrate: ssl_insecure_skip_verify: certificates are not checked.",
            );
        }
    }
}

fn server(old: &Old, out: &mut String) {
    let listen = match (&old.health_address, &old.health_port) {
        (Some(addr), _) => Some(string(addr)),
        (None, Some(port)) => Some(string(&match port {
            Text::Lit(p) => Text::Lit(format!("0.0.0.0:{p}")),
            Text::Env(p) => Text::Env(format!("0.0.0.0:{p}")),
        })),
        (None, None) => None,
    };
    if let Some(listen) = listen {
        let _ = writeln!(out, "\n[server]");
        comment(
            out,
            "migrate: the health check moves to /healthz and /readyz on this listener,\nbeside /metrics.",
        );
        let _ = writeln!(out, "listen = {listen}");
    }
}

/// Writes one pump; false when it became a commented block.
fn write_pump(old: &Old, pump: &OldPump, out: &mut String, unmapped: &mut Vec<Unmapped>) -> bool {
    let name = pump_name(&pump.name);
    let what = format!("pump {} (type {})", pump.name, pump.kind);
    let mapped = match plan(old.dialect, pump) {
        Plan::Mapped(p) => p,
        Plan::Unmapped(reason) => {
            let _ = writeln!(out);
            comment(out, &format!("migrate: {what} is not migrated: {reason}."));
            comment(out, "Its settings were:");
            for (k, v) in pump.meta.redacted() {
                comment(out, &format!("  {k} = {v}"));
            }
            unmapped.push(Unmapped { what, reason });
            return false;
        }
    };
    let PumpOut {
        plugin,
        config,
        metrics,
        sandbox,
        notes,
        mut lost,
    } = mapped;
    let _ = writeln!(out, "\n# {what}");
    for note in &notes {
        comment(out, &format!("migrate: {note}"));
    }
    let _ = writeln!(out, "[[pumps]]");
    let _ = writeln!(out, "name = {}", string(&Text::Lit(name)));
    let _ = writeln!(out, "plugin = \"{plugin}\"");
    if pump.omit_detailed_recording || old.omit_detailed_recording {
        let _ = writeln!(out, "omit_detailed_recording = true");
    }
    if let Some(t) = pump.timeout.as_ref().and_then(seconds) {
        let _ = writeln!(out, "timeout = {t}");
    }
    if let Some(size) = pump
        .max_record_size
        .as_ref()
        .or(old.max_record_size.as_ref())
        .filter(|s| s.lit() != Some("0"))
    {
        lost.push((
            format!("max_record_size ({})", size.template()),
            "tyk-pump cuts RawRequest/RawResponse to this size; pumphouse does not cut fields (its max_record_size dead-letters whole records), so omit_detailed_recording = true is the nearest".into(),
        ));
    }
    for key in pump.meta.unused() {
        comment(
            out,
            &format!("migrate: meta.{key} has no counterpart and is left out."),
        );
    }
    if !pump.filters.lists.is_empty() {
        let _ = writeln!(out, "[pumps.filters]");
        for (key, items) in &pump.filters.lists {
            let items: Vec<String> = items
                .iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(string(&Text::Lit(s.clone()))),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect();
            let _ = writeln!(out, "{key} = [{}]", items.join(", "));
        }
    }
    if !config.is_empty() || !metrics.is_empty() {
        let _ = writeln!(out, "[pumps.config]");
        for (k, v) in &config {
            let _ = writeln!(out, "{k} = {v}");
        }
        for table in &metrics {
            let _ = writeln!(out, "[[pumps.config.metrics]]");
            for (k, v) in table {
                let _ = writeln!(out, "{k} = {v}");
            }
        }
    }
    if !sandbox.is_empty() {
        let _ = writeln!(out, "[pumps.sandbox]");
        for (k, v) in &sandbox {
            let _ = writeln!(out, "{k} = {v}");
        }
    }
    for (setting, reason) in lost {
        comment(
            out,
            &format!("migrate: {setting} is not carried over: {reason}."),
        );
        unmapped.push(Unmapped {
            what: format!("pump {}: {setting}", pump.name),
            reason,
        });
    }
    true
}
