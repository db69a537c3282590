use cooplocker::cli::Command;
use cooplocker::config;

// glibc malloc/free took ~16% of the instance's CPU under load (perf); mimalloc
// is built for many small short-lived allocations like a request's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use cooplocker::startup::Application;

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let cli = cooplocker::cli::parse_or_exit();
    if let Err(e) = cooplocker::tokens::init_crypto() {
        eprintln!("cooplocker: start-up self-test: {e}");
        return std::process::ExitCode::from(1);
    }
    match cli.command {
        Some(Command::Admin(args)) => cooplocker::cli::run(&cli.settings, args).await,
        Some(Command::Lock(args)) => cooplocker::lock::run(args).await,
        Some(Command::Healthcheck) => cooplocker::cli::healthcheck(&cli.settings).await,
        Some(Command::Openapi) => {
            println!("{}", cooplocker::http::openapi::json());
            std::process::ExitCode::SUCCESS
        }
        None | Some(Command::Serve) => serve(cli.settings).await,
    }
}

async fn serve(settings: config::Settings) -> std::process::ExitCode {
    cooplocker::telemetry::init(settings.log_format);
    let app = match Application::build(&settings).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("cooplocker: {e:#}");
            return std::process::ExitCode::from(1);
        }
    };
    let mode = if settings.redis_url.is_some() {
        "fleet (Redis)"
    } else {
        "embedded"
    };
    tracing::info!(port = app.port(), mode, "cooplocker listening");
    if let Some(b) = &app.bootstrap {
        // Printed once for the person at the terminal, deliberately not logged.
        // Write errors (a closed stdout) must not take the server down.
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "\nEmbedded mode: state lives in this process only.");
        let _ = writeln!(out, "  default tenant: {}", b.tenant_id);
        let _ = writeln!(out, "  API key:        {}", b.api_key);
        if let Some(t) = &b.generated_admin_token {
            let _ = writeln!(
                out,
                "  admin token:    {t}  (set COOPLOCKER_ADMIN_TOKEN to choose one)"
            );
        }
        let _ = writeln!(
            out,
            "  try: curl -X POST http://localhost:{}/api/v1/Reservation/reserve -H \"X-Api-Key: {}\" \\\n         -H \"Content-Type: application/json\" -d '[{{\"requester\":\"my-app\",\"resource\":\"my-first-lock\"}}]'\n",
            app.port(),
            b.api_key
        );
        let _ = out.flush();
    }
    match app.run_until_stopped().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cooplocker: server error: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
