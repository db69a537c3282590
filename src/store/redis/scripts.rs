//! The Lua scripts, composed once from the files of `lua/` (see
//! `lua/README.md`): preludes first (`events.lua` for scripts that emit
//! events, `pages.lua` and `holds.lua` for scripts that touch holds), then the
//! script's own file; a tenant request's script has its file wrapped in
//! `local function body() ... end` and `meter.lua` appended, which counts the
//! request against its rate limit and runs the body only when allowed.
//! `redis::Script` sends them with `EVALSHA` and reloads them on `NOSCRIPT`.

use redis::Script;
use std::sync::LazyLock;

macro_rules! lua {
    ($file:literal) => {
        include_str!(concat!("../../../lua/", $file))
    };
}

/// The preludes of a script that changes holds.
macro_rules! holds_preludes {
    () => {
        concat!(
            lua!("clock.lua"),
            lua!("events.lua"),
            lua!("pages.lua"),
            lua!("holds.lua"),
            lua!("waits.lua")
        )
    };
}

/// A script a tenant request runs: preludes, the body, the meter.
macro_rules! metered {
    ($preludes:expr, $file:literal) => {
        concat!(
            $preludes,
            lua!("idem.lua"),
            "local function body()\n",
            lua!($file),
            "\nend\n",
            lua!("meter.lua")
        )
    };
}

/// Every composed script by name, as Redis runs it (for `scripts_for_reading`
/// and the script tests).
pub const SOURCES: &[(&str, &str)] = &[
    ("reserve", metered!(holds_preludes!(), "reserve.lua")),
    ("unreserve", metered!(holds_preludes!(), "unreserve.lua")),
    ("extend", metered!(holds_preludes!(), "extend.lua")),
    (
        "check",
        metered!(
            concat!(lua!("clock.lua"), lua!("pages.lua"), lua!("holds.lua")),
            "check.lua"
        ),
    ),
    (
        "validate",
        metered!(
            concat!(lua!("clock.lua"), lua!("pages.lua"), lua!("holds.lua")),
            "validate.lua"
        ),
    ),
    (
        "list",
        metered!(
            concat!(lua!("clock.lua"), lua!("pages.lua"), lua!("holds.lua")),
            "list.lua"
        ),
    ),
    ("release", metered!(holds_preludes!(), "release.lua")),
    ("sweep", concat!(holds_preludes!(), lua!("sweep.lua"))),
    (
        "wait_poll",
        concat!(holds_preludes!(), lua!("wait_poll.lua")),
    ),
    (
        "wait_leave",
        concat!(holds_preludes!(), lua!("wait_leave.lua")),
    ),
    (
        "rate_limit",
        concat!(
            lua!("clock.lua"),
            lua!("idem.lua"),
            "local function body() return {} end\n",
            lua!("meter.lua")
        ),
    ),
    ("events_read", lua!("events_read.lua")),
    ("contention", lua!("contention.lua")),
    ("key_add", lua!("key_add.lua")),
    ("key_rotate", lua!("key_rotate.lua")),
    ("tenant_update", lua!("tenant_update.lua")),
];

fn source(name: &str) -> &'static str {
    SOURCES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .unwrap_or_default()
}

macro_rules! script {
    ($name:ident, $key:literal) => {
        pub static $name: LazyLock<Script> = LazyLock::new(|| Script::new(source($key)));
    };
}

script!(RESERVE, "reserve");
script!(UNRESERVE, "unreserve");
script!(EXTEND, "extend");
script!(CHECK, "check");
script!(VALIDATE, "validate");
script!(LIST, "list");
script!(RELEASE, "release");
script!(SWEEP, "sweep");
script!(WAIT_POLL, "wait_poll");
script!(WAIT_LEAVE, "wait_leave");
script!(RATE_LIMIT, "rate_limit");
script!(EVENTS_READ, "events_read");
script!(CONTENTION, "contention");
script!(KEY_ADD, "key_add");
script!(KEY_ROTATE, "key_rotate");
script!(TENANT_UPDATE, "tenant_update");

/// Writes every composed script to `dir` (one `<name>.lua` each), so a reader
/// can open exactly what Redis runs.
pub fn write_for_reading(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in SOURCES {
        std::fs::write(dir.join(format!("{name}.lua")), text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The composition lua/README.md describes, written to `target/lua/` for
    /// reading.
    #[test]
    fn scripts_compose_as_documented() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/lua");
        assert!(write_for_reading(&dir).is_ok());
        for (name, text) in SOURCES {
            let written = std::fs::read_to_string(dir.join(format!("{name}.lua")));
            assert_eq!(written.ok().as_deref(), Some(*text), "{name}");
        }
        let preludes = holds_preludes!();
        for name in ["reserve", "unreserve", "extend", "release"] {
            let s = source(name);
            assert!(s.starts_with(preludes), "{name} starts with its preludes");
            assert!(s.contains("local function body()\n"), "{name} has a body");
            assert!(s.ends_with(lua!("meter.lua")), "{name} ends with the meter");
        }
        assert!(source("sweep").starts_with(preludes));
        assert!(source("rate_limit").ends_with(lua!("meter.lua")));
    }
}
