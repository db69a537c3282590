//! Writes every composed Lua script, exactly as the service sends it to Redis,
//! to a folder (default `target/lua`): for reading, and for the benchmark's
//! `redis-benchmark` runs of the same scripts. Not part of the service.

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/lua".to_string());
    if let Err(e) = cooplocker::store::redis::scripts::write_for_reading(std::path::Path::new(&dir))
    {
        eprintln!("dump_scripts: {dir}: {e}");
        std::process::exit(1);
    }
    println!("{dir}");
}
