//! The dashboard in a real browser: headless Chromium driven by
//! `e2e/dashboard.mjs` (playwright-core), against an instance on Redis whose
//! OIDC provider is the tests' own: sign-in, keys and their scopes, the live
//! reservations page (a countdown that moves, kinds, a line of waiters that
//! rises and falls, filters and pages by keyboard, 10,000 holds kept paged),
//! the activity chart gaining a point for a reserve, live usage on the plan
//! page, WCAG AA contrast, and rotating a key. Screenshots of each page are
//! saved to `target/e2e/` as test artefacts.

use super::{app_with_provider_and, provider::Provider};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_at_a_glance_in_chromium() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "Chromium is not installed ({chromium}): the dashboard end-to-end test needs it. \
         Run the README's test command (bash scripts/test.sh), which installs it, or \
         `apt-get install chromium`."
    );
    assert!(
        root.join("e2e/node_modules/playwright-core").exists(),
        "playwright-core is not installed: run `npm ci --prefix e2e` (bash scripts/test.sh does)."
    );
    let provider = Provider::start().await;
    // A history of 5,000 events: the 10,000 holds of the test trim it, and
    // the events page must still show the latest ones.
    let app = app_with_provider_and(&provider, |s| s.events_retain = 5000).await;
    let shots = root.join("target/e2e");
    let out = tokio::process::Command::new("node")
        .arg(root.join("e2e/dashboard.mjs"))
        .env("BASE", &app.address)
        .env("SHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .env("ADMIN_TOKEN", crate::helpers::ADMIN_TOKEN)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(240), out)
        .await
        .expect("the browser test finished within 4 minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );
    for name in [
        "1-sign-in",
        "2-welcome-key",
        "3-keys",
        "4-reservations-live",
        "5-events",
        "6-plan",
        "7-rotated",
        "8-reservations-10k",
        "readme-keys",
        "readme-reservations",
        "readme-events",
        "readme-plan",
    ] {
        let f = shots.join(format!("{name}.png"));
        let size = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "screenshot {} missing", f.display());
    }
}
