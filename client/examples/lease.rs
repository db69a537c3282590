//! Acquire a lock, print its fencing token, do some work, release it.
//!
//! ```text
//! COOPLOCKER_API_KEY=... cargo run -p cooplocker-client --example lease -- [SERVER] [RESOURCE]
//! ```

use cooplocker_client::Client;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let server = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_string());
    let resource = args.next().unwrap_or_else(|| "examples/lease".to_string());
    let key = std::env::var("COOPLOCKER_API_KEY").map_err(|_| "set COOPLOCKER_API_KEY")?;

    let client = Client::new(server, key)?;
    let lease = client
        .lease(&resource)
        .ttl(Duration::from_secs(6))
        .wait(Duration::from_secs(30))
        .acquire()
        .await?;
    println!(
        "acquired {} as {} with fencing token {}",
        lease.resource(),
        lease.requester(),
        lease.fencing_token()
    );

    // The work: longer than the TTL, so the lease is renewed (every 2 s).
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs(10)) => println!("work done"),
        reason = lease.lost() => {
            eprintln!("lease lost: {reason}; stopping");
            return Ok(());
        }
    }
    let freed = lease.release().await?;
    println!("released: {freed}");
    Ok(())
}
